"""The Textual console against a real server: pilot tests, and se-ctl console inside tmux."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, RichLog, Static

from appliance.console.app import ConsoleApp
from appliance.console.control import Control
from appliance.console.dashboard import DashboardScreen
from appliance.console.views import ConferencesScreen

from .server import Server, clean_env, executable
from .test_conference import invite, is_invite, join
from .xmppclient import Sessions, next_matching


def console(server: Server) -> ConsoleApp:
    return ConsoleApp(server.data_dir / "control.sock", server.domain)


async def until(pilot: Pilot[int], check: Callable[[], bool], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("the console did not show it in time")
        await pilot.pause(0.1)


def summary(app: ConsoleApp) -> str:
    return str(app.screen.query_one("#summary", Static).content)


def rows(app: ConsoleApp) -> list[list[str]]:
    table = app.screen.query_one(DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_dashboard_shows_domain_and_a_signed_in_user(server: Server, run):
    (alice,) = server.new_users("alice")

    async def scenario() -> None:
        async with Sessions(server) as ss:
            await ss.login(alice)
            app = console(server)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: alice in summary(app))
                text = summary(app)
                assert server.domain in text
                assert "(xmpp 1)" in text, text
                await pilot.press("q")
            assert app.return_value == 0

    run(scenario())


def test_users_screen_adds_searches_and_disables_a_user(server: Server, run):
    (bob,) = server.new_users("bob")
    carol = f"carol{os.getpid()}@{server.domain}"

    async def scenario() -> None:
        app = console(server)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: any(r[0] == f"{bob}@{server.domain}" for r in rows(app)))
            await pilot.press("a")
            await until(pilot, lambda: app.screen.query("#jid").first(Input) is not None)
            for field, value in (("#jid", carol), ("#password", "Pw-1-secret")):
                app.screen.query_one(field, Input).value = value
            app.screen.query_one("#again", Input).value = "Pw-1-secret"
            app.screen.query_one("#again", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: any(r[0] == carol for r in rows(app)))
            await pilot.press("slash", *"carol", "enter")
            await until(pilot, lambda: [r[0] for r in rows(app)] == [carol])
            await pilot.press("x")
            await until(pilot, lambda: rows(app) and rows(app)[0][2] == "no")
            await pilot.press("q")

    run(scenario())
    shown = server.ctl_ok("user", "show", carol, "--json").stdout
    assert '"enabled": false' in shown


def test_presence_screen_shows_a_user_and_follows_their_change(server: Server, run):
    (alice,) = server.new_users("alice")
    jid = f"{alice}@{server.domain}"

    def shown(app: ConsoleApp) -> str:
        return str(app.screen.query_one("#presence", Static).content)

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a = await ss.login(alice)
            app = console(server)
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.press("4")
                await until(pilot, lambda: app.screen.query("#who").first(Input).has_focus)
                app.screen.query_one("#who", Input).value = jid
                await pilot.press("enter")
                await until(pilot, lambda: f"{jid}: Available" in shown(app))
                assert "(xmpp)" in shown(app)  # the endpoint behind the aggregate
                # a change arrives as an event: the screen asks again on its own
                a.send_presence(pshow="dnd", pstatus="planning")
                await until(pilot, lambda: f"{jid}: Do Not Disturb" in shown(app))
                assert "note: planning" in shown(app)
                await pilot.press("slash")  # ask about someone else
                app.screen.query_one("#who", Input).value = f"nobody@{server.domain}"
                await pilot.press("enter")
                await until(pilot, lambda: "Disturb" not in shown(app))
                assert "nobody" in shown(app) and "Available" not in shown(app), shown(app)
                await pilot.press("q")

    run(scenario())


def test_conferences_screen_lists_a_room_with_its_occupants(server: Server, run):
    (alice,) = server.new_users("alice")
    room = f"console{os.getpid()}@conference.{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            await join(await ss.login(alice), room, "alice")
            app = console(server)
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.press("5")
                await until(pilot, lambda: any(r[0] == room for r in rows(app)))
                (row,) = [r for r in rows(app) if r[0] == room]
                assert row[2] == "alice", row
                await pilot.press("q")

    run(scenario())


def test_archive_screen_finds_a_message_by_user_and_word(make_server, run):
    server = make_server('[archive]\nmode = "all"')
    alice, bob = server.new_users("alice", "bob")
    word = f"pineapple{os.getpid()}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            a, b = await ss.login(alice), await ss.login(bob)
            a.send_message(mto=f"{bob}@{server.domain}", mbody=f"the {word} order", mtype="chat")
            await next_matching(b.inbox, lambda m: word in m["body"])
        app = console(server)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("6")
            query = app.screen.query_one("#query", Input)
            query.value = f"user:{alice}@{server.domain} {word}"
            query.focus()
            end = time.monotonic() + 10
            while not rows(app):  # the archive writes in batches: search until it is there
                assert time.monotonic() < end, "the archive screen found nothing"
                query.focus()
                await pilot.press("enter")
                await pilot.pause(0.5)
            (found,) = rows(app)
            assert found[1].startswith(f"{alice}@{server.domain}"), found
            assert found[2].startswith(f"{bob}@{server.domain}") and word in found[3], found
            assert "1 of 1 record" in message(app)
            await pilot.press("q")

    run(scenario())


def test_federation_screen_allows_blocks_and_changes_the_mode(server: Server, run):
    async def scenario() -> None:
        app = console(server)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("7")
            heading = app.screen.query_one("#federation", Static)
            await until(pilot, lambda: "Mode" in str(heading.content))
            await pilot.press("a")
            await until(pilot, lambda: getattr(app.focused, "id", None) == "domain")
            # the prompt's text is set, not typed: keystrokes raced the prompt's mounting
            app.focused.value = "partner.example"  # type: ignore[union-attr]
            await pilot.press("enter")
            await until(pilot, lambda: ["partner.example", "allowed"] in [r[:2] for r in rows(app)])
            await pilot.press("b")
            await until(pilot, lambda: getattr(app.focused, "id", None) == "domain")
            app.focused.value = "spam.example"  # type: ignore[union-attr]
            await pilot.press("enter")
            await until(pilot, lambda: ["spam.example", "blocked"] in [r[:2] for r in rows(app)])
            mode = json.loads(server.ctl_ok("federation", "list", "--json").stdout)["mode"]
            await pilot.press("m")
            await until(pilot, lambda: f"Mode {mode} " not in str(heading.content))
            await pilot.press("q")

    run(scenario())
    listing = json.loads(server.ctl_ok("federation", "list", "--json").stdout)
    assert "partner.example" in listing["allow"] and "spam.example" in listing["block"]
    assert listing["source"]["mode"] == "se-ctl"
    for args in (["mode", "allowlist"], ["allow", "partner.example", "--remove"]):
        server.ctl_ok("federation", *args)
    server.ctl_ok("federation", "block", "spam.example", "--remove")


def test_log_screen_follows_the_server_log_and_dashboard_shows_errors(server: Server, run):
    (dave,) = server.new_users("dave")

    async def scenario() -> None:
        app = console(server)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("8")
            log = app.screen.query_one(RichLog)
            await until(pilot, lambda: "serving example.test" in lines(log))
            # a new line while the screen is open: the server logs each se-ctl request
            before = lines(log).count("control: user.remove")
            await asyncio.to_thread(server.ctl_ok, "user", "remove", f"{dave}@{server.domain}")
            await until(pilot, lambda: lines(log).count("control: user.remove") > before)
            await pilot.press("w")
            await until(pilot, lambda: "warnings and errors" in message(app))
            assert "serving example.test" not in lines(log)
            await pilot.press("1")
            errors = app.screen.query_one("#errors", Static)
            await until(pilot, lambda: "Recent errors" in str(errors.content))
            await pilot.press("q")

    run(scenario())
    tail = json.loads(server.ctl_ok("log", "--lines", "500", "--json").stdout)
    assert any("control: user.remove" in line["text"] for line in tail["lines"]), tail
    warnings = json.loads(server.ctl_ok("log", "--level", "warn", "--json").stdout)
    assert all(line["level"] in ("warn", "error", "critical") for line in warnings["lines"])


def message(app: ConsoleApp) -> str:
    return str(app.screen.query_one("#message", Static).content)


def lines(log: RichLog) -> str:
    return "\n".join(strip.text for strip in log.lines)


def test_console_in_tmux_shows_the_dashboard_and_quits_with_q(server: Server, tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (packaging/dev/run-tests installs it)")
    name = f"se-console-test-{os.getpid()}"
    env = clean_env()
    command = (
        f"env TERM=xterm-256color {shlex.quote(executable('se-ctl'))} "
        f"--config {shlex.quote(str(server.config))} console; echo EXIT=$?; sleep 20"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", name, "-x", "80", "-y", "24", command],
        check=True,
        env=env,
    )

    def screen() -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True
        ).stdout

    def wait(pred: Callable[[str], bool], timeout: float) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred(screen()):
            time.sleep(0.3)
        return screen()

    try:
        shown = wait(lambda s: "Store size" in s or "EXIT=" in s, 20)
        assert server.domain in shown and "Store size" in shown, shown
        subprocess.run(["tmux", "send-keys", "-t", name, "2"], check=True)
        shown = wait(lambda s: "Passwd" in s, 5)
        assert "JID" in shown, shown
        subprocess.run(["tmux", "send-keys", "-t", name, "q"], check=True)
        shown = wait(lambda s: "EXIT=" in s, 5)
        assert "EXIT=0" in shown, shown
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def test_console_pilot_runs_without_a_server(tmp_path, run):
    async def scenario() -> None:
        app = ConsoleApp(tmp_path / "control.sock", "example.test")
        async with app.run_test(size=(80, 24)) as pilot:
            problem = app.screen.query_one("#problem", Static)
            await until(pilot, lambda: "not running" in str(problem.content))
            await pilot.press("ctrl+q")
        assert app.return_value == 0

    run(scenario())


def test_sessions_screen_shows_a_login_from_its_event_without_polling(server: Server, run):
    (erin,) = server.new_users("erin")
    full = f"{erin}@{server.domain}/test"

    async def scenario() -> None:
        # refresh=None: nothing is read again on a timer, so only the event can bring the row
        app = ConsoleApp(server.data_dir / "control.sock", server.domain, refresh=None)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3")
            await until(pilot, lambda: app.connected and "session(s)" in message(app))
            assert full not in [r[0] for r in rows(app)]
            async with Sessions(server) as ss:
                # no presence either: no presence event makes the screen read the list again
                await ss.login(erin, presence=False)
                await until(pilot, lambda: full in [r[0] for r in rows(app)], timeout=5)
                row = next(r for r in rows(app) if r[0] == full)
                assert row[1] == "xmpp" and row[4] == "yes" and row[5] == "unavailable", row
            await until(pilot, lambda: full not in [r[0] for r in rows(app)], timeout=5)
            await pilot.press("q")

    run(scenario())


def test_conferences_screen_follows_a_room_from_its_events_without_polling(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    room = f"live{os.getpid()}@conference.{server.domain}"

    async def scenario() -> None:
        # refresh=None, and the screen reads the list only when it opens and when the stream
        # (re)starts: once that read is done, only the events can change the rows
        app = ConsoleApp(server.data_dir / "control.sock", server.domain, refresh=None)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("5")
            await until(pilot, lambda: isinstance(app.screen, ConferencesScreen))
            screen = app.screen
            assert isinstance(screen, ConferencesScreen)
            await until(pilot, lambda: app.connected and screen.loaded and screen.backlog is None)
            assert room not in [r[0] for r in rows(app)]
            reads = screen.reads
            async with Sessions(server) as ss:
                a, b = await ss.login(alice), await ss.login(bob)
                await join(a, room, "alice")
                await until(pilot, lambda: [room, "ad hoc", "alice"] in rows(app), timeout=5)
                invite(a, room, f"{bob}@{server.domain}")
                await next_matching(b.inbox, is_invite)
                await join(b, room, "bob")
                await until(pilot, lambda: [room, "ad hoc", "alice, bob"] in rows(app), timeout=5)
                b.send_presence(pto=f"{room}/bob", ptype="unavailable")
                await until(pilot, lambda: [room, "ad hoc", "alice"] in rows(app), timeout=5)
            # the sessions ended: the last occupant left and the ad hoc room is gone
            await until(pilot, lambda: room not in [r[0] for r in rows(app)], timeout=5)
            assert screen.reads == reads, "the list was read again"
            await pilot.press("q")

    run(scenario())


class CountedControl(Control):
    """The console's requests, counted: which ones are under way, and which have answered."""

    def __init__(self, control: Control) -> None:
        super().__init__(control.socket_path)
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.answered: dict[str, int] = {}

    def call(self, cmd: str, **args: Any) -> Any:
        with self.lock:
            self.running[cmd] = self.running.get(cmd, 0) + 1
        try:
            return super().call(cmd, **args)
        finally:
            with self.lock:
                self.running[cmd] -= 1
                self.answered[cmd] = self.answered.get(cmd, 0) + 1


