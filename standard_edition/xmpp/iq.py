"""IQ requests the server answers itself: roster, disco, ping, version, legacy session.

One handler per payload namespace; a request nobody handles gets `service-unavailable`
(RFC 6120 §8.4), and a request to another user's bare address is answered on that account's
behalf (RFC 6121 §8.5.2.1.3).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred

from standard_edition import __version__
from standard_edition.core.directory import Directory
from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.core.model import Undeliverable
from standard_edition.xmpp import adhoc, mam, register, rsm, search, vcard
from standard_edition.xmpp.stanzas import (
    NS_ROSTER,
    C,
    StanzaError,
    error_reply,
    result_reply,
    roster_item_element,
    sub,
)

if TYPE_CHECKING:
    from standard_edition.xmpp.c2s import C2SProtocol

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PING = "urn:xmpp:ping"
NS_VERSION = "jabber:iq:version"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_LAST = "jabber:iq:last"
NS_BLOCKING = "urn:xmpp:blocking"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_OFFLINE = "msgoffline"  # XEP-0160 §6 feature
MAX_ROSTER_NAME = 1024
MAX_GROUPS = 64

Handler = Callable[["C2SProtocol", ET.Element, ET.Element, JID | None], ET.Element | None]


class AccountNodes(Protocol):
    """What an account's disco shows of its nodes (pep/handlers.py): None, no such node."""

    def account_info(self, owner: str, who: JID, node: str | None) -> ET.Element | None: ...
    def account_items(self, owner: str, who: JID, node: str | None) -> list[ET.Element] | None: ...


