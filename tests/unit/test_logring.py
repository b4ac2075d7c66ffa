"""The in-memory ring of recent log lines behind `se-ctl log` and the console."""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure

from standard_edition.core.logring import LogRing


def logger(ring: LogRing) -> Logger:
    return Logger(namespace="se.test", observer=ring)


def test_keeps_the_newest_lines_only():
    ring = LogRing(size=5)
    log = logger(ring)
    for n in range(12):
        log.info("line {n}", n=n)
    kept = ring.tail(100)
    assert [line["text"] for line in kept] == [f"line {n}" for n in range(7, 12)]
    assert [line["seq"] for line in kept] == list(range(8, 13))
    assert kept[0]["namespace"] == "se.test" and kept[0]["level"] == "info"


def test_debug_is_not_kept_and_level_filters():
    ring = LogRing()
    log = logger(ring)
    log.debug("chatter")
    log.info("fine")
    log.warn("careful")
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("it failed", Failure())
    assert [line["text"] for line in ring.tail(10)] == ["fine", "careful", "it failed: boom"]
    assert [line["level"] for line in ring.tail(10, "warn")] == ["warn", "critical"]
    assert [line["level"] for line in ring.tail(10, "error")] == ["critical"]


def test_after_and_limit():
    ring = LogRing()
    log = logger(ring)
    for n in range(6):
        log.info("l{n}", n=n)
    assert [line["text"] for line in ring.tail(2)] == ["l4", "l5"]
    assert [line["text"] for line in ring.tail(100, after=4)] == ["l4", "l5"]
    assert ring.tail(100, after=ring.seq) == []


def test_a_bad_event_does_not_raise():
    ring = LogRing()
    ring({"log_format": "{missing", "log_level": object()})
    ring({"log_format": "{x!r}", "x": object()})  # formats, or is skipped; never raises
    assert len(ring.tail(10)) <= 2
