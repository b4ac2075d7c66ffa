"""The log: the server's recent lines (log.tail), followed as they come; w: warnings only."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, RichLog, Static

from appliance.control_client import ControlClientError
from appliance.ctl import log_line

POLL = 2.0
FIRST = 200  # lines shown when the screen opens
STYLE = {"warn": "yellow", "error": "red", "critical": "bold red"}


class LogScreen(Screen[None]):
    TITLE = "Log"
    BINDINGS = [Binding("w", "toggle_level", "Warnings only")]

    def __init__(self) -> None:
        super().__init__()
        self.last = 0
        self.level = "info"

    def compose(self) -> ComposeResult:
        yield Header()
        yield RichLog(id="log", wrap=True, max_lines=2000, markup=False, highlight=False)
        yield Static("", id="message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.fetch()
        self.set_interval(POLL, self.fetch)

    def action_toggle_level(self) -> None:
        self.level = "warn" if self.level == "info" else "info"
        self.last = 0
        self.query_one(RichLog).clear()
        self.fetch()

    @work(thread=True, exclusive=True, group="log")
    def fetch(self) -> None:
        args = {"limit": FIRST if self.last == 0 else 500, "level": self.level, "after": self.last}
        try:
            r = self.app.control.call("log.tail", **args)  # type: ignore[attr-defined]
        except ControlClientError as e:
            self.app.call_from_thread(self.query_one("#message", Static).update, str(e))
            return
        self.app.call_from_thread(self.show, r)

    def show(self, r: dict[str, Any]) -> None:
        log = self.query_one(RichLog)
        for line in r.get("lines", []):
            log.write(Text(log_line(line), style=STYLE.get(line.get("level", ""), "")))
        self.last = max(self.last, int(r.get("last", 0)))
        which = "warnings and errors" if self.level == "warn" else "all lines"
        self.query_one("#message", Static).update(f"following the server log ({which})")
