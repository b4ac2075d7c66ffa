"""Message framing for SIP transports (RFC 3261 §18.3, RFC 5626 §3.5.1).

Streams (TCP, TLS): `StreamFramer.feed(bytes)` returns the complete messages and keep-alive
pings found so far. Content-Length is mandatory on streams; the header section and the
body are capped. A message whose framing is sound but whose start line is bad comes out
as `Malformed` so the connection survives; a framing error raises `ParseError` and the
framer refuses further input, since the stream cannot be resynchronised.

Datagrams (UDP): `parse_datagram(bytes)` parses one message; Content-Length may be absent
(the body is the rest of the datagram), extra octets after the body are discarded, and a
body shorter than Content-Length is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from standard_edition.sip.message import (
    Headers,
    ParseError,
    Request,
    Response,
    build_message,
    parse_head,
)

__all__ = [
    "MAX_BODY",
    "MAX_HEADER",
    "KeepAlive",
    "Malformed",
    "StreamEvent",
    "StreamFramer",
    "parse_datagram",
]

MAX_HEADER = 16 * 1024
MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A double-CRLF ping (RFC 5626 §3.5.1): the transport answers with a single CRLF."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A correctly framed message that could not be parsed; answer `error.status` if set."""

    error: ParseError


StreamEvent: TypeAlias = Request | Response | KeepAlive | Malformed

_KEEPALIVE = KeepAlive()


def _content_length(headers: Headers, max_body: int) -> int | None:
    values = headers.get_all("Content-Length")
    if not values:
        return None
    if len(values) > 1:
        # RFC 4475 §3.3.9: conflicting lengths are a framing error
        raise ParseError("multiple Content-Length header fields", headers=headers)
    v = values[0]
    if not v.isdigit() or not v.isascii():
        # RFC 4475 §3.1.2.3: negative or non-numeric lengths
        raise ParseError("bad Content-Length", headers=headers)
    if len(v.lstrip("0")) > 10 or int(v) > max_body:
        raise ParseError("body too large", 413, phrase="Request Entity Too Large", headers=headers)
    return int(v)


class StreamFramer:
    """Cuts a TCP/TLS byte stream into SIP messages."""

    __slots__ = ("_body_len", "_buf", "_dead", "_head", "_max_body", "_max_header", "_scan")

    def __init__(self, max_header: int = MAX_HEADER, max_body: int = MAX_BODY) -> None:
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for the end of the header section
        self._head: tuple[str, Headers] | None = None
        self._body_len = 0
        self._max_header = max_header
        self._max_body = max_body
        self._dead: ParseError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[StreamEvent]:
        if self._dead is not None:
            raise self._dead
        self._buf += data
        events: list[StreamEvent] = []
        try:
            while self._step(events):
                pass
        except ParseError as exc:
            self._dead = exc
            self._buf.clear()
            raise
        return events

    def _step(self, events: list[StreamEvent]) -> bool:
        buf = self._buf
        if self._head is None:
            # RFC 3261 §7.5: CRLFs before a start line are ignored; RFC 5626 §3.5.1: a
            # double CRLF is a ping to be answered
            if buf[:1] == b"\r" or buf[:1] == b"\n":
                if buf[:4] == b"\r\n\r\n":
                    del buf[:4]
                    events.append(_KEEPALIVE)
                    return True
                if len(buf) < 4 and b"\r\n\r\n".startswith(buf):
                    return False  # may still become a ping
                if buf[:2] == b"\r\n":
                    del buf[:2]  # a lone CRLF (a pong, or noise) between messages
                    return True
                raise ParseError("bare CR or LF on stream")
            end = buf.find(b"\r\n\r\n", self._scan)
            if end < 0:
                if len(buf) > self._max_header:
                    raise ParseError("header section too large", 513, phrase="Message Too Large")
                self._scan = max(0, len(buf) - 3)
                return False
            if end > self._max_header:
                raise ParseError("header section too large", 513, phrase="Message Too Large")
            head = parse_head(bytes(buf[:end]))
            length = _content_length(head[1], self._max_body)
            if length is None:
                # RFC 3261 §18.3: on stream transports Content-Length MUST be present
                raise ParseError("Content-Length required on stream", headers=head[1])
            del buf[: end + 4]
            self._scan = 0
            self._head = head
            self._body_len = length
        if len(buf) < self._body_len:
            return False
        start, headers = self._head
        body = bytes(buf[: self._body_len])
        del buf[: self._body_len]
        self._head = None
        try:
            events.append(build_message(start, headers, body))
        except ParseError as exc:
            events.append(Malformed(exc))
        return True


def parse_datagram(data: bytes, max_body: int = MAX_BODY) -> Request | Response | KeepAlive:
    """Parse one UDP datagram (RFC 3261 §18.3); raise ParseError for a bad one."""
    i = 0
    while data.startswith(b"\r\n", i):
        i += 2
    if i == len(data) or not data.strip():
        return _KEEPALIVE  # CRLF keep-alives some clients send over UDP
    end = data.find(b"\r\n\r\n", i)
    if end < 0:
        if not data.endswith(b"\r\n"):
            raise ParseError("no end of header section")
        # a datagram ending after its last header line: no blank line, no body
        end = len(data) - 2
        body_start = len(data)
    else:
        body_start = end + 4
    start, headers = parse_head(data[i:end])
    length = _content_length(headers, max_body)
    available = len(data) - body_start
    if length is None:
        # RFC 3261 §18.3: without Content-Length the body runs to the end of the datagram
        length = available
    elif length > available:
        # RFC 4475 §3.1.2.2
        raise ParseError("body shorter than Content-Length", headers=headers)
    if length > max_body:
        raise ParseError("body too large", 413, phrase="Request Entity Too Large")
    # RFC 3261 §18.3, RFC 4475 §3.1.1.8: octets after the body are discarded
    return build_message(start, headers, data[body_start : body_start + length])
