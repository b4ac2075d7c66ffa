"""XEP-0198: acks, resuming a dropped session, and what happens when nobody resumes it."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from standard_edition.core.url_filter import DEFAULT_PREFIX

from . import rawxmpp
from .rawxmpp import RawStream
from .server import Server
from .xmppclient import Sessions, next_matching

SM = b"urn:xmpp:sm:3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    s = Server(tmp_path_factory.mktemp("server"), "[xmpp]\nresume_timeout = 2").start()
    yield s
    s.stop()


async def enable(s: RawStream) -> str:
    s.send(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    got = await s.until(re.compile(rb"<enabled [^>]*/>"))
    return re.search(rb"id='([^']+)'", got).group(1).decode()


async def auth_only(server: Server, user: str) -> RawStream:
    """A new connection authenticated but not bound: where a resume goes (§5)."""
    s, _ = await rawxmpp.open_stream(server.ports["c2s"], server.domain)
    await rawxmpp.starttls(s)
    assert b"<success" in await rawxmpp.auth_plain(s, user, server.passwords[user])
    s.buf = b""
    s.send(rawxmpp.header(server.domain))
    features = await s.until(rawxmpp.FEATURES)
    assert SM in features, "stream management not offered after authentication"
    return s


def test_dropped_session_is_resumed_and_gets_what_it_missed(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj = f"{alice}@{server.domain}/phone"

    async def scenario() -> None:
        s = await rawxmpp.login(
            server.ports["c2s"], server.domain, alice, server.passwords[alice], "phone"
        )
        sm_id = await enable(s)
        s.send(b"<presence/>")
        async with Sessions(server) as ss:
            b = await ss.login(bob)
            b.send_message(mto=aj, mbody="before the tunnel", mtype="chat")
            await s.until(b"before the tunnel")
            s.send(b"<r xmlns='urn:xmpp:sm:3'/>")
            assert re.search(
                rb"<a xmlns='urn:xmpp:sm:3' h='1'/>", await s.until(re.compile(rb"<a [^>]*/>"))
            )
            s.w.transport.abort()  # the phone loses its connection without a goodbye
            await asyncio.sleep(0.3)
            b.send_message(mto=aj, mbody="in the tunnel", mtype="chat")
            await asyncio.sleep(0.3)
            s2 = await auth_only(server, alice)
            # the client had handled nothing of the server's stanzas: everything comes again
            s2.send(f"<resume xmlns='urn:xmpp:sm:3' h='0' previd='{sm_id}'/>".encode())
            got = await s2.until(re.compile(rb"<resumed [^>]*/>"))
            # the server had handled the client's one stanza, <presence/>
            assert b"h='1'" in got
            # its own presence, as every watcher got it, then the messages
            await s2.until(f"<presence from='{aj}' to='{aj}'".encode())
            await s2.until(b"before the tunnel")
            await s2.until(b"in the tunnel")
            s2.send(b"<presence type='unavailable'/></stream:stream>")
            s2.close()

    run(scenario())


def test_session_not_resumed_in_time_sends_its_messages_to_offline_storage(server: Server, run):
    alice, bob = server.new_users("alice", "bob")

    async def scenario() -> None:
        s = await rawxmpp.login(
            server.ports["c2s"], server.domain, alice, server.passwords[alice], "phone"
        )
        await enable(s)
        s.send(b"<presence/>")
        async with Sessions(server) as ss:
            b = await ss.login(bob)
            await asyncio.sleep(0.3)
            s.w.transport.abort()
            await asyncio.sleep(0.3)
            b.send_message(
                mto=f"{alice}@{server.domain}/phone", mbody="keep this safe", mtype="chat"
            )
            await asyncio.sleep(3.0)  # past resume_timeout
            a = await ss.login(alice, resource="laptop")
            m = await next_matching(a.inbox, lambda m: m["body"] == "keep this safe", 10)
            assert m.xml.find("{urn:xmpp:delay}delay") is not None

    run(scenario())


def test_resume_with_an_unknown_id_fails_cleanly(server: Server, run):
    (alice,) = server.new_users("alice")

    async def scenario() -> None:
        s = await auth_only(server, alice)
        s.send(b"<resume xmlns='urn:xmpp:sm:3' h='0' previd='no-such-session'/>")
        got = await s.until(re.compile(rb"</failed>"))
        assert b"item-not-found" in got
        # the stream is still usable: bind normally
        s.send(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        assert b"<jid>" in await s.until(b"</iq>")
        s.close()

    run(scenario())


def test_inactive_client_gets_presence_batched_and_messages_at_once(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj = f"{alice}@{server.domain}"

    async def scenario() -> None:
        s = await rawxmpp.login(
            server.ports["c2s"], server.domain, bob, server.passwords[bob], "pc"
        )
        s.send(f"<presence to='{aj}' type='subscribe'/><presence/>".encode())
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            await s.until(f"from='{aj}/test'".encode())
            s.send(b"<inactive xmlns='urn:xmpp:csi:0'/>")
            await asyncio.sleep(0.2)
            for note in ("one", "two", "three"):
                a.send_presence(pstatus=note)
            await asyncio.sleep(0.5)
            s.buf = b""
            # nothing arrives while the client is inactive ...
            try:
                await s.until(b"<status>", timeout=1.0)
            except TimeoutError:
                pass
            else:
                raise AssertionError("presence reached an inactive client at once")
            # ... until a message comes: the latest presence first, then the message
            a.send_message(mto=f"{bob}@{server.domain}", mbody="ping", mtype="chat")
            got = await s.until(b"ping")
            assert b"<status>three</status>" in got
            assert b"<status>one</status>" not in got and b"<status>two</status>" not in got
            s.send(b"<active xmlns='urn:xmpp:csi:0'/>")
            s.close()

    run(scenario())


def test_a_warned_message_routed_again_is_filtered_once(server: Server, run):
    """The IM URL filter defangs and prefixes a message once: when the session it went to is
    not resumed and the message is routed again, it arrives as it was sent the first time."""
    alice, bob = server.new_users("alice", "bob")
    # the listed domain in the userinfo is left as written (it is not where the link goes),
    # so filtering the warned text again would find it and prefix the message twice
    text = "see http://evil.example:80@evil.example/x"
    warned = f"{DEFAULT_PREFIX} see hxxp://evil.example:80@evil[.]example/x"

    def counters() -> dict[str, int]:
        return json.loads(server.ctl_ok("status", "--json").stdout)["counters"]

    async def scenario() -> None:
        s = await rawxmpp.login(
            server.ports["c2s"], server.domain, alice, server.passwords[alice], "phone"
        )
        await enable(s)
        s.send(b"<presence/>")
        async with Sessions(server) as ss:
            b = await ss.login(bob)
            laptop = await ss.login(alice, resource="laptop")
            s.w.transport.abort()  # the phone drops; its session waits to be resumed
            b.send_message(mto=f"{alice}@{server.domain}/phone", mbody=text, mtype="chat")
            # nobody resumes it: after resume_timeout the message goes to the laptop
            m = await next_matching(laptop.inbox, lambda m: m["type"] == "chat", 20)
            assert m["body"] == warned

    server.ctl_ok("im", "url-filter", "add", "evil.example")
    server.ctl_ok("im", "url-filter", "mode", "warn")
    try:
        before = counters()["url_filter_warned"]
        run(scenario())
        assert counters()["url_filter_warned"] == before + 1
    finally:
        for key in ("mode", "domains"):
            server.ctl_ok("config", "reset", f"im.url_filter.{key}")
