"""SIP over TLS on the edge (DESIGN §7): the connections of remote users and federation peers.

One listener serves both. The TLS handshake asks for a client certificate without requiring
one (s2s.ServerTLS); what the certificate proves is checked in Python, per domain, when a
request names one (`proves`), with the same rules as XMPP s2s (a public CA, or the certificate
the admin pinned with `se-ctl federation trust`). A connection without such a certificate is a
remote user's and must log in with digest. The edge limits (edge/limits.py) count connections
per address and requests per connection here; the logins are counted by the service.

`FederationStream` is the connection we open to a partner: our certificate as the client's,
the partner's checked for its domain once the handshake is done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLServerConnectionCreator
from twisted.python import failure
from zope.interface import implementer

from standard_edition.edge.limits import EdgeGuard, TokenBucket
from standard_edition.sip.transport import SipStream, SipStreamFactory, Transports
from standard_edition.xmpp.dialback import certificate_identity
from standard_edition.xmpp.s2s import ServerTLS, _peer_chain

if TYPE_CHECKING:
    from standard_edition.sip.federation import Link

__all__ = ["EdgeServerTLS", "EdgeSipFactory", "EdgeSipStream", "FederationStream"]


@implementer(IOpenSSLServerConnectionCreator)
class EdgeServerTLS:
    """The edge listener's TLS: our certificate, the client's asked for (not required). A
    reloaded certificate (SIGHUP) serves the connections accepted after it."""

    def __init__(self, options: Any) -> None:
        self.current = ServerTLS(options)

    def replace(self, options: Any) -> None:
        self.current = ServerTLS(options)

    def serverConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        return self.current.serverConnectionForTLS(tls_protocol)


@implementer(IHandshakeListener)
class EdgeSipStream(SipStream):
    """An inbound TLS connection on the edge listener."""

    origin = "edge"

    def __init__(self, transports: Transports, guard: EdgeGuard | None) -> None:
        super().__init__(transports, "TLS")
        self.guard = guard
        self.host = ""
        self.refused = False
        self.bucket: TokenBucket | None = None
        if guard is not None:
            rate = guard.limits.stanzas_per_second
            self.bucket = TokenBucket(rate, rate * 5, guard.clock)
        # the partner domain this connection belongs to, once its certificate proved it
        self.domain: str | None = None
        # a partner's requests per second (sip/federation.py), made at its first request
        self.federation_bucket: TokenBucket | None = None
        self._proofs: dict[str, bool] = {}
        # the accounts that authenticated a request here: losing outside access closes it
        self.users: set[str] = set()

    def connectionMade(self) -> None:
        self.host = str(getattr(self.transport.getPeer(), "host", "?"))
        if self.guard is not None and not self.guard.connection_opened(self.host):
            self.refused = self.closed = True
            self.transport.abortConnection()
            return
        super().connectionMade()

    def handshakeCompleted(self) -> None:
        """The certificate, if any, is judged when a request names a domain."""

    def dataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().dataReceived(data)

    def connectionLost(self, reason: failure.Failure | None = None) -> None:
        if self.refused:
            return
        if self.guard is not None:
            self.guard.connection_closed(self.host)
        super().connectionLost(reason)

    def take_request(self) -> bool:
        """False: this connection sends requests faster than the edge allows."""
        return self.bucket is None or self.bucket.take()

    def proves(self, domain: str, pinned_pem: str | None) -> bool:
        """Whether the peer's certificate is valid for `domain` (CA-valid, or pinned)."""
        if domain not in self._proofs:
            chain = _peer_chain(self.transport)
            self._proofs[domain] = certificate_identity(chain, domain, pinned_pem) is not None
        return self._proofs[domain]

    def close(self) -> None:
        if not self.closed:
            self.transport.loseConnection()


class EdgeSipFactory(SipStreamFactory):
    def __init__(self, transports: Transports, guard: EdgeGuard | None) -> None:
        super().__init__(transports, "TLS")
        self.guard = guard

    def buildProtocol(self, addr: Any) -> SipStream | None:
        p = super().buildProtocol(addr)
        if p is None:
            return None
        return EdgeSipStream(self.transports, self.guard)


class FederationStream(EdgeSipStream):
    """A connection we open to a partner's SIP federation server (mutual TLS)."""

    def __init__(self, transports: Transports, link: Link) -> None:
        super().__init__(transports, None)
        self.link = link  # its domain becomes ours only once the certificate proved it

    def handshakeCompleted(self) -> None:
        self.link.federation.handshake_done(self)
