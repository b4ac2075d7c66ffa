"""The SQLite store: one file in WAL mode, every statement run on one dedicated thread.

The reactor never touches the database: it hands a function to `Database.run`, which runs it on
the store's single thread with the open `sqlite_utils.Database` and returns a Deferred. One
thread serialises writes without locks and keeps SQLite's connection on the thread that made it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from standard_edition.store.migrations import MIGRATIONS

T = TypeVar("T")
Migration = tuple[int, Callable[[sqlite_utils.Database], None]]


class Database:
    def __init__(
        self,
        reactor: IReactorThreads | IReactorFromThreads,
        path: Path,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        name: str = "store",
        busy_timeout_ms: int = 5000,
    ) -> None:
        self._reactor = reactor
        self.path = path
        self._migrations = migrations
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)
        self._db: sqlite_utils.Database | None = None

    def open(self) -> Deferred[int]:
        """Start the store thread, open the file and apply pending migrations; fires with the
        schema version."""
        self._pool.start()
        # however the reactor stops (a listener that fails to start included), the store thread
        # stops with it, or the process would never exit; close() has usually stopped it before
        self._reactor.addSystemEventTrigger("during", "shutdown", self.stop_now)  # type: ignore[union-attr]
        return self.run_raw(self._open)

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        self._db = sqlite_utils.Database(conn)
        return apply_migrations(self._db, self._migrations)

    def run_raw(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args)  # type: ignore[arg-type]

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run fn(db, *args) on the store thread inside one transaction."""
        return self.run_raw(self._in_transaction, fn, *args)

    def read(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run fn(db, *args) on the store thread without opening a write transaction."""
        return self.run_raw(self._reading, fn, *args)

    def _reading(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._db is not None, "store not open"
        return fn(self._db, *args)

    def _in_transaction(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._db is not None, "store not open"
        conn = self._db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self._db, *args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def connection(self) -> sqlite3.Connection:
        """The open connection; only for functions already running on the store thread."""
        assert self._db is not None, "store not open"
        return self._db.conn

    def close(self) -> Deferred[None]:
        """Finish queued work, checkpoint the WAL and stop the thread."""

        def shut() -> None:
            if self._db is not None:
                self._db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.conn.close()
                self._db = None

        d = self.run_raw(shut)
        d.addBoth(lambda r: (self.stop_now(), r)[1])
        return d

    def stop_now(self) -> None:
        """Stop the thread after the queued work, unless it is stopped already."""
        if self._pool.started:
            self._pool.stop()


def apply_migrations(
    db: sqlite_utils.Database, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Apply every numbered migration newer than the file's user_version, each in a transaction."""
    conn = db.conn
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, migrate in migrations:
        if number <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrate(db)
            conn.execute(f"PRAGMA user_version = {int(number)}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        current = number
    return current
