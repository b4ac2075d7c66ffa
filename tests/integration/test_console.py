"""The Textual console against a real server: pilot tests, and se-ctl console inside tmux."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from appliance.console.app import ConsoleApp

from .server import Server, clean_env, executable
from .xmppclient import Sessions


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
