"""Conferences by real address, for every protocol adapter.

The rules of a room live in rooms.py. This service runs what both adapters need — join,
speak, leave, invite, and turning a one-to-one chat into a room (DESIGN §5) — and fans the
results out to each occupant's endpoint, whatever protocol it speaks: an endpoint that
speaks XML gets the stanzas the XMPP view renders (xmpp/muc.py); any other endpoint (a SIP
registration) gets plain lines through `deliver_message`, and joins by replying to its
invitation and leaves with a `/leave` line. Occupants in other domains (federation) get the
XML over the server-to-server link (`remote`, set by xmpp/muc_federation.py), subject to the
federation policy (DESIGN §7). Rooms opening and going away, and occupants coming and going,
are published to the control socket's subscribers (topic "rooms", core/events.py).
"""

from __future__ import annotations

import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python import log

from standard_edition.conference.rooms import Line, Occupant, Room, RoomError, Rooms
from standard_edition.core.jid import JID
from standard_edition.core.model import Message
from standard_edition.core.url_filter import LinkBlocked

if TYPE_CHECKING:
    from standard_edition.core.events import EventBus
    from standard_edition.core.router import Router

__all__ = ["INVITE", "LEAVE", "Conferences", "XmlView", "archive_name", "describe_room"]

ESCALATION_LINES = 20  # DESIGN §5: up to 20 lines of the last hour come along
ESCALATION_AGE = 3600.0
DEFAULT_HISTORY = 20  # lines a joiner gets when it asks for nothing else
LEAVE = "/leave"  # the line a plain-text occupant leaves with
INVITE = "/invite"  # the line that turns a one-to-one chat into a room


class XmlView(Protocol):
    """How the XMPP adapter renders room events for endpoints that speak XML."""

    def occupant_presence(
        self, room: Room, occ: Occupant, to: Occupant, *, gone: bool, codes: tuple[str, ...]
    ) -> ET.Element: ...

    def line_element(
        self, room: Room, line: Line, *, delayed: bool, msg_id: str | None = None
    ) -> ET.Element: ...

    def subject_element(self, room: Room) -> ET.Element: ...

    def invitation_element(
        self, room: Room, inviter: JID, text: str, reason: str | None, thread: str | None
    ) -> ET.Element: ...


class RemoteOccupants(Protocol):
    """How room events reach addresses in other domains (the XMPP federation adapter)."""

    def deliver(self, to: JID, el: ET.Element) -> None: ...


