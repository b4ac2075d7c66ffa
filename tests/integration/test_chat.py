"""Two stock-client users: roster, subscriptions, presence, messages; what survives a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import rawxmpp
from .server import Server
from .xmppclient import Client, Sessions, next_matching, nothing_matching

DELAY = "{urn:xmpp:delay}delay"
AVAILABLE = ("available", "chat", "away", "dnd", "xa")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Privacy mode on: subscriptions wait for the user, so the plain RFC 6121 handshake is
    what these tests see (with it off, colleagues are approved on the user's behalf)."""
    s = Server(tmp_path_factory.mktemp("server"), "[presence]\nprivacy = true").start()
    yield s
    s.stop()


def from_bare(jid: str, *types: str) -> Callable[[Any], bool]:
    return lambda st: st["from"].bare == jid and (not types or st["type"] in types)


async def roster_state(c: Client, contact: str) -> tuple[str, bool]:
    """(subscription, pending-out) of contact in c's roster, fetched from the server."""
    await c.get_roster(timeout=10)
    roster = c.client_roster
    if contact not in roster:
        return "absent", False
    item = roster[contact]
    return item["subscription"], bool(item["pending_out"])


async def wait_roster(c: Client, contact: str, want: str, timeout: float = 10) -> None:
    end = asyncio.get_running_loop().time() + timeout
    state = ("", False)
    while asyncio.get_running_loop().time() < end:
        state = await roster_state(c, contact)
        if state[0] == want:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{c.boundjid.bare}: {contact} is {state}, not {want!r}")


async def befriend(a: Client, b: Client) -> None:
    """The RFC 6121 §3 handshake both ways, by hand: each asks, the other approves."""
    aj, bj = a.boundjid.bare, b.boundjid.bare
    a.send_presence(pto=bj, ptype="subscribe")
    await next_matching(b.presences, from_bare(aj, "subscribe"))
    b.send_presence(pto=aj, ptype="subscribed")
    b.send_presence(pto=aj, ptype="subscribe")
    await next_matching(a.presences, from_bare(bj, "subscribe"))
    a.send_presence(pto=bj, ptype="subscribed")
    await wait_roster(a, bj, "both")
    await wait_roster(b, aj, "both")


