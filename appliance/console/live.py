"""Live events in the console: the app's one subscription, handed to the screens that follow it.

The app's events worker (app.py) reads the server's event stream in a thread and posts what it
reads, a batch at a time, as ServerEvents; when the stream starts or breaks it posts
ServerState. Each LiveScreen gets both, shown or not, so that a screen switched to is current.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message
from textual.screen import Screen

BATCH = 200  # events read at most before they are handed to the screens together
BACKOFF_FIRST = 0.5  # seconds before the first reconnect attempt; doubled each time
BACKOFF_MAX = 8.0


class ServerEvents(Message):
    def __init__(self, events: list[dict[str, Any]]) -> None:
        super().__init__()
        self.events = events


class ServerState(Message):
    """connected: the stream (re)started (screens read their state afresh); else message says
    why it broke and retry_in when the next attempt is."""

    def __init__(self, connected: bool, message: str = "", retry_in: float = 0.0) -> None:
        super().__init__()
        self.connected = connected
        self.message = message
        self.retry_in = retry_in


class LiveScreen(Screen[None]):
    """A screen that follows the server's events; subclasses override the two hooks."""

    def on_mount(self) -> None:
        self.app.live_screens.add(self)  # type: ignore[attr-defined]

    def on_unmount(self) -> None:
        self.app.live_screens.discard(self)  # type: ignore[attr-defined]

    def server_events(self, events: list[dict[str, Any]]) -> None:
        """Events in the order the server sent them."""

    def server_state(self, state: ServerState) -> None:
        """The stream started (read everything afresh) or broke."""


def of(events: list[dict[str, Any]], topic: str) -> list[dict[str, Any]]:
    """The data of the events of one topic, in order."""
    return [e.get("data") or {} for e in events if e.get("event") == topic]
