"""The archive's hash chain on a real SQLite file: append, verify, tamper, purge."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from standard_edition.archive import store
from standard_edition.archive.policy import Policy, PolicyError, checked, origin_of, wanted
from standard_edition.store.database import apply_migrations

DAY = 86_400 * 1_000_000
T0 = 1_772_000_000 * 1_000_000  # 2026-02-25 06:13:20 UTC


def open_archive(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    apply_migrations(sqlite_utils.Database(conn), store.MIGRATIONS)
    return conn


def entry(ts: int, body: str, sender: str = "alice@example.test") -> store.Entry:
    return store.Entry(ts, "message", sender, "bob@example.test", body, protocol="xmpp")


def write(
    conn: sqlite3.Connection, state: store.ChainState, entries: list[store.Entry]
) -> store.ChainState:
    conn.execute("BEGIN IMMEDIATE")
    out = store.append(conn, state, entries)
    conn.execute("COMMIT")
    return out.state


@pytest.fixture
def archive(tmp_path: Path) -> tuple[sqlite3.Connection, store.ChainState]:
    conn = open_archive(tmp_path / "archive.sqlite3")
    state = store.ChainState()
    # three days, a few records each, written in batches of different sizes
    for day in range(3):
        state = write(
            conn, state, [entry(T0 + day * DAY + i * 1000, f"d{day} m{i}") for i in range(4)]
        )
        state = write(conn, state, [entry(T0 + day * DAY + 10_000, f"d{day} last")])
    return conn, state


def as_attacker(conn: sqlite3.Connection, sql: str, *args: object) -> None:
    """What someone with the file can do: drop the triggers, then change rows."""
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f'DROP TRIGGER "{name}"')
    conn.execute(sql, args)


def test_intact_chain_verifies_with_one_segment_a_day(archive):
    conn, state = archive
    v = store.verify(conn)
    assert v.ok, v.broken
    assert (v.records, v.days, v.first_id, v.last_id) == (15, 3, 1, 15)
    assert v.head == state.last_hash
    days = conn.execute("SELECT day, count FROM segments ORDER BY day").fetchall()
    assert [n for _, n in days] == [5, 5, 5]


def test_state_reloaded_from_the_file_continues_the_chain(archive):
    conn, state = archive
    assert store.load_state(conn) == state
    write(conn, store.load_state(conn), [entry(T0 + 3 * DAY, "next day")])
    assert store.verify(conn).ok


def test_update_and_delete_are_refused_by_the_triggers(archive):
    conn, _ = archive
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE records SET body = 'x' WHERE id = 3")
    with pytest.raises(sqlite3.DatabaseError, match="retention purge"):
        conn.execute("DELETE FROM records WHERE id = 3")


def test_altered_body_is_named(archive):
    conn, _ = archive
    as_attacker(conn, "UPDATE records SET body = 'changed' WHERE id = 7")
    v = store.verify(conn)
    assert not v.ok and v.broken is not None
    assert v.broken["id"] == 7 and "altered" in v.broken["reason"]


def test_altered_sender_or_time_is_named(archive):
    conn, _ = archive
    as_attacker(conn, "UPDATE records SET sender = 'mallory@example.test' WHERE id = 2")
    assert store.verify(conn).broken["id"] == 2


def test_deleted_row_in_the_middle_is_found(archive):
    conn, _ = archive
    as_attacker(conn, "DELETE FROM records WHERE id = 8")
    v = store.verify(conn)
    assert v.broken is not None and v.broken["id"] == 9 and "missing" in v.broken["reason"]


def test_deleted_last_rows_are_found_by_the_segment_head(archive):
    conn, _ = archive
    as_attacker(conn, "DELETE FROM records WHERE id >= 14")
    v = store.verify(conn)
    assert v.broken is not None and "missing" in v.broken["reason"]


def test_deleted_first_rows_without_a_purge_are_found(archive):
    conn, _ = archive
    as_attacker(conn, "DELETE FROM records WHERE id <= 5")
    v = store.verify(conn)
    assert v.broken is not None and v.broken["id"] == 6
    assert "no purge" in v.broken["reason"]


def test_reordered_rows_are_found(archive):
    conn, _ = archive
    # swap two records' places (ids), hashes and all
    as_attacker(conn, "UPDATE records SET id = -4 WHERE id = 4")
    as_attacker(conn, "UPDATE records SET id = 4 WHERE id = 3")
    as_attacker(conn, "UPDATE records SET id = 3 WHERE id = -4")
    v = store.verify(conn)
    assert v.broken is not None and v.broken["id"] == 3


def test_purge_removes_exactly_the_older_records_and_the_rest_verifies(archive):
    conn, state = archive
    cutoff = T0 + DAY + 2000  # in the middle of the second day
    conn.execute("BEGIN IMMEDIATE")
    p = store.purge(conn, state, cutoff, T0 + 3 * DAY, "test")
    conn.execute("COMMIT")
    assert p.removed == 5 + 2 and p.first_kept == 8
    left = conn.execute("SELECT MIN(ts), COUNT(*) FROM records WHERE kind = 'message'").fetchone()
    assert left == (T0 + DAY + 2000, 8)
    v = store.verify(conn)
    assert v.ok, v.broken
    assert v.first_id == 8 and v.records == 9  # 8 messages and the purge record
    # the chain goes on after the purge
    state = write(conn, p.appended.state, [entry(T0 + 3 * DAY + 5, "after purge")])
    assert store.verify(conn).ok
    # the FTS index forgot the purged bodies
    assert store.search(conn, store.Query(text='"d0"')) == []
    assert len(store.search(conn, store.Query(text="d2"))) == 5


def test_purge_of_everything_keeps_a_verifiable_chain(archive):
    conn, state = archive
    conn.execute("BEGIN IMMEDIATE")
    p = store.purge(conn, state, T0 + 10 * DAY, T0 + 10 * DAY, "test")
    conn.execute("COMMIT")
    assert p.removed == 15 and p.first_kept == 16
    v = store.verify(conn)
    assert v.ok and v.records == 1
    write(conn, p.appended.state, [entry(T0 + 11 * DAY, "new")])
    assert store.verify(conn).ok


def test_search_by_user_peer_time_and_words(archive):
    conn, _ = archive
    write(
        conn,
        store.load_state(conn),
        [
            store.Entry(
                T0 + 3 * DAY,
                "message",
                "alice@example.test",
                "carol@partner.example",
                "the invoice is late",
                direction="out",
                origin="federated",
            ),
        ],
    )
    found = store.search(conn, store.Query(user="alice@example.test", peer="*@partner.example"))
    assert [r["body"] for r in found] == ["the invoice is late"]
    assert store.search(conn, store.Query(peer="*@partner.example", text="invoice"))[0]["id"] == 16
    day1 = store.search(conn, store.Query(since=T0 + DAY, until=T0 + 2 * DAY, limit=100))
    assert [r["body"] for r in day1] == [f"d1 m{i}" for i in range(4)] + ["d1 last"]
    page = store.search(conn, store.Query(limit=2, after=10))
    assert [r["id"] for r in page] == [11, 12]
    assert store.count(conn, store.Query(user="bob@example.test")) == 15
    with pytest.raises(store.QueryError):
        store.search(conn, store.Query(text='"unbalanced'))


def test_policy_decides_who_is_archived():
    everyone = Policy(mode="all")
    assert wanted(everyone, "a@x.test", "b@x.test", "internal")
    assert not wanted(Policy(mode="off"), "a@x.test", "b@x.test", "internal")
    chosen = Policy(mode="users", users=frozenset({"a@x.test"}))
    assert wanted(chosen, "b@x.test", "a@x.test", "internal")
    assert not wanted(chosen, "b@x.test", "c@x.test", "internal")
    inside_only = checked(everyone, external=False)
    assert wanted(inside_only, "a@x.test", "b@x.test", "internal")
    assert not wanted(inside_only, "a@x.test", "p@partner.example", "federated")
    outside_only = checked(everyone, internal=False)
    assert not wanted(outside_only, "a@x.test", "b@x.test", "internal")
    assert wanted(outside_only, "a@x.test", "p@partner.example", "federated")
    assert origin_of("x.test", "partner.example", "x.test") == "federated"
    with pytest.raises(PolicyError, match=r"archive\.mode"):
        checked(everyone, mode="some")
    with pytest.raises(PolicyError, match=r"archive\.keep_days"):
        checked(everyone, keep_days=-1)
