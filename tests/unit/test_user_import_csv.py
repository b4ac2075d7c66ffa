"""se-ctl's half of `user import`: reading the CSV file and batching its rows."""

from __future__ import annotations

import json

from appliance.import_cli import BATCH_BYTES, BATCH_ROWS, batches, parse
from standard_edition.core.user_import import ALPHABET, generate_password

DOMAIN = "example.test"


def test_header_is_optional_and_detected() -> None:
    rows, failed = parse(b"user,name,password\nalice,Alice,pw1\n", DOMAIN)
    assert rows == [{"line": 2, "user": "alice", "name": "Alice", "password": "pw1"}]
    assert failed == []
    rows, _ = parse(b"alice,Alice\nbob,Bob,\n", DOMAIN)
    assert [(r["line"], r["user"], "password" in r) for r in rows] == [
        (1, "alice", False),
        (2, "bob", False),
    ]


def test_semicolons_and_tabs_when_the_first_line_uses_them() -> None:
    rows, _ = parse("user;name\nanna;Müller, Anna\n".encode(), DOMAIN)
    assert rows == [{"line": 2, "user": "anna", "name": "Müller, Anna"}]
    rows, _ = parse(b"ann\tAnn\n", DOMAIN)
    assert rows == [{"line": 1, "user": "ann", "name": "Ann"}]


def test_bad_lines_are_reported_by_number_and_others_kept() -> None:
    data = (
        b"# staff list\n"
        b"alice,Alice\n"
        b"\n"
        b"one-column\n"
        b"a,b,c,d\n"
        b"\xc3\x28,bad utf-8\n"
        b'"open quote,x\n'
        b"ALICE@Example.Test,Alice again\n"
        b"bob,Bob,secret\r\n"
    )
    rows, failed = parse(data, DOMAIN)
    assert [r["line"] for r in rows] == [2, 9]
    assert rows[1]["password"] == "secret"
    reasons = {f["line"]: f["error"] for f in failed}
    assert sorted(reasons) == [4, 5, 6, 7, 8]
    assert "found 1" in reasons[4] and "found 4" in reasons[5]
    assert "UTF-8" in reasons[6] and "already on line 2" in reasons[8]


def test_batches_stay_under_the_request_limit() -> None:
    rows = [{"line": i, "user": f"user{i}", "name": "N" * 2000} for i in range(1000)]
    sent = list(batches(rows))
    assert [r for b in sent for r in b] == rows
    for b in sent:
        assert len(b) <= BATCH_ROWS
        assert len(json.dumps(b).encode()) <= BATCH_BYTES + 4096


def test_generated_passwords_are_strong_and_distinct() -> None:
    made = {generate_password() for _ in range(200)}
    assert len(made) == 200
    for p in made:
        groups = p.split("-")
        assert len(groups) == 4 and all(len(g) == 5 and set(g) <= set(ALPHABET) for g in groups)
