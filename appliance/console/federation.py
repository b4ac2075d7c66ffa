"""Federation partners: the mode, the allow and block lists, pinned certificates, live streams."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Static
from textual.widgets.data_table import RowDoesNotExist

from appliance.control_client import ControlClientError

MODES = ("allowlist", "blocklist", "open")


def partners(listing: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """One row per domain named anywhere: (domain, list, certificate, stream)."""
    allow, block = set(listing.get("allow") or []), set(listing.get("block") or [])
    trusted: dict[str, str] = listing.get("trusted") or {}
    streams = listing.get("streams") or {}
    outgoing: dict[str, str] = streams.get("outgoing") or {}
    incoming = set(streams.get("incoming") or [])
    rows = []
    for domain in sorted(allow | block | set(trusted) | set(outgoing) | incoming):
        kind = "blocked" if domain in block else "allowed" if domain in allow else "-"
        cert = trusted[domain][:16] if domain in trusted else "-"
        live = [f"out {outgoing[domain]}"] if domain in outgoing else []
        live += ["in"] if domain in incoming else []
        rows.append((domain, kind, cert, ", ".join(live) or "-"))
    return rows


def heading(listing: dict[str, Any]) -> str:
    source = (listing.get("source") or {}).get("mode", "config")
    state = "on" if listing.get("enabled") else "off (no edge s2s listener)"
    return f"[b]Mode[/b] {listing.get('mode', '?')} (from {source})   [b]Federation[/b] {state}"


class DomainPrompt(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str) -> None:
        super().__init__()
        self.prompt_title = title

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label(self.prompt_title, id="form-title")
            yield Input(placeholder="partner.example", id="domain")

    @on(Input.Submitted, "#domain")
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FederationScreen(Screen[None]):
    TITLE = "Federation"
    BINDINGS = [
        Binding("a", "allow", "Allow"),
        Binding("b", "block", "Block"),
        Binding("d", "remove", "Off list"),
        Binding("m", "mode", "Mode"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.listing: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="federation")
        yield DataTable(id="partners", cursor_type="row", zebra_stripes=True)
        yield Static("", id="message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._seq, self._shown, self._seq_lock = 0, 0, threading.Lock()
        table = self.query_one(DataTable)
        table.add_columns("Domain", "List", "Certificate", "Streams")
        table.focus()
        self.reload()

    def on_screen_resume(self) -> None:
        self.reload()

    @work(thread=True, exclusive=True, group="federation")
    def reload(self) -> None:
        self.request("federation.list", {}, "")

    @work(thread=True, group="federation-change")
    def change(self, cmd: str, args: dict[str, Any], done: str) -> None:
        self.request(cmd, args, done)

    def request(self, cmd: str, args: dict[str, Any], done: str) -> None:
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        try:
            listing = self.app.control.call(cmd, **args)  # type: ignore[attr-defined]
        except ControlClientError as e:
            self.app.call_from_thread(self.say, f"{cmd.replace('.', ' ')}: {e}")
            return
        self.app.call_from_thread(self.show, listing, done, seq)
        if cmd != "federation.list":
            # a reload that raced this change may have read the state before it: read again
            self.app.call_from_thread(self.reload)

    def show(self, listing: dict[str, Any], done: str, seq: int = 0) -> None:
        if seq and seq < self._shown:
            return  # an older answer arriving late must not hide a newer one
        self._shown = max(self._shown, seq)
        self.listing = listing
        self.query_one("#federation", Static).update(heading(listing))
        table = self.query_one(DataTable)
        selected = self.selected()
        table.clear()
        for r in partners(listing):
            table.add_row(*r, key=r[0])
        if selected is not None:
            with contextlib.suppress(RowDoesNotExist):
                table.move_cursor(row=table.get_row_index(selected))
        self.say(done or f"{table.row_count} partner domain(s)")

    def say(self, text: str) -> None:
        self.query_one("#message", Static).update(text)

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return str(key.value) if key.value is not None else None

    def _ask(self, cmd: str, verb: str) -> None:
        def chosen(domain: str | None) -> None:
            if domain:
                self.change(cmd, {"domain": domain}, f"{verb} {domain}")

        self.app.push_screen(DomainPrompt(f"Domain to {verb.removesuffix('ed')}"), chosen)

    def action_allow(self) -> None:
        self._ask("federation.allow", "allowed")

    def action_block(self) -> None:
        self._ask("federation.block", "blocked")

    def action_remove(self) -> None:
        domain = self.selected()
        if domain is None:
            return
        args = {"domain": domain, "remove": True}
        if domain in (self.listing.get("block") or []):
            self.change("federation.block", args, f"unblocked {domain}")
        elif domain in (self.listing.get("allow") or []):
            self.change("federation.allow", args, f"{domain} is off the allow list")

    def action_mode(self) -> None:
        mode = self.listing.get("mode")
        new = MODES[(MODES.index(mode) + 1) % len(MODES)] if mode in MODES else MODES[0]
        self.change("federation.mode", {"mode": new}, f"mode is now {new}")
