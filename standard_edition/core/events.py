"""The core's live events, for whoever wants them (the control socket's subscribers).

A small in-process bus: the core publishes (topic, data) on the reactor thread, and each
subscriber's callback is called at once with an Event. The bus knows nothing of sockets or
buffers: a subscriber that cannot keep up must bound what it keeps itself (control/stream.py
does). Publishers ask `wants(topic)` first so that nobody pays for an event nobody reads.

Topics and what their data holds:

    sessions   {"change": "login" | "logout", "jid", "protocol", "origin", "address", "since",
                "tls", ...}: an endpoint came or went (core/sessions.py)
    presence   {"jid", "availability": {"code", "band", "label", "activity"}, "note",
               "oof_note", "source"}: a user's aggregated presence changed (presence/service.py)
    log        {"seq", "time", "level", "namespace", "text"}: a line the server logged
               (core/logring.py)
    rooms      {"change": "created" | "destroyed" | "joined" | "left" | "renamed" |
               "configured", "room", "name", "subject", "persistent", "members_only", "count"}:
               a conference room opened, went away, was reconfigured, or an occupant came or
               went (count: occupants after the change); joined, left and renamed add the
               occupant's "nick", "jid" and "role", renamed also "old_nick"
               (conference/service.py). Never per room message.
    counters   {"uptime", "counters", "sessions", "pep", "messages_per_min"}: every
               COUNTER_PERIOD seconds while someone listens (CounterFeed)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

TOPICS = ("sessions", "presence", "log", "rooms", "counters")
COUNTER_PERIOD = 2.0  # seconds between two counters events
RATE_WINDOW = 60.0  # messages/min is measured over this many seconds

log = Logger(namespace="se.events")


@dataclass(frozen=True, slots=True)
class Event:
    topic: str
    data: Mapping[str, Any]  # JSON-able
    time: float


Callback = Callable[[Event], None]


class EventBus:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._next = 0
        self._subscribers: dict[int, tuple[frozenset[str], Callback]] = {}
        self._counts: dict[str, int] = dict.fromkeys(TOPICS, 0)

    def subscribe(self, topics: Collection[str], callback: Callback) -> Callable[[], None]:
        """Call callback with every event of these topics; returns the way to stop."""
        unknown = set(topics) - set(TOPICS)
        if unknown:
            raise ValueError(f"unknown topic {sorted(unknown)[0]!r}")
        self._next += 1
        key = self._next
        chosen = frozenset(topics)
        self._subscribers[key] = (chosen, callback)
        for t in chosen:
            self._counts[t] += 1

        return lambda: self._remove(key)

    def wants(self, topic: str) -> bool:
        """Whether anyone listens to topic (cheap; safe to ask from any thread)."""
        return self._counts.get(topic, 0) > 0

    def publish(self, topic: str, data: Mapping[str, Any]) -> None:
        """Hand the event to every subscriber of its topic (reactor thread only)."""
        if not self.wants(topic):
            return
        event = Event(topic, data, self._clock())
        for key, (topics, callback) in list(self._subscribers.items()):
            if topic not in topics:
                continue
            try:
                callback(event)
            except Exception:
                # one subscriber's bug must not cost the publisher or the others; it is let go,
                # or the line logged here, itself an event, would fail it again and again
                self._remove(key)
                log.failure("event subscriber failed on a {topic} event; dropped", topic=topic)

    def _remove(self, key: int) -> None:
        entry = self._subscribers.pop(key, None)
        if entry is not None:
            for t in entry[0]:
                self._counts[t] -= 1


class CounterFeed:
    """Publishes the server's counters every COUNTER_PERIOD seconds while someone listens.

    read: () -> {"uptime", "counters", "sessions", "pep"}; messages_per_min is added here from
    the "messages" counter over the last RATE_WINDOW seconds.
    """

    def __init__(
        self,
        reactor: Any,
        bus: EventBus,
        read: Callable[[], dict[str, Any]],
        period: float = COUNTER_PERIOD,
    ) -> None:
        self.bus = bus
        self._read = read
        self._period = period
        self._clock = reactor.seconds
        self._samples: deque[tuple[float, int]] = deque()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(self._period, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        now = self._clock()
        data = self._read()
        messages = int(data.get("counters", {}).get("messages", 0))
        self._samples.append((now, messages))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()
        if not self.bus.wants("counters"):
            return
        t0, m0 = self._samples[0]
        rate = (messages - m0) * 60.0 / (now - t0) if now > t0 else 0.0
        self.bus.publish("counters", {**data, "messages_per_min": round(rate, 1)})
