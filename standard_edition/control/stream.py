"""Live events on a control connection: the "subscribe" part of the control protocol.

A client subscribes on its connection and from then on also receives event lines, between the
answers to whatever else it asks on that connection:

    {"v": 1, "id": 3, "cmd": "subscribe", "args": {"topics": ["sessions", "log"], "level": "warn"}}
    {"v": 1, "id": 3, "ok": true, "result": {"topics": [...], "level": "warn", "max_queue": n,
                                             "log_last": seq}}
    {"v": 1, "sub": 3, "event": "sessions", "time": 1767000000.25, "data": {...}}
    {"v": 1, "id": 4, "cmd": "unsubscribe"}      -> {"v": 1, "id": 4, "ok": true, "result": {...}}

"sub" is the id of the subscribe request; subscribing again replaces the connection's
subscription. Topics and their data: core/events.py. "level" filters the log topic (that level
or worse). log_last is the newest log line's seq when the subscription began: a client that
backfills with log.tail skips the lines it already has by seq.

A subscriber never stalls the server: while its connection's send buffer is full, its events
wait in a queue of at most MAX_QUEUE; one more and the subscriber is dropped (its connection
closed, the server's log says so). A client that is dropped resubscribes and reads the state it
shows afresh.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from standard_edition.core.events import TOPICS, Event, EventBus
from standard_edition.core.logring import LEVELS, level_rank

MAX_QUEUE = 1000  # events kept for one subscriber whose connection does not drain
VERSION = 1


class StreamError(Exception):
    """A subscribe request that cannot be served: code and one-line message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StreamStats:
    """What the server's subscribers cost now, for "subscribers" and the tests."""

    def __init__(self) -> None:
        self.live: set[Subscription] = set()
        self.dropped = 0

    def describe(self) -> dict[str, Any]:
        return {
            "subscribers": [s.describe() for s in sorted(self.live, key=lambda s: s.started)],
            "queued": sum(len(s.queue) for s in self.live),
            "dropped": self.dropped,
            "max_queue": MAX_QUEUE,
        }


def check_args(args: dict[str, Any]) -> tuple[frozenset[str], str]:
    """The topics and log level a subscribe request asks for; StreamError when they are wrong."""
    unknown = set(args) - {"topics", "level"}
    if unknown:
        raise StreamError("bad-request", f"subscribe: unexpected argument {sorted(unknown)[0]!r}")
    topics = args.get("topics", list(TOPICS))
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics) or not topics:
        raise StreamError("bad-request", "subscribe: topics must be a non-empty list of names")
    wrong = [t for t in topics if t not in TOPICS]
    if wrong:
        raise StreamError(
            "invalid", f"subscribe: unknown topic {wrong[0]!r}; one of: {', '.join(TOPICS)}"
        )
    level = args.get("level", "info")
    if level not in LEVELS[1:]:
        raise StreamError("invalid", f"subscribe: level must be one of {', '.join(LEVELS[1:])}")
    return frozenset(topics), level


@implementer(IPushProducer)
class Subscription:
    """One connection's subscription: events in, lines written while the connection drains.

    write: sends one line (the transport's write); overflow: called once when the queue is full
    (the protocol closes the connection). The transport pauses and resumes this producer as its
    send buffer fills and empties.
    """

    def __init__(
        self,
        bus: EventBus,
        sid: Any,
        topics: frozenset[str],
        level: str,
        write: Callable[[bytes], None],
        overflow: Callable[[Subscription], None],
        stats: StreamStats,
        who: str = "",
    ) -> None:
        self.sid = sid
        self.topics = topics
        self.level = level
        self.min_rank = level_rank(level)
        self.who = who
        self.queue: deque[bytes] = deque()
        self.paused = False
        self.sent = 0
        self.started = time.time()
        self._write = write
        self._overflow = overflow
        self._stats = stats
        self._unsubscribe: Callable[[], None] | None = bus.subscribe(topics, self._event)
        stats.live.add(self)

    def describe(self) -> dict[str, Any]:
        return {
            "topics": sorted(self.topics),
            "level": self.level,
            "queued": len(self.queue),
            "sent": self.sent,
            "since": int(self.started),
            "who": self.who.strip(" ()"),
        }

    def _event(self, event: Event) -> None:
        if event.topic == "log" and level_rank(str(event.data.get("level"))) < self.min_rank:
            return
        line = encode(self.sid, event)
        if not self.paused and not self.queue:
            self._send(line)
            return
        if len(self.queue) >= MAX_QUEUE:
            self._stats.dropped += 1
            self.cancel()
            self._overflow(self)
            return
        self.queue.append(line)

    def _send(self, line: bytes) -> None:
        self.sent += 1
        self._write(line)  # may pause us at once, when the send buffer fills

    def cancel(self) -> None:
        """No more events; what waits in the queue is let go."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.queue.clear()
        self._stats.live.discard(self)

    @property
    def active(self) -> bool:
        return self._unsubscribe is not None

    # -- IPushProducer: the transport's flow control --------------------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self.queue and not self.paused and self.active:
            self._send(self.queue.popleft())

    def stopProducing(self) -> None:
        self.cancel()


def encode(sid: Any, event: Event) -> bytes:
    line = {
        "v": VERSION,
        "sub": sid,
        "event": event.topic,
        "time": round(event.time, 3),
        "data": event.data,
    }
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
