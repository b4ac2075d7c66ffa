"""The console's way to the server: one short control connection per request.

Requests run in Textual thread workers, never on the UI's event loop; a fresh connection per
request keeps the blocking ControlClient safe to use from several workers at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.control_client import ControlClient

TIMEOUT = 10.0


class Control:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def call(self, cmd: str, **args: Any) -> Any:
        """The result, or raise ControlClientError (str(): the one line to show)."""
        with ControlClient(self.socket_path, timeout=TIMEOUT) as client:
            return client.call(cmd, **args)