def test_dashboard_pep_row_follows_the_counters_events_without_polling(server: Server, run):
    (alice,) = server.new_users("alice")
    aj = f"{alice}@{server.domain}"

    def published(app: ConsoleApp) -> int | None:
        found = re.search(r"PEP\b.*?(\d+) published", summary(app))
        return int(found.group(1)) if found else None

    async def scenario() -> None:
        app = ConsoleApp(server.data_dir / "control.sock", server.domain, refresh=None)
        control = app.control = CountedControl(app.control)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            # the stream is there, a counters event has come, and no read of status is under way
            await until(
                pilot,
                lambda: (
                    app.connected
                    and screen.per_min is not None
                    and published(app) is not None
                    and not control.running.get("status")
                ),
            )
            before, reads = published(app), control.answered.get("status", 0)
            assert before is not None
            async with Sessions(server) as ss:
                a = ss.client(alice)
                a.register_plugin("xep_0060")
                await a.start()
                note = ET.Element("{urn:example:console}note")
                note.text = "counted"
                await a.plugin["xep_0060"].publish(aj, "urn:example:console", payload=note)
                await until(pilot, lambda: (published(app) or 0) > before, timeout=10)
            assert control.answered.get("status", 0) == reads, "status was read again"
            await pilot.press("q")

    run(scenario())


def test_console_shows_it_is_disconnected_and_recovers_when_the_server_restarts(make_server, run):
    s = make_server()
    (fay,) = s.new_users("fay")

    async def scenario() -> None:
        app = ConsoleApp(s.data_dir / "control.sock", s.domain, refresh=None)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.connected and s.domain in summary(app))
            await asyncio.to_thread(s.stop)
            await until(pilot, lambda: not app.connected and "disconnected" in app.sub_title)
            problem = app.screen.query_one("#problem", Static)
            await until(pilot, lambda: "trying again" in str(problem.content))
            await asyncio.to_thread(s.start)
            await until(pilot, lambda: app.connected and app.sub_title == s.domain, timeout=20)
            await until(pilot, lambda: str(problem.content) == "")
            async with Sessions(s) as ss:
                await ss.login(fay)
                await until(pilot, lambda: fay in summary(app), timeout=5)
            await pilot.press("q")

    run(scenario(), timeout=90)
