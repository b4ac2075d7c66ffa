"""The archive file: schema, appending a batch to the chain, search, purge and verify.

Plain functions over a sqlite3 connection; the archive's own writer thread calls them (see
service.py), and the benchmark calls them directly. The records table is append-only: triggers
refuse UPDATE, and DELETE outside the retention purge; the chain (chain.py) shows any change
made by someone who went around them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlite_utils

from standard_edition.archive.chain import (
    FIELDS,
    GENESIS,
    day_start,
    prev_for,
    record_hash,
)
from standard_edition.store.database import Migration

COLUMNS = ", ".join(FIELDS)


def _001_records(db: sqlite_utils.Database) -> None:
    # statement by statement: executescript would commit the migration's transaction
    statement = ""
    for line in _SCHEMA_001.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.conn.execute(statement)
            statement = ""


_SCHEMA_001 = (
    """
        CREATE TABLE records (
            id INTEGER PRIMARY KEY,   -- contiguous: the writer assigns last id + 1
            day TEXT NOT NULL,        -- UTC day segment, YYYY-MM-DD
            ts INTEGER NOT NULL,      -- microseconds since the epoch, UTC; never decreases
            kind TEXT NOT NULL,       -- message | policy | purge
            protocol TEXT NOT NULL,
            direction TEXT NOT NULL,
            origin TEXT NOT NULL,
            sender TEXT NOT NULL,
            resource TEXT NOT NULL,
            recipient TEXT NOT NULL,
            room TEXT NOT NULL,
            type TEXT NOT NULL,
            msg_id TEXT NOT NULL,
            body TEXT NOT NULL,
            hash TEXT NOT NULL        -- SHA-256 of the previous hash and this record's fields
        );
        CREATE INDEX records_sender ON records (sender, ts);
        CREATE INDEX records_recipient ON records (recipient, ts);
        CREATE INDEX records_room ON records (room, ts) WHERE room != '';
        CREATE INDEX records_ts ON records (ts);
        CREATE TABLE segments (
            day TEXT PRIMARY KEY,
            first_id INTEGER NOT NULL,
            head_id INTEGER NOT NULL,
            head_hash TEXT NOT NULL,
            count INTEGER NOT NULL
        );
        -- a row here, inside the purge's own transaction, is what lets DELETE through
        CREATE TABLE purge_gate (open INTEGER);
        CREATE VIRTUAL TABLE records_fts USING fts5 (
            body, content = 'records', content_rowid = 'id',
            tokenize = 'unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER records_append_only BEFORE UPDATE ON records
        BEGIN SELECT RAISE(ABORT, 'the archive is append-only'); END;
        CREATE TRIGGER records_purge_only BEFORE DELETE ON records
        WHEN NOT EXISTS (SELECT 1 FROM purge_gate)
        BEGIN SELECT RAISE(ABORT, 'archive records are removed only by the retention purge'); END;
    """
).strip()


MIGRATIONS: list[Migration] = [(1, _001_records)]


def day_of(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%Y-%m-%d")


def iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat(timespec="microseconds")


# -- appending -----------------------------------------------------------------------------------


class Entry(NamedTuple):
    """What the service hands the writer; the writer adds id, day and hash.

    A named tuple rather than a frozen dataclass: the reactor makes one for every archived
    message, and a tuple costs a fraction of a frozen dataclass's field-by-field __init__."""

    ts: int
    kind: str
    sender: str
    recipient: str
    body: str
    protocol: str = ""
    direction: str = "local"
    origin: str = "internal"
    resource: str = ""
    room: str = ""
    type: str = ""
    msg_id: str = ""


@dataclass(frozen=True, slots=True)
class ChainState:
    """The chain's end, as the writer thread knows it after the last commit."""

    last_id: int = 0
    last_day: str | None = None
    last_hash: str = GENESIS
    last_ts: int = 0


@dataclass(frozen=True, slots=True)
class Appended:
    state: ChainState
    messages: int  # records of kind "message" among those appended
    closed_days: list[tuple[str, int, str]]  # (day, records, head hash) of days that ended


# WAL frames between automatic checkpoints on the writer's connection (SQLite's default: 1000).
# Each message dirties random leaf pages of the sender and recipient indexes and the FTS5
# segments; checkpointing rarely copies each such page to the file once for many batches
# instead of once every few, which more than halves the writer's system time per message.
# The WAL grows to about this many pages (4 KiB each) between checkpoints.
WRITER_AUTOCHECKPOINT = 16_000
# KiB of page cache on the writer's connection (SQLite's default: 2,000). Appends land on the
# right-hand leaves of the sender, recipient and time indexes, one per active address: with
# the default cache they are read back from the file for most batches; this keeps the hot
# leaves of a few thousand active addresses (and the FTS5 structure) in memory.
WRITER_CACHE_KIB = 32_768


def tune_writer(conn: sqlite3.Connection) -> None:
    """Settings for the connection that appends (the server's writer thread, the benchmark)."""
    conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT}")
    conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")


