"""Online snapshots for `se-ctl backup`: every database, the config file, the certificate and
the uploaded files (XEP-0363) unless se-ctl leaves them out.

Each database is copied with SQLite's backup API from a connection of its own, in a worker
thread, inside one read transaction: the copy is consistent, and since the store is in WAL mode
the writer thread goes on committing while it runs (users keep chatting, the archive keeps
writing), rather than waiting for the whole copy. Before copying, the writer's queue is drained,
so everything the server had accepted when the backup began is in it. The reactor only
schedules. The copies wait in a private directory under data_dir until se-ctl has read
them in chunks over the control socket (the server never writes a path a caller names).

Uploaded files can be big, so they are not copied: the files whose rows are in the store's copy
are hard-linked into the snapshot (an upload is written whole, moved into place and never
changed, only removed), which costs no space and keeps a file that expires meanwhile readable
until se-ctl has it. A file already removed when the snapshot is made is left out; restore
drops the rows whose files it does not have.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from standard_edition.store.database import Database

FORMAT = 1  # the layout of a backup file (manifest.json + members); restore checks it
CHUNK = 512 * 1024  # bytes of a member in one control answer (base64 makes it ~700 KB)
IDLE_TIMEOUT = 600.0  # seconds a snapshot nobody reads stays on disk
SNAPSHOT_PREFIX = ".backup-"
STORE = "se.sqlite3"  # the member that holds the uploads table
UPLOADS = "uploads/"  # uploaded files are the members uploads/<token>
# an upload's token (upload/ledger.py: URL-safe base64); anything else is not one of ours
UPLOAD_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")

log = Logger(namespace="se.backup")


class SnapshotError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Snapshot:
    id: str
    directory: Path
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> size, sha256
    expiry: Any = None  # the IDelayedCall that removes it when abandoned


class Snapshots:
    """Makes snapshots, hands out their bytes, removes them.

    databases: member name -> Database (e.g. "se.sqlite3" -> the main store); files: a callable
    giving member name -> path of the server's own files to include (config, certificate);
    uploads: the folder of uploaded files (upload/store.py), None for none.
    """

    def __init__(
        self,
        reactor: Any,
        data_dir: Path,
        databases: Callable[[], dict[str, Database]],
        files: Callable[[], dict[str, Path]],
        describe: Callable[[], dict[str, Any]],
        uploads: Path | None = None,
    ) -> None:
        self.reactor = reactor
        self.data_dir = data_dir
        self._databases = databases
        self._files = files
        self._describe = describe
        self._uploads = uploads
        self._live: dict[str, Snapshot] = {}

    def remove_stale(self) -> None:
        """Snapshots left by a server that stopped while se-ctl was reading (run at start)."""
        for d in self.data_dir.glob(SNAPSHOT_PREFIX + "*"):
            shutil.rmtree(d, ignore_errors=True)

    @inlineCallbacks
    def start(self, uploads: bool = True):  # type: ignore[no-untyped-def]
        """Copy everything (the uploaded files unless uploads is False); fires with
        {"id", "manifest"} (manifest: what restore checks)."""
        if len(self._live) >= 2:
            raise SnapshotError("busy", "two backups are already being read; try again later")
        sid = secrets.token_hex(8)
        directory = self.data_dir / f"{SNAPSHOT_PREFIX}{sid}"
        directory.mkdir(mode=0o700)
        snap = Snapshot(sid, directory)
        self._live[sid] = snap
        self._touch(snap)
        started = time.monotonic()
        try:
            schemas: dict[str, int] = {}
            for name, db in self._databases().items():
                yield db.run_raw(_nothing)  # every write queued before the backup is committed
                schemas[name] = yield deferToThread(_copy_database, db.path, directory / name)
            yield deferToThread(_copy_files, self._files(), directory)
            if uploads and self._uploads is not None and STORE in schemas:
                yield deferToThread(
                    _link_uploads, directory / STORE, self._uploads, directory / UPLOADS
                )
            snap.members = yield deferToThread(_describe_members, directory)
        except BaseException:
            self._drop(snap)
            raise
        manifest = {
            "format": FORMAT,
            **self._describe(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "schemas": schemas,
            "uploads": "included" if uploads else "left out",
            "members": [{"name": n, **m} for n, m in sorted(snap.members.items())],
        }
        log.info(
            "backup {id}: snapshot of {n} files ({size} bytes) in {secs:.2f} s",
            id=sid,
            n=len(snap.members),
            size=sum(m["size"] for m in snap.members.values()),
            secs=time.monotonic() - started,
        )
        return {"id": sid, "chunk": CHUNK, "manifest": manifest}

    def read(self, sid: str, name: str, offset: int) -> Deferred[bytes]:
        snap = self._get(sid)
        if name not in snap.members:
            raise SnapshotError("not-found", f"backup {sid} has no member {name!r}")
        if offset < 0:
            raise SnapshotError("invalid", "offset must not be negative")
        self._touch(snap)
        return deferToThread(_read_chunk, snap.directory / name, offset, CHUNK)

    def finish(self, sid: str) -> None:
        self._drop(self._get(sid))
        log.info("backup {id}: read and removed", id=sid)

    def stop(self) -> None:
        for snap in list(self._live.values()):
            self._drop(snap)

    def _get(self, sid: str) -> Snapshot:
        snap = self._live.get(sid)
        if snap is None:
            raise SnapshotError("not-found", f"no backup in progress with id {sid!r}")
        return snap

    def _touch(self, snap: Snapshot) -> None:
        if snap.expiry is not None and snap.expiry.active():
            snap.expiry.reset(IDLE_TIMEOUT)
        else:
            snap.expiry = self.reactor.callLater(IDLE_TIMEOUT, self._abandoned, snap)

    def _abandoned(self, snap: Snapshot) -> None:
        log.warn("backup {id}: nobody read it for {t:.0f} s; removed", id=snap.id, t=IDLE_TIMEOUT)
        self._drop(snap)

    def _drop(self, snap: Snapshot) -> None:
        self._live.pop(snap.id, None)
        if snap.expiry is not None and snap.expiry.active():
            snap.expiry.cancel()
        # removing a few files: quick enough for the reactor, and never half done
        shutil.rmtree(snap.directory, ignore_errors=True)


def _nothing() -> None:
    return None


def _copy_database(path: Path, target: Path) -> int:
    """In a worker thread: a consistent copy of the database at path; its schema version.

    All pages in one backup step, so one read transaction from start to end: WAL readers never
    block the writer, and the copy never restarts. (Copying in several steps from a second
    connection would restart at every write the writer commits meanwhile.)
    """
    source = sqlite3.connect(str(path), timeout=30)
    dest = sqlite3.connect(str(target))
    try:
        source.backup(dest, pages=-1)
        version: int = dest.execute("PRAGMA user_version").fetchone()[0]
        dest.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    finally:
        dest.close()
        source.close()
    os.chmod(target, 0o600)
    return version


def _copy_files(files: dict[str, Path], directory: Path) -> None:
    for name, path in files.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            shutil.copyfile(path, target)
        except OSError as e:
            raise SnapshotError("unavailable", f"cannot read {path}: {e.strerror}") from None
        os.chmod(target, 0o600)


def _link_uploads(store: Path, folder: Path, target: Path) -> None:
    """In a worker thread: each uploaded file the store's copy has a row for, linked into the
    snapshot (copied where the file system has no hard links); one removed meanwhile (it
    expired) is left out."""
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        tokens = [t for (t,) in conn.execute("SELECT token FROM uploads")]
    except sqlite3.OperationalError:
        tokens = []  # a store from before uploads existed
    finally:
        conn.close()
    target.mkdir(mode=0o700, exist_ok=True)
    for token in tokens:
        if not isinstance(token, str) or not UPLOAD_TOKEN.fullmatch(token):
            continue
        source, link = folder / token, target / token
        try:
            os.link(source, link)
        except FileNotFoundError:
            continue
        except OSError:
            try:
                shutil.copyfile(source, link)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise SnapshotError("unavailable", f"cannot read {source}: {e.strerror}") from None


def _describe_members(directory: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        out[path.relative_to(directory).as_posix()] = {
            "size": path.stat().st_size,
            "sha256": h.hexdigest(),
        }
    return out


def _read_chunk(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)
