"""The core's values: what a presence, a message and a roster item are, whatever the protocol."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime

from standard_edition.core.jid import JID
from standard_edition.core.subscription import State
from standard_edition.presence.model import EndpointState, Manual


@dataclass(frozen=True, slots=True)
class Presence:
    """One endpoint's availability as it published it."""

    show: str | None = None  # None (available), chat, away, xa, dnd (RFC 6121 §4.7.2.1)
    status: str | None = None  # the personal note
    priority: int = 0
    # protocol extensions carried verbatim to endpoints that understand them (XEP-0115 caps)
    payload: tuple[ET.Element, ...] = ()
    # on the way in, what the endpoint says about its user (DESIGN §4 manual versus machine)
    state: EndpointState = field(default_factory=EndpointState)
    manual: Manual | None = None  # a state set by hand
    clear_manual: bool = False  # the user is back: a manual state ends
    # on the way out, the user's aggregate as this watcher may see it
    code: int | None = None
    activity: str | None = None
    oof_note: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    sender: JID
    to: JID
    type: str = "normal"  # normal | chat | groupchat | headline | error
    body: str | None = None
    id: str | None = None
    # the rich content as XML children, kept verbatim for endpoints that speak XML
    payload: tuple[ET.Element, ...] = ()
    delay: datetime | None = None  # when the server first received it (stored messages)
    # already through the IM URL filter (core/url_filter.py): a message routed again (a
    # XEP-0198 session nobody resumed) is neither defanged twice nor refused after the fact
    filtered: bool = False
    # the sender's side as its adapter saw it, for the archive when the sender holds no session
    # (a SIP MESSAGE outside a registration): "xmpp" | "sip", and "edge" for a local user
    # signed in from outside; None: look at the sender's session
    protocol: str | None = None
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class RosterItem:
    contact: JID  # bare
    name: str | None = None
    groups: tuple[str, ...] = ()
    state: State = field(default_factory=State)
    in_roster: bool = True  # False: only a remembered pending-in request (RFC 6121 §3.1.3)


class Undeliverable(Exception):
    """A stanza the core could not deliver; condition is the stanza error to return."""

    def __init__(self, condition: str, text: str = "", app: str | None = None) -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text
        self.app = app  # an application-specific condition, as a Clark-notation tag
