"""XEP-0055 directory search on the domain, with slixmpp's xep_0055 plugin and legacy fields,
paged with XEP-0059 Result Set Management (slixmpp's xep_0059 iterator)."""

from __future__ import annotations

import itertools
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0055.stanza import Search
from slixmpp.plugins.xep_0059 import Set
from slixmpp.stanza import Iq
from slixmpp.xmlstream import register_stanza_plugin

from .server import DOMAIN, PASSWORD, Server
from .xmppclient import Client, Sessions

S = "{jabber:iq:search}"
RSM = "http://jabber.org/protocol/rsm"
_n = itertools.count(1)

register_stanza_plugin(Search, Set)  # XEP-0059 inside jabber:iq:search, both ways


async def login(s: Sessions, user: str) -> Client:
    c = s.client(user)
    c.register_plugin("xep_0055", pconfig={"provide_search": False})
    c.register_plugin("xep_0059")
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


def import_users(server: Server, tmp_path: Path, prefix: str, name: str, n: int) -> list[str]:
    """n accounts from one `se-ctl user import` file; their JIDs in user name order."""
    csv = tmp_path / f"{prefix}.csv"
    rows = [f"{prefix}x{i:03},{name} {i:03},{PASSWORD}" for i in range(n)]
    csv.write_text("\n".join(["user,display name,password", *rows]) + "\n")
    server.ctl_ok("user", "import", str(csv))
    return [f"{prefix}x{i:03}@{DOMAIN}" for i in range(n)]


def form_iq(c: Client, text: str) -> Iq:
    iq = c.plugin["xep_0055"].make_search_iq(ito=DOMAIN)
    iq["search"]["form"].add_field("search", value=text)
    return iq


def legacy_iq(c: Client, **fields: str) -> Iq:
    iq = c.make_iq_set(ito=DOMAIN)
    iq.enable("search")
    for name, value in fields.items():
        ET.SubElement(iq["search"].xml, S + name).text = value
    return iq


def page_jids(reply: Iq) -> list[str]:
    form = reply.xml.find(f"{S}query/{{jabber:x:data}}x")
    if form is not None:
        return [dict(item)["jid"] for item in reply["search"]["form"]["items"]]
    return [item.get("jid", "") for item in reply.xml.findall(f"{S}query/{S}item")]


async def ask(iq: Iq, **rsm: str | bool) -> tuple[list[str], Set]:
    """Send the search with these <set/> children; the page's JIDs and the answer's <set/>."""
    iq["id"] = iq.stream.new_id()
    iq["search"]["rsm"].clear()
    for key, value in rsm.items():
        iq["search"]["rsm"][key] = value
    reply = await iq.send(timeout=10)
    return page_jids(reply), reply["search"]["rsm"]


async def refused(iq: Iq, **rsm: str | bool) -> str:
    try:
        await ask(iq, **rsm)
    except IqError as e:
        return str(e.iq["error"]["condition"])
    raise AssertionError(f"{rsm} was answered")


def test_paging_through_120_matches_with_rsm(
    server: Server, run: Callable[..., Any], tmp_path: Path
) -> None:
    tag = f"{next(_n)}t{time.monotonic_ns() % 1_000_000}"
    users = import_users(server, tmp_path, f"pg{tag}", f"Pager{tag} Member", 120)
    (searcher,) = server.new_users("seeker")

    async def scenario() -> None:
        async with Sessions(server) as s:
            c = await login(s, searcher)
            info = await c.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=10)
            assert RSM in info["disco_info"]["features"]

            # forwards with slixmpp's iterator over the form variant: 50, 50, 20, then an
            # empty page after the last item (only the count) ends it
            pages: list[list[str]] = []
            firsts: list[tuple[str, str, str]] = []
            async for reply in c.plugin["xep_0059"].iterate(
                form_iq(c, f"pager{tag}"), "search", amount=50, iq_options={"timeout": 10}
            ):
                rsm = reply["search"]["rsm"]
                pages.append(page_jids(reply))
                firsts.append((rsm["first_index"], rsm["first"], rsm["last"]))
                assert rsm["count"] == "120"
            assert [len(p) for p in pages] == [50, 50, 20]
            assert [j for p in pages for j in p] == users  # no duplicates, no gaps, in order
            assert firsts == [
                ("0", users[0], users[49]),
                ("50", users[50], users[99]),
                ("100", users[100], users[119]),
            ]

            # backwards over the legacy fields, from the last page (an empty <before/>)
            back: list[str] = []
            async for reply in c.plugin["xep_0059"].iterate(
                legacy_iq(c, first=f"Pager{tag} member", nick=f"PG{tag}"),
                "search",
                amount=30,
                reverse=True,
                iq_options={"timeout": 10},
            ):
                back = page_jids(reply) + back
            assert back == users

            legacy = legacy_iq(c, first=f"pager{tag}")
            # <max>0</max>: the count alone
            jids, rsm = await ask(legacy, max="0")
            assert jids == [] and rsm["count"] == "120" and not rsm["first"] and not rsm["last"]
            # a page out of order by index, and the page before an item
            jids, rsm = await ask(legacy, max="10", index="100")
            assert jids == users[100:110] and rsm["first_index"] == "100"
            jids, rsm = await ask(legacy, max="5", before=users[50])
            assert jids == users[45:50] and rsm["first_index"] == "45"
            jids, rsm = await ask(legacy, max="5", after=users[117])
            assert jids == users[118:] and rsm["last"] == users[119]
            # the server's cap on a page holds whatever the client asks
            jids, rsm = await ask(legacy, max="500")
            assert jids == users[:50] and rsm["count"] == "120"
            # a set without <max/> gets a page of the server's size
            jids, _ = await ask(legacy, after=users[99])
            assert jids == users[100:]

            # errors: ids that name no item of this result; a set that does not parse
            assert await refused(legacy, after=f"nobody{tag}@{DOMAIN}") == "item-not-found"
            assert await refused(legacy, before=f"{searcher}@{DOMAIN}") == "item-not-found"
            assert await refused(legacy, after="not a jid") == "item-not-found"
            assert await refused(legacy, max="ten") == "bad-request"
            assert await refused(legacy, max="-1") == "bad-request"
            assert await refused(legacy, index="-3") == "bad-request"

            # without a <set/>: the first 50 and a note saying how many there are, as before
            reply = await legacy_iq(c, first=f"pager{tag}").send(timeout=10)
            assert page_jids(reply) == users[:50]
            assert "first 50 of 120" in (reply.xml.findtext(f"{S}query/{S}instructions") or "")
            assert reply.xml.find(f"{S}query/{{{RSM}}}set") is None
            items = await form_search(c, search=f"pager{tag}")
            assert [i["jid"] for i in items] == users[:50]

    run(scenario())
