"""The dashboard: what the server is doing now, and its recent errors.

Sessions, counters (every two seconds, PEP's among them) and errors come as live events; what
has none (users, store size, archive) is read when the stream starts and every REFRESH seconds
after.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Label, Sparkline, Static

from appliance.console.live import LiveScreen, ServerState, of
from appliance.control_client import ControlClientError, RemoteError
from appliance.ctl import duration

RATE_WINDOW = 60.0  # messages/min is measured over this many seconds
ERRORS = 3  # recent warnings and errors shown
# the footer shows "1-8 Screens"; the dashboard names them
NAV = "  ".join(
    f"[b]{n}[/b] {name}"
    for n, name in enumerate(
        ("Home", "Users", "Sessions", "Presence", "Rooms", "Archive", "Partners", "Log"), start=1
    )
)


def size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class MessageRate:
    """Messages per minute from the server's running message counter."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()
        self.per_poll: deque[float] = deque([0.0] * 60, maxlen=60)

    def add(self, now: float, count: int) -> float:
        if self.samples:
            self.per_poll.append(float(max(0, count - self.samples[-1][1])))
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        t0, c0 = self.samples[0]
        return (count - c0) * 60.0 / (now - t0) if now > t0 else 0.0


def recent_errors(lines: list[dict[str, Any]], width: int = 76) -> str:
    """The newest warnings and errors, one short line each, newest last."""
    if not lines:
        return "[b]Recent errors[/b] none"
    shown = []
    for line in lines[-ERRORS:]:
        at = time.strftime("%H:%M:%S", time.localtime(line.get("time", 0)))
        text = " ".join(str(line.get("text", "")).split())
        entry = f"{at} {line.get('level', '?')}: {text}"
        shown.append(escape(entry if len(entry) <= width else entry[: width - 3] + "..."))
    return "[b]Recent errors[/b]\n" + "\n".join(shown)


def summary(status: dict[str, Any], sessions: list[dict[str, Any]], rate: float) -> str:
    by_proto = status.get("sessions") or {}
    total = sum(v for v in by_proto.values() if isinstance(v, int))
    split = ", ".join(f"{k} {v}" for k, v in sorted(by_proto.items()))
    counters = status.get("counters") or {}
    archive = status.get("archive") or {}
    archive_text = (
        f"{archive.get('mode', 'off')}, {archive.get('records', 0)} records"
        + (", critical" if archive.get("critical") else "")
        if archive
        else "none"
    )
    who = ", ".join(sorted({s["jid"].split("/")[0] for s in sessions})) or "nobody"
    rows = [
        ("Domain", status.get("domain", "?")),
        ("Version", status.get("version", "?")),
        ("Uptime", duration(status.get("uptime", 0))),
        ("Users", status.get("users", 0)),
        ("Sessions", f"{total} ({split})" if split else str(total)),
        ("Signed in", who if len(who) <= 60 else who[:57] + "..."),
        ("Messages", f"{counters.get('messages', 0)} routed, {rate:.1f}/min"),
        *pep_row(status.get("pep")),
        (
            "Offline IM",
            f"{'on' if status.get('offline_im') else 'off'}, "
            f"{counters.get('offline_stored', 0)} stored since start",
        ),
        ("Archive", archive_text),
        ("Store size", size(int(status.get("store_bytes", 0) or 0))),
    ]
    return "\n".join(f"[b]{k:<11}[/b] {v}" for k, v in rows)


