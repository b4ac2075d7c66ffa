"""SIP message parsing, structured headers and serialization (RFC 3261 §7, §19, §20, §25)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from standard_edition.sip.message import (
    AbsoluteURI,
    Headers,
    NameAddr,
    ParseError,
    Request,
    Response,
    SipURI,
    Via,
    canonical_name,
    make_response,
    parse_auth,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    serialize,
)

REGISTER = (
    b"REGISTER sip:example.test SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.5:5062;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"t: <sip:carol@example.test>\r\n"
    b"f: Carol <sip:carol@example.test>;tag=456248\r\n"
    b"i: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"m: <sip:carol@192.0.2.5:5062>;expires=3600, <sip:carol@[2001:db8::9]:5062>;q=0.5\r\n"
    b"Supported: path,\r\n outbound ,gruu\r\n"
    b'WWW-Authenticate: Digest realm="a, b", nonce="x"\r\n'
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"l: 0\r\n\r\n"
)


def reg() -> Request:
    msg = parse_message(REGISTER)
    assert isinstance(msg, Request)
    return msg


def test_compact_forms_are_expanded_and_names_are_case_insensitive() -> None:
    m = reg()
    names = [n for n, _ in m.headers]
    assert names[:5] == ["Via", "Max-Forwards", "To", "From", "Call-ID"]
    assert m.headers.get("CALL-id") == m.headers.get("i") == "843817637684230@998sdasdh09"
    assert canonical_name("cseq") == "CSeq" and canonical_name("www-authenticate") == (
        "WWW-Authenticate"
    )
    assert b"\r\nCall-ID: 843817637684230@998sdasdh09\r\n" in serialize(m)


def test_lists_are_split_but_commas_in_auth_headers_are_kept() -> None:
    m = reg()
    assert m.tokens("Supported") == ["path", "outbound", "gruu"]
    assert len(m.contacts) == 2
    assert m.headers.get_all("WWW-Authenticate") == ['Digest realm="a, b", nonce="x"']
    assert m.date.year == 2010


def test_contact_params_and_ipv6() -> None:
    a, b = reg().contacts
    assert a.expires == 3600 and a.q is None
    assert isinstance(b.uri, SipURI) and b.uri.host == "[2001:db8::9]" and b.uri.port == 5062
    assert b.q == 0.5


def test_star_contact() -> None:
    m = reg()
    m.headers.set("Contact", "*")
    assert m.contact_is_star and m.contacts == ()
    m.headers.add("Contact", "<sip:x@example.test>")
    with pytest.raises(ParseError):
        _ = m.contacts


def test_structured_values_are_cached_and_dropped_on_change() -> None:
    m = reg()
    assert m.from_ is m.from_
    m.headers.set("From", "<sip:dave@example.test>;tag=1")
    assert isinstance(m.from_.uri, SipURI) and m.from_.uri.user == "dave"


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError):
        Headers().add("Subject", "hi\r\nVia: evil")
    with pytest.raises(ValueError):
        Headers().add("Bad Name", "x")


def test_uri_case_rules() -> None:
    u = parse_uri("SIP:Alice@EXAMPLE.Test:5070;Transport=TCP;lr?Subject=hi%20there&x=y")
    assert isinstance(u, SipURI)
    assert (u.scheme, u.user, u.host, u.port) == ("sip", "Alice", "example.test", 5070)
    assert u.transport == "tcp" and u.has_param("lr")
    assert u.headers == (("Subject", "hi there"), ("x", "y"))
    assert str(u) == "sip:Alice@example.test:5070;transport=TCP;lr?Subject=hi%20there&x=y"
    assert u.aor == "sip:Alice@example.test"


def test_uri_forms() -> None:
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.test")
    assert isinstance(tel, SipURI) and tel.user == "+1-201-555-0123" and tel.host == ""
    assert str(tel) == "tel:+1-201-555-0123;phone-context=example.test"
    assert parse_uri("sips:[::1]") == SipURI("sips", "[::1]")
    assert parse_uri("urn:service:sos") == AbsoluteURI("urn", "service:sos")
    for bad in (
        "sip:",
        "sip:a@",
        "sip:host:99999",
        "sip:ho st",
        "nocolon",
        "sip:[::1",
        "sip:a@b:x",
    ):
        with pytest.raises(ParseError):
            parse_uri(bad)


def test_name_addr_forms() -> None:
    a = parse_name_addr('"A \\"quoted\\" name" <sip:a@example.test>;tag=x;foo="b;c"')
    assert a.display_name == 'A "quoted" name' and a.tag == "x" and a.param("foo") == "b;c"
    assert parse_name_addr(str(a)) == a
    b = parse_name_addr("sip:b@example.test;tag=9")
    assert b.tag == "9" and isinstance(b.uri, SipURI) and b.uri.params == ()
    for bad in ('"open <sip:a@b>', "<sip:a@b", "sip:a@b;;x", "Bad, Name <sip:a@b>"):
        with pytest.raises(ParseError):
            parse_name_addr(bad)


def test_via_fields_and_rport() -> None:
    v = parse_via("SIP / 2.0 / udp  [2001:db8::1] : 5070 ; branch = z9hG4bKx ; rport ; ttl=3")
    assert (v.transport, v.host, v.port, v.branch, v.ttl) == (
        "UDP",
        "[2001:db8::1]",
        5070,
        "z9hG4bKx",
        3,
    )
    assert v.has_rport and v.rport is None
    # RFC 3581 §4: received and rport filled in from the packet's source
    w = v.with_received("198.51.100.7", 40000)
    assert w.received == "198.51.100.7" and w.rport == 40000
    assert parse_via(str(w)) == w
    plain = Via("TCP", "host.example.test", None, (("branch", "z9hG4bKy"),))
    assert plain.with_received("host.example.test") == plain
    assert plain.with_received("192.0.2.9").received == "192.0.2.9"
    for bad in ("SIP/2.0/UDP", "SIP/2.0/UDP host;branch", "SIP/2.0/UDP host;ttl=999", "junk"):
        with pytest.raises(ParseError):
            parse_via(bad)


def test_auth_params_with_escapes() -> None:
    a = parse_auth('Digest username="bo\\"b", realm="example.test", nc=00000001, qop=auth')
    assert a.params == {
        "username": 'bo"b',
        "realm": "example.test",
        "nc": "00000001",
        "qop": "auth",
    }
    assert parse_auth(str(a)).params == a.params
    for bad in ("Digest a", 'Digest a="x', "Digest a=1 b=2", "Digest a=1, a=2"):
        with pytest.raises(ParseError):
            parse_auth(bad)


def test_make_response_copies_the_right_headers() -> None:
    m = reg()
    resp = make_response(m, 200, to_tag="srv1", headers=[("Contact", "<sip:c@d>;expires=60")])
    assert resp.status == 200 and resp.reason == "OK"
    assert resp.headers.get_all("Via") == m.headers.get_all("Via")
    assert resp.to.tag == "srv1" and resp.from_.tag == "456248"
    assert resp.call_id == m.call_id and resp.cseq == m.cseq
    assert make_response(m, 100, to_tag="srv1").to.tag is None
    again = parse_message(serialize(resp))
    assert isinstance(again, Response) and again.headers.get("Contact") == "<sip:c@d>;expires=60"


def test_serialize_sets_content_length_from_the_body() -> None:
    m = reg()
    m.body = b"hello"
    m.headers.add("Content-Length", "999")
    data = serialize(m)
    assert data.count(b"Content-Length") == 1 and b"Content-Length: 5\r\n" in data
    assert data.endswith(b"\r\n\r\nhello")


def test_bare_lf_and_missing_colon_are_rejected() -> None:
    for bad in (
        b"OPTIONS sip:a@b SIP/2.0\nVia: x\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nNoColon\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
        b"SIP/2.0 99 Too Small\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nab",
    ):
        with pytest.raises(ParseError):
            parse_message(bad)


# --------------------------------------------------------------------------- property

token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
user = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/%", min_size=1, max_size=12
)
host = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,2}", fullmatch=True)
text_value = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n", min_codepoint=32
    ),
    max_size=30,
).map(lambda s: s.strip(" \t"))


@st.composite
def sip_uris(draw: st.DrawFn) -> SipURI:
    params = tuple(
        (draw(token).lower(), draw(st.none() | token)) for _ in range(draw(st.integers(0, 3)))
    )
    return SipURI(
        draw(st.sampled_from(["sip", "sips"])),
        draw(host),
        draw(st.none() | user.map(lambda u: u.replace("%", "%25"))),
        None,
        draw(st.none() | st.integers(1, 65535)),
        params,
    )


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["REGISTER", "MESSAGE", "SUBSCRIBE", "OPTIONS"]) | token)
    uri = draw(sip_uris())
    h = Headers()
    for i in range(draw(st.integers(1, 3))):
        h.add(
            "Via",
            str(
                Via(
                    draw(st.sampled_from(["UDP", "TCP", "TLS"])),
                    draw(host),
                    None,
                    (("branch", f"z9hG4bK{draw(token)}{i}"),),
                )
            ),
        )
    h.add(
        "From",
        str(
            NameAddr(
                draw(sip_uris()), draw(st.none() | text_value.filter(bool)), (("tag", draw(token)),)
            )
        ),
    )
    h.add("To", str(NameAddr(draw(sip_uris()))))
    h.add("Call-ID", draw(token) + "@" + draw(host))
    h.add("CSeq", f"{draw(st.integers(0, 2**32 - 1))} {method}")
    h.add("Max-Forwards", str(draw(st.integers(0, 255))))
    for _ in range(draw(st.integers(0, 3))):
        h.add(
            draw(st.sampled_from(["Subject", "X-Extra", "Organization", "User-Agent"])),
            draw(text_value),
        )
    for _ in range(draw(st.integers(0, 2))):
        h.add(
            "Contact",
            str(NameAddr(draw(sip_uris()), None, (("expires", str(draw(st.integers(0, 9999)))),))),
        )
    body = draw(st.binary(max_size=64))
    return Request(method, str(uri), h, body)


@settings(max_examples=300, deadline=None)
@given(requests())
def test_serialize_parse_round_trip(req: Request) -> None:
    data = serialize(req)
    parsed = parse_message(data)
    assert isinstance(parsed, Request)
    parsed.validate()
    assert serialize(parsed) == data
    assert parse_message(serialize(parsed)) == parsed
    assert parsed.from_ == parse_name_addr(req.headers.get("From") or "")
    assert parsed.ruri == parse_uri(req.uri)


def test_replace_first_changes_only_the_top_via() -> None:
    h = Headers(
        [("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2")]
    )
    msg = Request("OPTIONS", "sip:x", h)
    assert msg.top_via.host == "a"
    h.replace_first("Via", str(msg.top_via.with_received("192.0.2.9", 5070)))
    assert msg.top_via.received == "192.0.2.9"  # the cached value was dropped
    assert [v.host for v in msg.vias] == ["a", "b"]
    assert msg.vias[1].received is None
