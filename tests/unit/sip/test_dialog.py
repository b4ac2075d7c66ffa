"""Notifier-side subscription dialogs (RFC 3261 §12, RFC 6665 §4.2)."""

from __future__ import annotations

import pytest

from standard_edition.sip.dialog import (
    Dialog,
    DialogId,
    IntervalTooBrief,
    Subscription,
    grant_expires,
    parse_event,
)
from standard_edition.sip.framing import parse_datagram
from standard_edition.sip.message import ParseError, Request, SipURI, parse_message, serialize

SUBSCRIBE = (
    b"SUBSCRIBE sip:alice@example.test SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.20:5070;branch=z9hG4bKsub1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Carol" <sip:carol@example.test>;tag=c-77\r\n'
    b"To: <sip:alice@example.test>\r\n"
    b"Call-ID: sub-1@192.0.2.20\r\n"
    b"CSeq: 41 SUBSCRIBE\r\n"
    b"Contact: <sip:carol@192.0.2.20:5070;transport=tcp>\r\n"
    b"Record-Route: <sip:p1.example.test;lr>, <sip:p2.example.test;lr>\r\n"
    b"Event: presence;id=7\r\n"
    b"Expires: 600\r\n"
    b"Content-Length: 0\r\n\r\n"
)
CONTACT = "<sip:example.test:5060;transport=tcp>"


def subscribe() -> Request:
    msg = parse_datagram(SUBSCRIBE)
    assert isinstance(msg, Request)
    return msg


def test_dialog_state_from_subscribe() -> None:
    d = Dialog.from_request(subscribe(), CONTACT, local_tag="n-1", local_cseq=100)
    assert d.id == DialogId("sub-1@192.0.2.20", "n-1", "c-77")
    assert d.remote_target == SipURI(
        "sip", "192.0.2.20", "carol", port=5070, params=(("transport", "tcp"),)
    )
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.example.test;lr", "sip:p2.example.test;lr"]
    assert d.remote_cseq == 41
    assert d.remote_uri.tag is None and d.local_uri.tag is None


def test_notify_fields() -> None:
    sub = Subscription.from_subscribe(
        subscribe(), CONTACT, now=1000.0, expires=600, local_tag="n-1"
    )
    d = sub.dialog
    d.local_cseq = 100
    notify = sub.make_notify(
        1010.0,
        transport="TCP",
        sent_by=("192.0.2.1", 5060),
        body=b"<presence/>",
        content_type="application/pidf+xml",
    )
    assert notify.method == "NOTIFY"
    assert notify.uri == "sip:carol@192.0.2.20:5070;transport=tcp"  # the remote target
    assert notify.call_id == "sub-1@192.0.2.20"
    assert (notify.cseq.number, notify.cseq.method) == (101, "NOTIFY")
    assert notify.from_.tag == "n-1" and str(notify.from_.uri) == "sip:alice@example.test"
    assert notify.to.tag == "c-77" and notify.to.display_name == "Carol"
    assert [str(r.uri) for r in notify.routes] == [
        "sip:p1.example.test;lr",
        "sip:p2.example.test;lr",
    ]
    via = notify.top_via
    assert via.transport == "TCP" and (via.host, via.port) == ("192.0.2.1", 5060)
    assert via.branch is not None and via.branch.startswith("z9hG4bK") and via.has_rport
    assert notify.headers.get("Event") == "presence;id=7"
    assert notify.headers.get("Subscription-State") == "active;expires=590"
    assert notify.content_type == "application/pidf+xml"
    assert notify.headers.get("Contact") == CONTACT
    # it survives the wire and is a valid request
    again = parse_message(serialize(notify))
    assert again.headers.get("Content-Length") == "11"
    again.headers.remove("Content-Length")
    assert again == notify
    again.validate()
    second = sub.make_notify(1020.0, transport="TCP", sent_by=("192.0.2.1", 5060))
    assert second.cseq.number == 102
    assert second.top_via.branch != via.branch


def test_strict_route_goes_into_the_request_uri() -> None:
    msg = subscribe()
    msg.headers.set("Record-Route", "<sip:strict.example.test>")
    d = Dialog.from_request(msg, CONTACT)
    req = d.make_request("NOTIFY", transport="UDP", sent_by=("192.0.2.1", None))
    assert req.uri == "sip:strict.example.test"
    assert [str(r.uri) for r in req.routes] == ["sip:carol@192.0.2.20:5070;transport=tcp"]


def test_subscription_expiry_and_termination() -> None:
    sub = Subscription.from_subscribe(subscribe(), CONTACT, now=0.0, expires=600)
    assert sub.remaining(100.0) == 500 and not sub.expired(599.0) and sub.expired(600.0)
    sub.refresh(3600, now=500.0)
    assert sub.remaining(500.0) == 3600
    n = sub.make_notify(5000.0, transport="UDP", sent_by=("192.0.2.1", 5060))
    assert n.headers.get("Subscription-State") == "terminated;reason=timeout"
    sub2 = Subscription.from_subscribe(subscribe(), CONTACT, now=0.0, expires=600, state="pending")
    assert sub2.subscription_state(0.0) == "pending;expires=600"
    sub2.refresh(0, now=1.0)
    assert sub2.subscription_state(1.0) == "terminated;reason=timeout"


def test_remote_cseq_must_grow() -> None:
    d = Dialog.from_request(subscribe(), CONTACT)
    refresh = subscribe()
    assert not d.accept_remote_cseq(refresh)  # same CSeq 41
    refresh.headers.set("CSeq", "42 SUBSCRIBE")
    refresh.headers.set("Contact", "<sip:carol@192.0.2.21>")
    assert d.accept_remote_cseq(refresh)
    d.refresh_target(refresh)
    assert str(d.remote_target) == "sip:carol@192.0.2.21"


def test_incoming_dialog_id() -> None:
    msg = subscribe()
    assert DialogId.of_incoming(msg) is None  # initial request: no To tag
    msg.headers.set("To", "<sip:alice@example.test>;tag=n-1")
    assert DialogId.of_incoming(msg) == DialogId("sub-1@192.0.2.20", "n-1", "c-77")


def test_grant_expires() -> None:
    assert grant_expires(None, default=3600, minimum=60, maximum=7200) == 3600
    assert grant_expires(0, default=3600, minimum=60, maximum=7200) == 0
    assert grant_expires(90000, default=3600, minimum=60, maximum=7200) == 7200
    with pytest.raises(IntervalTooBrief) as info:
        grant_expires(10, default=3600, minimum=60, maximum=7200)
    assert info.value.min_expires == 60


def test_event_header() -> None:
    assert parse_event("Presence ; id=3") == ("presence", "3")
    assert parse_event("presence.winfo") == ("presence.winfo", None)
    with pytest.raises(ParseError):
        parse_event(" ;id=1")


def test_dialog_needs_from_tag_and_one_contact() -> None:
    msg = subscribe()
    msg.headers.set("From", "<sip:carol@example.test>")
    with pytest.raises(ParseError):
        Dialog.from_request(msg, CONTACT)
    msg = subscribe()
    msg.headers.remove("Contact")
    with pytest.raises(ParseError):
        Dialog.from_request(msg, CONTACT)


def test_missing_event_is_489() -> None:
    msg = subscribe()
    msg.headers.remove("Event")
    with pytest.raises(ParseError) as info:
        Subscription.from_subscribe(msg, CONTACT, now=0.0, expires=60)
    assert info.value.status == 489
