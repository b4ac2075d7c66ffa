"""SIP transports: the thin Twisted shells around the sans-I/O framing (RFC 3261 §18).

UDP datagrams and TCP/TLS streams are cut into messages here and handed, with the `Peer` they
came from, to a `Core` (the transaction user side lives in `service.py`). Sending goes the
other way: `Transports.send(peer, bytes)` writes to the UDP socket, to the open connection
for that peer (connection reuse, RFC 3261 §18.1.1 / §18.2.2), or opens a new TCP connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python import failure, log

from standard_edition.sip.framing import KeepAlive, Malformed, StreamFramer, parse_datagram
from standard_edition.sip.message import ParseError, Request, Response

__all__ = ["Core", "Peer", "SipDatagram", "SipStream", "SipStreamFactory", "Transports"]

IDLE_TIMEOUT = 15 * 60.0  # seconds a stream may stay silent (RFC 5626 keep-alives are more often)
MAX_CONNECTIONS_PER_HOST = 64


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes to: transport (UDP, TCP, TLS), host and port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"

    def __str__(self) -> str:
        return f"{self.transport.lower()}:{self.host}:{self.port}"


class Core(Protocol):
    """What the transports hand their messages to."""

    def received(self, msg: Request | Response, peer: Peer) -> None: ...
    def malformed(self, error: ParseError, peer: Peer) -> None: ...
    def flow_closed(self, peer: Peer) -> None: ...


class SipDatagram(DatagramProtocol):
    """One UDP socket; each datagram is one message (RFC 3261 §18.3)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        peer = Peer("UDP", addr[0], addr[1])
        try:
            msg = parse_datagram(data)
        except ParseError as e:
            self.core.malformed(e, peer)
            return
        if isinstance(msg, KeepAlive):
            return
        self.core.received(msg, peer)

    def write(self, data: bytes, peer: Peer) -> None:
        if self.transport is not None:
            self.transport.write(data, (peer.host, peer.port))


class SipStream(TwistedProtocol):
    """One TCP or TLS connection, in either direction."""

    def __init__(self, transports: Transports, name: str) -> None:
        self.transports = transports
        self.name = name  # TCP | TLS
        self.framer = StreamFramer()
        self.peer: Peer | None = None
        self.idle: Any = None
        self.closed = False

    def connectionMade(self) -> None:
        p = self.transport.getPeer()
        self.peer = Peer(self.name, p.host, p.port)
        self.transports.opened(self)
        self._touch()

    def _touch(self) -> None:
        reactor = self.transports.reactor
        if self.idle is not None and self.idle.active():
            self.idle.reset(IDLE_TIMEOUT)
        else:
            self.idle = reactor.callLater(IDLE_TIMEOUT, self.transport.loseConnection)

    def dataReceived(self, data: bytes) -> None:
        assert self.peer is not None
        self._touch()
        try:
            events = self.framer.feed(data)
        except ParseError as e:
            # the stream cannot be resynchronised: answer if possible, then hang up
            self.transports.core.malformed(e, self.peer)
            self.transport.loseConnection()
            return
        for ev in events:
            if self.closed:
                return
            if isinstance(ev, KeepAlive):
                self.transport.write(b"\r\n")  # RFC 5626 §3.5.1: the pong
            elif isinstance(ev, Malformed):
                self.transports.core.malformed(ev.error, self.peer)
            else:
                self.transports.core.received(ev, self.peer)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def connectionLost(self, reason: failure.Failure | None = None) -> None:
        self.closed = True
        if self.idle is not None and self.idle.active():
            self.idle.cancel()
        if self.peer is not None:
            self.transports.lost(self)


class SipStreamFactory(Factory):
    noisy = False

    def __init__(self, transports: Transports, name: str) -> None:
        self.transports = transports
        self.name = name

    def buildProtocol(self, addr: Any) -> SipStream | None:
        host = getattr(addr, "host", "")
        if self.transports.count_from(host) >= MAX_CONNECTIONS_PER_HOST:
            return None  # Twisted closes the connection
        return SipStream(self.transports, self.name)


