"""XEP-0045 multi-user chat on conference.<domain>, for XMPP clients.

The room rules live in conference/rooms.py; this module turns stanzas addressed to the
conference service into room operations and renders the results: occupant presence with
muc#user items and status codes, history with XEP-0203 delays, subject, invitations (mediated
§7.8 with §7.9's <continue/>, kept), kicks and the owner's configuration form.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlite_utils
from twisted.internet.defer import Deferred
from twisted.python import log

from standard_edition.conference.rooms import HISTORY_MAX, Line, Occupant, Room, RoomError
from standard_edition.conference.service import Conferences, archive_name
from standard_edition.core.history import decode_message
from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.core.model import Message
from standard_edition.core.url_filter import FILTERED_TYPES
from standard_edition.xmpp import mam
from standard_edition.xmpp.stanzas import C, StanzaError, error_reply, sub

if TYPE_CHECKING:
    from standard_edition.core.router import Router
    from standard_edition.store.database import Database
    from standard_edition.xmpp.c2s import C2SProtocol

NS_MUC = "http://jabber.org/protocol/muc"
MUC = "{" + NS_MUC + "}"
USER = "{" + NS_MUC + "#user}"
ADMIN = "{" + NS_MUC + "#admin}"
OWNER = "{" + NS_MUC + "#owner}"
CONF = "{jabber:x:conference}"
DATA = "{jabber:x:data}"
DISCO_INFO = "{http://jabber.org/protocol/disco#info}"
DISCO_ITEMS = "{http://jabber.org/protocol/disco#items}"


class MucService:
    def __init__(
        self,
        domain: str,
        router: Router,
        db: Database | None = None,
        conferences: Conferences | None = None,
    ) -> None:
        # the rooms and their fan-out are shared with the SIP adapter (conference/service.py);
        # this class renders them for XMPP clients (conference.service.XmlView)
        self.conferences = conferences or Conferences(domain, router)
        self.conferences.view = self
        self.domain = self.conferences.domain
        self.router = router
        self.rooms = self.conferences.rooms
        self._db = db

    # -- persistent rooms ----------------------------------------------------------------------

    def load(self) -> Deferred[int]:
        """Bring back the persistent rooms, with their last lines from their archive."""
        assert self._db is not None

        def read(db: sqlite_utils.Database) -> list[tuple[dict[str, Any], list[Any]]]:
            out = []
            for r in db["rooms"].rows:
                jid = JID(r["name"], self.domain, None)
                name = f"#{jid}#{int(r['created'])}"
                lines = db.execute(
                    "SELECT stamp, message FROM mam WHERE owner = ? ORDER BY id DESC LIMIT ?",
                    [name, HISTORY_MAX],
                ).fetchall()
                out.append((r, list(reversed(lines))))
            return out

        def keep(rows: list[tuple[dict[str, Any], list[Any]]]) -> int:
            for r, lines in rows:
                room = self.rooms.get_or_create(r["name"])
                room.persistent, room.name = True, r["title"] or ""
                room.members_only, room.subject = bool(r["members_only"]), r["subject"] or ""
                room.created = r["created"]
                room.affiliations = {
                    parse_jid(j): a for j, a in json.loads(r["affiliations"]).items()
                }
                for stamp, text in lines:
                    msg = decode_message(text, stamp)
                    nick = msg.sender.resource or ""
                    room.history.append(Line(nick, msg.sender, msg.body, msg.payload, stamp))
            return len(rows)

        return self._db.run(read).addCallback(keep)

    def _save(self, room: Room) -> None:
        if self._db is None:
            return
        row = {
            "name": room.jid.local,
            "title": room.name,
            "members_only": int(room.members_only),
            "subject": room.subject,
            "affiliations": json.dumps({str(j): a for j, a in room.affiliations.items()}),
            "created": room.created,
        }
        persistent = room.persistent

        def write(db: sqlite_utils.Database) -> None:
            if persistent:
                db["rooms"].upsert(row, pk="name")
            else:
                db.execute("DELETE FROM rooms WHERE name = ?", [row["name"]])

        self._db.run(write).addErrback(lambda f: log.err(f, f"room {room.jid} not saved"))

    # -- delivery ------------------------------------------------------------------------------

    def _send(self, to: JID, el: ET.Element) -> None:
        def plain() -> Message | None:
            # an endpoint that speaks no XML (SIP) gets the line as a plain message
            if el.tag == C + "message" and el.findtext(C + "body"):
                sender = parse_jid(el.get("from", self.domain))
                return Message(sender, to, "groupchat", el.findtext(C + "body"))
            return None

        self.conferences.send(to, lambda: el, plain)

    # -- conference.service.XmlView ------------------------------------------------------------

    def occupant_presence(
        self, room: Room, occ: Occupant, to: Occupant, *, gone: bool, codes: tuple[str, ...]
    ) -> ET.Element:
        return self._occupant_presence(room, occ, to, gone=gone, codes=codes)

    def line_element(
        self, room: Room, line: Line, *, delayed: bool, msg_id: str | None = None
    ) -> ET.Element:
        return self._line(room, line, delayed=delayed, msg_id=msg_id)

    def subject_element(self, room: Room) -> ET.Element:
        subj = ET.Element(C + "message", {"from": str(room.jid), "type": "groupchat"})
        sub(subj, C + "subject", text=room.subject)
        return subj

    def invitation_element(
        self, room: Room, inviter: JID, text: str, reason: str | None, thread: str | None
    ) -> ET.Element:
        """§7.8.2 mediated invitation, from the server's side of an escalation (§7.9)."""
        out = ET.Element(C + "message", {"from": str(room.jid)})
        inv = sub(sub(out, USER + "x"), USER + "invite", {"from": str(inviter)})
        if reason:
            sub(inv, USER + "reason", text=reason)
        sub(inv, USER + "continue", {"thread": thread} if thread else {})
        direct = {"jid": str(room.jid), "continue": "true"}
        if thread:
            direct["thread"] = thread
        if reason:
            direct["reason"] = reason
        sub(out, CONF + "x", direct)
        sub(out, C + "body", text=text)
        return out

    def _occupant_presence(
        self,
        room: Room,
        occ: Occupant,
        to: Occupant,
        *,
        gone: bool = False,
        codes: tuple[str, ...] = (),
    ) -> ET.Element:
        el = ET.Element(C + "presence", {"from": f"{room.jid}/{occ.nick}"})
        if gone:
            el.set("type", "unavailable")
        else:
            own = () if occ.presence is None else tuple(occ.presence)
            payload = tuple(child for child in own if not child.tag.startswith(MUC))
            owner = self.router.local_user(occ.jid)
            if owner is not None:
                # XEP-0398 §4: the occupant's vCard photo hash (XEP-0153), unless the client
                # gave its own; the same additions as its presence to contacts
                for extend in self.router.presence_payload:
                    payload = extend(owner, payload)
            el.extend(payload)
        x = sub(el, USER + "x")
        # non-anonymous rooms: everyone sees real addresses (XEP-0045 §7.2.4 status 100)
        item = sub(
            x,
            USER + "item",
            {"affiliation": room.affiliation(occ.jid), "role": "none" if gone else occ.role},
        )
        item.set("jid", str(occ.jid))
        for code in codes:
            sub(x, USER + "status", {"code": code})
        if to is occ and not gone:
            sub(x, USER + "status", {"code": "100"})
        return el

    def _broadcast_presence(
        self, room: Room, occ: Occupant, *, gone: bool = False, codes: tuple[str, ...] = ()
    ) -> None:
        self.conferences.broadcast_occupant(room, occ, gone=gone, codes=codes)

    def photo_changed(self, user: str, only: Callable[[ET.Element | None], bool]) -> None:
        """A user's avatar hash changed: their occupants whose clients do not announce the hash
        themselves show the new one in every room they are in (XEP-0398 §4)."""
        for room in self.rooms.all():
            for occ in list(room.occupants.values()):
                if self.router.local_user(occ.jid) == user and only(occ.presence):
                    self._broadcast_presence(room, occ)

    # -- entry points from the c2s stream ------------------------------------------------------

    def room_of(self, to: JID) -> Room | None:
        return self.rooms.get(to.local or "") if to.local else None

    def presence(self, stream: C2SProtocol, el: ET.Element, to: JID) -> None:
        assert stream.jid is not None
        me = stream.jid
        if to.local is None:
            return
        ptype = el.get("type")
        room = self.room_of(to)
        if ptype == "unavailable":
            if room is not None:
                self._leave(room, me)
            return
        if ptype not in (None, "error") or to.resource is None:
            if to.resource is None and ptype is None:
                raise StanzaError("jid-malformed", "join with room@service/nickname")
            return
        nick = to.resource
        room = room or self.rooms.get_or_create(to.local)
        occ = room.occupant_by_jid(me)
        try:
            if occ is not None and occ.nick != nick:
                self._change_nick(room, me, nick)
                return
            if occ is not None:
                occ.presence = el
                self._broadcast_presence(room, occ)
                return
            muc_x = el.find(MUC + "x")
            # §7.2.3 order: the others' presence, the new occupant's, history, subject
            self.conferences.join(
                room, me, nick, presence=el, history=lambda r: self._history_for(r, muc_x)
            )
        except RoomError as e:
            self.rooms.discard_if_empty(room)
            reply = error_reply(el, e.condition, e.text)
            reply.set("from", f"{room.jid}/{nick}")
            stream.send_stanza(reply)
            return

    def _history_for(self, room: Room, muc_x: ET.Element | None) -> list[Line]:
        lines = list(room.history)
        hist = muc_x.find(MUC + "history") if muc_x is not None else None
        if hist is None:
            return lines[-20:]
        try:
            if hist.get("maxstanzas") is not None:
                n = max(0, int(hist.get("maxstanzas", "0")))
                lines = lines[-n:] if n else []
            if hist.get("seconds") is not None:
                cutoff = time.time() - int(hist.get("seconds", "0"))
                lines = [x for x in lines if x.stamp >= cutoff]
            if hist.get("since") is not None:
                since = datetime.fromisoformat(hist.get("since", "").replace("Z", "+00:00"))
                lines = [x for x in lines if x.stamp >= since.timestamp()]
        except ValueError:
            pass  # a malformed history request gets the default history
        return lines

    def _change_nick(self, room: Room, me: JID, nick: str) -> None:
        occ, old = room.change_nick(me, nick)
        self.conferences.announce("renamed", room, occ, old_nick=old)
        # §7.6: unavailable under the old nick with status 303, then available under the new
        for other in room.occupants.values():
            el = ET.Element(C + "presence", {"from": f"{room.jid}/{old}", "type": "unavailable"})
            x = sub(el, USER + "x")
            sub(
                x,
                USER + "item",
                {
                    "affiliation": room.affiliation(occ.jid),
                    "role": occ.role,
                    "jid": str(occ.jid),
                    "nick": nick,
                },
            )
            sub(x, USER + "status", {"code": "303"})
            if other is occ:
                sub(x, USER + "status", {"code": "110"})
            self._send(other.jid, el)
        self._broadcast_presence(room, occ)

    def _leave(self, room: Room, me: JID, codes: tuple[str, ...] = ()) -> None:
        self.conferences.leave(room, me, codes)

    def endpoint_gone(self, jid: JID) -> None:
        """A session ended: it leaves every room it was in."""
        self.conferences.endpoint_gone(jid)

    def message(self, stream: C2SProtocol, el: ET.Element, to: JID) -> None:
        assert stream.jid is not None
        me = stream.jid
        room = self.room_of(to)
        if room is None:
            raise StanzaError("item-not-found", "no such room")
        if to.resource is not None:
            self._private(room, me, to.resource, el)
            return
        x = el.find(USER + "x")
        if x is not None and x.find(USER + "invite") is not None:
            self._invite(stream, room, me, el, x)
            return
        if el.get("type") != "groupchat":
            raise StanzaError("bad-request", "messages to a room are type groupchat")
        subject = el.findtext(C + "subject")
        try:
            # history, room archive (XEP-0313), compliance archive and fan-out are shared
            # with SIP occupants (conference/service.py)
            spoken = self.conferences.speak(
                room,
                me,
                el.findtext(C + "body"),
                subject=subject,
                payload=tuple(ch for ch in el if ch.tag != "{urn:xmpp:delay}delay"),
                msg_id=el.get("id"),
                stamp=_delay_stamp(el),
            )
        except RoomError as e:
            raise StanzaError(e.condition, e.text) from None
        if subject is not None and room.persistent:
            self._save(room)

        def refused(f: Any) -> None:
            e = f.value
            stream.send_stanza(
                error_reply(
                    el,
                    getattr(e, "condition", "internal-server-error"),
                    str(getattr(e, "text", "")),
                )
            )

        spoken.addErrback(refused)

    def _line(
        self, room: Room, line: Line, *, delayed: bool, msg_id: str | None = None
    ) -> ET.Element:
        el = ET.Element(C + "message", {"from": f"{room.jid}/{line.nick}", "type": "groupchat"})
        if msg_id:
            el.set("id", msg_id)
        el.extend(line.payload)
        if delayed:
            stamp = datetime.fromtimestamp(line.stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            sub(el, "{urn:xmpp:delay}delay", {"from": str(room.jid), "stamp": stamp})
        return el

    def _private(self, room: Room, me: JID, nick: str, el: ET.Element) -> None:
        occ = room.occupant_by_jid(me)
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        target = room.occupants.get(nick)
        if target is None:
            raise StanzaError("item-not-found", "no one by that nickname")
        out = ET.Element(
            C + "message", {"from": f"{room.jid}/{occ.nick}", "type": el.get("type", "chat")}
        )
        payload: tuple[ET.Element, ...] = tuple(el)
        if el.get("type", "normal") in FILTERED_TYPES:
            # the IM URL filter covers private lines too (raises LinkBlocked: not-acceptable)
            _, payload, _ = self.router.url_filter.apply(
                el.findtext(C + "body"), payload, sender=me, to=room.jid
            )
        out.extend(payload)
        x = sub(out, USER + "x")
        del x  # §7.5: private messages carry an empty muc#user x
        self._send(target.jid, out)

    def _invite(
        self, stream: C2SProtocol, room: Room, me: JID, el: ET.Element, x: ET.Element
    ) -> None:
        """§7.8.2 mediated invitations (with §7.9's <continue/> kept as sent)."""
        invites = x.findall(USER + "invite")
        # the IM URL filter (core/url_filter.py) reads each reason before anyone is invited:
        # a blocked link refuses the whole stanza (not-acceptable), a warned one is defanged
        reasons = [
            self.router.url_filter.filter_text(
                inv.findtext(USER + "reason"), sender=me, to=room.jid
            )
            for inv in invites
        ]
        for inv, reason in zip(invites, reasons, strict=True):
            try:
                invitee = parse_jid(inv.get("to", "")).bare
            except InvalidJID:
                raise StanzaError("jid-malformed", "the invitee's address is not valid") from None
            out = ET.Element(C + "message", {"from": str(room.jid)})
            ox = sub(out, USER + "x")
            oinv = sub(ox, USER + "invite", {"from": str(me)})
            for child in inv:
                if child.tag != USER + "reason":
                    oinv.append(child)
            if reason is not None:
                sub(oinv, USER + "reason", text=reason)
            # XEP-0249 alongside, for clients that only read direct invitations
            direct = {"jid": str(room.jid)}
            cont = inv.find(USER + "continue")
            if cont is not None:
                direct["continue"] = "true"
                if cont.get("thread"):
                    direct["thread"] = cont.get("thread", "")
            if reason:
                direct["reason"] = reason
            sub(out, CONF + "x", direct)
            sub(out, C + "body", text=self.conferences.invitation_text(room, me, reason))
            try:
                # the rule, the member list, the seeded history (§7.9) and the delivery to
                # every endpoint of the invitee are shared with SIP (conference/service.py)
                self.conferences.invite(
                    room, me, invitee, reason=reason, continued=cont is not None, xml=out
                )
            except RoomError as e:
                raise StanzaError(e.condition, e.text) from None
            if room.persistent:
                self._save(room)  # the invitee is a member now

    def _seed_history(self, room: Room, inviter: JID, invitee: JID) -> None:
        self.conferences.seed_history(room, inviter, invitee)

    def direct_invite_seen(self, sender: JID, to: JID, el: ET.Element) -> None:
        """XEP-0249: a direct invitation sent user to user also puts the invitee on the
        member list of an ad hoc room the sender is in."""
        x = el.find(CONF + "x")
        if x is None:
            return
        try:
            room_jid = parse_jid(x.get("jid", ""))
        except InvalidJID:
            return
        room = self.room_of(room_jid) if room_jid.domain == self.domain else None
        if room is None:
            return
        try:
            room.invite(sender, to.bare)
        except RoomError:
            return
        if x.get("continue") == "true":
            self._seed_history(room, sender, to.bare)

    def iq(self, stream: C2SProtocol, el: ET.Element, to: JID) -> ET.Element | None:
        assert stream.jid is not None
        if el.get("type") in ("result", "error"):
            return None
        child = el[0] if len(el) == 1 else None
        if child is None:
            return error_reply(el, "bad-request", "an iq get/set carries exactly one child")
        if to.local is None:
            return self._service_iq(el, child)
        room = self.room_of(to)
        if room is None:
            return error_reply(el, "item-not-found", "no such room")
        if to.resource is not None:
            return error_reply(el, "service-unavailable")
        try:
            if child.tag == DISCO_INFO + "query":
                return self._room_info(el, room)
            if child.tag == DISCO_ITEMS + "query":
                return _result(el, child.tag)
            if child.tag == "{urn:xmpp:mam:2}query":
                return self._mam(stream, el, child, room)
            if child.tag == OWNER + "query":
                return self._owner(stream, el, child, room)
            if child.tag == ADMIN + "query":
                return self._admin(stream, el, child, room)
        except RoomError as e:
            return error_reply(el, e.condition, e.text)
        return error_reply(el, "service-unavailable")

    def _service_iq(self, el: ET.Element, child: ET.Element) -> ET.Element:
        if child.tag == DISCO_INFO + "query" and el.get("type") == "get":
            reply = _result(el, child.tag)
            q = reply[0]
            sub(
                q,
                DISCO_INFO + "identity",
                {"category": "conference", "type": "text", "name": "Conferences"},
            )
            sub(q, DISCO_INFO + "feature", {"var": NS_MUC})
            sub(q, DISCO_INFO + "feature", {"var": "http://jabber.org/protocol/disco#info"})
            sub(q, DISCO_INFO + "feature", {"var": "http://jabber.org/protocol/disco#items"})
            return reply
        if child.tag == DISCO_ITEMS + "query" and el.get("type") == "get":
            reply = _result(el, child.tag)
            for room in self.rooms.all():
                if room.persistent or not room.members_only:
                    sub(
                        reply[0],
                        DISCO_ITEMS + "item",
                        {"jid": str(room.jid), "name": room.name or room.jid.local or ""},
                    )
            return reply
        return error_reply(el, "service-unavailable")

    def _mam(self, stream: C2SProtocol, el: ET.Element, q: ET.Element, room: Room) -> Any:
        """XEP-0313 §5: a room's archive, for its occupants and members."""
        assert stream.jid is not None
        if room.occupant_by_jid(stream.jid) is None and room.affiliation(stream.jid) in (
            "none",
            "outcast",
        ):
            raise RoomError("forbidden", "only the room's members may read its archive")
        if el.get("type") == "get":
            return mam.form(el)
        d = mam.query(stream, el, q, archive=archive_name(room), archive_jid=str(room.jid))
        d.addCallback(lambda reply: (reply.set("from", str(room.jid)), reply)[1])
        return d

    def _room_info(self, el: ET.Element, room: Room) -> ET.Element:
        reply = _result(el, DISCO_INFO + "query")
        q = reply[0]
        sub(
            q,
            DISCO_INFO + "identity",
            {"category": "conference", "type": "text", "name": room.name or room.jid.local or ""},
        )
        for f in (
            NS_MUC,
            "muc_membersonly" if room.members_only else "muc_open",
            "muc_persistent" if room.persistent else "muc_temporary",
            "muc_nonanonymous",
            "muc_unmoderated",
            "muc_unsecured",
            "urn:xmpp:mam:2",
        ):
            sub(q, DISCO_INFO + "feature", {"var": f})
        return reply

    def _owner(self, stream: C2SProtocol, el: ET.Element, q: ET.Element, room: Room) -> ET.Element:
        """§10: the owner's configuration form; instant rooms submit it empty."""
        assert stream.jid is not None
        if room.affiliation(stream.jid) != "owner":
            raise RoomError("forbidden", "only the room's owner may configure it")
        if el.get("type") == "get":
            reply = _result(el, OWNER + "query")
            x = sub(reply[0], DATA + "x", {"type": "form"})
            sub(x, DATA + "title", text=f"Configuration of {room.jid}")
            for var, ftype, value in (
                ("FORM_TYPE", "hidden", NS_MUC + "#roomconfig"),
                ("muc#roomconfig_roomname", "text-single", room.name),
                ("muc#roomconfig_persistentroom", "boolean", "1" if room.persistent else "0"),
                ("muc#roomconfig_membersonly", "boolean", "1" if room.members_only else "0"),
            ):
                f = sub(x, DATA + "field", {"var": var, "type": ftype})
                sub(f, DATA + "value", text=value)
            return reply
        x = q.find(DATA + "x")
        if x is not None and x.get("type") == "submit":
            for f in x.findall(DATA + "field"):
                value = f.findtext(DATA + "value") or ""
                var = f.get("var")
                if var == "muc#roomconfig_roomname":
                    room.name = value[:200]
                elif var == "muc#roomconfig_persistentroom":
                    room.persistent = value in ("1", "true")
                elif var == "muc#roomconfig_membersonly":
                    room.members_only = value in ("1", "true")
            self._save(room)
            self.conferences.announce("configured", room)
        return _result(el, None)

    def _admin(self, stream: C2SProtocol, el: ET.Element, q: ET.Element, room: Room) -> ET.Element:
        """§8.2 kick (role none) and §9/§10 affiliations (member, outcast, none)."""
        assert stream.jid is not None
        me = stream.jid
        if el.get("type") == "get":
            wanted = {i.get("affiliation") for i in q.findall(ADMIN + "item")}
            reply = _result(el, ADMIN + "query")
            for jid, aff in sorted(room.affiliations.items(), key=lambda kv: str(kv[0])):
                if aff in wanted:
                    sub(reply[0], ADMIN + "item", {"jid": str(jid), "affiliation": aff})
            return reply
        for item in q.findall(ADMIN + "item"):
            if item.get("role") == "none" and item.get("nick"):
                target = room.kick(me, item.get("nick", ""))
                self.conferences.announce("left", room, target)
                self._broadcast_presence(room, target, gone=True, codes=("307",))
                self._send(
                    target.jid,
                    self._occupant_presence(room, target, target, gone=True, codes=("307", "110")),
                )
            elif item.get("affiliation") in ("member", "outcast", "none") and item.get("jid"):
                if room.affiliation(me) not in ("owner", "admin"):
                    raise RoomError("forbidden", "only owners and admins change affiliations")
                try:
                    who = parse_jid(item.get("jid", "")).bare
                except InvalidJID:
                    raise RoomError("jid-malformed", "not a valid address") from None
                aff = item.get("affiliation", "none")
                if aff == "none":
                    room.affiliations.pop(who, None)
                else:
                    room.affiliations[who] = aff
                if room.persistent:
                    self._save(room)
                if aff == "outcast":
                    for occ in room.occupants_of(who):
                        self._leave(room, occ.jid, codes=("301",))
            else:
                raise RoomError("bad-request", "unsupported admin item")
        return _result(el, None)

    def listing(self) -> list[dict[str, Any]]:
        return self.conferences.listing()


def _delay_stamp(el: ET.Element) -> float | None:
    d = el.find("{urn:xmpp:delay}delay")
    if d is None:
        return None
    try:
        return datetime.fromisoformat(d.get("stamp", "").replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _result(el: ET.Element, child_tag: str | None) -> ET.Element:
    reply = ET.Element(C + "iq", {"type": "result", "id": el.get("id", "")})
    if el.get("to"):
        reply.set("from", el.get("to", ""))
    if el.get("from"):
        reply.set("to", el.get("from", ""))
    if child_tag is not None:
        sub(reply, child_tag)
    return reply
