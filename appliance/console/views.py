"""Sessions, a user's presence, and conferences: read-only views of the running server."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from appliance.control_client import ControlClientError
from appliance.ctl import _show_presence

POLL = 2.0


class SessionsScreen(Screen[None]):
    TITLE = "Sessions"
    COLUMNS = ("JID", "Proto", "Address", "Since", "TLS", "Show")

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Static("", id="message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*self.COLUMNS)
        self.reload()
        self.set_interval(POLL, self.reload)

    @work(thread=True, exclusive=True, group="sessions")
    def reload(self) -> None:
        try:
            rows = self.app.control.call("sessions")  # type: ignore[attr-defined]
        except ControlClientError as e:
            self.app.call_from_thread(self.query_one("#message", Static).update, str(e))
            return
        self.app.call_from_thread(self.show, rows)

    def show(self, rows: list[dict[str, Any]]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for s in rows:
            since = str(s.get("since", ""))[11:19]
            tls = "yes" if s.get("tls") else "no"
            table.add_row(s["jid"], s["protocol"], s["address"], since, tls, s.get("show", ""))
        self.query_one("#message", Static).update(f"{len(rows)} session(s)")


class PresenceScreen(Screen[None]):
    TITLE = "Presence"
    BINDINGS = [Binding("slash", "ask", "User")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="user@domain, then Enter", id="who")
        yield Static("", id="presence")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#who", Input).focus()

    def action_ask(self) -> None:
        self.query_one("#who", Input).focus()

    @on(Input.Submitted, "#who")
    def submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.lookup(event.value.strip())
        self.set_focus(None)

    @work(thread=True, exclusive=True, group="presence")
    def lookup(self, jid: str) -> None:
        try:
            r = self.app.control.call("presence.show", jid=jid)  # type: ignore[attr-defined]
            text = _show_presence(None, r)  # type: ignore[arg-type]
        except ControlClientError as e:
            text = str(e)
        self.app.call_from_thread(self.query_one("#presence", Static).update, text)


class ConferencesScreen(Screen[None]):
    TITLE = "Conferences"

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="rooms", cursor_type="row", zebra_stripes=True)
        yield Static("", id="message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("Room", "Kind", "Occupants")
        self.reload()
        self.set_interval(POLL * 2, self.reload)

    @work(thread=True, exclusive=True, group="rooms")
    def reload(self) -> None:
        try:
            rooms = self.app.control.call("conference.list")  # type: ignore[attr-defined]
        except ControlClientError as e:
            self.app.call_from_thread(self.query_one("#message", Static).update, str(e))
            return
        self.app.call_from_thread(self.show, rooms)

    def show(self, rooms: list[dict[str, Any]]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for r in rooms:
            who = ", ".join(o.get("nick", "?") for o in r.get("occupants", [])) or "nobody"
            kind = "persistent" if r.get("persistent") else "ad hoc"
            table.add_row(r["room"], kind, who)
        self.query_one("#message", Static).update(f"{len(rooms)} room(s)")
