"""The text a MESSAGE carries: text/plain, or the text/plain inside message/cpim (RFC 3862)."""

from __future__ import annotations

from standard_edition.sip.message import Headers, Request
from standard_edition.sip.service import _text_of


def message(ctype: str, body: bytes) -> Request:
    return Request("MESSAGE", "sip:a@example.test", Headers([("Content-Type", ctype)]), body)


def test_plain_text_with_its_charset() -> None:
    assert _text_of(message("text/plain; charset=ISO-8859-1", "grüß".encode("latin-1"))) == "grüß"
    assert _text_of(message("text/plain", "grüß".encode())) == "grüß"


def test_cpim_wrapped_text_is_unwrapped() -> None:
    body = (
        b"From: <sip:carol@example.test>\r\nTo: <sip:alice@example.test>\r\n"
        b"DateTime: 2024-01-01T10:00:00Z\r\n\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello from cpim"
    )
    assert _text_of(message("message/cpim", body)) == "hello from cpim"


def test_other_types_are_not_text() -> None:
    assert _text_of(message("application/im-iscomposing+xml", b"<x/>")) is None
    assert _text_of(message("message/cpim", b"no blank line")) is None
