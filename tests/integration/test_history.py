"""XEP-0313 message history: a user pages through both sides of their chats from any device."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from .server import Server
from .xmppclient import Client, Sessions, next_matching

MAM = "{urn:xmpp:mam:2}"
RSM = "{http://jabber.org/protocol/rsm}"


async def mam_query(
    c: Client, *, with_: str | None = None, rsm: dict[str, str] | None = None
) -> tuple[list[Any], Any]:
    """Send a query; returns (result messages, the final iq)."""
    iq = c.make_iq_set()
    q = ET.SubElement(iq.xml, MAM + "query", {"queryid": "q1"})
    if with_ is not None:
        x = ET.SubElement(q, "{jabber:x:data}x", {"type": "submit"})
        for var, value in (("FORM_TYPE", "urn:xmpp:mam:2"), ("with", with_)):
            f = ET.SubElement(x, "{jabber:x:data}field", {"var": var})
            ET.SubElement(f, "{jabber:x:data}value").text = value
    if rsm:
        s = ET.SubElement(q, RSM + "set")
        for k, v in rsm.items():
            ET.SubElement(s, RSM + k).text = v
    fin = await iq.send(timeout=10)
    results = []
    while not c.inbox.empty():
        m = c.inbox.get_nowait()
        if m.xml.find(MAM + "result") is not None:
            results.append(m)
    return results, fin


def bodies(results: list[Any]) -> list[str]:
    fwd = f"{MAM}result/{{urn:xmpp:forward:0}}forwarded"
    return [
        r.xml.find(f"{fwd}/{{jabber:client}}message").findtext("{jabber:client}body")
        for r in results
    ]


def test_history_pages_through_both_sides_with_rsm(server: Server, run):
    alice, bob, carol = server.new_users("alice", "bob", "carol")
    bj = f"{bob}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            c = await ss.login(carol)
            for i in range(5):
                a.send_message(mto=bj, mbody=f"a{i}", mtype="chat")
                await next_matching(b.inbox, lambda m, i=i: m["body"] == f"a{i}")
                b.send_message(mto=f"{alice}@{server.domain}", mbody=f"b{i}", mtype="chat")
                await next_matching(a.inbox, lambda m, i=i: m["body"] == f"b{i}")
            c.send_message(mto=f"{alice}@{server.domain}", mbody="from carol", mtype="chat")
            await next_matching(a.inbox, lambda m: m["body"] == "from carol")
            # a second device of alice's finds everything
            phone = await ss.login(alice, resource="phone")
            results, fin = await mam_query(phone, with_=bj, rsm={"max": "4"})
            assert bodies(results) == ["a0", "b0", "a1", "b1"]
            f = fin.xml.find(MAM + "fin")
            assert f.get("complete") == "false"
            assert f.findtext(f"{RSM}set/{RSM}count") == "10"
            last = f.findtext(f"{RSM}set/{RSM}last")
            results, fin = await mam_query(phone, with_=bj, rsm={"max": "10", "after": last})
            assert bodies(results) == ["a2", "b2", "a3", "b3", "a4", "b4"]
            assert fin.xml.find(MAM + "fin").get("complete") == "true"
            # the last page, and a forwarded copy carries its delay
            results, _ = await mam_query(phone, rsm={"max": "2", "before": ""})
            assert bodies(results) == ["b4", "from carol"]
            assert (
                results[0].xml.find(
                    f"{MAM}result/{{urn:xmpp:forward:0}}forwarded/{{urn:xmpp:delay}}delay"
                )
                is not None
            )

    run(scenario())


def test_history_query_with_bad_rsm_is_refused(server: Server, run):
    (alice,) = server.new_users("alice")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            for rsm, condition in (
                ({"max": "lots"}, "bad-request"),
                ({"after": "999999999"}, "item-not-found"),
            ):
                try:
                    await mam_query(a, rsm=rsm)
                except Exception as e:
                    assert condition in str(getattr(e, "condition", "")) or condition in str(e)
                else:
                    raise AssertionError(f"{rsm} was accepted")

    run(scenario())
