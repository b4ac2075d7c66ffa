"""Accounts: who may log in, with which credentials, under which display name.

Every account is held in memory (a small organisation's directory fits easily) and written
through to the store. Passwords are turned into SCRAM keys and SIP HA1s on a worker thread
(PBKDF2 is slow on purpose) and then forgotten.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlite_utils
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread

from standard_edition.core.credentials import Credentials, derive
from standard_edition.core.jid import prepare_password
from standard_edition.store.database import Database


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    name: str
    enabled: bool
    created: str
    credentials: Credentials


TEST_TOKEN_TTL = 60.0  # seconds a one-time test credential stays usable
TEST_TOKEN_PREFIX = "se-test-"


class AccountError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Accounts:
    def __init__(self, db: Database, domain: str) -> None:
        self._db = db
        self.domain = domain
        self._by_name: dict[str, Account] = {}
        self.on_removed: list[Callable[[str], None]] = []
        self.on_disabled: list[Callable[[str], None]] = []
        # one-time credentials for `se-ctl test`: username -> [(sha256 of token, expiry)];
        # redeemed on the SASL worker thread, hence the lock
        self._test_tokens: dict[str, list[tuple[bytes, float]]] = {}
        self._tokens_lock = threading.Lock()
        self.clock: Callable[[], float] = time.monotonic

    def load(self) -> Deferred[int]:
        def read(db: sqlite_utils.Database) -> list[dict[str, Any]]:
            return list(db["accounts"].rows)

        def keep(rows: list[dict[str, Any]]) -> int:
            for r in rows:
                self._by_name[r["username"]] = Account(
                    r["username"],
                    r["name"] or "",
                    bool(r["enabled"]),
                    r["created"],
                    Credentials.from_json(json.loads(r["credentials"])),
                )
            return len(rows)

        return self._db.run(read).addCallback(keep)

    # -- reads (hot path: memory only) -----------------------------------------------------

    def get(self, username: str) -> Account | None:
        return self._by_name.get(username)

    def exists(self, username: str) -> bool:
        return username in self._by_name

    def all(self) -> list[Account]:
        return sorted(self._by_name.values(), key=lambda a: a.username)

    def __len__(self) -> int:
        return len(self._by_name)

    def sasl_lookup(self, username: str) -> tuple[Credentials, bool] | None:
        acct = self._by_name.get(username)
        return None if acct is None else (acct.credentials, acct.enabled)

    # -- one-time test credentials (DESIGN §9: se-ctl test im|presence) -------------------

    def issue_test_token(self, username: str, ttl: float = TEST_TOKEN_TTL) -> str:
        """A random credential that SASL PLAIN accepts once for this account within ttl s.

        Only its hash is kept, in memory: a restart forgets every unused one."""
        self._require(username)
        token = TEST_TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        with self._tokens_lock:
            live = [t for t in self._test_tokens.get(username, []) if t[1] > now]
            live.append((_token_hash(token), now + ttl))
            self._test_tokens[username] = live[-8:]  # a few tests at once, never a pile
        return token

    def redeem_test_token(self, username: str, token: str) -> bool:
        """True, once, for a live token issued to username; safe on any thread."""
        if not token.startswith(TEST_TOKEN_PREFIX):
            return False
        digest, now = _token_hash(token), self.clock()
        with self._tokens_lock:
            tokens = self._test_tokens.get(username, [])
            for i, (h, expiry) in enumerate(tokens):
                if hmac.compare_digest(h, digest):
                    del tokens[i]
                    return expiry > now
        return False

    # -- writes -----------------------------------------------------------------------------

    @inlineCallbacks
    def add(self, username: str, password: str, name: str | None = None):  # type: ignore[no-untyped-def]
        if username in self._by_name:
            raise AccountError("exists", f"{username}@{self.domain} already exists")
        password = _prepared_password(password)
        creds: Credentials = yield deferToThread(derive, username, self.domain, password)
        # checked again: another add may have finished while the keys were being made
        if username in self._by_name:
            raise AccountError("exists", f"{username}@{self.domain} already exists")
        acct = Account(username, name or "", True, _now(), creds)
        self._by_name[username] = acct
        try:
            yield self._db.run(_insert, acct)
        except Exception:
            del self._by_name[username]
            raise
        return acct

    @inlineCallbacks
    def set_password(self, username: str, password: str):  # type: ignore[no-untyped-def]
        acct = self._require(username)
        password = _prepared_password(password)
        creds: Credentials = yield deferToThread(derive, username, self.domain, password)
        yield self._db.run(_update, username, {"credentials": json.dumps(creds.to_json())})
        acct = self._require(username)
        self._by_name[username] = replace(acct, credentials=creds)
        return self._by_name[username]

    def set_enabled(self, username: str, enabled: bool) -> Deferred[Account]:
        acct = self._require(username)

        def done(_: object) -> Account:
            new = replace(self._require(username), enabled=enabled)
            self._by_name[username] = new
            if not enabled:
                for cb in self.on_disabled:
                    cb(username)
            return new

        d = self._db.run(_update, acct.username, {"enabled": int(enabled)})
        return d.addCallback(done)

    def remove(self, username: str) -> Deferred[Account]:
        acct = self._require(username)

        def done(_: object) -> Account:
            self._by_name.pop(username, None)
            for cb in self.on_removed:
                cb(username)
            return acct

        return self._db.run(_delete, username).addCallback(done)

    def _require(self, username: str) -> Account:
        acct = self._by_name.get(username)
        if acct is None:
            raise AccountError("not-found", f"no user {username}@{self.domain}")
        return acct


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _prepared_password(password: str) -> str:
    try:
        return prepare_password(password)
    except ValueError as e:
        raise AccountError("invalid", f"password refused: {e}") from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _insert(db: sqlite_utils.Database, acct: Account) -> None:
    db["accounts"].insert(
        {
            "username": acct.username,
            "name": acct.name,
            "enabled": int(acct.enabled),
            "created": acct.created,
            "credentials": json.dumps(acct.credentials.to_json()),
        }
    )


def _update(db: sqlite_utils.Database, username: str, values: dict[str, Any]) -> None:
    db["accounts"].update(username, values)


def _delete(db: sqlite_utils.Database, username: str) -> None:
    db.conn.execute("DELETE FROM roster WHERE owner = ?", (username,))
    db.conn.execute("DELETE FROM offline WHERE owner = ?", (username,))
    db.conn.execute("DELETE FROM mam WHERE owner = ?", (username,))
    for table, column in (
        ("presence_settings", "username"),
        ("access_levels", "owner"),
        ("blocklist", "owner"),
        ("calendar", "owner"),
    ):
        db.conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (username,))
    db["accounts"].delete(username)
