"""Federation over XMPP s2s between two real servers with different domains (DESIGN §7).

a.test listens outside on 127.0.0.2, b.test on 127.0.0.3; each finds the other through its
[federation.hosts] map. Their certificates are self-signed, so the streams authenticate by
XEP-0220 dialback, or by SASL EXTERNAL once each admin pinned the other's certificate.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Callable
from typing import Any

from .rawxmpp import RawStream
from .server import Server, free_port
from .xmppclient import Sessions, next_matching, nothing_matching

A_HOST, B_HOST = "127.0.0.2", "127.0.0.3"


def federation_toml(other: str, host: str, port: int, mode: str, allow: bool) -> str:
    allowed = f'"{other}"' if allow else ""
    return (
        f'[federation]\nmode = "{mode}"\nallow = [{allowed}]\n'
        f'[federation.hosts]\n"{other}" = {{ xmpp = "{host}:{port}" }}\n'
    )


def pair(
    make_server: Callable[..., Server],
    mode: str = "allowlist",
    allow: bool = True,
    edge_extra: str = "",
) -> tuple[Server, Server]:
    """a.test and b.test federating over s2s; edge_extra: more [edge] lines for both."""
    pa, pb = free_port(), free_port()
    a = make_server(
        federation_toml("b.test", B_HOST, pb, mode, allow),
        domain="a.test",
        edge_host=A_HOST,
        edge_ports={"s2s": pa},
        edge_extra=edge_extra,
    )
    b = make_server(
        federation_toml("a.test", A_HOST, pa, mode, allow),
        domain="b.test",
        edge_host=B_HOST,
        edge_ports={"s2s": pb},
        edge_extra=edge_extra,
    )
    return a, b


def status(s: Server) -> dict[str, Any]:
    return json.loads(s.ctl_ok("status", "--json").stdout)  # type: ignore[no-any-return]


def available_from(bare: str) -> Callable[[Any], bool]:
    return lambda p: p["from"].bare == bare and p["type"] in ("available", "", None)


def error_for(body: str) -> Callable[[Any], bool]:
    return lambda m: m["type"] == "error" and (m["body"] == body or m["error"]["condition"])


async def subscribe_both_ways(alice: Any, erin: Any, a: str, e: str) -> None:
    alice.send_presence(pto=e, ptype="subscribe")
    # erin's client approves (the request waited for her: another domain) and asks back
    await next_matching(alice.presences, available_from(e), 20)
    await next_matching(erin.presences, available_from(a), 20)


async def chat_both_ways(
    ca: Any, ce: Any, ja: str, je: str, there: str, back: str, timeout: float = 10
) -> None:
    """`there` from ca to je and `back` from ce to ja, each from its sender's bare JID."""
    ca.send_message(mto=je, mbody=there, mtype="chat")
    got = await next_matching(ce.inbox, lambda m: m["body"] == there, timeout)
    assert got["from"].bare == ja
    ce.send_message(mto=ja, mbody=back, mtype="chat")
    got = await next_matching(ca.inbox, lambda m: m["body"] == back, timeout)
    assert got["from"].bare == je


def test_federated_presence_and_messages_both_ways_by_dialback(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server)
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    ja, je = f"{alice}@a.test", f"{erin}@b.test"

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            ce = await sb.login(erin)
            await subscribe_both_ways(ca, ce, ja, je)
            await chat_both_ways(ca, ce, ja, je, "hello from a", "hello from b")
            # a presence change crosses too; erin is an External contact: availability only
            ca.send_presence(pshow="dnd", pstatus="a private note")
            p = await next_matching(ce.presences, lambda p: p["show"] == "dnd", 10)
            assert p["status"] == ""
            # going offline is seen on the other side
            await sa.clients[0].stop()
            await next_matching(
                ce.presences, lambda p: p["from"].bare == ja and p["type"] == "unavailable", 10
            )

    run(scenario())
    fed = status(a)["edge"]["federation"]
    assert fed["s2s_dialback"] >= 1 and fed["s2s_external"] == 0
    assert fed["outgoing"] == {"b.test": "ready"} and "b.test" in fed["incoming"]


