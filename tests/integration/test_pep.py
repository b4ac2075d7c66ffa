"""XEP-0163 PEP, XEP-0084 avatars, OMEMO-style device lists, XEP-0049 private storage and
bookmarks (XEP-0048 / XEP-0402), end to end with slixmpp and its plugins."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004.stanza import Form
from slixmpp.xmlstream import ET

from .server import Server
from .xmppclient import Client, Sessions, next_matching, nothing_matching

EVENT = "{http://jabber.org/protocol/pubsub#event}event"
META = "urn:xmpp:avatar:metadata"
DEVICES = "eu.siacs.conversations.axolotl.devicelist"
AXOLOTL = "eu.siacs.conversations.axolotl"
BOOKMARKS2 = "urn:xmpp:bookmarks:1"
PLUGINS = ("xep_0060", "xep_0163", "xep_0115", "xep_0084", "xep_0223", "xep_0049", "xep_0048")


async def pep_login(
    ss: Sessions, user: str, notify: tuple[str, ...] = (), resource: str = "pep"
) -> Client:
    """A client with the PEP plugins; `notify` are the nodes it asks +notify of (XEP-0115)."""
    c = ss.client(user, resource=resource)
    for p in PLUGINS:
        c.register_plugin(p)
    c.register_plugin("xep_0402")
    if notify:
        c.plugin["xep_0163"].add_interest(list(notify))
    await c.start()
    return c


async def friends(a: Client, b: Client) -> None:
    """Colleagues on one domain: each asks, the server approves on the other's behalf."""
    a.send_presence(pto=b.boundjid.bare, ptype="subscribe")
    b.send_presence(pto=a.boundjid.bare, ptype="subscribe")
    await next_matching(a.presences, available_from(b))
    await next_matching(b.presences, available_from(a))


def available_from(c: Client) -> Callable[[Any], bool]:
    return lambda p: p["from"].bare == c.boundjid.bare and p["type"] == "available"


def event_of(node: str, owner: str) -> Callable[[Any], bool]:
    def match(m: Any) -> bool:
        ev = m.xml.find(EVENT)
        if ev is None or m["from"].bare != owner:
            return False
        items = ev.find("{http://jabber.org/protocol/pubsub#event}items")
        return items is not None and items.get("node") == node

    return match


def options(**fields: str) -> Form:
    form = Form()
    form["type"] = "submit"
    form.add_field(
        var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options"
    )
    for var, value in fields.items():
        form.add_field(var=f"pubsub#{var}", value=value)
    return form


def device_list(*ids: int) -> ET.Element:
    el = ET.Element(f"{{{AXOLOTL}}}list")
    for i in ids:
        ET.SubElement(el, f"{{{AXOLOTL}}}device", {"id": str(i)})
    return el


async def error_of(coro: Any) -> tuple[str, str | None]:
    """(condition, pubsub#errors condition) of an iq that must fail."""
    with pytest.raises(IqError) as info:
        await coro
    err = info.value.iq.xml.find("{jabber:client}error")
    app = [
        ch.tag.rpartition("}")[2]
        for ch in err
        if ch.tag.startswith("{http://jabber.org/protocol/pubsub#errors}")
    ]
    return info.value.condition, (app[0] if app else None)


