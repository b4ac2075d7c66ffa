"""XEP-0054 vCards and XEP-0153 avatar hashes, end to end with slixmpp's own plugins.

Who reads what follows DESIGN §4 access levels (xmpp/vcard.py explains the rule): colleagues
see work details, friends and family everything, a blocked reader nothing at all.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0054.stanza import VCardTemp

from .server import DOMAIN, Server
from .sipclient import SipClient
from .test_federation import pair, subscribe_both_ways
from .xmppclient import Client, Sessions, next_matching

V = "{vcard-temp}"
CARD = f"""<vCard xmlns='vcard-temp'>
  <FN>Alice Liddell</FN>
  <TITLE>Engineer</TITLE>
  <TEL><WORK/><VOICE/><NUMBER>+1 555 0100</NUMBER></TEL>
  <TEL><CELL/><NUMBER>+1 555 0199</NUMBER></TEL>
  <TEL><HOME/><NUMBER>+1 555 0111</NUMBER></TEL>
  <EMAIL><INTERNET/><USERID>alice@work.example</USERID></EMAIL>
  <BDAY>1990-05-04</BDAY>
  <PHOTO><TYPE>image/png</TYPE><BINVAL>{base64.b64encode(b"tiny-avatar").decode()}</BINVAL></PHOTO>
</vCard>"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("vcard"), sip=True).start()
    yield s
    s.stop()


async def login(s: Sessions, user: str, *plugins: str, **kw: Any) -> Client:
    c = s.client(user, **kw)
    for p in ("xep_0054", *plugins):
        c.register_plugin(p)
    return await c.start()


def card(xml: str) -> VCardTemp:
    return VCardTemp(xml=ET.fromstring(xml))


async def read_card(c: Client, jid: str) -> ET.Element:
    iq = await c.plugin["xep_0054"].get_vcard(jid, cached=False, timeout=10)
    found = iq.xml.find(V + "vCard")
    assert found is not None, iq
    return found


def names(el: ET.Element) -> set[str]:
    return {child.tag.removeprefix(V) for child in el}


async def error_of(coro: Any) -> str:
    with pytest.raises(IqError) as e:
        await coro
    return str(e.value.iq["error"]["condition"])


def test_own_card_is_kept_and_a_colleague_sees_the_work_part(
    server: Server, run: Callable[..., Any]
) -> None:
    alice, bob, carol = server.new_users("alice", "bob", "carol")
    server.ctl_ok("presence", "level", f"{alice}@{DOMAIN}", f"{carol}@{DOMAIN}", "friends")

    async def scenario() -> None:
        async with Sessions(server) as s:
            a = await login(s, alice)
            b = await login(s, bob)
            c = await login(s, carol)
            await a.plugin["xep_0054"].publish_vcard(card(CARD), timeout=10)
            own = await read_card(a, f"{alice}@{DOMAIN}")
            assert own.findtext(V + "FN") == "Alice Liddell"
            assert names(own) >= {"FN", "TITLE", "TEL", "EMAIL", "BDAY", "PHOTO"}
            assert len(own.findall(V + "TEL")) == 3
            # a colleague: work phone, title, e-mail and photo; no mobile, home or birthday
            seen = await read_card(b, f"{alice}@{DOMAIN}")
            assert seen.findtext(V + "FN") == "Alice Liddell"
            assert seen.findtext(V + "TITLE") == "Engineer"
            phones = [t.findtext(V + "NUMBER") for t in seen.findall(V + "TEL")]
            assert phones == ["+1 555 0100"]
            assert seen.find(V + "BDAY") is None and seen.find(V + "PHOTO") is not None
            # friends and family: everything
            close = await read_card(c, f"{alice}@{DOMAIN}")
            assert len(close.findall(V + "TEL")) == 3 and close.findtext(V + "BDAY")
            # nobody changes another user's card
            other = b.make_iq_set(ito=f"{alice}@{DOMAIN}")
            other.append(card("<vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard>"))
            assert await error_of(other.send(timeout=10)) == "forbidden"
            assert (await read_card(b, f"{alice}@{DOMAIN}")).findtext(V + "FN") == "Alice Liddell"

    run(scenario())


