"""Run-time settings: what se-ctl changed, stored in the database, winning over config.toml.

DESIGN §8: the server never writes config.toml; `se-ctl config reset KEY` forgets the stored
value so the file's counts again.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils
from twisted.internet.defer import Deferred

from standard_edition.store.database import Database

PREFIX = "runtime:"  # keeps these apart from the server's own entries in the settings table


class Settings:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._values: dict[str, Any] = {}

    def load(self) -> Deferred[dict[str, Any]]:
        def read(db: sqlite_utils.Database) -> list[tuple[str, str]]:
            return db.execute(
                "SELECT key, value FROM settings WHERE key LIKE ?", [PREFIX + "%"]
            ).fetchall()

        def keep(rows: list[tuple[str, str]]) -> dict[str, Any]:
            self._values = {k[len(PREFIX) :]: json.loads(v) for k, v in rows}
            return dict(self._values)

        return self._db.run(read).addCallback(keep)

    def has(self, key: str) -> bool:
        return key in self._values

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def set(self, key: str, value: Any) -> Deferred[None]:
        def write(db: sqlite_utils.Database) -> None:
            db["settings"].upsert({"key": PREFIX + key, "value": json.dumps(value)}, pk="key")

        def keep(_: object) -> None:
            self._values[key] = value

        return self._db.run(write).addCallback(keep)

    def delete(self, key: str) -> Deferred[None]:
        def write(db: sqlite_utils.Database) -> None:
            db.execute("DELETE FROM settings WHERE key = ?", [PREFIX + key])

        def forget(_: object) -> None:
            self._values.pop(key, None)

        return self._db.run(write).addCallback(forget)
