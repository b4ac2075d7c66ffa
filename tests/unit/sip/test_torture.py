"""RFC 4475 torture messages: each parsed or rejected as the RFC says, and never a crash."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from standard_edition.sip.framing import KeepAlive, Malformed, StreamFramer, parse_datagram
from standard_edition.sip.message import (
    AbsoluteURI,
    ParseError,
    Request,
    Response,
    SipURI,
    parse_auth,
    serialize,
)

TORTURE = Path(__file__).parent / "torture"
ALL = sorted(p.stem for p in TORTURE.glob("*.dat"))

# RFC 4475 §3.1.1: well-formed messages every parser must accept
VALID = [
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
]
# RFC 4475 §3.3 / §3.2 / §3.4: syntactically valid, judged above the parser
SEMANTIC_OK = [
    "badbranch",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
    "inv2543",
    "baddate",
]


def load(name: str) -> bytes:
    return (TORTURE / f"{name}.dat").read_bytes()


def datagram(name: str) -> Request | Response:
    msg = parse_datagram(load(name))
    assert not isinstance(msg, KeepAlive)
    return msg


def request(name: str) -> Request:
    msg = datagram(name)
    assert isinstance(msg, Request)
    return msg


def rejection(name: str) -> ParseError:
    """Parse and validate the message as a server would; return the error raised."""
    with pytest.raises(ParseError) as info:
        msg = parse_datagram(load(name))
        assert not isinstance(msg, KeepAlive)
        msg.validate()
    return info.value


def test_every_section_3_message_is_present() -> None:
    assert len(ALL) == 49


@pytest.mark.parametrize("name", VALID + SEMANTIC_OK)
def test_valid_message_parses_and_validates(name: str) -> None:
    datagram(name).validate()


# --------------------------------------------------------------------------- §3.1.1


def test_short_tortuous_invite_wsinv() -> None:
    m = request("wsinv")
    assert m.method == "INVITE"
    assert m.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert isinstance(m.ruri, SipURI) and m.ruri.params == (("unknownparam", None),)
    assert m.to.uri == SipURI("sip", "chair-dnrc.example.com", "vivekg")
    assert m.to.tag == "1918181833n"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (m.cseq.number, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("unknownheaderwithunusualvalue") == ";;,,;;,;"
    (contact,) = m.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.param("newparam") == "newvalue"
    assert contact.has_param("secondparam")
    assert contact.q == 0.33
    (route,) = m.routes
    assert isinstance(route.uri, SipURI) and route.uri.has_param("lr")
    assert route.uri.param("unknownwith") == "value"
    assert m.content_type == "application/sdp"
    assert len(m.body) == 150 and m.body.startswith(b"v=0\r\n")


def test_wide_range_of_valid_characters_intmeth() -> None:
    m = request("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.method == method and m.cseq.method == method
    assert isinstance(m.ruri, SipURI)
    assert m.ruri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.ruri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.param("fromParam''~+*_!.-%") == "работающий"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    # RFC 4475 §3.1.1.2: an unknown method; an endpoint answers 501
    assert m.method not in ("INVITE",)


def test_escapes_are_decoded_once_esc01() -> None:
    m = request("esc01")
    assert isinstance(m.ruri, SipURI) and m.ruri.user == "sips:user@example.com"
    assert m.ruri.host == "example.net"
    assert isinstance(m.to.uri, SipURI) and m.to.uri.user == "user"
    assert isinstance(m.from_.uri, SipURI) and m.from_.uri.user == "I have spaces"
    (contact,) = m.contacts
    assert isinstance(contact.uri, SipURI) and contact.uri.user == "caller"
    # "v%61lue%25%34%31" is "value%41", not "valueA" (no recursive unescaping)
    assert contact.uri.params == (("lr", None), ("name", "value%41"))
    assert m.call_id == "esc01.239409asdfakjkn23onasd0-3234"
    # re-escaping gives back an equivalent URI
    assert str(contact.uri) == "sip:caller@host5.example.net;lr;name=value%2541"


def test_escaped_nulls_keep_distinct_users_escnull() -> None:
    m = request("escnull")
    assert isinstance(m.to.uri, SipURI) and m.to.uri.user == "null-\x00-null"
    users = [c.uri.user for c in m.contacts if isinstance(c.uri, SipURI)]
    assert users == ["\x00", "\x00\x00"]


def test_percent_that_is_not_an_escape_esc02() -> None:
    m = request("esc02")
    assert m.method == "RE%47IST%45R" and m.method != "REGISTER"
    assert m.to.display_name == "%Z%45"
    assert len(m.contacts) == 2
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert m.top_via.branch == "z9hG4bK209%fzsnel234"


def test_no_lws_before_angle_bracket_lwsdisp() -> None:
    m = request("lwsdisp")
    assert m.from_.display_name == "caller"
    assert m.from_.tag == "323"


def test_long_values_longreq() -> None:
    m = request("longreq")
    assert m.to.display_name == "I have a user name of " + "extreme" * 10 + " proportion"
    assert isinstance(m.to.uri, SipURI) and m.to.uri.port == 6000
    assert m.to.uri.param("unknownparam1") == "very" + "long" * 20 + "value"
    assert m.from_.tag == "12" + "982" * 50 + "424"
    assert m.call_id == "longreq.one" + "really" * 20 + "longcallid"
    assert len(m.vias) == 34
    assert m.vias[0].host == "sip33.example.com"
    assert m.vias[-1].received == "192.0.2.5"
    assert m.vias[-1].branch == "very" + "long" * 50 + "branchvalue"
    assert m.headers.get("Unknown-" + "Long" * 20 + "-Name") is not None
    assert len(m.body) == 150


def test_extra_octets_in_datagram_are_ignored_dblreq() -> None:
    m = request("dblreq")
    assert m.method == "REGISTER" and m.body == b""
    assert m.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert b"INVITE" not in serialize(m)


def test_semicolon_in_user_part_semiuri() -> None:
    m = request("semiuri")
    assert isinstance(m.ruri, SipURI)
    assert m.ruri.user == "user;par=u@example.net"
    assert m.ruri.host == "example.com" and m.ruri.params == ()
    assert m.tokens("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_unknown_transports() -> None:
    m = request("transports")
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert m.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_multipart_body_with_nulls_mpart01() -> None:
    m = request("mpart01")
    assert len(m.body) == 553 and b"\x00" in m.body
    assert m.body.endswith(b"--7a9cbec02ceef655--\r\n")
    via = m.top_via
    assert (via.host, via.port) == ("127.0.0.1", 5070)
    assert via.has_rport and via.rport is None
    assert m.content_type == "multipart/mixed"


def test_unusual_reason_phrase_unreason() -> None:
    m = datagram("unreason")
    assert isinstance(m, Response) and m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"


def test_empty_reason_phrase_noreason() -> None:
    m = datagram("noreason")
    assert isinstance(m, Response) and (m.status, m.reason) == (100, "")


# --------------------------------------------------------------------------- §3.1.2

REJECTED_400 = [
    "badinv01",  # §3.1.2.1 extraneous separators
    "clerr",  # §3.1.2.2 Content-Length larger than the datagram
    "ncl",  # §3.1.2.3 negative Content-Length
    "scalar02",  # §3.1.2.4 CSeq > 2**32-1
    "quotbal",  # §3.1.2.6 unterminated quoted string
    "ltgtruri",  # §3.1.2.7 <> around the Request-URI
    "lwsruri",  # §3.1.2.8 LWS in the Request-URI
    "lwsstart",  # §3.1.2.9 several SP in the request line
    "trws",  # §3.1.2.10 SP after the version
    "escruri",  # §3.1.2.11 headers in the Request-URI
    "regbadct",  # §3.1.2.13 URI with headers outside <>
    "badaspec",  # §3.1.2.14 spaces inside <>
    "baddn",  # §3.1.2.15 non-token display name
    "mismatch01",  # §3.1.2.17 CSeq method mismatch
    "insuf",  # §3.3.1 missing Call-ID, From, To
    "multi01",  # §3.3.8 several values in single-value fields
    "mcl01",  # §3.3.9 conflicting Content-Length values
]


@pytest.mark.parametrize("name", REJECTED_400)
def test_invalid_request_is_answered_400(name: str) -> None:
    err = rejection(name)
    assert err.status == 400
    assert err.phrase == "Bad Request"


def test_negative_content_length_is_fatal_on_a_stream() -> None:
    framer = StreamFramer()
    with pytest.raises(ParseError):
        framer.feed(load("ncl"))
    with pytest.raises(ParseError):
        framer.feed(b"OPTIONS sip:x SIP/2.0\r\n")  # the stream cannot be resynchronised


def test_content_length_larger_than_message_waits_on_a_stream() -> None:
    framer = StreamFramer()
    assert framer.feed(load("clerr")) == []
    assert framer.buffered > 0


def test_conflicting_content_lengths_are_fatal_on_a_stream() -> None:
    with pytest.raises(ParseError):
        StreamFramer().feed(load("mcl01"))


def test_overlarge_scalars_scalar02() -> None:
    m = request("scalar02")
    for accessor in ("cseq", "max_forwards", "expires"):
        with pytest.raises(ParseError):
            getattr(m, accessor)
    with pytest.raises(ParseError):
        _ = m.contacts[0].expires


def test_overlarge_response_scalars_are_dropped_scalarlg() -> None:
    assert rejection("scalarlg").status is None


def test_bad_date_is_rejected_only_when_used_baddate() -> None:
    m = request("baddate")
    m.validate()  # RFC 4475 §3.1.2.12: reject only if the Date matters
    with pytest.raises(ParseError):
        _ = m.date


def test_unknown_version_is_answered_505_badvers() -> None:
    err = rejection("badvers")
    assert err.status == 505
    assert err.headers is not None and err.headers.get("Call-ID") == "badvers.31417@c.example.com"


def test_unknown_method_with_cseq_mismatch_is_answered_501_mismatch02() -> None:
    assert rejection("mismatch02").status == 501


def test_overlarge_response_code_is_dropped_bigcode() -> None:
    err = rejection("bigcode")
    assert err.status is None


# --------------------------------------------------------------------------- §3.3


@pytest.mark.parametrize("name", ["unkscm", "novelsc"])
def test_unknown_request_uri_scheme_is_answered_416(name: str) -> None:
    m = request(name)
    assert isinstance(m.ruri, AbsoluteURI)
    assert rejection(name).status == 416


def test_unknown_schemes_in_header_fields_unksm2() -> None:
    m = request("unksm2")
    assert m.to.uri == AbsoluteURI("isbn", "2983792873")
    assert m.from_.uri == AbsoluteURI("http", "//www.example.com")
    assert m.contacts[0].uri == AbsoluteURI("name", "John_Smith")


def test_require_and_proxy_require_bext01() -> None:
    m = request("bext01")
    assert m.tokens("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert m.tokens("Proxy-Require") == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]


def test_unknown_content_type_invut() -> None:
    m = request("invut")
    assert m.content_type == "application/unknownformat"
    assert len(m.body) == 40


def test_unknown_authorization_scheme_regaut01() -> None:
    m = request("regaut01")
    (auth,) = m.auth_headers("Authorization")
    assert auth.scheme == "NoOneKnowsThisScheme"
    assert auth.params == {"opaque-data": "here"}
    assert parse_auth("Digest a=1").scheme == "Digest"


def test_broadcast_via_is_parsed_bcast() -> None:
    m = datagram("bcast")
    assert isinstance(m, Response)
    assert m.vias[1].host == "255.255.255.255"


def test_max_forwards_zero_zeromf() -> None:
    assert request("zeromf").max_forwards == 0


def test_contact_param_is_not_a_uri_param_cparam01() -> None:
    (c,) = request("cparam01").contacts
    assert isinstance(c.uri, SipURI) and c.uri.params == ()
    assert c.uri.user == "+19725552222"
    assert c.has_param("unknownparam")


def test_uri_param_inside_brackets_cparam02() -> None:
    (c,) = request("cparam02").contacts
    assert isinstance(c.uri, SipURI) and c.uri.params == (("unknownparam", None),)
    assert c.params == ()


def test_escaped_header_in_contact_regescrt() -> None:
    (c,) = request("regescrt").contacts
    assert isinstance(c.uri, SipURI)
    assert c.uri.headers == (("Route", "<sip:sip.example.com>"),)
    assert str(c.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_accept_without_sdp_sdp01() -> None:
    assert request("sdp01").tokens("Accept") == ["text/nobodyKnowsThis"]


def test_rfc2543_invite_body_runs_to_end_of_datagram_inv2543() -> None:
    m = request("inv2543")
    assert m.content_length is None
    assert m.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    assert m.top_via.branch is None
    assert m.from_.tag is None


# --------------------------------------------------------------------------- streams


@pytest.mark.parametrize("name", [n for n in VALID if n != "dblreq"])
def test_valid_message_frames_on_a_stream_byte_by_byte(name: str) -> None:
    data = load(name)
    framer = StreamFramer()
    events = []
    for i in range(len(data)):
        events += framer.feed(data[i : i + 1])
    assert events == [parse_datagram(data)]
    assert framer.buffered == 0


def test_stream_keeps_going_after_a_malformed_start_line() -> None:
    framer = StreamFramer()
    events = framer.feed(load("badvers") + b"\r\n" + load("zeromf"))
    assert isinstance(events[0], Malformed) and events[0].error.status == 505
    assert isinstance(events[1], Request) and events[1].call_id.startswith("zeromf.")


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("name", VALID + [n for n in SEMANTIC_OK if n != "inv2543"])
def test_serialize_then_parse_gives_the_same_message(name: str) -> None:
    m = datagram(name)
    again = parse_datagram(serialize(m))
    assert again == m
    assert serialize(again) == serialize(m)


# --------------------------------------------------------------------------- fuzz


def _exercise(data: bytes) -> None:
    try:
        msg = parse_datagram(data)
    except ParseError:
        return
    if isinstance(msg, KeepAlive):
        return
    for name in (
        "validate",
        "call_id",
        "cseq",
        "vias",
        "top_via",
        "from_",
        "to",
        "contacts",
        "routes",
        "record_routes",
        "max_forwards",
        "expires",
        "content_length",
        "date",
    ):
        try:
            value = getattr(msg, name)
            if callable(value):
                value()
        except ParseError:
            pass
    try:
        for a in msg.auth_headers("Authorization"):
            str(a)
    except ParseError:
        pass
    if isinstance(msg, Request):
        with contextlib.suppress(ParseError):
            str(msg.ruri)
    parse_datagram(serialize(msg))


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]),
        st.integers(min_value=0, max_value=4000),
        st.binary(min_size=1, max_size=4)
        | st.sampled_from([b"\r\n", b" ", b";", b",", b'"', b"<", b">", b"\\", b"%", b":", b"@"]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(ALL), edits=mutations)
def test_mutated_torture_messages_only_ever_raise_parse_error(
    name: str, edits: list[tuple[str, int, bytes]]
) -> None:
    data = bytearray(load(name))
    for op, pos, chunk in edits:
        pos %= len(data) + 1
        if op == "flip" and pos < len(data):
            data[pos] ^= chunk[0] or 1
        elif op == "insert":
            data[pos:pos] = chunk
        elif op == "delete":
            del data[pos : pos + len(chunk)]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            data[pos:pos] = data[max(0, pos - 40) : pos]
        if not data:
            data = bytearray(b"\r\n")
    _exercise(bytes(data))
    framer = StreamFramer()
    try:
        for i in range(0, len(data), 7):
            framer.feed(bytes(data[i : i + 7]))
    except ParseError:
        pass
