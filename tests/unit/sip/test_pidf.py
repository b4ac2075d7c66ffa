"""PIDF/RPID documents: what watchers get and what a PUBLISH means (RFC 3863, 4480, 8048)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from standard_edition.presence.aggregate import IDLE_AFTER
from standard_edition.presence.model import (
    AVAILABLE,
    BUSY,
    DND,
    IDLE,
    OFFLINE,
    Activity,
    Aggregate,
    Manual,
)
from standard_edition.sip import pidf

NS = {"p": pidf.PIDF, "dm": pidf.DM, "rpid": pidf.RPID, "se": pidf.SE}


def doc(tuples: list[pidf.Tuple], agg: Aggregate | None) -> ET.Element:
    return ET.fromstring(pidf.build("sip:alice@example.test", tuples, agg))


def test_one_tuple_per_endpoint_and_the_aggregate_in_the_person() -> None:
    root = doc(
        [pidf.Tuple("sip-1", True), pidf.Tuple("laptop", True)],
        Aggregate(DND, Activity.PRESENTING, "slides", source="manual"),
    )
    assert [t.get("id") for t in root.findall("p:tuple", NS)] == ["sip-1", "laptop"]
    assert [b.text for b in root.iterfind(".//p:basic", NS)] == ["open", "open"]
    person = root.find("dm:person", NS)
    assert person is not None
    assert person.find("rpid:activities/rpid:busy", NS) is not None  # RFC 8048: dnd is busy
    ours = person.find("se:availability", NS)
    assert ours is not None and ours.get("code") == "9500"
    assert ours.get("activity") == "presenting"
    assert person.findtext("dm:note", namespaces=NS) == "slides"


def test_offline_or_hidden_is_one_closed_tuple() -> None:
    for agg in (None, Aggregate(OFFLINE)):
        root = doc([pidf.Tuple("sip-1", True)], agg)
        assert [b.text for b in root.iterfind(".//p:basic", NS)] == ["closed"]


def test_idle_bands_carry_user_input_idle() -> None:
    root = doc([pidf.Tuple("t", True)], Aggregate(IDLE))
    assert root.findtext(".//rpid:user-input", namespaces=NS) == "idle"
    assert root.find(".//rpid:activities/rpid:away", NS) is not None


def test_pidf_is_the_default_namespace_as_simple_clients_expect() -> None:
    # baresip 1.0 finds the status with a regex on `<basic>` and the activity on
    # `<rpid:away/>`: a generated `ns0:` prefix made every status unreadable to it
    out = pidf.build("sip:alice@example.test", [pidf.Tuple("t", True)], Aggregate(IDLE))
    assert re.search(rb'<presence [^>]*xmlns="urn:ietf:params:xml:ns:pidf"', out)
    assert b"<basic>open</basic>" in out
    assert re.search(rb"<rpid:away[ \t]*/>", out)
    assert b"ns0" not in out


def published(person: str, basic: str = "open") -> bytes:
    return (
        f'<presence xmlns="{pidf.PIDF}" xmlns:dm="{pidf.DM}" xmlns:rpid="{pidf.RPID}" '
        f'xmlns:se="{pidf.SE}" entity="sip:a@example.test"><tuple id="t"><status>'
        f"<basic>{basic}</basic></status></tuple><dm:person id='p'>{person}</dm:person>"
        "</presence>"
    ).encode()


@pytest.mark.parametrize(
    ("activity", "manual"),
    [
        ("busy", Manual(BUSY)),
        ("on-the-phone", Manual(BUSY, Activity.IN_A_CALL)),
        ("meeting", Manual(BUSY, Activity.IN_A_MEETING)),
        ("away", Manual(15500)),
    ],
)
def test_rpid_activities_are_manual_states(activity: str, manual: Manual) -> None:
    p = pidf.parse(published(f"<rpid:activities><rpid:{activity}/></rpid:activities>"), 1000.0)
    assert p.manual == manual
    assert not p.clear_manual


def test_user_input_idle_is_machine_state() -> None:
    p = pidf.parse(published("<rpid:user-input>idle</rpid:user-input>"), 1000.0)
    assert p.manual is None and not p.clear_manual
    assert p.state.code == AVAILABLE and p.state.idle_since == 1000.0 - IDLE_AFTER


def test_our_code_is_kept_exactly_and_plain_open_clears_the_manual_state() -> None:
    p = pidf.parse(published('<se:availability code="6712" activity="in-a-call"/>'), 0.0)
    assert p.manual == Manual(6712, Activity.IN_A_CALL)
    assert pidf.parse(published("<dm:note>hi</dm:note>"), 0.0).clear_manual
    assert pidf.parse(published("", "closed"), 0.0).state.code == OFFLINE


@pytest.mark.parametrize(
    "body",
    [
        b"<presence",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><presence xmlns="urn:ietf:params:xml:ns:pidf"/>',
        b"<other/>",
        b"x" * (pidf.MAX_DOCUMENT + 1),
    ],
)
def test_bad_documents_are_refused(body: bytes) -> None:
    with pytest.raises(pidf.PidfError):
        pidf.parse(body, 0.0)


@given(st.integers(min_value=3000, max_value=29999), st.sampled_from([None, *Activity]))
def test_our_code_round_trips_through_a_document(code: int, activity: Activity | None) -> None:
    body = pidf.build("sip:a@example.test", [pidf.Tuple("t", True)], Aggregate(code, activity))
    p = pidf.parse(body, 0.0)
    if code >= 18000:
        assert p.state.code == OFFLINE  # shown as closed
    else:
        assert p.manual == Manual(code, activity)
