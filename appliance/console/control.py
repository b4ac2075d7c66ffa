"""The console's way to the server.

Requests: one short control connection each, run in Textual thread workers, never on the UI's
event loop; a fresh connection per request keeps the blocking ControlClient safe to use from
several workers at once. Live events: one long connection subscribed to the server's event
stream (standard_edition/control/stream.py), read by the app's events worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.control_client import ControlClient

TIMEOUT = 10.0
TOPICS = ["sessions", "presence", "log", "rooms", "counters"]


class EventStream:
    """A subscribed connection; next() gives the next event or None after timeout seconds."""

    def __init__(self, client: ControlClient, info: dict[str, Any]) -> None:
        self.client = client
        self.info = info  # the server's answer to subscribe (topics, log_last, ...)

    def next(self, timeout: float) -> dict[str, Any] | None:
        """Raises ControlClientError when the server ends the stream."""
        return self.client.next_event(timeout)

    def close(self) -> None:
        self.client.close()


class Control:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def call(self, cmd: str, **args: Any) -> Any:
        """The result, or raise ControlClientError (str(): the one line to show)."""
        with ControlClient(self.socket_path, timeout=TIMEOUT) as client:
            return client.call(cmd, **args)

    def subscribe(self) -> EventStream:
        """Every topic the console shows; raise ControlClientError when the server is not there."""
        client = ControlClient(self.socket_path, timeout=TIMEOUT)
        try:
            info = client.subscribe(TOPICS, level="info")
        except BaseException:
            client.close()
            raise
        return EventStream(client, info)
