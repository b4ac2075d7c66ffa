"""Dialogs for subscriptions, notifier side (RFC 3261 §12, RFC 6665 §4.2).

A SUBSCRIBE that the notifier accepts creates a dialog; the notifier then sends NOTIFY
requests inside it. `Dialog` holds the dialog state of §12.1.1 and builds in-dialog
requests per §12.2.1.1; `Subscription` adds the RFC 6665 bookkeeping (event package,
state, expiry) and builds NOTIFYs with their Event and Subscription-State headers.

Pure data: no clocks are read here, callers pass `now` (seconds, any monotonic origin).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from standard_edition.sip.message import (
    URI,
    Headers,
    NameAddr,
    ParseError,
    Request,
    SipURI,
    Via,
    parse_uri,
)
from standard_edition.sip.transaction import new_branch

__all__ = [
    "Dialog",
    "DialogId",
    "IntervalTooBrief",
    "Subscription",
    "contact_for",
    "grant_expires",
    "new_tag",
    "parse_event",
]


def new_tag() -> str:
    """A local tag: random, at least 32 bits (RFC 3261 §19.3)."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class DialogId:
    """RFC 3261 §12: Call-ID, local tag, remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_incoming(cls, request: Request) -> DialogId | None:
        """The id of the dialog an incoming in-dialog request belongs to (§12.2.2)."""
        to_tag = request.to.tag
        from_tag = request.from_.tag
        if to_tag is None or from_tag is None:
            return None
        return cls(request.call_id, to_tag, from_tag)


def parse_event(value: str) -> tuple[str, str | None]:
    """The Event header (RFC 6665 §8.2.1): (package, id parameter)."""
    package, _, rest = value.partition(";")
    package = package.strip()
    if not package:
        raise ParseError("empty Event header")
    event_id = None
    for param in rest.split(";"):
        name, _, v = param.partition("=")
        if name.strip().lower() == "id":
            event_id = v.strip()
    return package.lower(), event_id


class IntervalTooBrief(Exception):
    """Answer 423 with Min-Expires (RFC 6665 §4.2.1.1, RFC 3261 §21.4.17)."""

    def __init__(self, min_expires: int) -> None:
        super().__init__(f"expiry shorter than {min_expires} s")
        self.min_expires = min_expires


def grant_expires(requested: int | None, *, default: int, minimum: int, maximum: int) -> int:
    """The expiry to grant (RFC 6665 §4.2.1.1): may be shortened, never lengthened; 0 stays 0."""
    if requested is None:
        return default
    if requested == 0:
        return 0
    if requested < minimum:
        raise IntervalTooBrief(minimum)
    return min(requested, maximum)


@dataclass(slots=True)
class Dialog:
    """One dialog, UAS side (RFC 3261 §12.1.1)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr  # our address, without tag (the To of the creating request)
    remote_uri: NameAddr  # the peer's address, without tag (its From)
    remote_target: URI  # from the peer's Contact, updated by target refreshes
    route_set: tuple[NameAddr, ...] = ()
    local_cseq: int = 0
    remote_cseq: int | None = None
    secure: bool = False
    local_contact: str = ""

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_request(
        cls,
        request: Request,
        local_contact: str,
        *,
        local_tag: str | None = None,
        local_cseq: int | None = None,
    ) -> Dialog:
        """RFC 3261 §12.1.1: the UAS side of a dialog created by `request` (a SUBSCRIBE).

        Route set = Record-Route in order; remote target = the Contact URI; remote CSeq =
        the request's. Raises ParseError (400) without a usable Contact or From tag.
        """
        remote = request.from_
        if remote.tag is None:
            raise ParseError("From tag required to create a dialog")
        contacts = request.contacts
        if len(contacts) != 1:
            raise ParseError("exactly one Contact required to create a dialog")
        ruri = request.ruri
        secure = isinstance(ruri, SipURI) and ruri.scheme == "sips"
        return cls(
            call_id=request.call_id,
            local_tag=local_tag or request.to.tag or new_tag(),
            remote_tag=remote.tag,
            local_uri=_untagged(request.to),
            remote_uri=_untagged(remote),
            remote_target=contacts[0].uri,
            route_set=request.record_routes,
            # RFC 3261 §8.1.1.5: start anywhere below 2**31; random makes reuse unlikely
            local_cseq=local_cseq if local_cseq is not None else secrets.randbelow(2**16),
            remote_cseq=request.cseq.number,
            secure=secure,
            local_contact=local_contact,
        )

    def accept_remote_cseq(self, request: Request) -> bool:
        """RFC 3261 §12.2.2: a lower CSeq than the last one is out of order (answer 500)."""
        number = request.cseq.number
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def refresh_target(self, request: Request) -> None:
        """A SUBSCRIBE refresh may carry a new Contact (RFC 6665 §4.1.2.1, target refresh)."""
        contacts = request.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    def make_request(
        self,
        method: str,
        *,
        transport: str,
        sent_by: tuple[str, int | None],
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        branch: str | None = None,
    ) -> Request:
        """A request inside the dialog (RFC 3261 §12.2.1.1), with a new Via branch."""
        self.local_cseq += 1
        h = Headers()
        host, port = sent_by
        # RFC 3581 §3: ask for rport so replies find us through NAT
        via = Via(
            transport.upper(), host, port, (("branch", branch or new_branch()), ("rport", None))
        )
        h.add("Via", str(via))
        uri: URI
        routes = list(self.route_set)
        if routes and not _loose(routes[0]):
            # strict router: it goes in the Request-URI, the remote target at the end
            uri = routes[0].uri
            routes = [*routes[1:], NameAddr(self.remote_target)]
        else:
            uri = self.remote_target
        for r in routes:
            h.add("Route", str(r))
        h.add("Max-Forwards", "70")
        h.add("From", str(self.local_uri.with_param("tag", self.local_tag)))
        h.add("To", str(self.remote_uri.with_param("tag", self.remote_tag)))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.local_cseq} {method}")
        if self.local_contact:
            h.add("Contact", self.local_contact)
        for name, value in headers or ():
            h.add(name, value)
        return Request(method, str(uri), h, body)


