"""`se-ctl events` and `se-ctl log --follow`: the server's live events, printed as they come.

Both read the control socket's event stream (standard_edition/control/stream.py) until the
admin presses Ctrl-C (exit 0) or the server closes it (one line on stderr, exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from appliance.control_client import ControlClient
from standard_edition.config import Config

TOPICS = ("sessions", "presence", "log", "rooms", "counters")
DEFAULT_TOPICS = ("sessions", "presence", "log", "rooms")
EXAMPLES = {
    "events": "se-ctl events\n  se-ctl events --topic sessions --topic presence --json\n"
    "  se-ctl events --topic rooms",
    "log": "se-ctl log --lines 50\n  se-ctl log --level warn --json\n  se-ctl log --follow",
}


def add_parser(commands: Any, leaf: Any) -> None:
    p = leaf(
        commands,
        "events",
        "events",
        "print live events as they happen (logins, presence changes, log lines, rooms); "
        "Ctrl-C stops",
    )
    p.add_argument(
        "--topic",
        action="append",
        choices=TOPICS,
        metavar="TOPIC",
        help=f"one of {', '.join(TOPICS)}; repeat for more (default: "
        f"{', '.join(DEFAULT_TOPICS)}; counters come every 2 s)",
    )
    p.add_argument(
        "--level",
        choices=("info", "warn", "error"),
        default="info",
        help="log lines of that level or worse",
    )


def log_line(line: dict[str, Any]) -> str:
    """One kept log line as text: time, level, namespace, message."""
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(line.get("time", 0)))
    return f"{at} {line.get('level', '?'):<5} [{line.get('namespace', '')}] {line.get('text', '')}"


def describe(event: dict[str, Any]) -> str:
    """One event as one line of text."""
    kind, data = event.get("event"), event.get("data") or {}
    at = time.strftime("%H:%M:%S", time.localtime(event.get("time", 0)))
    if kind == "log":
        return log_line(data)
    if kind == "sessions":
        tls = "tls" if data.get("tls") else "plain"
        return (
            f"{at} {data.get('change', '?'):<8} {data.get('jid')} {data.get('protocol')} "
            f"{data.get('origin')} {data.get('address')} {tls}"
        )
    if kind == "presence":
        av = data.get("availability") or {}
        note = f" - {data['note']}" if data.get("note") else ""
        return f"{at} presence {data.get('jid')} {av.get('label')} ({av.get('code')}){note}"
    if kind == "rooms":
        return f"{at} {room_line(data)}"
    if kind == "counters":
        counters = data.get("counters") or {}
        sessions = ", ".join(f"{k} {v}" for k, v in sorted((data.get("sessions") or {}).items()))
        return (
            f"{at} counters messages {counters.get('messages', 0)} "
            f"({data.get('messages_per_min', 0)}/min), sessions {sessions or 'none'}"
        )
    return f"{at} {kind} {json.dumps(data, ensure_ascii=False)}"


def room_line(data: dict[str, Any]) -> str:
    """A "rooms" event: what changed, the room, who (for an occupant), occupants now."""
    change, room, count = data.get("change", "?"), data.get("room"), data.get("count", 0)
    if data.get("nick") is not None:
        who = f"{data.get('nick')} ({data.get('jid')})"
        if change == "renamed":
            who = f"{data.get('old_nick')} -> {who}"
        return f"room {change:<8} {room} {who}, {count} in the room"
    kind = "persistent" if data.get("persistent") else "ad hoc"
    name = f' "{data["name"]}"' if data.get("name") else ""
    return f"room {change:<8} {room}{name} {kind}, {count} in the room"


def run(args: argparse.Namespace, cfg: Config, out: TextIO = sys.stdout) -> int:
    """se-ctl events: until Ctrl-C (0) or the server goes away (StreamClosed: 1)."""
    topics = list(dict.fromkeys(args.topic or DEFAULT_TOPICS))
    try:
        with ControlClient(cfg.control_socket) as client:
            client.subscribe(topics, level=args.level)
            while True:
                event = client.next_event()
                if event is None:
                    continue
                if args.json:
                    shown = {k: event.get(k) for k in ("event", "time", "data")}
                    print(json.dumps(shown, ensure_ascii=False), file=out, flush=True)
                else:
                    print(describe(event), file=out, flush=True)
    except KeyboardInterrupt:
        return 0


def follow_log(args: argparse.Namespace, cfg: Config, out: TextIO = sys.stdout) -> int:
    """se-ctl log --follow: the last --lines lines, then each new one as it is logged."""
    try:
        with ControlClient(cfg.control_socket) as client:
            # subscribe first, then read the tail: no line falls between the two, and the
            # lines both give are told apart by seq
            client.subscribe(["log"], level=args.level)
            tail = client.call("log.tail", limit=args.lines, level=args.level)
            last = 0
            for line in tail.get("lines", []):
                _print_line(args, line, out)
                last = max(last, int(line.get("seq", 0)))
            while True:
                event = client.next_event()
                if event is None or event.get("event") != "log":
                    continue
                line = event.get("data") or {}
                if int(line.get("seq", 0)) <= last:
                    continue
                last = int(line.get("seq", 0))
                _print_line(args, line, out)
    except KeyboardInterrupt:
        return 0


def _print_line(args: argparse.Namespace, line: dict[str, Any], out: TextIO) -> None:
    text = json.dumps(line, ensure_ascii=False) if args.json else log_line(line)
    print(text, file=out, flush=True)