class IqHandlers:
    def __init__(self, domain: str, *, version: bool, offline: Callable[[], bool]) -> None:
        self.domain = domain
        self.version_enabled = version
        self.offline_enabled = offline
        self._server: dict[tuple[str, str], Handler] = {
            (NS_DISCO_INFO, "query"): self._disco_info,
            (NS_DISCO_ITEMS, "query"): self._disco_items,
            (NS_PING, "ping"): self._ping,
            (NS_SESSION, "session"): self._session,
            (adhoc.NS_COMMANDS, "command"): self._command,
        }
        if version:
            self._server[(NS_VERSION, "query")] = self._version
        self._account: dict[tuple[str, str], Handler] = {
            (NS_ROSTER, "query"): self._roster,
            (NS_DISCO_INFO, "query"): self._account_disco_info,
            (NS_DISCO_ITEMS, "query"): self._account_disco_items,
            (NS_PING, "ping"): self._ping,
            (mam.NS_MAM, "query"): self._mam,
            (NS_CARBONS, "enable"): self._carbons,
            (NS_CARBONS, "disable"): self._carbons,
            (NS_BLOCKING, "blocklist"): self._blocklist,
            (NS_BLOCKING, "block"): self._block,
            (NS_BLOCKING, "unblock"): self._block,
        }
        # more services on subdomains for disco#items, e.g. upload.<domain> (server.py)
        self.services: list[dict[str, str]] = []
        # XEP-0054 cards and XEP-0055 directory: the server sets these up (server.py)
        self.vcards: vcard.VCards | None = None
        self.directory: Directory | None = None
        self._account[(vcard.NS_VCARD, "vCard")] = self._vcard
        self._account[(register.NS_REGISTER, "query")] = self._register
        self._server[(register.NS_REGISTER, "query")] = self._register
        self._server[(search.NS_SEARCH, "query")] = self._search
        # requests to another account's bare address a service answers itself (pep/)
        self._other: dict[tuple[str, str], Handler] = {}
        # what the account's disco#info shows besides registered (XEP-0163 §6: pubsub/pep),
        # and the service that describes its nodes (disco with a node, disco#items)
        self.account_identities: list[tuple[str, str]] = []
        self.account_features: list[str] = []
        self.account_nodes: AccountNodes | None = None

    def register_account(
        self, ns: str, name: str, handler: Handler, *, others: bool = False
    ) -> None:
        """Answer <name xmlns=ns/> requests to the user's own account, and with `others` also
        those to another account's bare address (the handler then checks who may ask)."""
        self._account[(ns, name)] = handler
        if others:
            self._other[(ns, name)] = handler

    def server_features(self) -> list[str]:
        features = [
            NS_DISCO_INFO,
            NS_DISCO_ITEMS,
            NS_PING,
            NS_BLOCKING,
            NS_CARBONS,
            adhoc.NS_COMMANDS,
            "urn:xmpp:delay",
            "urn:xmpp:idle:1",
        ]
        if self.version_enabled:
            features.append(NS_VERSION)
        if self.offline_enabled():
            features.append(NS_OFFLINE)
        features.append(register.NS_REGISTER)  # password change only; offered after sign-in
        if self.vcards is not None:
            features.append(vcard.NS_VCARD)
        if self.directory is not None:
            features.append(search.NS_SEARCH)
            features.append(rsm.NS_RSM)  # XEP-0059 §3: the search pages with it
        return sorted(features)

    def handle(self, stream: C2SProtocol, iq: ET.Element, to: JID | None) -> ET.Element | None:
        """Answer an iq get/set addressed to the server or to a bare account address."""
        payload = list(iq)
        if len(payload) != 1:
            # RFC 6120 §8.2.3: a get or set carries exactly one payload
            return error_reply(iq, "bad-request", "an iq get/set carries exactly one child")
        child = payload[0]
        ns, _, name = (
            child.tag[1:].partition("}") if child.tag.startswith("{") else ("", "", child.tag)
        )
        assert stream.jid is not None
        if to is None or to == stream.jid.bare:
            table = self._account
        elif to.local is None and to.domain == self.domain and to.resource is None:
            table = self._server
        elif to.domain == self.domain and to.resource is None:
            return self._for_other_account(stream, iq, child, to, ns)
        else:
            return error_reply(iq, "remote-server-not-found", f"no route to {to.domain}")
        handler = table.get((ns, name))
        if handler is None:
            return error_reply(iq, "service-unavailable")
        try:
            return handler(stream, iq, child, to)
        except StanzaError as e:
            return error_reply(iq, e.condition, e.text)
        except Undeliverable as e:
            return error_reply(iq, e.condition, e.text)

    def _for_other_account(
        self, stream: C2SProtocol, iq: ET.Element, child: ET.Element, to: JID, ns: str
    ) -> ET.Element:
        router = stream.ctx.router
        user = router.local_user(to)
        handler = self._other.get((ns, child.tag.rpartition("}")[2]))
        if handler is not None:
            try:
                return handler(stream, iq, child, to)  # type: ignore[return-value]
            except StanzaError as e:
                return error_reply(iq, e.condition, e.text)
        if ns == vcard.NS_VCARD and self.vcards is not None:
            # XEP-0054 §3.2: anyone may ask; the card's owner's access levels decide
            return vcard.other_card(self.vcards, stream, iq, user)  # type: ignore[return-value]
        # RFC 6121 §8.5.1: an account that does not exist and one that does not share its
        # presence look the same from outside
        visible = user is not None and router.rosters.state(user, stream.jid.bare).has_from  # type: ignore[union-attr]
        if visible and ns == NS_LAST and iq.get("type") == "get":
            # XEP-0012 §4: 0 while available, else seconds since the last sign-out
            assert user is not None
            reply = result_reply(iq)
            if router.sessions.available(user):
                sub(reply, "{" + NS_LAST + "}query", {"seconds": "0"})
                return reply
            seen = router.last_seen.get(user)
            if seen is None:
                return error_reply(iq, "service-unavailable")
            q = sub(reply, "{" + NS_LAST + "}query", {"seconds": str(int(time.time() - seen[0]))})
            q.text = seen[1] or None
            return reply
        if user is not None and ns in (NS_DISCO_INFO, NS_DISCO_ITEMS) and child.get("node"):
            # a node's own access model decides (an open one is read by anyone)
            if iq.get("type") != "get":
                return error_reply(iq, "bad-request", "disco is a get")
            try:
                if ns == NS_DISCO_INFO:
                    return self._node_info(stream, iq, child, user)
                return self._node_items(stream, iq, child, user)
            except StanzaError as e:
                return error_reply(iq, e.condition, e.text)
        if visible and ns == NS_DISCO_ITEMS and iq.get("type") == "get":
            assert user is not None
            return self._node_items(stream, iq, child, user)
        if visible and ns == NS_DISCO_INFO and iq.get("type") == "get":
            reply = result_reply(iq)
            q = sub(reply, "{" + NS_DISCO_INFO + "}query")
            sub(q, "{" + NS_DISCO_INFO + "}identity", {"category": "account", "type": "registered"})
            for category, kind in self.account_identities:
                sub(q, "{" + NS_DISCO_INFO + "}identity", {"category": category, "type": kind})
            return reply
        return error_reply(iq, "service-unavailable")

    # -- server ------------------------------------------------------------------------------

    def _disco_info(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        if iq.get("type") != "get":
            raise StanzaError("bad-request", "disco#info is a get")
        if q.get("node"):
            raise StanzaError("item-not-found", "no such node")
        reply = result_reply(iq)
        out = sub(reply, "{" + NS_DISCO_INFO + "}query")
        sub(
            out,
            "{" + NS_DISCO_INFO + "}identity",
            {"category": "server", "type": "im", "name": "SE Appliance"},
        )
        for f in self.server_features():
            sub(out, "{" + NS_DISCO_INFO + "}feature", {"var": f})
        return reply

    def _disco_items(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        if iq.get("type") != "get":
            raise StanzaError("bad-request", "disco#items is a get")
        node = q.get("node")
        if node and node != adhoc.NS_COMMANDS:
            raise StanzaError("item-not-found", "no such node")
        reply = result_reply(iq)
        out = sub(reply, "{" + NS_DISCO_ITEMS + "}query")
        if node is None:
            # XEP-0045 §6.1: the conference service is found through the server's items
            conference = {"jid": f"conference.{self.domain}", "name": "Conferences"}
            sub(out, "{" + NS_DISCO_ITEMS + "}item", conference)
            for item in self.services:
                sub(out, "{" + NS_DISCO_ITEMS + "}item", item)
        if node == adhoc.NS_COMMANDS:
            # XEP-0050 §2.2: the commands a user may run
            out.set("node", node)
            out.extend(adhoc.command_items(self.domain))
        return reply

    def _command(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        return adhoc.execute(stream, iq, q)

    def _ping(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        if iq.get("type") != "get":
            raise StanzaError("bad-request", "ping is a get")
        return result_reply(iq)

    def _session(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        # RFC 3921 session establishment: a no-op kept for old clients (RFC 6121 Appendix E)
        return result_reply(iq)

    def _version(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        if iq.get("type") != "get":
            raise StanzaError("bad-request", "version is a get")
        reply = result_reply(iq)
        out = sub(reply, "{" + NS_VERSION + "}query")
        sub(out, "{" + NS_VERSION + "}name", text="SE Appliance")
        sub(out, "{" + NS_VERSION + "}version", text=__version__)
        return reply

    def _search(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        if self.directory is None:
            raise StanzaError("service-unavailable")
        return search.handle(self.directory, stream, iq, q)

    def _register(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element | Deferred[ET.Element]:
        return register.handle(stream, iq, q)

    # -- the user's own account --------------------------------------------------------------

    def _vcard(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element | Deferred[ET.Element]:
        if self.vcards is None:
            raise StanzaError("service-unavailable")
        return vcard.own_card(self.vcards, stream, iq, q)  # type: ignore[no-any-return]

    def _account_disco_info(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        if iq.get("type") != "get":
            raise StanzaError("bad-request", "disco#info is a get")
        assert stream.jid is not None and stream.jid.local is not None
        if q.get("node"):
            return self._node_info(stream, iq, q, stream.jid.local)
        reply = result_reply(iq)
        out = sub(reply, "{" + NS_DISCO_INFO + "}query")
        sub(out, "{" + NS_DISCO_INFO + "}identity", {"category": "account", "type": "registered"})
        for category, kind in self.account_identities:
            sub(out, "{" + NS_DISCO_INFO + "}identity", {"category": category, "type": kind})
        for feature in sorted({NS_DISCO_INFO, mam.NS_MAM, *self.account_features}):
            sub(out, "{" + NS_DISCO_INFO + "}feature", {"var": feature})
        return reply

    def _node_info(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, owner: str
    ) -> ET.Element:
        """disco#info of one of an account's nodes (XEP-0060 §5.3)."""
        assert stream.jid is not None
        found = None
        if self.account_nodes is not None:
            found = self.account_nodes.account_info(owner, stream.jid, q.get("node"))
        if found is None:
            raise StanzaError("item-not-found", "no such node")
        reply = result_reply(iq)
        reply.append(found)
        return reply

    def _account_disco_items(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        if iq.get("type") != "get":
            raise StanzaError("bad-request", "disco#items is a get")
        assert stream.jid is not None and stream.jid.local is not None
        return self._node_items(stream, iq, q, stream.jid.local)

    def _node_items(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, owner: str
    ) -> ET.Element:
        """XEP-0163 §6: an account's nodes, or one node's items."""
        assert stream.jid is not None
        node = q.get("node")
        items: list[ET.Element] | None = [] if node is None else None
        if self.account_nodes is not None:
            items = self.account_nodes.account_items(owner, stream.jid, node)
        if items is None:
            raise StanzaError("item-not-found", "no such node")
        reply = result_reply(iq)
        out = sub(reply, "{" + NS_DISCO_ITEMS + "}query")
        if node is not None:
            out.set("node", node)
        out.extend(items)
        return reply

    def _mam(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element | Deferred[ET.Element]:
        """XEP-0313: the form on a get, a page of history on a set."""
        if iq.get("type") == "get":
            return mam.form(iq)
        return mam.query(stream, iq, q)

    def _carbons(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        """XEP-0280 §4: enable or disable carbons for this client."""
        if iq.get("type") != "set":
            raise StanzaError("bad-request", "carbons are enabled with an iq set")
        stream.carbons = q.tag.endswith("}enable")
        return result_reply(iq)

    def _blocklist(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        """XEP-0191 §3.2: the user's block list."""
        if iq.get("type") != "get":
            raise StanzaError("bad-request", "blocklist is a get")
        assert stream.jid is not None and stream.jid.local is not None
        stream.interested = True
        reply = result_reply(iq)
        out = sub(reply, "{" + NS_BLOCKING + "}blocklist")
        for jid in stream.ctx.router.presence.blocklist(stream.jid.local):
            sub(out, "{" + NS_BLOCKING + "}item", {"jid": str(jid)})
        return reply

    def _block(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        """XEP-0191 §3.3 / §3.4: block or unblock addresses (unblock with no item: all)."""
        if iq.get("type") != "set":
            raise StanzaError("bad-request", "block and unblock are sets")
        assert stream.jid is not None and stream.jid.local is not None
        user = stream.jid.local
        jids = []
        for item in q.findall("{" + NS_BLOCKING + "}item"):
            try:
                jids.append(parse_jid(item.get("jid", "")).bare)
            except InvalidJID:
                raise StanzaError("jid-malformed", "an item's jid is not valid") from None
        service = stream.ctx.router.presence
        if q.tag.endswith("}block"):
            if not jids:
                raise StanzaError("bad-request", "block at least one address")  # §3.3
            service.block(user, jids)
        else:
            service.unblock(user, jids or None)
        push = ET.Element(q.tag)
        for j in jids:
            sub(push, "{" + NS_BLOCKING + "}item", {"jid": str(j)})
        _blocking_push(stream, user, push)
        return result_reply(iq)

    def _roster(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element:
        """RFC 6121 §2: roster get and set."""
        router = stream.ctx.router
        assert stream.jid is not None and stream.jid.local is not None
        if iq.get("type") == "get":
            reply = result_reply(iq)
            out = sub(reply, "{" + NS_ROSTER + "}query")
            for item in router.roster_requested(stream):
                out.append(roster_item_element(item))
            return reply
        items = q.findall("{" + NS_ROSTER + "}item")
        if len(items) != 1:
            raise StanzaError("bad-request", "a roster set carries exactly one item")  # §2.3.3
        item = items[0]
        try:
            contact = parse_jid(item.get("jid", ""))
        except InvalidJID:
            raise StanzaError("jid-malformed", "the item's jid is not valid") from None
        if contact.resource is not None:
            raise StanzaError("bad-request", "roster items are bare addresses")
        if contact == stream.jid.bare:
            raise StanzaError("not-allowed", "you cannot add yourself")
        if item.get("subscription") == "remove":
            router.roster_remove(stream.jid.local, contact)
            return result_reply(iq)
        name = item.get("name")
        if name is not None and len(name) > MAX_ROSTER_NAME:
            raise StanzaError("not-acceptable", "the name is too long")
        groups = [(g.text or "").strip() for g in item.findall("{" + NS_ROSTER + "}group")]
        if (
            any(not g for g in groups)
            or len(set(groups)) != len(groups)
            or len(groups) > MAX_GROUPS
        ):
            # §2.3.3: empty or duplicate groups are refused
            raise StanzaError("bad-request", "groups must be non-empty and distinct")
        router.roster_set(stream.jid.local, contact, name or None, tuple(groups))
        return result_reply(iq)


def _blocking_push(stream: C2SProtocol, user: str, payload: ET.Element) -> None:
    """XEP-0191 §3.3: every resource that asked for the list learns of the change."""
    from standard_edition.xmpp.c2s import C2SProtocol

    for ep in stream.ctx.router.sessions.interested(user):
        if isinstance(ep, C2SProtocol) and ep.jid is not None:
            iq = ET.Element(
                C + "iq", {"type": "set", "id": f"block{id(payload)}", "to": str(ep.jid)}
            )
            iq.append(payload)
            ep.send_stanza(iq)
