"""SIP federation between two real servers, and remote SIP users on the edge (DESIGN §7).

a.test listens outside on 127.0.0.2, b.test on 127.0.0.3, each with SIP over TLS on the edge.
Their [federation.hosts] maps give only a `sip` entry, so the partners are reached over SIP
federation alone (never XMPP s2s). The certificates are self-signed: a partner is trusted once
the admin pinned its certificate (`se-ctl federation trust`). The users' own clients are our
Python SIP client (TCP on the LAN, TLS on the edge) and slixmpp.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from .rawxmpp import insecure_context
from .server import Server, free_port
from .sipclient import SipClient
from .test_s2s_lifecycle import wait_until
from .test_sip import PIDF_BUSY
from .xmppclient import Sessions, next_matching

A_HOST, B_HOST = "127.0.0.2", "127.0.0.3"
PIDF = "application/pidf+xml"


def federation_toml(other: str, host: str, port: int) -> str:
    return (
        f'[federation]\nmode = "allowlist"\nallow = ["{other}"]\n'
        f'[federation.hosts]\n"{other}" = {{ sip = "{host}:{port}" }}\n'
    )


def sip_pair(
    make_server: Callable[..., Server],
    pin_a: bool = True,
    pin_b: bool = True,
    edge_extra_b: str = "",
) -> tuple[Server, Server]:
    """Two servers federating over SIP; pin_a: a trusts b's certificate (and pin_b, b a's);
    edge_extra_b: more [edge] lines for b."""
    pa, pb = free_port(), free_port()
    a = make_server(
        federation_toml("b.test", B_HOST, pb),
        domain="a.test",
        sip=True,
        edge_host=A_HOST,
        edge_ports={"sip_tls": pa},
    )
    b = make_server(
        federation_toml("a.test", A_HOST, pa),
        domain="b.test",
        sip=True,
        edge_host=B_HOST,
        edge_ports={"sip_tls": pb},
        edge_extra=edge_extra_b,
    )
    if pin_a:
        a.ctl_ok("federation", "trust", "b.test", "--cert", str(b.data_dir / "cert.pem"))
    if pin_b:
        b.ctl_ok("federation", "trust", "a.test", "--cert", str(a.data_dir / "cert.pem"))
    return a, b


def lan(server: Server, user: str) -> SipClient:
    """A SIP user on the server's LAN listener (TCP), registered."""
    c = SipClient(server.ports["sip"], user, server.passwords[user], server.domain, "tcp")
    assert c.register().status == 200
    return c


def status(s: Server) -> dict[str, Any]:
    return json.loads(s.ctl_ok("status", "--json").stdout)  # type: ignore[no-any-return]


def message(c: SipClient, to: str, text: str) -> int:
    r = c.request(
        "MESSAGE", f"sip:{to}", [("Content-Type", "text/plain")], text.encode(), to=f"sip:{to}"
    )
    return r.status


def subscribe(c: SipClient, to: str, event: str = "presence", tag: str = "") -> int:
    accept = PIDF if event == "presence" else "application/watcherinfo+xml"
    r = c.request(
        "SUBSCRIBE",
        f"sip:{to}",
        [("Event", event), ("Accept", accept), ("Expires", "600")],
        to=f"sip:{to}",
        call_id=f"{event}-{tag}-{c.call_id}",
    )
    return r.status


def notify_until(c: SipClient, pred: Callable[[Any], bool], timeout: float = 20) -> Any:
    """NOTIFYs (answered 200) until one satisfies `pred`."""
    end = time.monotonic() + timeout
    while True:
        n = c.expect("NOTIFY", timeout=max(0.1, end - time.monotonic()))
        if pred(n):
            return n
        assert time.monotonic() < end, n.body


def presence_of(entity: str, marker: bytes = b">open<") -> Callable[[Any], bool]:
    return lambda n: (
        n.headers.get("Event") == "presence"
        and f'entity="sip:{entity}"'.encode() in n.body
        and marker in n.body
    )


def waiting(watcher: str) -> Callable[[Any], bool]:
    return lambda n: (
        n.headers.get("Event") == "presence.winfo"
        and (f'status="pending">sip:{watcher}<'.encode() in n.body)
    )


