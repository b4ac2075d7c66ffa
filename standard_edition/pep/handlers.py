"""The XMPP side of PEP: pubsub and pubsub#owner requests to an account, and its disco.

Each handler gets the request addressed to `owner` (the requester's own account, or another
one for reads) and answers with a result, an XEP-0060 error, or a Deferred of either that fires
once the change is stored.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.pep.forms import config_form, fields_of, form_in
from standard_edition.pep.model import (
    MAX_ITEMS,
    NodeConfig,
    PubsubError,
    may_access,
    parse_config,
    preconditions_met,
)
from standard_edition.pep.service import NS_PUBSUB, PepService
from standard_edition.xmpp.stanzas import C, error_reply, local_name, result_reply, sub

if TYPE_CHECKING:
    from standard_edition.xmpp.c2s import C2SProtocol

NS_OWNER = NS_PUBSUB + "#owner"
NS_ERRORS = NS_PUBSUB + "#errors"
P = "{" + NS_PUBSUB + "}"
O = "{" + NS_OWNER + "}"  # noqa: E741
E = "{" + NS_ERRORS + "}"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
MAX_NODE_NAME = 512
MAX_ITEM_ID = 256

# XEP-0060 §10 features this service implements, as its disco#info lists them
FEATURES = tuple(
    NS_PUBSUB + "#" + f
    for f in (
        "access-open",
        "access-presence",
        "access-roster",
        "access-whitelist",
        "auto-create",
        "auto-subscribe",
        "config-node",
        "create-and-configure",
        "create-nodes",
        "delete-items",
        "delete-nodes",
        "filtered-notifications",
        "item-ids",
        "last-published",
        "meta-data",
        "modify-affiliations",
        "multi-items",
        "persistent-items",
        "presence-access",
        "presence-notifications",
        "publish",
        "publish-options",
        "purge-nodes",
        "retract-items",
        "retrieve-affiliations",
        "retrieve-default",
        "retrieve-items",
        "retrieve-subscriptions",
    )
)


def pubsub_error(iq: ET.Element, e: PubsubError) -> ET.Element:
    reply = error_reply(iq, e.condition, e.text, app=e.app)
    if e.feature is not None:
        err = reply.find(C + "error")
        if err is not None and len(err):
            err[-1].set("feature", e.feature)
    return reply


def unsupported(feature: str) -> PubsubError:
    return PubsubError("feature-not-implemented", E + "unsupported", feature=feature)


class PepHandlers:
    def __init__(self, service: PepService) -> None:
        self.service = service

    # -- entry points (xmpp/iq.py handler signature) ---------------------------------------------

    def pubsub(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element | Deferred[ET.Element]:
        return self._guard(self._pubsub, stream, iq, q, to)

    def owner(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element | Deferred[ET.Element]:
        return self._guard(self._owner, stream, iq, q, to)

    def _guard(self, fn: Any, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None):  # type: ignore[no-untyped-def]
        assert stream.jid is not None
        target = (to or stream.jid).bare
        owner = self.service.router.local_user(target)
        if owner is None:
            return error_reply(iq, "service-unavailable")
        try:
            answer = fn(stream.jid, iq, q, owner)
        except PubsubError as e:
            return pubsub_error(iq, e)
        if isinstance(answer, Deferred):

            def refused(f: Any) -> ET.Element:
                f.trap(PubsubError)
                return pubsub_error(iq, f.value)

            answer.addErrback(refused)
        return answer

    # -- pubsub ------------------------------------------------------------------------------------

    def _pubsub(
        self, who: JID, iq: ET.Element, q: ET.Element, owner: str
    ) -> ET.Element | Deferred[ET.Element]:
        is_owner = who.bare == self.service.bare(owner)
        itype = iq.get("type")
        actions = [ch for ch in q if ch.tag.startswith(P)]
        if not actions:
            raise PubsubError("bad-request", text="no pubsub action")
        action = actions[0]
        name = local_name(action.tag)
        if itype == "get" and name == "items":
            return self._items(who, iq, action, owner)
        if itype == "get" and name == "subscriptions":
            # subscriptions to a PEP node are implicit (presence and +notify): none to list
            reply = result_reply(iq)
            out = sub(sub(reply, P + "pubsub"), P + "subscriptions")
            if action.get("node"):
                out.set("node", action.get("node", ""))
            return reply
        if itype == "get" and name == "affiliations":
            return self._my_affiliations(who, iq, action, owner)
        if itype == "get" and name == "default":
            reply = result_reply(iq)
            sub(sub(reply, P + "pubsub"), P + "default").append(config_form(NodeConfig()))
            return reply
        if itype == "set" and name in ("subscribe", "unsubscribe", "options"):
            # XEP-0163 §4.3: PEP subscriptions are implied by presence and +notify
            raise unsupported("subscribe")
        if itype != "set" or name not in ("publish", "retract", "create"):
            raise PubsubError("bad-request", text=f"unknown pubsub request {name[:40]}")
        if not is_owner:
            raise PubsubError("forbidden", text="only the account's owner changes its nodes")
        if name == "publish":
            return self._publish(who, iq, q, action, owner)
        if name == "retract":
            return self._retract(iq, action, owner)
        return self._create(iq, q, action, owner)

    def _publish(
        self, who: JID, iq: ET.Element, q: ET.Element, action: ET.Element, owner: str
    ) -> Deferred[ET.Element]:
        name = _node_name(action)
        items = action.findall(P + "item")
        if len(items) != 1:
            raise PubsubError("bad-request", E + "invalid-payload", "publish exactly one item")
        payload = list(items[0])
        if not payload:
            raise PubsubError("bad-request", E + "payload-required")
        if len(payload) > 1:
            raise PubsubError("bad-request", E + "invalid-payload", "one payload per item")
        item_id = items[0].get("id") or secrets.token_hex(8)
        if len(item_id) > MAX_ITEM_ID:
            raise PubsubError("not-acceptable", text="the item id is too long")
        options = fields_of(form_in(q.find(P + "publish-options")))
        node = self.service.node(owner, name)
        config = None
        if node is None:
            try:
                config = parse_config(NodeConfig(), options)
            except PubsubError as e:
                # XEP-0060 §7.1.5: options the node cannot take are an unmet precondition
                raise PubsubError("conflict", E + "precondition-not-met", e.text) from None
        elif options and not preconditions_met(node.config, options):
            raise PubsubError(
                "conflict", E + "precondition-not-met", "the node's configuration differs"
            )
        d = self.service.publish(owner, name, item_id, payload[0], who, config)

        def answer(_: object) -> ET.Element:
            reply = result_reply(iq)
            pub = sub(sub(reply, P + "pubsub"), P + "publish", {"node": name})
            sub(pub, P + "item", {"id": item_id})
            return reply

        return d.addCallback(answer)

    def _retract(self, iq: ET.Element, action: ET.Element, owner: str) -> Deferred[ET.Element]:
        name = _node_name(action)
        ids = [i.get("id", "") for i in action.findall(P + "item")]
        if not ids or not all(ids):
            raise PubsubError("bad-request", E + "item-required")
        notify = action.get("notify", "").lower() in ("1", "true")
        return self.service.retract(owner, name, ids, notify).addCallback(
            lambda _: result_reply(iq)
        )

    def _create(
        self, iq: ET.Element, q: ET.Element, action: ET.Element, owner: str
    ) -> Deferred[ET.Element]:
        if not action.get("node"):
            raise PubsubError("not-acceptable", E + "nodeid-required")
        name = _node_name(action)
        config = parse_config(NodeConfig(), fields_of(form_in(q.find(P + "configure"))))
        return self.service.create(owner, name, config).addCallback(lambda _: result_reply(iq))

    def _items(self, who: JID, iq: ET.Element, action: ET.Element, owner: str) -> ET.Element:
        name = _node_name(action)
        node = self.service.readable(owner, name, who)
        wanted = [i.get("id", "") for i in action.findall(P + "item")]
        if wanted:
            items = [node.items[i] for i in wanted if i in node.items]
        else:
            limit = None
            if action.get("max_items") is not None:
                try:
                    limit = max(0, min(int(action.get("max_items", "")), MAX_ITEMS))
                except ValueError:
                    raise PubsubError("bad-request", text="max_items is a number") from None
            items = node.newest(limit)
        reply = result_reply(iq)
        out = sub(sub(reply, P + "pubsub"), P + "items", {"node": name})
        for item in items:
            sub(out, P + "item", {"id": item.id, "publisher": item.publisher}).append(item.payload)
        return reply

    def _my_affiliations(
        self, who: JID, iq: ET.Element, action: ET.Element, owner: str
    ) -> ET.Element:
        """XEP-0060 §5.7: the requester's affiliations with the account's nodes."""
        reply = result_reply(iq)
        out = sub(sub(reply, P + "pubsub"), P + "affiliations")
        only = action.get("node")
        bare = str(who.bare)
        is_owner = who.bare == self.service.bare(owner)
        for node in self.service.owned(owner):
            if only and node.name != only:
                continue
            aff = "owner" if is_owner else node.affiliation(bare)
            if aff != "none":
                sub(out, P + "affiliation", {"node": node.name, "affiliation": aff})
        return reply

    # -- pubsub#owner ------------------------------------------------------------------------------

    def _owner(
        self, who: JID, iq: ET.Element, q: ET.Element, owner: str
    ) -> ET.Element | Deferred[ET.Element]:
        if who.bare != self.service.bare(owner):
            raise PubsubError("forbidden", text="only the account's owner manages its nodes")
        actions = [ch for ch in q if ch.tag.startswith(O)]
        if not actions:
            raise PubsubError("bad-request", text="no pubsub#owner action")
        action = actions[0]
        name = local_name(action.tag)
        itype = iq.get("type")
        svc = self.service
        if name == "default" and itype == "get":
            reply = result_reply(iq)
            sub(sub(reply, O + "pubsub"), O + "default").append(config_form(NodeConfig()))
            return reply
        node_name = _node_name(action)
        if name == "configure" and itype == "get":
            node = svc.node(owner, node_name)
            if node is None:
                raise PubsubError("item-not-found")
            reply = result_reply(iq)
            cfg = sub(sub(reply, O + "pubsub"), O + "configure", {"node": node_name})
            cfg.append(config_form(node.config))
            return reply
        if name == "configure" and itype == "set":
            node = svc.node(owner, node_name)
            if node is None:
                raise PubsubError("item-not-found")
            x = form_in(action)
            if x is None:
                raise PubsubError("bad-request", text="a configuration form is required")
            if x.get("type") == "cancel":
                return result_reply(iq)
            config = parse_config(node.config, fields_of(x))
            return svc.configure(owner, node_name, config).addCallback(lambda _: result_reply(iq))
        if name == "delete" and itype == "set":
            return svc.delete(owner, node_name).addCallback(lambda _: result_reply(iq))
        if name == "purge" and itype == "set":
            return svc.purge(owner, node_name).addCallback(lambda _: result_reply(iq))
        if name == "subscriptions" and itype == "get":
            if svc.node(owner, node_name) is None:
                raise PubsubError("item-not-found")
            reply = result_reply(iq)
            sub(sub(reply, O + "pubsub"), O + "subscriptions", {"node": node_name})
            return reply
        if name == "affiliations":
            node = svc.node(owner, node_name)
            if node is None:
                raise PubsubError("item-not-found")
            if itype == "get":
                reply = result_reply(iq)
                out = sub(sub(reply, O + "pubsub"), O + "affiliations", {"node": node_name})
                sub(out, O + "affiliation", {"jid": str(svc.bare(owner)), "affiliation": "owner"})
                for jid, aff in sorted(node.affiliations.items()):
                    sub(out, O + "affiliation", {"jid": jid, "affiliation": aff})
                return reply
            changes = {}
            for el in action.findall(O + "affiliation"):
                try:
                    jid = parse_jid(el.get("jid", "")).bare
                except InvalidJID:
                    raise PubsubError("jid-malformed") from None
                aff = el.get("affiliation", "")
                if jid == svc.bare(owner) or aff not in ("member", "publisher", "none", "outcast"):
                    # one owner per PEP node; members read, outcasts are shut out
                    raise PubsubError("not-acceptable", text="affiliation not allowed")
                changes[str(jid)] = "member" if aff == "publisher" else aff
            return svc.set_affiliations(owner, node_name, changes).addCallback(
                lambda _: result_reply(iq)
            )
        raise PubsubError("bad-request", text=f"unknown pubsub#owner request {name[:40]}")

    # -- disco -------------------------------------------------------------------------------

    def account_info(self, owner: str, who: JID, node: str | None) -> ET.Element | None:
        """disco#info of one node of the account (XEP-0060 §5.3); None when there is none the
        requester may see."""
        if node is None:
            return None
        n = self.service.node(owner, node)
        if n is None or not may_access(n, str(who.bare), self.service.relation(owner, who)):
            return None
        q = ET.Element("{" + NS_DISCO_INFO + "}query", {"node": node})
        sub(q, "{" + NS_DISCO_INFO + "}identity", {"category": "pubsub", "type": "leaf"})
        sub(q, "{" + NS_DISCO_INFO + "}feature", {"var": NS_PUBSUB})
        return q

    def account_items(self, owner: str, who: JID, node: str | None) -> list[ET.Element] | None:
        """disco#items: the nodes the requester may read, or a node's item ids."""
        svc = self.service
        rel = svc.relation(owner, who)
        bare = str(svc.bare(owner))
        item = "{" + NS_DISCO_ITEMS + "}item"
        if node is None:
            return [
                ET.Element(item, {"jid": bare, "node": n.name})
                for n in svc.owned(owner)
                if may_access(n, str(who.bare), rel)
            ]
        n = svc.node(owner, node)
        if n is None or not may_access(n, str(who.bare), rel):
            return None
        return [ET.Element(item, {"jid": bare, "name": i}) for i in n.items]


def _node_name(action: ET.Element) -> str:
    name = action.get("node", "")
    if not name:
        raise PubsubError("bad-request", E + "nodeid-required")
    if len(name) > MAX_NODE_NAME:
        raise PubsubError("not-acceptable", text="the node name is too long")
    return name