def test_avatar_metadata_reaches_a_contact_that_asked_for_it(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj = f"{alice}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await pep_login(ss, alice, (META,))
            b = await pep_login(ss, bob, (META,))
            await friends(a, b)
            image = b"\x89PNG not really"
            sha = hashlib.sha1(image).hexdigest()
            await a.plugin["xep_0084"].publish_avatar(image)
            await a.plugin["xep_0084"].publish_avatar_metadata(
                [{"id": sha, "type": "image/png", "bytes": len(image)}]
            )
            got = await next_matching(b.inbox, event_of(META, aj))
            info = got.xml.find(f"{EVENT}/*/*/{{{META}}}metadata/{{{META}}}info")
            assert info is not None and info.get("id") == sha
            # alice's own client hears of it too (XEP-0163 §4.3.2)
            await next_matching(a.inbox, event_of(META, aj))
            # bob fetches the data by the hash, from alice's bare address
            data = await b.plugin["xep_0084"].retrieve_avatar(aj, sha)
            assert data["pubsub"]["items"]["item"]["avatar_data"]["value"] == image

    run(scenario())


def test_device_list_with_publish_options_fans_out_only_to_contacts_that_want_it(
    server: Server, run
):
    alice, bob, carol = server.new_users("alice", "bob", "carol")
    aj = f"{alice}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await pep_login(ss, alice, (DEVICES,))
            b = await pep_login(ss, bob, (DEVICES,))
            b_plain = await pep_login(ss, bob, (), resource="plain")
            c = await pep_login(ss, carol, (DEVICES,))  # not a contact
            await friends(a, b)
            await friends(a, b_plain)
            await a.plugin["xep_0060"].publish(
                aj,
                DEVICES,
                id="current",
                payload=device_list(1234),
                options=options(access_model="open"),
            )
            got = await next_matching(b.inbox, event_of(DEVICES, aj))
            assert got.xml.find(f".//{{{AXOLOTL}}}device").get("id") == "1234"
            await nothing_matching(b_plain.inbox, event_of(DEVICES, aj), 1.0)
            await nothing_matching(c.inbox, event_of(DEVICES, aj), 0.1)
            # open: carol, no contact, still reads it (as OMEMO needs before the first message)
            items = await c.plugin["xep_0060"].get_items(aj, DEVICES)
            assert items["pubsub"]["items"]["item"]["id"] == "current"
            # the same options again are met; different ones are not
            await a.plugin["xep_0060"].publish(
                aj,
                DEVICES,
                id="current",
                payload=device_list(1234, 99),
                options=options(access_model="open"),
            )
            await next_matching(b.inbox, event_of(DEVICES, aj))
            cond, app = await error_of(
                a.plugin["xep_0060"].publish(
                    aj,
                    DEVICES,
                    id="current",
                    payload=device_list(1),
                    options=options(access_model="whitelist"),
                )
            )
            assert (cond, app) == ("conflict", "precondition-not-met")

    run(scenario())


def test_last_item_arrives_when_a_contact_comes_online_and_access_is_enforced(server: Server, run):
    alice, bob, carol = server.new_users("alice", "bob", "carol")
    aj = f"{alice}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await pep_login(ss, alice, (META,))
            b = await pep_login(ss, bob, (META,))
            await friends(a, b)
            await b.stop()
            await a.plugin["xep_0084"].publish_avatar_metadata(
                [{"id": "abc", "type": "image/png", "bytes": 10}]
            )
            b2 = await pep_login(ss, bob, (META,), resource="again")
            got = await next_matching(b2.inbox, event_of(META, aj))
            assert got.xml.find("{urn:xmpp:delay}delay") is not None
            # presence access model: carol, no contact, is refused
            c = await pep_login(ss, carol)
            cond, app = await error_of(c.plugin["xep_0060"].get_items(aj, META))
            assert (cond, app) == ("not-authorized", "presence-subscription-required")
            # whitelist: even bob is refused; unknown node: item-not-found
            await a.plugin["xep_0060"].publish(
                aj,
                "urn:example:secret",
                payload=device_list(5),
                options=options(access_model="whitelist"),
            )
            cond, app = await error_of(b2.plugin["xep_0060"].get_items(aj, "urn:example:secret"))
            assert (cond, app) == ("not-allowed", "closed-node")
            cond, _ = await error_of(b2.plugin["xep_0060"].get_items(aj, "urn:example:none"))
            assert cond == "item-not-found"
            # nobody publishes to someone else's PEP service
            cond, _ = await error_of(
                b2.plugin["xep_0060"].publish(aj, META, payload=device_list(1))
            )
            assert cond == "forbidden"

    run(scenario())


def test_retract_configure_purge_and_delete_notify_and_answer(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj = f"{alice}@{server.domain}"
    node = "urn:example:notes"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await pep_login(ss, alice, (node,))
            b = await pep_login(ss, bob, (node,))
            await friends(a, b)
            ps = a.plugin["xep_0060"]
            await ps.publish(
                aj, node, id="one", payload=device_list(1), options=options(max_items="5")
            )
            await ps.publish(aj, node, id="two", payload=device_list(2))
            await ps.publish(aj, node, id="three", payload=device_list(3))
            items = await ps.get_items(aj, node, max_items=2)
            assert [i["id"] for i in items["pubsub"]["items"]] == ["two", "three"]
            items = await ps.get_item(aj, node, "one")
            assert [i["id"] for i in items["pubsub"]["items"]] == ["one"]
            await ps.retract(aj, node, "two", notify=True)
            got = await next_matching(
                b.inbox,
                lambda m: (
                    m.xml.find(".//{http://jabber.org/protocol/pubsub#event}retract[@id='two']")
                    is not None
                ),
            )
            assert got["from"].bare == aj
            conf = await ps.get_node_config(aj, node)
            values = conf["pubsub_owner"]["configure"]["form"].get_values()
            assert values["pubsub#max_items"] == "5"
            form = conf["pubsub_owner"]["configure"]["form"]
            form["type"] = "submit"
            form.field["pubsub#max_items"]["value"] = "1"
            await ps.set_node_config(aj, node, form)
            items = await ps.get_items(aj, node)
            assert [i["id"] for i in items["pubsub"]["items"]] == ["three"]
            await ps.purge(aj, node)
            items = await ps.get_items(aj, node)
            assert list(items["pubsub"]["items"]) == []
            await ps.delete_node(aj, node)
            await next_matching(
                b.inbox,
                lambda m: (
                    m.xml.find(
                        f"{EVENT}/{{http://jabber.org/protocol/pubsub#event}}delete[@node='{node}']"
                    )
                    is not None
                ),
            )
            info = await a.plugin["xep_0030"].get_info(aj)
            features = info["disco_info"]["features"]
            assert ("pubsub", "pep", None, None) in info["disco_info"]["identities"]
            for f in ("publish-options", "auto-create", "last-published", "access-whitelist"):
                assert f"http://jabber.org/protocol/pubsub#{f}" in features
            assert f"{BOOKMARKS2}#compat" in features

    run(scenario())


def test_private_storage_round_trip_and_refusals(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj = f"{alice}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await pep_login(ss, alice)
            b = await pep_login(ss, bob)
            prefs = ET.Element("{urn:example:prefs}prefs")
            ET.SubElement(prefs, "{urn:example:prefs}colour").text = "teal"
            iq = a.make_iq_set(ito=None)
            q = ET.SubElement(iq.xml, "{jabber:iq:private}query")
            q.append(prefs)
            await iq.send()
            iq = a.make_iq_get()
            ET.SubElement(
                ET.SubElement(iq.xml, "{jabber:iq:private}query"), "{urn:example:prefs}prefs"
            )
            got = await iq.send()
            assert got.xml.findtext(".//{urn:example:prefs}colour") == "teal"
            # another user's storage: forbidden
            iq = b.make_iq_get(ito=aj)
            ET.SubElement(
                ET.SubElement(iq.xml, "{jabber:iq:private}query"), "{urn:example:prefs}prefs"
            )
            cond, _ = await error_of(iq.send())
            assert cond == "forbidden"
            # a reserved namespace, and an empty query: not-acceptable
            iq = a.make_iq_set()
            ET.SubElement(ET.SubElement(iq.xml, "{jabber:iq:private}query"), "{vcard-temp}vCard")
            cond, _ = await error_of(iq.send())
            assert cond == "not-acceptable"
            iq = a.make_iq_get()
            ET.SubElement(iq.xml, "{jabber:iq:private}query")
            cond, _ = await error_of(iq.send())
            assert cond == "not-acceptable"

    run(scenario())


def _legacy_rooms(storage: Any) -> dict[str, tuple[str, bool, str]]:
    return {str(c["jid"]): (c["name"], c["autojoin"], c["nick"]) for c in storage["conferences"]}


def test_bookmarks_set_through_either_protocol_read_through_the_other(server: Server, run):
    alice = server.new_users("alice")[0]
    aj = f"{alice}@{server.domain}"
    room1, room2 = f"team@conference.{server.domain}", f"lunch@conference.{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await pep_login(ss, alice, (BOOKMARKS2,))
            from slixmpp.plugins.xep_0048.stanza import Bookmarks

            ps = a.plugin["xep_0060"]
            # XEP-0402 publish (as Conversations does it) -> XEP-0048 private storage view
            item = ET.Element(f"{{{BOOKMARKS2}}}conference", {"name": "Team", "autojoin": "true"})
            ET.SubElement(item, f"{{{BOOKMARKS2}}}nick").text = "al"
            await ps.publish(
                aj,
                BOOKMARKS2,
                id=room1,
                payload=item,
                options=options(
                    access_model="whitelist",
                    max_items="max",
                    send_last_published_item="never",
                    persist_items="true",
                ),
            )
            got = await a.plugin["xep_0048"].get_bookmarks(method="xep_0049")
            assert _legacy_rooms(got["private"]["bookmarks"]) == {room1: ("Team", True, "al")}
            legacy = await ps.get_items(aj, "storage:bookmarks")
            assert _legacy_rooms(legacy["pubsub"]["items"]["item"]["bookmarks"]) == {
                room1: ("Team", True, "al")
            }
            # XEP-0048 private storage write -> XEP-0402 items, with a notification
            marks = Bookmarks()
            marks.add_conference(room1, "al", name="Team", autojoin=True)
            marks.add_conference(room2, "alice", name="Lunch", autojoin=False)
            await a.plugin["xep_0048"].set_bookmarks(marks, method="xep_0049")
            await next_matching(
                a.inbox,
                lambda m: (
                    m.xml.find(f".//{{http://jabber.org/protocol/pubsub#event}}item[@id='{room2}']")
                    is not None
                ),
            )
            items = await ps.get_items(aj, BOOKMARKS2)
            ids = {i["id"]: i for i in items["pubsub"]["items"]}
            assert set(ids) == {room1, room2}
            lunch = ids[room2].xml.find(f"{{{BOOKMARKS2}}}conference")
            assert (
                lunch.get("name") == "Lunch" and lunch.findtext(f"{{{BOOKMARKS2}}}nick") == "alice"
            )
            # dropping a room in the legacy view retracts it
            marks = Bookmarks()
            marks.add_conference(room2, "alice", name="Lunch", autojoin=False)
            await a.plugin["xep_0048"].set_bookmarks(marks, method="xep_0049")
            items = await ps.get_items(aj, BOOKMARKS2)
            assert [i["id"] for i in items["pubsub"]["items"]] == [room2]

    run(scenario())


def test_nodes_and_private_storage_survive_a_restart(make_server, run):
    server = make_server()
    alice = server.new_users("alice")[0]
    aj = f"{alice}@{server.domain}"

    async def before() -> None:
        async with Sessions(server) as ss:
            a = await pep_login(ss, alice)
            await a.plugin["xep_0084"].publish_avatar_metadata(
                [{"id": "kept", "type": "image/png", "bytes": 1}]
            )
            iq = a.make_iq_set()
            ET.SubElement(
                ET.SubElement(iq.xml, "{jabber:iq:private}query"), "{urn:example:p}p"
            ).text = "x"
            await iq.send()

    run(before())
    server.stop()
    server.start()

    async def after() -> None:
        async with Sessions(server) as ss:
            a = await pep_login(ss, alice)
            items = await a.plugin["xep_0060"].get_items(aj, META)
            assert items["pubsub"]["items"]["item"]["id"] == "kept"
            iq = a.make_iq_get()
            ET.SubElement(ET.SubElement(iq.xml, "{jabber:iq:private}query"), "{urn:example:p}p")
            got = await iq.send()
            assert got.xml.findtext(".//{urn:example:p}p") == "x"

    run(after())
