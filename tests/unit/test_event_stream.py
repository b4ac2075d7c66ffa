"""The event bus and a subscriber's bounded queue, without sockets: events in, lines out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock

from standard_edition.control.stream import (
    MAX_QUEUE,
    StreamError,
    StreamStats,
    Subscription,
    check_args,
)
from standard_edition.core.events import CounterFeed, EventBus


class Wire:
    """Stands for the connection: what was written, and whether the subscriber was dropped."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.dropped: list[Subscription] = []

    def write(self, line: bytes) -> None:
        self.lines.append(json.loads(line))

    def overflow(self, sub: Subscription) -> None:
        self.dropped.append(sub)


def subscribe(bus: EventBus, wire: Wire, topics=("log",), level="info", stats=None):
    return Subscription(
        bus, 7, frozenset(topics), level, wire.write, wire.overflow, stats or StreamStats()
    )


def log(bus: EventBus, seq: int, level: str = "info") -> None:
    bus.publish("log", {"seq": seq, "level": level, "text": f"line {seq}"})


def test_events_are_written_in_order_as_versioned_lines_of_the_subscription():
    bus, wire = EventBus(clock=lambda: 100.0), Wire()
    subscribe(bus, wire, topics=("log", "sessions"))
    log(bus, 1)
    bus.publish("sessions", {"change": "login", "jid": "a@example.test/x"})
    bus.publish("presence", {"jid": "a@example.test"})  # not subscribed
    assert [(e["v"], e["sub"], e["event"]) for e in wire.lines] == [
        (1, 7, "log"),
        (1, 7, "sessions"),
    ]
    assert wire.lines[0]["time"] == 100.0 and wire.lines[1]["data"]["change"] == "login"


def test_log_lines_below_the_level_are_left_out():
    bus, wire = EventBus(), Wire()
    subscribe(bus, wire, level="warn")
    for seq, level in enumerate(("info", "warn", "debug", "error", "critical"), start=1):
        log(bus, seq, level)
    assert [e["data"]["seq"] for e in wire.lines] == [2, 4, 5]


def test_a_paused_subscriber_queues_and_gets_everything_in_order_on_resume():
    bus, wire = EventBus(), Wire()
    sub = subscribe(bus, wire)
    log(bus, 1)
    sub.pauseProducing()
    for seq in range(2, 12):
        log(bus, seq)
    assert len(wire.lines) == 1 and len(sub.queue) == 10
    sub.resumeProducing()
    assert [e["data"]["seq"] for e in wire.lines] == list(range(1, 12))
    assert not sub.queue and not wire.dropped


def test_a_subscriber_that_never_drains_is_dropped_at_the_bound_and_costs_nothing_more():
    bus, wire, stats = EventBus(), Wire(), StreamStats()
    other_wire = Wire()
    sub = subscribe(bus, wire, stats=stats)
    subscribe(bus, other_wire, stats=stats)
    sub.pauseProducing()
    for seq in range(MAX_QUEUE * 3):
        log(bus, seq)
        assert len(sub.queue) <= MAX_QUEUE
    assert wire.dropped == [sub] and stats.dropped == 1
    assert not sub.active and not sub.queue and sub not in stats.live
    assert len(other_wire.lines) == MAX_QUEUE * 3  # the others never noticed
    assert bus.wants("log")  # the other still listens
    assert stats.describe()["queued"] == 0


def test_cancel_unsubscribes_and_the_bus_stops_formatting_for_nobody():
    bus, wire = EventBus(), Wire()
    sub = subscribe(bus, wire, topics=("presence",))
    assert bus.wants("presence") and not bus.wants("log")
    sub.cancel()
    assert not bus.wants("presence")
    bus.publish("presence", {"jid": "a@example.test"})
    assert wire.lines == []


def test_a_failing_subscriber_is_let_go_and_does_not_stop_the_others():
    bus, wire = EventBus(), Wire()
    calls = []

    def broken(event: Any) -> None:
        calls.append(event)
        raise RuntimeError("bug")

    bus.subscribe(["log"], broken)
    subscribe(bus, wire)
    log(bus, 1)
    log(bus, 2)
    assert len(wire.lines) == 2 and len(calls) == 1


@pytest.mark.parametrize(
    "args",
    [{"topics": ["weather"]}, {"topics": []}, {"topics": "log"}, {"level": "loud"}, {"x": 1}],
)
def test_subscribe_arguments_are_checked(args):
    with pytest.raises(StreamError):
        check_args(args)


def test_subscribe_defaults_to_every_topic_at_info():
    topics, level = check_args({})
    assert topics == {"sessions", "presence", "log", "rooms", "counters"} and level == "info"


def test_counters_come_only_while_someone_listens_with_messages_per_minute():
    clock, bus, wire = Clock(), EventBus(), Wire()
    count = {"messages": 0}
    feed = CounterFeed(clock, bus, lambda: {"uptime": 5, "counters": dict(count)}, period=2.0)
    feed.start()
    clock.advance(2)
    sub = subscribe(bus, wire, topics=("counters",))
    for _ in range(5):
        count["messages"] += 10
        clock.advance(2)
    assert len(wire.lines) == 5
    last = wire.lines[-1]["data"]
    assert last["counters"]["messages"] == 50 and last["messages_per_min"] == 300.0
    sub.cancel()
    clock.advance(2)
    assert len(wire.lines) == 5
    feed.stop()
