"""The server's recent log lines, kept in memory for `se-ctl log` and the console.

A twisted.logger observer keeps the last MAX_LINES events at info level and above as short
records; nothing is written anywhere. Events may come from worker threads, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.logger import LogLevel, formatEvent

MAX_LINES = 500
MAX_TEXT = 2000  # characters of one line (a traceback is cut here)
LEVELS = ("debug", "info", "warn", "error", "critical")


def level_rank(name: str) -> int:
    """The position of a level name in LEVELS; ValueError for an unknown name."""
    return LEVELS.index(name)


class LogRing:
    """Call it with each log event (an ILogObserver); tail() returns the kept lines."""

    def __init__(self, size: int = MAX_LINES, min_level: str = "info") -> None:
        self.lines: deque[dict[str, Any]] = deque(maxlen=size)
        self.min_rank = level_rank(min_level)
        self.seq = 0
        self._lock = threading.Lock()
        # set by the server: takes each kept line to the event bus (topic "log"); called on the
        # thread that logged, so it must only hand the line over
        self.publish: Callable[[dict[str, Any]], None] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            level = event.get("log_level", LogLevel.info)
            name = getattr(level, "name", "info")
            if name not in LEVELS or level_rank(name) < self.min_rank:
                return
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text = f"{text}: {failure.getErrorMessage()}" if text else failure.getTraceback()
            line = {
                "time": float(event.get("log_time") or time.time()),
                "level": name,
                "namespace": str(event.get("log_namespace", "")),
                "text": text[:MAX_TEXT],
            }
        except Exception:  # an observer must never fail the code that logged
            return
        with self._lock:
            self.seq += 1
            line["seq"] = self.seq
            self.lines.append(line)
        if self.publish is not None:
            try:
                self.publish(dict(line))
            except Exception:  # an observer must never fail the code that logged
                return

    def tail(self, limit: int = 100, level: str = "info", after: int = 0) -> list[dict[str, Any]]:
        """The newest `limit` lines at `level` or above with seq > after, oldest first."""
        rank = level_rank(level)
        with self._lock:
            kept = [
                line
                for line in self.lines
                if line["seq"] > after and level_rank(line["level"]) >= rank
            ]
        return kept[-limit:] if limit > 0 else []
