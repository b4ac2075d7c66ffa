"""`se-ctl test im|presence A B`: synthetic transactions through the real c2s listener.

The server issues a one-time credential for each account over the control socket (admin only,
logged); se-ctl then logs both users in itself (appliance/xmpp_probe.py) and times the exchange.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from appliance.control_client import ControlClient, RemoteError
from appliance.xmpp_probe import ProbeError, run_im, run_presence

EXAMPLES = {
    "test im": "se-ctl test im alice@example.test bob@example.test",
    "test presence": "se-ctl test presence alice@example.test bob@example.test --json",
}
TIMEOUT = 10.0  # seconds for each step (connect, login, delivery)


class SyntheticFailure(Exception):
    """The transaction ran and failed; str() is the one-line reason."""


def add_parser(commands: Any, leaf: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    test = commands.add_parser(
        "test",
        help="synthetic transactions: log two users in and exchange a message or presence",
        description="Log two accounts in over the real c2s listener with one-time credentials "
        "the server issues, exchange a message (im) or a presence change (presence), and "
        "print pass or fail with timings. Exit 0 on pass, 1 on fail.",
        epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values()),
        formatter_class=fmt,
    )
    tests = test.add_subparsers(dest="test_command", metavar="KIND", required=True)
    for kind, what in (("im", "A sends B a message"), ("presence", "A shows B a change")):
        p = leaf(tests, kind, f"test {kind}", what)
        p.add_argument("a", metavar="A", help="the first account, user@domain")
        p.add_argument("b", metavar="B", help="the second account, user@domain")
        p.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds for each step (10)")


def run(args: argparse.Namespace, client: ControlClient, check_jid: Any) -> int:
    kind = args.command.removeprefix("test ")
    a, b = check_jid(args.a), check_jid(args.b)
    if a == b:
        raise SyntheticFailure("give two different accounts")
    started = time.monotonic()
    creds: dict[str, dict[str, Any]] = {}
    for jid in (a, b):
        try:
            creds[jid] = client.call("test.credential", jid=jid)
        except RemoteError as e:
            raise SyntheticFailure(f"FAIL test {kind} {a} -> {b}: {e.message}") from None
    runner = run_im if kind == "im" else run_presence
    try:
        timings = runner(a, b, creds, timeout=args.timeout)
        result: dict[str, Any] = {"test": kind, "a": a, "b": b, "pass": True, **timings}
    except ProbeError as e:
        result = {"test": kind, "a": a, "b": b, "pass": False, "reason": str(e)}
    result["total_ms"] = round((time.monotonic() - started) * 1000)
    if args.json:
        print(json.dumps(result, indent=2))
    elif result["pass"]:
        steps = ", ".join(
            f"{k.removesuffix('_ms').replace('_', ' ')} {v} ms"
            for k, v in result.items()
            if k.endswith("_ms") and k != "total_ms"
        )
        print(f"PASS test {kind} {a} -> {b}: {steps} (total {result['total_ms']} ms)")
    sys.stdout.flush()
    if not result["pass"]:
        raise SyntheticFailure(f"FAIL test {kind} {a} -> {b}: {result['reason']}")
    return 0