def load_state(conn: sqlite3.Connection) -> ChainState:
    row = conn.execute("SELECT id, day, hash, ts FROM records ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return ChainState()
    return ChainState(row[0], row[1], row[2], row[3])


def append(conn: sqlite3.Connection, state: ChainState, entries: Sequence[Entry]) -> Appended:
    """Add entries at the end of the chain; the caller owns the transaction.

    Runs on the writer thread for every message: kept lean (the day is recomputed only when
    a record passes the current day's end)."""
    rows: list[tuple[Any, ...]] = []
    segs: dict[str, list[Any]] = {}  # day -> [first_id, head_id, head_hash, count]
    closed: list[str] = []
    last_id, last_day, last_hash, last_ts = state.last_id, state.last_day, state.last_hash, 0
    last_ts = state.last_ts
    day_end = -1  # µs at which last_day ends; -1: not known yet
    messages = 0
    for e in entries:
        ts = e.ts if e.ts > last_ts else last_ts  # the chain's order is time order, always
        if ts >= day_end or last_day is None:
            day = day_of(ts)
            day_end = _day_end(ts)
        else:
            day = last_day
        if last_day is not None and day != last_day:
            closed.append(last_day)
        rid = last_id + 1
        values = (
            rid,
            day,
            ts,
            e.kind,
            e.protocol,
            e.direction,
            e.origin,
            e.sender,
            e.resource,
            e.recipient,
            e.room,
            e.type,
            e.msg_id,
            e.body,
        )
        h = record_hash(last_hash if day == last_day else day_start(day, last_hash), values)
        rows.append((*values, h))
        seg = segs.get(day)
        if seg is None:
            segs[day] = [rid, rid, h, 1]
        else:
            seg[1], seg[2], seg[3] = rid, h, seg[3] + 1
        if e.kind == "message":
            messages += 1
        last_id, last_day, last_hash, last_ts = rid, day, h, ts
    conn.executemany(_INSERT, rows)
    conn.executemany(
        "INSERT INTO records_fts (rowid, body) VALUES (?, ?)", [(r[0], r[13]) for r in rows]
    )
    conn.executemany(
        "INSERT INTO segments (day, first_id, head_id, head_hash, count) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (day) DO UPDATE SET head_id = excluded.head_id, "
        "head_hash = excluded.head_hash, count = count + excluded.count",
        [(d, *s) for d, s in segs.items()],
    )
    closed_days = []
    for d in closed:
        row = conn.execute("SELECT count, head_hash FROM segments WHERE day = ?", (d,)).fetchone()
        if row is not None:
            closed_days.append((d, row[0], row[1]))
    return Appended(ChainState(last_id, last_day, last_hash, last_ts), messages, closed_days)


_INSERT = f"INSERT INTO records ({COLUMNS}, hash) VALUES ({', '.join('?' * (len(FIELDS) + 1))})"
DAY_US = 86_400_000_000


def _day_end(ts_us: int) -> int:
    return (ts_us // DAY_US + 1) * DAY_US


# -- search --------------------------------------------------------------------------------------


class QueryError(ValueError):
    """A search the archive cannot run (e.g. bad FTS5 syntax); str() is one line."""


@dataclass(frozen=True, slots=True)
class Query:
    user: str | None = None  # bare address: sent or received by
    peer: str | None = None  # the other party: a bare address, or *@domain
    room: str | None = None
    since: int | None = None  # µs, inclusive
    until: int | None = None  # µs, exclusive
    text: str | None = None  # FTS5 query
    protocol: str | None = None
    origins: tuple[str, ...] = ()  # internal | remote | federated; empty: any
    after: int = 0  # page cursor: records with a larger id
    limit: int = 50
    kinds: tuple[str, ...] = ("message",)


def _party(column: str, pattern: str) -> tuple[str, list[Any]]:
    if pattern.startswith("*@"):
        domain = pattern[2:].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"{column} LIKE ? ESCAPE '\\'", [f"%@{domain}"]
    return f"{column} = ?", [pattern]


def _where(q: Query) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if q.kinds:
        where.append(f"r.kind IN ({', '.join('?' * len(q.kinds))})")
        args += q.kinds
    if q.user is not None and q.peer is not None:
        p1, a1 = _party("r.recipient", q.peer)
        p2, a2 = _party("r.sender", q.peer)
        where.append(f"((r.sender = ? AND {p1}) OR (r.recipient = ? AND {p2}))")
        args += [q.user, *a1, q.user, *a2]
    elif q.user is not None:
        where.append("(r.sender = ? OR r.recipient = ?)")
        args += [q.user, q.user]
    elif q.peer is not None:
        p1, a1 = _party("r.recipient", q.peer)
        p2, a2 = _party("r.sender", q.peer)
        where.append(f"({p1} OR {p2})")
        args += [*a1, *a2]
    if q.room is not None:
        where.append("r.room = ?")
        args.append(q.room)
    if q.since is not None:
        where.append("r.ts >= ?")
        args.append(q.since)
    if q.until is not None:
        where.append("r.ts < ?")
        args.append(q.until)
    if q.protocol is not None:
        where.append("r.protocol = ?")
        args.append(q.protocol)
    if q.origins:
        where.append(f"r.origin IN ({', '.join('?' * len(q.origins))})")
        args += q.origins
    return where, args


def search(conn: sqlite3.Connection, q: Query) -> list[dict[str, Any]]:
    """One page of matching records, oldest first, after the cursor q.after."""
    where, args = _where(q)
    select = f"SELECT {', '.join('r.' + f for f in FIELDS)} FROM records r"
    if q.text:
        sql = (
            f"{select} JOIN records_fts f ON f.rowid = r.id "
            f"WHERE records_fts MATCH ? AND f.rowid > ? {''.join(' AND ' + w for w in where)} "
            "ORDER BY f.rowid LIMIT ?"
        )
        params = [q.text, q.after, *args, q.limit]
    else:
        sql = f"{select} WHERE r.id > ? {''.join(' AND ' + w for w in where)} ORDER BY r.id LIMIT ?"
        params = [q.after, *args, q.limit]
    try:
        rows = conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as e:
        if q.text and "locked" not in str(e) and "busy" not in str(e):
            raise QueryError(f"--text {q.text!r}: {e}") from None
        raise
    return [as_result(row) for row in rows]


def count(conn: sqlite3.Connection, q: Query) -> int:
    where, args = _where(q)
    if q.text:
        sql = (
            "SELECT COUNT(*) FROM records r JOIN records_fts f ON f.rowid = r.id "
            f"WHERE records_fts MATCH ? {''.join(' AND ' + w for w in where)}"
        )
        params = [q.text, *args]
    else:
        sql = f"SELECT COUNT(*) FROM records r WHERE 1 {''.join(' AND ' + w for w in where)}"
        params = args
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    except sqlite3.OperationalError as e:
        raise QueryError(f"--text {q.text!r}: {e}") from None


def as_result(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(FIELDS, row, strict=True))
    out["time"] = iso(out["ts"])
    return out


# -- purge ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Purged:
    removed: int
    first_kept: int
    appended: Appended | None  # the purge's own record, None when nothing was removed


def purge(
    conn: sqlite3.Connection, state: ChainState, cutoff: int, now: int, reason: str
) -> Purged:
    """Remove every record older than cutoff (µs) and record the purge in the chain.

    Runs in the caller's transaction. The purge record carries the anchor the first kept
    record chains from, so the rest still verifies."""
    first = conn.execute("SELECT MIN(id) FROM records").fetchone()[0]
    kept = conn.execute("SELECT MIN(id) FROM records WHERE ts >= ?", (cutoff,)).fetchone()[0]
    if kept is None:
        kept = state.last_id + 1
    if first is None or kept <= first:
        return Purged(0, first or kept, None)
    last_removed = conn.execute(
        "SELECT day, hash FROM records WHERE id = ?", (kept - 1,)
    ).fetchone()
    head_day, head_hash = last_removed
    if kept <= state.last_id:
        kept_day = conn.execute("SELECT day FROM records WHERE id = ?", (kept,)).fetchone()[0]
    else:
        kept_day = day_of(max(now, state.last_ts))  # the purge record itself comes first
    anchor = prev_for(kept_day, head_day, head_hash)
    removed = conn.execute("SELECT COUNT(*) FROM records WHERE id < ?", (kept,)).fetchone()[0]
    conn.execute(
        "INSERT INTO records_fts (records_fts, rowid, body) "
        "SELECT 'delete', id, body FROM records WHERE id < ?",
        (kept,),
    )
    conn.execute("INSERT INTO purge_gate (open) VALUES (1)")
    conn.execute("DELETE FROM records WHERE id < ?", (kept,))
    conn.execute("DELETE FROM purge_gate")
    conn.execute("DELETE FROM segments WHERE head_id < ?", (kept,))
    conn.execute(
        "UPDATE segments SET count = count - (? - first_id), first_id = ? WHERE first_id < ?",
        (kept, kept, kept),
    )
    body = json.dumps(
        {
            "before": iso(cutoff),
            "removed": removed,
            "first_kept": kept,
            "anchor": anchor,
            "reason": reason,
        },
        sort_keys=True,
    )
    appended = append(conn, state, [Entry(now, "purge", "archive", "archive", body)])
    return Purged(removed, kept, appended)


# -- verify --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Verdict:
    records: int = 0
    days: int = 0
    first_id: int | None = None
    last_id: int | None = None
    head: str | None = None
    broken: dict[str, Any] | None = None
    day_heads: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken is None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "days": self.days,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "head": self.head,
            "broken": self.broken,
        }


def verify(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]] | None = None) -> Verdict:
    """Recompute the chain from the first record present to the last; the first break found.

    Run it inside one read transaction so that it sees one snapshot of the file."""
    v = Verdict()

    def broken(rid: int | None, day: str | None, reason: str) -> Verdict:
        v.broken = {"id": rid, "day": day, "reason": reason}
        return v

    segments = {
        r[0]: (r[1], r[2], r[3], r[4])
        for r in conn.execute("SELECT day, first_id, head_id, head_hash, count FROM segments")
    }
    if rows is None:
        rows = conn.execute(f"SELECT {COLUMNS}, hash FROM records ORDER BY id")
    prev_id: int | None = None
    prev_day: str | None = None
    prev_hash = GENESIS
    prev_ts = 0
    day_count = 0
    n_fields = len(FIELDS)
    for row in rows:
        values = tuple(row[:n_fields])
        rid, day, ts = values[0], values[1], values[2]
        stored = row[n_fields]
        if prev_id is None:
            v.first_id = rid
            if rid != 1:
                anchor = _purge_anchor(conn, rid)
                if anchor is None:
                    return broken(
                        rid, day, f"records before {rid} are missing and no purge removed them"
                    )
                prev = anchor
            else:
                prev = day_start(day, GENESIS)
        else:
            if rid != prev_id + 1:
                return broken(rid, day, f"records {prev_id + 1}..{rid - 1} are missing")
            if ts < prev_ts or day < (prev_day or ""):
                return broken(rid, day, "out of order: older than the record before it")
            if day != prev_day:
                bad = _close_day(v, segments, prev_day, day_count, prev_id, prev_hash)
                if bad:
                    return broken(prev_id, prev_day, bad)
                day_count = 0
            prev = prev_for(day, prev_day, prev_hash)
        computed = record_hash(prev, values)
        if computed != stored:
            return broken(rid, day, "its content or place does not match its hash (altered)")
        v.records += 1
        day_count += 1
        prev_id, prev_day, prev_hash, prev_ts = rid, day, stored, ts
    if prev_id is not None:
        bad = _close_day(v, segments, prev_day, day_count, prev_id, prev_hash)
        if bad:
            return broken(prev_id, prev_day, bad)
    v.last_id, v.head, v.days = prev_id, (prev_hash if prev_id else None), len(v.day_heads)
    seen = {d for d, _, _ in v.day_heads}
    for day, (_first, head_id, _h, n) in sorted(segments.items()):
        if day not in seen:
            return broken(head_id, day, f"the {n} record(s) of {day} are missing")
    return v