def pep_row(pep: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Personal eventing since start (avatars, OMEMO keys, bookmarks); none from a server
    without it."""
    if not pep:
        return []
    return [
        (
            "PEP",
            f"{pep.get('published', 0)} published, {pep.get('notifications', 0)} "
            f"notifications, {pep.get('caps_queries', 0)} caps queries",
        )
    ]


class DashboardScreen(LiveScreen):
    TITLE = "Dashboard"

    def __init__(self) -> None:
        super().__init__()
        self.rate = MessageRate()
        self.status: dict[str, Any] | None = None
        self.sessions: dict[str, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        self.per_min: float | None = None  # the server's figure, once counters events come

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="dashboard"):
            yield Static("connecting to se-appliance...", id="summary")
            with Horizontal(id="rate-row"):
                yield Label("Msgs/2s", id="rate-label")
                yield Sparkline(list(self.rate.per_poll), id="rate")
            yield Static("", id="errors")
            yield Static("", id="problem")
            yield Static(NAV, id="nav")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.read_all()
        every = self.app.refresh_every  # type: ignore[attr-defined]
        if every:
            self.set_interval(every, self.read_status)

    @work(thread=True, exclusive=True, group="dashboard")
    def read_all(self) -> None:
        """Everything afresh: when the screen opens and whenever the event stream (re)starts."""
        control = self.app.control  # type: ignore[attr-defined]
        try:
            status = control.call("status")
            sessions = control.call("sessions")
        except ControlClientError as e:
            self.app.call_from_thread(self.show_problem, str(e))
            return
        try:
            errors = control.call("log.tail", limit=ERRORS, level="warn")["lines"]
        except RemoteError:  # a server without log.tail
            errors = []
        except ControlClientError as e:
            self.app.call_from_thread(self.show_problem, str(e))
            return
        self.app.call_from_thread(self.show, status, sessions, errors)

    @work(thread=True, exclusive=True, group="dashboard-status")
    def read_status(self) -> None:
        """What has no events: users, store size, archive, offline IM."""
        try:
            status = self.app.control.call("status")  # type: ignore[attr-defined]
        except ControlClientError as e:
            self.app.call_from_thread(self.show_problem, str(e))
            return
        self.app.call_from_thread(self.show_status, status)

    def show(
        self,
        status: dict[str, Any],
        sessions: list[dict[str, Any]],
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        self.sessions = {s["jid"]: s for s in sessions}
        self.errors = list(errors or [])[-ERRORS:]
        if self.status is None:
            counters = status.get("counters") or {}
            self.rate.add(time.monotonic(), int(counters.get("messages", 0)))
        self.show_status(status)

    def show_status(self, status: dict[str, Any]) -> None:
        self.status = status
        self.query_one("#problem", Static).update("")
        self.render_all()

    def render_all(self) -> None:
        if self.status is None:
            return
        rate = self.per_min if self.per_min is not None else 0.0
        sessions = list(self.sessions.values())
        self.query_one("#summary", Static).update(summary(self.status, sessions, rate))
        self.query_one("#rate", Sparkline).data = list(self.rate.per_poll)
        self.query_one("#errors", Static).update(recent_errors(self.errors))

    # -- live events -----------------------------------------------------------------------------

    def server_events(self, events: list[dict[str, Any]]) -> None:
        if self.status is None:
            return  # the first read_all brings the whole picture
        changed = False
        for s in of(events, "sessions"):
            if s.get("change") == "logout":
                self.sessions.pop(s.get("jid", ""), None)
            else:
                self.sessions[s.get("jid", "")] = s
            changed = True
        if changed:
            by_proto: dict[str, int] = {}
            for s in self.sessions.values():
                by_proto[s.get("protocol", "?")] = by_proto.get(s.get("protocol", "?"), 0) + 1
            self.status["sessions"] = by_proto
        for c in of(events, "counters"):
            counters = c.get("counters") or {}
            self.status["uptime"] = c.get("uptime", self.status.get("uptime", 0))
            self.status["counters"] = {**(self.status.get("counters") or {}), **counters}
            if c.get("pep"):  # its node count is not in the feed: it stays from status
                self.status["pep"] = {**(self.status.get("pep") or {}), **c["pep"]}
            self.rate.add(time.monotonic(), int(counters.get("messages", 0)))
            self.per_min = float(c.get("messages_per_min", 0.0))
            changed = True
        for line in of(events, "log"):
            if line.get("level") in ("warn", "error", "critical"):
                self.errors = [*self.errors, line][-ERRORS:]
                changed = True
        if changed:
            self.render_all()

    def server_state(self, state: ServerState) -> None:
        if state.connected:
            self.read_all()
        else:
            self.show_problem(f"{state.message}; trying again in {state.retry_in:g} s")

    def show_problem(self, message: str) -> None:
        self.query_one("#problem", Static).update(f"[b]![/b] {message}")
