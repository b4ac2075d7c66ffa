"""Stream and datagram framing (RFC 3261 §18.3, RFC 5626 §3.5.1)."""

from __future__ import annotations

import pytest

from standard_edition.sip.framing import (
    MAX_HEADER,
    KeepAlive,
    Malformed,
    StreamFramer,
    parse_datagram,
)
from standard_edition.sip.message import ParseError, Request

OPTIONS = (
    b"OPTIONS sip:example.test SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKf1\r\n"
    b"From: <sip:a@example.test>;tag=1\r\n"
    b"To: <sip:example.test>\r\n"
    b"Call-ID: f1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 4\r\n\r\n"
    b"body"
)


def test_two_messages_in_one_segment_and_one_split_anywhere() -> None:
    framer = StreamFramer()
    events = framer.feed(OPTIONS + OPTIONS[:30])
    assert len(events) == 1 and isinstance(events[0], Request) and events[0].body == b"body"
    events = framer.feed(OPTIONS[30:])
    assert len(events) == 1 and framer.buffered == 0


def test_double_crlf_ping_is_reported_single_crlf_ignored() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []  # could still become a ping
    assert framer.feed(b"\r\n") == [KeepAlive()]
    events = framer.feed(b"\r\n" + OPTIONS)
    assert len(events) == 1 and isinstance(events[0], Request)
    assert framer.feed(b"\r\n\r\n\r\n\r\n") == [KeepAlive(), KeepAlive()]


def test_content_length_is_required_on_streams() -> None:
    data = OPTIONS.replace(b"Content-Length: 4\r\n", b"")
    with pytest.raises(ParseError, match="Content-Length"):
        StreamFramer().feed(data)


def test_header_section_limit() -> None:
    framer = StreamFramer()
    with pytest.raises(ParseError) as info:
        framer.feed(b"OPTIONS sip:x SIP/2.0\r\nX: " + b"a" * (MAX_HEADER + 10))
    assert info.value.status == 513


def test_body_limit() -> None:
    framer = StreamFramer(max_body=10)
    with pytest.raises(ParseError) as info:
        framer.feed(OPTIONS.replace(b"Content-Length: 4", b"Content-Length: 11"))
    assert info.value.status == 413


def test_malformed_start_line_does_not_kill_the_stream() -> None:
    framer = StreamFramer()
    bad = OPTIONS.replace(b"OPTIONS sip:example.test SIP/2.0", b"OPTIONS  sip:example.test SIP/2.0")
    events = framer.feed(bad + OPTIONS)
    assert isinstance(events[0], Malformed) and events[0].error.status == 400
    assert isinstance(events[1], Request)


def test_datagram_without_content_length_takes_the_rest() -> None:
    msg = parse_datagram(OPTIONS.replace(b"Content-Length: 4\r\n", b""))
    assert isinstance(msg, Request) and msg.body == b"body"


def test_datagram_truncates_extra_octets_and_rejects_short_bodies() -> None:
    msg = parse_datagram(OPTIONS + b"garbage")
    assert isinstance(msg, Request) and msg.body == b"body"
    with pytest.raises(ParseError) as info:
        parse_datagram(OPTIONS[:-1])
    assert info.value.status == 400


def test_datagram_keepalive() -> None:
    assert parse_datagram(b"\r\n\r\n") == KeepAlive()
    assert parse_datagram(b"\r\n") == KeepAlive()
