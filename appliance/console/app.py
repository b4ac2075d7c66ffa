"""The console app: one screen per area, switched with the number keys 1-8; q quits.

The screens follow the server through its live event stream (live.py), read by one thread
worker that reconnects with a growing pause when the server goes away; only what has no events
(users, store size, archive) is read again every `refresh` seconds.
"""

from __future__ import annotations

import threading
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.worker import get_current_worker

from appliance.console.archive import ArchiveScreen
from appliance.console.control import Control
from appliance.console.dashboard import DashboardScreen
from appliance.console.federation import FederationScreen
from appliance.console.live import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    BATCH,
    LiveScreen,
    ServerEvents,
    ServerState,
)
from appliance.console.logs import LogScreen
from appliance.console.users import UsersScreen
from appliance.console.views import ConferencesScreen, PresenceScreen, SessionsScreen
from appliance.control_client import ControlClientError
from standard_edition.config import Config

REFRESH = 30.0  # seconds between two reads of what has no events (store size, archive, users)
WAKE = 0.5  # seconds the events worker waits for an event before it checks whether to stop

SCREENS = (
    "dashboard",
    "users",
    "sessions",
    "presence",
    "conferences",
    "archive",
    "federation",
    "log",
)


class ConsoleApp(App[int]):
    CSS_PATH = "console.tcss"
    TITLE = "SE Appliance"
    ENABLE_COMMAND_PALETTE = False
    MODES = {
        "dashboard": DashboardScreen,
        "users": UsersScreen,
        "sessions": SessionsScreen,
        "presence": PresenceScreen,
        "conferences": ConferencesScreen,
        "archive": ArchiveScreen,
        "federation": FederationScreen,
        "log": LogScreen,
    }
    DEFAULT_MODE = "dashboard"
    BINDINGS = [
        # one footer entry for the eight screens keeps the footer inside 80 columns; the
        # dashboard names them all
        Binding("1", "switch_mode('dashboard')", "Screens", key_display="1-8"),
        *(
            Binding(str(n), f"switch_mode('{mode}')", mode.title(), show=False)
            for n, mode in enumerate(SCREENS[1:], start=2)
        ),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self, control_socket: Path, domain: str = "", refresh: float | None = REFRESH
    ) -> None:
        """refresh: seconds between reads of what has no events; None: never (tests)."""
        super().__init__()
        self.control = Control(control_socket)
        self.domain = domain
        self.sub_title = domain
        self.refresh_every = refresh
        self.live_screens: set[LiveScreen] = set()
        self.connected = False
        self._stop = threading.Event()

    def on_mount(self) -> None:
        self.follow_events()

    def on_unmount(self) -> None:
        self._stop.set()

    def action_quit(self) -> None:  # type: ignore[override]
        self._stop.set()
        self.exit(0)

    # -- the event stream ----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="events")
    def follow_events(self) -> None:
        worker = get_current_worker()
        pause = BACKOFF_FIRST
        while not (worker.is_cancelled or self._stop.is_set()):
            try:
                stream = self.control.subscribe()
            except ControlClientError as e:
                self.post_message(ServerState(False, str(e), pause))
                if self._stop.wait(pause):
                    return
                pause = min(pause * 2, BACKOFF_MAX)
                continue
            pause = BACKOFF_FIRST
            self.post_message(ServerState(True))
            try:
                while not (worker.is_cancelled or self._stop.is_set()):
                    event = stream.next(WAKE)
                    if event is None:
                        continue
                    batch = [event]
                    # whatever else is already there goes along in the same batch
                    while len(batch) < BATCH and (more := stream.next(0)) is not None:
                        batch.append(more)
                    self.post_message(ServerEvents(batch))
            except ControlClientError as e:
                self.post_message(ServerState(False, str(e), pause))
                if self._stop.wait(pause):
                    return
            finally:
                stream.close()

    def on_server_events(self, message: ServerEvents) -> None:
        for screen in list(self.live_screens):
            screen.server_events(message.events)

    def on_server_state(self, state: ServerState) -> None:
        self.connected = state.connected
        if state.connected:
            self.sub_title = self.domain
        else:
            self.sub_title = f"{self.domain} - disconnected, retrying".lstrip(" -")
        for screen in list(self.live_screens):
            screen.server_state(state)


def run_console(cfg: Config) -> int:
    result = ConsoleApp(cfg.control_socket, cfg.domain).run()
    return int(result or 0)
