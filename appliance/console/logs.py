"""The log: the server's recent lines (log.tail), then each new one as a live event; w:
warnings only."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, RichLog, Static

from appliance.console.live import LiveScreen, ServerState, of
from appliance.control_client import ControlClientError
from appliance.ctl import log_line
from standard_edition.core.logring import level_rank

FIRST = 200  # lines shown when the screen opens
STYLE = {"warn": "yellow", "error": "red", "critical": "bold red"}


class LogScreen(LiveScreen):
    TITLE = "Log"
    BINDINGS = [Binding("w", "toggle_level", "Warnings only")]

    def __init__(self) -> None:
        super().__init__()
        self.last = 0  # seq of the newest line shown
        self.level = "info"
        # events that come while the recent lines are being read: shown after them
        self.waiting: list[dict[str, Any]] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield RichLog(id="log", wrap=True, max_lines=2000, markup=False, highlight=False)
        yield Static("", id="message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.start_over()

    def action_toggle_level(self) -> None:
        self.level = "warn" if self.level == "info" else "info"
        self.start_over()

    def start_over(self) -> None:
        """Clear, then show the recent lines at the chosen level (a restarted server numbers
        its lines from 1 again, so after a reconnect too)."""
        self.last = 0
        self.waiting = []
        self.query_one(RichLog).clear()
        self.fetch(self.level)

    @work(thread=True, exclusive=True, group="log")
    def fetch(self, level: str) -> None:
        try:
            r = self.app.control.call("log.tail", limit=FIRST, level=level)  # type: ignore[attr-defined]
        except ControlClientError as e:
            self.app.call_from_thread(self.query_one("#message", Static).update, str(e))
            return
        self.app.call_from_thread(self.show, r, level)

    def show(self, r: dict[str, Any], level: str) -> None:
        if level != self.level:
            return  # the level changed while these were read; another fetch is on its way
        waiting, self.waiting = self.waiting or [], None
        self.write(r.get("lines", []))
        self.write(waiting)
        which = "warnings and errors" if self.level == "warn" else "all lines"
        self.query_one("#message", Static).update(f"following the server log ({which})")

    def write(self, lines: list[dict[str, Any]]) -> None:
        log = self.query_one(RichLog)
        rank = level_rank(self.level)
        for line in lines:
            seq = int(line.get("seq", 0))
            if seq <= self.last or level_rank(str(line.get("level", "info"))) < rank:
                continue
            self.last = seq
            log.write(Text(log_line(line), style=STYLE.get(line.get("level", ""), "")))

    def server_events(self, events: list[dict[str, Any]]) -> None:
        lines = of(events, "log")
        if not lines:
            return
        if self.waiting is not None:
            self.waiting.extend(lines)
        else:
            self.write(lines)

    def server_state(self, state: ServerState) -> None:
        if state.connected:
            self.start_over()
        else:
            self.query_one("#message", Static).update(f"{state.message} (retrying)")
