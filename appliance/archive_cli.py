"""`se-ctl archive policy|search|export|purge|verify`: the compliance officer's commands.

se-ctl writes export files itself, from pages the server streams over the control socket
(DESIGN §9: the server never opens a caller's path).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from appliance.control_client import ControlClient
from appliance.progress import Progress
from standard_edition.archive.export import EmlWriter, jsonl_line

PAGE = 2000  # records a request while exporting
EXAMPLES = {
    "archive policy": "se-ctl archive policy\n"
    "  se-ctl archive policy set --mode users --add alice@example.test\n"
    "  se-ctl archive policy set --mode all --external off --critical on --keep-days 365\n"
    "  se-ctl archive policy reset",
    "archive search": "se-ctl archive search --user alice@example.test --peer '*@partner.example'"
    " --from 2026-03-01 --to 2026-03-15\n  se-ctl archive search --text invoice --json",
    "archive export": "se-ctl archive export --format eml --out march/ --from 2026-03-01"
    " --to 2026-03-15\n  se-ctl archive export --format jsonl --out all.jsonl",
    "archive purge": "se-ctl archive purge --before 2025-01-01",
    "archive verify": "se-ctl archive verify",
}


class ArchiveUsage(Exception):
    """A usage mistake in an archive command; str() is the one line printed."""


def _epilog(name: str) -> str:
    return "examples:\n  " + EXAMPLES[name]


def _switch(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError("on or off")
    return text == "on"


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", help="sent or received by this address")
    p.add_argument("--peer", help="the other party: an address, or *@domain")
    p.add_argument("--room", help="messages in this room")
    p.add_argument(
        "--from",
        dest="since",
        metavar="WHEN",
        help="from this day (YYYY-MM-DD, server time zone) or exact ISO 8601 time",
    )
    p.add_argument(
        "--to", dest="until", metavar="WHEN", help="to this day, inclusive, or exact time"
    )
    p.add_argument("--text", help="words, in SQLite FTS5 query syntax (e.g. 'invoice OR bill')")
    p.add_argument("--protocol", choices=("xmpp", "sip"))
    p.add_argument(
        "--origin",
        choices=("internal", "remote", "edge", "federated", "external"),
        help="how the sender reached the server: internal (LAN), remote (= edge: signed in from"
        " outside), federated (another domain), external (remote or federated)",
    )


def add_parser(commands: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    top = commands.add_parser(
        "archive",
        help="compliance archive: policy, search, export, purge, verify",
        description="The compliance archive (its own file in the data dir, hash-chained).",
        epilog="\n".join(_epilog(n) for n in EXAMPLES),
        formatter_class=fmt,
    )
    sub = top.add_subparsers(dest="archive_command", metavar="ACTION", required=True)

    def leaf(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=_epilog(f"archive {name}"),
            formatter_class=fmt,
        )
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.set_defaults(command=f"archive {name}")
        return p

    pol = leaf("policy", "show or change who is archived (changes are recorded in the archive)")
    pol.add_argument("action", nargs="?", choices=("show", "set", "reset"), default="show")
    pol.add_argument("--mode", choices=("off", "all", "users"))
    pol.add_argument("--users", nargs="*", metavar="JID", help="replace the chosen users")
    pol.add_argument("--add", action="append", metavar="JID", help="add a chosen user")
    pol.add_argument("--remove", action="append", metavar="JID", help="remove a chosen user")
    pol.add_argument("--internal", type=_switch, metavar="on|off", help="conversations inside")
    pol.add_argument("--external", type=_switch, metavar="on|off", help="with other domains")
    pol.add_argument(
        "--critical", type=_switch, metavar="on|off", help="refuse what cannot be archived"
    )
    pol.add_argument("--keep-days", type=int, metavar="N", help="retention in days; 0: forever")
    pol.set_defaults(parser=pol)

    search = leaf("search", "find archived messages (oldest first, a page at a time)")
    _filters(search)
    search.add_argument("--limit", type=int, default=50, help="records a page (default 50)")
    search.add_argument("--after", type=int, default=0, metavar="ID", help="the page after ID")
    search.add_argument("--all", action="store_true", help="every page, not only the first")

    export = leaf("export", "write matching messages to files: JSON Lines or EML")
    _filters(export)
    export.add_argument("--format", choices=("jsonl", "eml"), default="jsonl")
    export.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="jsonl: a file ('-': standard output); eml: a folder (made if missing)",
    )
    export.add_argument(
        "--progress",
        action="store_true",
        help="report records written on stderr even when it is not a terminal",
    )

    purge = leaf("purge", "remove every record older than a day or time (recorded in the chain)")
    purge.add_argument(
        "--before", required=True, metavar="WHEN", help="YYYY-MM-DD (server time zone) or time"
    )

    leaf("verify", "recompute the hash chain; exit 1 and name the first broken record")


# -- running -------------------------------------------------------------------------------------


def _query(a: argparse.Namespace) -> dict[str, Any]:
    keys = ("user", "peer", "room", "since", "until", "text", "protocol", "origin")
    q = {k: getattr(a, k) for k in keys}
    return {k: v for k, v in q.items() if v is not None}


def run(a: argparse.Namespace, client: ControlClient, out: TextIO = sys.stdout) -> int:
    name = a.command.removeprefix("archive ")
    if name == "policy":
        return _policy(a, client, out)
    if name == "search":
        return _search(a, client, out)
    if name == "export":
        return _export(a, client, out)
    if name == "purge":
        r = client.call("archive.purge", before=a.before)
        if a.json:
            print(json.dumps(r, indent=2), file=out)
        else:
            print(f"removed {r['removed']} record(s) older than {r['before']}", file=out)
        return 0
    if name == "verify":
        return _verify(a, client, out)
    raise ArchiveUsage(f"unknown archive command {name!r}")


def _policy(a: argparse.Namespace, client: ControlClient, out: TextIO) -> int:
    changes = {
        k: v
        for k, v in (
            ("mode", a.mode),
            ("users", a.users),
            ("add", a.add),
            ("remove", a.remove),
            ("internal", a.internal),
            ("external", a.external),
            ("critical", a.critical),
            ("keep_days", a.keep_days),
        )
        if v is not None
    }
    if a.action == "set":
        if not changes:
            a.parser.error("policy set needs --mode, --users, --add, --remove, --internal, ...")
        r = client.call("archive.policy.set", **changes)
    elif changes:
        a.parser.error("to change the policy: se-ctl archive policy set --mode ...")
    elif a.action == "reset":
        r = None
        for key in ("mode", "users", "internal", "external", "critical", "keep_days"):
            client.call("config.reset", key=f"archive.{key}")
        r = client.call("archive.policy.show")
    else:
        r = client.call("archive.policy.show")
    if a.json:
        print(json.dumps(r, indent=2, ensure_ascii=False), file=out)
        return 0
    src = r.get("source", {})
    for key in ("mode", "users", "internal", "external", "critical", "keep_days"):
        v = r[key]
        shown = ", ".join(v) or "none" if isinstance(v, list) else json.dumps(v)
        print(f"{key + ':':11} {shown}  ({src.get(key, 'config')})", file=out)
    return 0


def _line(r: dict[str, Any]) -> str:
    where = r["room"] or r["recipient"]
    when = r["time"][:19].replace("T", " ")
    origin = r.get("origin") or "internal"
    tag = "" if origin == "internal" else f" [{origin}]"
    return f"{r['id']:>8}  {when} UTC  {r['sender']}{tag} -> {where}: {r['body']}"


def _search(a: argparse.Namespace, client: ControlClient, out: TextIO) -> int:
    after, pages = a.after, []
    total = None
    while True:
        page = client.call(
            "archive.search", **_query(a), after=after, limit=a.limit, count=after == a.after
        )
        total = page.get("total", total)
        if a.json and not a.all:
            print(json.dumps(page, indent=2, ensure_ascii=False), file=out)
            return 0
        if a.json:
            pages.extend(page["records"])
        else:
            for r in page["records"]:
                print(_line(r), file=out)
        after = page["next"]
        if after is None or not a.all:
            break
    if a.json:
        print(json.dumps({"records": pages, "next": None, "total": total}, indent=2), file=out)
    elif after is not None:
        print(f"-- {total} match(es); next page: --after {after}", file=out)
    elif total == 0:
        print("no archived message matches", file=out)
    return 0


def _export(a: argparse.Namespace, client: ControlClient, out: TextIO) -> int:
    target = Path(a.out)
    jsonl: TextIO | None = None
    eml: EmlWriter | None = None
    try:
        if a.format == "eml":
            target.mkdir(parents=True, exist_ok=True)
            eml = EmlWriter(target)
        elif a.out == "-":
            jsonl = sys.stdout
        else:
            if target.is_dir():
                target = target / "archive.jsonl"
            jsonl = target.open("w", encoding="utf-8")
    except OSError as e:
        raise ArchiveUsage(f"{a.out}: cannot write: {e.strerror}") from None
    started = time.monotonic()
    done, after = 0, 0
    progress: Progress | None = None
    try:
        while True:
            page = client.call(
                "archive.search", **_query(a), after=after, limit=PAGE, count=progress is None
            )
            if progress is None:
                progress = Progress("export", page.get("total"), "records", asked=a.progress)
            for r in page["records"]:
                if eml is not None:
                    eml.add(r)
                else:
                    assert jsonl is not None
                    jsonl.write(jsonl_line(r))
            done += len(page["records"])
            progress.update(done)
            after = page["next"]
            if after is None:
                break
        if progress is not None:
            progress.finish(done)
    except OSError as e:
        raise ArchiveUsage(f"{a.out}: cannot write: {e.strerror or e}") from None
    finally:
        if eml is not None:
            eml.close()
        if jsonl is not None and jsonl is not sys.stdout:
            jsonl.close()
    seconds = time.monotonic() - started
    summary = {
        "records": done,
        "format": a.format,
        "out": str(target),
        "files": eml.written if eml is not None else (0 if a.out == "-" else 1),
        "seconds": round(seconds, 3),
    }
    if a.out == "-":
        return 0
    if a.json:
        print(json.dumps(summary, indent=2), file=out)
    else:
        what = f"{summary['files']} conversation file(s)" if eml is not None else "one file"
        print(f"exported {done} message(s) to {target} ({what}) in {seconds:.1f}s", file=out)
    return 0


def _verify(a: argparse.Namespace, client: ControlClient, out: TextIO) -> int:
    r = client.call("archive.verify")
    if a.json:
        print(json.dumps(r, indent=2), file=out)
    elif r["ok"]:
        span = f"records {r['first_id']}..{r['last_id']}" if r["records"] else "no records"
        print(
            f"archive intact: {r['records']} record(s), {span}, {r['days']} day(s); "
            f"head {r['head']}",
            file=out,
        )
    else:
        b = r["broken"]
        print(
            f"archive BROKEN at record {b['id']} (day {b['day']}): {b['reason']}",
            file=sys.stderr if not a.json else out,
        )
    return 0 if r["ok"] else 1
