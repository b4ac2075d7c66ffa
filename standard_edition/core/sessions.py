"""Who is connected: every endpoint of every user, whatever protocol it speaks.

An endpoint is one XMPP resource (later also one SIP registration). The core delivers to it
through the small `Endpoint` interface, which each protocol adapter implements.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from standard_edition.core.events import EventBus
from standard_edition.core.jid import JID
from standard_edition.core.model import Message, Presence, RosterItem
from standard_edition.core.subscription import Kind


class Endpoint(Protocol):
    jid: JID  # full address of this endpoint
    protocol: str  # "xmpp"
    address: str  # peer address, for se-ctl sessions
    since: float  # epoch seconds
    secure: bool
    presence: Presence | None  # None until the endpoint has said it is available
    interested: bool  # asked for the roster: gets roster pushes and subscription requests

    # None: taken. A Deferred: the endpoint learns later (SIP waits for the contact's answer)
    # and fails it with Undeliverable (recipient-unavailable: unreachable, try offline storage)
    def deliver_message(self, msg: Message) -> Deferred[None] | None: ...
    def deliver_presence(self, sender: JID, presence: Presence | None) -> None: ...
    def deliver_subscription(self, sender: JID, kind: Kind) -> None: ...
    def deliver_roster_push(self, item: RosterItem, removed: bool = False) -> None: ...
    def close(self, condition: str, text: str = "") -> None: ...


def describe(ep: Endpoint) -> dict[str, Any]:
    """One endpoint as se-ctl sessions, the console and the sessions events show it."""
    p = ep.presence
    return {
        "jid": str(ep.jid),
        "protocol": ep.protocol,
        "address": ep.address,
        "since": datetime.fromtimestamp(ep.since, UTC).isoformat(timespec="seconds"),
        "tls": ep.secure,
        "origin": getattr(ep, "origin", "internal"),
        "available": p is not None,
        "show": (p.show or "available") if p is not None else "unavailable",
        "priority": p.priority if p is not None else None,
    }


class SessionRegistry:
    def __init__(self, events: EventBus | None = None) -> None:
        self._by_user: dict[str, dict[str, Endpoint]] = {}
        # endpoints per protocol, kept as they come and go: the counters feed reads it every
        # few seconds, and walking every session each time would hold the reactor
        self._by_protocol: dict[str, int] = {}
        self.events = events  # told of each login and logout (topic "sessions")

    def add(self, ep: Endpoint) -> Endpoint | None:
        """Register an endpoint; returns the one it replaces (same full address), if any."""
        assert ep.jid.local is not None and ep.jid.resource is not None
        resources = self._by_user.setdefault(ep.jid.local, {})
        old = resources.get(ep.jid.resource)
        resources[ep.jid.resource] = ep
        if old is not ep:
            if old is not None:
                self._count(old, -1)
                self._publish("logout", old)
            self._count(ep, 1)
            self._publish("login", ep)
        return old

    def remove(self, ep: Endpoint) -> bool:
        """Forget an endpoint; False when it was already replaced or gone."""
        assert ep.jid.local is not None and ep.jid.resource is not None
        resources = self._by_user.get(ep.jid.local)
        if not resources or resources.get(ep.jid.resource) is not ep:
            return False
        del resources[ep.jid.resource]
        if not resources:
            del self._by_user[ep.jid.local]
        self._count(ep, -1)
        self._publish("logout", ep)
        return True

    def _count(self, ep: Endpoint, delta: int) -> None:
        n = self._by_protocol.get(ep.protocol, 0) + delta
        if n:
            self._by_protocol[ep.protocol] = n
        else:
            del self._by_protocol[ep.protocol]

    def _publish(self, change: str, ep: Endpoint) -> None:
        if self.events is not None and self.events.wants("sessions"):
            self.events.publish("sessions", {"change": change, **describe(ep)})

    def get(self, jid: JID) -> Endpoint | None:
        if jid.local is None or jid.resource is None:
            return None
        return self._by_user.get(jid.local, {}).get(jid.resource)

    def of_user(self, username: str) -> list[Endpoint]:
        return list(self._by_user.get(username, {}).values())

    def available(self, username: str) -> list[Endpoint]:
        return [e for e in self._by_user.get(username, {}).values() if e.presence is not None]

    def interested(self, username: str) -> list[Endpoint]:
        return [e for e in self._by_user.get(username, {}).values() if e.interested]

    def __iter__(self) -> Iterator[Endpoint]:
        for resources in list(self._by_user.values()):
            yield from list(resources.values())

    def count(self) -> int:
        return sum(len(r) for r in self._by_user.values())

    def counts_by_protocol(self) -> dict[str, int]:
        return dict(self._by_protocol)