def test_sip_users_message_and_share_presence_across_domains(
    make_server: Callable[..., Server],
) -> None:
    a, b = sip_pair(make_server)
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    ja, je = f"{alice}@a.test", f"{erin}@b.test"
    ca, ce = lan(a, alice), lan(b, erin)
    try:
        # messages, both ways
        assert message(ca, je, "hello from a") == 200
        got = ce.expect("MESSAGE")
        assert got.body == b"hello from a" and f"sip:{ja}" in (got.headers.get("From") or "")
        assert message(ce, ja, "hello from b") == 200
        assert ca.expect("MESSAGE").body == b"hello from b"
        # presence: each asks, each approves by subscribing back (another domain: never
        # approved on the user's behalf); watcher info shows who waits
        assert subscribe(ca, ja, "presence.winfo") == 200
        assert subscribe(ce, je, "presence.winfo") == 200
        assert subscribe(ca, je, tag="1") == 202
        notify_until(ce, waiting(ja))
        assert subscribe(ce, ja, tag="1") in (200, 202)  # approves alice, asks her
        notify_until(ca, presence_of(je))
        notify_until(ca, waiting(je))
        assert subscribe(ca, je, tag="2") == 200  # approves erin
        notify_until(ce, presence_of(ja))
        # a state published on one side is what the other sees (an External contact:
        # availability only, so the note stays home)
        r = ca.request(
            "PUBLISH",
            f"sip:{ja}",
            [("Event", "presence"), ("Content-Type", PIDF)],
            PIDF_BUSY,
            to=f"sip:{ja}",
            call_id="pub-" + ca.call_id,
        )
        assert r.status == 200, r
        busy = notify_until(ce, presence_of(ja, b'code="6500"'))
        assert b"on a deadline" not in busy.body
        # alice signs out: erin's view closes
        assert ca.register(expires=0).status == 200
        notify_until(ce, lambda n: f"sip:{ja}".encode() in n.body and b">open<" not in n.body)
    finally:
        ca.close()
        ce.close()
    sa, sb = status(a)["edge"], status(b)["edge"]
    assert sa["sip_federation"]["links"] == {"b.test": "ready"}
    assert sb["sip_federation"]["sip_fed_requests_in"] >= 3
    # never both: nothing went over XMPP s2s
    assert sa["federation"]["outgoing"] == {} and sb["federation"]["outgoing"] == {}


