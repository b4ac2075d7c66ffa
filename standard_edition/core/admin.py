"""What the control socket may do to the running server (the ControlAPI of control/api.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from standard_edition import __version__
from standard_edition.config import Config
from standard_edition.control.api import ControlError
from standard_edition.core.accounts import Account, AccountError, Accounts
from standard_edition.core.jid import InvalidJID, parse_jid, prepare_username
from standard_edition.core.router import Router


class Admin:
    def __init__(
        self,
        cfg: Config,
        router: Router,
        listeners: Callable[[], list[dict[str, Any]]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.router = router
        self.accounts: Accounts = router.accounts
        self._listeners = listeners
        self._clock = clock
        self.started = clock()

    # -- users -------------------------------------------------------------------------------

    def _username(self, jid: str) -> str:
        try:
            parsed = parse_jid(jid)
        except InvalidJID as e:
            raise ControlError("invalid", f"{jid!r} is not a valid address: {e}") from None
        if parsed.local is None or parsed.resource is not None:
            raise ControlError("invalid", f"{jid!r}: give a user address, user@{self.cfg.domain}")
        if parsed.domain != self.cfg.domain:
            raise ControlError("invalid", f"{jid!r}: this server serves {self.cfg.domain} only")
        try:
            return prepare_username(parsed.local)
        except InvalidJID as e:
            raise ControlError("invalid", str(e)) from None

    def _jid(self, username: str) -> str:
        return f"{username}@{self.cfg.domain}"

    @inlineCallbacks
    def user_add(self, jid: str, password: str, name: str | None = None):  # type: ignore[no-untyped-def]
        username = self._username(jid)
        if name is not None and (len(name) > 256 or any(ord(c) < 32 for c in name)):
            raise ControlError("invalid", "display name: at most 256 printable characters")
        try:
            acct: Account = yield self.accounts.add(username, password, name)
        except AccountError as e:
            raise ControlError(e.code, e.message) from None
        return {"jid": self._jid(acct.username), "name": acct.name}

    def user_list(self) -> list[dict[str, Any]]:
        return [
            {
                "jid": self._jid(a.username),
                "name": a.name,
                "enabled": a.enabled,
                "sessions": len(self.router.sessions.of_user(a.username)),
            }
            for a in self.accounts.all()
        ]

    def user_show(self, jid: str) -> dict[str, Any]:
        acct = self._account(jid)
        return {
            "jid": self._jid(acct.username),
            "name": acct.name,
            "enabled": acct.enabled,
            "created": acct.created,
            "roster": self.router.rosters.count(acct.username),
            "offline_messages": self.router.offline.count(acct.username),
            "sessions": [self._session(ep) for ep in self.router.sessions.of_user(acct.username)],
        }

    def user_remove(self, jid: str) -> Deferred[dict[str, Any]]:
        acct = self._account(jid)
        return self._wrap(self.accounts.remove(acct.username)).addCallback(
            lambda a: {"jid": self._jid(a.username)}
        )

    @inlineCallbacks
    def user_passwd(self, jid: str, password: str):  # type: ignore[no-untyped-def]
        acct = self._account(jid)
        try:
            yield self.accounts.set_password(acct.username, password)
        except AccountError as e:
            raise ControlError(e.code, e.message) from None
        return {"jid": self._jid(acct.username)}

    def user_disable(self, jid: str) -> Deferred[dict[str, Any]]:
        acct = self._account(jid)
        n = len(self.router.sessions.of_user(acct.username))
        return self._wrap(self.accounts.set_enabled(acct.username, False)).addCallback(
            lambda a: {"jid": self._jid(a.username), "sessions_closed": n}
        )

    def user_enable(self, jid: str) -> Deferred[dict[str, Any]]:
        acct = self._account(jid)
        return self._wrap(self.accounts.set_enabled(acct.username, True)).addCallback(
            lambda a: {"jid": self._jid(a.username)}
        )

    def _account(self, jid: str) -> Account:
        username = self._username(jid)
        acct = self.accounts.get(username)
        if acct is None:
            raise ControlError("not-found", f"no user {self._jid(username)}")
        return acct

    @staticmethod
    def _wrap(d: Deferred[Any]) -> Deferred[Any]:
        def translate(f: Any) -> Any:
            if f.check(AccountError):
                raise ControlError(f.value.code, f.value.message)
            return f

        return d.addErrback(translate)

    # -- server ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "version": __version__,
            "domain": self.cfg.domain,
            "config": self.cfg.source,
            "started": _iso(self.started),
            "uptime": int(now - self.started),
            "listeners": self._listeners(),
            "sessions": self.router.sessions.counts_by_protocol() or {"xmpp": 0},
            "users": len(self.accounts),
            "offline_im": self.router.offline_enabled,
            "counters": dict(self.router.counters),
        }

    def sessions(self) -> list[dict[str, Any]]:
        return sorted((self._session(ep) for ep in self.router.sessions), key=lambda s: s["jid"])

    @staticmethod
    def _session(ep: Any) -> dict[str, Any]:
        p = ep.presence
        return {
            "jid": str(ep.jid),
            "protocol": ep.protocol,
            "address": ep.address,
            "since": _iso(ep.since),
            "tls": ep.secure,
            "available": p is not None,
            "show": (p.show or "available") if p is not None else "unavailable",
            "priority": p.priority if p is not None else None,
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
