"""`se-ctl`: manage the running server over its control socket.

se-ctl finds the server the way se-appliance finds its config (--config FILE, else $SE_CONFIG,
else /etc/se-appliance/config.toml, else the embedded demo default) and opens every file a
command names itself; the server never opens a path a caller gives (DESIGN §9).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from appliance import (
    archive_cli,
    backup_cli,
    events_cli,
    federation_cli,
    import_cli,
    synthetic,
    url_filter_cli,
)
from appliance.control_client import ControlClient, ControlClientError
from appliance.usage import UsageError
from standard_edition import __version__, config
from standard_edition.presence.model import STATE_NAMES

PROG = "se-ctl"


class UserError(Exception):
    """Something the caller got wrong; str() is the one line printed."""


# -- arguments ---------------------------------------------------------------------------------

EXAMPLES = {
    "user add": "se-ctl user add alice@example.test --name 'Alice Liddell'\n"
    "  se-ctl user add bob@example.test --password-file bob.pw",
    "user list": "se-ctl user list\n  se-ctl user list --json",
    "user show": "se-ctl user show alice@example.test",
    "user remove": "se-ctl user remove alice@example.test",
    "user passwd": "se-ctl user passwd alice@example.test\n"
    "  printf '%s\\n' \"$NEW\" | se-ctl user passwd alice@example.test --password-file -",
    "user disable": "se-ctl user disable alice@example.test",
    "user enable": "se-ctl user enable alice@example.test",
    "status": "se-ctl status\n  se-ctl --config /etc/se-appliance/config.toml status --json",
    "sessions": "se-ctl sessions",
    "presence": "se-ctl presence alice@example.test --json",
    "presence set": "se-ctl presence set alice@example.test --state in-a-meeting --until 11:00\n"
    "  se-ctl presence set alice@example.test --note 'At the Lisbon office' --privacy on",
    "presence clear": "se-ctl presence clear alice@example.test",
    "calendar import": "se-ctl calendar import alice@example.test alice.ics",
    "calendar clear": "se-ctl calendar clear alice@example.test",
    "im offline": "se-ctl im offline off",
    "config reset": "se-ctl config reset im.offline",
    "conference list": "se-ctl conference list --json",
    "presence level": "se-ctl presence level alice@example.test bob@example.test workgroup",
}
EXAMPLES.update(archive_cli.EXAMPLES)
EXAMPLES["user import"] = import_cli.EXAMPLE
EXAMPLES.update(url_filter_cli.EXAMPLES)
EXAMPLES.update(synthetic.EXAMPLES)
EXAMPLES.update(backup_cli.EXAMPLES)
EXAMPLES.update(federation_cli.EXAMPLES)
EXAMPLES["console"] = "se-ctl console"
EXAMPLES.update(events_cli.EXAMPLES)


def _epilog(*names: str) -> str:
    return "examples:\n" + "\n".join(f"  {EXAMPLES[n]}" for n in names)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage a running SE Appliance server over its control socket.",
        epilog=_epilog(*EXAMPLES)
        + "\n\nThe server is found through --config FILE, else $SE_CONFIG, else "
        "/etc/se-appliance/config.toml,\nelse the embedded demo default (data in ./var).",
        formatter_class=fmt,
    )
    parser.add_argument("--config", metavar="FILE", help="the server's TOML config file")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def leaf(
        group: Any, name: str, full: str, help: str, *, jid: bool = False
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(
            name, help=help, description=help, epilog=_epilog(full), formatter_class=fmt
        )
        if jid:
            p.add_argument("jid", metavar="JID", help="the account, as user@domain")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.set_defaults(command=full)
        return p

    user = commands.add_parser(
        "user",
        help="add, list, show, remove and change accounts",
        description="Add, list, show, remove and change accounts.",
        epilog=_epilog(*(n for n in EXAMPLES if n.startswith("user "))),
        formatter_class=fmt,
    )
    users = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = leaf(users, "add", "user add", "add an account", jid=True)
    add.add_argument("--name", help="display name colleagues see and search")
    add.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the password from the first line of FILE ('-': standard input); "
        "without it the password is asked twice",
    )
    leaf(users, "list", "user list", "list the accounts")
    leaf(users, "show", "user show", "show one account", jid=True)
    leaf(users, "remove", "user remove", "remove an account and end its sessions", jid=True)
    passwd = leaf(users, "passwd", "user passwd", "set a new password", jid=True)
    passwd.add_argument(
        "--password-file", metavar="FILE", help="read the password from the first line of FILE"
    )
    leaf(
        users, "disable", "user disable", "stop an account logging in; ends its sessions", jid=True
    )
    leaf(users, "enable", "user enable", "let a disabled account log in again", jid=True)
    import_cli.add_parser(users, leaf)
    pres = commands.add_parser(
        "presence",
        help="show or set a user's presence, notes, privacy and access levels",
        description="Show a user's aggregated presence (se-ctl presence JID), or change it.",
        epilog=_epilog(*(n for n in EXAMPLES if n.startswith("presence"))),
        formatter_class=fmt,
    )
    pres.add_argument("jid", metavar="JID|ACTION", help="the account, or set / clear / level")
    pres.add_argument("rest", nargs="*", metavar="ARG", help="the account (and contact, level)")
    pres.add_argument("--state", help="a state set by hand: " + ", ".join(sorted(STATE_NAMES)))
    pres.add_argument("--until", help="when the state ends: HH:MM today (or tomorrow), or ISO 8601")
    pres.add_argument("--note", help="the personal note ('' clears it)")
    pres.add_argument("--oof-note", help="the out-of-office note ('' clears it)")
    pres.add_argument("--privacy", choices=("on", "off"), help="privacy mode")
    pres.add_argument("--json", action="store_true", help="print the result as JSON")
    pres.set_defaults(command="presence", parser=pres)
    cal = commands.add_parser(
        "calendar",
        help="import a user's busy blocks from an iCalendar file",
        description="Meetings show as Busy (In a meeting), out-of-office time as Away.",
        epilog=_epilog("calendar import", "calendar clear"),
        formatter_class=fmt,
    )
    cals = cal.add_subparsers(dest="calendar_command", metavar="ACTION", required=True)
    imp = leaf(
        cals, "import", "calendar import", "replace the user's calendar with a file", jid=True
    )
    imp.add_argument("file", metavar="FILE.ics", help="the iCalendar file ('-': standard input)")
    leaf(cals, "clear", "calendar clear", "forget the user's calendar", jid=True)
    im = commands.add_parser(
        "im",
        help="switch IM features at run time",
        description="Switch IM features; the choice is stored and wins over config.toml.",
        epilog=_epilog("im offline", "im url-filter"),
        formatter_class=fmt,
    )
    ims = im.add_subparsers(dest="im_command", metavar="FEATURE", required=True)
    off = leaf(ims, "offline", "im offline", "offline IM: store messages for signed-out users")
    off.add_argument("switch", choices=("on", "off"))
    url_filter_cli.add_parser(ims, leaf)
    conf = commands.add_parser(
        "config",
        help="return a run-time setting to its config.toml value",
        epilog=_epilog("config reset"),
        formatter_class=fmt,
    )
    confs = conf.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    reset = leaf(confs, "reset", "config reset", "forget what se-ctl set for KEY")
    reset.add_argument("key", metavar="KEY", help="e.g. im.offline")
    rooms = commands.add_parser(
        "conference",
        help="the conferences (rooms) on the server",
        epilog=_epilog("conference list"),
        formatter_class=fmt,
    )
    roomsub = rooms.add_subparsers(dest="conference_command", metavar="ACTION", required=True)
    leaf(roomsub, "list", "conference list", "list the rooms and who is in them")
    archive_cli.add_parser(commands)
    leaf(commands, "status", "status", "show the server's version, uptime, listeners, counts")
    leaf(commands, "sessions", "sessions", "list the sessions signed in now")
    synthetic.add_parser(commands, leaf)
    backup_cli.add_parsers(commands, leaf)
    federation_cli.add_parsers(commands, leaf)
    logs = leaf(commands, "log", "log", "show the server's recent log lines (kept in memory)")
    logs.add_argument("--lines", type=int, default=50, metavar="N", help="at most N (1-500)")
    logs.add_argument(
        "--level", choices=("info", "warn", "error"), default="info", help="that level or worse"
    )
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="then print each new line as the server logs it, until Ctrl-C "
        "(with --json: one JSON object a line)",
    )
    events_cli.add_parser(commands, leaf)
    console = commands.add_parser(
        "console",
        help="the interactive console (dashboard, users, sessions, presence, rooms, archive, "
        "federation, log)",
        description="A full-screen console for an 80x24 terminal; q or ctrl+q quits.",
        epilog=_epilog("console"),
        formatter_class=fmt,
    )
    console.set_defaults(command="console", json=False)
    return parser


# -- input -------------------------------------------------------------------------------------


def check_jid(s: str) -> str:
    """The account address in its prepared form; UserError unless it is user@domain."""
    try:
        from standard_edition.core.jid import InvalidJID, parse_jid
    except ImportError:  # pragma: no cover - the server validates again anyway
        local, at, domain = s.partition("@")
        if not (local and at and domain) or "/" in s or "@" in domain:
            raise UserError(f"{s!r} is not an account address (user@domain)") from None
        return s
    try:
        jid = parse_jid(s)
    except InvalidJID as e:
        raise UserError(str(e)) from None
    if jid.local is None:
        raise UserError(f"{s!r} is not an account address: expected user@{jid.domain}")
    if jid.resource is not None:
        raise UserError(f"{s!r}: an account address has no resource (drop '/{jid.resource}')")
    return str(jid)


def read_password_file(name: str) -> str:
    """The first line of the file (or of stdin for '-'), without its line ending."""
    try:
        if name == "-":
            line = sys.stdin.readline()
        else:
            with open(name, encoding="utf-8") as f:
                line = f.readline()
    except OSError as e:
        raise UserError(f"cannot read password file {name}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"password file {name}: not UTF-8 text") from None
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        raise UserError(f"password file {name}: the first line is empty")
    return password


def ask_password(jid: str) -> str:
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask for the password on; use --password-file FILE")
    first = getpass.getpass(f"password for {jid}: ")
    if not first:
        raise UserError("empty password; nothing changed")
    if getpass.getpass("again: ") != first:
        raise UserError("the passwords do not match; nothing changed")
    return first


def password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        return read_password_file(args.password_file)
    return ask_password(args.jid)


# -- output ------------------------------------------------------------------------------------


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in ("uptime",) and isinstance(value, int | float):
        return duration(value)
    if key in ("started", "since", "created") and isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, dict) and _setting(value):
        return f"{_cell(key, value['value'])} ({value['source']})"
    if isinstance(value, list):
        if not value:
            return "none"
        if all(not isinstance(v, dict | list) for v in value):
            return ", ".join(_cell(key, v) for v in value)
    if isinstance(value, dict) and all(not isinstance(v, dict | list) for v in value.values()):
        return ", ".join(f"{k} {_cell(k, v)}" for k, v in value.items()) or "none"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def duration(seconds: float) -> str:
    s = int(seconds)
    parts = [(s // 86400, "d"), (s % 86400 // 3600, "h"), (s % 3600 // 60, "m"), (s % 60, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return " ".join(shown) or "0s"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Aligned columns under upper-case headers; the last column is not padded."""
    cells = [[h for _, h in columns]] + [[_cell(k, r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def key_values(data: dict[str, Any], indent: str = "") -> str:
    """`key: value` lines; a list of records becomes an indented table under its key."""
    lines = []
    width = max((len(k) for k in data), default=0) + 1
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{indent}{key}:")
            cols = list(dict.fromkeys(k for v in value for k in v))
            sub = table(value, [(c, c.upper()) for c in cols])
            lines.extend(f"{indent}  {line}" for line in sub.splitlines())
        elif isinstance(value, dict) and value and not _setting(value) and _nested(value):
            # a section (the edge, the settings): its own indented block
            lines.append(f"{indent}{key}:")
            lines.append(key_values(value, indent + "  "))
        else:
            lines.append(f"{indent}{(key + ':').ljust(width)} {_cell(key, value)}")
    return "\n".join(lines)


def _nested(value: dict[str, Any]) -> bool:
    return any(isinstance(v, dict | list) and v for v in value.values())


def _setting(value: dict[str, Any]) -> bool:
    """A run-time setting as status shows it: its value and where it comes from."""
    return set(value) == {"value", "source"}


USER_COLUMNS = [("jid", "JID"), ("name", "NAME"), ("enabled", "ENABLED"), ("sessions", "SESSIONS")]
SESSION_COLUMNS = [
    ("jid", "JID"),
    ("protocol", "PROTOCOL"),
    ("address", "ADDRESS"),
    ("since", "SINCE"),
    ("tls", "TLS"),
    ("priority", "PRIORITY"),
    ("show", "SHOW"),
]


def _as_records(result: Any) -> list[dict[str, Any]]:
    return [r for r in result if isinstance(r, dict)] if isinstance(result, list) else []


# -- commands ----------------------------------------------------------------------------------

Human = Callable[[argparse.Namespace, Any], str]


def _user_add(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    jid = check_jid(a.jid)
    args: dict[str, Any] = {"jid": jid, "password": password(a)}
    if a.name is not None:
        args["name"] = a.name
    return "user.add", args


def _user_passwd(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    jid = check_jid(a.jid)
    return "user.passwd", {"jid": jid, "password": password(a)}


def _with_jid(cmd: str) -> Callable[[argparse.Namespace], tuple[str, dict[str, Any]]]:
    return lambda a: (cmd, {"jid": check_jid(a.jid)})


def _no_args(cmd: str) -> Callable[[argparse.Namespace], tuple[str, dict[str, Any]]]:
    return lambda a: (cmd, {})


def _jid_of(a: argparse.Namespace, r: Any) -> str:
    return str(r.get("jid", a.jid)) if isinstance(r, dict) else str(a.jid)


def _show_list(a: argparse.Namespace, r: Any) -> str:
    rows = _as_records(r)
    if not rows:
        return "no accounts yet; add one with: se-ctl user add USER@DOMAIN"
    return table(rows, USER_COLUMNS)


def _show_sessions(a: argparse.Namespace, r: Any) -> str:
    rows = _as_records(r)
    return table(rows, SESSION_COLUMNS) if rows else "no sessions"


def _show_mapping(a: argparse.Namespace, r: Any) -> str:
    return key_values(r) if isinstance(r, dict) else _cell("", r)


def _disabled(a: argparse.Namespace, r: Any) -> str:
    n = r.get("sessions_closed") if isinstance(r, dict) else None
    closed = f" ({n} session{'s' if n != 1 else ''} closed)" if isinstance(n, int) else ""
    return f"disabled {_jid_of(a, r)}{closed}"


def parse_until(text: str, now: datetime | None = None) -> float:
    """HH:MM (today, or tomorrow when already past) or an ISO 8601 date-time, local time."""
    now = now or datetime.now().astimezone()
    try:
        if len(text) <= 5 and ":" in text:
            hh, mm = (int(x) for x in text.split(":"))
            at = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
            if at <= now:
                at += timedelta(days=1)
            return at.timestamp()
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--until {text!r}: give HH:MM or an ISO 8601 date-time") from None
    if at.tzinfo is None:
        at = at.astimezone()
    return at.timestamp()


def _presence(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    action, rest = a.jid, a.rest
    setting = any(v is not None for v in (a.state, a.until, a.note, a.oof_note, a.privacy))
    if action in ("set", "clear", "level"):
        want = 3 if action == "level" else 1
        if len(rest) != want:
            usage = "JID CONTACT LEVEL" if action == "level" else "JID"
            a.parser.error(f"presence {action} takes {usage}")
    elif rest or setting:
        a.parser.error("to change presence: se-ctl presence set JID --state ... (see --help)")
    if action == "clear":
        return "presence.clear", {"jid": check_jid(rest[0])}
    if action == "level":
        return "presence.level", {"jid": check_jid(rest[0]), "contact": rest[1], "level": rest[2]}
    if action == "set":
        if not setting:
            a.parser.error("presence set needs --state, --note, --oof-note or --privacy")
        args: dict[str, Any] = {"jid": check_jid(rest[0])}
        if a.state is not None:
            args["state"] = a.state
        if a.until is not None:
            args["until"] = parse_until(a.until)
        if a.note is not None:
            args["note"] = a.note
        if a.oof_note is not None:
            args["oof_note"] = a.oof_note
        if a.privacy is not None:
            args["privacy"] = a.privacy == "on"
        return "presence.set", args
    return "presence.show", {"jid": check_jid(action)}


def _calendar_import(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    jid = check_jid(a.jid)
    # se-ctl reads the file itself and streams it: the server never opens a caller's path
    try:
        if a.file == "-":
            text = sys.stdin.read()
        else:
            with open(a.file, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{a.file}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return "calendar.import", {"jid": jid, "ics": text}


def _show_import(a: argparse.Namespace, r: Any) -> str:
    text = f"{r['jid']}: {r['blocks']} busy block(s) imported"
    if r.get("recurring_skipped"):
        text += f"; {r['recurring_skipped']} recurring event(s) left out (not expanded)"
    return text


def _show_rooms(a: argparse.Namespace, r: Any) -> str:
    if not r:
        return "no conferences"
    lines = []
    for room in r:
        kind = "persistent" if room["persistent"] else "ad hoc"
        who = ", ".join(o["nick"] for o in room["occupants"]) or "nobody"
        lines.append(f"{room['room']} ({kind}): {who}")
    return "\n".join(lines)


def _show_presence(a: argparse.Namespace, r: Any) -> str:
    if "availability" not in r:
        return f"{r['jid']}: {r['contact']} is now {r['level']}"
    av = r["availability"]
    lines = [f"{r['jid']}: {av['label']} ({av['code']}, from {r['source']})"]
    if r.get("note"):
        lines.append(f"  note: {r['note']}")
    if r.get("oof_note"):
        lines.append(f"  out of office: {r['oof_note']}")
    m = r.get("manual")
    if m:
        until = f" until {m['until']}" if m.get("until") else ""
        lines.append(f"  set by hand: {m['code']} {m.get('activity') or ''}{until}".rstrip())
    for ep in r.get("endpoints", []):
        idle = f", idle since {ep['idle_since']}" if ep.get("idle_since") else ""
        lines.append(f"  {ep['endpoint']} ({ep['protocol']}): {ep['state']} {ep['code']}{idle}")
    for b in r.get("calendar", []):
        lines.append(f"  calendar: {b['activity']} {b['start']} - {b['end']}")
    lines.append(f"  privacy mode: {'on' if r.get('privacy') else 'off'}")
    if r.get("blocked"):
        lines.append("  blocked: " + ", ".join(r["blocked"]))
    for contact, level in r.get("levels", {}).items():
        lines.append(f"  {contact}: {level}")
    return "\n".join(lines)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], tuple[str, dict[str, Any]]], Human]] = {
    "user add": (_user_add, lambda a, r: f"added {_jid_of(a, r)}"),
    "user list": (_no_args("user.list"), _show_list),
    "user show": (_with_jid("user.show"), _show_mapping),
    "user remove": (_with_jid("user.remove"), lambda a, r: f"removed {_jid_of(a, r)}"),
    "user passwd": (_user_passwd, lambda a, r: f"password changed for {_jid_of(a, r)}"),
    "user disable": (_with_jid("user.disable"), _disabled),
    "user enable": (_with_jid("user.enable"), lambda a, r: f"enabled {_jid_of(a, r)}"),
    "status": (_no_args("status"), _show_mapping),
    "sessions": (_no_args("sessions"), _show_sessions),
    "presence": (_presence, _show_presence),
    "calendar import": (_calendar_import, _show_import),
    "im offline": (
        lambda a: ("im.offline", {"enabled": a.switch == "on"}),
        lambda a, r: (
            f"offline IM is {'on' if r['offline_im'] else 'off'} (stored; "
            "se-ctl config reset im.offline returns to config.toml)"
        ),
    ),
    "config reset": (
        lambda a: ("config.reset", {"key": a.key}),
        lambda a, r: f"{r['key']} = {json.dumps(r['value'])} (from config.toml)",
    ),
    "conference list": (_no_args("conference.list"), _show_rooms),
    "calendar clear": (
        _with_jid("calendar.clear"),
        lambda a, r: f"calendar cleared for {r['jid']}",
    ),
}


def _log_lines(a: argparse.Namespace, r: Any) -> str:
    lines = r.get("lines", []) if isinstance(r, dict) else []
    return "\n".join(log_line(line) for line in lines) or "no log lines"


log_line = events_cli.log_line


def _log_tail(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if not 1 <= a.lines <= 500:
        raise UserError(f"--lines {a.lines}: give a number from 1 to 500")
    return "log.tail", {"limit": a.lines, "level": a.level}


COMMANDS["log"] = (_log_tail, _log_lines)
COMMANDS.update(federation_cli.COMMANDS)
COMMANDS.update(url_filter_cli.COMMANDS)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(config.locate(args.config))
    except config.ConfigError as e:
        raise UserError(str(e)) from None
    if args.command == "console":
        from appliance.console.app import run_console  # Textual loads only for the console

        return run_console(cfg)
    if args.command == "restore":
        return backup_cli.restore(args, cfg)
    if args.command == "backup":
        return backup_cli.backup(args, cfg)
    if args.command == "events":
        return events_cli.run(args, cfg)
    if args.command == "log" and args.follow:
        if not 1 <= args.lines <= 500:
            raise UserError(f"--lines {args.lines}: give a number from 1 to 500")
        return events_cli.follow_log(args, cfg)
    if args.command == "user import":
        # a large file: each batch's accounts have their keys derived before the answer
        with ControlClient(cfg.control_socket, timeout=600) as client:
            return import_cli.run(args, client, cfg.domain)
    if args.command.startswith("test "):
        with ControlClient(cfg.control_socket) as client:
            return synthetic.run(args, client, check_jid)
    if args.command.startswith("archive "):
        # searches, exports and verify of a large archive take a while
        with ControlClient(cfg.control_socket, timeout=600) as client:
            return archive_cli.run(args, client)
    request, human = COMMANDS[args.command]
    cmd, cmd_args = request(args)
    with ControlClient(cfg.control_socket) as client:
        result = client.call(cmd, **cmd_args)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(human(args, result))
    sys.stdout.flush()
    return 0


def _fail(message: str, code: int = 1) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return run(args)
    except UsageError as e:
        return _fail(str(e), 2)
    except (
        UserError,
        ControlClientError,
        archive_cli.ArchiveUsage,
        backup_cli.BackupError,
        synthetic.SyntheticFailure,
        federation_cli.FederationUsage,
        import_cli.ImportFileError,
    ) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`se-ctl user list | head`): say nothing, and keep Python's
        # final flush of stdout from failing too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except EOFError:
        return _fail("end of input while reading the password")
    except Exception as e:  # a bug in se-ctl: one line for the admin, the traceback on request
        if os.environ.get("SE_CTL_DEBUG"):
            raise
        return _fail(f"unexpected error: {type(e).__name__}: {e} (SE_CTL_DEBUG=1 shows where)")


if __name__ == "__main__":
    sys.exit(main())
