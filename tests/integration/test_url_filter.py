"""IM URL filtering against the real server: XMPP chat, offline, conferences, SIP both ways,
federation both ways, and `se-ctl im url-filter` changing it at run time."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .server import DOMAIN, Server
from .sipclient import SipClient
from .test_conference import USER, invite, is_invite, join, room_of
from .test_events import EventReader
from .test_federation import pair
from .xmppclient import Client, Sessions, next_matching

PREFIX = "[careful: links]"
EVIL = "see http://good.example@evil.example/x now"
DEFANGED = f"{PREFIX} see hxxp://good.example@evil[.]example/x now"
CONFIG = f'[im.url_filter]\ndomains = ["evil.example"]\nprefix = "{PREFIX}"\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("urlfilter"), CONFIG, sip=True).start()
    yield s
    s.stop()


def sip_client(server: Server, user: str) -> SipClient:
    return SipClient(server.ports["sip"], user, server.passwords[user], server.domain, "udp")


def refused(m: Any) -> bool:
    return m["type"] == "error"


def check_refusal(err: Any) -> None:
    assert err["error"]["condition"] == "not-acceptable"
    assert err["error"]["type"] == "modify"
    assert "evil.example" in err["error"]["text"] and "blocked" in err["error"]["text"]


async def first_line(c: Client, mtype: str = "chat") -> Any:
    return await next_matching(c.inbox, lambda m: m["type"] == mtype)


def test_xmpp_block_then_warn_then_reset_without_restart(server: Server, run) -> None:
    alice, bob, carol = server.new_users("alice", "bob", "carol")
    bj, cj = f"{bob}@{DOMAIN}", f"{carol}@{DOMAIN}"
    server.ctl_ok("im", "url-filter", "mode", "block")

    async def blocked() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            for mtype in ("chat", "normal"):
                a.send_message(mto=bj, mbody=EVIL, mtype=mtype)
                check_refusal(await next_matching(a.inbox, refused))
            a.send_message(mto=bj, mbody="a clean line", mtype="chat")
            assert (await first_line(b))["body"] == "a clean line"  # the blocked ones never came
            # to a user who is not signed in: refused as well, nothing stored
            a.send_message(mto=cj, mbody=EVIL, mtype="chat")
            check_refusal(await next_matching(a.inbox, refused))

    run(blocked())
    assert json.loads(server.ctl_ok("user", "show", cj, "--json").stdout)["offline_messages"] == 0

    server.ctl_ok("im", "url-filter", "mode", "warn")

    async def warned() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            a.send_message(mto=bj, mbody=EVIL, mtype="chat")
            assert (await first_line(b))["body"] == DEFANGED
            a.send_message(mto=cj, mbody=EVIL, mtype="chat")  # stored offline, defanged
            await asyncio.sleep(0)
            c = await ss.login(carol)
            stored = await first_line(c)
            assert stored["body"] == DEFANGED
            assert stored.xml.find("{urn:xmpp:delay}delay") is not None

    run(warned())
    settings = json.loads(server.ctl_ok("status", "--json").stdout)["settings"]
    assert settings["im.url_filter.mode"] == {"value": "warn", "source": "se-ctl"}
    assert settings["im.url_filter.domains"] == {"value": ["evil.example"], "source": "config"}

    out = server.ctl_ok("config", "reset", "im.url_filter.mode").stdout
    assert '"off"' in out

    async def passes() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            a.send_message(mto=bj, mbody=EVIL, mtype="chat")
            assert (await first_line(b))["body"] == EVIL

    run(passes())


def test_conference_lines_are_blocked_or_warned(server: Server, run) -> None:
    alice, bob = server.new_users("alice", "bob")
    room = room_of(server, "linkroom")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            server.ctl_ok("im", "url-filter", "mode", "block")
            await join(a, room, "alice")
            invite(a, room, f"{bob}@{DOMAIN}")
            await next_matching(b.inbox, is_invite)
            await join(b, room, "bob")
            a.send_message(mto=room, mbody=EVIL, mtype="groupchat")
            check_refusal(await next_matching(a.inbox, refused))
            # a private line through the room is filtered too
            a.send_message(mto=f"{room}/bob", mbody=EVIL, mtype="chat")
            check_refusal(await next_matching(a.inbox, refused))
            a.send_message(mto=room, mbody="clean", mtype="groupchat")
            assert (await first_line(b, "groupchat"))["body"] == "clean"
            server.ctl_ok("im", "url-filter", "mode", "warn")
            a.send_message(mto=room, mbody=EVIL, mtype="groupchat")
            got = await first_line(b, "groupchat")
            assert got["body"] == DEFANGED and str(got["from"]) == f"{room}/alice"
            a.send_message(mto=f"{room}/bob", mbody=EVIL, mtype="chat")
            assert (await first_line(b))["body"] == DEFANGED

    try:
        run(scenario())
    finally:
        server.ctl_ok("config", "reset", "im.url_filter.mode")


def counters(server: Server) -> dict[str, int]:
    return json.loads(server.ctl_ok("status", "--json").stdout)["counters"]


def logged(server: Server, text: str, timeout: float = 10) -> str:
    """The server's log once it holds text (the line is written as the message is refused)."""
    end = time.monotonic() + timeout
    while True:
        log = server.log_path.read_text(errors="replace")
        if text in log or time.monotonic() > end:
            return log
        time.sleep(0.1)


