"""The console app: one screen per area, switched with the number keys; q quits."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding

from appliance.console.control import Control
from appliance.console.dashboard import DashboardScreen
from appliance.console.users import UsersScreen
from appliance.console.views import ConferencesScreen, PresenceScreen, SessionsScreen
from standard_edition.config import Config


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
    }
    DEFAULT_MODE = "dashboard"
    BINDINGS = [
        Binding("1", "switch_mode('dashboard')", "Home"),
        Binding("2", "switch_mode('users')", "Users"),
        Binding("3", "switch_mode('sessions')", "Sessions"),
        Binding("4", "switch_mode('presence')", "Presence"),
        Binding("5", "switch_mode('conferences')", "Rooms"),
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
