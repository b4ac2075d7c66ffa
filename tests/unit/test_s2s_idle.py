"""Idle s2s streams (xmpp/s2s.py): closed cleanly after idle_timeout without a stanza, with
whitespace keepalives accepted but not counted; a closing stream still reads what the peer
sent before it saw our closing tag (RFC 6120 §4.4). Bytes in, bytes out, on a task.Clock."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from standard_edition.xmpp.s2s import Inbound, Outbound, S2SService
from standard_edition.xmpp.xml import STREAM_CLOSE

PEER_HEADER = (
    b"<?xml version='1.0'?><stream:stream from='b.test' to='a.test' version='1.0' "
    b"xmlns='jabber:server' xmlns:db='jabber:server:dialback' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>"
)
MESSAGE = b"<message from='erin@b.test' to='alice@a.test' type='chat'><body>hi</body></message>"


class Policy:
    def __init__(self) -> None:
        self.on_refused: list[Any] = []

    def domain_allowed(self, domain: str) -> bool:
        return domain == "b.test"

    def pinned(self, domain: str) -> None:
        return None


def service(clock: Clock, idle: float) -> tuple[S2SService, list[ET.Element]]:
    svc = S2SService(clock, None, "a.test", Policy(), lambda: None, {}, idle_timeout=idle)
    got: list[ET.Element] = []
    svc.incoming = lambda stream, el: got.append(el)  # type: ignore[method-assign]
    return svc, got


def authenticated_inbound(svc: S2SService) -> tuple[Inbound, StringTransport]:
    p = Inbound(svc)
    t = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.3", 40000))
    p.makeConnection(t)
    p.secure = True  # TLS itself is covered by the integration tests
    p.dataReceived(PEER_HEADER)
    p._authenticated("b.test", "test")
    t.clear()
    return p, t


def test_inbound_stream_closes_after_idle_timeout_despite_whitespace() -> None:
    clock = Clock()
    svc, _ = service(clock, 5)
    p, t = authenticated_inbound(svc)
    for _ in range(4):
        clock.advance(1.2)
        p.dataReceived(b" \n")  # keepalives: fine, but not traffic
    assert t.value() == b""
    clock.advance(0.3)
    assert t.value() == STREAM_CLOSE  # a clean close, no stream error
    assert svc.counters["s2s_idle_closed"] == 1
    assert not t.disconnecting  # waits for the peer's closing tag
    p.dataReceived(b"</stream:stream>")
    assert t.disconnecting


def test_stanzas_keep_an_inbound_stream_open() -> None:
    clock = Clock()
    svc, got = service(clock, 5)
    p, t = authenticated_inbound(svc)
    for _ in range(3):
        clock.advance(4)
        p.dataReceived(MESSAGE)
    assert len(got) == 3 and t.value() == b""
    clock.advance(5)
    assert t.value() == STREAM_CLOSE


def test_a_closing_stream_still_reads_what_the_peer_sent_before_it_saw_our_close() -> None:
    clock = Clock()
    svc, got = service(clock, 5)
    p, t = authenticated_inbound(svc)
    clock.advance(5)
    assert t.value() == STREAM_CLOSE
    p.dataReceived(MESSAGE + b"</stream:stream>")
    assert len(got) == 1 and t.disconnecting
    assert t.value() == STREAM_CLOSE  # nothing more written


def test_no_idle_timeout_keeps_streams_open() -> None:
    clock = Clock()
    svc, _ = service(clock, 0)
    _, t = authenticated_inbound(svc)
    clock.advance(86_400)
    assert t.value() == b""


def test_outbound_stream_closes_when_idle_and_the_next_stanza_needs_a_new_one() -> None:
    clock = Clock()
    svc, _ = service(clock, 5)
    out = Outbound(svc, "b.test")
    svc.outgoing[("a.test", "b.test")] = out
    t = StringTransport()

    class Proto:  # the negotiated stream, as far as Outbound sees it
        transport = t
        closing = False
        authenticated = header_in = True

        def close(self, shutdown: bool = False, error: str | None = None) -> None:
            self.closing = True
            t.write(STREAM_CLOSE)

    out.protocol = Proto()  # type: ignore[assignment]
    out.ready()
    clock.advance(3)
    out.queue(MESSAGE, None)
    clock.advance(4)
    assert out.state == "ready" and t.value() == MESSAGE
    clock.advance(1.5)
    assert out.finished and t.value() == MESSAGE + STREAM_CLOSE
    assert ("a.test", "b.test") not in svc.outgoing
    assert svc.counters["s2s_idle_closed"] == 1 and svc.counters["s2s_bounced"] == 0
