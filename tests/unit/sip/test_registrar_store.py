"""The registrar's bindings reach the store in batches: one transaction per FLUSH_DELAY, the
last change of each binding only, and everything waiting at stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlite_utils
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from standard_edition.sip.message import Headers, Request
from standard_edition.sip.registrar import FLUSH_DELAY, Registrar
from standard_edition.store.migrations import _003_sip_bindings, _009_sip_binding_origin


class Store:
    """Runs each job at once on an in-memory database, counting transactions."""

    def __init__(self) -> None:
        self.db = sqlite_utils.Database(memory=True)
        _003_sip_bindings(self.db)
        _009_sip_binding_origin(self.db)
        self.transactions = 0

    def run(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        self.transactions += 1
        with self.db.conn:
            return succeed(fn(self.db, *args))

    def rows(self) -> dict[str, float]:
        return {r["contact"]: r["expires_at"] for r in self.db["sip_bindings"].rows}


def register(user: str, contact: str, expires: int, cseq: int, call_id: str = "c1") -> Request:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK" + f"{user}{cseq}"),
            ("From", f"<sip:{user}@example.test>;tag=1"),
            ("To", f"<sip:{user}@example.test>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} REGISTER"),
            ("Contact", f"<{contact}>;expires={expires}"),
        ]
    )
    return Request("REGISTER", "sip:example.test", headers, b"")


def registrar() -> tuple[Registrar, Store, Clock]:
    clock, store = Clock(), Store()
    clock.advance(1_000_000)
    r = Registrar(clock, store, lambda b: None, lambda b: None, clock=clock.seconds)  # type: ignore[arg-type]
    return r, store, clock


def test_registrations_are_written_together_after_the_batch_window() -> None:
    r, store, clock = registrar()
    for i in range(20):
        assert (
            r.register(register(f"u{i}", f"sip:u{i}@10.0.0.1", 600, 1), f"u{i}", "udp", None).status
            == 200
        )
    assert store.transactions == 0  # answered at once, written a moment later
    clock.advance(FLUSH_DELAY)
    assert store.transactions == 1
    assert len(store.rows()) == 20


def test_only_the_last_change_of_a_binding_is_written() -> None:
    r, store, clock = registrar()
    r.register(register("carol", "sip:carol@10.0.0.1", 600, 1), "carol", "udp", None)
    r.register(register("carol", "sip:carol@10.0.0.2", 600, 2), "carol", "udp", None)
    r.register(register("carol", "sip:carol@10.0.0.1", 0, 3), "carol", "udp", None)  # gone
    clock.advance(FLUSH_DELAY)
    assert store.transactions == 1
    assert list(store.rows()) == ["sip:carol@10.0.0.2"]
    # removed in a later batch, after being stored in an earlier one
    r.register(register("carol", "sip:carol@10.0.0.2", 0, 4), "carol", "udp", None)
    clock.advance(FLUSH_DELAY)
    assert store.rows() == {}


def test_stop_writes_what_waits_and_keeps_the_bindings() -> None:
    r, store, clock = registrar()
    r.register(register("carol", "sip:carol@10.0.0.1", 600, 1), "carol", "udp", None)
    done: list[object] = []
    r.stop().addCallback(done.append)
    assert done and store.rows() == {"sip:carol@10.0.0.1": clock.seconds() + 600}
    clock.advance(FLUSH_DELAY)
    assert store.transactions == 1  # the cancelled timer does not write again


def test_a_binding_keeps_its_origin_when_restored() -> None:
    r, store, clock = registrar()
    r.register(register("dave", "sip:dave@192.0.2.7", 600, 1), "dave", "tls", None, "edge")
    r.register(register("erin", "sip:erin@10.0.0.1", 600, 1), "erin", "udp", None)
    r.stop()
    bound: list[Any] = []
    again = Registrar(clock, store, bound.append, lambda b: None, clock=clock.seconds)  # type: ignore[arg-type]
    again.load()
    assert {b.username: b.origin for b in bound} == {"dave": "edge", "erin": "internal"}
    # registered again from the LAN, the same contact is an internal one from then on
    again.register(register("dave", "sip:dave@192.0.2.7", 600, 2), "dave", "tcp", None)
    (b,) = again.bindings("dave")
    assert b.origin == "internal"
    again.stop()
    assert {r["username"]: r["origin"] for r in store.db["sip_bindings"].rows} == {
        "dave": "internal",
        "erin": "internal",
    }
