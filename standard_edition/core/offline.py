"""Offline IM: messages kept for a user who has no available endpoint (XEP-0160)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import sqlite_utils
from twisted.internet.defer import Deferred, succeed

from standard_edition.core.jid import parse_jid
from standard_edition.core.model import Message
from standard_edition.store.database import Database

QUOTA = 500  # messages kept per user; past it the sender is told (XEP-0160 §2)


class OfflineStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._counts: dict[str, int] = {}

    def load(self) -> Deferred[None]:
        def read(db: sqlite_utils.Database) -> list[tuple[str, int]]:
            return db.conn.execute("SELECT owner, COUNT(*) FROM offline GROUP BY owner").fetchall()

        def keep(rows: list[tuple[str, int]]) -> None:
            self._counts = dict(rows)

        return self._db.run(read).addCallback(keep)

    def full(self, owner: str) -> bool:
        return self._counts.get(owner, 0) >= QUOTA

    def count(self, owner: str) -> int:
        return self._counts.get(owner, 0)

    def store(self, owner: str, msg: Message) -> Deferred[None]:
        stamp = msg.delay or datetime.now(UTC)
        record = {
            "type": msg.type,
            "to": str(msg.to),
            "body": msg.body,
            "id": msg.id,
            "payload": [ET.tostring(el, encoding="unicode") for el in msg.payload],
        }
        self._counts[owner] = self._counts.get(owner, 0) + 1

        def insert(db: sqlite_utils.Database) -> None:
            db["offline"].insert(
                {
                    "owner": owner,
                    "stamp": stamp.isoformat(timespec="microseconds"),
                    "sender": str(msg.sender),
                    "stanza": json.dumps(record),
                }
            )

        def failed(f: Any) -> Any:
            self._counts[owner] = max(0, self._counts.get(owner, 1) - 1)
            return f

        return self._db.run(insert).addErrback(failed)

    def fetch(self, owner: str) -> Deferred[list[tuple[int, Message]]]:
        """The user's stored messages, oldest first; they stay stored until `remove`."""
        if not self._counts.get(owner):
            return succeed([])

        def read(db: sqlite_utils.Database) -> list[tuple[int, Message]]:
            # decoded here, on the store's thread, not in a reactor turn
            rows = db.query("SELECT * FROM offline WHERE owner = ? ORDER BY id", [owner])
            return [(r["id"], _message(r)) for r in rows]

        return self._db.run(read)

    def remove(self, owner: str, ids: list[int]) -> Deferred[None]:
        """Forget messages once they were handed to an endpoint."""
        self._counts[owner] = max(0, self._counts.get(owner, 0) - len(ids))

        def delete(db: sqlite_utils.Database) -> None:
            db.conn.executemany("DELETE FROM offline WHERE id = ?", [(i,) for i in ids])

        return self._db.run(delete)


def _message(row: dict[str, Any]) -> Message:
    rec = json.loads(row["stanza"])
    return Message(
        sender=parse_jid(row["sender"]),
        to=parse_jid(rec["to"]),
        type=rec["type"],
        body=rec["body"],
        id=rec["id"],
        payload=tuple(ET.fromstring(x) for x in rec["payload"]),
        delay=datetime.fromisoformat(row["stamp"]),
    )