def _close_day(
    v: Verdict,
    segments: dict[str, tuple[int, int, str, int]],
    day: str | None,
    n: int,
    head_id: int,
    head_hash: str,
) -> str | None:
    assert day is not None
    seg = segments.get(day)
    if seg is None:
        return f"day {day} has no segment entry"
    _first, seg_head_id, seg_head, seg_count = seg
    if seg_head_id != head_id or seg_head != head_hash or seg_count != n:
        return (
            f"day {day} ends at record {head_id} with {n} record(s); its segment says "
            f"{seg_head_id} with {seg_count}: records at its end are missing"
        )
    v.day_heads.append((day, n, head_hash))
    return None


def _purge_anchor(conn: sqlite3.Connection, first_id: int) -> str | None:
    for (body,) in conn.execute("SELECT body FROM records WHERE kind = 'purge' ORDER BY id DESC"):
        try:
            info = json.loads(body)
        except ValueError:
            continue
        if isinstance(info, dict) and info.get("first_kept") == first_id:
            anchor = info.get("anchor")
            return anchor if isinstance(anchor, str) else None
    return None


def stats(conn: sqlite3.Connection) -> dict[str, Any]:
    row = conn.execute("SELECT COUNT(*), MIN(ts), MAX(ts) FROM records").fetchone()
    return {
        "records": row[0],
        "oldest": iso(row[1]) if row[1] is not None else None,
        "newest": iso(row[2]) if row[2] is not None else None,
    }
