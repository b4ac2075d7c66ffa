"""XEP-0059 Result Set Management: reading a request's <set/>, choosing the page, writing the
answer's <set/>.

Paging works on the ids of an ordered result (the caller keeps the order stable between
requests): `parse` reads what the client asked for, `page` picks the slice of the ids that
answers it, `answer` writes `<set><first index='..'/><last/><count/></set>`. Only `parse` and
`page` raise, and only StanzaError: bad-request for a set that does not say what it means,
item-not-found for an <after/> or <before/> naming no item of the result (XEP-0059 §2.4).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from standard_edition.xmpp.stanzas import StanzaError, sub

NS_RSM = "http://jabber.org/protocol/rsm"
R = "{" + NS_RSM + "}"
SET = R + "set"
MAX_DIGITS = 9  # a number with more digits than this is no page size or position anyone means


@dataclass(frozen=True, slots=True)
class Request:
    """What a <set/> asks for; None where the element was absent."""

    max: int | None = None  # items in the page
    after: str | None = None  # the page after this item
    before: str | None = None  # the page before it; "" is the last page (§2.5)
    index: int | None = None  # the page that starts at this position (§2.6)


@dataclass(frozen=True, slots=True)
class Window:
    """The page as positions in the ordered result: items[start:stop] of `count`."""

    start: int
    stop: int
    count: int

    @property
    def empty(self) -> bool:
        return self.stop <= self.start


def parse(el: ET.Element) -> Request:
    """The request of a <set xmlns='http://jabber.org/protocol/rsm'/>."""
    size = _number(el.findtext(R + "max"), "max")
    index = _number(el.findtext(R + "index"), "index")
    after_el = el.find(R + "after")
    after = None
    if after_el is not None:
        after = (after_el.text or "").strip()
        if not after:
            raise StanzaError("bad-request", "RSM <after/> must name an item")
    before_el = el.find(R + "before")
    before = None if before_el is None else (before_el.text or "").strip()
    if index is not None and (after is not None or before is not None):
        # §2.6: an index stands in for <after/> or <before/>, it is not used beside them
        raise StanzaError("bad-request", "RSM <index/> is not used with <after/> or <before/>")
    return Request(size, after, before, index)


def page(ids: Sequence[str], request: Request, cap: int) -> Window:
    """The slice of the ordered `ids` that answers `request`, at most `cap` items long (the
    server's page size; a larger <max/> gets `cap`, §2.1 lets the server send fewer)."""
    count = len(ids)
    size = cap if request.max is None else min(request.max, cap)
    if request.index is not None:
        start = min(request.index, count)  # past the end: an empty page, with the count
        return Window(start, min(start + size, count), count)
    lo, hi = 0, count
    if request.after is not None:
        lo = _position(ids, request.after, "after") + 1
    if request.before:
        hi = _position(ids, request.before, "before")
    hi = max(lo, hi)  # an <after/> later than the <before/>: nothing lies between them
    if request.before is not None:
        # §2.3: the items just before; §2.5: an empty <before/> asks for the last page
        return Window(max(lo, hi - size), hi, count)
    return Window(lo, min(lo + size, hi), count)


def answer(parent: ET.Element, ids: Sequence[str], window: Window) -> ET.Element:
    """The answer's <set/>: first (with its index) and last of the page when it has items
    (an empty page, as §2.7's <max>0</max> asks for, gives only the count), then the count."""
    s = sub(parent, SET)
    if not window.empty:
        sub(s, R + "first", {"index": str(window.start)}, text=ids[window.start])
        sub(s, R + "last", text=ids[window.stop - 1])
    sub(s, R + "count", text=str(window.count))
    return s


def _number(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    value = text.strip()
    # ASCII digits only: int() would also take "+3", "1_0" and other scripts' digits
    if not value or not value.isascii() or not value.isdigit():
        raise StanzaError("bad-request", f"RSM <{name}/> must be a whole number, 0 or more")
    if len(value) > MAX_DIGITS:
        raise StanzaError("bad-request", f"RSM <{name}/> is too large")
    return int(value)


def _position(ids: Sequence[str], item: str, name: str) -> int:
    try:
        return ids.index(item)
    except ValueError:
        raise StanzaError("item-not-found", f"RSM <{name}/> names no item of this result") from None
