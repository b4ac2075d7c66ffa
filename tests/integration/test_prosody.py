"""Federation over XMPP s2s with a real Prosody (Debian's package) on the other end (DESIGN §7).

Our a.test (127.0.0.2) and Prosody's b.test (127.0.0.3), set up by prosody.py: Prosody finds
us only through the test's DNS server. Both certificates are self-signed and unpinned, so both
directions authenticate by XEP-0220 dialback after STARTTLS, unless the test pins them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .prosody import DNS, Prosody, ProsodyUnavailable, federation_toml, records, unavailable
from .server import Server, free_port
from .test_conference import USER, join
from .test_federated_rooms import invited_join, lines_both_ways
from .test_federation import A_HOST, available_from, chat_both_ways, status
from .test_s2s_lifecycle import wait_until
from .xmppclient import Sessions, next_matching


@pytest.fixture
def prosody_pair(
    make_server: Callable[..., Server], tmp_path: Path
) -> Iterator[Callable[..., tuple[Server, Prosody]]]:
    """Our a.test and Prosody's b.test, federating; pinned=True: each trusts the other's
    self-signed certificate (se-ctl federation trust; Prosody's cafile), so SASL EXTERNAL."""
    why = unavailable()
    if why is not None:
        pytest.skip(why)
    started: list[tuple[Prosody, DNS]] = []

    def make(pinned: bool = False, idle_timeout: int = 300) -> tuple[Server, Prosody]:
        pa, pb = free_port(), free_port()
        dns = DNS(records(pa, pb), tmp_path / "dns.log")
        p = Prosody(tmp_path / "prosody", dns.port, pb)
        p.debug_log()
        started.append((p, dns))
        a = make_server(
            federation_toml(p.ports["s2s"], idle_timeout),
            domain="a.test",
            edge_host=A_HOST,
            edge_ports={"s2s": pa},
        )
        if pinned:
            a.ctl_ok("federation", "trust", "b.test", "--cert", str(p.cert))
            p.trust(a.data_dir / "cert.pem")
        try:
            p.start()
        except ProsodyUnavailable as e:
            pytest.skip(str(e))
        return a, p

    yield make
    for p, dns in started:
        p.stop()
        dns.stop()
        print(f"--- prosody log ---\n{p.log_tail()}")


def alice_and_erin(a: Server, p: Prosody) -> tuple[str, str]:
    """A new user on our side, and erin on Prosody's."""
    (alice,) = a.new_users("alice")
    p.add_user("erin")
    return alice, "erin"


def test_prosody_subscription_presence_and_messages_both_ways(
    prosody_pair: Callable[..., tuple[Server, Prosody]], run: Callable[..., Any]
) -> None:
    a, p = prosody_pair()
    alice, erin = alice_and_erin(a, p)
    ja, je = f"{alice}@a.test", f"{erin}@b.test"

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(p) as sp:
            ca = await sa.login(alice)
            ce = await sp.login(erin)
            # alice asks; erin's client approves and asks back (auto_subscribe)
            ca.send_presence(pto=je, ptype="subscribe")
            await next_matching(ca.presences, available_from(je), 30)
            await next_matching(ce.presences, available_from(ja), 30)
            await chat_both_ways(ca, ce, ja, je, "hello prosody", "hello appliance", 15)
            # a presence change crosses both ways
            ca.send_presence(pshow="dnd")
            await next_matching(
                ce.presences, lambda x: x["from"].bare == ja and x["show"] == "dnd", 15
            )
            ce.send_presence(pshow="away")
            await next_matching(
                ca.presences, lambda x: x["from"].bare == je and x["show"] == "away", 15
            )
            # going offline is seen on the other side
            await sp.clients[0].stop()
            await next_matching(
                ca.presences, lambda x: x["from"].bare == je and x["type"] == "unavailable", 15
            )

    run(scenario(), 120)
    fed = status(a)["edge"]["federation"]
    assert fed["s2s_dialback"] >= 1, fed
    assert fed["outgoing"] == {"b.test": "ready"} and "b.test" in fed["incoming"], fed


def test_prosody_with_pinned_certificates_authenticates_by_sasl_external(
    prosody_pair: Callable[..., tuple[Server, Prosody]], run: Callable[..., Any]
) -> None:
    a, p = prosody_pair(pinned=True)
    alice, erin = alice_and_erin(a, p)
    ja, je = f"{alice}@a.test", f"{erin}@b.test"

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(p) as sp:
            ca = await sa.login(alice)
            ce = await sp.login(erin)
            await chat_both_ways(ca, ce, ja, je, "over EXTERNAL", "and back", 15)

    run(scenario(), 90)
    fed = status(a)["edge"]["federation"]
    assert fed["s2s_external"] >= 1 and fed["s2s_dialback"] == 0, fed
    # and Prosody took our certificate for a.test (its log is the only place that says so)
    assert "Accepting SASL EXTERNAL identity from a.test" in p.log.read_text()


def test_prosody_user_joins_our_room_and_our_user_joins_prosodys(
    prosody_pair: Callable[..., tuple[Server, Prosody]], run: Callable[..., Any]
) -> None:
    a, p = prosody_pair()
    alice, erin = alice_and_erin(a, p)
    ours, theirs = "team@conference.a.test", "lounge@conference.b.test"

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(p) as sp:
            ca = await sa.login(alice)
            ce = await sp.login(erin)
            # our room, a mediated invitation over s2s, Prosody's user joins and chats
            await join(ca, ours, "alice")
            await invited_join(ca, ce, ours, f"{erin}@b.test", "erin", 30)
            pres = await next_matching(ca.presences, lambda x: str(x["from"]) == f"{ours}/erin")
            item = pres.xml.find(f"{USER}x/{USER}item")
            assert item is not None and item.get("jid", "").startswith(f"{erin}@b.test/")
            await lines_both_ways(ca, ce, ours, "welcome erin", "thanks alice")
            # Prosody's room: erin opens it, alice joins from here, lines cross both ways
            await join(ce, theirs, "erin")
            await join(ca, theirs, "alice")
            await lines_both_ways(ca, ce, theirs, "hello prosody room", "hello appliance")

    run(scenario(), 120)
    outgoing = status(a)["edge"]["federation"]["outgoing"]
    assert {"b.test", "conference.b.test", "conference.a.test -> b.test"} <= set(outgoing)


def test_idle_streams_with_prosody_close_and_reopen(
    prosody_pair: Callable[..., tuple[Server, Prosody]], run: Callable[..., Any]
) -> None:
    a, p = prosody_pair(idle_timeout=1)
    alice, erin = alice_and_erin(a, p)
    ja, je = f"{alice}@a.test", f"{erin}@b.test"

    def closed() -> bool:
        fed = status(a)["edge"]["federation"]
        return not fed["outgoing"] and not fed["incoming"]

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(p) as sp:
            ca = await sa.login(alice)
            ce = await sp.login(erin)
            for n in range(2):
                await chat_both_ways(ca, ce, ja, je, f"to prosody {n}", f"from prosody {n}", 30)
                # both streams go quiet: we close ours and the one Prosody opened to us
                await asyncio.to_thread(wait_until, "closed", closed)

    run(scenario(), 120)
    fed = status(a)["edge"]["federation"]
    assert fed["s2s_idle_closed"] >= 4 and fed["s2s_out_streams"] >= 2, fed
    assert "Traceback" not in a.log_path.read_text()
