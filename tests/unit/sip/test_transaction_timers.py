"""The SIP service's timers, kept by transaction, on a test clock."""

from __future__ import annotations

from collections.abc import Hashable

from twisted.internet.task import Clock

from standard_edition.sip.service import TransactionTimers


def make() -> tuple[Clock, TransactionTimers, list[tuple[Hashable, str]]]:
    clock, fired = Clock(), []
    timers: TransactionTimers

    def fire(key: Hashable, name: str) -> None:
        timers.fired(key, name)
        fired.append((key, name))

    timers = TransactionTimers(clock, fire)
    return clock, timers, fired


def test_a_timer_runs_out_once_and_is_forgotten() -> None:
    clock, timers, fired = make()
    timers.start("t1", "E", 0.5)
    timers.start("t1", "F", 32)
    clock.advance(0.5)
    assert fired == [("t1", "E")] and len(timers) == 1
    timers.start("t1", "E", 1.0)  # retransmission timer doubled
    timers.start("t1", "E", 2.0)  # restarted before it ran: only the last one counts
    clock.advance(2.0)
    assert fired == [("t1", "E"), ("t1", "E")]
    clock.advance(30)
    assert fired[-1] == ("t1", "F") and len(timers) == 0
    assert clock.getDelayedCalls() == []


def test_ending_a_transaction_cancels_its_timers_only() -> None:
    clock, timers, fired = make()
    for i in range(1000):
        timers.start(("s", i), "J", 32)
    timers.start(("s", 7), "G", 0.5)
    timers.end(("s", 7))
    timers.cancel(("s", 8), "J")
    timers.cancel(("s", 8), "J")  # already gone: nothing happens
    timers.cancel("unknown", "K")
    assert len(timers) == 998
    clock.advance(32)
    assert len(fired) == 998 and ("s", 7) not in {k for k, _ in fired}
    assert len(timers) == 0 and clock.getDelayedCalls() == []


def test_stop_cancels_everything() -> None:
    clock, timers, fired = make()
    for i in range(10):
        timers.start(i, "K", 5)
    timers.stop()
    clock.advance(10)
    assert fired == [] and len(timers) == 0 and clock.getDelayedCalls() == []