def test_warned_and_blocked_messages_are_counted_and_blocks_logged(server: Server, run) -> None:
    alice, bob = server.new_users("alice", "bob")
    bj = f"{bob}@{DOMAIN}"
    before = counters(server)

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            server.ctl_ok("im", "url-filter", "mode", "block")
            a.send_message(mto=bj, mbody=f"our secret plan: {EVIL}", mtype="chat")
            check_refusal(await next_matching(a.inbox, refused))
            server.ctl_ok("im", "url-filter", "mode", "warn")
            a.send_message(mto=bj, mbody=EVIL, mtype="chat")
            assert (await first_line(b))["body"] == DEFANGED
            a.send_message(mto=bj, mbody="no links here", mtype="chat")
            assert (await first_line(b))["body"] == "no links here"

    try:
        run(scenario())
    finally:
        server.ctl_ok("config", "reset", "im.url_filter.mode")
    after = counters(server)
    assert after["url_filter_blocked"] == before["url_filter_blocked"] + 1
    assert after["url_filter_warned"] == before["url_filter_warned"] + 1
    text = server.ctl_ok("status").stdout
    assert f"url_filter_blocked {after['url_filter_blocked']}" in text
    assert f"url_filter_warned {after['url_filter_warned']}" in text
    # the console's live counters carry them too
    reader = EventReader(server, ["counters"])
    try:
        fed = reader.wait_for(lambda e: e["event"] == "counters")["data"]["counters"]
    finally:
        reader.close()
    assert fed["url_filter_blocked"] == after["url_filter_blocked"]
    assert fed["url_filter_warned"] == after["url_filter_warned"]
    line = f"url filter: blocked a message from {alice}@{DOMAIN} to {DOMAIN}: links to evil.example"
    log = logged(server, line)
    assert line in log
    assert "secret plan" not in log  # never the text


def test_invitation_reasons_are_blocked_or_defanged(server: Server, run) -> None:
    alice, bob = server.new_users("alice", "bob")
    bj = f"{bob}@{DOMAIN}"
    room = room_of(server, "invitations")
    reason = "see hxxp://good.example@evil[.]example/x now"  # defanged, with no prefix
    conf = "{jabber:x:conference}x"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = ss.client(alice)
            for plugin in ("xep_0045", "xep_0249"):
                a.register_plugin(plugin)
            await a.start()
            b = await ss.login(bob)
            await join(a, room, "alice")
            server.ctl_ok("im", "url-filter", "mode", "block")
            a.plugin["xep_0249"].send_invitation(bj, room, reason=EVIL)  # direct, user to user
            check_refusal(await next_matching(a.inbox, refused))
            a.plugin["xep_0045"].invite(room, bj, reason=EVIL)  # mediated, through the room
            check_refusal(await next_matching(a.inbox, refused))
            server.ctl_ok("im", "url-filter", "mode", "warn")
            # the first invitation bob sees is this one: the blocked ones never came
            a.plugin["xep_0249"].send_invitation(bj, room, reason=EVIL)
            got = await next_matching(b.inbox, lambda m: m.xml.find(conf) is not None)
            assert not is_invite(got) and got.xml.find(conf).get("reason") == reason
            a.plugin["xep_0045"].invite(room, bj, reason=EVIL)
            got = await next_matching(b.inbox, is_invite)
            assert got.xml.findtext(f"{USER}x/{USER}invite/{USER}reason") == reason
            assert got.xml.find(conf).get("reason") == reason
            assert got["body"].endswith(reason)
            await join(b, room, "bob")  # the invitation still works

    try:
        run(scenario())
    finally:
        server.ctl_ok("config", "reset", "im.url_filter.mode")