class Conferences:
    def __init__(self, domain: str, router: Router) -> None:
        self.domain = f"conference.{domain}"
        self.router = router
        self.rooms = Rooms(self.domain)
        self.view: XmlView | None = None  # set by the XMPP adapter
        self.remote: RemoteOccupants | None = None  # set when rooms federate
        self.events: EventBus | None = None  # told of rooms and occupants (topic "rooms")

    def room_of(self, to: JID) -> Room | None:
        return self.rooms.get(to.local or "") if to.local and to.domain == self.domain else None

    def announce(self, change: str, room: Room, occ: Occupant | None = None, **extra: str) -> None:
        """One "rooms" event (core/events.py), built only when someone listens; published on
        joins, leaves and changes of the room itself, never per line."""
        events = self.events
        if events is None or not events.wants("rooms"):
            return
        data: dict[str, Any] = {"change": change, **describe_room(room)}
        if occ is not None:
            data.update(nick=occ.nick, jid=str(occ.jid), role=occ.role)
        data.update(extra)
        events.publish("rooms", data)

    # -- delivery to one endpoint --------------------------------------------------------------

    def send(
        self,
        to: JID,
        xml: Callable[[], ET.Element] | None,
        plain: Callable[[], Message | None] | None = None,
    ) -> None:
        """One event to one endpoint: the XML rendering if it speaks XML, else the plain one."""
        ep = self.router.sessions.get(to)
        if ep is None:
            if self.remote is not None and xml is not None and self.router.is_remote(to):
                self.remote.deliver(to, xml())  # a federated occupant
            return
        deliver = getattr(ep, "deliver_stanza", None)
        if deliver is not None:
            if xml is not None and self.view is not None:
                deliver(xml())
            return
        msg = plain() if plain is not None else None
        if msg is not None:
            _watch(ep.deliver_message(msg), to)

    def _plain(self, room: Room, to: JID, text: str, nick: str | None = None) -> Message:
        sender = JID(room.jid.local, room.jid.domain, nick) if nick else room.jid
        return Message(sender, to, "groupchat", text, secrets.token_hex(6))

    def _plain_line(self, room: Room, line: Line, to: JID, delayed: bool) -> Message | None:
        if line.body is None:
            return None
        stamp = datetime.fromtimestamp(line.stamp, UTC) if delayed else None
        sender = JID(room.jid.local, room.jid.domain, line.nick)
        return Message(sender, to, "groupchat", line.body, secrets.token_hex(6), delay=stamp)

    def broadcast_occupant(
        self,
        room: Room,
        occ: Occupant,
        *,
        gone: bool = False,
        codes: tuple[str, ...] = (),
        notice: str | None = None,
    ) -> None:
        """An occupant's presence to everyone in the room (XEP-0045 §7.2.3, §7.14); plain
        endpoints get `notice` as a line from the room instead."""
        view = self.view
        for other in list(room.occupants.values()) + ([occ] if gone else []):
            own = ("110", *codes) if other is occ else codes
            xml = None
            if view is not None:
                xml = _bind_presence(view, room, occ, other, gone, own)
            plain = None
            if notice is not None and other is not occ:
                text = f"{occ.nick} {notice}"
                plain = _bind(self._plain, room, other.jid, text)
            self.send(other.jid, xml, plain)

    # -- join, speak, leave ----------------------------------------------------------------------

    def join(
        self,
        room: Room,
        jid: JID,
        nick: str,
        *,
        presence: ET.Element | None = None,
        history: Callable[[Room], list[Line]] | None = None,
    ) -> tuple[Occupant, bool]:
        """Enter a room (raises RoomError); the joiner gets the occupants, history, subject."""
        opened = bool(room.occupants or room.affiliations)  # a room nobody has entered is new
        try:
            self.federation_check(room, jid)
            occ, created = room.join(jid, nick)
        except RoomError:
            if self.rooms.discard_if_empty(room) and opened:
                self.announce("destroyed", room)
            raise
        occ.presence = presence
        if created and not room.persistent:
            self.announce("created", room)
        self.announce("joined", room, occ)
        view = self.view
        # §7.2.3: the others' presence first, then the new occupant's to everyone
        if view is not None:
            for other in room.occupants.values():
                if other is not occ:
                    self.send(occ.jid, _bind_presence(view, room, other, occ, False, ()))
        self.broadcast_occupant(
            room, occ, codes=("201",) if created else (), notice="joined the conference"
        )
        lines = history(room) if history is not None else list(room.history)[-DEFAULT_HISTORY:]
        for line in lines:
            xml = _bind_line(view, room, line, True, None) if view is not None else None
            self.send(occ.jid, xml, _bind(self._plain_line, room, line, occ.jid, True))
        # §7.2.15: the subject (empty when none) marks the end of the join
        others = ", ".join(o.nick for o in room.occupants.values() if o is not occ) or "nobody"
        welcome = f"You are in {room.jid} with {others}. Send {LEAVE} to leave."
        self.send(
            occ.jid,
            (lambda: view.subject_element(room)) if view is not None else None,
            _bind(self._plain, room, occ.jid, welcome),
        )
        return occ, created

    def federation_check(self, room: Room, jid: JID) -> None:
        """DESIGN §7 in rooms (raises RoomError): a federated user joins only a room a local
        user opened, from an allowed domain, and nobody without federation access shares a
        room with a federated user."""
        router = self.router
        if router.is_remote(jid):
            if not room.occupants and not room.persistent:
                raise RoomError("not-allowed", "rooms here are opened by this server's users")
            if not router.may_federate(None, jid.domain):
                raise RoomError("forbidden", f"{jid.domain} may not use this service")
            for occ in room.occupants.values():
                local = not router.is_remote(occ.jid)
                if local and not router.may_federate(occ.jid.local, jid.domain):
                    raise RoomError(
                        "forbidden", "someone in this room may not talk to other domains"
                    )
            return
        for occ in room.occupants.values():
            if router.is_remote(occ.jid) and not router.may_federate(jid.local, occ.jid.domain):
                raise RoomError(
                    "forbidden", "this room has users of other domains, which you may not join"
                )

    def speak(
        self,
        room: Room,
        jid: JID,
        body: str | None,
        *,
        subject: str | None = None,
        payload: tuple[ET.Element, ...] | None = None,
        msg_id: str | None = None,
        stamp: float | None = None,
    ) -> Deferred[None]:
        """A line from an occupant to everyone in the room (raises RoomError)."""
        occ = room.speaker(jid)
        if payload is None:
            payload = (_body(body),) if body is not None else ()
        try:
            # the IM URL filter (core/url_filter.py): refused, or defanged before anyone sees it
            body, payload, subject = self.router.url_filter.apply(
                body, payload, subject, sender=jid, to=room.jid
            )
        except LinkBlocked as e:
            return fail(e)
        if subject is not None:
            room.subject, room.subject_by = subject, occ.nick
        line = Line(
            occ.nick, jid, body, payload, stamp if stamp is not None else time.time(), subject
        )
        view = self.view
        cached: list[ET.Element] = []

        def xml() -> ET.Element:
            assert view is not None
            if not cached:
                cached.append(
                    view.line_element(room, line, delayed=stamp is not None, msg_id=msg_id)
                )
            return cached[0]

        def fan_out(_: object = None) -> None:
            if body is not None or subject is not None:
                room.history.append(line)
            history = self.router.history
            if body is not None and history is not None:
                # XEP-0313 for rooms: this incarnation of the room keeps its own archive
                sender = JID(room.jid.local, room.jid.domain, occ.nick)
                kept = Message(sender, room.jid, "groupchat", body, msg_id, payload)
                history.record(archive_name(room), jid, False, kept, line.stamp)
            for other in list(room.occupants.values()):
                self.send(other.jid, xml, _bind(self._plain_line, room, line, other.jid, False))

        archive = self.router.archive
        archived = None
        if archive is not None and body is not None:
            # DESIGN §6: room lines are archived like one-to-one chats, critical mode included
            archived = archive.record(Message(jid, room.jid, "groupchat", body, msg_id))
        if archived is None:
            fan_out()
            return succeed(None)
        return archived.addCallback(fan_out)

    def leave(
        self, room: Room, jid: JID, codes: tuple[str, ...] = (), notice: str = "left"
    ) -> Occupant | None:
        occ = room.leave(jid)
        if occ is None:
            return None
        self.broadcast_occupant(room, occ, gone=True, codes=codes, notice=notice)
        self.announce("left", room, occ)
        if self.rooms.discard_if_empty(room):
            self.announce("destroyed", room)
        return occ

    def endpoint_gone(self, jid: JID) -> None:
        """A session or registration ended: it leaves every room it was in."""
        for room in self.rooms.rooms_of(jid):
            self.leave(room, jid)

    def plain_line(self, room: Room, jid: JID, text: str) -> Deferred[None]:
        """A line from an endpoint without room presence (SIP): `/leave` leaves; from someone
        not yet in the room, any line is the reply to the invitation that joins them, under
        their user name, and is then said in the room (DESIGN §5). Raises RoomError."""
        occ = room.occupant_by_jid(jid)
        if text.strip().lower() == LEAVE:
            if occ is not None:
                self.leave(room, jid)
            return succeed(None)
        if occ is None:
            if room.affiliation(jid) == "none" and room.occupants:
                raise RoomError("registration-required", "you are not invited to this room")
            self.join(room, jid, self._free_nick(room, jid))
        if not text.strip():
            return succeed(None)
        return self.speak(room, jid, text)

    def _free_nick(self, room: Room, jid: JID) -> str:
        base = jid.local or "guest"
        nick, n = base, 1
        while (taken := room.occupants.get(nick)) is not None and taken.jid.bare != jid.bare:
            n += 1
            nick = f"{base}-{n}"
        return nick

    # -- invitations and escalation -------------------------------------------------------------

    def invitation_text(self, room: Room, inviter: JID, reason: str | None) -> str:
        text = f"{inviter.bare} invites you to the conference {room.jid}"
        return text + (f": {reason}" if reason else "")

    def invite(
        self,
        room: Room,
        inviter: JID,
        invitee: JID,
        *,
        reason: str | None = None,
        continued: bool = False,
        thread: str | None = None,
        xml: ET.Element | None = None,
    ) -> None:
        """DESIGN §5: any occupant may invite; the invitee becomes a member and each of their
        endpoints gets the invitation (raises RoomError)."""
        invitee = invitee.bare
        router = self.router
        federated = router.is_remote(invitee)
        if federated:
            if self.remote is None:
                raise RoomError("remote-server-not-found", f"no route to {invitee.domain}")
            if not router.is_remote(inviter) and not router.may_federate(
                inviter.local, invitee.domain
            ):
                raise RoomError("not-allowed", f"you may not invite users of {invitee.domain}")
            self.federation_check(room, invitee)
        elif router.local_user(invitee) is None:
            raise RoomError("item-not-found", f"no user {invitee}")
        room.invite(inviter, invitee)
        if continued:
            self.seed_history(room, inviter, invitee)
        text = self.invitation_text(room, inviter, reason)
        how = f" Reply to this message to join; send {LEAVE} to leave."
        view = self.view
        if federated:
            # XEP-0045 §7.8.2: the room sends it to the invitee's bare address
            element = xml
            if element is None and view is not None:
                element = view.invitation_element(room, inviter, text, reason, thread)
            if element is not None and self.remote is not None:
                self.remote.deliver(invitee, element)
            return
        for ep in self.router.sessions.available(invitee.local or ""):
            element = xml
            if element is None and view is not None:
                element = view.invitation_element(room, inviter, text, reason, thread)
            self.send(
                ep.jid,
                (lambda e=element: e) if element is not None else None,  # type: ignore[misc]
                _bind(Message, room.jid, ep.jid, "normal", text + how, secrets.token_hex(6)),
            )

    def seed_history(self, room: Room, inviter: JID, invitee: JID) -> None:
        """DESIGN §5: when the inviting client did not send the one-to-one lines itself, the
        room starts with the last lines of that conversation."""
        if any(
            line.sender.bare == inviter.bare and line.stamp < room.created for line in room.history
        ):
            return  # the client sent its own copy of the history (§7.9): keep it verbatim
        if room.seeded:
            return
        recent = self.router.recent_chat(
            inviter.bare, invitee.bare, ESCALATION_LINES, ESCALATION_AGE
        )
        if not recent:
            return
        room.seeded = True
        seeded = [
            Line(
                msg.sender.local or str(msg.sender), msg.sender, msg.body, (_body(msg.body),), stamp
            )
            for stamp, msg in recent
        ]
        room.history.extendleft(reversed(seeded))

    def escalate(self, inviter: JID, peer: JID, others: list[JID]) -> Room:
        """Turn the one-to-one chat of `inviter` (an endpoint's full address) and `peer` into
        an ad hoc room: the inviter joins, the peer and the others are invited, and the room
        starts with the chat's last lines (DESIGN §5, the server side of XEP-0045 §7.9)."""
        invitees = [peer.bare] + [o.bare for o in others if o.bare != peer.bare]
        for who in invitees:
            if self.router.local_user(who) is None:
                raise RoomError("item-not-found", f"no user {who}")
            if who == inviter.bare:
                raise RoomError("bad-request", "you are already in this conversation")
        name = f"chat-{secrets.token_hex(4)}"
        while self.rooms.get(name) is not None:
            name = f"chat-{secrets.token_hex(4)}"
        room = self.rooms.get_or_create(name)
        self.seed_history(room, inviter, peer.bare)
        self.join(room, inviter, inviter.local or "owner")
        for who in invitees:
            self.invite(room, inviter, who, continued=True)
        return room

    def listing(self) -> list[dict[str, Any]]:
        return [
            {
                **describe_room(r),
                "occupants": [
                    {"nick": o.nick, "jid": str(o.jid), "role": o.role}
                    for o in r.occupants.values()
                ],
                "members": sorted(str(j) for j, a in r.affiliations.items() if a != "outcast"),
                "history": len(r.history),
            }
            for r in self.rooms.all()
        ]


