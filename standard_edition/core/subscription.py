"""The presence subscription state machine of RFC 6121 Appendix A, as two pure tables.

A roster item's subscription state is one of the nine combinations of `subscription`
(none/to/from/both) with pending-out and pending-in flags. `outbound` is what the user's own
server does when the user sends subscribe/subscribed/unsubscribe/unsubscribed (Appendix A.2);
`inbound` is what it does when such a stanza arrives for the user from a contact (A.3).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Sub(StrEnum):
    NONE = "none"
    TO = "to"
    FROM = "from"
    BOTH = "both"


class Kind(StrEnum):
    SUBSCRIBE = "subscribe"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBE = "unsubscribe"
    UNSUBSCRIBED = "unsubscribed"


@dataclass(frozen=True, slots=True)
class State:
    sub: Sub = Sub.NONE
    pending_out: bool = False  # we asked the contact; no answer yet ("ask='subscribe'")
    pending_in: bool = False  # the contact asked us; the user has not answered
    approved: bool = False  # the user pre-approved a request not yet received (RFC 6121 §3.4)

    @property
    def has_to(self) -> bool:
        return self.sub in (Sub.TO, Sub.BOTH)

    @property
    def has_from(self) -> bool:
        return self.sub in (Sub.FROM, Sub.BOTH)

    def name(self) -> str:
        """The Appendix A name, e.g. 'None + Pending Out + Pending In'."""
        parts = [self.sub.value.capitalize()]
        if self.pending_out:
            parts.append("Pending Out")
        if self.pending_in:
            parts.append("Pending In")
        return " + ".join(parts)


def _with_to(sub: Sub, on: bool) -> Sub:
    has_from = sub in (Sub.FROM, Sub.BOTH)
    if on:
        return Sub.BOTH if has_from else Sub.TO
    return Sub.FROM if has_from else Sub.NONE


def _with_from(sub: Sub, on: bool) -> Sub:
    has_to = sub in (Sub.TO, Sub.BOTH)
    if on:
        return Sub.BOTH if has_to else Sub.FROM
    return Sub.TO if has_to else Sub.NONE


@dataclass(frozen=True, slots=True)
class Outbound:
    state: State
    route: bool  # send the stanza on to the contact


@dataclass(frozen=True, slots=True)
class Inbound:
    state: State
    deliver: bool  # hand the stanza to the user's clients
    auto_reply: Kind | None = None  # answer the contact on the user's behalf


def outbound(s: State, kind: Kind) -> Outbound:
    """RFC 6121 Appendix A.2: the user sends a subscription stanza to a contact."""
    if kind is Kind.SUBSCRIBE:
        # A.2.1: a request is routed even when nothing changes, so a lost one can be re-sent
        if s.has_to:
            return Outbound(s, route=True)
        return Outbound(replace(s, pending_out=True), route=True)
    if kind is Kind.UNSUBSCRIBE:
        # A.2.2: cancels both a pending request and an existing subscription
        changed = s.pending_out or s.has_to
        new = replace(s, sub=_with_to(s.sub, False), pending_out=False)
        return Outbound(new, route=changed)
    if kind is Kind.SUBSCRIBED:
        # A.2.3: approve a pending request, or pre-approve one that has not arrived (§3.4)
        if s.pending_in:
            return Outbound(replace(s, sub=_with_from(s.sub, True), pending_in=False), route=True)
        if s.has_from:
            return Outbound(s, route=False)
        return Outbound(replace(s, approved=True), route=False)
    # A.2.4 unsubscribed: deny a pending request or cancel the contact's subscription
    changed = s.pending_in or s.has_from
    new = replace(s, sub=_with_from(s.sub, False), pending_in=False, approved=False)
    return Outbound(new, route=changed)


def inbound(s: State, kind: Kind) -> Inbound:
    """RFC 6121 Appendix A.3: a contact's subscription stanza arrives for the user."""
    if kind is Kind.SUBSCRIBE:
        if s.has_from:
            # §3.1.3: already subscribed: the server answers for the user
            return Inbound(s, deliver=False, auto_reply=Kind.SUBSCRIBED)
        if s.approved:
            # §3.4: pre-approved: the subscription is granted without asking again
            new = replace(s, sub=_with_from(s.sub, True), approved=False)
            return Inbound(new, deliver=False, auto_reply=Kind.SUBSCRIBED)
        if s.pending_in:
            return Inbound(s, deliver=False)
        return Inbound(replace(s, pending_in=True), deliver=True)
    if kind is Kind.UNSUBSCRIBE:
        changed = s.pending_in or s.has_from
        new = replace(s, sub=_with_from(s.sub, False), pending_in=False, approved=False)
        return Inbound(new, deliver=changed)
    if kind is Kind.SUBSCRIBED:
        # A.3.3: only an outstanding request turns into a subscription
        if s.pending_out:
            return Inbound(replace(s, sub=_with_to(s.sub, True), pending_out=False), deliver=True)
        return Inbound(s, deliver=False)
    # A.3.4 unsubscribed: the contact denied our request or cancelled our subscription
    changed = s.pending_out or s.has_to
    new = replace(s, sub=_with_to(s.sub, False), pending_out=False)
    return Inbound(new, deliver=changed)