class Transports:
    """Every socket of the SIP service; sends bytes to a `Peer` over the right one."""

    def __init__(self, reactor: Any, core: Core) -> None:
        self.reactor = reactor
        self.core = core
        self.udp: list[tuple[SipDatagram, Any]] = []  # protocol, listening port
        self.stream_ports: dict[str, Any] = {}  # TCP | TLS -> a listening port (for Via)
        self.connections: dict[Peer, SipStream] = {}
        self._connecting: dict[Peer, defer.Deferred[SipStream]] = {}
        self.on_error: Callable[[Peer, str], None] | None = None

    # -- bookkeeping -----------------------------------------------------------------------

    def opened(self, stream: SipStream) -> None:
        assert stream.peer is not None
        self.connections[stream.peer] = stream

    def lost(self, stream: SipStream) -> None:
        assert stream.peer is not None
        if self.connections.get(stream.peer) is stream:
            del self.connections[stream.peer]
        self.core.flow_closed(stream.peer)

    def count_from(self, host: str) -> int:
        return sum(1 for p in self.connections if p.host == host)

    def connected(self, peer: Peer) -> bool:
        s = self.connections.get(peer)
        return s is not None and not s.closed

    def sent_by(self, transport: str) -> tuple[str, int]:
        """Our address for a Via of this transport."""
        if transport == "UDP" and self.udp:
            h = self.udp[0][1].getHost()
            return h.host, h.port
        port = self.stream_ports.get(transport) or self.stream_ports.get("TCP")
        if port is not None:
            h = port.getHost()
            return h.host, h.port
        if self.udp:
            h = self.udp[0][1].getHost()
            return h.host, h.port
        return "127.0.0.1", 5060

    # -- sending ---------------------------------------------------------------------------

    def send(self, peer: Peer, data: bytes) -> defer.Deferred[None]:
        """Write `data` to `peer`; the Deferred fails when it cannot be sent."""
        if peer.transport == "UDP":
            if not self.udp:
                return defer.fail(ConnectionError("no UDP socket"))
            try:
                self.udp[0][0].write(data, peer)
            except OSError as e:
                return defer.fail(e)
            return defer.succeed(None)
        stream = self.connections.get(peer)
        if stream is not None and not stream.closed:
            stream.write(data)
            return defer.succeed(None)
        if peer.transport != "TCP":
            # a TLS flow that is gone cannot be reopened without the peer's certificate name
            return defer.fail(ConnectionError(f"no open {peer.transport} connection to {peer}"))
        d = self._connect(peer)
        d.addCallback(lambda s: s.write(data))
        return d

    def reachable(self, peer: Peer) -> defer.Deferred[None]:
        """Fires once a request to `peer` can be written: at once for UDP and open flows, after
        connecting for TCP; fails when no connection can be made (a closed TLS flow cannot be
        reopened)."""
        if peer.transport == "UDP" or self.connected(peer):
            return defer.succeed(None)
        if peer.transport != "TCP":
            return defer.fail(ConnectionError(f"no open {peer.transport} connection to {peer}"))
        return self._connect(peer).addCallback(lambda _: None)

    def _connect(self, peer: Peer) -> defer.Deferred[SipStream]:
        pending = self._connecting.get(peer)
        if pending is not None:
            out: defer.Deferred[SipStream] = defer.Deferred()
            pending.addCallback(lambda s: (out.callback(s), s)[1])
            pending.addErrback(lambda f: (out.errback(f), f)[1])
            return out
        stream = SipStream(self, "TCP")
        ep = TCP4ClientEndpoint(self.reactor, peer.host, peer.port, timeout=5)
        d: defer.Deferred[SipStream] = connectProtocol(ep, stream)
        self._connecting[peer] = d

        def done(result: Any) -> Any:
            self._connecting.pop(peer, None)
            return result

        d.addBoth(done)
        return d

    def close_all(self) -> None:
        for stream in list(self.connections.values()):
            stream.transport.loseConnection()


def log_send_failure(f: failure.Failure, peer: Peer) -> None:
    log.msg(f"sip: cannot send to {peer}: {f.getErrorMessage()}")
