"""s2s streams over their lifetime, between two real servers (a.test on 127.0.0.2, b.test on
127.0.0.3): idle streams close and reopen transparently; a certificate reload (SIGHUP) reaches
the federation streams opened after it, as server and as client certificate."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from standard_edition import tls

from .server import Server, free_port
from .test_federation import A_HOST, B_HOST, status
from .test_reload import hang_up
from .xmppclient import Sessions, next_matching


def federation(other: str, host: str, port: int, idle: int) -> str:
    return (
        f'[federation]\nallow = ["{other}"]\nidle_timeout = {idle}\n'
        f'[federation.hosts]\n"{other}" = {{ xmpp = "{host}:{port}" }}\n'
    )


def pair(make_server: Callable[..., Server], idle_a: int, idle_b: int) -> tuple[Server, Server]:
    pa, pb = free_port(), free_port()
    a = make_server(
        federation("b.test", B_HOST, pb, idle_a),
        domain="a.test",
        edge_host=A_HOST,
        edge_ports={"s2s": pa},
    )
    b = make_server(
        federation("a.test", A_HOST, pa, idle_b),
        domain="b.test",
        edge_host=B_HOST,
        edge_ports={"s2s": pb},
    )
    return a, b


def federation_status(s: Server) -> dict[str, Any]:
    return status(s)["edge"]["federation"]  # type: ignore[no-any-return]


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"still not {what} after {timeout}s"
        time.sleep(0.2)


def no_streams(a: Server, b: Server) -> bool:
    fa, fb = federation_status(a), federation_status(b)
    return not (fa["outgoing"] or fa["incoming"] or fb["outgoing"] or fb["incoming"])


def fingerprint(cert: Path) -> str:
    leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    return hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()


@pytest.mark.parametrize(
    ("idle_a", "idle_b"), [(1, 0), (0, 1)], ids=["sender-closes", "receiver-closes"]
)
def test_idle_stream_closes_and_the_next_message_reopens_it(
    make_server: Callable[..., Server], run: Callable[..., Any], idle_a: int, idle_b: int
) -> None:
    a, b = pair(make_server, idle_a, idle_b)
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    closer = a if idle_a else b

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            ce = await sb.login(erin)
            ca.send_message(mto=f"{erin}@b.test", mbody="first", mtype="chat")
            await next_matching(ce.inbox, lambda m: m["body"] == "first", 15)
            # nothing more is said: the stream goes, closed by the side with the timeout
            wait_until("closed", lambda: no_streams(a, b))
            assert federation_status(closer)["s2s_idle_closed"] >= 1
            # the next message brings a new stream up, waiting in the queue meanwhile
            for n in range(3):
                ca.send_message(mto=f"{erin}@b.test", mbody=f"again {n}", mtype="chat")
            for n in range(3):
                got = await next_matching(ce.inbox, lambda m: m["body"].startswith("again"), 15)
                assert got["body"] == f"again {n}"  # in order, none lost
            ce.send_message(mto=f"{alice}@a.test", mbody="and back", mtype="chat")
            await next_matching(ca.inbox, lambda m: m["body"] == "and back", 15)

    run(scenario(), 90)
    fa = federation_status(a)
    assert fa["s2s_out_streams"] >= 2 and fa["s2s_bounced"] == 0, fa
    for s in (a, b):
        log = s.log_path.read_text()
        assert "Traceback" not in log and "bad stream" not in log


def test_certificate_reload_reaches_federation_streams(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server, 1, 1)
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    old = fingerprint(a.data_dir / "cert.pem")

    async def exchange(body: str) -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            ce = await sb.login(erin)
            ca.send_message(mto=f"{erin}@b.test", mbody=body, mtype="chat")
            await next_matching(ce.inbox, lambda m: m["body"] == body, 15)
            ce.send_message(mto=f"{alice}@a.test", mbody=body + " back", mtype="chat")
            await next_matching(ca.inbox, lambda m: m["body"] == body + " back", 15)

    run(exchange("before"), 60)
    # b saw a's certificate both ways: as a's client certificate on a's stream to b, and as
    # a's server certificate when b's stream to a did STARTTLS
    assert federation_status(b)["peer_certificates"]["a.test"] == {
        "inbound": old,
        "outbound": old,
    }
    wait_until("closed", lambda: no_streams(a, b))
    # the admin replaces the certificate and reloads (systemctl reload: SIGHUP)
    tls.make_self_signed("a.test", a.data_dir / "cert.pem", a.data_dir / "key.pem")
    new = fingerprint(a.data_dir / "cert.pem")
    assert new != old
    hang_up(a, "reload: done")
    run(exchange("after"), 60)
    seen = federation_status(b)["peer_certificates"]["a.test"]
    assert seen == {"inbound": new, "outbound": new}, seen
