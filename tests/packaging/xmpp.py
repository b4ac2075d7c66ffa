"""A stock XMPP client (slixmpp) for the installed server, trusting only its certificate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path
from typing import Any

import slixmpp

logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


class Client(slixmpp.ClientXMPP):
    """One session over STARTTLS; the certificate must be `cafile` and name the domain."""

    def __init__(self, jid: str, password: str, cafile: Path) -> None:
        super().__init__(jid, password)
        ctx = ssl.create_default_context(cafile=str(cafile))  # checks the name too
        self.ssl_context = ctx
        self.enable_direct_tls = False  # STARTTLS on the c2s port (slixmpp tries direct first)
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.add_event_handler("message", self.inbox.put_nowait)
        self.failed = asyncio.get_running_loop().create_future()
        self.add_event_handler("failed_all_auth", lambda _: self._fail("authentication failed"))

    def _fail(self, why: str) -> None:
        if not self.failed.done():
            self.failed.set_result(why)

    async def login(self, port: int, timeout: float = 30) -> Client:
        self.connect("127.0.0.1", port)
        started = asyncio.ensure_future(self.wait_until("session_start", timeout=timeout))
        done, _ = await asyncio.wait(
            [started, self.failed], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if started not in done:
            started.cancel()
            self.abort()
            why = self.failed.result() if self.failed.done() else f"no session in {timeout}s"
            raise AssertionError(f"{self.boundjid.bare}: {why}")
        self.send_presence()
        return self

    async def logout(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.disconnect(wait=1), 5)
        self.abort()


async def session(jid: str, password: str, port: int, cafile: Path) -> Client:
    return await Client(jid, password, cafile).login(port)


def login_and_send(port: int, cafile: Path, jid: str, password: str, to: str, body: str) -> None:
    """Log in as jid, send one chat message, log out."""

    async def go() -> None:
        c = await session(jid, password, port, cafile)
        c.send_message(mto=to, mbody=body, mtype="chat")
        await asyncio.sleep(0.5)  # let it reach the server before the stream closes
        await c.logout()

    asyncio.run(asyncio.wait_for(go(), 60))


def login_and_receive(port: int, cafile: Path, jid: str, password: str) -> str:
    """Log in as jid and return the body of the first message delivered (offline messages)."""

    async def go() -> str:
        c = await session(jid, password, port, cafile)
        try:
            while True:
                msg = await asyncio.wait_for(c.inbox.get(), 20)
                if msg["body"]:
                    return str(msg["body"])
        finally:
            await c.logout()

    return asyncio.run(asyncio.wait_for(go(), 60))
