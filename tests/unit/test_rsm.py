"""XEP-0059 paging (xmpp/rsm.py) without a server: reading <set/>, choosing pages, answering."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from standard_edition.xmpp.rsm import R, Request, Window, answer, page, parse
from standard_edition.xmpp.stanzas import StanzaError

IDS = [f"u{i:03}@example.test" for i in range(120)]


def request(xml: str) -> Request:
    return parse(ET.fromstring(f"<set xmlns='http://jabber.org/protocol/rsm'>{xml}</set>"))


def condition(xml: str) -> str:
    with pytest.raises(StanzaError) as e:
        request(xml)
    return e.value.condition


def test_set_is_read_with_empty_before_meaning_the_last_page() -> None:
    assert request("<max>10</max><after>a@x</after>") == Request(max=10, after="a@x")
    assert request("<max> 5 </max><before/>") == Request(max=5, before="")
    assert request("<index>3</index>") == Request(index=3)
    assert request("") == Request()


@pytest.mark.parametrize(
    "xml",
    [
        "<max>ten</max>",
        "<max>-1</max>",
        "<max>+3</max>",
        "<max></max>",
        "<max>1_0</max>",
        "<max>\u0663</max>",  # an Arabic-Indic three
        "<index>-2</index>",
        "<index>99999999999999</index>",
        "<after/>",
        "<index>1</index><after>a@x</after>",
        "<index>1</index><before/>",
    ],
)
def test_malformed_set_is_a_bad_request(xml: str) -> None:
    assert condition(xml) == "bad-request"


def test_forward_paging_visits_every_id_once() -> None:
    seen: list[str] = []
    after = None
    while True:
        w = page(IDS, Request(max=50, after=after), cap=50)
        if w.empty:
            break
        assert w.count == 120 and w.start == len(seen)
        seen += IDS[w.start : w.stop]
        after = IDS[w.stop - 1]
    assert seen == IDS


def test_backward_paging_from_the_last_page() -> None:
    assert page(IDS, Request(max=50, before=""), cap=50) == Window(70, 120, 120)
    assert page(IDS, Request(max=50, before=IDS[70]), cap=50) == Window(20, 70, 120)
    assert page(IDS, Request(max=50, before=IDS[20]), cap=50) == Window(0, 20, 120)
    assert page(IDS, Request(max=50, before=IDS[0]), cap=50).empty


def test_max_is_capped_by_the_server_and_zero_gives_the_count_only() -> None:
    assert page(IDS, Request(max=500), cap=50) == Window(0, 50, 120)
    assert page(IDS, Request(), cap=50) == Window(0, 50, 120)
    w = page(IDS, Request(max=0), cap=50)
    assert w.empty and w.count == 120


def test_index_pages_out_of_order() -> None:
    assert page(IDS, Request(max=10, index=35), cap=50) == Window(35, 45, 120)
    assert page(IDS, Request(max=10, index=115), cap=50) == Window(115, 120, 120)
    assert page(IDS, Request(max=10, index=500), cap=50).empty


def test_after_and_before_together_give_what_lies_between() -> None:
    assert page(IDS, Request(max=50, after=IDS[9], before=IDS[15]), cap=50) == Window(10, 15, 120)
    assert page(IDS, Request(max=3, after=IDS[9], before=IDS[15]), cap=50) == Window(12, 15, 120)
    assert page(IDS, Request(after=IDS[15], before=IDS[9]), cap=50).empty


def test_unknown_after_or_before_is_item_not_found() -> None:
    for req in (Request(after="gone@example.test"), Request(before="gone@example.test")):
        with pytest.raises(StanzaError) as e:
            page(IDS, req, cap=50)
        assert e.value.condition == "item-not-found"


def test_answer_has_first_with_index_last_and_count() -> None:
    parent = ET.Element("query")
    s = answer(parent, IDS, Window(20, 70, 120))
    first = s.find(R + "first")
    assert first is not None and first.get("index") == "20" and first.text == IDS[20]
    assert s.findtext(R + "last") == IDS[69]
    assert s.findtext(R + "count") == "120"
    empty = answer(ET.Element("query"), IDS, Window(0, 0, 120))
    assert [c.tag for c in empty] == [R + "count"]


@given(
    n=st.integers(0, 80),
    size=st.integers(1, 30),
    cap=st.integers(1, 30),
)
def test_backward_paging_visits_every_id_once(n: int, size: int, cap: int) -> None:
    ids = [f"u{i:03}" for i in range(n)]
    got: list[str] = []
    before = ""
    while True:
        w = page(ids, Request(max=size, before=before), cap=cap)
        if w.empty:
            break
        assert w.stop - w.start == min(size, cap, w.stop)
        got = ids[w.start : w.stop] + got
        before = ids[w.start]
    assert got == ids
