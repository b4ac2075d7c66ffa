"""Conversations with stock clients: rooms, escalating a chat into a conference, offline IM."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import xml.etree.ElementTree as ET
from typing import Any

from slixmpp.plugins.xep_0054.stanza import VCardTemp

from .server import Server
from .xmppclient import Client, Sessions, next_matching, nothing_matching

MUC = "http://jabber.org/protocol/muc"
USER = "{" + MUC + "#user}"


def room_of(server: Server, name: str) -> str:
    return f"{name}@conference.{server.domain}"


async def join(c: Client, room: str, nick: str, history: int | None = None) -> list[Any]:
    """Join and collect everything up to the subject, which ends the join (XEP-0045 §7.2.15)."""
    pres = c.make_presence(pto=f"{room}/{nick}")
    x = ET.SubElement(pres.xml, "{" + MUC + "}x")
    if history is not None:
        ET.SubElement(x, "{" + MUC + "}history", {"maxstanzas": str(history)})
    pres.send()
    await next_matching(
        c.presences,
        lambda p: (
            p["from"].bare == room and p.xml.find(f"{USER}x/{USER}status[@code='110']") is not None
        ),
    )
    lines = []
    while True:
        m = await next_matching(c.inbox, lambda m: m["from"].bare == room)
        if m.xml.find("{jabber:client}subject") is not None:
            return lines
        lines.append(m)


def invite(c: Client, room: str, to: str, *, thread: str | None = None) -> None:
    msg = c.make_message(mto=room)
    x = ET.SubElement(msg.xml, USER + "x")
    inv = ET.SubElement(x, USER + "invite", {"to": to})
    if thread is not None:
        ET.SubElement(inv, USER + "continue", {"thread": thread})
    msg.send()


def is_invite(m: Any) -> bool:
    return m.xml.find(f"{USER}x/{USER}invite") is not None


def test_room_create_join_history_and_leave(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    room = room_of(server, "plans")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            await join(a, room, "alice")
            invite(a, room, f"{bob}@{server.domain}")
            got = await next_matching(b.inbox, is_invite)
            assert got.xml.find("{jabber:x:conference}x").get("jid") == room  # XEP-0249 too
            a.send_message(mto=room, mbody="first line", mtype="groupchat")
            await next_matching(a.inbox, lambda m: m["body"] == "first line")
            history = await join(b, room, "bob")
            assert [h["body"] for h in history] == ["first line"]
            assert history[0].xml.find("{urn:xmpp:delay}delay") is not None
            b.send_message(mto=room, mbody="hello all", mtype="groupchat")
            m = await next_matching(a.inbox, lambda m: m["body"] == "hello all")
            assert str(m["from"]) == f"{room}/bob"
            listing = json.loads(server.ctl_ok("conference", "list", "--json").stdout)
            (entry,) = [r for r in listing if r["room"] == room]
            assert {o["nick"] for o in entry["occupants"]} == {"alice", "bob"}
            b.send_presence(pto=f"{room}/bob", ptype="unavailable")
            await next_matching(
                a.presences,
                lambda p: str(p["from"]) == f"{room}/bob" and p["type"] == "unavailable",
            )

    run(scenario())


def test_chat_escalates_to_a_conference_with_its_recent_lines(server: Server, run):
    alice, bob, carol = server.new_users("alice", "bob", "carol")
    bj, cj = f"{bob}@{server.domain}", f"{carol}@{server.domain}"
    room = room_of(server, "escalated")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            c = await ss.login(carol)
            a.send_message(mto=bj, mbody="shall we ask carol?", mtype="chat")
            await next_matching(b.inbox, lambda m: m["body"] == "shall we ask carol?")
            b.send_message(mto=f"{alice}@{server.domain}", mbody="yes please", mtype="chat")
            await next_matching(a.inbox, lambda m: m["body"] == "yes please")
            await join(a, room, "alice")
            invite(a, room, bj, thread="t-1")
            invite(a, room, cj, thread="t-1")
            got = await next_matching(c.inbox, is_invite)
            cont = got.xml.find(f"{USER}x/{USER}invite/{USER}continue")
            assert cont is not None and cont.get("thread") == "t-1"  # §7.9 kept as sent
            await next_matching(b.inbox, is_invite)
            history = await join(c, room, "carol")
            # DESIGN §5: the client sent no history, so the server adds the 1:1 lines
            assert [h["body"] for h in history] == ["shall we ask carol?", "yes please"]
            await join(b, room, "bob")
            c.send_message(mto=room, mbody="carol here", mtype="groupchat")
            await next_matching(b.inbox, lambda m: m["body"] == "carol here")

    run(scenario())


def test_room_refusals_are_clear_errors(server: Server, run):
    alice, bob, mallory = server.new_users("alice", "bob", "mallory")
    room = room_of(server, "closed")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            m = await ss.login(mallory)
            await join(a, room, "alice")
            # members-only: nobody uninvited gets in
            m.send_presence(pto=f"{room}/mallory")
            err = await next_matching(m.presences, lambda p: p["type"] == "error")
            assert err["error"]["condition"] == "registration-required"
            # speaking in a room you are not in
            m.send_message(mto=room, mbody="hi", mtype="groupchat")
            err = await next_matching(m.inbox, lambda x: x["type"] == "error")
            assert err["error"]["condition"] == "not-acceptable"
            # inviting someone who does not exist
            invite(a, room, f"nobody@{server.domain}")
            err = await next_matching(a.inbox, lambda x: x["type"] == "error")
            assert err["error"]["condition"] == "item-not-found"
            # a taken nickname
            invite(a, room, f"{bob}@{server.domain}")
            await next_matching(b.inbox, is_invite)
            b.send_presence(pto=f"{room}/alice")
            err = await next_matching(b.presences, lambda p: p["type"] == "error")
            assert err["error"]["condition"] == "conflict"
            await nothing_matching(a.inbox, lambda x: x["body"] == "hi", 0.5)

    run(scenario())


def test_offline_im_switch_is_stored_and_wins_over_config(make_server, run):
    server = make_server()
    alice, bob = server.new_users("alice", "bob")
    bj = f"{bob}@{server.domain}"

    async def stored() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            a.send_message(mto=bj, mbody="kept for later", mtype="chat")
            await asyncio.sleep(0.5)

    async def delivered_then_refused() -> None:
        async with Sessions(server) as ss:
            b = await ss.login(bob)
            m = await next_matching(b.inbox, lambda m: m["body"] == "kept for later")
            assert m.xml.find("{urn:xmpp:delay}delay") is not None
            await b.stop()
            a = await ss.login(alice)
            a.send_message(mto=bj, mbody="nobody home", mtype="chat")
            err = await next_matching(a.inbox, lambda x: x["type"] == "error")
            assert err["error"]["condition"] == "service-unavailable"

    run(stored())
    server.stop()
    server.start()  # stored messages survive a restart
    server.ctl_ok("im", "offline", "off")
    server.stop()
    server.start()  # and so does the switch
    status = json.loads(server.ctl_ok("status", "--json").stdout)
    assert status["settings"]["im.offline"] == {"value": False, "source": "se-ctl"}
    run(delivered_then_refused())
    out = server.ctl_ok("config", "reset", "im.offline").stdout
    assert "true" in out
    r = server.ctl("config", "reset", "no.such.key")
    assert r.returncode == 1 and "not a run-time setting" in r.stderr


def test_room_archive_pages_for_members_only(server: Server, run):
    alice, bob, mallory = server.new_users("alice", "bob", "mallory")
    room = room_of(server, "archived")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            m = await ss.login(mallory)
            await join(a, room, "alice")
            for i in range(3):
                a.send_message(mto=room, mbody=f"line {i}", mtype="groupchat")
                await next_matching(a.inbox, lambda x, i=i: x["body"] == f"line {i}")
            invite(a, room, f"{bob}@{server.domain}")
            b = await ss.login(bob)
            await asyncio.sleep(0.3)
            iq = b.make_iq_set(ito=room)
            q = ET.SubElement(iq.xml, "{urn:xmpp:mam:2}query", {"queryid": "r"})
            s = ET.SubElement(q, "{http://jabber.org/protocol/rsm}set")
            ET.SubElement(s, "{http://jabber.org/protocol/rsm}max").text = "2"
            fin = await iq.send(timeout=10)
            got = []
            while not b.inbox.empty():
                x = b.inbox.get_nowait()
                r = x.xml.find("{urn:xmpp:mam:2}result")
                if r is not None:
                    inner = r.find("{urn:xmpp:forward:0}forwarded/{jabber:client}message")
                    got.append((inner.get("from"), inner.findtext("{jabber:client}body")))
            assert got == [(f"{room}/alice", "line 0"), (f"{room}/alice", "line 1")]
            assert fin.xml.find("{urn:xmpp:mam:2}fin").get("complete") == "false"
            # someone never invited cannot read it
            iq = m.make_iq_set(ito=room)
            ET.SubElement(iq.xml, "{urn:xmpp:mam:2}query")
            try:
                await iq.send(timeout=10)
            except Exception as e:
                assert "forbidden" in str(getattr(e, "condition", e))
            else:
                raise AssertionError("a stranger read the room's archive")

    run(scenario())


def test_persistent_room_survives_a_restart_with_members_subject_and_history(make_server, run):
    server = make_server()
    alice, bob = server.new_users("alice", "bob")
    room = room_of(server, "team")

    async def before() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            await join(a, room, "alice")
            iq = a.make_iq_set(ito=room)
            q = ET.SubElement(iq.xml, "{" + MUC + "#owner}query")
            x = ET.SubElement(q, "{jabber:x:data}x", {"type": "submit"})
            f = ET.SubElement(x, "{jabber:x:data}field", {"var": "muc#roomconfig_persistentroom"})
            ET.SubElement(f, "{jabber:x:data}value").text = "1"
            await iq.send(timeout=10)
            invite(a, room, f"{bob}@{server.domain}")
            subj = a.make_message(mto=room, mtype="groupchat")
            ET.SubElement(subj.xml, "{jabber:client}subject").text = "Release week"
            subj.send()
            a.send_message(mto=room, mbody="kept across restarts", mtype="groupchat")
            await next_matching(a.inbox, lambda m: m["body"] == "kept across restarts")
            await asyncio.sleep(0.3)

    async def after() -> None:
        async with Sessions(server) as ss:
            b = await ss.login(bob)  # a member since the invitation, room empty meanwhile
            history = await join(b, room, "bob")
            assert [h["body"] for h in history] == ["kept across restarts"]

    run(before())
    server.stop()
    server.start()
    listing = json.loads(server.ctl_ok("conference", "list", "--json").stdout)
    (entry,) = [r for r in listing if r["room"] == room]
    assert entry["persistent"] and f"{bob}@{server.domain}" in entry["members"]
    run(after())


UPDATE = "{vcard-temp:x:update}"


def photo_hashes(p: Any) -> list[str | None]:
    return [x.findtext(UPDATE + "photo") for x in p.xml.findall(UPDATE + "x")]


async def card_setter_and_watcher(
    ss: Sessions, alice: str, bob: str, room: str
) -> tuple[Client, Client, asyncio.Queue[Any]]:
    """alice, who sets her card but announces no hash herself; bob, whose room presence is
    collected in the queue."""
    a = ss.client(alice)
    a.register_plugin("xep_0054")
    await a.start()
    b = await ss.login(bob)
    room_presence: asyncio.Queue[Any] = asyncio.Queue()
    b.add_event_handler(
        "presence", lambda p: p["from"].bare == room and room_presence.put_nowait(p)
    )
    return a, b, room_presence


async def both_join(a: Client, b: Client, room: str, bob: str) -> None:
    await join(a, room, "alice")
    invite(a, room, bob)
    await next_matching(b.inbox, is_invite)
    await join(b, room, "bob")


def photo_card(image: bytes) -> VCardTemp:
    return VCardTemp(
        xml=ET.fromstring(
            "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE>"
            f"<BINVAL>{base64.b64encode(image).decode()}</BINVAL></PHOTO></vCard>"
        )
    )


def test_occupant_presence_carries_the_vcard_photo_hash(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    room = room_of(server, "faces")
    image = os.urandom(2000)
    digest = hashlib.sha1(image).hexdigest()

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a, b, room_presence = await card_setter_and_watcher(ss, alice, bob, room)
            await a.plugin["xep_0054"].publish_vcard(photo_card(image), timeout=10)
            await both_join(a, b, room, f"{bob}@{server.domain}")
            # XEP-0398 §4: the room's presence for alice carries her photo's hash ...
            p = await next_matching(room_presence, lambda p: p["from"].resource == "alice")
            assert photo_hashes(p) == [digest]
            # ... and bob's, who has no photo, none
            own = await next_matching(room_presence, lambda p: p["from"].resource == "bob")
            assert photo_hashes(own) == []
            # a client that says which photo it has keeps its own element, once
            update = a.make_presence(pto=f"{room}/alice", pstatus="back")
            ET.SubElement(ET.SubElement(update.xml, UPDATE + "x"), UPDATE + "photo").text = digest
            update.send()
            p = await next_matching(
                room_presence,
                lambda p: p["from"].resource == "alice" and p["status"] == "back",
            )
            assert photo_hashes(p) == [digest]

    run(scenario())


def test_a_new_photo_reaches_the_rooms_the_user_is_in(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    room = room_of(server, "newface")
    image = os.urandom(1500)
    digest = hashlib.sha1(image).hexdigest()

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a, b, room_presence = await card_setter_and_watcher(ss, alice, bob, room)
            await both_join(a, b, room, f"{bob}@{server.domain}")
            p = await next_matching(room_presence, lambda p: p["from"].resource == "alice")
            assert photo_hashes(p) == []  # no photo yet
            await a.plugin["xep_0054"].publish_vcard(photo_card(image), timeout=10)
            # the room tells its occupants of alice's new picture without her rejoining
            p = await next_matching(
                room_presence, lambda p: p["from"].resource == "alice" and photo_hashes(p)
            )
            assert photo_hashes(p) == [digest]

    run(scenario())
