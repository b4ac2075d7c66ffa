"""XEP-0055 directory search on the domain, with slixmpp's xep_0055 plugin and legacy fields."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from .server import DOMAIN, Server
from .xmppclient import Client, Sessions

S = "{jabber:iq:search}"
_n = itertools.count(1)


async def login(s: Sessions, user: str) -> Client:
    c = s.client(user)
    c.register_plugin("xep_0055", pconfig={"provide_search": False})
    return await c.start()


async def form_search(c: Client, **fields: str) -> list[dict[str, Any]]:
    iq = c.plugin["xep_0055"].make_search_iq(ito=DOMAIN)
    for var, value in fields.items():
        iq["search"]["form"].add_field(var, value=value)
    got = await iq.send(timeout=10)
    form = got["search"]["form"]
    assert form["type"] == "result"
    return [dict(item) for item in form["items"]]


async def legacy_search(c: Client, **fields: str) -> list[ET.Element]:
    iq = c.make_iq_set(ito=DOMAIN)
    q = ET.SubElement(iq.xml, S + "query")
    for name, value in fields.items():
        ET.SubElement(q, S + name).text = value
    got = await iq.send(timeout=10)
    return got.xml.findall(f"{S}query/{S}item")


def test_rob_finds_robert_brown_by_display_name_but_not_disabled_users(
    server: Server, run: Callable[..., Any]
) -> None:
    n = next(_n)
    robert = server.add_user(f"rb{n}", name="Robert Brown")
    server.add_user(f"rw{n}", name="Roberta White")
    server.ctl_ok("user", "disable", f"rw{n}@{DOMAIN}")
    (searcher,) = server.new_users("searcher")

    async def scenario() -> None:
        async with Sessions(server) as s:
            c = await login(s, searcher)
            info = await c.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=10)
            assert "jabber:iq:search" in info["disco_info"]["features"]
            # the form: slixmpp reads its fields
            ask = c.make_iq_get(ito=DOMAIN)
            ask.enable("search")
            form = await ask.send(timeout=10)
            offered = {f["var"] for f in form["search"]["form"]["fields"]}
            assert {"search", "first", "last", "nick", "email"} <= offered
            items = await form_search(c, search="rob")
            jids = {i["jid"] for i in items}
            assert robert in jids and f"rw{n}@{DOMAIN}" not in jids
            hit = next(i for i in items if i["jid"] == robert)
            assert hit["name"] == "Robert Brown" and hit["first"] == "Robert"
            assert hit["last"] == "Brown" and hit["nick"] == f"rb{n}"
            # by user name too, in any case
            assert robert in {i["jid"] for i in await form_search(c, search=f"RB{n}")}
            # the legacy fields (XEP-0055 §2): first name "Rob", last name "brown"
            items = await legacy_search(c, first="Rob", last="brown")
            found = {i.get("jid"): i for i in items}
            assert robert in found and f"rw{n}@{DOMAIN}" not in found
            assert found[robert].findtext(S + "nick") == f"rb{n}"
            assert found[robert].findtext(S + "first") == "Robert"
            assert await legacy_search(c, last="Nobody-Has-This-Name") == []

    run(scenario())


def test_users_who_blocked_the_searcher_are_not_listed(
    server: Server, run: Callable[..., Any]
) -> None:
    n = next(_n)
    hidden = server.add_user(f"hid{n}", name=f"Quiet Person{n}")
    (searcher,) = server.new_users("nosy")
    server.ctl_ok("presence", "level", hidden, f"{searcher}@{DOMAIN}", "blocked")

    async def scenario() -> None:
        async with Sessions(server) as s:
            c = await login(s, searcher)
            assert await form_search(c, search=f"Person{n}") == []
            (other,) = server.new_users("other")
            o = await login(s, other)
            assert [i["jid"] for i in await form_search(o, search=f"Person{n}")] == [hidden]

    run(scenario())
