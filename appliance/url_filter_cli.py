"""`se-ctl im url-filter`: show and change the IM URL filter.

    se-ctl im url-filter                      show it (--json: as JSON)
    se-ctl im url-filter mode off|warn|block
    se-ctl im url-filter scope domains|all
    se-ctl im url-filter prefix TEXT          ('' for none)
    se-ctl im url-filter add DOMAIN...        links to DOMAIN and its subdomains are flagged
    se-ctl im url-filter remove DOMAIN...

Each change is stored by the server, in force for the next message and winning over
config.toml; `se-ctl config reset im.url_filter.mode` (.scope, .domains, .prefix) returns to it.
A command line that does not fit is a usage error (exit 2); a value the server refuses, such as
a malformed domain, exits 1.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from appliance.usage import UsageError

MODES = ("off", "warn", "block")
SCOPES = ("domains", "all")
ACTIONS = ("show", "mode", "scope", "prefix", "add", "remove")
EXAMPLES = {
    "im url-filter": "se-ctl im url-filter mode block\n"
    "  se-ctl im url-filter add evil.example phish.example\n"
    "  se-ctl im url-filter scope all\n"
    "  se-ctl im url-filter mode warn && se-ctl im url-filter prefix '[Careful: links]'\n"
    "  se-ctl im url-filter --json",
}


def add_parser(ims: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    p = leaf(
        ims,
        "url-filter",
        "im url-filter",
        "IM URL filtering: show it, or set its mode (off, warn, block), scope (domains, all), "
        "warning prefix and domain list",
    )
    p.add_argument("action", nargs="?", default="show", metavar="ACTION", help=", ".join(ACTIONS))
    p.add_argument("values", nargs="*", metavar="VALUE", help="what the action sets")


def request(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The control request for the command line (UsageError when it does not fit)."""
    action, values = a.action, list(a.values)
    where = "se-ctl im url-filter"
    if action not in ACTIONS:
        raise UsageError(f"{where}: unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if action == "show":
        if values:
            raise UsageError(f"{where}: show takes no values")
        return "im.url.filter.show", {}
    if action in ("mode", "scope"):
        choices = MODES if action == "mode" else SCOPES
        if len(values) != 1 or values[0] not in choices:
            raise UsageError(f"{where} {action}: give one of {', '.join(choices)}")
        return "im.url.filter.set", {action: values[0]}
    if action == "prefix":
        if len(values) != 1:
            raise UsageError(
                f"{where} prefix: give the text as one argument (quote it; '' for none)"
            )
        return "im.url.filter.set", {"prefix": values[0]}
    if not values:
        raise UsageError(f"{where} {action}: give one or more domains")
    return "im.url.filter.set", {action: values}


def show(a: argparse.Namespace, r: Any) -> str:
    src = r.get("source", {})
    domains = ", ".join(r.get("domains", [])) or "none"
    lines = [
        f"IM URL filter: {r['mode']} ({src.get('mode')})",
        f"scope:   {r['scope']} ({src.get('scope')})",
        f"domains: {domains} ({src.get('domains')})",
        f"prefix:  {json.dumps(r['prefix'], ensure_ascii=False)} ({src.get('prefix')})",
    ]
    if a.action != "show":
        lines.append("stored; se-ctl config reset im.url_filter.KEY returns a key to config.toml")
    return "\n".join(lines)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], tuple[str, dict[str, Any]]], Any]] = {
    "im url-filter": (request, show),
}
