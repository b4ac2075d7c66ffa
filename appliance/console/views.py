"""Sessions, a user's presence, and conferences: read-only views of the running server.

Each follows the live events: the list is read when the screen opens and whenever the event
stream (re)starts, and kept current from the events after that.
"""

from __future__ import annotations

import contextlib
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.widgets.data_table import RowDoesNotExist

from appliance.console.live import LiveScreen, ServerState, of
from appliance.control_client import ControlClientError
from appliance.ctl import _show_presence

SHOW_DELAY = 0.3  # seconds presence changes are gathered before the Show column is read again


def bare(jid: str) -> str:
    return jid.split("/", 1)[0]


class SessionsScreen(LiveScreen):
    TITLE = "Sessions"
    COLUMNS = ("JID", "Proto", "Address", "Since", "TLS", "Show")

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, Any]] = {}
        self.loaded = False
        self.show_pending = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Static("", id="message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*self.COLUMNS)
        self.reload()

    @work(thread=True, exclusive=True, group="sessions")
    def reload(self) -> None:
        try:
            rows = self.app.control.call("sessions")  # type: ignore[attr-defined]
        except ControlClientError as e:
            self.app.call_from_thread(self.query_one("#message", Static).update, str(e))
            return
        self.app.call_from_thread(self.show, rows)

    def show(self, rows: list[dict[str, Any]]) -> None:
        self.rows = {s["jid"]: s for s in rows}
        self.loaded = True
        table = self.query_one(DataTable)
        table.clear()
        for s in sorted(rows, key=lambda s: s["jid"]):
            table.add_row(*self.cells(s), key=s["jid"])
        self.count()

    @staticmethod
    def cells(s: dict[str, Any]) -> tuple[str, ...]:
        since = str(s.get("since", ""))[11:19]
        tls = "yes" if s.get("tls") else "no"
        return (s["jid"], s["protocol"], s["address"], since, tls, s.get("show", ""))

    def count(self) -> None:
        self.query_one("#message", Static).update(f"{len(self.rows)} session(s)")

    # -- live events -----------------------------------------------------------------------------

    def server_events(self, events: list[dict[str, Any]]) -> None:
        if not self.loaded:
            return  # the first reload brings the whole list
        table = self.query_one(DataTable)
        for s in of(events, "sessions"):
            jid = s.get("jid", "")
            if jid in self.rows:
                del self.rows[jid]
                with contextlib.suppress(RowDoesNotExist):
                    table.remove_row(jid)
            if s.get("change") == "login":
                self.rows[jid] = s
                table.add_row(*self.cells(s), key=jid)
        self.count()
        shown = {bare(j) for j in self.rows}
        if not self.show_pending and any(p.get("jid") in shown for p in of(events, "presence")):
            # the Show column is each endpoint's own presence, which the (aggregated) presence
            # event does not carry: read the list again once the changes have settled
            self.show_pending = True
            self.set_timer(SHOW_DELAY, self.read_show)

    def read_show(self) -> None:
        self.show_pending = False
        self.reload()

    def server_state(self, state: ServerState) -> None:
        if state.connected:
            self.reload()
        else:
            self.query_one("#message", Static).update(f"{state.message} (retrying)")


class PresenceScreen(LiveScreen):
    TITLE = "Presence"
    BINDINGS = [Binding("slash", "ask", "User")]

    def __init__(self) -> None:
        super().__init__()
        self.shown: str | None = None  # the bare address shown, as the server spells it

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
        shown = None
        try:
            r = self.app.control.call("presence.show", jid=jid)  # type: ignore[attr-defined]
            text = _show_presence(None, r)  # type: ignore[arg-type]
            shown = r.get("jid")
        except ControlClientError as e:
            text = str(e)
        self.app.call_from_thread(self.show, text, shown)

    def show(self, text: str, shown: str | None) -> None:
        self.shown = shown
        self.query_one("#presence", Static).update(text)

    def server_events(self, events: list[dict[str, Any]]) -> None:
        if self.shown is None:
            return
        touched = [p.get("jid") for p in of(events, "presence")]
        touched += [bare(s.get("jid", "")) for s in of(events, "sessions")]
        if self.shown in touched:
            self.lookup(self.shown)  # its endpoints and details come with presence.show

    def server_state(self, state: ServerState) -> None:
        if state.connected and self.shown is not None:
            self.lookup(self.shown)


class ConferencesScreen(LiveScreen):
    """The rooms and who is in them, from conference.list and then the "rooms" events."""

    TITLE = "Conferences"

    def __init__(self) -> None:
        super().__init__()
        # room JID -> {"room", "persistent", ..., "occupants": [{"nick", "jid", "role"}]}
        self.rooms: dict[str, dict[str, Any]] = {}
        self.loaded = False
        self.reads = 0  # the latest read of the list: an older one that answers late is let go
        # events that come while the list is being read: applied over it once it is there
        self.backlog: list[dict[str, Any]] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="rooms", cursor_type="row", zebra_stripes=True)
        yield Static("", id="message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label in ("Room", "Kind", "Occupants"):
            table.add_column(label, key=label.lower())
        self.reload()

    def reload(self) -> None:
        self.reads += 1
        self.backlog = []  # what came before this read is in what it reads
        self.read_rooms(self.reads)

    @work(thread=True, exclusive=True, group="rooms")
    def read_rooms(self, read: int) -> None:
        try:
            rooms = self.app.control.call("conference.list")  # type: ignore[attr-defined]
        except ControlClientError as e:
            self.app.call_from_thread(self.failed, read, str(e))
            return
        self.app.call_from_thread(self.show, read, rooms)

    def failed(self, read: int, message: str) -> None:
        if read == self.reads:
            self.backlog = None
            self.query_one("#message", Static).update(message)

    def show(self, read: int, rooms: list[dict[str, Any]]) -> None:
        if read != self.reads:
            return
        self.rooms = {r["room"]: r for r in rooms}
        for event in self.backlog or []:
            self.apply(event)
        self.backlog = None
        self.loaded = True
        table = self.query_one(DataTable)
        table.clear()
        for jid in sorted(self.rooms):
            table.add_row(*self.cells(self.rooms[jid]), key=jid)
        self.count()

    @staticmethod
    def cells(r: dict[str, Any]) -> tuple[str, ...]:
        who = ", ".join(o.get("nick", "?") for o in r.get("occupants", [])) or "nobody"
        kind = "persistent" if r.get("persistent") else "ad hoc"
        return (r["room"], kind, who)

    def count(self) -> None:
        people = sum(len(r.get("occupants", [])) for r in self.rooms.values())
        self.query_one("#message", Static).update(
            f"{len(self.rooms)} room(s), {people} occupant(s)"
        )

    # -- live events -----------------------------------------------------------------------------

    def apply(self, e: dict[str, Any]) -> str | None:
        """One "rooms" event on self.rooms; the room JID whose row changed."""
        jid, change = e.get("room", ""), e.get("change")
        if not jid:
            return None
        if change == "destroyed":
            self.rooms.pop(jid, None)
            return jid
        room = self.rooms.setdefault(jid, {"room": jid, "occupants": []})
        for key in ("name", "persistent", "members_only"):
            if key in e:
                room[key] = e[key]
        who = e.get("jid")
        if who is not None:
            occupants = [o for o in room.get("occupants", []) if o.get("jid") != who]
            if change in ("joined", "renamed"):
                occupants.append({"nick": e.get("nick", "?"), "jid": who, "role": e.get("role")})
            room["occupants"] = occupants
        return jid

    def server_events(self, events: list[dict[str, Any]]) -> None:
        changes = of(events, "rooms")
        if not changes:
            return
        if self.backlog is not None:
            self.backlog.extend(changes)  # the list being read may or may not have them
            return
        if not self.loaded:
            return
        table = self.query_one(DataTable)
        touched = {jid for e in changes if (jid := self.apply(e))}
        added = False
        for jid in touched:
            room = self.rooms.get(jid)
            if room is None:
                with contextlib.suppress(RowDoesNotExist):
                    table.remove_row(jid)
            elif jid in table.rows:
                for column, value in zip(("kind", "occupants"), self.cells(room)[1:], strict=True):
                    table.update_cell(jid, column, value, update_width=True)
            else:
                table.add_row(*self.cells(room), key=jid)
                added = True
        if added:
            table.sort("room")
        self.count()

    def server_state(self, state: ServerState) -> None:
        if state.connected:
            self.reload()
        else:
            self.query_one("#message", Static).update(f"{state.message} (retrying)")
