"""Building and reading stanzas: errors, core values to XML and back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.core.model import Message, Presence, RosterItem
from standard_edition.xmpp.xml import NS_CLIENT, NS_STANZAS

C = "{" + NS_CLIENT + "}"
NS_DELAY = "urn:xmpp:delay"
NS_ROSTER = "jabber:iq:roster"

# RFC 6120 §8.3.3: each defined condition with its usual error type
ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "internal-server-error": "wait",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "remote-server-not-found": "cancel",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


class StanzaError(Exception):
    """A stanza-level error to answer with (RFC 6120 §8.3)."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text


def element(tag: str, attrs: dict[str, str] | None = None, text: str | None = None) -> ET.Element:
    el = ET.Element(tag, {k: v for k, v in (attrs or {}).items() if v is not None})
    if text is not None:
        el.text = text
    return el


def sub(
    parent: ET.Element, tag: str, attrs: dict[str, str] | None = None, text: str | None = None
) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: v for k, v in (attrs or {}).items() if v is not None})
    if text is not None:
        el.text = text
    return el


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def error_reply(
    stanza: ET.Element, condition: str, text: str = "", sender: str | None = None
) -> ET.Element:
    """RFC 6120 §8.3.1: the error goes back to the sender, from the address it was sent to."""
    kind = local_name(stanza.tag)
    reply = ET.Element(C + kind, {"type": "error"})
    if stanza.get("id") is not None:
        reply.set("id", stanza.get("id", ""))
    to = sender or stanza.get("from")
    if to:
        reply.set("to", to)
    if stanza.get("to"):
        reply.set("from", stanza.get("to", ""))
    err = sub(reply, C + "error", {"type": ERROR_TYPES.get(condition, "cancel")})
    sub(err, "{" + NS_STANZAS + "}" + condition)
    if text:
        sub(
            err,
            "{" + NS_STANZAS + "}text",
            {"{http://www.w3.org/XML/1998/namespace}lang": "en"},
            text,
        )
    return reply


def optional_jid(value: str | None) -> JID | None:
    if value is None:
        return None
    try:
        return parse_jid(value)
    except InvalidJID:
        raise StanzaError("jid-malformed", f"not a valid address: {value[:100]}") from None


# -- core values from stanzas ---------------------------------------------------------------

SHOWS = ("chat", "away", "xa", "dnd")


def presence_from_stanza(el: ET.Element) -> Presence:
    show = el.findtext(C + "show")
    if show is not None:
        show = show.strip()
        if show not in SHOWS:
            raise StanzaError("bad-request", f"unknown <show/> value {show[:20]!r}")
    prio_text = el.findtext(C + "priority")
    priority = 0
    if prio_text is not None:
        try:
            priority = int(prio_text.strip())
        except ValueError:
            raise StanzaError("bad-request", "priority must be an integer") from None
        if not -128 <= priority <= 127:
            raise StanzaError("bad-request", "priority must be between -128 and 127")
    payload = tuple(ch for ch in el if not ch.tag.startswith(C))
    return Presence(show=show, status=el.findtext(C + "status"), priority=priority, payload=payload)


def message_from_stanza(el: ET.Element, sender: JID, to: JID) -> Message:
    mtype = el.get("type", "normal")
    if mtype not in ("normal", "chat", "groupchat", "headline", "error"):
        raise StanzaError("bad-request", f"unknown message type {mtype[:20]!r}")
    return Message(
        sender=sender,
        to=to,
        type=mtype,
        body=el.findtext(C + "body"),
        id=el.get("id"),
        payload=tuple(el),
    )


# -- stanzas from core values ---------------------------------------------------------------


def message_stanza(msg: Message, to: JID, domain: str) -> ET.Element:
    el = element(C + "message", {"from": str(msg.sender), "to": str(to), "type": msg.type})
    if msg.id is not None:
        el.set("id", msg.id)
    el.extend(msg.payload)
    if msg.delay is not None:
        # XEP-0203: when the server first got it, in UTC
        sub(el, "{" + NS_DELAY + "}delay", {"from": domain, "stamp": _stamp(msg.delay)})
    return el


def presence_stanza(sender: JID, to: JID, p: Presence | None) -> ET.Element:
    el = element(C + "presence", {"from": str(sender), "to": str(to)})
    if p is None:
        el.set("type", "unavailable")
        return el
    if p.show:
        sub(el, C + "show", text=p.show)
    if p.status is not None:
        sub(el, C + "status", text=p.status)
    if p.priority:
        sub(el, C + "priority", text=str(p.priority))
    el.extend(p.payload)
    return el


def roster_item_element(item: RosterItem, removed: bool = False) -> ET.Element:
    el = element("{" + NS_ROSTER + "}item", {"jid": str(item.contact)})
    if removed:
        el.set("subscription", "remove")
        return el
    el.set("subscription", item.state.sub.value)
    if item.state.pending_out:
        el.set("ask", "subscribe")
    if item.name:
        el.set("name", item.name)
    for g in item.groups:
        sub(el, "{" + NS_ROSTER + "}group", text=g)
    return el


def _stamp(t: datetime) -> str:
    # XEP-0082 date-time in UTC
    if t.utcoffset() is not None:
        t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
