"""A partner's PIDF as the core's presence, and the core's presence as a code (RFC 8048 §4)."""

from __future__ import annotations

from standard_edition.core.model import Presence
from standard_edition.presence.model import AVAILABLE, AWAY, BUSY, DND, IDLE, Aggregate, Manual
from standard_edition.sip import pidf
from standard_edition.sip.federation import _presence_of, _subscription_state, code_of


def test_a_partners_document_keeps_its_exact_code_and_each_open_tuple() -> None:
    doc = pidf.build(
        "sip:erin@b.test",
        [pidf.Tuple("desk", True), pidf.Tuple("phone", True)],
        Aggregate(6500, note="deadline"),
    )
    ids, p = _presence_of(doc, 1000.0)
    assert ids == ["desk", "phone"]
    assert p is not None and p.code == 6500 and p.show == "dnd" and p.status == "deadline"


def test_an_offline_document_is_no_presence() -> None:
    ids, p = _presence_of(pidf.build("sip:erin@b.test", [], None), 1000.0)
    assert ids == [] and p is None


def test_a_plain_open_document_is_available_and_rpid_idle_is_inactive() -> None:
    plain = (
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:x@b.test">'
        b'<tuple id="t"><status><basic>open</basic></status></tuple></presence>'
    )
    ids, p = _presence_of(plain, 1000.0)
    assert ids == ["t"] and p is not None and p.code == AVAILABLE and p.show is None
    idle = plain.replace(
        b"</presence>",
        b'<person xmlns="urn:ietf:params:xml:ns:pidf:data-model" id="p">'
        b'<user-input xmlns="urn:ietf:params:xml:ns:pidf:rpid">idle</user-input>'
        b"</person></presence>",
    )
    _, p = _presence_of(idle, 1000.0)
    assert p is not None and p.code == IDLE and p.show == "away"


def test_code_of_an_xmpp_presence() -> None:
    assert code_of(Presence(code=BUSY)) == BUSY
    assert code_of(Presence(manual=Manual(DND))) == DND
    assert code_of(Presence(show="xa")) == AWAY
    assert code_of(Presence(show="away")) == IDLE
    assert code_of(Presence()) == AVAILABLE


def test_subscription_state_header() -> None:
    assert _subscription_state("active;expires=600") == ("active", {"expires": "600"})
    assert _subscription_state("terminated; reason=rejected") == (
        "terminated",
        {"reason": "rejected"},
    )
