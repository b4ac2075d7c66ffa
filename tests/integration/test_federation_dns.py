"""Partners found through DNS alone ([federation] dns, no [federation.hosts] map; DESIGN §7).

The test's DNS server (dnsserver.py) answers for both domains: a.test has _xmpp-server._tcp
SRV records, so b.test reaches it over XMPP s2s; b.test has none, only
_sipfederationtls._tcp, so a.test reaches it over SIP federation. The SRV targets are names
only that server knows, so their A records must come from it too. Each admin pinned the
other's self-signed certificate (SIP federation needs it; s2s then uses SASL EXTERNAL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .prosody import DNS
from .server import Server, free_port
from .test_federation import A_HOST, B_HOST, chat_both_ways, status
from .xmppclient import Sessions


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], DNS]]:
    started: list[DNS] = []

    def start(table: dict[str, Any]) -> DNS:
        d = DNS(table, tmp_path / "dns.log")
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def test_partners_found_by_srv_for_xmpp_and_sipfederationtls_for_sip(
    make_server: Callable[..., Server],
    dns_server: Callable[[dict[str, Any]], DNS],
    run: Callable[..., Any],
    tmp_path: Path,
) -> None:
    a_s2s, a_sip, b_s2s, b_sip = (free_port() for _ in range(4))
    dns = dns_server(
        {
            "a.test": {"srv": ["xmpp.a.test", a_s2s]},
            "xmpp.a.test": {"a": A_HOST},
            "b.test": {"services": {"_sipfederationtls._tcp": ["sip.b.test", b_sip]}},
            "sip.b.test": {"a": B_HOST},
        }
    )

    def federation(other: str) -> str:
        return f'[federation]\nallow = ["{other}"]\ndns = ["127.0.0.1:{dns.port}"]\n'

    a = make_server(
        federation("b.test"),
        domain="a.test",
        sip=True,
        edge_host=A_HOST,
        edge_ports={"s2s": a_s2s, "sip_tls": a_sip},
    )
    b = make_server(
        federation("a.test"),
        domain="b.test",
        sip=True,
        edge_host=B_HOST,
        edge_ports={"s2s": b_s2s, "sip_tls": b_sip},
    )
    a.ctl_ok("federation", "trust", "b.test", "--cert", str(b.data_dir / "cert.pem"))
    b.ctl_ok("federation", "trust", "a.test", "--cert", str(a.data_dir / "cert.pem"))
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    ja, je = f"{alice}@a.test", f"{erin}@b.test"

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            ce = await sb.login(erin)
            await chat_both_ways(ca, ce, ja, je, "to b over SIP", "to a over XMPP", 20)

    run(scenario(), 90)
    sa, sb = status(a)["edge"], status(b)["edge"]
    # never both for one domain: a reaches b over SIP only, b reaches a over XMPP only
    assert sa["sip_federation"]["links"] == {"b.test": "ready"}
    assert sa["federation"]["outgoing"] == {}
    assert sb["federation"]["outgoing"] == {"a.test": "ready"}
    assert sb["sip_federation"]["sip_fed_connections_out"] == 0
    queries = dns.log.read_text()
    for asked in (
        "_xmpp-server._tcp.a.test SRV",
        "xmpp.a.test A",
        "_xmpp-server._tcp.b.test SRV",
        "_sipfederationtls._tcp.b.test SRV",
        "sip.b.test A",
    ):
        assert f"query {asked}" in queries, (asked, queries)
