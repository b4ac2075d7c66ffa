"""Building and reading stanzas: errors, core values to XML and back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.core.model import Message, Presence, RosterItem
from standard_edition.presence.aggregate import AWAY_AFTER, IDLE_AFTER
from standard_edition.presence.model import (
    AVAILABLE,
    DND,
    MAX_CODE,
    MAX_NOTE,
    MIN_CODE,
    Activity,
    EndpointState,
    InvalidCode,
    Manual,
    band,
)
from standard_edition.xmpp.xml import NS_CLIENT, NS_STANZAS

C = "{" + NS_CLIENT + "}"
NS_DELAY = "urn:xmpp:delay"
NS_ROSTER = "jabber:iq:roster"
NS_PRESENCE_EXT = "{urn:se-appliance:presence:0}"
AVAILABILITY = NS_PRESENCE_EXT + "availability"
IDLE = "{urn:xmpp:idle:1}idle"

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


def result_reply(iq: ET.Element) -> ET.Element:
    """RFC 6120 §8.2.3: an IQ result carries the request's id, back to whoever sent it."""
    reply = ET.Element(C + "iq", {"type": "result", "id": iq.get("id", "")})
    if iq.get("from"):
        reply.set("to", iq.get("from", ""))
    if iq.get("to"):
        reply.set("from", iq.get("to", ""))
    return reply


def error_reply(
    stanza: ET.Element,
    condition: str,
    text: str = "",
    sender: str | None = None,
    app: str | None = None,
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
    if app:
        sub(err, app)
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


def presence_from_stanza(el: ET.Element, now: float) -> Presence:
    """An available presence from a client, with what it means for the user's state
    (DESIGN §4: dnd and our code element are manual; away/xa and XEP-0319 idle are machine)."""
    show = el.findtext(C + "show")
    if show is not None:
        show = show.strip()
        if show not in SHOWS:
            raise StanzaError("bad-request", f"unknown <show/> value {show[:20]!r}")
    status = el.findtext(C + "status")
    if status is not None and len(status) > MAX_NOTE:
        raise StanzaError("not-acceptable", f"the status note is longer than {MAX_NOTE} characters")
    prio_text = el.findtext(C + "priority")
    priority = 0
    if prio_text is not None:
        try:
            priority = int(prio_text.strip())
        except ValueError:
            raise StanzaError("bad-request", "priority must be an integer") from None
        if not -128 <= priority <= 127:
            raise StanzaError("bad-request", "priority must be between -128 and 127")
    idle_since = _idle_since(el)
    manual: Manual | None = None
    clear_manual = False
    ours = el.find(AVAILABILITY)
    if ours is not None:
        manual = _manual_from(ours, now)
    elif show == "dnd":
        manual = Manual(DND)
    elif show in (None, "chat") and idle_since is None:
        clear_manual = True  # the user is back and says so
    if show == "away" and idle_since is None:
        idle_since = now - IDLE_AFTER  # a stock client's auto-away: Inactive now
    elif show == "xa" and idle_since is None:
        idle_since = now - AWAY_AFTER  # its auto-extended-away: Away now
    payload = tuple(ch for ch in el if not ch.tag.startswith(C) and ch.tag != AVAILABILITY)
    return Presence(
        show=show,
        status=status,
        priority=priority,
        payload=payload,
        state=EndpointState(AVAILABLE, idle_since),
        manual=manual,
        clear_manual=clear_manual,
    )


def _idle_since(el: ET.Element) -> float | None:
    """XEP-0319: when the user last used this client."""
    idle = el.find(IDLE)
    if idle is None:
        return None
    try:
        since = datetime.fromisoformat(idle.get("since", "").replace("Z", "+00:00"))
    except ValueError:
        raise StanzaError("bad-request", "idle 'since' is not an XEP-0082 date-time") from None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since.timestamp()


def _manual_from(el: ET.Element, now: float) -> Manual:
    """Our own element: an exact availability code (and activity) set by hand."""
    try:
        code = int(el.get("code", ""))
        band(code)
    except (ValueError, InvalidCode):
        raise StanzaError(
            "bad-request", f"availability code must be {MIN_CODE}-{MAX_CODE}"
        ) from None
    activity = el.get("activity")
    try:
        act = Activity(activity) if activity else None
    except ValueError:
        raise StanzaError("bad-request", f"unknown activity {activity[:30]!r}") from None
    return Manual(code, act)


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
    if p.code is not None:
        # the exact code travels for clients and gateways that know it; others ignore it
        ours = sub(el, AVAILABILITY, {"code": str(p.code)})
        if p.activity:
            ours.set("activity", p.activity)
        if p.oof_note:
            sub(ours, NS_PRESENCE_EXT + "oof-note", text=p.oof_note)
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
