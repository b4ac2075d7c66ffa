"""XEP-0077 in-band password change with slixmpp's plugin; registration itself stays off."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from . import rawxmpp
from .server import DOMAIN, Server
from .sipclient import SipClient
from .xmppclient import Client, LoginFailed, Sessions

R = "{jabber:iq:register}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("passwd"), sip=True).start()
    yield s
    s.stop()


async def login(s: Sessions, user: str, password: str | None = None, **kw: Any) -> Client:
    c = s.client(user, password, **kw)
    c.register_plugin("xep_0077", pconfig={"create_account": False})
    return await c.start()


async def condition(coro: Any) -> tuple[str, str]:
    with pytest.raises(IqError) as e:
        await coro
    return str(e.value.iq["error"]["condition"]), str(e.value.iq["error"]["text"])


def test_password_change_takes_effect_for_xmpp_and_sip_logins(
    server: Server, run: Callable[..., Any]
) -> None:
    (alice,) = server.new_users("alice")
    old, new = server.passwords[alice], "Brand-New-Secret-42"

    async def scenario() -> None:
        async with Sessions(server) as s:
            a = await login(s, alice)
            other = await login(s, alice, resource="laptop")
            await a.plugin["xep_0077"].change_password(new, jid=DOMAIN, timeout=30)
            # the other session stays signed in and keeps working
            await other.plugin["xep_0199"].ping(DOMAIN, timeout=10)
            assert (await login(s, alice, new, resource="fresh")).is_connected()
            with pytest.raises(LoginFailed):
                await login(s, alice, old, resource="stale")

    run(scenario())
    sip = SipClient(server.ports["sip"], alice, new, DOMAIN, "udp")
    try:
        assert sip.register().status == 200
        assert sip.register(password=old).status == 403
    finally:
        sip.close()


def test_bad_password_and_other_users_and_removal_are_refused(
    server: Server, run: Callable[..., Any]
) -> None:
    alice, bob = server.new_users("alice", "bob")

    async def scenario() -> None:
        async with Sessions(server) as s:
            a = await login(s, alice)
            reg = a.plugin["xep_0077"]
            # RFC 8265 OpaqueString: no control characters
            cond, text = await condition(reg.change_password("bad\u0085pass", timeout=30))
            assert cond == "not-acceptable" and "password" in text
            # an empty password element: PRECIS refuses an empty string too
            iq = a.make_iq_set(ito=DOMAIN)
            iq["register"]["username"] = alice
            ET.SubElement(iq["register"].xml, R + "password")
            assert (await condition(iq.send(timeout=10)))[0] == "not-acceptable"
            # another user's name is a registration: off
            iq = a.make_iq_set(ito=DOMAIN)
            iq["register"]["username"] = bob
            iq["register"]["password"] = "Another-Pass-99"
            assert (await condition(iq.send(timeout=10)))[0] == "not-allowed"
            iq = a.make_iq_set(ito=DOMAIN)
            iq["register"]["username"] = "newcomer"
            iq["register"]["password"] = "Another-Pass-99"
            assert (await condition(iq.send(timeout=10)))[0] == "not-allowed"
            # only one field: bad-request
            iq = a.make_iq_set(ito=DOMAIN)
            iq["register"]["password"] = "Another-Pass-99"
            assert (await condition(iq.send(timeout=10)))[0] == "bad-request"
            # cancelling the account is the admin's job
            cond, _ = await condition(reg.cancel_registration(jid=DOMAIN, timeout=10))
            assert cond == "not-allowed"
            # the get says the account is registered, and never tells the password
            got = await reg.get_registration(jid=DOMAIN, timeout=10)
            q = got.xml.find(R + "query")
            assert q is not None and q.find(R + "registered") is not None
            assert q.findtext(R + "username") == alice and not q.findtext(R + "password")
            info = await a.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=10)
            assert "jabber:iq:register" in info["disco_info"]["features"]
        # nothing changed: the original password still works
        async with Sessions(server) as s:
            await login(s, alice)

    run(scenario())


def test_no_registration_before_sign_in(server: Server, run: Callable[..., Any]) -> None:
    async def scenario() -> None:
        s, _ = await rawxmpp.open_stream(server.ports["c2s"], DOMAIN)
        try:
            features = await rawxmpp.starttls(s)
            assert b"iq-register" not in features and b"jabber:iq:register" not in features
            s.send(
                b"<iq type='set' id='r1'><query xmlns='jabber:iq:register'>"
                b"<username>intruder</username><password>Some-Pass-123</password></query></iq>"
            )
            data, closed = await s.read_until_closed()
            assert rawxmpp.stream_error(data) == "not-authorized" and closed
        finally:
            s.close()

    run(scenario())
    assert "intruder@" not in server.ctl_ok("user", "list").stdout