def test_pinned_certificates_authenticate_by_sasl_external(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server)
    a.ctl_ok("federation", "trust", "b.test", "--cert", str(b.data_dir / "cert.pem"))
    b.ctl_ok("federation", "trust", "a.test", "--cert", str(a.data_dir / "cert.pem"))
    assert "b.test" in json.loads(a.ctl_ok("federation", "list", "--json").stdout)["trusted"]
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            ce = await sb.login(erin)
            ja, je = f"{alice}@a.test", f"{erin}@b.test"
            await chat_both_ways(ca, ce, ja, je, "over EXTERNAL", "and back", 15)

    run(scenario())
    for s in (a, b):
        fed = status(s)["edge"]["federation"]
        assert fed["s2s_external"] >= 1 and fed["s2s_dialback"] == 0, fed


def test_domain_not_allowed_gets_nothing_and_messages_bounce(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server)
    b.ctl_ok("federation", "block", "a.test")
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            ce = await sb.login(erin)
            ca.send_message(mto=f"{erin}@b.test", mbody="let me in", mtype="chat")
            err = await next_matching(ca.inbox, lambda m: m["type"] == "error", 15)
            assert err["error"]["condition"] == "remote-server-not-found"
            await nothing_matching(ce.inbox, lambda m: m["body"] == "let me in", 1)
            # b's own users cannot reach the blocked domain either
            ce.send_message(mto=f"{alice}@a.test", mbody="out", mtype="chat")
            err = await next_matching(ce.inbox, lambda m: m["type"] == "error", 10)
            assert err["error"]["condition"] == "not-allowed"

    run(scenario())
    assert status(b)["edge"]["federation"]["s2s_refused"] >= 1


