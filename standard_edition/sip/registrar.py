"""The registrar (RFC 3261 §10.3): which contacts each user registered, until when.

Each binding is one core endpoint (DESIGN §5: available from REGISTER until PUBLISH says
otherwise). Bindings are written to the store and restored at start while they have not
expired, so a restart does not make SIP users disappear. Writes are batched as the message
history's are: a change waits at most FLUSH_DELAY seconds (or until BATCH_MAX wait) and only
the last change of each binding is written, in one transaction per batch; `flush` writes what
waits, and a clean shutdown calls it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils
from twisted.internet.defer import Deferred, succeed
from twisted.python import log

from standard_edition.sip.message import NameAddr, ParseError, Request, Response, make_response
from standard_edition.store.database import Database

__all__ = ["Binding", "Registrar", "resource_for"]

MIN_EXPIRES = 60  # RFC 3261 §10.3 step 7: answer 423 below this
MAX_EXPIRES = 7200
DEFAULT_EXPIRES = 3600
MAX_CONTACTS = 10  # per user; more is a misbehaving client
FLUSH_DELAY = 0.01  # seconds a binding change waits to be written with others
BATCH_MAX = 500


def resource_for(contact: str) -> str:
    """The endpoint's resource: sip- and a short hash of its contact URI."""
    return "sip-" + hashlib.sha256(contact.encode("utf-8", "surrogateescape")).hexdigest()[:10]


@dataclass(slots=True)
class Binding:
    username: str
    contact: str  # the Contact URI as registered
    expires_at: float  # epoch seconds
    call_id: str
    cseq: int
    source: str  # transport:host:port the REGISTER came from
    flow: Any = None  # the Peer of the TCP/TLS connection it came over, if any
    q: float | None = None
    timer: Any = None
    endpoint: Any = None  # the core endpoint (sip.endpoint.SipEndpoint)
    # "edge": registered through the edge listener by a remote user (DESIGN §7); stored, so
    # that the outside-access policy still reaches the binding after a restart
    origin: str = "internal"

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


