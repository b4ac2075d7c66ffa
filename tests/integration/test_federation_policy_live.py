"""Policy changes take effect on live federation traffic (DESIGN §7, edge/enforce.py).

One pair of servers for the module (a.test on 127.0.0.2, b.test on 127.0.0.3, federating over
s2s as in test_federation.py): a user losing federation access first, then a whole domain
blocked, which ends the module's federation. Rooms on both sides: partners in ours
(xmpp/muc_federation.py) and ours in the partner's (xmpp/partner_rooms.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from .server import Server
from .test_conference import USER, invite, is_invite, join
from .test_federation import pair, status, subscribe_both_ways
from .test_s2s_lifecycle import wait_until
from .xmppclient import Client, Sessions, next_matching, nothing_matching


@pytest.fixture(scope="module")
def servers(make_module_server: Callable[..., Server]) -> tuple[Server, Server]:
    return pair(make_module_server)


def unavailable_from(bare: str) -> Callable[[Any], bool]:
    return lambda p: p["from"].bare == bare and p["type"] == "unavailable"


def removed(room: str, nick: str) -> Callable[[Any], bool]:
    """The unavailable presence of `nick` leaving `room` with XEP-0045 status 307."""

    def match(p: Any) -> bool:
        return (
            str(p["from"]) == f"{room}/{nick}"
            and p["type"] == "unavailable"
            and p.xml.find(f"{USER}x/{USER}status[@code='307']") is not None
        )

    return match


def taken_out(room: str, nick: str) -> Callable[[Any], bool]:
    """The self-presence our server gives a client it took out of a partner's room: 110
    (this is you), 307 (removed) and 333 (by a server, for a technical reason)."""

    def match(p: Any) -> bool:
        codes = {s.get("code") for s in p.xml.findall(f"{USER}x/{USER}status")}
        return (
            str(p["from"]) == f"{room}/{nick}"
            and p["type"] == "unavailable"
            and {"110", "307", "333"} <= codes
        )

    return match


def _any(preds: tuple[Callable[[Any], bool], ...], x: Any) -> bool:
    return any(p(x) for p in preds)


async def all_matching(queue: Any, *preds: Callable[[Any], bool], timeout: float = 15) -> None:
    """Each of `preds` matched by some stanza from `queue`, in any order."""
    left = list(preds)
    while left:
        got = await next_matching(queue, partial(_any, tuple(left)), timeout)
        left = [p for p in left if not p(got)]


async def invited_join(host: Client, guest: Client, room: str, guest_jid: str, nick: str) -> None:
    invite(host, room, guest_jid)
    await next_matching(guest.inbox, is_invite, 15)
    await join(guest, room, nick)


def test_user_losing_federation_access_goes_offline_for_partners_and_leaves_shared_rooms(
    servers: tuple[Server, Server], run: Callable[..., Any]
) -> None:
    a, b = servers
    alice, carol = a.new_users("alice", "carol")
    (erin,) = b.new_users("erin")
    ja, je = f"{alice}@a.test", f"{erin}@b.test"
    owned = f"alices{alice}@conference.a.test"  # alice owns it
    other = f"carols{carol}@conference.a.test"  # carol owns it, alice is a participant
    partners = f"erins{erin}@conference.b.test"  # erin's room on the partner's server

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            cc = await sa.login(carol)
            ce = await sb.login(erin)
            await subscribe_both_ways(ca, ce, ja, je)
            await join(ca, owned, "alice")
            await invited_join(ca, ce, owned, je, "erin")
            await join(cc, other, "carol")
            await invited_join(cc, ce, other, je, "erin")
            await invited_join(cc, ca, other, ja, "alice")
            await join(ce, partners, "erin")
            await invited_join(ce, ca, partners, ja, "alice")

            a.ctl_ok("policy", ja, "--federation-access", "off")
            # the partner sees alice go offline, and alice's client sees erin go offline
            # in her own room the federated occupant is removed; in carol's room alice goes;
            # and her own server takes her out of erin's room
            await all_matching(
                ca.presences,
                unavailable_from(je),
                removed(owned, "erin"),
                removed(other, "alice"),
                taken_out(partners, "alice"),
            )
            await all_matching(ce.presences, unavailable_from(ja), removed(owned, "erin"))
            await next_matching(cc.presences, removed(other, "alice"), 15)
            # erin stays in carol's room, and still talks with carol there
            ce.send_message(mto=other, mbody="still here", mtype="groupchat")
            await next_matching(cc.inbox, lambda m: m["body"] == "still here", 15)
            # nothing of alice's reaches the partner any more, nor her lines in erin's room
            ca.send_presence(pshow="dnd")
            await nothing_matching(ce.presences, lambda p: p["from"].bare == ja, 1.5)
            ca.send_message(mto=partners, mbody="let me back", mtype="groupchat")
            err = await next_matching(ca.inbox, lambda m: m["type"] == "error", 15)
            assert err["error"]["condition"] == "not-allowed"
            # alice and carol still chat inside
            ca.send_message(mto=f"{carol}@a.test", mbody="inside", mtype="chat")
            await next_matching(cc.inbox, lambda m: m["body"] == "inside", 10)

    run(scenario(), 120)
    assert status(a)["edge"]["policy"]["policy_presence_withdrawn"] >= 1


def test_blocking_a_domain_closes_its_streams_and_removes_its_occupants_at_once(
    servers: tuple[Server, Server], run: Callable[..., Any]
) -> None:
    a, b = servers
    (dave,) = a.new_users("dave")
    (frank,) = b.new_users("frank")
    jd, jf = f"{dave}@a.test", f"{frank}@b.test"
    room = f"daves{dave}@conference.a.test"
    partners = f"franks{frank}@conference.b.test"  # frank's room on the partner's server

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            cd = await sa.login(dave)
            cf = await sb.login(frank)
            await subscribe_both_ways(cd, cf, jd, jf)
            await join(cd, room, "dave")
            await invited_join(cd, cf, room, jf, "frank")
            await join(cf, partners, "frank")
            await invited_join(cf, cd, partners, jd, "dave")
            fed = status(a)["edge"]["federation"]
            assert fed["outgoing"].get("b.test") == "ready" and "b.test" in fed["incoming"]

            a.ctl_ok("federation", "block", "b.test")
            # both directions close at once, with a policy-violation stream error
            wait_until(
                "without streams to and from b.test",
                lambda: (
                    (f := status(a)["edge"]["federation"])["incoming"] == []
                    and not any("b.test" in k for k in f["outgoing"])
                ),
            )
            # dave's client sees frank leave the room (307) and go offline, and is told that
            # it left frank's room on b.test, which can no longer say so itself
            await all_matching(
                cd.presences,
                removed(room, "frank"),
                unavailable_from(jf),
                taken_out(partners, "dave"),
            )
            # the room is out of reach: a line for it is refused here, and never arrives
            cd.send_message(mto=partners, mbody="still there?", mtype="groupchat")
            err = await next_matching(cd.inbox, lambda m: m["type"] == "error", 15)
            assert err["error"]["condition"] == "not-allowed"
            await nothing_matching(cf.inbox, lambda m: m["body"] == "still there?", 1)
            # nothing passes any more, either way
            cd.send_presence(pshow="away")
            await nothing_matching(cf.presences, lambda p: p["from"].bare == jd, 1.5)
            cf.send_message(mto=jd, mbody="anyone?", mtype="chat")
            err = await next_matching(cf.inbox, lambda m: m["type"] == "error", 15)
            assert err["error"]["condition"] == "remote-server-not-found"
            await nothing_matching(cd.inbox, lambda m: m["body"] == "anyone?", 0.5)

    run(scenario(), 120)
    assert status(a)["edge"]["federation"]["s2s_policy_closed"] >= 2
    log = b.log_path.read_text(errors="replace")
    # what b's side of each stream was told
    assert "s2s: stream b.test -> a.test: stream error policy-violation" in log
    assert "s2s: stream from a.test ended with stream error policy-violation" in log
