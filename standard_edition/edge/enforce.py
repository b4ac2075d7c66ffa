"""Policy changes reach live traffic at once (DESIGN §7).

The federation policy (core/federation.py) decides every new exchange; this module deals with
what is already under way when the admin changes it:

- A domain that stops being allowed: the adapters close its streams and connections
  (xmpp/s2s.py with a <policy-violation/> stream error, sip/federation.py) and rooms remove
  its occupants (xmpp/muc_federation.py). Here: our users' clients see that domain's
  contacts go offline, since nothing more will come from them.
- A user who loses federation access: each federated contact subscribed to the user's
  presence is told the user is offline (XMPP unavailable presence; a SIP partner's dialog gets
  a NOTIFY with a closed document and only closed documents after it), our SIP subscriptions
  for the user lapse (the partner's NOTIFYs then get 481), and the user's clients see their
  federated contacts go offline. Roster items stay: giving access back restores presence at
  the next change. Rooms follow the rule in xmpp/muc_federation.py.
- A user who loses outside access: their edge sessions end (XMPP with a <policy-violation/>
  stream error), their edge SIP registrations (restored ones too: the origin is stored) and
  the publications made through the edge are removed, their SIP subscriptions made over the
  edge end (NOTIFY terminated;reason=rejected, RFC 6665 §4.2.2) and the edge TLS connections
  they authenticated on are closed, registered or not. Every further request on the edge is
  refused anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.python import log

from standard_edition.core.jid import JID

if TYPE_CHECKING:
    from standard_edition.core.federation import FederationPolicy
    from standard_edition.sip.service import SipService

__all__ = ["PolicyEnforcement"]


class PolicyEnforcement:
    def __init__(self, router: Any, policy: FederationPolicy, sip: SipService | None) -> None:
        self.router = router
        self.policy = policy
        self.sip = sip
        self.refused_told: set[str] = set()  # domains whose contacts our clients saw go offline
        self.counters = {"policy_sessions_ended": 0, "policy_presence_withdrawn": 0}
        policy.on_refused.append(self.domains_changed)
        policy.on_user_changed.append(self.user_changed)

    # -- domains -------------------------------------------------------------------------------

    def domains_changed(self, _: str) -> None:
        """Contacts in a domain no longer allowed go offline for our users' clients."""
        router = self.router
        told: set[str] = set()
        for ep in list(router.sessions):
            user = ep.jid.local
            if user is None or ep.presence is None:
                continue
            for item in router.rosters.items(user):
                domain = item.contact.domain
                if not router.is_remote(item.contact) or not item.state.has_to:
                    continue
                if self.policy.domain_allowed(domain):
                    continue
                told.add(domain)
                if domain not in self.refused_told:
                    ep.deliver_presence(item.contact.bare, None)
        # a domain allowed again is told again when it is refused later
        still = {d for d in self.refused_told if not self.policy.domain_allowed(d)}
        if told - self.refused_told:
            names = ", ".join(sorted(told - self.refused_told))
            log.msg(f"policy: contacts in {names} shown offline to our users")
        self.refused_told = told | still

    # -- users ---------------------------------------------------------------------------------

    def user_changed(self, user: str, changes: dict[str, bool]) -> None:
        if changes.get("federation_access") is False:
            self.federation_withdrawn(user)
        if changes.get("outside_access") is False:
            self.outside_withdrawn(user)

    def federation_withdrawn(self, user: str) -> None:
        router = self.router
        remote = router.remote
        me = JID(user, router.domain, None)
        eps = router.sessions.available(user)
        for contact in router.rosters.subscribers(user):
            if not router.is_remote(contact) or not self.policy.domain_allowed(contact.domain):
                continue
            if remote is not None:
                self.counters["policy_presence_withdrawn"] += 1
                # the last word to each federated subscriber: offline (RFC 6121 §4.5.2)
                for ep in eps:
                    remote.send_presence(ep.jid, contact, None)
                if not eps:
                    remote.send_presence(me, contact, None)
        for item in router.rosters.items(user):
            if router.is_remote(item.contact) and item.state.has_to:
                for ep in eps:
                    ep.deliver_presence(item.contact.bare, None)
        fed = self.sip.federation if self.sip is not None else None
        if fed is not None:
            fed.user_withdrawn(user)
        log.msg(f"policy: {user} lost federation access; federated contacts see them offline")

    def outside_withdrawn(self, user: str) -> None:
        router = self.router
        flows = []
        for ep in router.sessions.of_user(user):
            if getattr(ep, "origin", "internal") != "edge":
                continue
            binding = getattr(ep, "binding", None)
            if binding is not None and binding.flow is not None:
                flows.append(binding.flow)
            self.counters["policy_sessions_ended"] += 1
            router.unbind(ep)
            ep.close("policy-violation", "outside access withdrawn")
        if self.sip is not None:
            flows += self.sip.presence.end_edge_watches(user)
            # and every edge connection the user authenticated on, registered there or not
            flows += [s.peer for s in self.sip.edge_streams_of(user)]
            still_used = {b.flow for b in self.sip.registrar.all() if b.flow is not None}
            for flow in set(flows) - still_used:
                stream = self.sip.edge_stream(flow)
                if stream is not None:
                    stream.close()
        log.msg(f"policy: {user} lost outside access; their edge sessions ended")

    def status(self) -> dict[str, Any]:
        return dict(self.counters)
