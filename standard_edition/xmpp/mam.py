"""XEP-0313 message archive management: a client pages through its user's history.

Filters come in an XEP-0004 form (with, start, end); paging is XEP-0059 RSM (max, after,
before). Each hit is sent as a <result/> message carrying the original, forwarded with its
delay stamp, and the query ends with <fin/> and the page's first and last ids.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from standard_edition.core.history import PAGE_MAX, Page, UnknownId
from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.xmpp.stanzas import C, StanzaError, message_stanza, sub

if TYPE_CHECKING:
    from standard_edition.xmpp.c2s import C2SProtocol

NS_MAM = "urn:xmpp:mam:2"
MAM = "{" + NS_MAM + "}"
RSM = "{http://jabber.org/protocol/rsm}"
DATA = "{jabber:x:data}"


def form(iq: ET.Element) -> ET.Element:
    """§4.1.1: the fields a query may filter on."""
    reply = ET.Element(C + "iq", {"type": "result", "id": iq.get("id", "")})
    q = sub(reply, MAM + "query")
    x = sub(q, DATA + "x", {"type": "form"})
    f = sub(x, DATA + "field", {"var": "FORM_TYPE", "type": "hidden"})
    sub(f, DATA + "value", text=NS_MAM)
    for var, ftype in (("with", "jid-single"), ("start", "text-single"), ("end", "text-single")):
        sub(x, DATA + "field", {"var": var, "type": ftype})
    return reply


def query(
    stream: C2SProtocol,
    iq: ET.Element,
    q: ET.Element,
    archive: str | None = None,
    archive_jid: str | None = None,
) -> Deferred[ET.Element]:
    """Query the user's own history, or with `archive` another one (a room's) whose results
    come from `archive_jid`."""
    assert stream.jid is not None and stream.jid.local is not None
    history = stream.ctx.router.history
    if history is None:
        raise StanzaError("service-unavailable", "message history is off")
    fields = _fields(q.find(DATA + "x"))
    peer = _jid(fields.get("with"))
    start, end = _time(fields.get("start"), "start"), _time(fields.get("end"), "end")
    rsm = q.find(RSM + "set")
    limit, after, before, last_page = PAGE_MAX, None, None, False
    if rsm is not None:
        limit = _int(rsm.findtext(RSM + "max"), "max", PAGE_MAX)
        after = _id(rsm.findtext(RSM + "after"), "after")
        b = rsm.find(RSM + "before")
        if b is not None:
            if (b.text or "").strip():
                before = _id(b.text, "before")
            else:
                last_page = True  # XEP-0059 §2.5: an empty <before/> asks for the last page
    queryid = q.get("queryid")

    def send(page: Page) -> ET.Element:
        me = stream.jid
        assert me is not None
        for entry in page.entries:
            msg = ET.Element(C + "message", {"to": str(me), "from": archive_jid or str(me.bare)})
            attrs = {"id": str(entry.id)}
            if queryid:
                attrs["queryid"] = queryid
            result = sub(msg, MAM + "result", attrs)
            fwd = sub(result, "{urn:xmpp:forward:0}forwarded")
            stamp = datetime.fromtimestamp(entry.stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            sub(fwd, "{urn:xmpp:delay}delay", {"stamp": stamp})
            # the delay goes on <forwarded/>, not inside the original
            original = replace(entry.message, delay=None)
            inner = message_stanza(original, original.to, stream.ctx.domain)
            fwd.append(inner)
            stream.send_stanza(msg)
        reply = ET.Element(C + "iq", {"type": "result", "id": iq.get("id", "")})
        fin = sub(reply, MAM + "fin", {"complete": "true" if page.complete else "false"})
        s = sub(fin, RSM + "set")
        if page.entries:
            sub(s, RSM + "first", text=str(page.entries[0].id))
            sub(s, RSM + "last", text=str(page.entries[-1].id))
        sub(s, RSM + "count", text=str(page.count))
        return reply

    def unknown(f: object) -> None:
        if f.check(UnknownId):  # type: ignore[attr-defined]
            raise StanzaError("item-not-found", "no such message id in your history")
        f.raiseException()  # type: ignore[attr-defined]

    d = history.query(
        archive or stream.jid.local,
        peer=peer,
        start=start,
        end=end,
        after=after,
        before=before,
        last_page=last_page,
        limit=limit,
    )
    return d.addCallbacks(send, unknown)


def _fields(x: ET.Element | None) -> dict[str, str]:
    if x is None:
        return {}
    out = {}
    for f in x.findall(DATA + "field"):
        value = f.findtext(DATA + "value")
        if f.get("var") and value is not None:
            out[f.get("var", "")] = value.strip()
    if out.get("FORM_TYPE", NS_MAM) != NS_MAM:
        raise StanzaError("bad-request", f"FORM_TYPE must be {NS_MAM}")
    return out


def _jid(text: str | None) -> JID | None:
    if not text:
        return None
    try:
        return parse_jid(text)
    except InvalidJID:
        raise StanzaError("jid-malformed", "'with' is not a valid address") from None


def _time(text: str | None, name: str) -> float | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise StanzaError("bad-request", f"'{name}' is not an XEP-0082 date-time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def _int(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise StanzaError("bad-request", f"RSM <{name}/> must be a number") from None
    if value < 0:
        raise StanzaError("bad-request", f"RSM <{name}/> must not be negative")
    return value


def _id(text: str | None, name: str) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        # ids are ours; one we never gave out names no message (XEP-0313 §4.3.2)
        raise StanzaError("item-not-found", f"RSM <{name}/> names no message") from None
