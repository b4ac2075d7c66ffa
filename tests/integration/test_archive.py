"""Compliance archive against the real server: policy, search, export, tampering, retention,
critical mode. (External conversations need federation, which this release lacks: the policy's
external switch is covered by tests/unit/test_archive_chain.py only.)"""

from __future__ import annotations

import email
import email.policy
import json
import sqlite3
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from standard_edition.archive import store
from standard_edition.store.database import apply_migrations

from .server import Server
from .xmppclient import Sessions, next_matching, nothing_matching

ALL = '[archive]\nmode = "all"'


def word() -> str:
    return "zq" + uuid.uuid4().hex[:10]


def search(server: Server, *args: str) -> list[dict[str, Any]]:
    r = server.ctl_ok("archive", "search", *args, "--all", "--json")
    return json.loads(r.stdout)["records"]


def search_until(server: Server, *args: str, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    """Archive writes are batched: wait (briefly) until n records match."""
    end = time.monotonic() + timeout
    while True:
        found = search(server, *args)
        if len(found) >= n or time.monotonic() > end:
            return found
        time.sleep(0.2)


def status(server: Server) -> dict[str, Any]:
    return json.loads(server.ctl_ok("status", "--json").stdout)["archive"]


async def chat(server: Server, lines: list[tuple[str, str, str]]) -> None:
    """(from, to, body) lines, each waited for at its recipient."""
    users = sorted({u for a, b, _ in lines for u in (a, b)})
    async with Sessions(server) as ss:
        clients = {u: await ss.login(u) for u in users}
        for a, b, body in lines:
            clients[a].send_message(mto=f"{b}@{server.domain}", mbody=body, mtype="chat")
            await next_matching(clients[b].inbox, lambda m, body=body: m["body"] == body)


def test_policy_all_archives_chats_found_by_user_word_and_time(make_server, run):
    server = make_server(ALL)
    alice, bob = server.new_users("alice", "bob")
    w = word()
    lines = [(alice, bob, f"the invoice {w} is late"), (bob, alice, "noted"), (alice, bob, "bye")]
    run(chat(server, lines))
    aj, bj = f"{alice}@{server.domain}", f"{bob}@{server.domain}"
    found = search_until(server, "--user", aj, n=3)
    assert [(r["sender"], r["recipient"], r["body"]) for r in found] == [
        (f"{a}@{server.domain}", f"{b}@{server.domain}", body) for a, b, body in lines
    ]
    r0 = found[0]
    assert (r0["protocol"], r0["origin"], r0["direction"], r0["type"]) == (
        "xmpp",
        "internal",
        "local",
        "chat",
    )
    assert r0["resource"] == "test"
    assert [r["body"] for r in search(server, "--text", w)] == [lines[0][2]]
    assert [r["body"] for r in search(server, "--user", bj, "--peer", aj, "--text", "noted")] == [
        "noted"
    ]
    today = datetime.now().strftime("%Y-%m-%d")
    yesterday = (datetime.now() - timedelta(days=1)).strftime("%Y-%m-%d")
    assert len(search(server, "--user", aj, "--from", today, "--to", today)) == 3
    assert search(server, "--user", aj, "--to", yesterday) == []
    assert search(server, "--peer", "*@partner.example") == []
    assert len(search(server, "--peer", f"*@{server.domain}", "--user", aj)) == 3
    # paging: one record a page, the cursor leads on
    page = json.loads(
        server.ctl_ok("archive", "search", "--user", aj, "--limit", "1", "--json").stdout
    )
    assert len(page["records"]) == 1 and page["next"] == found[0]["id"] and page["total"] == 3
    bad = server.ctl("archive", "search", "--text", '"unbalanced')
    assert bad.returncode == 1 and "text" in bad.stderr and len(bad.stderr.splitlines()) == 1
    assert status(server)["archived"] >= 3


def test_export_jsonl_and_eml_match_what_was_sent(make_server, run, tmp_path: Path):
    server = make_server(ALL)
    alice, bob, carol = server.new_users("alice", "bob", "carol")
    lines = [(alice, bob, "hello bob"), (bob, alice, "hello alice ü"), (alice, carol, "hi carol")]
    run(chat(server, lines))
    aj = f"{alice}@{server.domain}"
    search_until(server, "--user", aj, n=3)
    out = tmp_path / "all.jsonl"
    server.ctl_ok("archive", "export", "--format", "jsonl", "--out", str(out), "--user", aj)
    rows = [json.loads(x) for x in out.read_text("utf-8").splitlines()]
    assert [(r["sender"].split("@")[0], r["recipient"].split("@")[0], r["body"]) for r in rows] == (
        lines
    )
    eml_dir = tmp_path / "eml"
    r = server.ctl_ok("archive", "export", "--format", "eml", "--out", str(eml_dir), "--user", aj)
    assert "2 conversation file(s)" in r.stdout
    convs = {}
    for path in sorted(eml_dir.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert msg["Date"] and msg["Message-ID"] and msg["Subject"]
        parties = frozenset((str(msg["From"]), str(msg["To"])))
        convs[parties] = msg.get_content()
    ab = convs[frozenset((aj, f"{bob}@{server.domain}"))]
    assert "hello bob" in ab and "hello alice ü" in ab and "hi carol" not in ab
    assert "hi carol" in convs[frozenset((aj, f"{carol}@{server.domain}"))]


def test_policy_users_archives_only_the_chosen_and_is_recorded(make_server, run):
    server = make_server()  # mode off in the file
    alice, bob, carol, dave = server.new_users("alice", "bob", "carol", "dave")
    aj = f"{alice}@{server.domain}"
    run(chat(server, [(alice, bob, "before the policy")]))
    r = server.ctl_ok("archive", "policy", "set", "--mode", "users", "--add", aj, "--json")
    policy = json.loads(r.stdout)
    assert policy["mode"] == "users" and policy["users"] == [aj]
    assert policy["source"]["mode"] == "se-ctl" and policy["source"]["internal"] == "config"
    run(chat(server, [(bob, alice, "chosen"), (carol, dave, "not chosen")]))
    found = search_until(server, "--peer", f"*@{server.domain}", n=1)
    time.sleep(0.3)
    found = search(server, "--peer", f"*@{server.domain}")
    assert [x["body"] for x in found] == ["chosen"]
    # the change itself is in the chain, and the chain verifies
    v = json.loads(server.ctl_ok("archive", "verify", "--json").stdout)
    assert v["ok"] and v["records"] == 2
    # stored: it survives a restart, and config reset returns to the file's value
    server.stop()
    server.start()
    assert json.loads(server.ctl_ok("archive", "policy", "--json").stdout)["mode"] == "users"
    server.ctl_ok("archive", "policy", "reset")
    assert json.loads(server.ctl_ok("archive", "policy", "--json").stdout)["mode"] == "off"


def test_internal_off_archives_nothing_inside_the_domain(make_server, run):
    server = make_server('[archive]\nmode = "all"\ninternal = false')
    alice, bob = server.new_users("alice", "bob")
    run(chat(server, [(alice, bob, "inside")]))
    time.sleep(0.3)
    assert search(server, "--user", f"{alice}@{server.domain}") == []
    server.ctl_ok("archive", "policy", "set", "--internal", "on")
    run(chat(server, [(alice, bob, "inside, now archived")]))
    found = search_until(server, "--user", f"{alice}@{server.domain}", n=1)
    assert [x["body"] for x in found] == ["inside, now archived"]


def test_removing_a_user_keeps_their_archived_messages(make_server, run):
    server = make_server(ALL)
    alice, bob = server.new_users("alice", "bob")
    run(chat(server, [(alice, bob, "kept after removal")]))
    aj = f"{alice}@{server.domain}"
    search_until(server, "--user", aj, n=1)
    server.ctl_ok("user", "remove", aj)
    assert [x["body"] for x in search(server, "--user", aj)] == ["kept after removal"]


def attack(path: Path, *statements: str) -> None:
    con = sqlite3.connect(path)
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        con.execute(f'DROP TRIGGER "{name}"')
    for sql in statements:
        con.execute(sql)
    con.commit()
    con.close()


def test_tampering_with_the_file_makes_verify_fail_naming_the_record(make_server, run):
    server = make_server(ALL)
    alice, bob = server.new_users("alice", "bob")
    run(chat(server, [(alice, bob, f"line {i}") for i in range(6)]))
    found = search_until(server, "--user", f"{alice}@{server.domain}", n=6)
    ok = server.ctl_ok("archive", "verify")
    assert "intact: 6 record(s)" in ok.stdout
    target = found[2]["id"]
    server.stop()
    archive = server.data_dir / "archive.sqlite3"
    attack(archive, f"UPDATE records SET body = 'forged' WHERE id = {target}")
    server.start()
    r = server.ctl("archive", "verify")
    assert r.returncode == 1
    assert f"record {target}" in r.stderr and "altered" in r.stderr
    # a deleted record is found too
    server.stop()
    attack(archive, f"UPDATE records SET body = 'line 2' WHERE id = {target}")
    server.start()
    server.ctl_ok("archive", "verify")  # put back as it was: intact again
    server.stop()
    attack(archive, f"DELETE FROM records WHERE id = {found[4]['id']}")
    server.start()
    r = server.ctl("archive", "verify")
    assert r.returncode == 1 and f"record {found[5]['id']}" in r.stderr and "missing" in r.stderr


def test_purge_before_a_time_removes_exactly_the_older_records(make_server, run):
    server = make_server(ALL)
    alice, bob = server.new_users("alice", "bob")
    run(chat(server, [(alice, bob, "old one"), (alice, bob, "old two")]))
    aj = f"{alice}@{server.domain}"
    search_until(server, "--user", aj, n=2)
    time.sleep(0.05)
    cut = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    run(chat(server, [(alice, bob, "new one")]))
    search_until(server, "--user", aj, n=3)
    r = json.loads(server.ctl_ok("archive", "purge", "--before", cut, "--json").stdout)
    assert r["removed"] == 2
    assert [x["body"] for x in search(server, "--user", aj)] == ["new one"]
    v = json.loads(server.ctl_ok("archive", "verify", "--json").stdout)
    assert v["ok"] and v["records"] == 2  # the kept message and the purge record
    bad = server.ctl("archive", "purge", "--before", "2999-01-01")
    assert bad.returncode == 1 and "future" in bad.stderr


def test_keep_days_purges_older_days_at_start_and_the_rest_verifies(make_server, run):
    server = make_server('[archive]\nmode = "all"\nkeep_days = 3', start=False)
    server.data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(server.data_dir / "archive.sqlite3", isolation_level=None)
    apply_migrations(sqlite_utils.Database(conn), store.MIGRATIONS)
    now = datetime.now(UTC)
    state = store.ChainState()
    for days_ago in (10, 5, 4, 2, 1):
        ts = int((now - timedelta(days=days_ago)).timestamp() * 1e6)
        e = store.Entry(ts, "message", "a@example.test", "b@example.test", f"{days_ago} days ago")
        conn.execute("BEGIN IMMEDIATE")
        state = store.append(conn, state, [e]).state
        conn.execute("COMMIT")
    conn.close()
    server.start()
    end = time.monotonic() + 10
    while time.monotonic() < end:
        kept = [x["body"] for x in search(server, "--user", "a@example.test")]
        if len(kept) < 5:
            break
        time.sleep(0.2)
    # whole UTC days older than 3 days before today go
    cutoff = datetime.combine(now.date() - timedelta(days=3), datetime.min.time(), UTC)
    want = [f"{d} days ago" for d in (10, 5, 4, 2, 1) if now - timedelta(days=d) >= cutoff]
    assert kept == want
    v = json.loads(server.ctl_ok("archive", "verify", "--json").stdout)
    assert v["ok"] and v["records"] == len(want) + 1


def lock_archive(server: Server) -> sqlite3.Connection:
    """Hold the archive file's write lock, as a stuck backup or a full disk would."""
    con = sqlite3.connect(server.data_dir / "archive.sqlite3", isolation_level=None, timeout=10)
    con.execute("BEGIN IMMEDIATE")
    return con


def test_critical_mode_refuses_what_cannot_be_archived(make_server, run):
    server = make_server('[archive]\nmode = "all"\ncritical = true')
    alice, bob = server.new_users("alice", "bob")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a, b = await ss.login(alice), await ss.login(bob)
            bj = f"{bob}@{server.domain}"
            a.send_message(mto=bj, mbody="archived first", mtype="chat")
            await next_matching(b.inbox, lambda m: m["body"] == "archived first")
            lock = lock_archive(server)
            try:
                a.send_message(mto=bj, mbody="must not pass", mtype="chat")
                err = await next_matching(a.inbox, lambda m: m["type"] == "error", timeout=15)
                assert err["error"]["condition"] == "resource-constraint"
                await nothing_matching(b.inbox, lambda m: m["body"] == "must not pass", 1.0)
            finally:
                lock.rollback()
                lock.close()
            a.send_message(mto=bj, mbody="archived again", mtype="chat")
            await next_matching(b.inbox, lambda m: m["body"] == "archived again")

    run(scenario())
    bodies = [x["body"] for x in search(server, "--user", f"{alice}@{server.domain}")]
    assert bodies == ["archived first", "archived again"]
    s = status(server)
    assert s["critical"] and s["refused"] == 1 and s["failed"] == 1
    server.ctl_ok("archive", "verify")


def test_without_critical_mode_a_failed_write_is_delivered_and_counted(make_server, run):
    server = make_server(ALL)
    alice, bob = server.new_users("alice", "bob")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a, b = await ss.login(alice), await ss.login(bob)
            lock = lock_archive(server)
            try:
                t0 = time.monotonic()
                a.send_message(mto=f"{bob}@{server.domain}", mbody="goes through", mtype="chat")
                await next_matching(b.inbox, lambda m: m["body"] == "goes through")
                # delivery did not wait for the archive, whose batch fails only after its
                # busy timeout (2 s)
                assert time.monotonic() - t0 < 1.5
                end = time.monotonic() + 10
                while status(server)["failed"] < 1 and time.monotonic() < end:
                    time.sleep(0.2)
            finally:
                lock.rollback()
                lock.close()

    run(scenario())
    s = status(server)
    assert s["failed"] == 1 and s["refused"] == 0
    assert "could not be written" in server.log_path.read_text()


def test_room_lines_are_archived_and_found_by_room(make_server, run):
    server = make_server(ALL)
    alice, bob = server.new_users("alice", "bob")
    room = f"plans@conference.{server.domain}"
    bj = f"{bob}@{server.domain}"

    async def join(c: Any, nick: str) -> None:
        c.send_presence(pto=f"{room}/{nick}")
        await next_matching(c.presences, lambda p: str(p["from"]) == f"{room}/{nick}")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a, b = await ss.login(alice), await ss.login(bob)
            await join(a, "alice")
            a.send_message(mto=room, mbody="room line one", mtype="groupchat")
            await next_matching(a.inbox, lambda m: m["body"] == "room line one")
            # an ad hoc room is members-only: alice invites bob (XEP-0045 §7.8.2)
            inv = a.make_message(mto=room)
            x = ET.SubElement(inv.xml, "{http://jabber.org/protocol/muc#user}x")
            ET.SubElement(x, "{http://jabber.org/protocol/muc#user}invite", {"to": bj})
            inv.send()
            await join(b, "bob")
            b.send_message(mto=room, mbody="room line two", mtype="groupchat")
            await next_matching(a.inbox, lambda m: m["body"] == "room line two")

    run(scenario())
    found = search_until(server, "--room", room, n=2)
    assert [(x["sender"], x["room"], x["type"], x["origin"], x["body"]) for x in found] == [
        (f"{alice}@{server.domain}", room, "groupchat", "internal", "room line one"),
        (bj, room, "groupchat", "internal", "room line two"),
    ]