def _loose(route: NameAddr) -> bool:
    return isinstance(route.uri, SipURI) and route.uri.has_param("lr")


def _untagged(addr: NameAddr) -> NameAddr:
    return NameAddr(addr.uri, addr.display_name, tuple(p for p in addr.params if p[0] != "tag"))


@dataclass(slots=True)
class Subscription:
    """Notifier-side subscription state (RFC 6665 §4.2.2)."""

    dialog: Dialog
    event: str  # the event package, e.g. "presence" or "presence.winfo"
    expires_at: float
    event_id: str | None = None
    state: str = "active"  # pending | active | terminated
    terminated_reason: str | None = field(default=None)

    @classmethod
    def from_subscribe(
        cls,
        request: Request,
        local_contact: str,
        now: float,
        expires: int,
        *,
        state: str = "active",
        local_tag: str | None = None,
    ) -> Subscription:
        event = request.headers.get("Event")
        if event is None:
            raise ParseError("missing Event header", 489, phrase="Bad Event")
        package, event_id = parse_event(event)
        dialog = Dialog.from_request(request, local_contact, local_tag=local_tag)
        return cls(dialog, package, now + expires, event_id, state)

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def refresh(self, expires: int, now: float) -> None:
        """A SUBSCRIBE refresh (RFC 6665 §4.2.1.2); expires 0 ends the subscription."""
        self.expires_at = now + expires
        if expires == 0:
            self.terminate("timeout")

    def activate(self) -> None:
        if self.state != "terminated":
            self.state = "active"

    def terminate(self, reason: str = "noresource") -> None:
        self.state = "terminated"
        self.terminated_reason = reason

    def subscription_state(self, now: float) -> str:
        """The Subscription-State header value (RFC 6665 §8.2.3)."""
        if self.state == "terminated":
            return f"terminated;reason={self.terminated_reason or 'noresource'}"
        return f"{self.state};expires={self.remaining(now)}"

    def make_notify(
        self,
        now: float,
        *,
        transport: str,
        sent_by: tuple[str, int | None],
        body: bytes = b"",
        content_type: str | None = None,
        branch: str | None = None,
    ) -> Request:
        """A NOTIFY for this subscription (RFC 6665 §4.2.2, §8.2)."""
        if self.expired(now) and self.state != "terminated":
            self.terminate("timeout")
        event = self.event if self.event_id is None else f"{self.event};id={self.event_id}"
        headers = [("Event", event), ("Subscription-State", self.subscription_state(now))]
        if body and content_type:
            headers.append(("Content-Type", content_type))
        return self.dialog.make_request(
            "NOTIFY",
            transport=transport,
            sent_by=sent_by,
            headers=headers,
            body=body,
            branch=branch,
        )


def contact_for(uri: str) -> str:
    """A Contact header value for our own URI."""
    return str(NameAddr(parse_uri(uri)))
