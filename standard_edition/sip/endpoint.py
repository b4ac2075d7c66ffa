"""A SIP registration as the core sees it: one `Endpoint` (core/sessions.py) per binding.

The core delivers messages to it (they become MESSAGE requests to the registered contact);
presence for SIP watchers travels in SUBSCRIBE dialogs instead (sip/presence.py), so
presence, subscription and roster deliveries to the registration itself are not sent on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from standard_edition.core.jid import JID
from standard_edition.core.model import Message, Presence, RosterItem
from standard_edition.core.subscription import Kind

if TYPE_CHECKING:
    from standard_edition.sip.registrar import Binding
    from standard_edition.sip.service import SipService

__all__ = ["SipEndpoint"]


class SipEndpoint:
    protocol = "sip"
    origin = "internal"  # "edge" for a remote user's registration (DESIGN §7)

    def __init__(
        self, service: SipService, binding: Binding, jid: JID, address: str, since: float
    ) -> None:
        self.service = service
        self.binding = binding
        self.jid = jid
        self.address = address
        self.since = since
        self.secure = binding.source.startswith("tls:")
        self.presence: Presence | None = None
        self.interested = False
        self.publication: object | None = None  # the PUBLISH entity that sets its state

    def deliver_message(self, msg: Message) -> Deferred[None] | None:
        """A MESSAGE to the registered contact; the Deferred fails with Undeliverable when
        the contact cannot be reached (sessions.Endpoint)."""
        return self.service.send_message(self.binding, msg)

    def deliver_presence(self, sender: JID, presence: Presence | None) -> None:
        # SIP watchers get NOTIFYs in their subscription dialogs, not per registration; a
        # contact in another domain is known only by what its server sends, kept for them
        if self.jid.local is not None and self.service.router.is_remote(sender):
            self.service.presence.remote_presence(self.jid.local, sender, presence)

    def deliver_subscription(self, sender: JID, kind: Kind) -> None:
        self.service.subscription_request(self.jid, sender, kind)

    def deliver_roster_push(self, item: RosterItem, removed: bool = False) -> None:
        pass

    def close(self, condition: str, text: str = "") -> None:
        """The core ends this endpoint (account removed or disabled, replaced)."""
        self.service.endpoint_closed(self)