def describe_room(room: Room) -> dict[str, Any]:
    """A room as its "rooms" events show it; count is its occupants now."""
    return {
        "room": str(room.jid),
        "name": room.name,
        "subject": room.subject,
        "persistent": room.persistent,
        "members_only": room.members_only,
        "count": len(room.occupants),
    }


def archive_name(room: Room) -> str:
    """Rooms share the history table with users under a name no account can have."""
    return f"#{room.jid}#{int(room.created)}"


def _body(text: str | None) -> ET.Element:
    el = ET.Element("{jabber:client}body")
    el.text = text or ""
    return el


def _bind(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: fn(*args)


def _bind_presence(
    view: XmlView, room: Room, occ: Occupant, to: Occupant, gone: bool, codes: tuple[str, ...]
) -> Callable[[], ET.Element]:
    return lambda: view.occupant_presence(room, occ, to, gone=gone, codes=codes)


def _bind_line(
    view: XmlView, room: Room, line: Line, delayed: bool, msg_id: str | None
) -> Callable[[], ET.Element]:
    return lambda: view.line_element(room, line, delayed=delayed, msg_id=msg_id)


def _watch(d: Deferred[None] | None, to: JID) -> None:
    """A room line an endpoint could not take is logged; the room goes on."""
    if d is not None:
        d.addErrback(lambda f: log.msg(f"conference: line to {to} not delivered: {f.value}"))
