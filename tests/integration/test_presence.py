"""Skype-style presence through the real server: aggregation, manual states, calendar,
access levels, blocking, privacy mode and the ad-hoc commands, with stock clients."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

from slixmpp.plugins.xep_0004 import Form

from .server import Server
from .xmppclient import Client, Sessions, next_matching, nothing_matching

EXT = "{urn:se-appliance:presence:0}availability"
IDLE = "{urn:xmpp:idle:1}idle"


def code_of(p: Any) -> int | None:
    el = p.xml.find(EXT)
    return None if el is None else int(el.get("code"))


def activity_of(p: Any) -> str | None:
    el = p.xml.find(EXT)
    return None if el is None else el.get("activity")


def from_user(jid: str, *, show: str | None = "any", ptype: str | None = None):  # type: ignore[no-untyped-def]
    def match(p: Any) -> bool:
        if p["from"].bare != jid:
            return False
        if ptype is not None:
            return p["type"] == ptype
        if p["type"] in ("unavailable", "subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            return False
        return show == "any" or p["show"] == (show or "")

    return match


def presence_json(server: Server, jid: str) -> dict[str, Any]:
    return json.loads(server.ctl_ok("presence", jid, "--json").stdout)


async def wait_band(server: Server, jid: str, band: str, timeout: float = 10) -> dict[str, Any]:
    """se-ctl's view of jid once its band is `band` (the login's presence may still travel)."""
    end = asyncio.get_running_loop().time() + timeout
    got = presence_json(server, jid)
    while got["availability"]["band"] != band and asyncio.get_running_loop().time() < end:
        await asyncio.sleep(0.2)
        got = presence_json(server, jid)
    assert got["availability"]["band"] == band, got
    return got


async def friends(a: Client, b: Client) -> None:
    """Colleagues on one domain: each asks, the server approves on the other's behalf."""
    a.send_presence(pto=b.boundjid.bare, ptype="subscribe")
    b.send_presence(pto=a.boundjid.bare, ptype="subscribe")
    await next_matching(a.presences, from_user(b.boundjid.bare), 10)
    await next_matching(b.presences, from_user(a.boundjid.bare), 10)


