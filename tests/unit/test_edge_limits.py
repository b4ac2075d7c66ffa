"""Edge rate limits and lockout (edge/limits.py), federation policy, dialback keys: no sockets."""

from __future__ import annotations

import hashlib
import hmac
import xml.etree.ElementTree as ET

from standard_edition.edge.limits import EdgeGuard, EdgeLimits, TokenBucket
from standard_edition.xmpp import dialback


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(**kw: float) -> tuple[EdgeGuard, Clock]:
    clock = Clock()
    return EdgeGuard(EdgeLimits(**kw), clock), clock  # type: ignore[arg-type]


def test_backoff_doubles_after_the_free_failures_and_is_capped() -> None:
    g, clock = guard(auth_failures_free=3, address_failures_free=1000, auth_backoff=2.0)
    for _ in range(3):
        assert g.login_wait("edge", "198.51.100.7", "dave") == 0
        g.login_failed("edge", "198.51.100.7", "dave")
    assert g.login_wait("edge", "198.51.100.7", "dave") == 2.0
    clock.now += 2.0
    g.login_failed("edge", "198.51.100.7", "dave")
    assert g.login_wait("edge", "198.51.100.7", "dave") == 4.0
    for _ in range(30):
        g.login_failed("edge", "198.51.100.7", "dave")
    assert g.login_wait("edge", "198.51.100.7", "dave") == g.limits.auth_backoff_max


def test_an_outsiders_failures_do_not_lock_out_the_lan_or_other_addresses() -> None:
    g, _ = guard(auth_failures_free=2)
    for _ in range(10):
        g.login_failed("edge", "198.51.100.7", "dave")
    assert g.login_wait("edge", "198.51.100.7", "dave") > 0
    assert g.login_wait("internal", "198.51.100.7", "dave") == 0
    assert g.login_wait("edge", "203.0.113.9", "dave") == 0
    assert g.login_wait("edge", "198.51.100.7", "erin") == 0  # below the address limit


def test_an_address_that_fails_on_many_accounts_is_slowed_for_all() -> None:
    g, _ = guard(auth_failures_free=5, address_failures_free=4)
    for i in range(4):
        g.login_failed("edge", "198.51.100.7", f"user{i}")
    assert g.login_wait("edge", "198.51.100.7", None) > 0
    assert g.login_wait("edge", "198.51.100.7", "someone-else") > 0


def test_success_clears_the_accounts_record() -> None:
    g, _ = guard(auth_failures_free=1)
    g.login_failed("edge", "198.51.100.7", "dave")
    g.login_succeeded("edge", "198.51.100.7", "dave")
    assert g.login_wait("edge", "198.51.100.7", "dave") == 0


def test_connections_per_address_open_and_per_minute() -> None:
    g, clock = guard(max_connections_per_address=2, connections_per_minute=3)
    assert g.connection_opened("a") and g.connection_opened("a")
    assert not g.connection_opened("a")  # two open already
    g.connection_closed("a")
    assert g.connection_opened("a")  # the third in this minute
    g.connection_closed("a")
    assert not g.connection_opened("a")  # a fourth within the minute
    assert g.connection_opened("b")
    clock.now += 61
    assert g.connection_opened("a")
    assert g.status()["connections_refused"] == 2


def test_token_bucket_allows_bursts_then_the_rate() -> None:
    clock = Clock()
    b = TokenBucket(rate=2, burst=4, clock=clock)
    assert all(b.take() for _ in range(4))
    assert not b.take()
    clock.now += 1.0
    assert b.take() and b.take() and not b.take()


def test_token_bucket_says_how_long_until_the_next_token() -> None:
    clock = Clock()
    b = TokenBucket(rate=4, burst=2, clock=clock)
    assert b.wait() == 0.0
    assert b.take() and b.take() and not b.take()
    assert b.wait() == 0.25
    clock.now += b.wait()
    assert b.take() and not b.take()


def test_dialback_keys_follow_xep_0185() -> None:
    # §2: HMAC-SHA256 keyed with the hex SHA-256 of the secret, over "receiving originating id"
    secret = b"s3cr3tf0rd14lb4ck"
    key = dialback.dialback_key(secret, "example.net", "example.com", "D60000229F")
    expected = hmac.new(
        hashlib.sha256(secret).hexdigest().encode(),
        b"example.net example.com D60000229F",
        hashlib.sha256,
    ).hexdigest()
    assert key == expected
    assert dialback.key_matches(secret, "example.net", "example.com", "D60000229F", key)
    assert not dialback.key_matches(secret, "example.com", "example.net", "D60000229F", key)
    assert not dialback.key_matches(b"other", "example.net", "example.com", "D60000229F", key)


def test_stanzas_change_namespace_between_client_and_server_streams() -> None:
    from standard_edition.xmpp import s2s
    from standard_edition.xmpp.xml import StanzaReceived, StreamParser

    el = ET.fromstring(
        "<message xmlns='jabber:client' to='e@b.test'><body>hi</body>"
        "<x xmlns='jabber:x:oob'/><forwarded xmlns='urn:xmpp:forward:0'>"
        "<message xmlns='jabber:client' to='f@b.test'><body>fw</body></message>"
        "</forwarded></message>"
    )
    wire = s2s._out(el)
    assert b"jabber:server" not in wire
    # what the partner reads in its jabber:server stream
    parser = StreamParser()
    parser.feed(s2s.s2s_header("a.test", "b.test", "s1"))
    (got,) = [e.element for e in parser.feed(wire) if isinstance(e, StanzaReceived)]
    assert got.tag == "{jabber:server}message"
    assert got[0].tag == "{jabber:server}body" and got[1].tag == "{jabber:x:oob}x"
    # a forwarded stanza keeps its own namespace (XEP-0297)
    inner = got[2][0]
    assert inner.tag == "{jabber:client}message" and inner[0].text == "fw"
    # and what arrives is handed to the router in jabber:client
    back = dialback.to_client(got)
    assert back.tag == "{jabber:client}message" and back[0].tag == "{jabber:client}body"


def test_a_self_signed_certificate_proves_its_domain_only_when_pinned(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from standard_edition import tls

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    tls.make_self_signed("partner.test", cert, key)
    der = tls.certificate_der(cert)
    pem = cert.read_text()
    assert dialback.certificate_identity([der], "partner.test", pem) == "pinned"
    assert dialback.certificate_identity([der], "partner.test", None) is None
    other_cert, other_key = tmp_path / "o.pem", tmp_path / "ok.pem"
    tls.make_self_signed("partner.test", other_cert, other_key)
    assert dialback.certificate_identity([der], "partner.test", other_cert.read_text()) is None
