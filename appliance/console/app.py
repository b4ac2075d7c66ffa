"""The console app: one screen per area, switched with the number keys 1-8; q quits."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding

from appliance.console.archive import ArchiveScreen
from appliance.console.control import Control
from appliance.console.dashboard import DashboardScreen
from appliance.console.federation import FederationScreen
from appliance.console.logs import LogScreen
from appliance.console.users import UsersScreen
from appliance.console.views import ConferencesScreen, PresenceScreen, SessionsScreen
from standard_edition.config import Config

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

    def __init__(self, control_socket: Path, domain: str = "") -> None:
        super().__init__()
        self.control = Control(control_socket)
        self.sub_title = domain

    def action_quit(self) -> None:  # type: ignore[override]
        self.exit(0)


def run_console(cfg: Config) -> int:
    result = ConsoleApp(cfg.control_socket, cfg.domain).run()
    return int(result or 0)
