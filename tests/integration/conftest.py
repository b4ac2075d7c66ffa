"""Fixtures that run the real server: `se-appliance --config FILE` on free loopback ports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from .server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module; tests on it use their own fresh accounts."""
    s = Server(tmp_path_factory.mktemp("server")).start()
    yield s
    s.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """A factory for servers of the test's own (restarts, special config); all stopped after."""
    made: list[Server] = []

    def make(extra_toml: str = "", start: bool = True, **kw: Any) -> Server:
        s = Server(tmp_path / f"server{len(made)}", extra_toml, **kw)
        made.append(s)
        return s.start() if start else s

    yield make
    for s in made:
        s.stop()


@pytest.fixture(scope="module")
def make_module_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Server]]:
    """make_server for servers a whole test module shares (stopped after its last test)."""
    made: list[Server] = []

    def make(extra_toml: str = "", start: bool = True, **kw: Any) -> Server:
        s = Server(tmp_path_factory.mktemp("server"), extra_toml, **kw)
        made.append(s)
        return s.start() if start else s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def run() -> Callable[..., Any]:
    """Run a coroutine to completion on a fresh event loop, with an overall timeout."""

    def runner(coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run(asyncio.wait_for(coro, timeout))

    return runner


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, the tail of each running server's log goes into the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for s in Server.live:
            report.sections.append((f"server log ({s.root.name})", s.log_tail()))
