"""slixmpp clients for the integration tests: a stock XMPP library, as users' clients are."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from .rawxmpp import insecure_context

# slixmpp logs every failed attempt at ERROR; the tests assert on outcomes instead
logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


class LoginFailed(Exception):
    def __init__(self, jid: str, conditions: list[str]):
        super().__init__(f"{jid}: authentication failed: {conditions}")
        self.conditions = conditions


class Client(slixmpp.ClientXMPP):
    """One user's session. Everything the server sends lands in queues the test reads."""

    def __init__(
        self,
        server: Any,
        user: str,
        password: str,
        resource: str = "test",
        direct_tls: bool = False,
        mechanisms: Iterable[str] | None = None,
        auto_accept: bool = True,
        listener: str | None = None,
    ):
        jid = f"{user}@{server.domain}/{resource}" if resource else f"{user}@{server.domain}"
        super().__init__(jid, password)
        self.target = server  # slixmpp already has a .server
        self.listener = listener  # e.g. "edge_c2s": the outside listener instead of the LAN's
        self.direct_tls = direct_tls
        self.ssl_context = insecure_context()
        if direct_tls:
            self.enable_direct_tls = True
            self.enable_starttls = False
        else:
            self.enable_direct_tls = False  # slixmpp 1.17 would try direct TLS first
        if mechanisms is not None:
            self.plugin["feature_mechanisms"].use_mechs = set(mechanisms)
        for plugin in ("xep_0030", "xep_0199"):
            self.register_plugin(plugin)
        # slixmpp: True accepts, None leaves requests to the test (False would refuse them)
        self.auto_authorize = True if auto_accept else None
        self.auto_subscribe = auto_accept
        self.inbox: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
        self.presences: asyncio.Queue[slixmpp.Presence] = asyncio.Queue()
        self.stream_errors: asyncio.Queue[Any] = asyncio.Queue()
        self.auth_failures: list[str] = []
        self.mechanism_used = ""
        self.register_handler(
            Callback("test-inbox", MatchXPath("{jabber:client}message"), self.inbox.put_nowait)
        )
        self.add_event_handler("presence", self.presences.put_nowait)
        self.add_event_handler("stream_error", self.stream_errors.put_nowait)
        self.add_event_handler("failed_auth", self._failed_auth)
        self.add_event_handler("auth_success", self._auth_success)
        self._failed_all: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.add_event_handler("failed_all_auth", self._failed_all_auth)
        self.gone = asyncio.Event()  # set when the TCP connection is gone
        self.add_event_handler("connected", lambda _: self.gone.clear())
        self.add_event_handler("disconnected", lambda _: self.gone.set())

    def _failed_auth(self, stanza: Any) -> None:
        self.auth_failures.append(stanza["condition"])

    def _auth_success(self, _: Any) -> None:
        self.mechanism_used = self.plugin["feature_mechanisms"].mech.name

    def _failed_all_auth(self, _: Any) -> None:
        if not self._failed_all.done():
            self._failed_all.set_result(None)

    async def start(self, timeout: float = 20, presence: bool = True) -> Client:
        """Connect, authenticate, bind; then initial presence and roster (as clients do)."""
        name = self.listener or ("c2s_tls" if self.direct_tls else "c2s")
        self.connect(self.target.hosts.get(name, "127.0.0.1"), self.target.ports[name])
        started = asyncio.ensure_future(self.wait_until("session_start", timeout=timeout))
        done, _ = await asyncio.wait(
            [started, self._failed_all], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if started not in done:
            started.cancel()
            self.cancel_connection_attempt()
            self.abort()
            if self._failed_all in done:
                raise LoginFailed(str(self.requested_jid), self.auth_failures)
            raise TimeoutError(f"{self.requested_jid}: no session within {timeout}s")
        if presence:
            await self.get_roster()
            self.send_presence()
        return self

    async def stop(self) -> None:
        self.cancel_connection_attempt()
        if self.transport is None:
            return
        self.disconnect(wait=1)
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self.gone.wait(), 5)
        self.abort()

    async def closed_by_server(self, timeout: float = 10) -> bool:
        """True once the server has closed the TCP connection."""
        try:
            await asyncio.wait_for(self.gone.wait(), timeout)
        except TimeoutError:
            return False
        return True


async def next_matching(
    queue: asyncio.Queue[Any], pred: Callable[[Any], bool], timeout: float = 10
) -> Any:
    """The next item in queue that satisfies pred, skipping others; TimeoutError after timeout."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    seen: list[str] = []
    while True:
        left = end - loop.time()
        if left <= 0:
            raise TimeoutError(f"nothing matching arrived in {timeout}s; skipped {seen[-5:]}")
        try:
            item = await asyncio.wait_for(queue.get(), left)
        except TimeoutError:
            raise TimeoutError(
                f"nothing matching arrived in {timeout}s; skipped {seen[-5:]}"
            ) from None
        if pred(item):
            return item
        seen.append(str(item)[:200])


async def nothing_matching(
    queue: asyncio.Queue[Any], pred: Callable[[Any], bool], wait: float
) -> None:
    """Assert no item satisfying pred arrives within wait seconds."""
    with contextlib.suppress(TimeoutError):
        item = await next_matching(queue, pred, wait)
        raise AssertionError(f"unexpected: {item}")


class Sessions:
    """Logs users of one server in, and every one of them out again at the end."""

    def __init__(self, server: Any):
        self.server = server
        self.clients: list[Client] = []

    def client(self, user: str, password: str | None = None, **kw: Any) -> Client:
        pw = password if password is not None else self.server.passwords.get(user, "")
        c = Client(self.server, user, pw, **kw)
        self.clients.append(c)
        return c

    async def login(
        self, user: str, password: str | None = None, presence: bool = True, **kw: Any
    ) -> Client:
        return await self.client(user, password, **kw).start(presence=presence)

    async def __aenter__(self) -> Sessions:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.stop() for c in self.clients), return_exceptions=True)
