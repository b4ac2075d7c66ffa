"""The router's half that faces other domains: federation, protocol-free.

A federation adapter (xmpp/s2s.py) implements `RemoteDelivery` for what leaves this domain and
calls the `remote_*` methods for what arrives. Every exchange, both ways, first asks the one
federation policy (core/federation.py): the domain must be allowed and the local user must
have federation access. RFC 6121 across domains: §3 subscriptions (requests from other domains
always wait for the user, DESIGN §4), §4.3 probes, §4.2/§4.4 presence broadcast.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.python import log

from standard_edition.core.jid import JID
from standard_edition.core.model import Message, Presence, Undeliverable
from standard_edition.core.subscription import Kind

if TYPE_CHECKING:
    from standard_edition.core.federation import FederationPolicy
    from standard_edition.core.sessions import Endpoint


class RemoteDelivery(Protocol):
    """What the core hands to another domain's server."""

    # fires once the stanza left on an authenticated stream; fails with Undeliverable
    # (remote-server-not-found, remote-server-timeout) when the domain cannot be reached
    def send_message(self, msg: Message) -> Deferred[None]: ...
    def send_presence(self, sender: JID, to: JID, presence: Presence | None) -> None: ...
    def send_subscription(self, sender: JID, to: JID, kind: Kind) -> None: ...
    def send_probe(self, sender: JID, to: JID) -> None: ...


class FederationRouting:
    """Mixed into the Router: routing to and from other domains."""

    domain: str
    remote: RemoteDelivery | None
    federation: FederationPolicy | None
    counters: dict[str, int]
    rosters: Any
    sessions: Any
    presence: Any
    archive: Any
    history: Any
    url_filter: Any

    # provided by the Router
    def local_user(self, jid: JID) -> str | None: ...  # pragma: no cover
    def render(
        self, owner: str, ep: Endpoint, watcher: JID
    ) -> Presence | None: ...  # pragma: no cover
    def route_message(self, msg: Message) -> Deferred[None]: ...  # pragma: no cover
    def _inbound_subscription(
        self, user: str, sender: JID, kind: Kind
    ) -> None: ...  # pragma: no cover

    def is_remote(self, jid: JID) -> bool:
        """Another domain's address (our conference. and other subdomains are ours)."""
        d = jid.domain
        return d != self.domain and not d.endswith("." + self.domain)

    def may_federate(self, user: str | None, domain: str) -> bool:
        if self.remote is None or self.federation is None:
            return False
        return self.federation.may_federate(user, domain)

    # -- out -----------------------------------------------------------------------------------

    def _route_remote(self, msg: Message) -> Deferred[None]:
        sender_user = self.local_user(msg.sender)
        if self.remote is None:
            raise Undeliverable("remote-server-not-found", f"no route to {msg.to.domain}")
        if not self.may_federate(sender_user, msg.to.domain):
            raise Undeliverable(
                "not-allowed", f"messages to {msg.to.domain} are not allowed by the admin"
            )
        msg = self.url_filter.filter_message(msg)  # IM URL filter (core/url_filter.py)
        self.counters["federated_out"] = self.counters.get("federated_out", 0) + 1
        archived = self.archive.record(msg) if self.archive is not None else None
        chat = sender_user is not None and msg.type in ("chat", "normal") and msg.body is not None
        if chat and self.history is not None:
            self.history.record(sender_user, msg.to, True, msg, time.time())
        if chat:
            for ep in self.sessions.available(sender_user):
                if ep.jid != msg.sender and getattr(ep, "carbons", False):
                    ep.deliver_carbon(msg, "sent")  # XEP-0280 §7
        remote = self.remote
        if archived is not None:
            return archived.addCallback(lambda _: remote.send_message(msg))
        return remote.send_message(msg)

    def _presence_out(self, sender: JID, to: JID, p: Presence | None) -> None:
        """One endpoint's presence to an address in another domain, if allowed."""
        if self.remote is not None and self.may_federate(sender.local, to.domain):
            self.remote.send_presence(sender, to, p)

    def _subscription_out(self, user: str, contact: JID, kind: Kind) -> None:
        """RFC 6121 §3: the user's subscription stanza to a contact in another domain."""
        if self.remote is None or not self.may_federate(user, contact.domain):
            return
        me = JID(user, self.domain, None)
        self.remote.send_subscription(me, contact, kind)
        if kind is Kind.SUBSCRIBED:
            self._send_presence_remote(user, contact)  # §3.1.5
        elif kind is Kind.UNSUBSCRIBED:
            self._send_presence_remote(user, contact, gone=True)  # §3.2.2

    def _send_presence_remote(self, user: str, contact: JID, gone: bool = False) -> None:
        for ep in self.sessions.available(user):
            shown = None if gone else self.render(user, ep, contact)
            self._presence_out(ep.jid, contact, shown)

    def _probe_out(self, ep: Endpoint, contact: JID) -> None:
        """RFC 6121 §4.3.1: the probe goes from the user's bare address."""
        if self.remote is not None and self.may_federate(ep.jid.local, contact.domain):
            self.remote.send_probe(ep.jid.bare, contact.bare)

    # -- in ------------------------------------------------------------------------------------

    def _inbound_user(self, sender: JID, to: JID) -> str | None:
        user = self.local_user(to)
        if user is None or not self.may_federate(user, sender.domain):
            return None
        return user

    def remote_message(self, msg: Message) -> Deferred[None]:
        """A message from another domain; raises Undeliverable with the error to bounce."""
        if self._inbound_user(msg.sender, msg.to) is None:
            # unknown user, or one without federation access: nothing about them leaks
            raise Undeliverable("service-unavailable")
        self.counters["federated_in"] = self.counters.get("federated_in", 0) + 1
        return self.route_message(msg)

    def remote_presence(self, sender: JID, to: JID, p: Presence | None) -> None:
        user = self._inbound_user(sender, to)
        if user is None or self.presence.is_blocked(user, sender):
            return
        state = self.rosters.state(user, sender.bare)
        if not state.has_to and p is not None and to.resource is None:
            return  # §4.2.3 / §4.4.3: broadcast presence only from contacts we subscribed to
        if to.resource is None:
            for ep in self.sessions.available(user):
                ep.deliver_presence(sender, p)
        else:
            target = self.sessions.get(to)
            if target is not None:
                target.deliver_presence(sender, p)

    def remote_subscription(self, sender: JID, to: JID, kind: Kind) -> None:
        user = self._inbound_user(sender, to)
        if user is None:
            return
        # DESIGN §4: never approved on the user's behalf (other domain), the user decides
        self._inbound_subscription(user, sender.bare, kind)

    def remote_probe(self, sender: JID, to: JID) -> None:
        """§4.3.2: a contact's server asks for the user's presence."""
        user = self._inbound_user(sender, to)
        if user is None or self.remote is None:
            return
        if (
            self.presence.is_blocked(user, sender)
            or not self.rosters.state(user, sender.bare).has_from
        ):
            return  # not a subscriber: nothing is revealed
        eps = self.sessions.available(user)
        for ep in eps:
            self.remote.send_presence(ep.jid, sender.bare, self.render(user, ep, sender))
        if not eps:
            self.remote.send_presence(JID(user, self.domain, None), sender.bare, None)

    def _remote_failed(self, what: str) -> Any:
        return lambda f: log.msg(f"federation: {what}: {f.getErrorMessage()}")