def test_blocked_domain_stream_is_refused_at_once(make_server: Callable[..., Server]) -> None:
    _, b = pair(make_server)
    b.ctl_ok("federation", "block", "evil.test")

    async def connect() -> bytes:
        r, w = await asyncio.open_connection(B_HOST, b.ports["edge_s2s"])
        s = RawStream(r, w, "b.test")
        s.send(
            b"<?xml version='1.0'?><stream:stream from='evil.test' to='b.test' version='1.0' "
            b"xmlns='jabber:server' xmlns:db='jabber:server:dialback' "
            b"xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        got, closed = await s.read_until_closed(10)
        assert closed
        return got

    got = asyncio.run(connect())
    assert b"<policy-violation" in got
    assert b"starttls" not in got and b"features" not in got  # nothing offered, nothing told


def test_open_and_blocklist_modes_federate_with_any_domain_not_blocked(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server, mode="allowlist", allow=False)
    for s in (a, b):
        s.ctl_ok("federation", "mode", "open")
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            ce = await sb.login(erin)
            ca.send_message(mto=f"{erin}@b.test", mbody="open", mtype="chat")
            await next_matching(ce.inbox, lambda m: m["body"] == "open", 15)
            listing = json.loads(a.ctl_ok("federation", "list", "--json").stdout)
            assert listing["mode"] == "open" and listing["source"]["mode"] == "se-ctl"
            # blocklist mode: every domain but the blocked ones, b.test until it is blocked
            a.ctl_ok("federation", "mode", "blocklist")
            ca.send_message(mto=f"{erin}@b.test", mbody="blocklist", mtype="chat")
            await next_matching(ce.inbox, lambda m: m["body"] == "blocklist", 15)
            a.ctl_ok("federation", "block", "b.test")
            ca.send_message(mto=f"{erin}@b.test", mbody="blocked", mtype="chat")
            err = await next_matching(ca.inbox, lambda m: m["type"] == "error", 15)
            assert err["error"]["condition"] == "not-allowed"
            await nothing_matching(ce.inbox, lambda m: m["body"] == "blocked", 1)

    run(scenario())
    assert json.loads(a.ctl_ok("federation", "list", "--json").stdout)["mode"] == "blocklist"
    a.ctl_ok("config", "reset", "federation.mode")
    assert json.loads(a.ctl_ok("federation", "list", "--json").stdout)["mode"] == "allowlist"


def test_user_without_federation_access_chats_inside_only(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server)
    bob, carol = a.new_users("bob", "carol")
    (erin,) = b.new_users("erin")
    out = a.ctl_ok("policy", f"{bob}@a.test", "--federation-access", "off").stdout
    assert "federation access off" in out

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            cb = await sa.login(bob)
            cc = await sa.login(carol)
            ce = await sb.login(erin)
            cb.send_message(mto=f"{erin}@b.test", mbody="to partner", mtype="chat")
            err = await next_matching(cb.inbox, lambda m: m["type"] == "error", 10)
            assert err["error"]["condition"] == "not-allowed"
            ce.send_message(mto=f"{bob}@a.test", mbody="to bob", mtype="chat")
            err = await next_matching(ce.inbox, lambda m: m["type"] == "error", 15)
            assert err["error"]["condition"] == "service-unavailable"
            await nothing_matching(cb.inbox, lambda m: m["body"] == "to bob", 0.5)
            cb.send_message(mto=f"{carol}@a.test", mbody="inside", mtype="chat")
            await next_matching(cc.inbox, lambda m: m["body"] == "inside", 10)

    run(scenario())


async def bounced(a: Server, user: str, to: str, n: int, condition: str) -> None:
    """`n` messages from `user` to `to` each come back as an error with `condition`."""
    async with Sessions(a) as sa:
        ca = await sa.login(user)
        for i in range(n):
            ca.send_message(mto=to, mbody=f"hello {i}", mtype="chat")
        for _ in range(n):
            err = await next_matching(ca.inbox, lambda m: m["type"] == "error", 15)
            assert err["error"]["condition"] == condition


def test_unreachable_domain_bounces_remote_server_not_found(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    dead = free_port()  # nothing listens there
    a = make_server(
        federation_toml("gone.test", B_HOST, dead, "allowlist", True),
        domain="a.test",
        edge_host=A_HOST,
    )
    (alice,) = a.new_users("alice")
    run(bounced(a, alice, "someone@gone.test", 1, "remote-server-not-found"))


def test_silent_partner_bounces_what_waited_with_remote_server_timeout(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    # a partner that takes the TCP connection and never says a word
    silent = socket.socket()
    silent.bind((B_HOST, 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    a = make_server(
        '[federation]\nmode = "allowlist"\nallow = ["mute.test"]\nconnect_timeout = 1\n'
        f'[federation.hosts]\n"mute.test" = {{ xmpp = "{B_HOST}:{port}" }}\n',
        domain="a.test",
        edge_host=A_HOST,
    )
    (alice,) = a.new_users("alice")
    try:
        # queued while the stream comes up; each bounces when it does not, in time
        run(bounced(a, alice, "someone@mute.test", 3, "remote-server-timeout"))
    finally:
        silent.close()


def test_federation_list_shows_mode_and_lists(make_server: Callable[..., Server]) -> None:
    a = make_server(federation_toml("b.test", B_HOST, 5269, "allowlist", True), edge_host=A_HOST)
    out = a.ctl_ok("federation", "list").stdout
    assert re.search(r"mode: allowlist \(config\)", out)
    assert "allow: b.test (config)" in out
    a.ctl_ok("federation", "allow", "c.test")
    assert "allow: b.test, c.test (se-ctl)" in a.ctl_ok("federation", "list").stdout
    bad = a.ctl("federation", "allow", "not a domain")
    assert bad.returncode == 1 and "not a valid domain" in bad.stderr


def test_partner_stream_over_its_stanza_rate_is_slowed_down_not_refused(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server, edge_extra="federation_stanzas_per_second = 2")
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            ce = await sb.login(erin)
            loop = asyncio.get_running_loop()
            started = loop.time()
            for i in range(16):
                ce.send_message(mto=f"{alice}@a.test", mbody=f"n{i}", mtype="chat")
            # a burst of five times the rate passes at once; a's edge reads the rest at 2/s
            # (TCP holds them back on b's side): all arrive, in order, none refused
            got = [(await next_matching(ca.inbox, lambda m: m["body"][:1] == "n", 20))["body"]]
            while len(got) < 16:
                got.append(
                    (await next_matching(ca.inbox, lambda m: m["body"][:1] == "n", 20))["body"]
                )
            assert got == [f"n{i}" for i in range(16)]
            assert loop.time() - started >= 2.0  # six over the burst at two a second
            await nothing_matching(ce.inbox, lambda m: m["type"] == "error", 0.5)

    run(scenario())
    edge = status(a)["edge"]
    assert edge["federation"]["s2s_rate_limited"] >= 1
    assert edge["limits"]["federation_rate_exceeded"] >= 1
    assert edge["limits"]["limits"]["federation_stanzas_per_second"] == 2
