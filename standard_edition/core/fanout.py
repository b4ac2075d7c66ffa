"""Presence fan-out spread over reactor turns, so one busy user never holds the reactor.

A presence change goes to every watcher's session, and each session written to costs the
reactor a TLS record and a socket write in the turns that follow. A user with 60 contacts
changing state, or two such changes arriving together, would otherwise keep every other
session waiting until all of them were written. The router hands each presence delivery to
local endpoints to this queue: in one reactor turn, presence goes to at most `per_turn`
distinct endpoints (more stanzas to an endpoint already written to cost little); the rest wait
for the next turns. A delivery to an endpoint that has presence waiting waits behind it, so a
watcher still receives one sender's presences in the order they were sent.
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
        self._waiting: deque[tuple[Endpoint, JID, Presence | None]] = deque()
        self._pending: dict[Endpoint, int] = {}  # deliveries waiting, by endpoint
        self._touched: set[Endpoint] = set()  # endpoints written to in this turn
        self._turn: Any = None  # the call that starts the next turn

    @property
    def waiting(self) -> int:
        """Deliveries not yet made."""
        return len(self._waiting)

    def deliver(self, ep: Endpoint, sender: JID, presence: Presence | None) -> None:
        """`sender`'s presence (None: unavailable) to `ep`: now if nothing waits for `ep` and
        this turn may still write to it, else after what waits."""
        touched = self._touched
        if ep not in self._pending and (ep in touched or len(touched) < self.per_turn):
            touched.add(ep)
            ep.deliver_presence(sender, presence)
        else:
            self._waiting.append((ep, sender, presence))
            self._pending[ep] = self._pending.get(ep, 0) + 1
        if self._turn is None:
            self._turn = self._clock.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        self._turn = None
        touched = self._touched
        touched.clear()
        waiting, pending = self._waiting, self._pending
        while waiting:
            ep, sender, presence = waiting[0]
            if ep not in touched and len(touched) >= self.per_turn:
                break  # the rest waits for the next turn
            waiting.popleft()
            left = pending.pop(ep) - 1
            if left:
                pending[ep] = left
            target = self._current(ep)
            if target is None:
                continue
            touched.add(ep)
            try:
                target.deliver_presence(sender, presence)
            except Exception:
                # one broken session must not stop the others' deliveries
                log.err(None, f"presence from {sender} to {ep.jid} not delivered")
        if touched:
            # this turn's count ends with the next turn; anything left waits for it
            self._turn = self._clock.callLater(0, self._next_turn)

    def _current(self, ep: Endpoint) -> Endpoint | None:
        """The session that now stands for `ep`: itself while it is connected; the stream that
        resumed it (XEP-0198) or a newer one that has sent its presence; None once it ended."""
        current = self._sessions.get(ep.jid)
        if current is None or current is ep or current.presence is not None:
            return current
        return None
