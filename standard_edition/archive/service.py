"""The archive as the core sees it: record(msg) from the router, policy, search, purge, verify.

Writes go through the archive's own store thread in batches: the first message after a quiet
moment opens a batch that closes BATCH_WINDOW later, or when the write before it finishes,
so a busy server commits many messages a transaction and never one transaction a message.
In critical mode record() returns a Deferred that fires when the message's batch committed
and fails with Undeliverable("resource-constraint") when it could not be written.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from standard_edition.archive import store
from standard_edition.archive.policy import (
    KEYS,
    Policy,
    PolicyError,
    checked,
    is_ours,
    origin_of,
    wanted,
)
from standard_edition.core.jid import JID
from standard_edition.core.model import Message, Undeliverable
from standard_edition.core.settings import Settings
from standard_edition.store.database import Database

log = Logger(namespace="se.archive")

T = TypeVar("T")

BATCH_WINDOW = 0.005  # seconds a batch stays open after its first message (DESIGN §6: ~10 ms)
BUSY_TIMEOUT_MS = 2000  # a locked archive file fails the batch after this long
PURGE_CHECK = 3600.0  # seconds between retention checks
SETTING_PREFIX = "archive."
REFUSED_TEXT = "the message could not be archived and was not delivered (archive critical mode)"


class Archive:
    def __init__(
        self,
        reactor: Any,
        path: Path,
        domain: str,
        file_policy: Policy,
        settings: Settings,
        *,
        protocol_of: Callable[[JID], str] = lambda jid: "xmpp",
        origin_of: Callable[[JID], str] = lambda jid: "internal",
        batch_window: float = BATCH_WINDOW,
    ) -> None:
        self.reactor = reactor
        self.path = path
        self.domain = domain
        self.file_policy = file_policy
        self.policy = file_policy
        self.settings = settings  # run-time settings: what se-ctl set wins over the file
        self._protocol_of = protocol_of
        self._session_origin = origin_of  # "edge" for a session signed in from outside
        self._window = batch_window
        self.db = Database(
            reactor,
            path,
            migrations=store.MIGRATIONS,
            name="archive",
            busy_timeout_ms=BUSY_TIMEOUT_MS,
        )
        # searches, exports and verify read a snapshot on their own thread: they never hold up
        # the writer, so a long export cannot delay a critical-mode message
        self.reader = Database(reactor, path, migrations=(), name="archive-read")
        self._state = store.ChainState()  # touched only on the writer thread
        self.last_id = 0  # the reactor's copy, after each commit
        # the open batch: its records, and the Deferreds of those whose senders wait for the
        # commit (critical mode, policy changes)
        self._pending: list[store.Entry] = []
        self._waiters: list[Deferred[None]] = []
        self._flush_call: Any = None
        self._writing = False
        self._logged_day: str | None = None
        self._timer: LoopingCall | None = None
        self.counters = {"archived": 0, "failed": 0, "refused": 0, "batches": 0}

    @property
    def critical(self) -> bool:
        return self.policy.critical

    # -- start and stop ------------------------------------------------------------------------

    @inlineCallbacks
    def open(self):  # type: ignore[no-untyped-def]
        yield self.db.open()
        yield self.reader.open()
        yield self.db.read(lambda db: store.tune_writer(db.conn))
        self._state = yield self.db.read(lambda db: store.load_state(db.conn))
        self.last_id = self._state.last_id
        self._logged_day = self._state.last_day
        self.policy = self._effective()
        self._timer = LoopingCall(self._housekeeping)
        self._timer.clock = self.reactor
        self._timer.start(PURGE_CHECK, now=True).addErrback(
            lambda f: log.failure("archive housekeeping stopped", failure=f)
        )
        log.info(
            "archive {path}: {n} records, head {head}; policy {policy}",
            path=self.path,
            n=self._state.last_id,
            head=self._state.last_hash,
            policy=self.policy.as_json(),
        )

    @inlineCallbacks
    def close(self):  # type: ignore[no-untyped-def]
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
            self._flush_call = None
        while self._pending or self._writing:
            if not self._writing:
                self._flush()
            yield _sleep(self.reactor, 0.01)
        log.info("archive head at stop: record {n}, {head}", n=self.last_id, head=self._head())
        yield self.reader.close()
        yield self.db.close()

    def _head(self) -> str:
        return self._state.last_hash

    # -- recording -----------------------------------------------------------------------------

    def record(self, msg: Message, origin: str | None = None) -> Deferred[None] | None:
        """Queue msg for the archive if the policy wants it. In critical mode: a Deferred that
        fires once it is committed (the router delivers then); otherwise None."""
        # runs on the reactor for every message: plain strings and one tuple, no JID copies
        policy = self.policy
        if msg.body is None or msg.type in ("error", "headline") or policy.mode == "off":
            return None
        sender_jid, to_jid = msg.sender, msg.to
        sender_domain, to_domain = sender_jid.domain, to_jid.domain
        sender = _bare(sender_jid)
        to = _bare(to_jid)
        ours = is_ours(sender_domain, self.domain)
        if origin is None:
            # the sender's origin: another domain (federated), our user signed in through the
            # edge (remote), else the route: to another domain (federated) or internal
            if not ours:
                origin = "federated"
            elif (msg.origin or self._session_origin(sender_jid)) == "edge":
                origin = "remote"
            else:
                origin = origin_of(sender_domain, to_domain, self.domain)
        if not wanted(policy, sender, to, origin):
            return None
        direction = "local" if origin == "internal" else ("out" if ours else "in")
        self._queue(
            store.Entry(
                int(self.reactor.seconds() * 1_000_000),
                "message",
                sender,
                to,
                msg.body,
                msg.protocol or self._protocol_of(sender_jid),
                direction,
                origin,
                sender_jid.resource or "",
                to if msg.type == "groupchat" else "",
                msg.type,
                msg.id or "",
            )
        )
        if not policy.critical:
            return None
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _now_us(self) -> int:
        return int(self.reactor.seconds() * 1_000_000)

    def _queue(self, entry: store.Entry) -> None:
        self._pending.append(entry)
        if not self._writing and self._flush_call is None:
            self._flush_call = self.reactor.callLater(self._window, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self._writing or not self._pending:
            return
        entries, self._pending = self._pending, []
        waiters, self._waiters = self._waiters, []
        self._writing = True
        d = self.db.read(self._commit, lambda conn, st: store.append(conn, st, entries))
        d.addCallbacks(
            self._written, self._failed, callbackArgs=(waiters,), errbackArgs=(entries, waiters)
        )
        d.addBoth(self._next_batch)

    def _commit(
        self, db: sqlite_utils.Database, job: Callable[[sqlite3.Connection, store.ChainState], T]
    ) -> T:
        """On the writer thread: run job in one transaction; the chain state moves on only
        after COMMIT succeeded."""
        conn = db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = job(conn, self._state)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        state = getattr(result, "state", None) or getattr(
            getattr(result, "appended", None), "state", None
        )
        if state is not None:
            self._state = state
        return result

    def _written(self, result: store.Appended, waiters: list[Deferred[None]]) -> None:
        self.counters["batches"] += 1
        self.counters["archived"] += result.messages
        self.last_id = result.state.last_id
        self._log_closed(result.closed_days)
        for w in waiters:
            w.callback(None)

    def _failed(self, f: Any, entries: list[store.Entry], waiters: list[Deferred[None]]) -> None:
        self.counters["failed"] += sum(1 for e in entries if e.kind == "message")
        self.counters["refused"] += len(waiters)
        log.error(
            "archive: a batch of {n} record(s) could not be written ({refused} refused to their "
            "senders, the rest delivered unarchived): {error}",
            n=len(entries),
            refused=len(waiters),
            error=f.getErrorMessage(),
        )
        for w in waiters:
            w.errback(Undeliverable("resource-constraint", REFUSED_TEXT))

    def _next_batch(self, _: Any) -> None:
        self._writing = False
        if self._pending and self._flush_call is None:
            # these waited for the write before them already: no second window
            self._flush_call = self.reactor.callLater(0, self._flush)

    def _log_closed(self, days: list[tuple[str, int, str]]) -> None:
        for day, n, head in days:
            # DESIGN §6: the day's head goes to the log, so it can be kept off the box
            log.info(
                "archive day {day} closed: {n} record(s), head sha256 {head}",
                day=day,
                n=n,
                head=head,
            )
            self._logged_day = day

    def _append_event(self, kind: str, body: dict[str, Any]) -> Deferred[None]:
        """A record of the archive's own (policy change), chained with the messages."""
        entry = store.Entry(
            ts=self._now_us(),
            kind=kind,
            sender="admin",
            recipient="archive",
            body=json.dumps(body, sort_keys=True),
        )
        d: Deferred[None] = Deferred()
        self._queue(entry)
        self._waiters.append(d)
        return d

    # -- policy --------------------------------------------------------------------------------

    def _effective(self) -> Policy:
        """config.toml's policy with the stored run-time settings over it."""
        policy = self.file_policy
        for key in KEYS:
            name = SETTING_PREFIX + key
            if self.settings.has(name):
                try:
                    policy = checked(policy, **{key: self.settings.get(name)})
                except PolicyError as e:
                    log.warn("{key}: stored setting ignored: {error}", key=name, error=e)
        return policy

    def policy_json(self) -> dict[str, Any]:
        out = self.policy.as_json()
        out["source"] = {
            k: ("se-ctl" if self.settings.has(SETTING_PREFIX + k) else "config") for k in KEYS
        }
        return out

    @inlineCallbacks
    def set_policy(self, **changes: Any):  # type: ignore[no-untyped-def]
        """Apply, store (it wins over config.toml from now on) and record a policy change."""
        new = checked(self.policy, **changes)  # PolicyError for the caller
        as_json = new.as_json()
        for key in changes:
            yield self.settings.set(SETTING_PREFIX + key, as_json[key])
        self.policy = new
        log.info("archive policy changed: {policy}", policy=as_json)
        yield self._append_event("policy", {"changed": sorted(changes), "policy": as_json})
        return self.policy_json()

    @inlineCallbacks
    def reset(self, keys: list[str]):  # type: ignore[no-untyped-def]
        """Back to config.toml's values for these settings (DESIGN §8 `config reset`)."""
        for key in keys:
            yield self.settings.delete(SETTING_PREFIX + key)
        self.policy = self._effective()
        log.info("archive policy: {keys} back to the config file's", keys=sorted(keys))
        as_json = self.policy.as_json()
        yield self._append_event("policy", {"reset": sorted(keys), "policy": as_json})
        return self.policy_json()

    # -- reading -------------------------------------------------------------------------------

    def search(self, q: store.Query, with_count: bool = False) -> Deferred[dict[str, Any]]:
        def run(db: sqlite_utils.Database) -> dict[str, Any]:
            conn = db.conn
            conn.execute("BEGIN")
            try:
                records = store.search(conn, q)
                out: dict[str, Any] = {
                    "records": records,
                    "next": records[-1]["id"] if len(records) == q.limit else None,
                }
                if with_count:
                    out["total"] = store.count(conn, q)
            finally:
                conn.execute("COMMIT")
            return out

        return self.reader.read(run)

    def verify(self) -> Deferred[store.Verdict]:
        def run(db: sqlite_utils.Database) -> store.Verdict:
            conn = db.conn
            conn.execute("BEGIN")
            try:
                return store.verify(conn)
            finally:
                conn.execute("COMMIT")

        def report(v: store.Verdict) -> store.Verdict:
            if v.ok:
                log.info(
                    "archive verify: {n} record(s) over {days} day(s) intact; head {head}",
                    n=v.records,
                    days=v.days,
                    head=v.head,
                )
            else:
                log.error("archive verify: BROKEN: {broken}", broken=v.broken)
            return v

        return self.reader.read(run).addCallback(report)

    # -- retention -----------------------------------------------------------------------------

    def purge(self, cutoff_us: int, reason: str) -> Deferred[store.Purged]:
        """Remove records older than cutoff_us; serialised with the batches on the writer."""
        now = self._now_us()

        def job(conn: sqlite3.Connection, st: store.ChainState) -> store.Purged:
            return store.purge(conn, st, cutoff_us, now, reason)

        d: Deferred[store.Purged] = Deferred()

        def run() -> None:
            # wait for the batch in flight, so the purge sees the chain's real end
            if self._writing:
                self.reactor.callLater(0.005, run)
                return
            self._writing = True
            w = self.db.read(self._commit, job)

            def done(p: store.Purged) -> store.Purged:
                if p.appended is not None:
                    self.last_id = p.appended.state.last_id
                    self._log_closed(p.appended.closed_days)
                    log.info(
                        "archive purge ({reason}): {n} record(s) before {before} removed",
                        reason=reason,
                        n=p.removed,
                        before=store.iso(cutoff_us),
                    )
                return p

            w.addCallback(done)
            w.addBoth(lambda r: (self._next_batch(None), r)[1])
            w.chainDeferred(d)

        run()
        return d

    def _housekeeping(self) -> Deferred[Any] | None:
        """Hourly: the day's head to the log once the day is over, and the retention purge."""
        today = datetime.fromtimestamp(self.reactor.seconds(), UTC).date()
        last = self._state.last_day
        if last is not None and last != self._logged_day and last < today.isoformat():
            log.info(
                "archive day {day} closed: head sha256 {head}", day=last, head=self._state.last_hash
            )
            self._logged_day = last
        keep = self.policy.keep_days
        if keep <= 0:
            return None
        # whole UTC days: everything before the start of the day keep_days ago
        start = datetime.combine(today - timedelta(days=keep), datetime.min.time(), UTC)
        d = self.purge(int(start.timestamp() * 1_000_000), f"keep_days={keep}")
        d.addErrback(lambda f: log.failure("archive retention purge failed", failure=f))
        return d

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.policy.mode,
            "critical": self.policy.critical,
            "records": self.last_id,
            "pending": len(self._pending),
            **self.counters,
        }


def _bare(jid: JID) -> str:
    """str(jid.bare) without making the bare JID."""
    return jid.domain if jid.local is None else f"{jid.local}@{jid.domain}"


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def when(text: str, *, end: bool = False) -> int:
    """A search bound in µs since the epoch. A date (YYYY-MM-DD) is a whole day in the server's
    time zone: its start, or with end=True the start of the next day (so --to is inclusive);
    a date-time is exact (ISO 8601; without an offset, in the server's time zone)."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d")
            if end:
                day += timedelta(days=1)
            return int(day.astimezone().timestamp() * 1_000_000)
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: give a date (YYYY-MM-DD) or an ISO 8601 date-time") from None
    if at.tzinfo is None:
        at = at.astimezone()
    return int(at.timestamp() * 1_000_000)
