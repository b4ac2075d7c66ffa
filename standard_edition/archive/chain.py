"""The tamper-evidence chain: each record is hashed with the hash before it (SHA-256).

Records are grouped in UTC day segments. The first record of a day chains from a day-start
value derived from the previous day's head, so the chain runs unbroken from the first record
to the last, and a retention purge that cuts a prefix leaves a rest that still verifies from
the anchor recorded by the purge.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

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


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# the C encoder json.dumps would build for _ENCODER on every call, built once: the writer
# hashes every record while holding the GIL, so this halves the reactor's wait per record.
# No circular-reference markers: a record is a flat tuple of ints and strings.
_C_ENCODE = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None,
        _ENCODER.default,
        json.encoder.encode_basestring,  # type: ignore[attr-defined]
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        False,
        False,
        True,
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)


def canonical(values: tuple[Any, ...]) -> bytes:
    """The bytes a record's hash covers: its fields as a compact JSON array."""
    if _C_ENCODE is None:
        return _ENCODER.encode(values).encode("utf-8")
    return "".join(_C_ENCODE(values, 0)).encode("utf-8")


def record_hash(prev: str, values: tuple[Any, ...]) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + canonical(values)).hexdigest()


def day_start(day: str, previous_head: str) -> str:
    """What the first record of `day` chains from: the previous day's head, bound to the day."""
    return hashlib.sha256(f"se-archive-day|{day}|{previous_head}".encode()).hexdigest()


def prev_for(day: str, last_day: str | None, last_hash: str) -> str:
    """The value a record of `day` chains from, after a record of last_day with last_hash."""
    return last_hash if day == last_day else day_start(day, last_hash)
