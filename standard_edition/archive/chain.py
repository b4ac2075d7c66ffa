"""The tamper-evidence chain: each record is hashed with the hash before it (SHA-256).

Records are grouped in UTC day segments. The first record of a day chains from a day-start
value derived from the previous day's head, so the chain runs unbroken from the first record
to the last, and a retention purge that cuts a prefix leaves a rest that still verifies from
the anchor recorded by the purge.
"""

from __future__ import annotations

import hashlib
from typing import Any

from standard_edition import flatjson

GENESIS = "0" * 64

# the columns a record's hash covers, in this order; `hash` itself is not among them.
# kind: message | policy | purge (the archive's own events); ts: µs since the epoch, UTC, never
# decreasing; day: its UTC day (the segment); direction: local | in | out; origin: internal |
# remote | federated; sender/recipient: bare addresses (recipient: the room for room lines)
FIELDS = (
    "id",
    "day",
    "ts",
    "kind",
    "protocol",
    "direction",
    "origin",
    "sender",
    "resource",
    "recipient",
    "room",
    "type",
    "msg_id",
    "body",
)


# built once: the writer hashes every record while holding the GIL (flatjson says why)
_ENCODE = flatjson.encoder(ensure_ascii=False, compact=True)


def canonical(values: tuple[Any, ...]) -> bytes:
    """The bytes a record's hash covers: its fields as a compact JSON array."""
    return _ENCODE(values).encode("utf-8")


def record_hash(prev: str, values: tuple[Any, ...]) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + canonical(values)).hexdigest()


def day_start(day: str, previous_head: str) -> str:
    """What the first record of `day` chains from: the previous day's head, bound to the day."""
    return hashlib.sha256(f"se-archive-day|{day}|{previous_head}".encode()).hexdigest()


def prev_for(day: str, last_day: str | None, last_hash: str) -> str:
    """The value a record of `day` chains from, after a record of last_day with last_hash."""
    return last_hash if day == last_day else day_start(day, last_hash)
