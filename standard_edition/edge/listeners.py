"""The edge listeners (DESIGN §7): remote c2s (STARTTLS and direct TLS) and XMPP s2s.

They run in the same process and on the same core as the LAN listeners; what differs is the
origin their sessions carry ("edge"), the limits of edge/limits.py, and that federation (the
s2s listener and the outgoing streams) exists only when [edge] s2s is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from standard_edition import tls
from standard_edition.config import Config
from standard_edition.core.federation import FederationPolicy
from standard_edition.edge.enforce import PolicyEnforcement
from standard_edition.edge.limits import EdgeGuard, EdgeLimits
from standard_edition.edge.routes import FederationRoutes
from standard_edition.sip.edge import EdgeServerTLS, EdgeSipFactory
from standard_edition.sip.federation import SipFederation
from standard_edition.xmpp.c2s import C2SContext, C2SFactory
from standard_edition.xmpp.s2s import InboundFactory, S2SService

if TYPE_CHECKING:
    from standard_edition.sip.service import SipService


@dataclass
class Edge:
    policy: FederationPolicy
    guard: EdgeGuard
    s2s: S2SService | None = None
    sip: SipFederation | None = None
    enforcement: PolicyEnforcement | None = None

    def status(self) -> dict[str, Any]:
        return {
            "limits": self.guard.status(),
            "policy": None if self.enforcement is None else self.enforcement.status(),
            "federation": None if self.s2s is None else self.s2s.status(),
            "sip_federation": None if self.sip is None else self.sip.status(),
        }

    def stop(self) -> None:
        if self.s2s is not None:
            self.s2s.stop()
        if self.sip is not None:
            self.sip.stop()


def start_edge(
    reactor: Any,
    cfg: Config,
    router: Any,
    policy: FederationPolicy,
    make_context: Callable[..., C2SContext],
    listen: Callable[..., None],
    tls_options: Any,
    certificate: tuple[Path, Path],
    sip: SipService | None = None,
) -> Edge:
    """Open the [edge] listeners; `make_context(direct_tls, origin=, edge=)` builds a c2s
    context like the LAN's, `listen(name, addr, factory, tls_options)` opens a port; `sip` is
    the SIP service whose remote users and federation edge.sip_tls serves."""
    guard = EdgeGuard(EdgeLimits(**cfg.edge_limits), reactor.seconds)
    edge = Edge(policy, guard)
    # policy changes reach open sessions and streams at once
    edge.enforcement = PolicyEnforcement(router, policy, sip)
    resolver = dns_resolver(cfg)
    if cfg.edge["c2s"]:
        ctx = make_context(False, origin="edge", edge=guard)
        for addr in cfg.edge["c2s"]:
            listen("edge.c2s", addr, C2SFactory(ctx))
    if cfg.edge["c2s_tls"]:
        ctx = make_context(True, origin="edge", edge=guard)
        for addr in cfg.edge["c2s_tls"]:
            listen("edge.c2s_tls", addr, C2SFactory(ctx), tls_options)
    if cfg.edge["s2s"]:
        cert, key = certificate
        first = cfg.edge["s2s"][0].host
        s2s = S2SService(
            reactor,
            router,
            cfg.domain,
            policy,
            lambda: tls.server_tls_options(cert, key),
            cfg.federation_hosts,
            connect_timeout=cfg.federation_connect_timeout,
            idle_timeout=cfg.federation_idle_timeout,
            guard=guard,
            max_stanza_size=cfg.max_stanza_size,
            # outgoing streams leave from the edge address too (not the LAN one)
            bind_host=None if first in ("*", "::", "0.0.0.0", "localhost") else first,
            resolver=resolver,
        )
        edge.s2s = s2s
        router.remote = s2s
        for addr in cfg.edge["s2s"]:
            listen("edge.s2s", addr, InboundFactory(s2s))
    if cfg.edge["sip_tls"] and sip is not None:
        edge.sip = _start_sip_edge(reactor, cfg, sip, policy, guard, listen, certificate, resolver)
        # DESIGN §7: a domain with an XMPP route goes over s2s, any other over SIP
        routes = FederationRoutes(
            reactor, cfg.federation_hosts, edge.s2s, edge.sip, resolver=resolver
        )
        router.remote = routes
        if edge.s2s is not None:
            edge.s2s.routes = routes  # an iq for a partner reached over SIP is answered here
    return edge


def dns_resolver(cfg: Config) -> Any:
    """A Twisted Names resolver asking the [federation] dns servers; None: the system's."""
    if not cfg.federation_dns:
        return None
    from twisted.names import client

    return client.Resolver(servers=[(a.host, a.port) for a in cfg.federation_dns])


def _start_sip_edge(
    reactor: Any,
    cfg: Config,
    sip: SipService,
    policy: FederationPolicy,
    guard: EdgeGuard,
    listen: Callable[..., None],
    certificate: tuple[Path, Path],
    resolver: Any,
) -> SipFederation:
    """SIP over TLS on the outside address: remote users (digest) and partners' servers (a
    client certificate for their domain, asked for but not required in the handshake)."""
    cert, key = certificate
    first = cfg.edge["sip_tls"][0]
    any_host = first.host in ("*", "::", "0.0.0.0", "localhost")
    sip.edge_guard = guard
    sip.policy = policy
    fed = SipFederation(
        reactor,
        sip,
        policy,
        lambda: tls.server_tls_options(cert, key),
        cfg.federation_hosts,
        # our Via and Contact name the edge address (the domain when it listens everywhere)
        sent_by=(cfg.domain if any_host else first.host, first.port),
        connect_timeout=cfg.federation_connect_timeout,
        bind_host=None if any_host else first.host,
        resolver=resolver,
    )
    fed.guard = guard
    sip.federation = fed
    server_tls = fed.server_tls = EdgeServerTLS(tls.server_tls_options(cert, key))
    for addr in cfg.edge["sip_tls"]:
        listen("edge.sip_tls", addr, EdgeSipFactory(sip.transports, guard), server_tls)
    return fed
