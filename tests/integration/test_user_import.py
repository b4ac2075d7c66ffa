"""`se-ctl user import FILE.csv` against the real server: bad rows reported by line, the rest
created and able to log in, generated passwords printed once, large files in batches."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from .server import DOMAIN, PASSWORD, Server, clean_env, executable
from .xmppclient import LoginFailed, Sessions


def test_import_with_bad_rows_in_the_middle(server: Server, tmp_path: Path, run) -> None:
    (existing,) = server.new_users("kept")
    n = time.monotonic_ns() % 1_000_000
    alice, bob, carol, dave, erin = (f"{p}{n}" for p in ("alice", "bob", "carol", "dave", "erin"))
    csv = tmp_path / "staff.csv"
    csv.write_bytes(
        b"\xef\xbb\xbfuser,display name,password\r\n"  # 1: header (with a BOM, as Excel writes)
        + f"{alice},Alice Liddell,{PASSWORD}\r\n".encode()  # 2
        + f"{bob},Robert Brown,\r\n".encode()  # 3: generated
        + b"bad user,Bad Row,\r\n"  # 4: a space is not allowed in a user name
        + f'{carol},"Lewis, Carol"\r\n'.encode()  # 5: two columns, quoted comma; generated
        + f"{alice.upper()},Someone Else,{PASSWORD}\r\n".encode()  # 6: alice again (case folds)
        + f"{existing},Already There,\r\n".encode()  # 7: on the server already
        + b"lonely\r\n"  # 8: one column
        + b"\xff\xfeoops,Not UTF-8\r\n"  # 9
        + f"{dave},Dave,bad\x07password\r\n".encode()  # 10: a control character
        + b"\r\n"  # 11: empty, skipped
        + f"{erin}@{DOMAIN},Erin,\r\n".encode()  # 12: a full address works too
    )
    r = subprocess.run(
        [executable("se-ctl"), "--config", str(server.config), "user", "import", str(csv)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert r.returncode == 1, r
    errors = {int(line.split(":")[2]): line for line in r.stderr.strip().splitlines()}
    assert sorted(errors) == [4, 6, 7, 8, 9, 10], r.stderr
    assert "line 2" in errors[6] and "already exists" in errors[7]
    assert "column" in errors[8] and "UTF-8" in errors[9] and "password" in errors[10]
    rows = {line.split()[1]: line for line in r.stdout.splitlines() if f"@{DOMAIN}" in line}
    assert set(rows) == {f"{u}@{DOMAIN}" for u in (alice, bob, carol, erin)}
    assert "(from the file)" in rows[f"{alice}@{DOMAIN}"]
    generated = {jid.split("@")[0]: line.split()[-1] for jid, line in rows.items()}
    assert len(generated[bob]) >= 20 and generated[bob] != generated[carol]
    assert "4 of 10 account(s) created, 6 row(s) refused" in r.stdout
    # nothing of a refused row exists; the others have their display names
    listed = {u["jid"]: u for u in json.loads(server.ctl_ok("user", "list", "--json").stdout)}
    assert f"{dave}@{DOMAIN}" not in listed
    assert listed[f"{carol}@{DOMAIN}"]["name"] == "Lewis, Carol"
    assert listed[f"{existing}@{DOMAIN}"]["name"] == ""  # the existing account is untouched
    shown = json.loads(server.ctl_ok("user", "show", f"{bob}@{DOMAIN}", "--json").stdout)
    assert shown["name"] == "Robert Brown"
    assert "Robert Brown" in server.ctl_ok("user", "list").stdout

    async def logins() -> None:
        async with Sessions(server) as ss:
            await ss.login(alice, PASSWORD)
            await ss.login(bob, generated[bob])
            await ss.login(erin, generated[erin])
            try:
                await ss.login(carol, generated[bob])
            except LoginFailed:
                pass
            else:
                raise AssertionError("another user's generated password worked")

    run(logins())


def test_user_add_name_is_shown(server: Server) -> None:
    jid = server.add_user(f"named{time.monotonic_ns() % 1_000_000}", name="Robert Brown Jr.")
    assert json.loads(server.ctl_ok("user", "show", jid, "--json").stdout)["name"] == (
        "Robert Brown Jr."
    )
    assert "Robert Brown Jr." in server.ctl_ok("user", "show", jid).stdout


def test_a_thousand_rows_in_batches_with_json(server: Server, tmp_path: Path, run) -> None:
    tag = time.monotonic_ns() % 1_000_000
    csv = tmp_path / "big.csv"
    lines = ["username;name;password"]  # semicolons, as some spreadsheets save
    for i in range(1000):
        lines.append(f"u{tag}x{i};User {i};{'' if i % 2 else PASSWORD}")
    csv.write_text("\n".join(lines) + "\n")
    cmd = [executable("se-ctl"), "--config", str(server.config), "user", "import", str(csv)]
    proc = subprocess.Popen(
        [*cmd, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env()
    )
    # the server keeps answering while the keys are derived
    started = time.monotonic()
    assert server.ctl("status").returncode == 0
    assert time.monotonic() - started < 10
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["failed"] == []
    assert len(result["created"]) == 1000
    assert [r["line"] for r in result["created"]] == list(range(2, 1002))
    with_password = [r for r in result["created"] if "password" in r]
    assert len(with_password) == 500  # only the generated ones are printed
    last = result["created"][-1]
    assert last["jid"] == f"u{tag}x999@{DOMAIN}" and last["name"] == "User 999"

    async def login() -> None:
        async with Sessions(server) as ss:
            await ss.login(last["jid"].split("@")[0], last["password"])

    run(login())
    # the same file again: every row is refused, by line, and nothing changes
    again = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=300)
    assert again.returncode == 1
    assert len(again.stderr.strip().splitlines()) == 1000
    assert again.stderr.splitlines()[0].endswith(f"u{tag}x0@{DOMAIN} already exists")


def test_unreadable_file_is_one_line(server: Server, tmp_path: Path) -> None:
    r = server.ctl("user", "import", str(tmp_path / "missing.csv"))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "cannot read" in r.stderr
