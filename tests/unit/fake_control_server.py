"""The real control socket server in front of a fake ControlAPI, for test_control.py.

Usage: python fake_control_server.py SOCKET_PATH
Prints "ready" on stdout once listening; logs (with tracebacks) go to stderr; SIGTERM stops it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from standard_edition.control.api import ControlError
from standard_edition.control.server import listen_control

SECRET = "secret-detail-7f3a"  # must never reach a client


class FakeAPI:
    """In-memory accounts; a few addresses trigger the failures the tests look for."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.passwords: dict[str, str] = {}

    def _get(self, jid: str) -> dict[str, Any]:
        if jid not in self.users:
            raise ControlError("not-found", f"{jid}: no such user")
        return self.users[jid]

    def user_add(self, jid: str, password: str, name: str | None = None) -> Any:
        if jid in self.users:
            raise ControlError("exists", f"{jid} already exists")
        self.users[jid] = {"jid": jid, "name": name or "", "enabled": True, "sessions": 0}
        self.passwords[jid] = password
        # answered a moment later, as a real store write would be
        return task.deferLater(reactor, 0.01, lambda: {"jid": jid, "name": name or ""})

    def user_list(self) -> Any:
        return sorted(self.users.values(), key=lambda u: u["jid"])

    def user_show(self, jid: str) -> Any:
        if jid == "boom@example.test":
            raise RuntimeError(SECRET)
        user = self._get(jid)
        # the fake shows the password it got so tests can check how se-ctl read it
        return {
            **user,
            "created": 1700000000,
            "sessions": [],
            "roster": 0,
            "password": self.passwords[jid],
        }

    def user_remove(self, jid: str) -> Any:
        if jid not in self.users:
            return fail(ControlError("not-found", f"{jid}: no such user"))
        del self.users[jid]
        return task.deferLater(reactor, 0.01, lambda: {"jid": jid})

    def user_passwd(self, jid: str, password: str) -> Any:
        self._get(jid)
        self.passwords[jid] = password
        return {"jid": jid}

    def user_disable(self, jid: str) -> Any:
        self._get(jid)["enabled"] = False
        return {"jid": jid, "sessions_closed": 2}

    def user_enable(self, jid: str) -> Any:
        if jid == "odd@example.test":
            return {"jid": object()}  # not JSON: a server bug the client must not see
        self._get(jid)["enabled"] = True
        return {"jid": jid}

    def status(self) -> Any:
        return {
            "version": "0.0-test",
            "domain": "example.test",
            "uptime": 3725,
            "listeners": [{"name": "c2s", "address": "127.0.0.1:5222", "transport": "tcp"}],
            "sessions": {"xmpp": 1},
            "users": len(self.users),
        }

    def sessions(self) -> Deferred[Any]:
        # slow on purpose: a later, faster request on the same connection is answered first
        return task.deferLater(
            reactor,
            0.3,
            lambda: [
                {
                    "jid": "alice@example.test/laptop",
                    "protocol": "xmpp",
                    "address": "127.0.0.1:40000",
                    "since": 1700000000,
                    "tls": True,
                    "priority": 5,
                    "show": "available",
                },
            ],
        )


def main() -> None:
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    log = Logger(namespace="test")
    path = Path(sys.argv[1])
    try:
        listen_control(reactor, path, FakeAPI(), log=log)
    except (OSError, CannotListenError) as e:
        print(f"cannot listen: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("ready", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