def test_colleague_request_is_delivered_and_approved_on_the_users_behalf(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    bj = f"{bob}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice, auto_accept=False)
            b = await ss.login(bob, auto_accept=False)
            a.send_presence(pto=bj, ptype="subscribe")
            # DESIGN §4: the request still reaches bob's client ...
            await next_matching(b.presences, from_user(a.boundjid.bare, ptype="subscribe"))
            # ... and alice already sees bob without bob doing anything
            await next_matching(a.presences, from_user(bj, ptype="subscribed"))
            await next_matching(a.presences, from_user(bj))

    run(scenario())


def test_idle_laptop_and_active_phone_aggregate_to_available(server: Server, run):
    (carol,) = server.new_users("carol")
    cj = f"{carol}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            phone = await ss.login(carol, resource="phone")
            laptop = await ss.login(carol, resource="laptop")
            await next_matching(phone.presences, lambda p: p["from"] == laptop.boundjid)
            pres = laptop.make_presence(pshow="away")
            since = datetime.now(UTC) - timedelta(minutes=11)
            ET.SubElement(pres.xml, IDLE, {"since": since.strftime("%Y-%m-%dT%H:%M:%SZ")})
            pres.send()
            seen = await next_matching(phone.presences, lambda p: p["from"] == laptop.boundjid)
            # the laptop's presence is rewritten to the aggregate: still Available
            assert seen["show"] == "" and code_of(seen) == 3500
            got = presence_json(server, cj)
            assert got["availability"]["band"] == "available"
            states = {e["endpoint"].rsplit("/", 1)[1]: e["state"] for e in got["endpoints"]}
            assert states == {"phone": "Available", "laptop": "Away"}
            await phone.stop()
            # with only the idle laptop left, carol is Away
            await asyncio.sleep(0.5)
            assert presence_json(server, cj)["availability"]["band"] == "away"

    run(scenario())


def test_manual_dnd_holds_over_auto_away_until_the_user_is_back(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    bj = f"{bob}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            laptop = await ss.login(bob, resource="laptop")
            phone = await ss.login(bob, resource="phone")
            await friends(a, laptop)
            laptop.send_presence(pshow="dnd", pstatus="focus")
            p = await next_matching(a.presences, from_user(bj, show="dnd"))
            assert p["status"] == "focus" and code_of(p) == 9500
            phone.send_presence(pshow="xa")  # the phone's auto-away: a machine state
            p = await next_matching(a.presences, lambda p: p["from"] == phone.boundjid)
            assert p["show"] == "dnd", "auto-away overrode a manual Do Not Disturb"
            assert presence_json(server, bj)["source"] == "manual"
            laptop.send_presence()  # back: plain available clears the manual state
            await next_matching(a.presences, from_user(bj, show=None))
            assert presence_json(server, bj)["source"] == "machine"

    run(scenario())


def test_blocked_contact_sees_offline_and_cannot_message(server: Server, run):
    alice, mallory = server.new_users("alice", "mallory")
    aj = f"{alice}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            m = await ss.login(mallory)
            a.register_plugin("xep_0191")
            await friends(a, m)
            await a.plugin["xep_0191"].block([f"{mallory}@{server.domain}"])
            await next_matching(m.presences, from_user(aj, ptype="unavailable"))
            m.send_message(mto=aj, mbody="let me in", mtype="chat")
            err = await next_matching(m.inbox, lambda x: x["type"] == "error")
            assert err["error"]["condition"] == "service-unavailable"
            await nothing_matching(a.inbox, lambda x: x["body"] == "let me in", 1.0)
            # alice's own message to a blocked contact is refused with XEP-0191's error
            a.send_message(mto=f"{mallory}@{server.domain}", mbody="hi", mtype="chat")
            err = await next_matching(a.inbox, lambda x: x["type"] == "error")
            assert err["error"]["condition"] == "not-acceptable"
            assert err.xml.find(".//{urn:xmpp:blocking:errors}blocked") is not None
            blocked = await a.plugin["xep_0191"].get_blocked()
            listed = [j.get("jid") for j in blocked.xml.iter("{urn:xmpp:blocking}item")]
            assert listed == [f"{mallory}@{server.domain}"]
            # a change of state still shows mallory nothing
            a.send_presence(pshow="away")
            await nothing_matching(m.presences, from_user(aj), 1.0)
            await a.plugin["xep_0191"].unblock([f"{mallory}@{server.domain}"])
            await next_matching(m.presences, from_user(aj))

    run(scenario())


def test_access_levels_decide_what_a_contact_sees(server: Server, run):
    alice, bob, carol = server.new_users("alice", "bob", "carol")
    aj, bj, cj = (f"{u}@{server.domain}" for u in (alice, bob, carol))

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            c = await ss.login(carol)
            await friends(a, b)
            await friends(a, c)
            server.ctl_ok("presence", "level", aj, bj, "external")
            server.ctl_ok("presence", "level", aj, cj, "workgroup")
            server.ctl_ok("presence", "set", aj, "--oof-note", "back on Monday")
            server.ctl_ok("presence", "set", aj, "--state", "in-a-meeting")
            pb = await next_matching(b.presences, from_user(aj, show="dnd"))
            pc = await next_matching(c.presences, from_user(aj, show="dnd"))
            # external: availability only; workgroup: activity and out-of-office note too
            assert code_of(pb) == 6500 and activity_of(pb) is None and not pb["status"]
            assert activity_of(pc) == "in-a-meeting"
            assert (
                pc.xml.findtext(f"{EXT}/{{urn:se-appliance:presence:0}}oof-note")
                == "back on Monday"
            )
            assert pb.xml.find(f"{EXT}/{{urn:se-appliance:presence:0}}oof-note") is None

    run(scenario())


def test_state_set_by_the_admin_shows_and_expires(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj = f"{alice}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            await friends(a, b)
            until = (datetime.now().astimezone() + timedelta(seconds=3)).isoformat()
            server.ctl_ok("presence", "set", aj, "--state", "in-a-meeting", "--until", until)
            p = await next_matching(b.presences, from_user(aj, show="dnd"))
            assert (code_of(p), activity_of(p)) == (6500, "in-a-meeting")
            p = await next_matching(b.presences, from_user(aj, show=None), 10)
            assert code_of(p) == 3500

    run(scenario())


def test_calendar_import_makes_the_user_busy_in_a_meeting(server: Server, run, tmp_path):
    (alice,) = server.new_users("alice")
    aj = f"{alice}@{server.domain}"
    start = datetime.now(UTC) - timedelta(minutes=5)
    fmt = "%Y%m%dT%H%M%SZ"
    ics = tmp_path / "cal.ics"
    ics.write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1\r\n"
        f"DTSTART:{start.strftime(fmt)}\r\nDTEND:{(start + timedelta(hours=1)).strftime(fmt)}\r\n"
        "SUMMARY:Budget\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:2\r\nRRULE:FREQ=DAILY\r\n"
        f"DTSTART:{start.strftime(fmt)}\r\nDURATION:PT1H\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )

    async def scenario() -> None:
        async with Sessions(server) as ss:
            await ss.login(alice)
            await wait_band(server, aj, "available")
            out = server.ctl_ok("calendar", "import", aj, str(ics)).stdout
            assert "1 busy block" in out and "1 recurring" in out
            got = await wait_band(server, aj, "busy")
            assert got["availability"]["activity"] == "in-a-meeting"
            server.ctl_ok("calendar", "clear", aj)
            assert presence_json(server, aj)["availability"]["band"] == "available"

    run(scenario())


def test_privacy_mode_keeps_colleague_requests_waiting(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj = f"{alice}@{server.domain}"
    server.ctl_ok("presence", "set", aj, "--privacy", "on")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice, auto_accept=False)
            b = await ss.login(bob, auto_accept=False)
            b.send_presence(pto=aj, ptype="subscribe")
            await next_matching(a.presences, from_user(f"{bob}@{server.domain}", ptype="subscribe"))
            await nothing_matching(b.presences, from_user(aj), 1.5)
            a.send_presence(pto=f"{bob}@{server.domain}", ptype="subscribed")
            await next_matching(b.presences, from_user(aj))

    run(scenario())


def test_adhoc_commands_are_listed_and_set_the_state(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj = f"{alice}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            await friends(a, b)
            a.register_plugin("xep_0050")
            items = await a["xep_0030"].get_items(
                jid=server.domain, node="http://jabber.org/protocol/commands"
            )
            nodes = {i[1] for i in items["disco_items"]["items"]}
            assert {
                "presence/state",
                "presence/oof",
                "presence/privacy",
                "presence/access-level",
            } <= nodes
            first = await a["xep_0050"].send_command(server.domain, "presence/state")
            assert first["command"]["status"] == "executing"
            session = first["command"]["sessionid"]
            form = Form()
            form.set_type("submit")
            form.add_field(var="state", value="be-right-back")
            done = await a["xep_0050"].send_command(
                server.domain, "presence/state", action="complete", payload=form, sessionid=session
            )
            assert done["command"]["status"] == "completed"
            p = await next_matching(b.presences, from_user(aj, show="away"))
            assert code_of(p) == 12500
            # a form without its required field is refused, nothing changes
            empty = Form()
            empty.set_type("submit")
            try:
                await a["xep_0050"].send_command(
                    server.domain, "presence/state", action="complete", payload=empty
                )
            except Exception as e:  # slixmpp raises IqError for the error reply
                assert "bad-request" in str(getattr(e, "condition", e)) or "bad-request" in str(e)
            else:
                raise AssertionError("a form with no state was accepted")
            assert presence_json(server, aj)["availability"]["code"] == 12500

    run(scenario())


def test_bad_presence_input_is_refused_with_a_clear_error(server: Server, run):
    (alice,) = server.new_users("alice")
    aj = f"{alice}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            pres = a.make_presence()
            ET.SubElement(pres.xml, EXT, {"code": "99999"})
            pres.send()
            err = await next_matching(a.presences, lambda p: p["type"] == "error")
            assert err["error"]["condition"] == "bad-request"
            pres = a.make_presence(pstatus="x" * 1025)
            pres.send()
            err = await next_matching(a.presences, lambda p: p["type"] == "error")
            assert err["error"]["condition"] == "not-acceptable"
            assert presence_json(server, aj)["note"] is None

    run(scenario())
    r = server.ctl("presence", "set", aj, "--state", "sleeping")
    assert r.returncode == 1 and "unknown state" in r.stderr and "Traceback" not in r.stderr
    r = server.ctl("presence", "set", aj, "--note", "y" * 1025)
    assert r.returncode == 1 and "1024" in r.stderr
    r = server.ctl("presence", "set", aj)
    assert r.returncode == 2


def test_manual_state_and_note_survive_a_restart(make_server, run):
    server = make_server()
    (alice,) = server.new_users("alice")
    aj = f"{alice}@{server.domain}"
    server.ctl_ok("presence", "set", aj, "--state", "busy", "--note", "deadline week")
    server.stop()
    server.start()
    # machine state does not survive: offline until she signs in
    assert presence_json(server, aj)["availability"]["band"] == "offline"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            await ss.login(alice)
            got = await wait_band(server, aj, "busy")
            assert got["note"] == "deadline week"

    run(scenario())


def test_last_activity_of_a_contact_after_sign_out(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj = f"{alice}@{server.domain}"

    async def last(b: Client) -> Any:
        iq = b.make_iq_get(ito=aj)
        ET.SubElement(iq.xml, "{jabber:iq:last}query")
        return (await iq.send(timeout=10)).xml.find("{jabber:iq:last}query")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            b = await ss.login(bob)
            await friends(a, b)
            assert (await last(b)).get("seconds") == "0"  # XEP-0012 §4: available now
            a.send_presence(ptype="unavailable", pstatus="gone fishing")
            await next_matching(b.presences, from_user(aj, ptype="unavailable"))
            q = await last(b)
            assert int(q.get("seconds")) >= 0 and q.text == "gone fishing"

    run(scenario())
