"""Rooms across federation (XEP-0045 over s2s) between two real servers, and the archive's
origin tag (DESIGN §6: internal, remote = signed in through the edge, federated).

a.test (edge on 127.0.0.2) and b.test (127.0.0.3) allow each other and find each other, and
each other's conference service, through [federation.hosts].
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .server import Server
from .test_conference import USER, invite, is_invite, join
from .test_federation import pair, status
from .xmppclient import Client, Sessions, next_matching, nothing_matching


def refused_join(c: Client, room: str, nick: str) -> Any:
    c.send_presence(pto=f"{room}/{nick}")
    return next_matching(c.presences, lambda p: p["type"] == "error" and p["from"].bare == room, 15)


async def invited_join(
    host: Client, guest: Client, room: str, guest_jid: str, nick: str, timeout: float = 15
) -> None:
    """A mediated invitation (XEP-0045 §7.8.2) from `host` reaches `guest` from the room;
    `guest` then joins as `nick`."""
    invite(host, room, guest_jid)
    got = await next_matching(guest.inbox, is_invite, timeout)
    assert got["from"].bare == room
    await join(guest, room, nick)


async def lines_both_ways(
    ca: Client, ce: Client, room: str, there: str, back: str, timeout: float = 15
) -> None:
    """alice (ca) says `there` in the room and erin (ce) hears it, then erin answers `back`;
    each line comes from the speaker's occupant JID."""
    ca.send_message(mto=room, mbody=there, mtype="groupchat")
    m = await next_matching(ce.inbox, lambda m: m["body"] == there, timeout)
    assert str(m["from"]) == f"{room}/alice" and m["type"] == "groupchat"
    ce.send_message(mto=room, mbody=back, mtype="groupchat")
    m = await next_matching(ca.inbox, lambda m: m["body"] == back, timeout)
    assert str(m["from"]) == f"{room}/erin" and m["type"] == "groupchat"


def archive(s: Server, *args: str) -> list[dict[str, Any]]:
    out = s.ctl_ok("archive", "search", "--json", *args).stdout
    return json.loads(out)["records"]  # type: ignore[no-any-return]


def test_partner_user_joins_our_room_by_invitation_and_chats_both_ways(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server)
    a.ctl_ok("archive", "policy", "set", "--mode", "all")
    alice, bob = a.new_users("alice", "bob")
    erin, frank = b.new_users("erin", "frank")
    a.ctl_ok("policy", f"{bob}@a.test", "--federation-access", "off")
    room = "team@conference.a.test"

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            cb = await sa.login(bob)
            ce = await sb.login(erin)
            cf = await sb.login(frank)
            await join(ca, room, "alice")
            # a room here is opened by this server's users only
            err = await refused_join(cf, "other@conference.a.test", "frank")
            assert err["error"]["condition"] == "not-allowed"
            # the ad hoc room is members-only: an uninvited partner user is refused
            err = await refused_join(cf, room, "frank")
            assert err["error"]["condition"] == "registration-required"
            # a mediated invitation crosses to the partner
            await invited_join(ca, ce, room, f"{erin}@b.test", "erin")
            p = await next_matching(ca.presences, lambda p: str(p["from"]) == f"{room}/erin", 15)
            item = p.xml.find(f"{USER}x/{USER}item")
            assert item is not None and item.get("jid", "").startswith(f"{erin}@b.test/")
            listing = json.loads(a.ctl_ok("conference", "list", "--json").stdout)
            (entry,) = [r for r in listing if r["room"] == room]
            assert f"{erin}@b.test" in entry["members"]
            assert f"{erin}@b.test" in {o["jid"].split("/")[0] for o in entry["occupants"]}
            await lines_both_ways(ca, ce, room, "welcome erin", "thanks alice")
            await next_matching(ce.inbox, lambda m: m["body"] == "thanks alice", 15)  # echo
            # bob may not talk to other domains: he cannot share the room with erin
            invite(ca, room, f"{bob}@a.test")
            await next_matching(cb.inbox, is_invite, 15)
            err = await refused_join(cb, room, "bob")
            assert err["error"]["condition"] == "forbidden"
            # nor invite a partner user into a room of his own
            await join(cb, "bobs@conference.a.test", "bob")
            invite(cb, "bobs@conference.a.test", f"{frank}@b.test")
            m = await next_matching(cb.inbox, lambda m: m["type"] == "error", 15)
            assert m["error"]["condition"] == "not-allowed"
            await nothing_matching(cf.inbox, is_invite, 0.5)
            # erin leaves: alice sees it
            ce.send_presence(pto=f"{room}/erin", ptype="unavailable")
            await next_matching(
                ca.presences,
                lambda p: str(p["from"]) == f"{room}/erin" and p["type"] == "unavailable",
                15,
            )

    run(scenario(), 120)
    assert "conference.a.test -> b.test" in status(a)["edge"]["federation"]["outgoing"]
    # the archive tells the partner's line from ours
    federated = archive(a, "--room", room, "--origin", "federated")
    assert [(r["sender"], r["body"]) for r in federated] == [(f"{erin}@b.test", "thanks alice")]
    assert [r["body"] for r in archive(a, "--room", room, "--origin", "internal")] == [
        "welcome erin"
    ]
    text = a.ctl_ok("archive", "search", "--room", room).stdout
    assert f"{erin}@b.test [federated] -> {room}: thanks alice" in text


def test_our_user_joins_a_partner_room(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server)
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    room = "partners@conference.b.test"

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            ce = await sb.login(erin)
            await join(ce, room, "erin")
            await invited_join(ce, ca, room, f"{alice}@a.test", "alice")
            await lines_both_ways(ca, ce, room, "hello from a", "hello from b")

    run(scenario(), 90)


def test_archive_tags_messages_from_edge_sessions_as_remote(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    s = make_server(edge_host="127.0.0.2")
    s.ctl_ok("archive", "policy", "set", "--mode", "all")
    alice, dave = s.new_users("alice", "dave")

    async def scenario() -> None:
        async with Sessions(s) as ss:
            ca = await ss.login(alice)
            cd = await ss.login(dave, listener="edge_c2s")  # from outside
            cd.send_message(mto=f"{alice}@{s.domain}", mbody="from home", mtype="chat")
            await next_matching(ca.inbox, lambda m: m["body"] == "from home", 10)
            ca.send_message(mto=f"{dave}@{s.domain}", mbody="from the office", mtype="chat")
            await next_matching(cd.inbox, lambda m: m["body"] == "from the office", 10)

    run(scenario())
    remote = archive(s, "--origin", "edge")
    assert [(r["body"], r["origin"]) for r in remote] == [("from home", "remote")]
    assert [r["body"] for r in archive(s, "--origin", "internal")] == ["from the office"]
    assert [r["body"] for r in archive(s, "--origin", "external")] == ["from home"]
    bad = s.ctl("archive", "search", "--origin", "moon")
    assert bad.returncode == 2 and "--origin" in bad.stderr
