"""Presence fan-out spread over reactor turns, so one busy user never holds the reactor.

A presence change goes to every watcher's session, and each session written to costs the
reactor a TLS record and a socket write in the turns that follow. A user with 60 contacts
changing state, or two such changes arriving together, would otherwise keep every other
session waiting until all of them were written. The router hands each presence delivery to
local endpoints to this queue: in one reactor turn, presence goes to at most `per_turn`
distinct endpoints (more stanzas to an endpoint already written to cost little); the rest wait
for the next turns. A delivery to an endpoint that has presence waiting waits behind it, so a
watcher still receives one sender's presences in the order they were sent; and the router
flushes an endpoint's waiting presence before it writes a message there, so a message never
overtakes the presence its sender sent before it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.python import log

from standard_edition.core.jid import JID
from standard_edition.core.model import Presence

if TYPE_CHECKING:
    from standard_edition.core.sessions import Endpoint, SessionRegistry

# Endpoints written to in one reactor turn: each costs roughly 0.1 ms of reactor time (the
# stanza, its TLS record, the socket write), so a turn stays within a few milliseconds however
# many watchers a change has.
PER_TURN = 24


class PresenceFanout:
    def __init__(self, clock: Any, sessions: SessionRegistry, per_turn: int = PER_TURN) -> None:
        if per_turn < 1:
            raise ValueError("per_turn must be at least 1")
        self._clock = clock  # IReactorTime: the next turn is callLater(0)
        self._sessions = sessions
        self.per_turn = per_turn
        # each endpoint's deliveries in the order they were made, and the endpoints in the
        # order their deliveries came (one entry a delivery; an entry whose endpoint's queue
        # was emptied by flush() is passed over)
        self._queues: dict[Endpoint, deque[tuple[JID, Presence | None]]] = {}
        self._order: deque[Endpoint] = deque()
        self._count = 0  # deliveries queued
        self._touched: set[Endpoint] = set()  # endpoints written to in this turn
        self._turn: Any = None  # the call that starts the next turn

    @property
    def waiting(self) -> int:
        """Deliveries not yet made."""
        return self._count

    def deliver(self, ep: Endpoint, sender: JID, presence: Presence | None) -> None:
        """`sender`'s presence (None: unavailable) to `ep`: now if nothing waits for `ep` and
        this turn may still write to it, else after what waits."""
        touched = self._touched
        queue = self._queues.get(ep)
        if queue is None and (ep in touched or len(touched) < self.per_turn):
            touched.add(ep)
            ep.deliver_presence(sender, presence)
        else:
            if queue is None:
                queue = self._queues[ep] = deque()
            queue.append((sender, presence))
            self._order.append(ep)
            self._count += 1
        if self._turn is None:
            self._turn = self._clock.callLater(0, self._next_turn)

    def flush(self, ep: Endpoint) -> None:
        """Make `ep`'s waiting deliveries now: something else is about to be written to it (a
        message), and what a sender sent first must reach the watcher first (RFC 6120 §10.1)."""
        queue = self._queues.pop(ep, None)
        if queue is None:
            return
        self._count -= len(queue)
        self._touched.add(ep)
        target = self._current(ep)
        if target is not None:
            for sender, presence in queue:
                self._write(target, sender, presence)

    def _next_turn(self) -> None:
        self._turn = None
        touched = self._touched
        touched.clear()
        order, queues = self._order, self._queues
        while order:
            ep = order[0]
            queue = queues.get(ep)
            if not queue:
                order.popleft()  # flushed already
                continue
            if ep not in touched and len(touched) >= self.per_turn:
                break  # the rest waits for the next turn
            order.popleft()
            sender, presence = queue.popleft()
            if not queue:
                del queues[ep]
            self._count -= 1
            touched.add(ep)
            target = self._current(ep)
            if target is not None:
                self._write(target, sender, presence)
        if touched:
            # this turn's count ends with the next turn; anything left waits for it
            self._turn = self._clock.callLater(0, self._next_turn)

    @staticmethod
    def _write(target: Endpoint, sender: JID, presence: Presence | None) -> None:
        try:
            target.deliver_presence(sender, presence)
        except Exception:
            # one broken session must not stop the others' deliveries
            log.err(None, f"presence from {sender} to {target.jid} not delivered")

    def _current(self, ep: Endpoint) -> Endpoint | None:
        """The session that now stands for `ep`: itself while it is connected; the stream that
        resumed it (XEP-0198) or a newer one that has sent its presence; None once it ended."""
        current = self._sessions.get(ep.jid)
        if current is None or current is ep or current.presence is not None:
            return current
        return None
