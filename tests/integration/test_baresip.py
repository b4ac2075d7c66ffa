"""Debian's baresip (a stock SIP client) and slixmpp (a stock XMPP library) message each
other through the server, both ways, and each sees the other's presence change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .baresip import BARESIP, Baresip
from .server import DOMAIN, Server
from .xmppclient import Sessions, next_matching

pytestmark = pytest.mark.skipif(
    BARESIP is None, reason="baresip (Debian package baresip) is not installed"
)


def test_baresip_and_slixmpp_message_each_other(make_server, tmp_path: Path, run) -> None:
    s: Server = make_server(sip=True)
    alice, carol = s.new_users("alice", "carol")
    phone = Baresip(
        tmp_path / "baresip", carol, s.passwords[carol], DOMAIN, s.ports["sip"],
        contact=f"sip:{alice}@{DOMAIN}",
    )  # fmt: skip
    try:
        phone.start()
    except RuntimeError as e:
        pytest.skip(f"baresip cannot run headless here: {e}")
    try:
        # registered (printed as "<aor>: ... 200 OK"); the event may precede our connection
        phone.wait_log("200 OK", timeout=15)

        async def main() -> None:
            async with Sessions(s) as xs:
                a = await xs.login(alice)
                # baresip -> XMPP: /message goes to its current contact, alice
                answer = await asyncio.to_thread(phone.command, "message", "hello from baresip")
                assert answer.get("ok"), answer
                m = await next_matching(a.inbox, lambda m: m["body"] == "hello from baresip")
                assert m["from"].bare == f"{carol}@{DOMAIN}"
                # XMPP -> baresip: its menu module shows what arrives, with the sender
                a.send_message(mto=f"{carol}@{DOMAIN}", mbody="hello from slixmpp", mtype="chat")
                shown = await asyncio.to_thread(phone.wait_output, "hello from slixmpp")
                assert f"sip:{alice}@{DOMAIN}" in shown

        run(main())
    finally:
        phone.stop()


def test_baresip_and_slixmpp_see_each_others_presence(make_server, tmp_path: Path, run) -> None:
    """baresip's presence module PUBLISHes its own state (open/closed: version 1.0 has only
    /presence_online and /presence_offline) and SUBSCRIBEs to its contact, printing each
    change of the contact's state as "<uri> changed status from X to Y"."""
    s: Server = make_server(sip=True)
    alice, carol = s.new_users("alice", "carol")
    carol_jid = f"{carol}@{DOMAIN}"
    phone = Baresip(
        tmp_path / "baresip", carol, s.passwords[carol], DOMAIN, s.ports["sip"],
        contact=f"sip:{alice}@{DOMAIN}", presence=True,
    )  # fmt: skip
    try:
        phone.start()
    except RuntimeError as e:
        pytest.skip(f"baresip cannot run headless here: {e}")
    try:
        phone.wait_log("200 OK", timeout=15)

        def carol_is(type_: str) -> Callable[[Any], bool]:
            return lambda p: p["from"].bare == carol_jid and p["type"] == type_

        async def main() -> None:
            async with Sessions(s) as xs:
                a = await xs.login(alice)
                a.send_presence(pto=carol_jid, ptype="subscribe")
                # XMPP -> baresip: alice goes Do Not Disturb, which RPID says as <rpid:busy/>
                # (RFC 8048); baresip shows her Online first (its SUBSCRIBE goes out a
                # moment after it registered), then Busy
                alice_uri = f"sip:{alice}@{DOMAIN}"
                await next_matching(a.presences, carol_is("available"))
                await asyncio.to_thread(phone.wait_contact_status, alice_uri, "Online")
                a.send_presence(pshow="dnd", pstatus="presenting")
                await asyncio.to_thread(
                    phone.wait_log, f"<{alice_uri}> changed status from Online to Busy"
                )
                assert await asyncio.to_thread(phone.contact_status, alice_uri) == "Busy"
                # baresip -> XMPP: a PUBLISH with <basic>closed</basic> takes carol offline
                # although she stays registered; open brings her back
                answer = await asyncio.to_thread(phone.command, "presence_offline")
                assert answer.get("ok"), answer
                await next_matching(a.presences, carol_is("unavailable"))
                answer = await asyncio.to_thread(phone.command, "presence_online")
                assert answer.get("ok"), answer
                await next_matching(a.presences, carol_is("available"))

        run(main())
    finally:
        phone.stop()
