"""Users: search, add, reset a password, disable or enable (which ends the user's sessions).

The Sessions column follows the live sessions events; the list itself is read when the screen
opens or comes back, and after each change made here.
"""

from __future__ import annotations

import contextlib
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static
from textual.widgets.data_table import RowDoesNotExist

from appliance.console.live import LiveScreen, ServerState, of
from appliance.control_client import ControlClientError

COLUMNS = ("JID", "Name", "Enabled", "Sessions")


def matches(user: dict[str, Any], text: str) -> bool:
    text = text.strip().lower()
    return not text or text in user["jid"].lower() or text in (user.get("name") or "").lower()


class UserForm(ModalScreen[dict[str, str] | None]):
    """Add a user (jid, name, password) or set a password (password only)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, jid: str | None = None) -> None:
        super().__init__()
        self.form_title = title
        self.jid = jid

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label(self.form_title, id="form-title")
            if self.jid is None:
                yield Input(placeholder="user@domain", id="jid")
                yield Input(placeholder="display name (optional)", id="name")
            yield Input(placeholder="password", password=True, id="password")
            yield Input(placeholder="password again", password=True, id="again")
            yield Static("", id="form-error")
            yield Button("OK", variant="primary", id="ok")

    @on(Input.Submitted)
    def next_field(self, event: Input.Submitted) -> None:
        if event.input.id == "again":
            self.submit()
        else:
            self.focus_next()

    @on(Button.Pressed, "#ok")
    def submit(self) -> None:
        values = {i.id: i.value for i in self.query(Input) if i.id}
        error = ""
        if self.jid is None and "@" not in values.get("jid", ""):
            error = "give the address as user@domain"
        elif not values["password"]:
            error = "the password is empty"
        elif values["password"] != values["again"]:
            error = "the passwords do not match"
        if error:
            self.query_one("#form-error", Static).update(error)
            return
        values.pop("again")
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)


class UsersScreen(LiveScreen):
    TITLE = "Users"
    BINDINGS = [
        Binding("slash", "search", "Search", show=False),
        Binding("a", "add", "Add"),
        Binding("p", "password", "Passwd"),
        Binding("x", "toggle", "On/off"),
        Binding("escape", "table", "To list", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.users: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="search (press / ) by address or name", id="search")
        yield DataTable(id="users", cursor_type="row", zebra_stripes=True)
        yield Static("", id="message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        table.focus()
        self.reload()

    def on_screen_resume(self) -> None:
        self.reload()

    def server_events(self, events: list[dict[str, Any]]) -> None:
        changes = of(events, "sessions")
        if not changes or not self.users:
            return
        by_jid = {u["jid"]: u for u in self.users}
        for s in changes:
            user = by_jid.get(str(s.get("jid", "")).split("/", 1)[0])
            if user is not None:
                step = 1 if s.get("change") == "login" else -1
                user["sessions"] = max(0, int(user.get("sessions", 0)) + step)
        self.fill()

    def server_state(self, state: ServerState) -> None:
        if state.connected:
            self.reload()

    @work(thread=True, exclusive=True, group="users")
    def reload(self) -> None:
        try:
            users = self.app.control.call("user.list")  # type: ignore[attr-defined]
        except ControlClientError as e:
            self.app.call_from_thread(self.say, str(e))
            return
        self.app.call_from_thread(self.show, users)

    def show(self, users: list[dict[str, Any]]) -> None:
        self.users = users
        self.fill()

    def fill(self) -> None:
        table = self.query_one(DataTable)
        text = self.query_one("#search", Input).value
        selected = self.selected()
        table.clear()
        for u in self.users:
            if matches(u, text):
                enabled = "yes" if u["enabled"] else "no"
                table.add_row(
                    u["jid"], u.get("name") or "", enabled, str(u["sessions"]), key=u["jid"]
                )
        if selected is not None and selected in {u["jid"] for u in self.users}:
            # a row the search filtered out: the cursor stays at the top
            with contextlib.suppress(RowDoesNotExist):
                table.move_cursor(row=table.get_row_index(selected))

    @on(Input.Changed, "#search")
    def search_changed(self) -> None:
        self.fill()

    @on(Input.Submitted, "#search")
    def search_done(self) -> None:
        self.query_one(DataTable).focus()

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return str(key.value) if key.value is not None else None

    def say(self, text: str) -> None:
        self.query_one("#message", Static).update(text)

    # -- actions -----------------------------------------------------------------------------

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_table(self) -> None:
        self.query_one(DataTable).focus()

    def action_add(self) -> None:
        def added(values: dict[str, str] | None) -> None:
            if values:
                args = {"jid": values["jid"].strip(), "password": values["password"]}
                if values.get("name", "").strip():
                    args["name"] = values["name"].strip()
                self.request("user.add", args, f"added {args['jid']}")

        self.app.push_screen(UserForm("Add a user"), added)

    def action_password(self) -> None:
        jid = self.selected()
        if jid is None:
            return

        def chosen(values: dict[str, str] | None) -> None:
            if values:
                args = {"jid": jid, "password": values["password"]}
                self.request("user.passwd", args, f"password changed for {jid}")

        self.app.push_screen(UserForm(f"New password for {jid}", jid), chosen)

    def action_toggle(self) -> None:
        jid = self.selected()
        user = next((u for u in self.users if u["jid"] == jid), None)
        if user is None:
            return
        if user["enabled"]:
            self.request("user.disable", {"jid": jid}, f"disabled {jid}; its sessions ended")
        else:
            self.request("user.enable", {"jid": jid}, f"enabled {jid}")

    @work(thread=True, group="user-change")
    def request(self, cmd: str, args: dict[str, Any], done: str) -> None:
        try:
            self.app.control.call(cmd, **args)  # type: ignore[attr-defined]
        except ControlClientError as e:
            self.app.call_from_thread(self.say, f"{cmd.replace('.', ' ')}: {e}")
            return
        self.app.call_from_thread(self.say, done)
        self.reload()
