"""Screenshots of the console's dashboard and users screens, fed fixed data (no server).

The SVGs under __snapshots__/ are the expected screens; after a deliberate change to a screen,
regenerate them with `pytest tests/console --snapshot-update` and review the new files.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from appliance.console.app import ConsoleApp
from appliance.control_client import RemoteError

SIZE = (80, 24)
T0 = 1_780_000_000.0  # a fixed moment for the log lines

STATUS = {
    "version": "1.0.0",
    "domain": "example.test",
    "uptime": 93_784,
    "users": 3,
    "sessions": {"sip": 1, "xmpp": 2},
    "offline_im": True,
    "counters": {"messages": 1234, "offline_stored": 5},
    "archive": {"mode": "all", "records": 420, "critical": False},
    "store_bytes": 5_500_000,
    "pep": {"nodes": 12, "published": 57, "notifications": 210, "caps_queries": 4},
}
SESSIONS = [
    {"jid": "alice@example.test/laptop", "protocol": "xmpp"},
    {"jid": "alice@example.test/phone", "protocol": "sip"},
    {"jid": "bob@example.test/desk", "protocol": "xmpp"},
]
ERRORS = [
    {"seq": 7, "time": T0, "level": "warn", "namespace": "se", "text": "edge.sip_tls: not used"},
    {
        "seq": 9,
        "time": T0 + 61,
        "level": "error",
        "namespace": "se.s2s",
        "text": "partner.example: certificate does not match the pinned one",
    },
]
USERS = [
    {"jid": "alice@example.test", "name": "Alice Liddell", "enabled": True, "sessions": 2},
    {"jid": "bob@example.test", "name": "", "enabled": True, "sessions": 1},
    {"jid": "carol@example.test", "name": "Carol", "enabled": False, "sessions": 0},
]


class FakeStream:
    """A live event stream on which nothing happens."""

    info: dict[str, Any] = {"topics": [], "log_last": 9}

    def next(self, timeout: float) -> None:
        time.sleep(timeout)

    def close(self) -> None:
        pass


class FakeControl:
    """Answers the console's requests with the fixed data above."""

    def call(self, cmd: str, **args: Any) -> Any:
        if cmd == "status":
            return STATUS
        if cmd == "sessions":
            return SESSIONS
        if cmd == "log.tail":
            return {"lines": ERRORS[-args.get("limit", 100) :], "last": 9}
        if cmd == "user.list":
            return USERS
        raise RemoteError("unknown-command", cmd)

    def subscribe(self) -> FakeStream:
        return FakeStream()


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Log times are shown in local time: make that UTC for the screenshots."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def app() -> ConsoleApp:
    console = ConsoleApp(Path("control.sock"), "example.test")
    console.control = FakeControl()  # type: ignore[assignment]
    return console


async def until_shown(pilot: Pilot[int], check: Any) -> None:
    for _ in range(100):
        if check():
            break
        await pilot.pause(0.05)
    await pilot.pause()


def test_dashboard_snapshot(snap_compare: Any) -> None:
    async def loaded(pilot: Pilot[int]) -> None:
        await until_shown(
            pilot,
            lambda: "partner.example" in str(pilot.app.screen.query_one("#errors", Static).content),
        )

    assert snap_compare(app(), terminal_size=SIZE, run_before=loaded)


def test_users_snapshot(snap_compare: Any) -> None:
    async def loaded(pilot: Pilot[int]) -> None:
        await pilot.press("2")
        await until_shown(pilot, lambda: pilot.app.screen.query_one(DataTable).row_count == 3)

    assert snap_compare(app(), terminal_size=SIZE, run_before=loaded)
