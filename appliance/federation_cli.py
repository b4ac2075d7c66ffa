"""`se-ctl federation list|allow|block|mode|trust` and `se-ctl policy USER`: the edge's settings.

Each change is stored by the server and wins over config.toml (DESIGN §8); `trust` reads the
certificate file here, in se-ctl, and sends its text (the server never opens a caller's path).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXAMPLES = {
    "federation list": "se-ctl federation list --json",
    "federation allow": "se-ctl federation allow partner.example\n"
    "  se-ctl federation allow partner.example --remove",
    "federation block": "se-ctl federation block evil.example",
    "federation mode": "se-ctl federation mode open",
    "federation trust": "se-ctl federation trust partner.example --cert partner.pem",
    "policy": "se-ctl policy dave@example.test --outside-access off\n"
    "  se-ctl policy bob@example.test --federation-access off",
}
MAX_PEM = 100_000


class FederationUsage(Exception):
    """A bad argument; str() is the one line printed."""


def add_parsers(commands: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    fed = commands.add_parser(
        "federation",
        help="partner domains: mode, allow and block lists, pinned certificates",
        description="Which other domains this server federates with (XMPP s2s). Changes are "
        "stored and win over config.toml; se-ctl config reset federation.mode (.allow, .block) "
        "returns to the file.",
        epilog="examples:\n"
        + "\n".join(f"  {v}" for k, v in EXAMPLES.items() if k.startswith("federation")),
        formatter_class=fmt,
    )
    feds = fed.add_subparsers(dest="federation_command", metavar="ACTION", required=True)
    leaf(feds, "list", "federation list", "show the mode, the lists and the live streams")
    for name, what in (("allow", "allow a domain (and unblock it)"), ("block", "block a domain")):
        p = leaf(feds, name, f"federation {name}", what)
        p.add_argument("domain", metavar="DOMAIN")
        p.add_argument("--remove", action="store_true", help=f"take DOMAIN off the {name} list")
    mode = leaf(feds, "mode", "federation mode", "allowlist (default), blocklist or open")
    mode.add_argument("mode", choices=("allowlist", "blocklist", "open"))
    trust = leaf(feds, "trust", "federation trust", "accept a partner's (self-signed) certificate")
    trust.add_argument("domain", metavar="DOMAIN")
    trust.add_argument("--cert", metavar="FILE", help="the partner's PEM certificate ('-': stdin)")
    trust.add_argument("--remove", action="store_true", help="forget the pinned certificate")
    pol = leaf(
        commands,
        "policy",
        "policy",
        "show or set a user's outside access (edge logins) and federation access",
        jid=True,
    )
    pol.add_argument("--outside-access", choices=("on", "off"), help="may log in from outside")
    pol.add_argument(
        "--federation-access", choices=("on", "off"), help="may talk to partner domains"
    )


def _read_cert(name: str) -> str:
    try:
        text = sys.stdin.read(MAX_PEM + 1) if name == "-" else Path(name).read_text("ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise FederationUsage(f"{name}: cannot read: {e}") from None
    if len(text) > MAX_PEM or "-----BEGIN CERTIFICATE-----" not in text:
        raise FederationUsage(f"{name}: not a PEM certificate")
    return text


def _trust(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if bool(a.cert) == bool(a.remove):
        raise FederationUsage("federation trust: give --cert FILE or --remove")
    if a.remove:
        return "federation.trust", {"domain": a.domain, "remove": True}
    return "federation.trust", {"domain": a.domain, "cert": _read_cert(a.cert)}


def _policy(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    changes = {
        k: v == "on"
        for k, v in (
            ("outside_access", a.outside_access),
            ("federation_access", a.federation_access),
        )
        if v is not None
    }
    if not changes:
        return "policy.show", {"jid": a.jid}
    return "policy.set", {"jid": a.jid, **changes}


def _show_list(a: argparse.Namespace, r: Any) -> str:
    lines = [
        f"federation: {'on' if r['enabled'] else 'off (no [edge] s2s listener)'}",
        f"mode: {r['mode']} ({r['source']['mode']})",
        f"allow: {', '.join(r['allow']) or '-'} ({r['source']['allow']})",
        f"block: {', '.join(r['block']) or '-'} ({r['source']['block']})",
    ]
    for domain, digest in r["trusted"].items():
        lines.append(f"trusted certificate: {domain} sha256 {digest}")
    streams = r.get("streams") or {}
    if streams:
        out = ", ".join(f"{d} ({s})" for d, s in streams.get("outgoing", {}).items()) or "-"
        lines.append(f"outgoing streams: {out}")
        lines.append(f"incoming streams: {', '.join(streams.get('incoming', [])) or '-'}")
    return "\n".join(lines)


def _show_policy(a: argparse.Namespace, r: Any) -> str:
    def onoff(k: str) -> str:
        return f"{'on' if r[k] else 'off'} ({r['source'][k]})"

    return (
        f"{r['jid']}: outside access {onoff('outside_access')}, "
        f"federation access {onoff('federation_access')}"
    )


def _trusted(a: argparse.Namespace, r: Any) -> str:
    if r["sha256"] is None:
        return f"{r['domain']}: pinned certificate removed"
    return f"{r['domain']}: certificate pinned (sha256 {r['sha256']})"


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], tuple[str, dict[str, Any]]], Any]] = {
    "federation list": (lambda a: ("federation.list", {}), _show_list),
    "federation allow": (
        lambda a: ("federation.allow", {"domain": a.domain, "remove": a.remove}),
        _show_list,
    ),
    "federation block": (
        lambda a: ("federation.block", {"domain": a.domain, "remove": a.remove}),
        _show_list,
    ),
    "federation mode": (lambda a: ("federation.mode", {"mode": a.mode}), _show_list),
    "federation trust": (_trust, _trusted),
    "policy": (_policy, _show_policy),
}