def test_xmpp_user_and_sip_user_across_domains(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = sip_pair(make_server)
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    ja, je = f"{alice}@a.test", f"{erin}@b.test"
    ce = lan(b, erin)

    async def scenario() -> None:
        async with Sessions(a) as sa:
            xa = await sa.login(alice)
            assert await asyncio.to_thread(subscribe, ce, je, "presence.winfo") == 200
            # the XMPP user asks; the SIP user sees the request and approves by subscribing back
            xa.send_presence(pto=je, ptype="subscribe")
            await asyncio.to_thread(notify_until, ce, waiting(ja))
            assert await asyncio.to_thread(subscribe, ce, ja) in (200, 202)
            await next_matching(
                xa.presences,
                lambda p: p["from"].bare == je and p["type"] in ("available", "", None),
                20,
            )
            # slixmpp approves erin's request itself: her dialog turns active with alice open
            await asyncio.to_thread(notify_until, ce, presence_of(ja))
            # messages both ways
            xa.send_message(mto=je, mbody="xmpp to sip", mtype="chat")
            got = await asyncio.to_thread(ce.expect, "MESSAGE")
            assert got.body == b"xmpp to sip"
            assert await asyncio.to_thread(message, ce, ja, "sip to xmpp") == 200
            m = await next_matching(xa.inbox, lambda m: m["body"] == "sip to xmpp", 10)
            assert m["from"].bare == je
            # a presence change crosses protocols and domains
            xa.send_presence(pshow="dnd")
            await asyncio.to_thread(notify_until, ce, presence_of(ja, b'code="9500"'))
            # and the SIP user's own state reaches the XMPP user
            r = await asyncio.to_thread(
                ce.request,
                "PUBLISH",
                f"sip:{je}",
                [("Event", "presence"), ("Content-Type", PIDF)],
                PIDF_BUSY,
                to=f"sip:{je}",
                call_id="pub-" + ce.call_id,
            )
            assert r.status == 200
            await next_matching(xa.presences, lambda p: p["from"].bare == je and p["show"] == "dnd")

    try:
        run(scenario())
    finally:
        ce.close()
    assert status(a)["edge"]["federation"]["outgoing"] == {}


def test_user_without_federation_access_and_blocked_domain_are_refused(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = sip_pair(make_server)
    alice, bob = a.new_users("alice", "bob")
    (erin,) = b.new_users("erin")
    ja, jb, je = f"{alice}@a.test", f"{bob}@a.test", f"{erin}@b.test"
    a.ctl_ok("policy", jb, "--federation-access", "off")
    ca, cb, ce = lan(a, alice), lan(a, bob), lan(b, erin)
    try:
        # bob may not federate: refused at home, and unknown to the partner
        assert message(cb, je, "out") == 403
        assert message(ce, jb, "in") == 404
        assert message(ca, jb, "inside") == 200  # bob still chats inside
        assert cb.expect("MESSAGE").body == b"inside"
        assert message(ca, je, "allowed") == 200
        assert ce.expect("MESSAGE").body == b"allowed"
        # b blocks a.test: its requests are refused and the connection closed, nothing passes
        b.ctl_ok("federation", "block", "a.test")
        assert message(ca, je, "let me in") == 403
        assert message(ce, ja, "out") == 403
        try:
            leaked = ce.expect("MESSAGE", timeout=1)
        except TimeoutError:
            leaked = None
        assert leaked is None
    finally:
        for c in (ca, cb, ce):
            c.close()
    assert status(b)["edge"]["sip_federation"]["sip_fed_refused"] >= 1
    # a raw client presenting a's own certificate, speaking for the blocked domain
    ctx = insecure_context()
    ctx.load_cert_chain(a.data_dir / "cert.pem", a.data_dir / "key.pem")
    raw = SipClient(
        b.ports["edge_sip_tls"], "mallory", "x", "a.test", "tls", host=B_HOST, context=ctx
    )
    try:
        r = raw.request("MESSAGE", f"sip:{je}", [("Content-Type", "text/plain")], b"hi", auth=False)
        assert r.status == 403
        assert _closed(raw.sock)
    finally:
        raw.close()


def closed(entity: str) -> Callable[[Any], bool]:
    return lambda n: (
        n.headers.get("Event") == "presence"
        and f'entity="sip:{entity}"'.encode() in n.body
        and b">closed<" in n.body
        and b">open<" not in n.body
    )


def notifies_for(c: SipClient, entity: str, wait: float) -> list[Any]:
    """Every presence NOTIFY about `entity` that arrives within `wait` seconds."""
    got = []
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        try:
            n = c.expect("NOTIFY", timeout=left)
        except TimeoutError:
            break
        if f'entity="sip:{entity}"'.encode() in n.body:
            got.append(n)
    return got


def test_partner_watcher_sees_only_closed_documents_while_federation_access_is_off(
    make_server: Callable[..., Server],
) -> None:
    a, b = sip_pair(make_server)
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    ja, je = f"{alice}@a.test", f"{erin}@b.test"
    ca, ce = lan(a, alice), lan(b, erin)

    def publish(body: bytes) -> None:
        r = ca.request(
            "PUBLISH",
            f"sip:{ja}",
            [("Event", "presence"), ("Content-Type", PIDF)],
            body,
            to=f"sip:{ja}",
            call_id=f"pub-{time.monotonic()}-{ca.call_id}",
        )
        assert r.status == 200, r

    try:
        # erin (b.test, SIP) watches alice (a.test, SIP) with alice's approval
        assert subscribe(ca, ja, "presence.winfo") == 200
        assert subscribe(ce, ja, tag="1") == 202
        notify_until(ca, waiting(je))
        assert subscribe(ca, je, tag="1") in (200, 202)  # approves erin
        notify_until(ce, presence_of(ja))
        # alice loses federation access: erin's dialog gets a closed document at once
        a.ctl_ok("policy", ja, "--federation-access", "off")
        notify_until(ce, closed(ja))
        # and while it stays off, nothing alice does shows her open to erin
        publish(PIDF_BUSY)
        assert ca.register().status == 200
        leaked = [n.body for n in notifies_for(ce, ja, 2.0) if not closed(ja)(n)]
        assert leaked == []
        # a new subscription from the partner learns nothing of her (as for no such user)
        ctx = insecure_context()
        ctx.load_cert_chain(b.data_dir / "cert.pem", b.data_dir / "key.pem")
        raw = SipClient(
            a.ports["edge_sip_tls"], erin, "x", "b.test", "tls", host=A_HOST, context=ctx
        )
        try:
            r = raw.request(
                "SUBSCRIBE",
                f"sip:{ja}",
                [("Event", "presence"), ("Accept", PIDF), ("Expires", "600")],
                to=f"sip:{ja}",
                auth=False,
            )
            assert r.status == 404
            with pytest.raises(TimeoutError):
                raw.expect("NOTIFY", timeout=0.5)
        finally:
            raw.close()
        # access back: alice's next change reaches erin again
        a.ctl_ok("policy", ja, "--federation-access", "on")
        publish(PIDF_BUSY.replace(b"on a deadline", b"back"))
        notify_until(ce, presence_of(ja))
    finally:
        ca.close()
        ce.close()
    assert status(a)["edge"]["policy"]["policy_presence_withdrawn"] >= 1


def test_partner_without_a_trusted_certificate_is_refused(
    make_server: Callable[..., Server],
) -> None:
    # a trusts b's certificate; b does not trust a's
    a, b = sip_pair(make_server, pin_a=True, pin_b=False)
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    ca, ce = lan(a, alice), lan(b, erin)
    try:
        # a's requests reach b, whose edge refuses a peer that cannot prove a.test
        assert message(ca, f"{erin}@b.test", "trust me") == 403
        # b connects to a, but will not use a server whose certificate it does not trust
        assert message(ce, f"{alice}@a.test", "hello?") == 503
    finally:
        ca.close()
        ce.close()
    assert status(b)["edge"]["sip_federation"]["sip_fed_certificate_refused"] >= 2
    # a client without any certificate claiming a partner domain is no partner either
    raw = SipClient(b.ports["edge_sip_tls"], "mallory", "x", "c.test", "tls", host=B_HOST)
    try:
        r = raw.request(
            "MESSAGE", f"sip:{erin}@b.test", [("Content-Type", "text/plain")], b"x", auth=False
        )
        assert r.status == 403
    finally:
        raw.close()


def test_remote_sip_user_logs_in_on_the_edge_unless_denied_outside_access(
    make_server: Callable[..., Server],
) -> None:
    port = free_port()
    s = make_server(
        "",
        sip=True,
        edge_host=A_HOST,
        edge_ports={"sip_tls": port},
        edge_extra="auth_failures_free = 2\nauth_backoff = 60",
    )
    dave, carol = s.new_users("dave", "carol")

    def edge(user: str, password: str | None = None) -> SipClient:
        pw = password or s.passwords[user]
        return SipClient(port, user, pw, s.domain, "tls", host=A_HOST)

    c = lan(s, carol)
    d = edge(dave)
    try:
        assert d.register().status == 200
        assert message(d, f"{carol}@{s.domain}", "from home") == 200
        assert c.expect("MESSAGE").body == b"from home"
        sessions = json.loads(s.ctl_ok("sessions", "--json").stdout)
        origins = {x["jid"].split("/")[0]: x.get("origin") for x in sessions}
        assert origins.get(f"{dave}@{s.domain}") == "edge"
        # no outside access: his edge registration ends and its connection closes at once
        s.ctl_ok("policy", f"{dave}@{s.domain}", "--outside-access", "off")
        assert _closed(d.sock)
        sessions = json.loads(s.ctl_ok("sessions", "--json").stdout)
        assert not [x for x in sessions if x["jid"].startswith(f"{dave}@")]
        # the edge refuses him from then on; the LAN still takes him
        d.close()
        d = edge(dave)
        assert d.register().status == 403
        inside = lan(s, dave)
        inside.close()
        # wrong passwords on the edge lock that account out there, not on the LAN
        s.ctl_ok("policy", f"{dave}@{s.domain}", "--outside-access", "on")
        wrong = edge(dave, "not-the-password")
        try:
            # two free failures (edge auth_failures_free), then the account waits there
            assert [wrong.register().status for _ in range(2)] == [403, 403]
            locked = wrong.register()
            assert locked.status == 503 and locked.headers.get("Retry-After")
            # even with the right password, from that address on the edge
            assert edge(dave).register().status == 503
        finally:
            wrong.close()
        assert s.ctl_ok("status", "--json") and status(s)["edge"]["limits"]["auth_refused"] >= 1
        inside = lan(s, dave)
        inside.close()
    finally:
        c.close()
        d.close()


def _closed(sock: socket.socket, timeout: float = 10) -> bool:
    """Whether the server closed this TLS connection (EOF before `timeout`)."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65535):
                return True
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def raw_partner(a: Server, b: Server) -> SipClient:
    """A raw client on b's edge with a's certificate: to b, a connection of partner a.test."""
    ctx = insecure_context()
    ctx.load_cert_chain(a.data_dir / "cert.pem", a.data_dir / "key.pem")
    return SipClient(
        b.ports["edge_sip_tls"], "mallory", "x", "a.test", "tls", host=B_HOST, context=ctx
    )


def test_partner_connection_over_its_request_rate_gets_503_with_retry_after(
    make_server: Callable[..., Server],
) -> None:
    a, b = sip_pair(make_server, edge_extra_b="federation_stanzas_per_second = 2")
    (erin,) = b.new_users("erin")  # not signed in: her messages are stored at once
    raw = raw_partner(a, b)
    try:
        statuses = []
        for i in range(25):
            r = raw.request(
                "MESSAGE",
                f"sip:{erin}@b.test",
                [("Content-Type", "text/plain")],
                f"n{i}".encode(),
                auth=False,
            )
            statuses.append(r.status)
            if r.status == 503:
                assert r.headers.get("Retry-After") == "1"
        # a burst of five times the rate passes, then the connection must slow down
        assert 503 not in statuses[:9] and 503 in statuses, statuses
        assert not _closed(raw.sock, timeout=0.5)  # refused one by one, the connection stays
    finally:
        raw.close()
    edge = status(b)["edge"]
    assert edge["sip_federation"]["sip_fed_rate_limited"] >= 1
    assert edge["limits"]["federation_rate_exceeded"] >= 1
    assert edge["limits"]["limits"]["federation_stanzas_per_second"] == 2
    assert "federation_stanzas_per_second 2\n" in b.ctl_ok("status").stdout


def test_blocking_a_partner_closes_its_sip_connections_at_once(
    make_server: Callable[..., Server],
) -> None:
    a, b = sip_pair(make_server)
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    ca, ce = lan(a, alice), lan(b, erin)
    try:
        # a connection each way: a's to b, and b's to a
        assert message(ca, f"{erin}@b.test", "from a") == 200
        assert message(ce, f"{alice}@a.test", "from b") == 200
        assert status(a)["edge"]["sip_federation"]["links"] == {"b.test": "ready"}
        b.ctl_ok("federation", "block", "a.test")
        # b forgets a.test and closes both connections: a's link to b falls idle
        wait_until(
            "a's link to b closed",
            lambda: status(a)["edge"]["sip_federation"]["links"].get("b.test") != "ready",
        )
        assert "a.test" not in status(b)["edge"]["sip_federation"]["links"]
    finally:
        ca.close()
        ce.close()


def test_iq_to_a_partner_reached_over_sip_is_answered_service_unavailable_at_once(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, _ = sip_pair(make_server)
    (alice,) = a.new_users("alice")

    async def scenario() -> None:
        async with Sessions(a) as sa:
            xa = await sa.login(alice)
            started = time.monotonic()
            for target, call in (
                ("b.test", lambda: xa.plugin["xep_0030"].get_info(jid="b.test", timeout=10)),
                ("erin@b.test", lambda: xa.plugin["xep_0199"].send_ping("erin@b.test", timeout=10)),
                ("erin@b.test", lambda: xa.plugin["xep_0030"].get_items(jid="erin@b.test")),
            ):
                with pytest.raises(IqError) as e:
                    await call()
                assert e.value.condition == "service-unavailable", target
            # answered by our server, not after a connection attempt times out
            assert time.monotonic() - started < 5

    run(scenario())
    assert status(a)["edge"]["federation"]["outgoing"] == {}