def test_roster_add_then_subscription_handshake_both_ways_ends_in_both(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj, bj = f"{alice}@{server.domain}", f"{bob}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice, auto_accept=False)
            b = await ss.login(bob, direct_tls=True, auto_accept=False)
            await a.update_roster(bj, name="Bob B", groups=["Friends"], timeout=10)
            await wait_roster(a, bj, "none")
            assert a.client_roster[bj]["name"] == "Bob B"
            assert a.client_roster[bj]["groups"] == ["Friends"]
            a.send_presence(pto=bj, ptype="subscribe")
            await next_matching(b.presences, from_bare(aj, "subscribe"))
            # RFC 6121 §3.1.2: the request is pushed to the user's roster as pending-out
            await wait_roster(a, bj, "none")
            assert (await roster_state(a, bj))[1], "no ask='subscribe' on the pending request"
            b.send_presence(pto=aj, ptype="subscribed")
            await next_matching(a.presences, from_bare(bj, "subscribed"))
            # §3.1.5: the contact's server then sends its available presence
            await next_matching(a.presences, from_bare(bj, *AVAILABLE))
            await wait_roster(a, bj, "to")
            await wait_roster(b, aj, "from")
            b.send_presence(pto=aj, ptype="subscribe")
            await next_matching(a.presences, from_bare(bj, "subscribe"))
            a.send_presence(pto=bj, ptype="subscribed")
            await next_matching(b.presences, from_bare(aj, *AVAILABLE))
            await wait_roster(a, bj, "both")
            await wait_roster(b, aj, "both")
            assert a.client_roster[bj]["name"] == "Bob B", "the handshake lost the roster name"
            assert a.client_roster[bj]["groups"] == ["Friends"]

    run(scenario())


ROSTER_PUSH = re.compile(rb"<iq\b[^>]*/>|<iq\b[^>]*[^/]>.*?</iq>", re.S)


async def next_roster_push(s: rawxmpp.RawStream, contact: str) -> ET.Element:
    """The next roster push (RFC 6121 §2.1.6) about contact; other iqs are skipped."""
    while True:
        got = await s.until(ROSTER_PUSH, 10)
        iq = ET.fromstring(got[got.rfind(b"<iq") :])
        item = iq.find("{jabber:iq:roster}query/{jabber:iq:roster}item")
        if iq.get("type") == "set" and item is not None and item.get("jid") == contact:
            s.send(f"<iq type='result' id='{iq.get('id')}'/>".encode())
            return item


def test_roster_pushes_follow_each_subscription_step(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj, bj = f"{alice}@{server.domain}", f"{bob}@{server.domain}"
    pw = server.passwords[alice]

    async def scenario() -> None:
        a = await rawxmpp.login(server.ports["c2s"], server.domain, alice, pw, "push")
        b = await rawxmpp.login(server.ports["c2s"], server.domain, bob, pw, "push")
        try:
            for s in (a, b):  # interested resources (RFC 6121 §2.1.6): roster get, then presence
                s.send(b"<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq><presence/>")
            a.send(f"<presence to='{bj}' type='subscribe'/>".encode())
            # §3.1.2: the user's server pushes the pending-out item
            item = await next_roster_push(a, bj)
            assert (item.get("subscription"), item.get("ask")) == ("none", "subscribe")
            await b.until(re.compile(rb"<presence\b[^>]*type=['\"]subscribe['\"]"))
            b.send(f"<presence to='{aj}' type='subscribed'/>".encode())
            # §3.1.5: the contact's server pushes the user with subscription 'from'
            item = await next_roster_push(b, aj)
            assert (item.get("subscription"), item.get("ask")) == ("from", None)
            # §3.1.6: the user's server pushes subscription 'to', the ask gone
            item = await next_roster_push(a, bj)
            assert (item.get("subscription"), item.get("ask")) == ("to", None)
        finally:
            a.close()
            b.close()

    run(scenario())


def test_presence_available_away_and_unavailable_are_seen(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    bj = f"{bob}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice, auto_accept=False)
            b = await ss.login(bob, auto_accept=False)
            await befriend(a, b)
            b.send_presence(pshow="away", pstatus="lunch")
            p = await next_matching(a.presences, lambda p: from_bare(bj)(p) and p["show"] == "away")
            assert p["status"] == "lunch"
            assert p["from"].resource == "test"
            b.send_presence(pshow="dnd", pstatus="meeting")
            p = await next_matching(a.presences, lambda p: from_bare(bj)(p) and p["show"] == "dnd")
            assert p["status"] == "meeting"
            await b.stop()
            await next_matching(a.presences, from_bare(bj, "unavailable"))

    run(scenario())


def test_presence_of_a_contact_is_probed_at_login(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    bj = f"{bob}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice, auto_accept=False)
            b = await ss.login(bob, auto_accept=False)
            await befriend(a, b)
            b.send_presence(pshow="xa", pstatus="on holiday")
            await next_matching(a.presences, lambda p: from_bare(bj)(p) and p["show"] == "xa")
            await a.stop()
            # RFC 6121 §4.2.2: a fresh session learns the contact's current presence
            a2 = await ss.login(alice, resource="second")
            p = await next_matching(a2.presences, lambda p: from_bare(bj)(p) and p["show"] == "xa")
            assert p["status"] == "on holiday"

    run(scenario())


def test_messages_are_delivered_both_ways(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj, bj = f"{alice}@{server.domain}", f"{bob}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob, direct_tls=True)
            a.send_message(mto=bj, mbody="hello bob", mtype="chat")
            m = await next_matching(b.inbox, lambda m: m["body"] == "hello bob")
            assert m["from"] == a.boundjid, m  # stamped with the sender's full JID
            assert m["type"] == "chat"
            b.send_message(mto=m["from"], mbody="hi alice ✓ <&>", mtype="chat")
            m = await next_matching(a.inbox, lambda m: m["body"] == "hi alice ✓ <&>")
            assert m["from"].bare == bj
            a.send_message(mto=f"{bj}/test", mbody="to the full JID", mtype="normal")
            m = await next_matching(b.inbox, lambda m: m["body"] == "to the full JID")
            assert m["from"].bare == aj

    run(scenario())


def test_message_to_unknown_user_bounces_service_unavailable(server: Server, run):
    (alice,) = server.new_users("alice")
    nobody = f"nobody@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            a.send_message(mto=nobody, mbody="anyone?", mtype="chat")
            err = await next_matching(a.inbox, from_bare(nobody, "error"))
            assert err["error"]["condition"] == "service-unavailable", err
            assert err["error"]["type"] == "cancel"

    run(scenario())


def test_message_to_offline_user_is_stored_and_delivered_with_delay(server: Server, run):
    alice, carol = server.new_users("alice", "carol")
    cj = f"{carol}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            sent = dt.datetime.now(dt.UTC)
            a.send_message(mto=cj, mbody="while you were out", mtype="chat")
            await nothing_matching(a.inbox, lambda m: m["type"] == "error", 1.0)
            c = await ss.login(carol)  # initial presence releases the stored message
            m = await next_matching(c.inbox, lambda m: m["body"] == "while you were out")
            assert m["from"].bare == f"{alice}@{server.domain}"
            delay = m.xml.find(DELAY)
            assert delay is not None, f"no XEP-0203 delay on an offline message: {m}"
            stamp = dt.datetime.fromisoformat(delay.get("stamp").replace("Z", "+00:00"))
            assert abs((stamp - sent).total_seconds()) < 30, delay.get("stamp")
            # delivered once: a second session does not get it again
            await c.stop()
            c2 = await ss.login(carol, resource="again")
            await nothing_matching(c2.inbox, lambda m: m["body"] == "while you were out", 1.0)

    run(scenario())


def test_message_to_offline_user_bounces_when_offline_storage_is_off(make_server, run):
    server = make_server("[im]\noffline = false")
    alice, carol = server.new_users("alice", "carol")
    cj = f"{carol}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            a.send_message(mto=cj, mbody="nobody home", mtype="chat")
            err = await next_matching(a.inbox, from_bare(cj, "error"))
            assert err["error"]["condition"] == "service-unavailable", err

    run(scenario())


def test_second_login_with_same_resource_wins_and_old_gets_conflict(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj = f"{alice}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            old = await ss.login(alice, resource="desk")
            b = await ss.login(bob)
            new = await ss.login(alice, resource="desk")
            err = await next_matching(old.stream_errors, lambda e: True)
            assert err["condition"] == "conflict", err
            assert await old.closed_by_server(10), "old session not closed after <conflict/>"
            assert new.boundjid.full == f"{aj}/desk"
            b.send_message(mto=f"{aj}/desk", mbody="which one?", mtype="chat")
            await next_matching(new.inbox, lambda m: m["body"] == "which one?")
            assert await new.plugin["xep_0199"].ping(jid=server.domain, timeout=10) < 10

    run(scenario())


def test_disco_info_on_the_server_lists_identity_and_features(server: Server, run):
    (alice,) = server.new_users("alice")

    async def scenario() -> tuple[set[tuple[str, str]], set[str], str]:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            info = await a.plugin["xep_0030"].get_info(jid=server.domain, local=False, timeout=10)
            items = await a.plugin["xep_0030"].get_items(jid=server.domain, local=False, timeout=10)
            q = info["disco_info"]
            ids = {(i[0], i[1]) for i in q["identities"]}
            return ids, set(q["features"]), items["type"]

    ids, features, items_type = run(scenario())
    assert ("server", "im") in ids, ids
    assert {"http://jabber.org/protocol/disco#info", "urn:xmpp:ping"} <= features, features
    assert items_type == "result"


def test_ping_to_the_server_is_answered(server: Server, run):
    (alice,) = server.new_users("alice")

    async def scenario() -> float:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            return await a.plugin["xep_0199"].ping(jid=server.domain, timeout=10)

    assert run(scenario()) < 5


# -- restarts ----------------------------------------------------------------------------------


def restart(server: Server) -> None:
    code = server.stop()
    assert code == 0, f"SIGTERM did not stop the server cleanly (exit {code})"
    server.start()


def test_restart_keeps_accounts_and_rosters(make_server, run):
    server = make_server()
    alice, bob = server.new_users("alice", "bob")
    aj, bj = f"{alice}@{server.domain}", f"{bob}@{server.domain}"

    async def before() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice, auto_accept=False)
            b = await ss.login(bob, auto_accept=False)
            await befriend(a, b)
            stop = asyncio.create_task(asyncio.to_thread(server.stop))
            err = await next_matching(a.stream_errors, lambda e: True, 15)
            assert err["condition"] == "system-shutdown", err
            assert await a.closed_by_server(10)
            assert await stop == 0, "SIGTERM did not stop the server cleanly"

    async def after() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            assert await roster_state(a, bj) == ("both", False)
            b = await ss.login(bob)
            assert await roster_state(b, aj) == ("both", False)
            await next_matching(a.presences, from_bare(bj, *AVAILABLE))
            a.send_message(mto=bj, mbody="still friends?", mtype="chat")
            await next_matching(b.inbox, lambda m: m["body"] == "still friends?")

    run(before())
    server.start()
    run(after())


def test_pending_subscription_request_survives_restart(make_server, run):
    server = make_server("[presence]\nprivacy = true")
    alice, carol = server.new_users("alice", "carol")
    aj, cj = f"{alice}@{server.domain}", f"{carol}@{server.domain}"

    async def ask() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice, auto_accept=False)
            a.send_presence(pto=cj, ptype="subscribe")  # carol is offline: pending-in for her
            await wait_roster(a, cj, "none")
            assert (await roster_state(a, cj))[1], "no pending-out for alice"

    async def answer() -> None:
        async with Sessions(server) as ss:
            c = await ss.login(carol, auto_accept=False)
            # RFC 6121 §3.1.3: redelivered when the contact next sends initial presence
            await next_matching(c.presences, from_bare(aj, "subscribe"), 15)
            c.send_presence(pto=aj, ptype="subscribed")
            a = await ss.login(alice)
            await wait_roster(a, cj, "to")
            await wait_roster(c, aj, "from")

    run(ask())
    restart(server)
    run(answer())