def test_sip_messages_are_blocked_or_warned_both_ways(server: Server, run) -> None:
    alice, carol = server.new_users("alice", "carol")
    aj = f"{alice}@{DOMAIN}"
    c = sip_client(server, carol)

    def send_sip(body: bytes, ctype: str = "text/plain;charset=UTF-8") -> Any:
        return c.request("MESSAGE", f"sip:{alice}@{DOMAIN}", [("Content-Type", ctype)], body)

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            assert (await asyncio.to_thread(c.register)).status == 200
            server.ctl_ok("im", "url-filter", "mode", "block")
            # SIP -> XMPP, text/plain and message/cpim
            r = await asyncio.to_thread(send_sip, EVIL.encode())
            assert r.status == 403, r
            assert "evil.example" in r.reason and "blocked" in r.reason
            warning = r.headers.get("Warning") or ""
            assert warning.startswith(f"399 {DOMAIN} ") and "evil.example" in warning
            cpim = (
                f"From: <sip:{carol}@{DOMAIN}>\r\nTo: <sip:{aj}>\r\n\r\n"
                f"Content-Type: text/plain;charset=UTF-8\r\n\r\n{EVIL}"
            ).encode()
            r = await asyncio.to_thread(send_sip, cpim, "message/cpim")
            assert r.status == 403, r
            # XMPP -> SIP
            a.send_message(mto=f"{carol}@{DOMAIN}", mbody=EVIL, mtype="chat")
            check_refusal(await next_matching(a.inbox, refused))
            a.send_message(mto=f"{carol}@{DOMAIN}", mbody="clean", mtype="chat")
            req = await asyncio.to_thread(c.expect, "MESSAGE")
            assert req.body == b"clean"  # the blocked one never came
            server.ctl_ok("im", "url-filter", "mode", "warn")
            r = await asyncio.to_thread(send_sip, EVIL.encode())
            assert r.status == 200, r
            assert (await first_line(a))["body"] == DEFANGED
            a.send_message(mto=f"{carol}@{DOMAIN}", mbody=EVIL, mtype="chat")
            req = await asyncio.to_thread(c.expect, "MESSAGE")
            assert req.body.decode() == DEFANGED

    try:
        run(scenario())
    finally:
        c.close()
        server.ctl_ok("config", "reset", "im.url_filter.mode")


def test_se_ctl_url_filter_commands(server: Server) -> None:
    shown = json.loads(server.ctl_ok("im", "url-filter", "--json").stdout)
    assert shown["domains"] == ["evil.example"] and shown["source"]["domains"] == "config"
    assert shown["prefix"] == PREFIX and shown["mode"] == "off"
    out = json.loads(
        server.ctl_ok("im", "url-filter", "add", "Phish.Example", "bad.example", "--json").stdout
    )
    assert out["domains"] == ["bad.example", "evil.example", "phish.example"]
    assert out["source"]["domains"] == "se-ctl"
    text = server.ctl_ok("im", "url-filter", "remove", "bad.example").stdout
    assert "phish.example" in text and "bad.example" not in text
    server.ctl_ok("im", "url-filter", "scope", "all")
    server.ctl_ok("im", "url-filter", "prefix", "")
    shown = json.loads(server.ctl_ok("im", "url-filter", "show", "--json").stdout)
    assert (shown["scope"], shown["prefix"]) == ("all", "")
    # usage errors (one line, exit 2) are checked in tests/unit/test_url_filter.py
    # values the server refuses: one line, exit 1
    for args in (("add", "not a domain"), ("remove", "never.example"), ("prefix", "x" * 300)):
        r = server.ctl("im", "url-filter", *args)
        assert r.returncode == 1, (args, r)
        assert len(r.stderr.strip().splitlines()) == 1
    for key in ("domains", "scope", "prefix"):
        server.ctl_ok("config", "reset", f"im.url_filter.{key}")
    shown = json.loads(server.ctl_ok("im", "url-filter", "--json").stdout)
    assert shown["domains"] == ["evil.example"] and set(shown["source"].values()) == {"config"}


def test_federated_messages_are_filtered_both_ways(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server)
    a.ctl_ok("im", "url-filter", "add", "evil.example")
    a.ctl_ok("im", "url-filter", "mode", "block")
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    ja, je = f"{alice}@a.test", f"{erin}@b.test"

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await sa.login(alice)
            ce = await sb.login(erin)
            ca.send_message(mto=je, mbody=EVIL, mtype="chat")  # outbound
            check_refusal(await next_matching(ca.inbox, refused, 20))
            ce.send_message(mto=ja, mbody=EVIL, mtype="chat")  # inbound: bounced to b.test
            check_refusal(await next_matching(ce.inbox, refused, 20))
            a.ctl_ok("im", "url-filter", "mode", "warn")
            ca.send_message(mto=je, mbody=EVIL, mtype="chat")
            assert (await first_line(ce))["body"].endswith(
                "hxxp://good.example@evil[.]example/x now"
            )
            ce.send_message(mto=ja, mbody=EVIL, mtype="chat")
            assert (await first_line(ca))["body"].endswith(
                "hxxp://good.example@evil[.]example/x now"
            )

    run(scenario(), timeout=90)
