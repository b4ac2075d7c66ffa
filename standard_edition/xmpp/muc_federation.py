"""Federated users in our rooms: XEP-0045 over server-to-server streams (DESIGN §5, §7).

A user of a partner domain (erin@partner.example) joins, speaks in and leaves a room on our
conference.<domain> with the stanzas a local client would send; they arrive over s2s
(xmpp/s2s.py) addressed to conference.<domain>, and the room's answers leave on the stream
from conference.<domain> to the partner. The room rules and the federation checks
(conference/service.py) are the same for every occupant. A federated occupant whose server
cannot be reached or whose server bounces the room's stanzas leaves the room (XEP-0045
status 333, a technical reason).

Policy changes apply to rooms at once, by the rule the joins follow: nobody without
federation access shares a room with a federated user. Occupants of a domain that stops
being allowed are removed from every room (status 307, removed by the service). When a
local user loses federation access, in each room they share with federated occupants: if
they own the room, the federated occupants are removed (307) and the room stays theirs;
otherwise the user is removed (307) and the room goes on without them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred
from twisted.python import failure, log

from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.core.model import Undeliverable
from standard_edition.xmpp.stanzas import StanzaError, error_reply, local_name

if TYPE_CHECKING:
    from standard_edition.core.federation import FederationPolicy
    from standard_edition.core.router import Router
    from standard_edition.xmpp.muc import MucService
    from standard_edition.xmpp.s2s import S2SService

MAM_QUERY = "{urn:xmpp:mam:2}query"
REMOVED = ("333",)  # XEP-0045: removed because of a technical problem
KICKED = ("307",)  # XEP-0045: removed from the room (here by the federation policy)


class RemotePeer:
    """A federated user as the room code sees a client stream: an address and a way back."""

    def __init__(self, rooms: FederatedRooms, jid: JID) -> None:
        self.rooms = rooms
        self.jid = jid

    def send_stanza(self, el: ET.Element) -> None:
        try:
            to = parse_jid(el.get("to", "")) if el.get("to") else self.jid
        except InvalidJID:
            to = self.jid
        self.rooms.deliver(to, el)


class FederatedRooms:
    """Stanzas between other domains and our conference service."""

    def __init__(
        self, s2s: S2SService, muc: MucService, router: Router, policy: FederationPolicy
    ) -> None:
        self.s2s = s2s
        self.muc = muc
        self.router = router
        self.conferences = muc.conferences
        self.reactor = s2s.reactor
        s2s.local_domains.add(muc.domain)  # streams to and from conference.<domain>
        s2s.rooms = self
        self.conferences.remote = self
        policy.on_refused.append(self._policy_changed)
        policy.on_user_changed.append(self._user_changed)

    def handles(self, to: JID) -> bool:
        return to.domain == self.muc.domain

    # -- in ------------------------------------------------------------------------------------

    def incoming(self, el: ET.Element, sender: JID, to: JID) -> None:
        """A stanza (jabber:client) from a federated user to the conference service; raises
        StanzaError for the s2s adapter to bounce."""
        if el.get("type") == "error":
            self._error_from(sender, to)
            return
        peer = cast(Any, RemotePeer(self, sender))
        kind = local_name(el.tag)
        if kind == "presence":
            self.muc.presence(peer, el, to)
        elif kind == "message":
            self.muc.message(peer, el, to)
        elif kind == "iq":
            self._iq(peer, el, to)

    def _iq(self, peer: Any, el: ET.Element, to: JID) -> None:
        if el.get("type") in ("get", "set") and el.find(MAM_QUERY) is not None:
            # a room's archive is read by this server's users (it needs their history store)
            raise StanzaError("feature-not-implemented", "room archives are for local users")
        answer = self.muc.iq(peer, el, to)
        if isinstance(answer, Deferred):
            answer.addCallback(peer.send_stanza)
            answer.addErrback(self._iq_failed, peer, el)
        elif answer is not None:
            peer.send_stanza(answer)

    def _iq_failed(self, f: failure.Failure, peer: Any, el: ET.Element) -> None:
        if f.check(StanzaError):
            peer.send_stanza(error_reply(el, f.value.condition, f.value.text))
            return
        log.err(f, f"conference: iq from {peer.jid}")
        peer.send_stanza(error_reply(el, "internal-server-error"))

    def _error_from(self, sender: JID, to: JID) -> None:
        """The occupant's server bounced a stanza of the room: the occupant is gone."""
        room = self.conferences.room_of(to)
        if room is not None and room.occupant_by_jid(sender) is not None:
            log.msg(f"conference: {sender} left {room.jid}: its server returned an error")
            self.conferences.leave(room, sender, REMOVED, notice="was disconnected")

    # -- out -----------------------------------------------------------------------------------

    def deliver(self, to: JID, el: ET.Element) -> None:
        """One room stanza to an address in another domain (Conferences.remote)."""
        el.set("to", str(to))
        d = self.s2s.send(to.domain, el, want_result=True)
        d.addErrback(self._unreachable, to)

    def _unreachable(self, f: failure.Failure, to: JID) -> None:
        if not f.check(Undeliverable):
            log.err(f, f"conference: stanza to {to}")
            return
        log.msg(f"conference: {to} unreachable ({f.value.condition}); it leaves its rooms")
        # not while the room is still fanning the stanza out
        self.reactor.callLater(0, self._remove_everywhere, to)

    def _remove_everywhere(self, jid: JID) -> None:
        for room in self.conferences.rooms.rooms_of(jid):
            self.conferences.leave(room, jid, REMOVED, notice="was disconnected")

    def _policy_changed(self, _: str) -> None:
        """Occupants of a domain that is no longer allowed leave every room."""
        for room in self.conferences.rooms.all():
            for occ in list(room.occupants.values()):
                remote = self.router.is_remote(occ.jid)
                if remote and not self.router.may_federate(None, occ.jid.domain):
                    log.msg(f"conference: {occ.jid} removed from {room.jid}: domain refused")
                    self.conferences.leave(room, occ.jid, KICKED, notice="was removed")

    def _user_changed(self, user: str, changes: dict[str, bool]) -> None:
        """A local user lost federation access: they no longer share a room with federated
        users (the rule in the module's docstring)."""
        if changes.get("federation_access") is not False:
            return
        me = JID(user, self.router.domain, None)
        for room in list(self.conferences.rooms.all()):
            mine = room.occupants_of(me)
            federated = [o for o in room.occupants.values() if self.router.is_remote(o.jid)]
            if not mine or not federated:
                continue
            if room.affiliation(me) == "owner":
                gone = [o.jid for o in federated]
            else:
                gone = [o.jid for o in mine]
            for jid in gone:
                log.msg(f"conference: {jid} removed from {room.jid}: {user} may not federate")
                self.conferences.leave(room, jid, KICKED, notice="was removed")
