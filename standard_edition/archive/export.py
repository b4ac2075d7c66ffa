"""Export formats for archived messages: JSON Lines, and EML (one conversation a file).

Used by se-ctl, which writes the files itself (DESIGN §9). Records arrive oldest first, a page
at a time; both writers keep only what the conversations still open need, so a million-message
export runs in constant memory.

EML: a conversation is a pair of parties or a room; it ends at a gap of GAP seconds or more.
Each file is one RFC 5322 message (From, To, Date, Subject, Message-ID; a text/plain
quoted-printable body with one transcript line a message) that mail tools open.
"""

from __future__ import annotations

import json
import quopri
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime
from pathlib import Path
from typing import Any, BinaryIO

GAP = 30 * 60  # seconds of silence that end a conversation (DESIGN §6)
MAX_OPEN = 64  # conversation files kept open at once
_UNSAFE = re.compile(r"[^A-Za-z0-9@._-]+")


def jsonl_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def conversation_key(record: dict[str, Any]) -> tuple[str, ...]:
    """A room, or the unordered pair of parties."""
    if record.get("room"):
        return ("room", record["room"])
    a, b = sorted((record["sender"], record["recipient"]))
    return ("pair", a, b)


@dataclass(slots=True)
class _Conversation:
    path: Path
    last_ts: int
    records: int


def _header(name: str, value: str) -> bytes:
    if value.isascii():
        return f"{name}: {value}\r\n".encode("ascii")
    return f"{name}: {Header(value, 'utf-8').encode()}\r\n".encode("ascii")


def _when(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us / 1e6, UTC)


def transcript_line(record: dict[str, Any]) -> str:
    """[2026-03-01 10:00:00 UTC] alice@example.test: text (later lines of a body indented);
    a sender from outside is tagged with its origin: erin@partner.example (federated)."""
    stamp = _when(record["ts"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = str(record.get("body", "")).replace("\r\n", "\n").replace("\n", "\n    ")
    origin = record.get("origin") or "internal"
    who = record["sender"] if origin == "internal" else f"{record['sender']} ({origin})"
    return f"[{stamp}] {who}: {body}\n"


def _qp(text: str) -> bytes:
    return quopri.encodestring(text.encode("utf-8")).replace(b"\n", b"\r\n")


class EmlWriter:
    """Writes each conversation of a stream of records (oldest first) to its own .eml file."""

    def __init__(self, out_dir: Path, gap: int = GAP, max_open: int = MAX_OPEN) -> None:
        self.out_dir = out_dir
        self.gap_us = gap * 1_000_000
        self.max_open = max_open
        self.written = 0  # files
        self._open: dict[tuple[str, ...], _Conversation] = {}
        self._handles: OrderedDict[Path, BinaryIO] = OrderedDict()

    def add(self, record: dict[str, Any]) -> None:
        ts = record["ts"]
        key = conversation_key(record)
        conv = self._open.get(key)
        if conv is not None and ts - conv.last_ts >= self.gap_us:
            conv = None  # a gap of GAP or more: a new conversation, a new file
        if conv is None:
            conv = self._start(key, record)
            self._open[key] = conv
        self._handle(conv.path).write(_qp(transcript_line(record)))
        conv.last_ts = ts
        conv.records += 1
        self._forget_ended(ts)

    def _forget_ended(self, now: int) -> None:
        # records come oldest first: a conversation silent for GAP can only start anew
        if len(self._open) < 256:
            return
        for key in [k for k, c in self._open.items() if now - c.last_ts >= self.gap_us]:
            conv = self._open.pop(key)
            handle = self._handles.pop(conv.path, None)
            if handle is not None:
                handle.close()

    def _handle(self, path: Path) -> BinaryIO:
        handle = self._handles.get(path)
        if handle is not None:
            self._handles.move_to_end(path)
            return handle
        while len(self._handles) >= self.max_open:
            _, oldest = self._handles.popitem(last=False)
            oldest.close()
        handle = path.open("ab")
        self._handles[path] = handle
        return handle

    def _start(self, key: tuple[str, ...], record: dict[str, Any]) -> _Conversation:
        when = _when(record["ts"])
        if key[0] == "room":
            parties = [key[1]]
            sender, to = record["sender"], key[1]
            subject = f"Conversation in {key[1]}, {when:%Y-%m-%d %H:%M} UTC"
        else:
            parties = list(key[1:])
            sender = record["sender"]
            to = record["recipient"]
            subject = f"Conversation between {key[1]} and {key[2]}, {when:%Y-%m-%d %H:%M} UTC"
        base = _UNSAFE.sub("_", f"{when:%Y%m%dT%H%M%SZ}_{'_'.join(parties)}")[:180]
        name, n = f"{base}.eml", 1
        while (self.out_dir / name).exists():
            n += 1
            name = f"{base}-{n}.eml"
        path = self.out_dir / name
        domain = sender.rpartition("@")[2] or "localhost"
        head = b"".join(
            [
                _header("From", sender),
                _header("To", to),
                _header("Date", format_datetime(when)),
                _header("Subject", subject),
                _header("Message-ID", f"<archive-{record['id']}@{domain}>"),
                b"MIME-Version: 1.0\r\n",
                b"Content-Type: text/plain; charset=utf-8\r\n",
                b"Content-Transfer-Encoding: quoted-printable\r\n",
                _header("X-Archive-First-Record", str(record["id"])),
                b"\r\n",
            ]
        )
        with path.open("xb") as f:
            f.write(head)
        self.written += 1
        return _Conversation(path, record["ts"], 0)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._open.clear()


def write_eml(records: Iterable[dict[str, Any]], out_dir: Path, gap: int = GAP) -> list[Path]:
    """All records (oldest first) as conversation files in out_dir; the files written."""
    w = EmlWriter(out_dir, gap)
    try:
        for r in records:
            w.add(r)
    finally:
        w.close()
    return sorted(out_dir.glob("*.eml"))
