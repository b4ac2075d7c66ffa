"""Bulk import of accounts (`se-ctl user import FILE.csv`), the server's half.

se-ctl reads the file (DESIGN §9: the server never opens a path a caller names) and sends its
rows in batches; each row is checked on its own and either created whole or refused with the
reason, under the line number se-ctl gave it. A row without a password gets a generated one,
returned in the answer once and never stored or logged. Mixed into core/admin.py's Admin.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet.defer import DeferredSemaphore, gatherResults, inlineCallbacks
from twisted.logger import Logger

from standard_edition.control.api import ControlError
from standard_edition.core.accounts import AccountError, Accounts
from standard_edition.core.jid import InvalidJID, parse_jid, prepare_password, prepare_username

MAX_ROWS = 500  # rows in one user.import request (se-ctl sends batches)
MAX_NAME = 256
MAX_PASSWORD = 1024
# unambiguous letters and digits (no 0/O, 1/l/I): easy to read out and type once
ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
GROUPS, GROUP_LENGTH = 4, 5  # 20 characters, about 114 bits
PARALLEL = 4  # key derivations in flight at once: the thread pool stays free for logins

log = Logger(namespace="se.admin")


def generate_password() -> str:
    """A strong initial password from the OS's CSPRNG, e.g. `k7Qmx-2PdRt-...`."""
    return "-".join(
        "".join(secrets.choice(ALPHABET) for _ in range(GROUP_LENGTH)) for _ in range(GROUPS)
    )


class RowError(Exception):
    pass


class UserImportAdmin:
    accounts: Accounts
    cfg: Any

    @inlineCallbacks
    def user_import(self, rows: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ControlError("invalid", "rows: a list of {line, user, name, password?}")
        if len(rows) > MAX_ROWS:
            raise ControlError("invalid", f"at most {MAX_ROWS} rows in one request")
        created: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        ready: list[tuple[int, str, str, str, bool]] = []
        seen: dict[str, int] = {}
        for row in rows:
            line = row.get("line")
            if isinstance(line, bool) or not isinstance(line, int):
                raise ControlError("invalid", "each row needs its line number")
            try:
                username, name, password, generated = self._import_row(row)
                if username in seen:
                    raise RowError(
                        f"{self._import_jid(username)} is already on line {seen[username]}"
                    )
                seen[username] = line
                if self.accounts.exists(username):
                    raise RowError(f"{self._import_jid(username)} already exists")
            except RowError as e:
                failed.append({"line": line, "user": row.get("user"), "error": str(e)})
                continue
            ready.append((line, username, name, password, generated))

        limit = DeferredSemaphore(PARALLEL)

        def add(line: int, username: str, name: str, password: str, generated: bool) -> Any:
            def done(acct: Any) -> None:
                out = {"line": line, "jid": self._import_jid(acct.username), "name": acct.name}
                if generated:
                    out["password"] = password  # shown once by se-ctl, kept nowhere
                created.append(out)

            def refused(f: Any) -> None:
                error = f.value.message if f.check(AccountError) else "not created (see the log)"
                if not f.check(AccountError):
                    log.failure("user import: line {line}", f, line=line)
                failed.append({"line": line, "user": username, "error": error})

            d = limit.run(self.accounts.add, username, password, name)
            return d.addCallbacks(done, refused)

        yield gatherResults([add(*r) for r in ready])
        if created:
            log.info("control: {n} account(s) imported", n=len(created))
        return {
            "created": sorted(created, key=lambda r: r["line"]),
            "failed": sorted(failed, key=lambda r: r["line"]),
        }

    def _import_jid(self, username: str) -> str:
        return f"{username}@{self.cfg.domain}"

    def _import_row(self, row: dict[str, Any]) -> tuple[str, str, str, bool]:
        user, name, password = row.get("user"), row.get("name", ""), row.get("password")
        if not isinstance(user, str) or not user.strip():
            raise RowError("no user name")
        if not isinstance(name, str):
            raise RowError("the display name is not text")
        user, name = user.strip(), name.strip()
        address = user if "@" in user else f"{user}@{self.cfg.domain}"
        try:
            jid = parse_jid(address)
            if jid.local is None or jid.resource is not None:
                raise InvalidJID("give a user name or user@domain")
            if jid.domain != self.cfg.domain:
                raise InvalidJID(f"this server serves {self.cfg.domain} only")
            username = prepare_username(jid.local)
        except InvalidJID as e:
            raise RowError(f"{user[:80]!r} is not a valid user name: {e}") from None
        if len(name) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise RowError(f"display name: at most {MAX_NAME} printable characters")
        generated = password is None or password == ""
        if generated:
            password = generate_password()
        elif not isinstance(password, str) or len(password) > MAX_PASSWORD:
            raise RowError(f"password: text of at most {MAX_PASSWORD} characters")
        else:
            try:
                prepare_password(password)
            except ValueError as e:
                raise RowError(f"password refused: {e}") from None
        return username, name, password, generated