def test_display_name_set_by_the_admin_is_the_name_of_a_user_without_a_card(
    server: Server, run: Callable[..., Any]
) -> None:
    robert = server.add_user("robert-vc", name="Robert Brown").split("@")[0]
    (bob,) = server.new_users("bob")

    async def scenario() -> None:
        async with Sessions(server) as s:
            b = await login(s, bob)
            seen = await read_card(b, f"{robert}@{DOMAIN}")
            assert seen.findtext(V + "FN") == "Robert Brown"
            assert seen.findtext(V + "NICKNAME") == "Robert Brown"
            # a user with neither card nor display name: an empty card
            assert names(await read_card(b, f"{bob}@{DOMAIN}")) == set()
            # an address without an account: service-unavailable (XEP-0054 §3.2)
            missing = b.plugin["xep_0054"].get_vcard(f"nobody-here@{DOMAIN}", timeout=10)
            assert await error_of(missing) == "service-unavailable"

    run(scenario())


def test_blocked_reader_gets_nothing_not_even_that_the_account_exists(
    server: Server, run: Callable[..., Any]
) -> None:
    alice, mallory = server.new_users("alice", "mallory")
    server.ctl_ok("presence", "level", f"{alice}@{DOMAIN}", f"{mallory}@{DOMAIN}", "blocked")

    async def scenario() -> None:
        async with Sessions(server) as s:
            a = await login(s, alice)
            m = await login(s, mallory)
            await a.plugin["xep_0054"].publish_vcard(card(CARD), timeout=10)
            got = m.plugin["xep_0054"].get_vcard(f"{alice}@{DOMAIN}", timeout=10)
            assert await error_of(got) == "service-unavailable"

    run(scenario())


def test_card_over_the_size_limit_is_refused_and_the_old_one_stays(
    server: Server, run: Callable[..., Any]
) -> None:
    (alice,) = server.new_users("alice")
    big = base64.b64encode(os.urandom(150_000)).decode()  # over the default 128 KiB

    async def scenario() -> None:
        async with Sessions(server) as s:
            a = await login(s, alice)
            await a.plugin["xep_0054"].publish_vcard(
                card("<vCard xmlns='vcard-temp'><FN>Small</FN></vCard>"), timeout=10
            )
            huge = card(
                f"<vCard xmlns='vcard-temp'><FN>Huge</FN><PHOTO><TYPE>image/png</TYPE>"
                f"<BINVAL>{big}</BINVAL></PHOTO></vCard>"
            )
            with pytest.raises(IqError) as e:
                await a.plugin["xep_0054"].publish_vcard(huge, timeout=10)
            assert e.value.iq["error"]["condition"] == "not-acceptable"
            assert "at most 131072" in e.value.iq["error"]["text"]
            assert (await read_card(a, f"{alice}@{DOMAIN}")).findtext(V + "FN") == "Small"

    run(scenario())


def test_contact_sees_the_photo_hash_in_presence_after_a_photo_is_set(
    server: Server, run: Callable[..., Any]
) -> None:
    alice, bob = server.new_users("alice", "bob")
    ja = f"{alice}@{DOMAIN}"
    image = os.urandom(3000)
    digest = hashlib.sha1(image).hexdigest()

    async def scenario() -> None:
        async with Sessions(server) as s:
            a = await login(s, alice)  # no XEP-0153 in this client: the server adds the hash
            b = await login(s, bob, "xep_0153")
            updates: asyncio.Queue[Any] = asyncio.Queue()
            b.add_event_handler("vcard_avatar_update", updates.put_nowait)
            b.send_presence(pto=ja, ptype="subscribe")
            await next_matching(b.presences, lambda p: p["from"].bare == ja, 10)
            photo = card(
                "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE>"
                f"<BINVAL>{base64.b64encode(image).decode()}</BINVAL></PHOTO></vCard>"
            )
            await a.plugin["xep_0054"].publish_vcard(photo, timeout=10)
            p = await next_matching(
                updates, lambda p: p["from"].bare == ja and p["vcard_temp_update"]["photo"], 10
            )
            assert p["vcard_temp_update"]["photo"] == digest
            # a client that announces the hash itself is left alone: one <x/>, its own
            a2 = await login(s, alice, "xep_0153", resource="second")
            await a2.plugin["xep_0153"].set_avatar(avatar=image, mtype="image/png", timeout=10)
            p = await next_matching(b.presences, lambda p: p["from"].resource == "second", 10)
            xs = p.xml.findall("{vcard-temp:x:update}x")
            assert len(xs) == 1 and xs[0].findtext("{vcard-temp:x:update}photo") == digest

    run(scenario())


