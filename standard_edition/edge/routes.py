"""Which federation a partner domain is reached by: XMPP s2s or SIP (DESIGN §7).

The core has one `RemoteDelivery` (core/remote.py); this is it when both adapters exist. A
domain with an XMPP route — an `xmpp` entry in [federation.hosts], or DNS SRV records for
`_xmpp-server._tcp` — is reached over XMPP s2s; any other domain over SIP federation. A domain
in the map is decided by its entry alone (no DNS). The answer is kept for a while, so that a
message and the presence that follows it take the same way, and never both: everything for a
domain waits, in order, while its route is being found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.names import dns
from twisted.python import failure, log

from standard_edition.core.jid import JID
from standard_edition.core.model import Message, Presence
from standard_edition.core.remote import RemoteDelivery
from standard_edition.core.subscription import Kind
from standard_edition.sip.locate import host_entry

__all__ = ["FederationRoutes"]

ROUTE_TTL = 300.0  # seconds a DNS-found route is kept


class FederationRoutes:
    """RemoteDelivery over XMPP s2s or SIP federation, chosen per domain."""

    def __init__(
        self,
        reactor: Any,
        hosts: dict[str, Any],
        xmpp: RemoteDelivery | None,
        sip: RemoteDelivery | None,
        resolver: Any = None,
    ) -> None:
        self.reactor = reactor
        self.hosts = hosts
        self.xmpp = xmpp
        self.sip = sip
        self.resolver = resolver
        self._known: dict[str, tuple[str, float]] = {}  # domain -> (xmpp | sip, until)
        self._waiting: dict[str, list[Callable[[RemoteDelivery], None]]] = {}

    # -- deciding ------------------------------------------------------------------------------

    def route(self, domain: str) -> str | None:
        """ "xmpp" or "sip" if known now; None: DNS has to say."""
        if self.sip is None:
            return "xmpp"
        if self.xmpp is None:
            return "sip"
        entry = host_entry(self.hosts, domain)
        if entry is not None:
            return "xmpp" if "xmpp" in entry else "sip"
        known = self._known.get(domain)
        if known is not None and known[1] > self.reactor.seconds():
            return known[0]
        return None

    def _adapter(self, name: str) -> RemoteDelivery:
        adapter = self.xmpp if name == "xmpp" else self.sip
        assert adapter is not None
        return adapter

    def _with(self, domain: str, call: Callable[[RemoteDelivery], None]) -> None:
        name = self.route(domain)
        if name is not None:
            call(self._adapter(name))
            return
        waiting = self._waiting.get(domain)
        if waiting is not None:
            waiting.append(call)
            return
        self._waiting[domain] = [call]
        self._lookup(domain).addCallback(self._decided, domain)

    def decide(self, domain: str) -> Deferred[str]:
        """ "xmpp" or "sip" for `domain`, once known (in order with what waits for it)."""
        d: Deferred[str] = Deferred()
        self._with(domain, lambda adapter: d.callback("xmpp" if adapter is self.xmpp else "sip"))
        return d

    def _lookup(self, domain: str) -> Deferred[str]:
        from twisted.names import client

        resolver = self.resolver or client

        def found(answer: Any) -> str:
            targets = [
                r for r in answer[0] if r.type == dns.SRV and str(r.payload.target) not in ("", ".")
            ]
            return "xmpp" if targets else "sip"

        def none(f: failure.Failure) -> str:
            log.msg(f"federation: no XMPP route for {domain} ({f.getErrorMessage()}): SIP")
            return "sip"

        d: Deferred[Any] = resolver.lookupService(f"_xmpp-server._tcp.{domain}")
        return d.addCallbacks(found, none)

    def _decided(self, name: str, domain: str) -> None:
        self._known[domain] = (name, self.reactor.seconds() + ROUTE_TTL)
        log.msg(f"federation: {domain} is reached over {'XMPP' if name == 'xmpp' else 'SIP'}")
        adapter = self._adapter(name)
        for call in self._waiting.pop(domain, []):
            try:
                call(adapter)
            except Exception:
                log.err(None, f"federation: handing a stanza for {domain} over")

    # -- RemoteDelivery ------------------------------------------------------------------------

    def send_message(self, msg: Message) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        self._with(msg.to.domain, lambda a: a.send_message(msg).chainDeferred(done))
        return done

    def send_presence(self, sender: JID, to: JID, presence: Presence | None) -> None:
        self._with(to.domain, lambda a: a.send_presence(sender, to, presence))

    def send_subscription(self, sender: JID, to: JID, kind: Kind) -> None:
        self._with(to.domain, lambda a: a.send_subscription(sender, to, kind))

    def send_probe(self, sender: JID, to: JID) -> None:
        self._with(to.domain, lambda a: a.send_probe(sender, to))
