"""XEP-0049 private XML storage, and bookmarks kept the same in all three places clients look.

XEP-0402 §5 compatibility: the PEP node `urn:xmpp:bookmarks:1` (one item per room) holds the
bookmarks; the XEP-0048 views, `storage:bookmarks` in private storage and the PEP node of that
name (XEP-0223 style, one item `current`), are made from it, and a client writing either view
changes it. Legacy `<url/>` bookmarks, which XEP-0402 has no place for, stay in private storage.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.python import log

from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.pep import store
from standard_edition.pep.model import MAX_ITEMS, NodeConfig
from standard_edition.pep.service import PepService
from standard_edition.xmpp.stanzas import StanzaError, result_reply, sub
from standard_edition.xmpp.xml import serialize

if TYPE_CHECKING:
    from standard_edition.xmpp.c2s import C2SProtocol

NS_PRIVATE = "jabber:iq:private"
NS_BOOKMARKS = "storage:bookmarks"
NS_BOOKMARKS2 = "urn:xmpp:bookmarks:1"
B1 = "{" + NS_BOOKMARKS + "}"
B2 = "{" + NS_BOOKMARKS2 + "}"
LEGACY = B1 + "storage"
# XEP-0049 §2.3: reserved namespaces are refused
RESERVED = ("jabber:", "http://jabber.org/", "vcard-temp")
MAX_PRIVATE_CHILDREN = 16
# XEP-0402 §3: the node's configuration; XEP-0048 §3.2 via XEP-0223 for the legacy node
BOOKMARKS2_CONFIG = NodeConfig(
    access_model="whitelist", max_items=MAX_ITEMS, send_last_published_item="never"
)
LEGACY_PEP_CONFIG = NodeConfig(access_model="whitelist", max_items=1)
FEATURES = (NS_PRIVATE, NS_BOOKMARKS2 + "#compat", NS_BOOKMARKS2 + "#compat-pep")


class PrivateStorage:
    def __init__(self, service: PepService) -> None:
        self.service = service
        self.db = service.db
        service.node_listeners.append(self._node_changed)

    # -- XEP-0049 ------------------------------------------------------------------------------

    def query(
        self, stream: C2SProtocol, iq: ET.Element, q: ET.Element, to: JID | None
    ) -> ET.Element | Deferred[ET.Element]:
        assert stream.jid is not None and stream.jid.local is not None
        if to is not None and to.bare != stream.jid.bare:
            # §3: nobody reads or writes another user's private storage
            raise StanzaError("forbidden", "private storage is the owner's alone")
        owner = stream.jid.local
        children = list(q)
        if not children:
            raise StanzaError("not-acceptable", "name the namespace to get or set")
        for child in children:
            ns = child.tag[1:].partition("}")[0] if child.tag.startswith("{") else ""
            if not ns or ns.startswith(RESERVED):
                raise StanzaError("not-acceptable", f"the namespace {ns[:80]!r} is reserved")
        if iq.get("type") == "get":
            if len(children) != 1:
                raise StanzaError("not-acceptable", "a get names one namespace")
            return self._get(iq, owner, children[0])
        if len(children) > MAX_PRIVATE_CHILDREN:
            raise StanzaError("not-acceptable", "too many elements in one set")
        return self._set(iq, owner, children)

    def _get(self, iq: ET.Element, owner: str, wanted: ET.Element) -> Deferred[ET.Element]:
        def answer(stored: ET.Element | None) -> ET.Element:
            reply = result_reply(iq)
            out = sub(reply, "{" + NS_PRIVATE + "}query")
            if wanted.tag == LEGACY:
                out.append(self.legacy_storage(owner, stored))
            else:
                out.append(stored if stored is not None else ET.Element(wanted.tag))
            return reply

        return self.db.read(store.get_private, owner, wanted.tag).addCallback(answer)

    def _set(self, iq: ET.Element, owner: str, children: list[ET.Element]) -> Deferred[ET.Element]:
        latest = {child.tag: child for child in children}  # the last of a namespace wins

        def write(db: Any) -> None:
            for tag, child in latest.items():
                store.set_private(db, owner, tag, serialize(child, ""))

        d = self.db.run(write)
        if LEGACY in latest:
            d.addCallback(lambda _: self.from_legacy(owner, latest[LEGACY]))
        return d.addCallback(lambda _: result_reply(iq))

    # -- bookmarks ---------------------------------------------------------------------------------

    def legacy_storage(self, owner: str, stored: ET.Element | None) -> ET.Element:
        """The XEP-0048 <storage/>: the rooms of the XEP-0402 node, or of the stored element
        while there is no such node; plus the stored <url/> bookmarks."""
        node = self.service.node(owner, NS_BOOKMARKS2)
        out = ET.Element(LEGACY)
        if node is None:
            if stored is not None:
                out.extend(c for c in stored if c.tag == B1 + "conference")
        else:
            for item in node.items.values():
                conf = to_legacy(item.id, item.payload)
                if conf is not None:
                    out.append(conf)
        if stored is not None:
            out.extend(c for c in stored if c.tag == B1 + "url")
        return out

    def from_legacy(self, owner: str, storage: ET.Element) -> Deferred[Any]:
        """A client wrote XEP-0048 bookmarks: the XEP-0402 node follows, room by room."""
        svc = self.service
        wanted: dict[str, ET.Element] = {}
        for conf in storage.findall(B1 + "conference"):
            try:
                room = parse_jid(conf.get("jid", ""))
            except InvalidJID:
                continue
            if room.local is None or room.resource is not None:
                continue
            wanted[str(room)] = conf
        node = svc.node(owner, NS_BOOKMARKS2)
        me = svc.bare(owner)
        steps: list[Deferred[Any]] = []
        if node is not None and node.config.max_items < len(wanted):
            # a node too small for the user's rooms would drop bookmarks: make room
            steps.append(svc.configure(owner, NS_BOOKMARKS2, BOOKMARKS2_CONFIG))
        for room, conf in wanted.items():
            old = node.items.get(room) if node is not None else None
            new = to_bookmarks2(conf, old.payload if old is not None else None)
            if old is None or _summary(new) != _summary(old.payload):
                steps.append(svc.publish(owner, NS_BOOKMARKS2, room, new, me, BOOKMARKS2_CONFIG))
                node = svc.node(owner, NS_BOOKMARKS2)
        gone = [i for i in node.items if i not in wanted] if node is not None else []
        if gone:
            steps.append(svc.retract(owner, NS_BOOKMARKS2, gone, notify=True))
        if not steps:
            return succeed(None)
        return DeferredList(steps, fireOnOneErrback=True, consumeErrors=True)

    def _node_changed(self, owner: str, name: str) -> None:
        if name == NS_BOOKMARKS2:
            self._sync_legacy_node(owner)
        elif name == NS_BOOKMARKS:
            node = self.service.node(owner, NS_BOOKMARKS)
            last = node.last if node is not None else None
            if last is not None and last.payload.tag == LEGACY:
                d = self.from_legacy(owner, last.payload)
                d.addErrback(lambda f: log.err(f, f"bookmarks of {owner}: legacy node not synced"))

    def _sync_legacy_node(self, owner: str) -> None:
        """XEP-0402 §5.3 (#compat-pep): the storage:bookmarks node shows the same rooms."""
        svc = self.service
        legacy = svc.node(owner, NS_BOOKMARKS)
        old = legacy.last if legacy is not None else None
        new = self.legacy_storage(owner, old.payload if old is not None else None)
        if old is not None and serialize(old.payload, "") == serialize(new, ""):
            return
        if old is None and svc.node(owner, NS_BOOKMARKS2) is None:
            return
        d = svc.publish(owner, NS_BOOKMARKS, "current", new, svc.bare(owner), LEGACY_PEP_CONFIG)
        d.addErrback(lambda f: log.err(f, f"bookmarks of {owner}: legacy node not updated"))


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true")


def to_legacy(room: str, conf: ET.Element) -> ET.Element | None:
    """An XEP-0402 <conference/> as an XEP-0048 one."""
    if conf.tag != B2 + "conference":
        return None
    return _conference(conf, B2, B1, {"jid": room})


def to_bookmarks2(conf: ET.Element, old: ET.Element | None) -> ET.Element:
    """An XEP-0048 <conference/> as an XEP-0402 one, keeping the old item's <extensions/>."""
    out = _conference(conf, B1, B2, {})
    if old is not None:
        ext = old.find(B2 + "extensions")
        if ext is not None:
            out.append(ext)
    return out


def _conference(conf: ET.Element, src: str, dst: str, attrs: dict[str, str]) -> ET.Element:
    """What both bookmark forms share (name, autojoin, nick, password), from `src` to `dst`."""
    out = ET.Element(dst + "conference", attrs)
    if conf.get("name"):
        out.set("name", conf.get("name", ""))
    out.set("autojoin", "true" if _flag(conf.get("autojoin")) else "false")
    for tag in ("nick", "password"):
        text = conf.findtext(src + tag)
        if text:
            sub(out, dst + tag, text=text)
    return out


def _summary(conf: ET.Element) -> tuple[str, bool, str, str]:
    return (
        conf.get("name", ""),
        _flag(conf.get("autojoin")),
        conf.findtext(B2 + "nick") or "",
        conf.findtext(B2 + "password") or "",
    )
