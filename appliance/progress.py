"""Progress of a long se-ctl command (backup, archive export) on stderr.

Shown when stderr is a terminal (one line redrawn in place) or when asked for with --progress
(then a plain line at most every LINE_EVERY seconds, for logs); stdout, and so --json output,
never carries it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_EVERY = 0.2  # seconds between two redraws on a terminal
LINE_EVERY = 1.0  # seconds between two plain lines


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Progress:
    """what: the command's name; unit: "bytes" (shown as sizes) or a word such as "records"."""

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str = "bytes",
        *,
        asked: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = asked or self.tty
        self.what, self.total, self.unit = what, total, unit
        self.last = 0.0
        self.shown = False

    def say(self, text: str) -> None:
        """A line of its own (e.g. the phase before counting starts)."""
        if self.enabled:
            self.stream.write(f"{self.what}: {text}\n")
            self.stream.flush()

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < (REDRAW_EVERY if self.tty else LINE_EVERY):
            return
        self.last = now
        text = f"{self.what}: {self.amount(done)}"
        if self.tty:
            self.stream.write(f"\r{text}\x1b[K" + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = True

    def finish(self, done: int) -> None:
        self.update(done, final=True)

    def amount(self, done: int) -> str:
        show = size if self.unit == "bytes" else str
        suffix = "" if self.unit == "bytes" else f" {self.unit}"
        if self.total:
            pct = min(100, int(100 * done / self.total))
            return f"{show(done)} of {show(self.total)}{suffix} ({pct}%)"
        return f"{show(done)}{suffix}"
