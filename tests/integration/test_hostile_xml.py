"""Hostile XML (RFC 6120 §11.1 restricted XML, size and depth caps): each attack ends its own
stream with the right error and a closed connection, and nobody else notices."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from . import rawxmpp
from .rawxmpp import RawStream
from .server import PASSWORD, Server
from .xmppclient import Sessions, next_matching

HDR = (
    "<stream:stream to='example.test' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)
LAUGHS = (
    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    + "".join(f"<!ENTITY lol{i + 1} '{('&lol%s;' % (i or '')) * 10}'>" for i in range(9))
    + "]>"
    + HDR
    + "<message><body>&lol9;</body></message>"
)

# before login: (bytes, the stream error conditions that are right)
PRE_AUTH = {
    "billion-laughs-dtd": (LAUGHS.encode(), {"restricted-xml"}),
    "external-entity-dtd": (
        (
            "<?xml version='1.0'?><!DOCTYPE s [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>" + HDR
        ).encode(),
        {"restricted-xml"},
    ),
    "comment-before-stream": (("<!-- hi -->" + HDR).encode(), {"restricted-xml"}),
    "comment-in-stream": ((HDR + "<!-- hi -->").encode(), {"restricted-xml"}),
    "processing-instruction": ((HDR + "<?evil data?>").encode(), {"restricted-xml"}),
    "binary-junk": (b"\x00\xff\xfe<<<>>>" * 10, {"not-well-formed", "unsupported-encoding"}),
    "markup-junk": ((HDR + "<<<>>>").encode(), {"not-well-formed"}),
}


def to(user: str) -> bytes:
    return f"<message to='{user}@example.test' type='chat'>".encode()


# after login, sent by a bound session; built per test because they name the victim
def post_auth_attacks(victim: str) -> dict[str, tuple[bytes, set[str]]]:
    return {
        "undefined-entity": (to(victim) + b"<body>&foo;</body></message>", {"restricted-xml"}),
        "comment-in-stanza": (
            to(victim) + b"<body><!-- x --></body></message>",
            {"restricted-xml"},
        ),
        "pi-in-stanza": (to(victim) + b"<body><?x y?></body></message>", {"restricted-xml"}),
        "1MiB-stanza": (
            to(victim) + b"<body>" + b"A" * (1 << 20) + b"</body></message>",
            {"policy-violation"},
        ),
        "20000-deep-nesting": (to(victim) + b"<a>" * 20000, {"policy-violation"}),
        "200-deep-nesting": (
            to(victim) + b"<a>" * 200 + b"</a>" * 200 + b"</message>",
            {"policy-violation"},
        ),
    }


async def pre_auth(server: Server, data: bytes) -> tuple[bytes, bool]:
    r, w = await asyncio.open_connection("127.0.0.1", server.ports["c2s"])
    s = RawStream(r, w, server.domain)
    with contextlib.suppress(OSError):
        s.send(data)
        await w.drain()
    try:
        return await s.read_until_closed(10)
    finally:
        s.close()


async def post_auth(server: Server, user: str, data: bytes) -> tuple[bytes, bool]:
    s = await rawxmpp.login(server.ports["c2s"], server.domain, user, PASSWORD, "raw")
    with contextlib.suppress(OSError, RuntimeError):
        s.send(data)
        await s.w.drain()
    try:
        return await s.read_until_closed(10)
    finally:
        s.close()


def check_refused(name: str, got: bytes, closed: bool, want: set[str]) -> None:
    cond = rawxmpp.stream_error(got)
    assert cond in want, f"{name}: stream error {cond!r}, want {want}; got {got[-300:]!r}"
    assert closed, f"{name}: <{cond}/> sent but the TCP connection was left open"


@pytest.fixture(scope="module")
def people(server: Server) -> dict[str, str]:
    alice, bob, mallory = server.new_users("alice", "bob", "mallory")
    return {"alice": alice, "bob": bob, "mallory": mallory}


async def normal_users_chat(server: Server, people: dict[str, str]) -> None:
    async with Sessions(server) as ss:
        a = await ss.login(people["alice"])
        b = await ss.login(people["bob"], resource="check")
        a.send_message(
            mto=f"{people['bob']}@{server.domain}/check", mbody="still here", mtype="chat"
        )
        await next_matching(b.inbox, lambda m: m["body"] == "still here")


@pytest.mark.parametrize("name", PRE_AUTH)
def test_pre_auth_attack_gets_stream_error_and_close(server: Server, run, name):
    data, want = PRE_AUTH[name]
    got, closed = run(pre_auth(server, data))
    check_refused(name, got, closed, want)


@pytest.mark.parametrize("name", list(post_auth_attacks("x")))
def test_post_auth_attack_gets_stream_error_and_close(server: Server, run, people, name):
    data, want = post_auth_attacks(people["bob"])[name]
    got, closed = run(post_auth(server, people["mallory"], data))
    check_refused(name, got, closed, want)


def test_benign_escapes_and_moderate_nesting_and_large_stanza_pass(server: Server, run, people):
    """The checks must not catch what RFC 6120 allows: the five predefined entities, character
    references, a few levels of extension elements, a stanza under the size limit."""
    bob = people["bob"]

    async def scenario() -> None:
        async with Sessions(server) as ss:
            b = await ss.login(bob, resource="benign")
            s = await rawxmpp.login(
                server.ports["c2s"], server.domain, people["mallory"], PASSWORD, "ok"
            )
            try:
                dest = f"<message to='{bob}@example.test/benign' type='chat'>".encode()
                s.send(dest + b"<body>&lt;&amp;&gt;&quot;&apos;&#65;&#x42;</body></message>")
                m = await next_matching(b.inbox, lambda m: m["body"].startswith("<&"))
                assert m["body"] == "<&>\"'AB"
                nested = b"<x xmlns='urn:example:nest'>" + b"<a>" * 10 + b"</a>" * 10 + b"</x>"
                s.send(dest + b"<body>nested</body>" + nested + b"</message>")
                await next_matching(b.inbox, lambda m: m["body"] == "nested")
                big = "B" * 200_000
                s.send(dest + f"<body>{big}</body></message>".encode())
                m = await next_matching(b.inbox, lambda m: m["body"].startswith("BBB"), 15)
                assert len(m["body"]) == 200_000
                s.send(b"<iq type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>")
                await s.until(b"alive")
                assert rawxmpp.stream_error(s.buf) is None
            finally:
                s.close()

    run(scenario())


def test_server_keeps_serving_and_memory_stays_flat_under_repeated_attacks(
    server: Server, run, people
):
    attacks = post_auth_attacks(people["bob"])

    async def one_round() -> list[str]:
        bad = []
        for name, (data, want) in PRE_AUTH.items():
            got, closed = await pre_auth(server, data)
            if rawxmpp.stream_error(got) not in want or not closed:
                bad.append(name)
        for name, (data, want) in attacks.items():
            got, closed = await post_auth(server, people["mallory"], data)
            if rawxmpp.stream_error(got) not in want or not closed:
                bad.append(name)
        return bad

    async def scenario() -> tuple[int, int, list[str]]:
        await normal_users_chat(server, people)
        await one_round()  # warm-up: caches, TLS session state, allocator arenas
        rss0 = server.rss_kb()
        bad: list[str] = []
        for _ in range(5):
            bad += await one_round()
        await asyncio.sleep(0.5)
        rss1 = server.rss_kb()
        await normal_users_chat(server, people)
        return rss0, rss1, bad

    rss0, rss1, bad = run(scenario(), timeout=110)
    assert server.running, "the server died under attack"
    assert bad == [], f"attacks not refused properly: {bad}"
    assert rss1 - rss0 < 8 * 1024, f"RSS grew from {rss0} KB to {rss1} KB over 5 rounds of attacks"
