"""Our users in partners' rooms: XEP-0045 over s2s, seen from the occupant's server (DESIGN §7).

A client of ours joins room@conference.partner.example with directed presence that leaves on
the s2s stream (xmpp/s2s.py); the room's answers come back the same way. This server keeps
which of its endpoints sit in which partner rooms, under which nickname, so that a policy
change reaches them: when the partner's domain stops being allowed, or the user loses
federation access, nothing more goes to or comes from that room, and the room cannot say so
itself. Each such client is then told it left, as a room says it (XEP-0045 §9.2 self-presence:
unavailable from room/nick with status 110), with status 307 (removed: clients do not rejoin
on their own) and 333 (for a technical reason, here by the user's own server), and the admin's
reason.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.python import log

from standard_edition.core.jid import JID
from standard_edition.core.model import Presence
from standard_edition.xmpp.stanzas import C

if TYPE_CHECKING:
    from standard_edition.core.federation import FederationPolicy
    from standard_edition.xmpp.s2s import S2SService

__all__ = ["PartnerRooms"]

MUC_X = "{http://jabber.org/protocol/muc}x"  # XEP-0045 §7.2.1: a join says it is one
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
LEFT_CODES = ("110", "307", "333")  # self-presence; removed; for a technical reason


@dataclass(slots=True)
class Seat:
    """One endpoint of ours in one partner room."""

    endpoint: Any  # the session that joined: a later one with the same address is another
    nicks: list[str] = field(default_factory=list)  # the last is the one in use


class PartnerRooms:
    def __init__(self, s2s: S2SService, router: Any, policy: FederationPolicy) -> None:
        self.router = router
        self.policy = policy
        # our endpoint's full address -> the partner room's bare address -> the seat
        self.seats: dict[JID, dict[JID, Seat]] = {}
        s2s.presence_sent.append(self._sent)
        s2s.room_presence_seen.append(self._seen)
        policy.on_refused.append(self._domains_changed)
        policy.on_user_changed.append(self._user_changed)

    # -- what crosses ------------------------------------------------------------------------

    def _sent(self, sender: JID, to: JID, presence: Presence | None) -> None:
        """Our endpoint's presence to a remote full address: a join, a nickname, a leave."""
        if to.resource is None or sender.resource is None:
            return
        rooms = self.seats.get(sender)
        room = to.bare
        if presence is None:
            if rooms is not None and rooms.pop(room, None) is not None and not rooms:
                del self.seats[sender]
            return
        seat = rooms.get(room) if rooms is not None else None
        joining = any(el.tag == MUC_X for el in presence.payload)
        if seat is None and not joining:
            return  # presence to a contact's client, not to a room
        endpoint = self.router.sessions.get(sender)
        if endpoint is None:
            return
        if seat is None or seat.endpoint is not endpoint:
            seat = self.seats.setdefault(sender, {})[room] = Seat(endpoint)
        if to.resource in seat.nicks:
            seat.nicks.remove(to.resource)
        seat.nicks.append(to.resource)

    def _seen(self, occupant: JID, to: JID, el: ET.Element) -> None:
        """A room's unavailable or error presence to our client: for its own nickname, the
        client is out (it left, was kicked, or the join or a nickname change was refused)."""
        rooms = self.seats.get(to)
        seat = rooms.get(occupant.bare) if rooms is not None else None
        if seat is None or occupant.resource not in seat.nicks:
            return
        seat.nicks.remove(occupant.resource)
        if not seat.nicks:
            del rooms[occupant.bare]  # type: ignore[index]
            if not rooms:
                del self.seats[to]

    # -- policy ------------------------------------------------------------------------------

    def _domains_changed(self, _: str) -> None:
        """Rooms of a domain no longer allowed: every client of ours in one is told it left."""
        self._leave(lambda ep_jid, room: not self.policy.domain_allowed(room.domain))

    def _user_changed(self, user: str, changes: dict[str, bool]) -> None:
        if changes.get("federation_access") is False:
            self._leave(lambda ep_jid, room: ep_jid.local == user)

    def _leave(self, which: Any) -> None:
        for ep_jid, rooms in list(self.seats.items()):
            for room, seat in list(rooms.items()):
                if not which(ep_jid, room):
                    continue
                del rooms[room]
                if self.router.sessions.get(ep_jid) is not seat.endpoint:
                    continue  # that session is gone; the room forgets it on its own
                reason = f"federation with {room.domain} is not allowed by the administrator"
                log.msg(f"conference: {ep_jid} taken out of {room}/{seat.nicks[-1]}: {reason}")
                deliver = getattr(seat.endpoint, "deliver_stanza", None)
                if deliver is not None:
                    deliver(left(room, seat.nicks[-1], reason))
            if not rooms:
                self.seats.pop(ep_jid, None)


def left(room: JID, nick: str, reason: str) -> ET.Element:
    """XEP-0045 self-presence of an occupant removed from `room`."""
    el = ET.Element(C + "presence", {"from": f"{room}/{nick}", "type": "unavailable"})
    x = ET.SubElement(el, "{" + NS_MUC_USER + "}x")
    item = ET.SubElement(x, "{" + NS_MUC_USER + "}item", {"affiliation": "none", "role": "none"})
    ET.SubElement(item, "{" + NS_MUC_USER + "}reason").text = reason
    for code in LEFT_CODES:
        ET.SubElement(x, "{" + NS_MUC_USER + "}status", {"code": code})
    return el
