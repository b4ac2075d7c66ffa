"""SIP users in conversations: rooms with XMPP users, escalating a chat, offline messages
delivered at the next REGISTER, and large messages that cannot reach their recipient."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime

import pytest

from .server import DOMAIN, Server
from .sipclient import SipClient
from .test_conference import USER, invite, is_invite, join, room_of
from .xmppclient import Sessions, next_matching

TEXT = [("Content-Type", "text/plain;charset=UTF-8")]


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("sipconv"), sip=True).start()
    yield s
    s.stop()


def client(server: Server, user: str, transport: str = "udp") -> SipClient:
    return SipClient(server.ports["sip"], user, server.passwords[user], server.domain, transport)


def say(c: SipClient, to: str, text: str) -> int:
    """A MESSAGE to `to` (a user name or a room address); returns the final status."""
    uri = f"sip:{to}" if "@" in to else f"sip:{to}@{DOMAIN}"
    return c.request("MESSAGE", uri, TEXT, text.encode(), to=uri).status


def expect_message(c: SipClient, pred: Callable[[str], bool], timeout: float = 10) -> object:
    """The next MESSAGE from the server whose text satisfies pred (others are skipped)."""
    end = time.monotonic() + timeout
    seen = []
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no matching MESSAGE; saw {seen[-5:]}")
        req = c.expect("MESSAGE", timeout=left)
        text = req.body.decode()
        if pred(text):
            return req
        seen.append(text)


def test_sip_user_joins_a_room_by_replying_talks_and_leaves(sip_server: Server, run) -> None:
    alice, carol, mallory = sip_server.new_users("alice", "carol", "mallory")
    room = room_of(sip_server, "mixed")
    c = client(sip_server, carol)
    m = client(sip_server, mallory)

    async def main() -> None:
        async with Sessions(sip_server) as xs:
            a = await xs.login(alice)
            assert (await asyncio.to_thread(c.register)).status == 200
            assert (await asyncio.to_thread(m.register)).status == 200
            await join(a, room, "alice")
            invite(a, room, f"{carol}@{DOMAIN}")
            inv = await asyncio.to_thread(expect_message, c, lambda t: "invites you" in t)
            assert f"sip:{room}" in (inv.headers.get("From") or "")
            assert "Reply to this message to join" in inv.body.decode()
            # someone who was not invited cannot speak there (the sender must be an occupant)
            assert await asyncio.to_thread(say, m, room, "let me in") == 403
            # replying to the invitation joins under the user name, and says the line
            assert await asyncio.to_thread(say, c, room, "hi all") == 200
            await next_matching(
                a.presences,
                lambda p: str(p["from"]) == f"{room}/{carol}" and p["type"] == "available",
            )
            got = await next_matching(a.inbox, lambda m: m["body"] == "hi all")
            assert str(got["from"]) == f"{room}/{carol}"
            a.send_message(mto=room, mbody="welcome carol", mtype="groupchat")
            line = await asyncio.to_thread(expect_message, c, lambda t: "welcome carol" in t)
            assert line.body.decode() == "alice: welcome carol"
            assert f"sip:{room}" in (line.headers.get("From") or "")
            assert await asyncio.to_thread(say, c, room, "/leave") == 200
            await next_matching(
                a.presences,
                lambda p: str(p["from"]) == f"{room}/{carol}" and p["type"] == "unavailable",
            )

    try:
        run(main())
    finally:
        c.close()
        m.close()


def test_sip_user_escalates_a_chat_with_invite(sip_server: Server, run) -> None:
    alice, bob, carol = sip_server.new_users("alice", "bob", "carol")
    s = client(sip_server, alice)

    async def main() -> None:
        async with Sessions(sip_server) as xs:
            b = await xs.login(bob)
            c = await xs.login(carol)
            assert (await asyncio.to_thread(s.register)).status == 200
            assert await asyncio.to_thread(say, s, bob, "shall we ask carol?") == 200
            await next_matching(b.inbox, lambda m: m["body"] == "shall we ask carol?")
            b.send_message(mto=f"{alice}@{DOMAIN}", mbody="yes please", mtype="chat")
            await asyncio.to_thread(expect_message, s, lambda t: t == "yes please")
            # the command is not passed on as a chat line; it makes the room
            assert await asyncio.to_thread(say, s, bob, f"/invite {carol}") == 200
            welcome = await asyncio.to_thread(expect_message, s, lambda t: "You are in" in t)
            got = await next_matching(c.inbox, is_invite)
            room = got.xml.find("{jabber:x:conference}x").get("jid")
            assert room.endswith(f"@conference.{DOMAIN}")
            assert got.xml.find(f"{USER}x/{USER}invite/{USER}continue") is not None
            assert f"sip:{room}" in (welcome.headers.get("From") or "")
            await next_matching(b.inbox, is_invite)
            history = await join(c, room, "carol")
            # DESIGN §5: the room starts with the 1:1 lines, from the server's memory of them
            assert [h["body"] for h in history] == ["shall we ask carol?", "yes please"]
            await join(b, room, "bob")
            c.send_message(mto=room, mbody="carol here", mtype="groupchat")
            await next_matching(b.inbox, lambda m: m["body"] == "carol here")
            await asyncio.to_thread(expect_message, s, lambda t: t == "carol: carol here")
            assert await asyncio.to_thread(say, s, room, "hello both") == 200
            await next_matching(c.inbox, lambda m: m["body"] == "hello both")
        # nobody may invite into a 1:1 chat someone who does not exist
        assert await asyncio.to_thread(say, s, bob, "/invite nobody-here") == 404

    try:
        run(main())
    finally:
        s.close()


def test_offline_message_arrives_at_next_register_with_its_date(sip_server: Server, run) -> None:
    alice, carol = sip_server.new_users("alice", "carol")
    c = client(sip_server, carol)

    async def main() -> float:
        async with Sessions(sip_server) as xs:
            a = await xs.login(alice)
            sent = time.time()
            a.send_message(mto=f"{carol}@{DOMAIN}", mbody="while you were out", mtype="chat")
            await asyncio.sleep(2.5)  # the stored copy must keep this moment, not the next
            return sent

    try:
        sent = run(main())
        assert c.register().status == 200
        req = expect_message(c, lambda t: "while you were out" in t)
        date = parsedate_to_datetime(req.headers.get("Date") or "")
        assert abs(date.timestamp() - sent) < 2, (date, sent)
        assert req.body.decode().startswith(f"[{date:%Y-%m-%d %H:%M} UTC] ")
        # delivered once: it is no longer stored
        c.register()
        with pytest.raises(TimeoutError):
            expect_message(c, lambda t: "while you were out" in t, timeout=2)
    finally:
        c.close()


def test_large_message_without_a_reliable_path_is_refused(sip_server: Server, run) -> None:
    alice, carol, dave = sip_server.new_users("alice", "carol", "dave")
    c = client(sip_server, carol, "udp")
    d = client(sip_server, dave, "tcp")
    # nothing listens on TCP at carol's UDP contact: the fallback of RFC 3261 §18.1.1 fails
    probe = socket.socket()
    try:
        probe.bind(c.local)
    finally:
        probe.close()
    text = "z" * 2000

    async def main() -> None:
        async with Sessions(sip_server) as xs:
            a = await xs.login(alice)
            assert (await asyncio.to_thread(c.register)).status == 200
            a.send_message(mto=f"{carol}@{DOMAIN}", mbody=text, mtype="chat")
            err = await next_matching(a.inbox, lambda m: m["type"] == "error")
            assert "too large" in err["error"]["text"], err
            # a SIP sender is told the same with 513 (RFC 3261 §21.5.14)
            assert (await asyncio.to_thread(d.register)).status == 200
            r = await asyncio.to_thread(
                d.request, "MESSAGE", f"sip:{carol}@{DOMAIN}", TEXT, text.encode(),
                to=f"sip:{carol}@{DOMAIN}",
            )  # fmt: skip
            assert r.status == 513, r
            # a short one still goes over UDP
            assert await asyncio.to_thread(say, d, carol, "short") == 200

    try:
        run(main())
    finally:
        c.close()
        d.close()
