"""Debian's baresip (a stock SIP client) and slixmpp (a stock XMPP library) message each
other through the server, both ways."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
