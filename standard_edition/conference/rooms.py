"""Multi-party conversations: the rooms on conference.<domain>, protocol-free.

A room knows its occupants (by nickname and by real address), affiliations (owner, member,
outcast) and recent history. Protocol adapters render joins, leaves and lines for their own
endpoints; the rules of who may join, speak, invite and kick live here (XEP-0045's, with the
ad hoc conference defaults of DESIGN §5).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field

from standard_edition.core.jid import JID

HISTORY_MAX = 50  # lines kept per room for people who join later
MAX_OCCUPANTS = 200


class RoomError(Exception):
    """A refused room operation; condition is the XMPP stanza error it maps to."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text


@dataclass(frozen=True, slots=True)
class Line:
    nick: str
    sender: JID  # real address of the sender
    body: str | None
    payload: tuple[ET.Element, ...]
    stamp: float
    subject: str | None = None


@dataclass
class Occupant:
    nick: str
    jid: JID  # real full address
    role: str = "participant"  # moderator | participant | visitor
    presence: ET.Element | None = None  # the occupant's last presence payload, for XMPP


@dataclass
class Room:
    jid: JID  # room@conference.domain
    persistent: bool = False
    members_only: bool = True  # ad hoc conferences: only people who were invited
    name: str = ""
    subject: str = ""
    subject_by: str = ""
    affiliations: dict[JID, str] = field(
        default_factory=dict
    )  # bare JID -> owner|admin|member|outcast
    occupants: dict[str, Occupant] = field(default_factory=dict)  # nick -> occupant
    history: deque[Line] = field(default_factory=lambda: deque(maxlen=HISTORY_MAX))
    created: float = field(default_factory=time.time)
    seeded: bool = False  # the escalated one-to-one lines were added to the history

    def affiliation(self, jid: JID) -> str:
        return self.affiliations.get(jid.bare, "none")

    def occupant_by_jid(self, jid: JID) -> Occupant | None:
        for o in self.occupants.values():
            if o.jid == jid:
                return o
        return None

    def occupants_of(self, bare: JID) -> list[Occupant]:
        return [o for o in self.occupants.values() if o.jid.bare == bare]

    # -- rules ---------------------------------------------------------------------------------

    def check_join(self, jid: JID, nick: str) -> None:
        """XEP-0045 §7.2: the errors a join may get, in the order the XEP gives them."""
        if not nick.strip():
            raise RoomError("jid-malformed", "a nickname is required")
        if self.affiliation(jid) == "outcast":
            raise RoomError("forbidden", "you are banned from this room")
        taken = self.occupants.get(nick)
        if taken is not None and taken.jid.bare != jid.bare:
            raise RoomError("conflict", "that nickname is taken")
        if self.members_only and self.affiliation(jid) == "none" and self.occupants:
            raise RoomError("registration-required", "this room is for invited people only")
        if len(self.occupants) >= MAX_OCCUPANTS and taken is None:
            raise RoomError("service-unavailable", "the room is full")

    def join(self, jid: JID, nick: str) -> tuple[Occupant, bool]:
        """Add an occupant; True when this join created the room's first occupant (owner)."""
        self.check_join(jid, nick)
        created = not self.occupants and not self.affiliations
        if created:
            self.affiliations[jid.bare] = "owner"
        old = self.occupant_by_jid(jid)
        if old is not None and old.nick != nick:
            del self.occupants[old.nick]
        aff = self.affiliation(jid)
        role = "moderator" if aff in ("owner", "admin") else "participant"
        occ = Occupant(nick, jid, role)
        self.occupants[nick] = occ
        return occ, created

    def leave(self, jid: JID) -> Occupant | None:
        occ = self.occupant_by_jid(jid)
        if occ is not None:
            del self.occupants[occ.nick]
        return occ

    def change_nick(self, jid: JID, new: str) -> tuple[Occupant, str]:
        occ = self.occupant_by_jid(jid)
        if occ is None:
            raise RoomError("not-acceptable", "you are not in this room")
        if new in self.occupants and self.occupants[new].jid.bare != jid.bare:
            raise RoomError("conflict", "that nickname is taken")
        old = occ.nick
        del self.occupants[old]
        occ.nick = new
        self.occupants[new] = occ
        return occ, old

    def speaker(self, jid: JID) -> Occupant:
        occ = self.occupant_by_jid(jid)
        if occ is None:
            raise RoomError("not-acceptable", "you are not in this room")
        if occ.role == "visitor":
            raise RoomError("forbidden", "visitors may not speak here")
        return occ

    def invite(self, inviter: JID, invitee: JID) -> None:
        """DESIGN §5: in an ad hoc room any occupant may invite, and the invitation puts the
        invitee on the member list."""
        if self.occupant_by_jid(inviter) is None:
            raise RoomError("not-acceptable", "only people in the room may invite")
        if self.affiliation(invitee) == "outcast":
            raise RoomError("forbidden", "that person is banned from this room")
        if self.affiliation(invitee) == "none":
            self.affiliations[invitee.bare] = "member"

    def kick(self, actor: JID, nick: str) -> Occupant:
        me = self.occupant_by_jid(actor)
        if me is None or me.role != "moderator":
            raise RoomError("forbidden", "only moderators may kick")
        target = self.occupants.get(nick)
        if target is None:
            raise RoomError("item-not-found", "no one by that nickname")
        if self.affiliation(target.jid) in ("owner", "admin"):
            raise RoomError("not-allowed", "owners and admins cannot be kicked")
        del self.occupants[nick]
        return target

    def is_empty(self) -> bool:
        return not self.occupants


class Rooms:
    """Every room of the conference service."""

    def __init__(self, domain: str) -> None:
        self.domain = domain  # conference.<domain>
        self._rooms: dict[str, Room] = {}

    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def get_or_create(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = Room(JID(name, self.domain, None))
        return room

    def discard_if_empty(self, room: Room) -> bool:
        """Ad hoc rooms go away with their last occupant (DESIGN §5); True when this call took
        the room away (not when it was gone already)."""
        name = room.jid.local or ""
        if room.is_empty() and not room.persistent and self._rooms.get(name) is room:
            del self._rooms[name]
            return True
        return False

    def all(self) -> list[Room]:
        return sorted(self._rooms.values(), key=lambda r: r.jid.local or "")

    def rooms_of(self, jid: JID) -> list[Room]:
        return [r for r in self._rooms.values() if r.occupant_by_jid(jid) is not None]
