"""Archive search: the same filters as `se-ctl archive search`, a page at a time."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from appliance.control_client import ControlClientError

PAGE = 100
FILTERS = ("user", "peer", "room", "since", "until", "protocol")
ALIASES = {"from": "since", "to": "until"}


def parse_query(text: str) -> dict[str, str]:
    """`user:alice@example.test from:2026-03-01 invoice` -> archive.search arguments.

    key:value words set a filter (user, peer, room, from/since, to/until, protocol); the other
    words are the full-text query (FTS5 syntax)."""
    args: dict[str, str] = {}
    words = []
    for word in text.split():
        key, colon, value = word.partition(":")
        key = ALIASES.get(key.lower(), key.lower())
        if colon and value and key in FILTERS:
            args[key] = value
        else:
            words.append(word)
    if words:
        args["text"] = " ".join(words)
    return args


def row(r: dict[str, Any]) -> tuple[str, str, str, str]:
    when = str(r.get("time", ""))[:16].replace("T", " ")
    body = " ".join(str(r.get("body") or "").split())
    return when, str(r.get("sender", "")), str(r.get("room") or r.get("recipient") or ""), body


class ArchiveScreen(Screen[None]):
    TITLE = "Archive"
    BINDINGS = [
        Binding("slash", "ask", "Search"),
        Binding("n", "next_page", "Next page"),
        Binding("escape", "table", "To list", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.query_args: dict[str, str] = {}
        self.next_after: int | None = None
        self.total: int | None = None
        self.shown = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="user:ADDR peer:ADDR room:ROOM from:DAY to:DAY words", id="query")
        yield DataTable(id="records", cursor_type="row", zebra_stripes=True)
        yield Static("type a search and press Enter (no filter: everything)", id="message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("Time (UTC)", "From", "To", "Message")
        self.query_one("#query", Input).focus()

    def action_ask(self) -> None:
        self.query_one("#query", Input).focus()

    def action_table(self) -> None:
        self.query_one(DataTable).focus()

    @on(Input.Submitted, "#query")
    def submitted(self, event: Input.Submitted) -> None:
        self.query_args = parse_query(event.value)
        self.query_one(DataTable).clear()
        self.shown = 0
        self.query_one(DataTable).focus()
        self.search(0)

    def action_next_page(self) -> None:
        if self.next_after is not None:
            self.search(self.next_after)

    @work(thread=True, exclusive=True, group="archive")
    def search(self, after: int) -> None:
        args = dict(self.query_args, after=after, limit=PAGE, count=after == 0)
        try:
            page = self.app.control.call("archive.search", **args)  # type: ignore[attr-defined]
        except ControlClientError as e:
            self.app.call_from_thread(self.query_one("#message", Static).update, str(e))
            return
        self.app.call_from_thread(self.show, page, after == 0)

    def show(self, page: dict[str, Any], first: bool) -> None:
        table = self.query_one(DataTable)
        if first:
            table.clear()
            self.shown = 0
            self.total = page.get("total")
        for r in page.get("records", []):
            table.add_row(*row(r))
        self.shown += len(page.get("records", []))
        self.next_after = page.get("next")
        total = f" of {self.total}" if self.total is not None else ""
        more = "; n: next page" if self.next_after is not None else ""
        self.query_one("#message", Static).update(f"{self.shown}{total} record(s){more}")
