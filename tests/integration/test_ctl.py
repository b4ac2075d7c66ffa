"""se-ctl end to end against the running server, and the one-line errors an admin sees."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from . import rawxmpp
from .server import PASSWORD, Server, clean_env, executable
from .xmppclient import Sessions


def one_line_error(r: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The admin-facing error contract: exit code, exactly one line on stderr, no traceback."""
    assert r.returncode == code, f"exit {r.returncode}, want {code}: {r.stderr!r} {r.stdout!r}"
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"want one line on stderr, got {r.stderr!r}"
    return lines[0]


def parsed(r: subprocess.CompletedProcess[str]) -> Any:
    assert r.returncode == 0, r.stderr
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"--json output is not JSON ({e}): {r.stdout[:300]!r}") from None


def strings(obj: Any) -> list[str]:
    """Every string (keys and values) in a JSON value."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in [k, *strings(v)]]
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return []


def disabled(show: Any) -> bool:
    """Whether `user show --json` says the account is disabled (whichever field it uses)."""
    if isinstance(show, dict) and len(show) == 1 and isinstance(next(iter(show.values())), dict):
        show = next(iter(show.values()))  # {"user": {...}}
    assert isinstance(show, dict), show
    if isinstance(show.get("disabled"), bool):
        return show["disabled"]
    if isinstance(show.get("enabled"), bool):
        return not show["enabled"]
    for key in ("status", "state"):
        if isinstance(show.get(key), str):
            return show[key].lower() == "disabled"
    raise AssertionError(f"user show --json does not say whether the account is enabled: {show}")


def can_log_in(server: Server, user: str, password: str) -> bool:
    async def attempt() -> bool:
        s, _ = await rawxmpp.open_stream(server.ports["c2s"], server.domain)
        try:
            await rawxmpp.starttls(s)
            return b"<success" in await rawxmpp.auth_plain(s, user, password)
        finally:
            s.close()

    return asyncio.run(asyncio.wait_for(attempt(), 30))


def test_user_add_then_list_and_show_in_text_and_json(server: Server):
    jid = server.add_user("adam", name="Adam A")
    text = server.ctl_ok("user", "list").stdout
    assert jid in text
    listed = parsed(server.ctl("user", "list", "--json"))
    assert jid in strings(listed), listed
    shown = server.ctl_ok("user", "show", jid).stdout
    assert jid in shown and "Adam A" in shown
    show = parsed(server.ctl("user", "show", jid, "--json"))
    assert jid in strings(show) and "Adam A" in strings(show), show
    assert disabled(show) is False
    assert PASSWORD not in server.ctl_ok("user", "show", jid, "--json").stdout
    assert can_log_in(server, "adam", PASSWORD)


def test_status_reports_domain_and_listeners(server: Server):
    assert server.ctl_ok("status").stdout.strip()
    st = parsed(server.ctl("status", "--json"))
    text = json.dumps(st)
    assert server.domain in strings(st), st
    assert str(server.ports["c2s"]) in text and str(server.ports["c2s_tls"]) in text, st


def test_sessions_lists_a_logged_in_user(server: Server, run):
    (user,) = server.new_users("sess")

    async def scenario() -> tuple[str, Any]:
        async with Sessions(server) as ss:
            await ss.login(user, resource="laptop")
            text = (await asyncio.to_thread(server.ctl_ok, "sessions")).stdout
            as_json = parsed(await asyncio.to_thread(server.ctl, "sessions", "--json"))
            return text, as_json

    text, as_json = run(scenario())
    full = f"{user}@{server.domain}/laptop"
    assert f"{user}@{server.domain}" in text, text
    assert any(full in s or s == f"{user}@{server.domain}" for s in strings(as_json)), as_json


def test_passwd_replaces_the_password(server: Server):
    jid = server.add_user("pam")
    pw = server.root / "newpw"
    pw.write_text("New-Secret-9\nthis second line is not part of it\n")
    server.ctl_ok("user", "passwd", jid, "--password-file", str(pw))
    assert can_log_in(server, "pam", "New-Secret-9")
    assert not can_log_in(server, "pam", PASSWORD)


def test_disable_and_enable_show_in_user_show_and_login(server: Server):
    jid = server.add_user("dora")
    server.ctl_ok("user", "disable", jid)
    assert disabled(parsed(server.ctl("user", "show", jid, "--json"))) is True
    assert not can_log_in(server, "dora", PASSWORD)
    server.ctl_ok("user", "enable", jid)
    assert disabled(parsed(server.ctl("user", "show", jid, "--json"))) is False
    assert can_log_in(server, "dora", PASSWORD)


def test_remove_deletes_the_account(server: Server):
    jid = server.add_user("remy")
    server.ctl_ok("user", "remove", jid)
    assert jid not in strings(parsed(server.ctl("user", "list", "--json")))
    assert not can_log_in(server, "remy", PASSWORD)
    one_line_error(server.ctl("user", "show", jid))
    one_line_error(server.ctl("user", "remove", jid))


def test_adding_an_existing_user_fails_in_one_line(server: Server):
    jid = server.add_user("twice")
    r = server.ctl("user", "add", jid, "--password-file", str(server.password_file("Other-Pass-1")))
    one_line_error(r)
    assert can_log_in(server, "twice", PASSWORD), "the failed add changed the password"


@pytest.mark.parametrize(
    "jid",
    [
        "has space@example.test",
        "double@@example.test",
        "colon:user@example.test",
        "quote'user@example.test",
        "someone@other.test",
        "@example.test",
        "",
    ],
)
def test_bad_jid_is_refused_in_one_line(server: Server, jid):
    r = server.ctl("user", "add", jid, "--password-file", str(server.password_file(PASSWORD)))
    one_line_error(r)


@pytest.mark.parametrize("command", ["show", "remove", "disable", "enable"])
def test_unknown_user_is_an_error_in_one_line(server: Server, command):
    one_line_error(server.ctl("user", command, f"nobody@{server.domain}"))


def test_passwd_of_unknown_user_is_an_error_in_one_line(server: Server):
    pw = server.password_file("Whatever-1")
    one_line_error(
        server.ctl("user", "passwd", f"nobody@{server.domain}", "--password-file", str(pw))
    )


def test_missing_password_file_is_an_error_in_one_line(server: Server, tmp_path: Path):
    r = server.ctl(
        "user", "add", f"nofile@{server.domain}", "--password-file", str(tmp_path / "nope")
    )
    one_line_error(r)


@pytest.mark.parametrize(
    "args",
    [[], ["user"], ["user", "frobnicate"], ["user", "add"], ["frobnicate"], ["status", "--bogus"]],
    ids=[
        "nothing",
        "no-user-command",
        "unknown-user-command",
        "add-without-jid",
        "unknown",
        "bad-flag",
    ],
)
def test_usage_error_exits_2(server: Server, args):
    r = server.ctl(*args)
    assert r.returncode == 2, f"{args}: exit {r.returncode}: {r.stderr!r}"
    assert "Traceback" not in r.stderr


def test_ctl_without_a_running_server_says_so_in_one_line(make_server):
    never_started = make_server(start=False)  # config points at an empty data dir
    one_line_error(never_started.ctl("status"))
    one_line_error(never_started.ctl("user", "list"))
    stopped = make_server()
    assert stopped.stop() == 0
    one_line_error(stopped.ctl("status"))
    pw = stopped.password_file(PASSWORD)
    one_line_error(stopped.ctl("user", "add", f"late@{stopped.domain}", "--password-file", str(pw)))


@pytest.mark.parametrize(
    "args",
    [
        ["presence", "JID"],
        ["presence", "clear", "JID"],
        ["presence", "set", "JID", "--state", "busy"],
        ["calendar", "clear", "JID"],
        ["policy", "JID"],
        ["policy", "JID", "--outside-access", "off"],
    ],
    ids=lambda args: " ".join(a for a in args if a != "JID"),
)
def test_unknown_user_in_other_commands_is_an_error_in_one_line(server: Server, args):
    nobody = f"nobody@{server.domain}"
    line = one_line_error(server.ctl(*[nobody if a == "JID" else a for a in args]))
    assert "nobody" in line, line


@pytest.mark.parametrize(
    "args",
    [
        ["presence", "set", "JID", "--state", "busy", "--json"],
        ["presence", "clear", "JID", "--json"],
        ["calendar", "clear", "JID", "--json"],
        ["policy", "JID", "--json"],
        ["im", "offline", "on", "--json"],
        ["config", "reset", "im.offline", "--json"],
        ["conference", "list", "--json"],
        ["federation", "list", "--json"],
        ["archive", "policy", "--json"],
        ["log", "--lines", "5", "--json"],
    ],
    ids=lambda args: " ".join(a for a in args if a not in ("JID", "--json")),
)
def test_json_output_parses(server: Server, args):
    jid = f"{server.new_users('json')[0]}@{server.domain}"
    out = parsed(server.ctl(*[jid if a == "JID" else a for a in args]))
    if "JID" in args:
        assert jid in strings(out), out
    assert isinstance(out, dict | list), out


def test_log_shows_recent_lines_and_filters_by_level(server: Server):
    server.ctl_ok("user", "list")  # logged as "control: user.list"
    text = server.ctl_ok("log", "--lines", "500").stdout
    assert "control: user.list" in text, text
    tail = parsed(server.ctl("log", "--lines", "3", "--json"))
    assert len(tail["lines"]) <= 3 and isinstance(tail["last"], int), tail
    assert {"seq", "time", "level", "namespace", "text"} <= set(tail["lines"][-1]), tail
    worse = parsed(server.ctl("log", "--level", "error", "--json"))
    assert all(line["level"] in ("error", "critical") for line in worse["lines"]), worse


@pytest.mark.parametrize(
    "args",
    [
        ["log", "--lines", "0"],
        ["log", "--lines", "501"],
        ["archive", "search", "--from", "not-a-date"],
        ["archive", "search", "--limit", "0"],
        ["federation", "allow", "bad domain!"],
        ["presence", "level", "JID", "JID", "nonsense"],
        ["config", "reset", "no.such.key"],
    ],
    ids=[
        "log-lines-0",
        "log-lines-501",
        "bad-date",
        "bad-limit",
        "bad-domain",
        "bad-level",
        "bad-key",
    ],
)
def test_bad_arguments_are_refused_in_one_line(server: Server, args):
    jid = f"{server.new_users('badarg')[0]}@{server.domain}"
    one_line_error(server.ctl(*[jid if a == "JID" else a for a in args]))


@pytest.mark.parametrize(
    "args",
    [
        ["log", "--level", "debug"],
        ["im", "offline", "maybe"],
        ["federation", "mode", "weird"],
        ["archive", "search", "--protocol", "irc"],
        ["presence", "set"],
    ],
    ids=["log-level", "im-offline", "federation-mode", "archive-protocol", "presence-set-no-jid"],
)
def test_more_usage_errors_exit_2(server: Server, args):
    r = server.ctl(*args)
    assert r.returncode == 2, f"{args}: exit {r.returncode}: {r.stderr!r}"
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["sessions"],
        ["presence", "someone@example.test"],
        ["conference", "list"],
        ["archive", "search"],
        ["archive", "verify"],
        ["federation", "list"],
        ["policy", "someone@example.test"],
        ["im", "offline", "on"],
        ["log"],
        ["test", "im", "a@example.test", "b@example.test"],
    ],
    ids=lambda args: " ".join(a for a in args if "@" not in a),
)
def test_other_commands_without_a_running_server_say_so_in_one_line(make_server, args):
    never_started = make_server(start=False)
    line = one_line_error(never_started.ctl(*args))
    assert "not running" in line, line


def run_server_expecting_refusal(config: Path) -> str:
    r = subprocess.run(
        [executable("se-appliance"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
    )
    assert r.returncode != 0, "the server started with a bad config"
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = [line for line in (r.stderr + r.stdout).splitlines() if line.strip()]
    assert len(lines) == 1, f"want one line, got {r.stderr!r} {r.stdout!r}"
    return lines[0]


@pytest.mark.parametrize(
    ("top", "tables", "key"),
    [
        ("colour = 'blue'\n", "", "colour"),
        (
            "",
            "[listen]\nc2s = []\nc2s_tls = []\nsip = []\nsip_tls = []\nxmpp_s2s = []\n",
            "xmpp_s2s",
        ),
        ("", "[im]\noffline_days = 3\n", "offline_days"),
    ],
    ids=["top-level", "in-listen", "in-im"],
)
def test_unknown_config_key_stops_the_start_naming_it(tmp_path: Path, top, tables, key):
    config = tmp_path / "config.toml"
    config.write_text(f'{top}domain = "example.test"\ndata_dir = "{tmp_path / "data"}"\n{tables}')
    assert key in run_server_expecting_refusal(config)


def test_bad_config_value_stops_the_start_naming_the_key(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'domain = "example.test"\ndata_dir = "{tmp_path / "data"}"\n'
        "[listen]\nc2s = ['nowhere']\nc2s_tls = []\nsip = []\nsip_tls = []\n"
    )
    assert "c2s" in run_server_expecting_refusal(config)
