"""se-ctl test im|presence (synthetic transactions) and se-ctl backup / restore, end to end."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest

from appliance.control_client import ControlClient
from appliance.xmpp_probe import Probe, ProbeError

from .server import Server, clean_env, executable
from .test_ctl import one_line_error, parsed
from .xmppclient import Sessions


def test_synthetic_im_passes_with_timings_and_the_credential_is_logged(server: Server):
    a, b = server.new_users("im-a", "im-b")
    r = server.ctl("test", "im", f"{a}@{server.domain}", f"{b}@{server.domain}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("PASS test im") and "delivery" in r.stdout, r.stdout
    log = server.log_path.read_text()
    assert f"one-time test credential issued for {a}@{server.domain}" in log
    assert "se-test-" not in log, "a credential reached the log"


def test_synthetic_presence_passes_and_reports_json(server: Server):
    a, b = server.new_users("pr-a", "pr-b")
    r = server.ctl("test", "presence", f"{a}@{server.domain}", f"{b}@{server.domain}", "--json")
    result = parsed(r)
    assert result["pass"] is True
    assert result["presence_away_ms"] >= 0 and result["presence_change_ms"] >= 0


def test_synthetic_test_fails_in_one_line_for_an_unknown_user(server: Server):
    (a,) = server.new_users("im-c")
    r = server.ctl("test", "im", f"{a}@{server.domain}", f"nobody@{server.domain}")
    line = one_line_error(r)
    assert "FAIL test im" in line and "no user" in line


def test_synthetic_test_fails_for_a_disabled_user(server: Server):
    a, b = server.new_users("im-d", "im-e")
    server.ctl_ok("user", "disable", f"{b}@{server.domain}")
    line = one_line_error(server.ctl("test", "im", f"{a}@{server.domain}", f"{b}@{server.domain}"))
    assert "disabled" in line


def test_a_test_credential_works_once_and_never_for_another_user(server: Server):
    a, b = server.new_users("tok-a", "tok-b")
    with ControlClient(server.data_dir / "control.sock") as c:
        cred = c.call("test.credential", jid=f"{a}@{server.domain}")
    address, fp = cred["c2s"][0], cred["certificate_sha256"]
    other = Probe(f"{b}@{server.domain}", timeout=5)
    with pytest.raises(ProbeError, match="not-authorized"):
        other.login(address, cred["token"], fp)
    other.close()
    first = Probe(f"{a}@{server.domain}", timeout=5)
    first.login(address, cred["token"], fp)
    assert first.full_jid.startswith(f"{a}@{server.domain}/")
    first.close()
    again = Probe(f"{a}@{server.domain}", timeout=5)
    with pytest.raises(ProbeError, match="not-authorized"):
        again.login(address, cred["token"], fp)
    again.close()


# -- backup and restore ------------------------------------------------------------------------


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_backup_while_messages_flow_restores_users_rosters_and_offline_messages(
    make_server, run, tmp_path: Path
):
    s = make_server()
    alice, bob, carol = s.new_users("alice", "bob", "carol")
    backup = tmp_path / "se.tar.gz"
    sent = 0

    async def scenario() -> int:
        nonlocal sent
        async with Sessions(s) as ss:
            a = await ss.login(alice)
            await a.update_roster(f"{carol}@{s.domain}", name="Carol", timeout=10)
            stop = asyncio.Event()

            async def load() -> None:
                nonlocal sent
                while not stop.is_set():
                    a.send_message(mto=f"{bob}@{s.domain}", mbody=f"m{sent}", mtype="chat")
                    sent += 1
                    await asyncio.sleep(0.005)

            loader = asyncio.ensure_future(load())
            while sent < 30:
                await asyncio.sleep(0.01)
            proc = await asyncio.create_subprocess_exec(
                executable("se-ctl"), "--config", str(s.config), "backup", str(backup),
                env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            during = sent
            await asyncio.sleep(0.2)
            stop.set()
            await loader
            assert proc.returncode == 0, err.decode()
            assert b"backup" in out
            return during

    during = run(scenario())
    with tarfile.open(backup) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert names[0] == "manifest.json"
    assert {"se.sqlite3", "archive.sqlite3", "config.toml", "tls/cert.pem", "tls/key.pem"} <= set(
        names
    )
    assert manifest["schemas"]["se.sqlite3"] >= 1 and manifest["domain"] == s.domain
    assert s.stop() == 0

    fresh = make_server(start=False)
    r = fresh.ctl("restore", str(backup))
    assert r.returncode == 0, r.stderr
    old, new = s.data_dir / "se.sqlite3", fresh.data_dir / "se.sqlite3"
    for sql in (
        "SELECT username, name, enabled, credentials FROM accounts ORDER BY username",
        "SELECT * FROM roster ORDER BY owner, contact",
    ):
        assert rows(new, sql) == rows(old, sql), sql
    offline_sql = "SELECT id, owner, sender, stanza FROM offline ORDER BY id"
    restored, original = rows(new, offline_sql), rows(old, offline_sql)
    # a consistent snapshot: every message up to a point, none missing in between
    assert 30 <= len(restored) <= during <= len(original)
    assert restored == original[: len(restored)]

    fresh.start()
    users = parsed(fresh.ctl("user", "list", "--json"))
    assert {u["jid"] for u in users} == {f"{u}@{s.domain}" for u in (alice, bob, carol)}
    shown = parsed(fresh.ctl("user", "show", f"{bob}@{s.domain}", "--json"))
    assert shown["offline_messages"] == len(restored)
    assert fresh.ctl("archive", "verify").returncode == 0
    r = fresh.ctl("test", "im", f"{alice}@{s.domain}", f"{carol}@{s.domain}")
    assert r.returncode == 0, r.stderr


def test_restore_refuses_a_running_server_an_existing_store_and_a_newer_schema(
    server: Server, tmp_path: Path, make_server
):
    backup = tmp_path / "b.tar.gz"
    server.ctl_ok("backup", str(backup))
    assert "is running" in one_line_error(server.ctl("restore", str(backup)))

    fresh = make_server(start=False)
    fresh.ctl("restore", str(backup))
    assert "--force" in one_line_error(fresh.ctl("restore", str(backup)))
    assert fresh.ctl("restore", str(backup), "--force").returncode == 0

    newer = tmp_path / "newer.tar.gz"
    with tarfile.open(backup) as src, tarfile.open(newer, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "manifest.json":
                manifest = json.loads(data)
                manifest["schemas"]["se.sqlite3"] = 999
                data = json.dumps(manifest).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    other = make_server(start=False)
    line = one_line_error(other.ctl("restore", str(newer)))
    assert "schema version 999" in line and "newer" in line
    assert not (other.data_dir / "se.sqlite3").exists()
