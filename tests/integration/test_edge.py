"""The edge listeners (DESIGN §7): remote logins, outside access, rate limits and lockout.

The server's LAN listeners are on 127.0.0.1 and its edge listeners on 127.0.0.2. Clients pick
their source address (127.0.0.x) to play outsiders at different addresses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from .rawxmpp import FEATURES, SASL_RESULT, RawStream, bind, header, insecure_context
from .server import Server, free_port
from .xmppclient import LoginFailed, Sessions, next_matching

EDGE = "127.0.0.2"


async def edge_plain(
    server: Server, user: str, password: str, source: str, timeout: float = 15
) -> tuple[str, RawStream | None]:
    """Direct TLS to the edge from `source`, SASL PLAIN; ("success", stream) or
    (failure condition, None); ("refused", None) when the connection is not served."""
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection(
                EDGE,
                server.ports["edge_c2s_tls"],
                ssl=insecure_context(),
                server_hostname=server.domain,
                local_addr=(source, 0),
            ),
            timeout,
        )
    except (OSError, TimeoutError):
        return "refused", None
    s = RawStream(r, w, server.domain)
    try:
        s.send(header(server.domain))
        await s.until(FEATURES, timeout)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        s.send(
            b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
            + token.encode()
            + b"</auth>"
        )
        got = await s.until(SASL_RESULT, timeout)
    except (OSError, ConnectionError, TimeoutError):
        s.close()
        return "refused", None
    if b"<success" in got:
        return "success", s
    s.close()
    for cond in (b"temporary-auth-failure", b"not-authorized"):
        if cond in got:
            return cond.decode(), None
    return got.decode(errors="replace"), None


def dropped(host: str, port: int, source: str) -> bool:
    """True when the server closes (or resets) a new connection before saying anything."""
    try:
        with socket.create_connection((host, port), timeout=2, source_address=(source, 0)) as c:
            c.settimeout(5)
            return c.recv(100) == b""
    except ConnectionResetError:
        return True


def edge_server(make_server: Callable[..., Server], edge_extra: str = "") -> Server:
    return make_server(domain="example.test", edge_host=EDGE, edge_extra=edge_extra)


def test_remote_user_logs_in_on_the_edge_and_the_session_says_so(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    s = edge_server(make_server)
    dave, erin = s.new_users("dave", "erin")

    async def scenario() -> None:
        async with Sessions(s) as ss:
            cd = await ss.login(dave, listener="edge_c2s")  # STARTTLS
            ce = await ss.login(erin, listener="edge_c2s_tls", direct_tls=True)
            await ss.login(erin, resource="desk")  # the LAN
            cd.send_message(mto=f"{erin}@example.test", mbody="from home", mtype="chat")
            await next_matching(ce.inbox, lambda m: m["body"] == "from home", 10)

    run(scenario())
    # sessions ended; the counters stay
    edge = json.loads(s.ctl_ok("status", "--json").stdout)["edge"]["limits"]
    assert edge["connections"] >= 2 and edge["auth_failures"] == 0


def test_edge_sessions_are_marked_edge_in_se_ctl_sessions(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    s = edge_server(make_server)
    (dave,) = s.new_users("dave")

    async def scenario() -> list[dict[str, Any]]:
        async with Sessions(s) as ss:
            await ss.login(dave, listener="edge_c2s", resource="home")
            await ss.login(dave, resource="office")
            return json.loads(s.ctl_ok("sessions", "--json").stdout)  # type: ignore[no-any-return]

    origins = {x["jid"].split("/")[1]: x["origin"] for x in run(scenario())}
    assert origins == {"home": "edge", "office": "internal"}


def test_login_refused_on_the_edge_without_outside_access(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    s = edge_server(make_server)
    (dave,) = s.new_users("dave")

    async def scenario() -> None:
        async with Sessions(s) as ss:
            home = await ss.login(dave, listener="edge_c2s", resource="home")
            out = s.ctl_ok("policy", f"{dave}@example.test", "--outside-access", "off").stdout
            assert "outside access off (se-ctl)" in out
            assert await home.closed_by_server()  # the open remote session ends at once
            with pytest.raises(LoginFailed) as e:
                await ss.login(dave, listener="edge_c2s", resource="home2")
            assert e.value.conditions[-1] == "not-authorized"
            await ss.login(dave, resource="office")  # the LAN still works

    run(scenario())
    assert (
        json.loads(s.ctl_ok("status", "--json").stdout)["edge"]["limits"]["outside_access_refused"]
        >= 1
    )


def test_internal_listeners_do_not_answer_on_the_edge_address(
    make_server: Callable[..., Server],
) -> None:
    s = make_server(
        domain="example.test",
        edge_host=EDGE,
        sip=True,
        upload=True,
        edge_ports={"sip_tls": free_port()},
    )
    internal = sorted(n for n in s.ports if not n.startswith("edge_"))
    assert internal == ["c2s", "c2s_tls", "sip", "sip_tls", "upload"]
    for name in internal:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((EDGE, s.ports[name]), timeout=2).close()
    # SIP over UDP neither: the kernel answers port unreachable, nothing of ours does
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect((EDGE, s.ports["sip"]))
        udp.settimeout(2)
        udp.send(b"OPTIONS sip:example.test SIP/2.0\r\n\r\n")
        with pytest.raises(ConnectionRefusedError):
            udp.recv(100)
    # while every edge listener answers there (c2s, c2s_tls, s2s, sip_tls, upload)
    edge = sorted(n for n in s.ports if n.startswith("edge_"))
    assert len(edge) == 5
    for name in edge:
        socket.create_connection((EDGE, s.ports[name]), timeout=2).close()
    # and the control socket is a local (unix) socket in the data directory, not a port
    assert (s.data_dir / "control.sock").is_socket()


def test_remote_session_over_its_stanza_rate_is_closed_while_the_lan_is_not(
    make_server: Callable[..., Server],
) -> None:
    s = edge_server(make_server, "stanzas_per_second = 5\n")
    dave, erin = s.new_users("dave", "erin")
    burst = b"".join(
        f"<message to='{erin}@example.test' type='chat'><body>{i}</body></message>".encode()
        for i in range(60)
    )

    async def scenario() -> None:
        outcome, stream = await edge_plain(s, dave, s.passwords[dave], "127.0.0.12")
        assert outcome == "success" and stream is not None
        await bind(stream, "home")
        stream.send(burst)  # twelve times the rate, at once: more than the burst allowance
        data, closed = await stream.read_until_closed(15)
        assert closed and b"<policy-violation" in data, data[-300:]
        # the LAN has no such limit: the same burst passes
        async with Sessions(s) as ss:
            ce = await ss.login(erin)
            cd = await ss.login(dave, resource="office")
            for i in range(60):
                cd.send_message(mto=f"{erin}@example.test", mbody=f"lan {i}", mtype="chat")
            await next_matching(ce.inbox, lambda m: m["body"] == "lan 59", 15)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    limits = json.loads(s.ctl_ok("status", "--json").stdout)["edge"]["limits"]
    assert limits["stanza_rate_exceeded"] >= 1 and limits["limits"]["stanzas_per_second"] == 5
    assert ", stanzas_per_second 5," in s.ctl_ok("status").stdout  # the text shows it too


def test_brute_force_on_the_edge_is_locked_out_while_others_log_in(
    make_server: Callable[..., Server],
) -> None:
    # generous connection limits: what stops the guessing here is the login backoff
    s = edge_server(
        make_server,
        "connections_per_minute = 100000\nmax_connections_per_address = 50\n"
        "auth_failures_free = 5\naddress_failures_free = 30\nauth_backoff = 2\n",
    )
    victim, other = s.new_users("victim", "other")
    attacker = "127.0.0.9"

    async def attack() -> Counter[str]:
        outcomes: Counter[str] = Counter()
        queue = iter(range(1000))

        async def worker() -> None:
            for i in queue:
                outcome, _ = await edge_plain(s, victim, f"guess-{i}", attacker)
                outcomes[outcome] += 1

        await asyncio.gather(*(worker() for _ in range(50)))
        return outcomes

    started = time.monotonic()
    outcomes = asyncio.run(asyncio.wait_for(attack(), 240))
    took = time.monotonic() - started
    assert sum(outcomes.values()) == 1000
    assert outcomes["success"] == 0
    # only the guesses in flight before the first answers (50 workers) and the few free ones
    # were checked; the rest were refused unheard
    assert outcomes["not-authorized"] <= 80, outcomes
    # (a connection over the per-address limit is dropped unanswered: "refused")
    assert outcomes["temporary-auth-failure"] + outcomes["refused"] >= 920, outcomes

    async def afterwards() -> None:
        # the right password from the attacker's address is refused too: locked
        outcome, _ = await edge_plain(s, victim, s.passwords[victim], attacker)
        assert outcome == "temporary-auth-failure"
        # the same user from another address, another user, and the LAN all work
        for user, source in ((victim, "127.0.0.10"), (other, "127.0.0.11")):
            outcome, stream = await edge_plain(s, user, s.passwords[user], source)
            assert outcome == "success", (user, outcome)
            assert stream is not None
            await bind(stream, "r")
            stream.close()
        async with Sessions(s) as ss:
            await ss.login(victim, resource="lan")

    asyncio.run(asyncio.wait_for(afterwards(), 60))
    limits = json.loads(s.ctl_ok("status", "--json").stdout)["edge"]["limits"]
    # the server's counters agree with what the attacker saw: every guess it answered with
    # temporary-auth-failure was a refused login, and the rest were refused connections
    assert limits["auth_refused"] >= outcomes["temporary-auth-failure"], (limits, outcomes)
    assert limits["auth_refused"] + limits["connections_refused"] >= 900, limits
    assert limits["locked"] >= 1, limits
    print(f"1000 guesses answered in {took:.1f}s: {dict(outcomes)}")


def test_connections_per_address_are_limited_on_the_edge(
    make_server: Callable[..., Server],
) -> None:
    s = edge_server(make_server, "max_connections_per_address = 3\n")
    held = [
        socket.create_connection(
            (EDGE, s.ports["edge_c2s"]), timeout=2, source_address=("127.0.0.7", 0)
        )
        for _ in range(3)
    ]
    try:
        # accepted by the kernel, then dropped by the server without a word
        assert dropped(EDGE, s.ports["edge_c2s"], "127.0.0.7")
        # another address is served
        other = socket.create_connection(
            (EDGE, s.ports["edge_c2s"]), timeout=2, source_address=("127.0.0.8", 0)
        )
        other.sendall(header(s.domain))
        other.settimeout(5)
        assert b"stream:stream" in other.recv(1000)
        other.close()
    finally:
        for c in held:
            c.close()
    refused = json.loads(s.ctl_ok("status", "--json").stdout)["edge"]["limits"]
    assert refused["connections_refused"] >= 1
