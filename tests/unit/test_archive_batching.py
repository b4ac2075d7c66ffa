"""The archive's batches, on a real SQLite file with the writer run in place: record() queues
one record a message, a batch commits once per window, critical-mode senders wait for the
commit and are refused when it fails, and what is stored verifies and reads back as sent."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from standard_edition.archive import store
from standard_edition.archive.chain import canonical
from standard_edition.archive.policy import Policy
from standard_edition.archive.service import BATCH_WINDOW, Archive
from standard_edition.core.jid import parse_jid
from standard_edition.core.model import Message, Undeliverable
from standard_edition.store.database import apply_migrations

T0 = 1_772_000_000.0  # seconds; 2026-02-25 UTC


class NoSettings:
    def has(self, key: str) -> bool:
        return False

    def get(self, key: str, default: Any = None) -> Any:
        return default


class InPlaceWriter:
    """Stands in for the archive's writer thread: runs each job at once on a real file.
    With hold=True a job waits until release() — a write still in progress."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=0")  # a locked file fails the batch at once
        self.db = sqlite_utils.Database(self.conn)
        apply_migrations(self.db, store.MIGRATIONS)
        store.tune_writer(self.conn)
        self.jobs = 0
        self.hold = False
        self._held: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def read(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        self.jobs += 1

        def run() -> Any:
            return fn(self.db, *args)

        if self.hold:
            d: Deferred[Any] = Deferred()
            self._held.append((d, run))
            return d
        try:
            return succeed(run())
        except sqlite3.Error:
            return fail()

    def release(self) -> None:
        held, self._held = self._held, []
        for d, run in held:
            d.callback(run())

    def rows(self) -> list[dict[str, Any]]:
        self.conn.execute("BEGIN")
        try:
            return store.search(self.conn, store.Query(limit=10_000))
        finally:
            self.conn.execute("COMMIT")

    def verify(self) -> store.Verdict:
        self.conn.execute("BEGIN")
        try:
            return store.verify(self.conn)
        finally:
            self.conn.execute("COMMIT")


@pytest.fixture
def make(tmp_path: Path) -> Callable[..., tuple[Archive, InPlaceWriter, Clock]]:
    def make(**policy: Any) -> tuple[Archive, InPlaceWriter, Clock]:
        clock = Clock()
        clock.advance(T0)
        path = tmp_path / "archive.sqlite3"
        archive = Archive(
            clock,
            path,
            "example.test",
            Policy(**{"mode": "all", **policy}),
            NoSettings(),  # type: ignore[arg-type]
            protocol_of=lambda jid: "sip" if jid.resource == "sip" else "xmpp",
        )
        writer = InPlaceWriter(path)
        archive.db = writer  # type: ignore[assignment]
        return archive, writer, clock

    return make


def chat(sender: str, to: str, body: str | None, type: str = "chat", id: str = "") -> Message:
    return Message(parse_jid(sender), parse_jid(to), type, body, id or None)


def test_messages_within_one_window_are_committed_in_one_transaction(make) -> None:
    archive, writer, clock = make()
    for i in range(40):
        assert archive.record(chat("alice@example.test/phone", "bob@example.test", f"m{i}")) is None
    assert writer.jobs == 0 and archive.status()["pending"] == 40
    clock.advance(BATCH_WINDOW)
    assert writer.jobs == 1
    assert [r["body"] for r in writer.rows()] == [f"m{i}" for i in range(40)]
    assert archive.status()["pending"] == 0
    assert (archive.counters["archived"], archive.counters["batches"]) == (40, 1)
    assert archive.last_id == 40 and writer.verify().ok


def test_a_record_holds_the_bare_parties_resource_room_and_route(make) -> None:
    archive, writer, clock = make()
    archive.record(chat("alice@example.test/phone", "bob@example.test/desk", "hi", id="a1"))
    archive.record(
        chat(
            "carol@example.test/sip", "plans@conference.example.test", "room line", type="groupchat"
        )
    )
    archive.record(chat("dan@partner.example/x", "alice@example.test", "from outside"))
    archive.record(chat("alice@example.test/phone", "erin@partner.example", "to outside"))
    # not archived: no body, errors, headlines
    archive.record(chat("alice@example.test/phone", "bob@example.test", None))
    archive.record(chat("alice@example.test/phone", "bob@example.test", "x", type="error"))
    archive.record(chat("alice@example.test/phone", "bob@example.test", "x", type="headline"))
    clock.advance(BATCH_WINDOW)
    got = [
        {
            k: r[k]
            for k in (
                "sender",
                "recipient",
                "resource",
                "room",
                "type",
                "msg_id",
                "protocol",
                "direction",
                "origin",
                "body",
                "ts",
            )
        }
        for r in writer.rows()
    ]
    ts = int(T0 * 1_000_000)
    assert got == [
        {
            "sender": "alice@example.test",
            "recipient": "bob@example.test",
            "resource": "phone",
            "room": "",
            "type": "chat",
            "msg_id": "a1",
            "protocol": "xmpp",
            "direction": "local",
            "origin": "internal",
            "body": "hi",
            "ts": ts,
        },
        {
            "sender": "carol@example.test",
            "recipient": "plans@conference.example.test",
            "resource": "sip",
            "room": "plans@conference.example.test",
            "type": "groupchat",
            "msg_id": "",
            "protocol": "sip",
            "direction": "local",
            "origin": "internal",
            "body": "room line",
            "ts": ts,
        },
        {
            "sender": "dan@partner.example",
            "recipient": "alice@example.test",
            "resource": "x",
            "room": "",
            "type": "chat",
            "msg_id": "",
            "protocol": "xmpp",
            "direction": "in",
            "origin": "federated",
            "body": "from outside",
            "ts": ts,
        },
        {
            "sender": "alice@example.test",
            "recipient": "erin@partner.example",
            "resource": "phone",
            "room": "",
            "type": "chat",
            "msg_id": "",
            "protocol": "xmpp",
            "direction": "out",
            "origin": "federated",
            "body": "to outside",
            "ts": ts,
        },
    ]


def test_policy_off_or_unchosen_users_queue_nothing(make) -> None:
    archive, writer, clock = make(mode="users", users=frozenset({"zoe@example.test"}))
    archive.record(chat("alice@example.test/phone", "bob@example.test", "not chosen"))
    archive.record(chat("alice@example.test/phone", "zoe@example.test", "chosen"))
    archive.policy = Policy(mode="off")
    archive.record(chat("alice@example.test/phone", "zoe@example.test", "archive off"))
    clock.advance(BATCH_WINDOW)
    assert [r["body"] for r in writer.rows()] == ["chosen"]


def test_critical_senders_wait_for_the_commit(make) -> None:
    archive, writer, clock = make(critical=True)
    fired: list[int] = []
    for i in range(3):
        d = archive.record(chat("alice@example.test/phone", "bob@example.test", f"m{i}"))
        assert d is not None
        d.addCallback(lambda _, i=i: fired.append(i))
    assert fired == []
    clock.advance(BATCH_WINDOW)
    assert fired == [0, 1, 2] and len(writer.rows()) == 3


def test_a_failed_batch_refuses_critical_senders_and_the_chain_goes_on(make) -> None:
    archive, writer, clock = make(critical=True)
    archive.record(chat("alice@example.test/phone", "bob@example.test", "first"))
    clock.advance(BATCH_WINDOW)
    lock = sqlite3.connect(str(writer.db.conn.execute("PRAGMA database_list").fetchone()[2]))
    lock.isolation_level = None
    lock.execute("BEGIN IMMEDIATE")  # as a stuck backup would
    errors: list[Any] = []
    for body in ("lost 1", "lost 2"):
        d = archive.record(chat("alice@example.test/phone", "bob@example.test", body))
        assert d is not None
        d.addErrback(lambda f: errors.append(f.value))
    clock.advance(BATCH_WINDOW)
    assert [type(e) for e in errors] == [Undeliverable, Undeliverable]
    assert {e.condition for e in errors} == {"resource-constraint"}
    assert (archive.counters["failed"], archive.counters["refused"]) == (2, 2)
    lock.execute("ROLLBACK")
    lock.close()
    d = archive.record(chat("alice@example.test/phone", "bob@example.test", "after"))
    clock.advance(BATCH_WINDOW)
    assert d is not None and d.called
    assert [r["body"] for r in writer.rows()] == ["first", "after"]
    assert writer.verify().ok and archive.last_id == 2


def test_messages_during_a_write_go_in_the_next_batch_without_a_second_window(make) -> None:
    archive, writer, clock = make()
    writer.hold = True
    archive.record(chat("alice@example.test/phone", "bob@example.test", "first"))
    clock.advance(BATCH_WINDOW)
    assert writer.jobs == 1
    for i in range(25):
        archive.record(chat("bob@example.test/desk", "alice@example.test", f"during {i}"))
    clock.advance(BATCH_WINDOW * 10)
    assert writer.jobs == 1  # one write at a time
    writer.hold = False
    writer.release()
    clock.advance(0)
    assert writer.jobs == 2
    assert len(writer.rows()) == 26 and archive.counters["batches"] == 2
    assert writer.verify().ok


_fields = st.tuples(
    st.integers(min_value=0, max_value=2**62),
    st.text(st.characters(blacklist_categories=("Cs",))),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=300),
)


@given(_fields)
def test_canonical_bytes_are_compact_json_as_verify_recomputes(values: tuple[Any, ...]) -> None:
    # the chain's bytes must never change: verify recomputes them for records years old
    assert canonical(values) == json.dumps(
        values, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
