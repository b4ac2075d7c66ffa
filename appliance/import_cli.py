"""`se-ctl user import FILE.csv`: create many accounts from a CSV file.

se-ctl reads the file itself (DESIGN §9) and sends the rows over the control socket in
batches that stay well under the socket's request limit. Columns, one account a line:

    user,display name[,initial password]

`user` is a user name or user@domain; a missing or empty password gets a strong generated
one, printed once in the output (and in --json) and kept nowhere. A first line such as
`user,name,password` is recognised as a header and skipped; empty lines and lines starting
with `#` are skipped too. Commas separate the columns, or semicolons or tabs when the first
line uses those instead (as spreadsheets in some languages save CSV). A record is one line.

A bad row (not UTF-8, a wrong number of columns, an invalid user name, a user already in the
file or on the server, a password the server refuses) is reported with its line number and
nothing of it is created; the other rows go in. se-ctl exits 1 when any row was refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from typing import Any

from appliance.control_client import ControlClient
from standard_edition.core.jid import InvalidJID, prepare_username

MAX_FILE = 64 * 1024 * 1024
BATCH_ROWS = 200
BATCH_BYTES = 256 * 1024  # the control socket takes requests up to 1 MB
MAX_CELL = 2048
HEADER_USER = {"user", "username", "user name", "user_name", "jid", "account", "login", "address"}
HEADER_NAME = {"name", "display name", "displayname", "display_name", "full name", "fullname"}
EXAMPLE = (
    "se-ctl user import staff.csv\n"
    "  se-ctl user import staff.csv --json > created.json   (generated passwords are in it)"
)


class ImportFileError(Exception):
    """The file as a whole cannot be read; str() is the one line printed."""


def add_parser(users: Any, leaf: Any) -> None:
    p = leaf(
        users,
        "import",
        "user import",
        "create accounts from a CSV file: user, display name, optional initial password",
    )
    p.add_argument("file", metavar="FILE.csv", help="the CSV file ('-': standard input)")


def read_file(name: str) -> bytes:
    try:
        if name == "-":
            data = sys.stdin.buffer.read(MAX_FILE + 1)
        else:
            with open(name, "rb") as f:
                data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise ImportFileError(f"{name}: cannot read: {e.strerror}") from None
    if len(data) > MAX_FILE:
        raise ImportFileError(f"{name}: larger than {MAX_FILE // (1024 * 1024)} MB")
    return data


def parse(data: bytes, domain: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows to send ({line, user, name, password?}) and the lines refused here."""
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    delimiter: str | None = None
    first = True
    for number, raw in _lines(data):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            failed.append({"line": number, "user": None, "error": "not valid UTF-8 text"})
            continue
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if delimiter is None:
            delimiter = (
                max((",", ";", "\t"), key=text.count) if any(d in text for d in ",;\t") else ","
            )
        try:
            cells = next(csv.reader([text], delimiter=delimiter, strict=True))
        except csv.Error as e:
            failed.append({"line": number, "user": None, "error": f"not CSV: {e}"})
            continue
        if first:
            first = False
            if _is_header(cells):
                continue
        user = cells[0].strip() if cells else ""
        if len(cells) not in (2, 3):
            failed.append(
                {
                    "line": number,
                    "user": user or None,
                    "error": f"expected 2 or 3 columns (user, display name, optional password), "
                    f"found {len(cells)}",
                }
            )
            continue
        if any(len(c) > MAX_CELL for c in cells):
            failed.append({"line": number, "user": None, "error": "a column is too long"})
            continue
        key = _account_key(user, domain)
        if key is not None and key in seen:
            failed.append(
                {"line": number, "user": user, "error": f"{user} is already on line {seen[key]}"}
            )
            continue
        if key is not None:
            seen[key] = number
        row: dict[str, Any] = {"line": number, "user": user, "name": cells[1].strip()}
        if len(cells) == 3 and cells[2] != "":
            row["password"] = cells[2]
        rows.append(row)
    return rows, failed


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    data = data.removeprefix(b"\xef\xbb\xbf")  # the byte-order mark spreadsheets write
    for i, raw in enumerate(data.split(b"\n"), start=1):
        yield i, raw.removesuffix(b"\r")


def _is_header(cells: list[str]) -> bool:
    words = [c.strip().casefold() for c in cells]
    return len(words) >= 2 and words[0] in HEADER_USER and words[1] in HEADER_NAME


def _account_key(user: str, domain: str) -> str | None:
    """The account a cell names, prepared as the server prepares it (None: let it refuse)."""
    local, _, other = user.partition("@")
    try:
        return f"{prepare_username(local)}@{(other or domain).lower()}"
    except InvalidJID:
        return None


def batches(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        n = len(json.dumps(row, ensure_ascii=False).encode("utf-8")) + 2
        if batch and (len(batch) >= BATCH_ROWS or size + n > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += n
    if batch:
        yield batch


def run(a: argparse.Namespace, client: ControlClient, domain: str) -> int:
    rows, failed = parse(read_file(a.file), domain)
    total = len(rows) + len(failed)
    created: list[dict[str, Any]] = []
    for batch in batches(rows):
        result = client.call("user.import", rows=batch)
        created += result["created"]
        failed += result["failed"]
    created.sort(key=lambda r: r["line"])
    failed.sort(key=lambda r: r["line"])
    if a.json:
        print(json.dumps({"created": created, "failed": failed}, indent=2, ensure_ascii=False))
    else:
        print(human(created, failed, total))
        for f in failed:
            print(f"se-ctl: {a.file}:{f['line']}: {f['error']}", file=sys.stderr)
    sys.stdout.flush()
    return 1 if failed else 0


def human(created: list[dict[str, Any]], failed: list[dict[str, Any]], total: int) -> str:
    from appliance.ctl import table  # the same table as `se-ctl user list`

    lines = []
    if created:
        shown = [
            {**r, "password": r.get("password", "(from the file)"), "name": r["name"] or None}
            for r in created
        ]
        cols = [("line", "LINE"), ("jid", "JID"), ("name", "NAME"), ("password", "PASSWORD")]
        lines.append(table(shown, cols))
        if any("password" in r for r in created):
            lines.append("generated passwords are shown only now; hand them over safely")
    lines.append(f"{len(created)} of {total} account(s) created, {len(failed)} row(s) refused")
    return "\n".join(lines)
