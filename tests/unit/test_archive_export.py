"""EML export: one RFC 5322 file a conversation, split at 30-minute gaps, read back by `email`."""

from __future__ import annotations

import email
import email.policy
import json
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from standard_edition.archive.export import EmlWriter, jsonl_line, write_eml

MIN = 60 * 1_000_000
T0 = 1_772_000_000 * 1_000_000


def rec(i: int, minute: float, sender: str, to: str, body: str, room: str = "") -> dict[str, Any]:
    return {
        "id": i,
        "ts": T0 + int(minute * MIN),
        "sender": sender,
        "recipient": to,
        "room": room,
        "body": body,
    }


def read(path: Path) -> tuple[email.message.Message, str]:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return msg, msg.get_content().replace("\r\n", "\n")


A, B, C = "alice@example.test", "bob@example.test", "carol@partner.example"
ROOM = "team@conference.example.test"


def test_pairs_and_rooms_each_get_their_files_split_at_thirty_minutes(tmp_path: Path):
    records = [
        rec(1, 0, A, B, "hello bob"),
        rec(2, 1, B, A, "hi alice"),
        rec(3, 2, A, C, "the invoice"),  # another pair, interleaved
        rec(4, 3, A, ROOM, "hello team", room=ROOM),
        rec(5, 3.5, B, ROOM, "hi", room=ROOM),
        rec(6, 30, A, B, "29 minutes later: same conversation"),
        rec(7, 61, B, A, "31 minutes later: a new one"),
    ]
    files = write_eml(records, tmp_path)
    assert len(files) == 4
    bodies = {}
    for f in files:
        msg, text = read(f)
        assert msg["From"] and msg["To"] and msg["Date"] and msg["Subject"]
        assert msg["Message-ID"].startswith("<archive-")
        bodies[int(msg["X-Archive-First-Record"])] = (msg, text)
    ab1 = bodies[1][1]
    assert "hello bob" in ab1 and "hi alice" in ab1 and "29 minutes later" in ab1
    assert "31 minutes later" not in ab1
    assert "31 minutes later" in bodies[7][1]
    assert bodies[3][0]["To"] == C and "the invoice" in bodies[3][1]
    room_msg, room_text = bodies[4]
    assert room_msg["To"] == ROOM and "hello team" in room_text and "hi" in room_text
    assert parsedate_to_datetime(bodies[1][0]["Date"]).timestamp() == T0 / 1e6


def test_non_ascii_long_and_multiline_bodies_survive(tmp_path: Path):
    long = "Grüße, " + "ü" * 300
    files = write_eml([rec(1, 0, A, B, long), rec(2, 1, B, A, "line one\nline two")], tmp_path)
    _, text = read(files[0])
    assert long in text
    assert "line one\n    line two" in text
    raw = files[0].read_bytes()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_writer_keeps_few_files_open(tmp_path: Path):
    w = EmlWriter(tmp_path, max_open=4)
    for i in range(50):
        w.add(rec(i + 1, i * 0.1, f"u{i % 20}@example.test", B, f"m{i}"))
    assert len(w._handles) <= 4
    w.close()
    assert w.written == 20
    assert sum("m" in read(f)[1] for f in tmp_path.glob("*.eml")) == 20


def test_jsonl_is_one_record_a_line():
    line = jsonl_line(rec(1, 0, A, B, "a\nb ü"))
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line)["body"] == "a\nb ü"