def test_sip_users_presence_carries_the_photo_hash_to_xmpp_watchers(
    server: Server, run: Callable[..., Any]
) -> None:
    alice, carol = server.new_users("alice", "carol")
    jc = f"{carol}@{DOMAIN}"
    image = os.urandom(1000)
    sip = SipClient(server.ports["sip"], carol, server.passwords[carol], DOMAIN, "udp")

    async def scenario() -> None:
        async with Sessions(server) as s:
            # carol sets her photo from an XMPP client once, then signs in over SIP only
            c = await login(s, carol)
            photo = card(
                "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE>"
                f"<BINVAL>{base64.b64encode(image).decode()}</BINVAL></PHOTO></vCard>"
            )
            await c.plugin["xep_0054"].publish_vcard(photo, timeout=10)
            await c.stop()
            a = await login(s, alice)
            a.send_presence(pto=jc, ptype="subscribe")
            assert (await asyncio.to_thread(sip.register)).status == 200
            p = await next_matching(
                a.presences, lambda p: p["from"].bare == jc and p["type"] == "available", 10
            )
            photo_hash = p.xml.findtext("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
            assert photo_hash == hashlib.sha1(image).hexdigest()

    try:
        run(scenario())
    finally:
        sip.close()


def test_external_contact_sees_only_name_and_photo_over_federation(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server)
    alice = a.add_user("alice", name="Alice Liddell").split("@")[0]
    (erin,) = b.new_users("erin")
    ja, je = f"{alice}@a.test", f"{erin}@b.test"

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            ca = await login(sa, alice)
            ce = await login(sb, erin)
            await ca.plugin["xep_0054"].publish_vcard(card(CARD), timeout=10)
            await subscribe_both_ways(ca, ce, ja, je)
            seen = await read_card(ce, ja)
            assert names(seen) == {"FN", "NICKNAME", "PHOTO"}
            assert seen.findtext(V + "FN") == "Alice Liddell"
            # the directory is for colleagues only: the partner's users get nothing
            iq = ce.make_iq_get(ito="a.test")
            iq.append(ET.Element("{jabber:iq:search}query"))
            assert await error_of(iq.send(timeout=15)) == "service-unavailable"

    run(scenario(), 90)


UPDATE = "{vcard-temp:x:update}x"
PHOTO = "{vcard-temp:x:update}photo"
CARD_NO_PHOTO = "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>"


def announced_photo(p: Any) -> str | None:
    """What alice's presence says of her avatar: the hash, "" for none (an empty <photo/>),
    None when it says nothing."""
    xs = p.xml.findall(UPDATE)
    assert len(xs) <= 1, p
    photo = xs[0].find(PHOTO) if xs else None
    return None if photo is None else photo.text or ""


def test_removing_the_photo_announces_an_empty_photo_to_contacts(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    server = make_server()
    alice, bob = server.new_users("alice", "bob")
    ja = f"{alice}@{server.domain}"
    image = os.urandom(2000)
    digest = hashlib.sha1(image).hexdigest()

    def from_alice(p: Any) -> bool:
        return bool(p["from"].bare == ja and p["type"] == "available")

    async def before_restart() -> None:
        async with Sessions(server) as s:
            a = await login(s, alice)  # no XEP-0153 in this client: the server speaks for it
            b = await login(s, bob, "xep_0153")
            b.send_presence(pto=ja, ptype="subscribe")
            # a user who never stored a card says nothing of an avatar
            p = await next_matching(b.presences, from_alice, 10)
            assert announced_photo(p) is None
            with_photo = card(
                "<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE>"
                f"<BINVAL>{base64.b64encode(image).decode()}</BINVAL></PHOTO></vCard>"
            )
            await a.plugin["xep_0054"].publish_vcard(with_photo, timeout=10)
            p = await next_matching(b.presences, lambda p: from_alice(p) and announced_photo(p))
            assert announced_photo(p) == digest
            # the card again without its PHOTO: bob's client is told to clear the picture
            await a.plugin["xep_0054"].publish_vcard(card(CARD_NO_PHOTO), timeout=10)
            p = await next_matching(
                b.presences, lambda p: from_alice(p) and announced_photo(p) == "", 10
            )
            assert (await read_card(b, ja)).find(V + "PHOTO") is None

    run(before_restart())
    code = server.stop()
    assert code == 0, f"the server did not stop cleanly (exit {code})"
    server.start()

    async def after_restart() -> None:
        # the stored card still says "no avatar" to a contact who signs in later
        async with Sessions(server) as s:
            await login(s, alice)
            b = await login(s, bob)
            p = await next_matching(b.presences, from_alice, 10)
            assert announced_photo(p) == ""

    run(after_restart())
