"""Parsed header values: built on first use, remembered, and dropped when their header changes.

Also the short cuts of the parser (the common Via and parameter forms, remembered URIs and
addresses): they must give exactly what the general path gives, errors included.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from standard_edition.sip.message import (
    ParseError,
    Request,
    make_response,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    quote_string,
    serialize,
)

MESSAGE = (
    b"MESSAGE sip:bob@example.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.5:5062;rport;branch=z9hG4bK776asdhds\r\n"
    b"Via: SIP/2.0/TCP proxy.example.test;branch=z9hG4bKabc;received=192.0.2.9\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:bob@example.test>\r\n"
    b"From: Alice <sip:alice@example.test>;tag=49583\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 7 MESSAGE\r\n"
    b"Contact: <sip:alice@192.0.2.5:5062>\r\n"
    b'Proxy-Authorization: Digest username="alice", realm="example.test", nonce="n"\r\n'
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 5\r\n\r\n"
    b"hello"
)


def message(data: bytes = MESSAGE) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def rejected(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        msg = parse_message(data)
        msg.validate()
    return info.value


# --------------------------------------------------------------------------- the cache


def test_values_are_parsed_on_first_use_and_remembered() -> None:
    m = message()
    assert m.from_ is m.from_
    assert m.top_via is m.top_via
    assert m.cseq.number == 7 and m.cseq.method == "MESSAGE"
    assert str(m.from_.uri) == "sip:alice@example.test" and m.from_.tag == "49583"
    assert [v.host for v in m.vias] == ["192.0.2.5", "proxy.example.test"]
    assert m.auth_headers("proxy-authorization")[0].get("username") == "alice"


def test_changing_a_header_drops_only_what_was_parsed_from_it() -> None:
    m = message()
    from_, cseq, contacts = m.from_, m.cseq, m.contacts
    assert m.top_via.branch == "z9hG4bK776asdhds"
    m.headers.replace_first("Via", "SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKnew")
    assert m.top_via.host == "198.51.100.1" and m.top_via.branch == "z9hG4bKnew"
    assert [v.branch for v in m.vias] == ["z9hG4bKnew", "z9hG4bKabc"]
    assert m.headers.get_all("Via")[1].startswith("SIP/2.0/TCP proxy.example.test")
    # the others were not touched and are not parsed again
    assert m.from_ is from_ and m.cseq is cseq and m.contacts is contacts


def test_add_set_and_remove_refresh_the_parsed_values() -> None:
    m = message()
    assert m.cseq.number == 7 and m.max_forwards == 70 and len(m.contacts) == 1
    m.headers.set("CSeq", "8 MESSAGE")
    m.headers.set("Max-Forwards", "69")
    m.headers.add("m", "<sip:alice@198.51.100.7>")
    assert m.cseq.number == 8 and m.max_forwards == 69
    assert [c.uri.host for c in m.contacts] == ["192.0.2.5", "198.51.100.7"]
    m.headers.remove("Contact")
    assert m.contacts == ()
    m.headers.remove("Proxy-Authorization")
    assert m.auth_headers("Proxy-Authorization") == ()
    m.headers.add("Proxy-Authorization", 'Digest username="carol", realm="x"')
    assert m.auth_headers("Proxy-Authorization")[0].get("username") == "carol"
    m.headers.add("CSeq", "9 MESSAGE")
    with pytest.raises(ParseError, match="multiple CSeq header fields"):
        m.cseq  # noqa: B018


def test_replace_top_via_keeps_the_marked_via_and_its_text() -> None:
    m = message()
    marked = m.top_via.with_received("203.0.113.4", 40000)
    m.replace_top_via(marked)
    assert m.top_via == marked == parse_via(m.headers.get("Via") or "")
    assert m.top_via.received == "203.0.113.4" and m.top_via.rport == 40000
    assert m.vias[0] == marked and m.vias[1].host == "proxy.example.test"
    wire = serialize(make_response(m, 200, to_tag="t1"))
    assert b"Via: SIP/2.0/UDP 192.0.2.5:5062;rport=40000;branch=z9hG4bK776asdhds;" in wire


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 192.0.2.5;branch=z9hG4bK1",
        "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK1;rport",
        'sip/2.0/tcp Host.Example.Test : 5060 ;branch=z9hG4bK1;x="a \\"b\\" c"',
        "SIP/2.0/UDP 192.0.2.5;branch=z9hG4bK1;x=",
    ],
)
@pytest.mark.parametrize("source", ["198.51.100.1", "2001:db8::7", "192.0.2.5"])
def test_a_marked_via_parses_back_to_itself(via: str, source: str) -> None:
    try:
        parsed = parse_via(via)
    except ParseError:
        return  # nothing to mark
    marked = parsed.with_received(source, 5999)
    assert parse_via(str(marked)) == marked


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("old", "new", "status", "reason"),
    [
        (b"CSeq: 7 MESSAGE", b"CSeq: seven MESSAGE", 400, "bad CSeq number"),
        (b"CSeq: 7 MESSAGE", b"CSeq: 7 REGISTER", 400, "CSeq method does not match the request"),
        (b"Max-Forwards: 70", b"Max-Forwards: 256", 400, "Max-Forwards out of range"),
        (b"Max-Forwards: 70", b"Max-Forwards: 7a", 400, "bad Max-Forwards"),
        (b"Call-ID: 843817637684230@998sdasdh09\r\n", b"", 400, "missing Call-ID header"),
        (b"To: <sip:bob@example.test>", b"To: <sip:bob@example.test", 400, "unterminated <URI>"),
        (b"192.0.2.5:5062;rport", b"192.0.2.5:99999;rport", 400, "port out of range"),
        (b"192.0.2.5:5062;rport", b"-bad.host;rport", 400, "bad host in '-bad.host'"),
        (b";branch=z9hG4bK776asdhds", b";branch=", 400, "parameter 'branch' without value in Via"),
        (b";branch=z9hG4bK776asdhds", b";branch", 400, "Via parameter without value"),
        (b";rport;", b";rport=70000;", 400, "rport out of range"),
        (b";tag=49583", b";tag=49583 x", 400, "unexpected 'x' in address"),
        (b";tag=49583", b';tag="49583', 400, "unterminated quoted string"),
    ],
)
def test_broken_required_headers_are_still_refused(
    old: bytes, new: bytes, status: int, reason: str
) -> None:
    data = MESSAGE.replace(old, new, 1)
    assert data != MESSAGE
    for _ in range(2):  # the second time the same way: errors are never remembered
        err = rejected(data)
        assert (err.status, err.reason) == (status, reason)


def test_header_names_are_checked_after_many_good_ones() -> None:
    for _ in range(3):
        message()
    err = rejected(MESSAGE.replace(b"Max-Forwards:", b"Max Forwards:"))
    assert (err.status, err.reason) == (400, "bad header name")
    assert message(MESSAGE.replace(b"Via:", b"v :")).top_via.port == 5062


def test_a_bad_uri_is_refused_every_time() -> None:
    for _ in range(3):
        with pytest.raises(ParseError, match="bad user part"):
            parse_uri("sip:a|b@example.test")
        with pytest.raises(ParseError, match="URI with headers must be enclosed"):
            parse_name_addr("sip:a@example.test?x=y")
    assert parse_uri("sip:alice@example.test") == parse_uri("sip:alice@example.test")


def test_long_addresses_parse_like_short_ones() -> None:
    user = "u" * 600
    na = parse_name_addr(f"<sip:{user}@example.test>;tag=1")
    assert na.uri.user == user and na.tag == "1"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- responses


def test_make_response_copies_and_tags_like_rfc_3261() -> None:
    m = message(MESSAGE.replace(b"CSeq: 7", b"Timestamp: 54\r\nCSeq: 7"))
    ok = make_response(m, 200, to_tag="abc", headers=[("k", "path")])
    assert list(ok.headers)[:6] == [
        ("Via", "SIP/2.0/UDP 192.0.2.5:5062;rport;branch=z9hG4bK776asdhds"),
        ("Via", "SIP/2.0/TCP proxy.example.test;branch=z9hG4bKabc;received=192.0.2.9"),
        ("From", "Alice <sip:alice@example.test>;tag=49583"),
        ("To", "<sip:bob@example.test>;tag=abc"),
        ("Call-ID", "843817637684230@998sdasdh09"),
        ("CSeq", "7 MESSAGE"),
    ]
    assert ok.headers.get("Supported") == "path" and "Timestamp" not in ok.headers
    trying = make_response(m, 100, to_tag="abc")
    assert trying.headers.get("To") == "<sip:bob@example.test>"
    assert trying.headers.get("Timestamp") == "54"
    twice = message(
        MESSAGE.replace(b"To: <sip:bob@example.test>", b"To: <sip:b@x>\r\nTo: <sip:c@x>")
    )
    assert make_response(twice, 200, to_tag="abc").headers.get_all("To") == [
        "<sip:b@x>",
        "<sip:c@x>",
    ]
    with pytest.raises(ValueError):
        make_response(m, 200, headers=[("Bad Name", "x")])
    with pytest.raises(ValueError):
        make_response(m, 200, headers=[("Warning", "a\r\nInjected: 1")])


# --------------------------------------------------------------------------- parameters

_TOKEN = st.text(alphabet="abcXYZ019-.!%*_+`'~", min_size=1, max_size=8)
_VALUE = st.one_of(
    st.none(),
    _TOKEN,
    st.text(alphabet='ab ;,"\\<>?=:é', max_size=8),
)
_GAP = st.sampled_from(["", " ", "\t", " \t "])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TOKEN, _VALUE, _GAP, _GAP), max_size=5), _GAP)
def test_parameters_parse_the_same_in_every_form(
    params: list[tuple[str, str | None, str, str]], tail: str
) -> None:
    text = "<sip:alice@example.test>"
    for name, value, before, after in params:
        text += f"{before};{after}{name}"
        if value is not None:
            shown = value if value and value.isalnum() else quote_string(value)
            text += f"{after}={before}{shown}"
    text += tail
    expected = tuple((n.lower(), v) for n, v, _, _ in params)
    assert parse_name_addr(text).params == expected
    via = parse_via("SIP/2.0/UDP 192.0.2.5" + text.removeprefix("<sip:alice@example.test>"))
    assert via.params == expected