class Registrar:
    """Bindings per user. `on_bound` / `on_unbound` connect them to the core."""

    def __init__(
        self,
        reactor: Any,
        db: Database,
        on_bound: Callable[[Binding], None],
        on_unbound: Callable[[Binding], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reactor = reactor
        self.db = db
        self.on_bound = on_bound
        self.on_unbound = on_unbound
        self.clock = clock
        self._by_user: dict[str, dict[str, Binding]] = {}
        # (username, contact) -> the row to upsert, or None to delete; the last change wins
        self._pending: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._flush_timer: Any = None

    def bindings(self, username: str) -> list[Binding]:
        return list(self._by_user.get(username, {}).values())

    def all(self) -> list[Binding]:
        return [b for bs in self._by_user.values() for b in bs.values()]

    # -- start -----------------------------------------------------------------------------

    def load(self) -> Deferred[int]:
        """Restore the bindings that have not expired yet."""
        now = self.clock()

        def read(db: sqlite_utils.Database) -> list[dict[str, Any]]:
            db.conn.execute("DELETE FROM sip_bindings WHERE expires_at <= ?", (now,))
            return list(db["sip_bindings"].rows)

        def keep(rows: list[dict[str, Any]]) -> int:
            for r in rows:
                b = Binding(
                    r["username"],
                    r["contact"],
                    r["expires_at"],
                    r["call_id"],
                    r["cseq"],
                    r["source"],
                    q=r["q"],
                    origin=r.get("origin") or "internal",
                )
                self._add(b)
            return len(rows)

        return self.db.run(read).addCallback(keep)

    # -- REGISTER --------------------------------------------------------------------------

    def register(
        self, req: Request, username: str, source: str, flow: Any, origin: str = "internal"
    ) -> Response:
        """Apply an authenticated REGISTER for `username` (RFC 3261 §10.3 steps 6-8);
        `origin`: "edge" when it came through the edge listener."""
        now = self.clock()
        call_id = req.call_id
        cseq = req.cseq.number
        header_expires = req.expires
        if req.contact_is_star:
            # §10.3 step 6: "*" only with Expires: 0, removes every binding
            if header_expires != 0:
                return make_response(req, 400, "Contact * needs Expires: 0")
            for b in self.bindings(username):
                if b.call_id == call_id and cseq <= b.cseq:
                    continue  # an older request, out of order
                self._remove(b)
            return self._ok(req, username, now)
        changes: list[tuple[NameAddr, int]] = []
        for c in req.contacts:
            expires = c.expires
            if expires is None:
                expires = header_expires if header_expires is not None else DEFAULT_EXPIRES
            if 0 < expires < MIN_EXPIRES:
                return make_response(req, 423, headers=[("Min-Expires", str(MIN_EXPIRES))])
            c.q  # noqa: B018 - a bad q is a 400
            changes.append((c, min(expires, MAX_EXPIRES)))
        current = self._by_user.get(username, {})
        new_count = len({str(c.uri) for c, e in changes if e} | set(current))
        if new_count > MAX_CONTACTS:
            return make_response(req, 403, "Too many registrations")
        for c, expires in changes:
            key = str(c.uri)
            old = current.get(key)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                # §10.3 step 7: an out-of-order request of the same Call-ID changes nothing
                continue
            if expires == 0:
                if old is not None:
                    self._remove(old)
                continue
            if old is not None:
                old.expires_at = now + expires
                old.call_id, old.cseq, old.source, old.flow = call_id, cseq, source, flow
                old.q = c.q
                if old.origin != origin:
                    # the same contact registered again from the other side of the edge
                    old.origin = origin
                    if old.endpoint is not None:
                        old.endpoint.origin = origin
                self._arm(old)
                self._save(old)
            else:
                b = Binding(
                    username, key, now + expires, call_id, cseq, source, flow, c.q, origin=origin
                )
                self._add(b)
                self._save(b)
        return self._ok(req, username, now)

    def _ok(self, req: Request, username: str, now: float) -> Response:
        headers = [
            ("Contact", f"<{b.contact}>;expires={b.remaining(now)}")
            for b in self.bindings(username)
        ]
        headers.append(("Date", _http_date(now)))
        return make_response(req, 200, to_tag=_tag_for(req), headers=headers)

    # -- bookkeeping -----------------------------------------------------------------------

    def _add(self, b: Binding) -> None:
        self._by_user.setdefault(b.username, {})[b.contact] = b
        self._arm(b)
        self.on_bound(b)

    def _arm(self, b: Binding) -> None:
        if b.timer is not None and b.timer.active():
            b.timer.cancel()
        delay = max(0.0, b.expires_at - self.clock())
        b.timer = self.reactor.callLater(delay, self._expired, b)

    def _expired(self, b: Binding) -> None:
        b.timer = None
        if self._by_user.get(b.username, {}).get(b.contact) is b:
            self._remove(b)

    def remove(self, b: Binding) -> None:
        """Forget a binding (the core closed its endpoint)."""
        if self._by_user.get(b.username, {}).get(b.contact) is b:
            self._remove(b)

    def _remove(self, b: Binding) -> None:
        bs = self._by_user.get(b.username, {})
        if bs.get(b.contact) is b:
            del bs[b.contact]
            if not bs:
                self._by_user.pop(b.username, None)
        if b.timer is not None and b.timer.active():
            b.timer.cancel()
        b.timer = None
        self._delete(b)
        self.on_unbound(b)

    def flow_closed(self, peer: Any) -> None:
        """A TCP/TLS connection closed: its bindings fall back to their Contact address."""
        for b in self.all():
            if b.flow == peer:
                b.flow = None

    def stop(self) -> Deferred[None]:
        """Stop the expiry timers (the bindings stay stored) and write what waits."""
        for b in self.all():
            if b.timer is not None and b.timer.active():
                b.timer.cancel()
            b.timer = None
        return self.flush()

    def _save(self, b: Binding) -> None:
        row = {
            "username": b.username,
            "contact": b.contact,
            "expires_at": b.expires_at,
            "call_id": b.call_id,
            "cseq": b.cseq,
            "source": b.source,
            "q": b.q,
            "origin": b.origin,
        }
        self._queue((b.username, b.contact), row)

    def _delete(self, b: Binding) -> None:
        self._queue((b.username, b.contact), None)

    def _queue(self, key: tuple[str, str], row: dict[str, Any] | None) -> None:
        self._pending[key] = row
        if len(self._pending) >= BATCH_MAX:
            self.flush()
        elif self._flush_timer is None:
            self._flush_timer = self.reactor.callLater(FLUSH_DELAY, self.flush)

    def flush(self) -> Deferred[None]:
        """Write the waiting binding changes in one transaction; fires when they are stored.

        The store runs its jobs in order on one thread, so batches land in the order they
        were flushed."""
        if self._flush_timer is not None and self._flush_timer.active():
            self._flush_timer.cancel()
        self._flush_timer = None
        changes, self._pending = self._pending, {}
        if not changes:
            return succeed(None)
        rows = [r for r in changes.values() if r is not None]
        gone = [k for k, r in changes.items() if r is None]

        def write(db: sqlite_utils.Database) -> None:
            if gone:
                db.conn.executemany(
                    "DELETE FROM sip_bindings WHERE username = ? AND contact = ?", gone
                )
            if rows:
                db["sip_bindings"].upsert_all(rows, pk=("username", "contact"))

        def failed(f: Any) -> None:
            log.err(f, f"sip bindings: {len(changes)} changes not stored")

        return self.db.run(write).addErrback(failed)


def _tag_for(req: Request) -> str:
    """A To tag that is the same for retransmissions of one request (RFC 3261 §8.2.6.2)."""
    try:
        key = f"{req.call_id}|{req.from_.tag}|{req.cseq.number}"
    except ParseError:
        key = "x"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _http_date(now: float) -> str:
    from email.utils import formatdate

    return formatdate(now, usegmt=True)
