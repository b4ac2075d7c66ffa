"""XEP-0055 Jabber Search on the domain's own address: the user directory for XMPP clients.

The domain answers `jabber:iq:search` itself (disco#info lists the feature), with the legacy
fields (first, last, nick, email) and an XEP-0004 data form that also has a `search` field for
user name or display name. How the fields map: first and last are the display name's words
(all but the last, and the last), nick is the user name, email the first work e-mail address
of the user's card. Matching is core/directory.py's: case-insensitive substrings, all given
fields must match, disabled accounts and users who blocked the searcher left out.

A request without an XEP-0059 <set/> gets at most SEARCH_LIMIT entries (the answer says so when
it was cut short). With one, in either variant, the client pages through all the matches
(rsm.py): ordered by user name, each item's id its JID, at most SEARCH_LIMIT to a page, the
answer's <set/> holding the first item's index, the last item and the count of matches.

Same domain only: the search is answered on client streams of this domain, from the LAN or the
edge alike (a remote user the outside-access policy lets in is a colleague; one it no longer
lets in gets <forbidden/>). A request from another domain never gets here: the federation
adapter answers `service-unavailable` to every iq for the domain but ping and disco, so
external contacts learn nothing of the directory.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from standard_edition.core.directory import Directory, Entry, Query, Result
from standard_edition.presence.access import Level
from standard_edition.xmpp import rsm
from standard_edition.xmpp.stanzas import StanzaError, result_reply, sub

if TYPE_CHECKING:
    from standard_edition.xmpp.c2s import C2SProtocol

NS_SEARCH = "jabber:iq:search"
NS_DATA = "jabber:x:data"  # XEP-0004
S = "{" + NS_SEARCH + "}"
X = "{" + NS_DATA + "}"
LEGACY = ("first", "last", "nick", "email")
MAX_FIELD = 256  # characters of one search field
FORM_FIELDS = (
    ("search", "Name or user name"),
    ("first", "First name"),
    ("last", "Last name"),
    ("nick", "User name"),
    ("email", "E-mail"),
)
REPORTED = (
    ("jid", "Address", "jid-single"),
    ("name", "Name", "text-single"),
    ("first", "First name", "text-single"),
    ("last", "Last name", "text-single"),
    ("nick", "User name", "text-single"),
    ("email", "E-mail", "text-single"),
)
INSTRUCTIONS = (
    "Find colleagues by name or user name: any part of it, in any case. "
    "Leave the other fields empty, or fill them in to narrow the search."
)


def handle(directory: Directory, stream: C2SProtocol, iq: ET.Element, q: ET.Element) -> ET.Element:
    """XEP-0055 §2: the form on a get, the matching entries on a set."""
    if iq.get("type") == "get":
        return _form(iq, directory)
    assert stream.jid is not None and stream.jid.local is not None
    me = stream.jid
    router = stream.ctx.router
    policy = router.federation
    if stream.origin == "edge" and policy is not None and not policy.outside_access(me.local):
        # withdrawing outside access ends such sessions; this covers the moment in between
        raise StanzaError("forbidden", "the directory is not open to this remote session")
    presence = router.presence
    form = q.find(X + "x")
    query = _form_query(form) if form is not None else _legacy_query(q)
    rsm_set = q.find(rsm.SET)
    request = rsm.parse(rsm_set) if rsm_set is not None else None

    def hidden(user: str) -> bool:
        return presence.level(user, me) is Level.BLOCKED

    reply = result_reply(iq)
    out = sub(reply, S + "query")
    paged: tuple[list[str], rsm.Window] | None = None
    if request is None:
        # no <set/>: the first SEARCH_LIMIT, and a note saying how many more there are
        result = directory.search(query, hidden)
        entries, note = result.entries, _cut_short(result, directory) if result.truncated else None
    else:
        # XEP-0059: a page of the matches in user name order, the JIDs its item ids
        found = directory.matches(query, hidden)
        ids = [e.address for e in found]
        window = rsm.page(ids, request, directory.limit)
        entries, note = found[window.start : window.stop], None
        paged = (ids, window)
    if form is not None:
        out.append(_form_result(entries, note))
    else:
        if note is not None:
            sub(out, S + "instructions", text=note)
        for e in entries:
            item = sub(out, S + "item", {"jid": e.address})
            for name, value in zip(LEGACY, (e.first, e.last, e.username, e.email), strict=True):
                sub(item, S + name, text=value)
    if paged is not None:
        rsm.answer(out, *paged)
    return reply


def _form(iq: ET.Element, directory: Directory) -> ET.Element:
    reply = result_reply(iq)
    out = sub(reply, S + "query")
    sub(out, S + "instructions", text=INSTRUCTIONS)
    for name in LEGACY:
        sub(out, S + name)
    x = sub(out, X + "x", {"type": "form"})
    sub(x, X + "title", text="Directory")
    sub(x, X + "instructions", text=INSTRUCTIONS)
    ft = sub(x, X + "field", {"type": "hidden", "var": "FORM_TYPE"})
    sub(ft, X + "value", text=NS_SEARCH)
    for var, label in FORM_FIELDS:
        sub(x, X + "field", {"type": "text-single", "var": var, "label": label})
    return reply


def _form_result(entries: list[Entry], note: str | None) -> ET.Element:
    x = ET.Element(X + "x", {"type": "result"})
    sub(x, X + "title", text=note or "Directory")
    ft = sub(x, X + "field", {"type": "hidden", "var": "FORM_TYPE"})
    sub(ft, X + "value", text=NS_SEARCH)
    reported = sub(x, X + "reported")
    for var, label, ftype in REPORTED:
        sub(reported, X + "field", {"var": var, "label": label, "type": ftype})
    for e in entries:
        item = sub(x, X + "item")
        for var, value in zip((r[0] for r in REPORTED), _row(e), strict=True):
            field = sub(item, X + "field", {"var": var})
            sub(field, X + "value", text=value)
    return x


def _row(e: Entry) -> tuple[str, ...]:
    return (e.address, e.name, e.first, e.last, e.username, e.email)


def _cut_short(result: Result, directory: Directory) -> str:
    return (
        f"Showing the first {len(result.entries)} of {result.total} matches "
        f"(at most {directory.limit}); narrow the search to see the others."
    )


def _legacy_query(q: ET.Element) -> Query:
    values = {name: _text(q.findtext(S + name)) for name in LEGACY}
    return Query(**values)


def _form_query(x: ET.Element) -> Query:
    if x.get("type") not in ("submit", None):
        raise StanzaError("bad-request", "submit the search form with type 'submit'")
    values: dict[str, str] = {}
    for field in x.findall(X + "field"):
        var = field.get("var", "")
        if var in ("search", *LEGACY):
            values["text" if var == "search" else var] = _text(field.findtext(X + "value"))
    return Query(**values)


def _text(value: str | None) -> str:
    value = (value or "").strip()
    if len(value) > MAX_FIELD:
        raise StanzaError("not-acceptable", f"a search field holds at most {MAX_FIELD} characters")
    return value
