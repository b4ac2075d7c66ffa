"""Contact lists: each user's roster items, held in memory and written through to the store."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils
from twisted.internet.defer import Deferred
from twisted.python import log

from standard_edition.core.jid import JID, parse_jid
from standard_edition.core.model import RosterItem
from standard_edition.core.subscription import State, Sub
from standard_edition.store.database import Database


class Rosters:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._items: dict[str, dict[JID, RosterItem]] = {}

    def load(self) -> Deferred[int]:
        def read(db: sqlite_utils.Database) -> list[dict[str, Any]]:
            return list(db["roster"].rows)

        def keep(rows: list[dict[str, Any]]) -> int:
            for r in rows:
                contact = parse_jid(r["contact"])
                state = State(
                    Sub(r["subscription"]),
                    bool(r["ask"]),
                    bool(r["pending_in"]),
                    bool(r["approved"]),
                )
                item = RosterItem(
                    contact,
                    r["name"] or None,
                    tuple(json.loads(r["groups"])),
                    state,
                    bool(r["in_roster"]),
                )
                self._items.setdefault(r["owner"], {})[contact] = item
            return len(rows)

        return self._db.run(read).addCallback(keep)

    def items(self, owner: str) -> list[RosterItem]:
        """The user's roster as a client sees it (RFC 6121 §2.1)."""
        return [i for i in self._items.get(owner, {}).values() if i.in_roster]

    def get(self, owner: str, contact: JID) -> RosterItem | None:
        return self._items.get(owner, {}).get(contact)

    def state(self, owner: str, contact: JID) -> State:
        item = self.get(owner, contact)
        return item.state if item else State()

    def pending_in(self, owner: str) -> list[JID]:
        return [c for c, i in self._items.get(owner, {}).items() if i.state.pending_in]

    def subscribers(self, owner: str) -> list[JID]:
        """Contacts who receive the user's presence (subscription from or both)."""
        return [c for c, i in self._items.get(owner, {}).items() if i.state.has_from]

    def subscriptions(self, owner: str) -> list[JID]:
        """Contacts whose presence the user receives (subscription to or both)."""
        return [c for c, i in self._items.get(owner, {}).items() if i.state.has_to]

    def count(self, owner: str) -> int:
        return len(self.items(owner))

    def put(self, owner: str, item: RosterItem) -> Deferred[None]:
        """Store an item; an item that is neither in the roster nor carries state is dropped."""
        items = self._items.setdefault(owner, {})
        if not item.in_roster and item.state == State():
            items.pop(item.contact, None)
            return self._write(_delete_item, owner, str(item.contact))
        items[item.contact] = item
        return self._write(_upsert_item, owner, item)

    def delete(self, owner: str, contact: JID) -> Deferred[None]:
        self._items.get(owner, {}).pop(contact, None)
        return self._write(_delete_item, owner, str(contact))

    def forget_owner(self, owner: str) -> None:
        self._items.pop(owner, None)

    def owners_with(self, contact: JID) -> list[str]:
        return [o for o, items in self._items.items() if contact in items]

    def _write(self, fn: Any, *args: Any) -> Deferred[None]:
        d = self._db.run(fn, *args)
        # the memory copy is already current; a failed write is logged, never silent
        d.addErrback(lambda f: log.err(f, "roster write failed"))
        return d


def _upsert_item(db: sqlite_utils.Database, owner: str, item: RosterItem) -> None:
    db["roster"].upsert(
        {
            "owner": owner,
            "contact": str(item.contact),
            "name": item.name or "",
            "groups": json.dumps(list(item.groups)),
            "subscription": item.state.sub.value,
            "ask": int(item.state.pending_out),
            "pending_in": int(item.state.pending_in),
            "approved": int(item.state.approved),
            "in_roster": int(item.in_roster),
        },
        pk=("owner", "contact"),
    )


def _delete_item(db: sqlite_utils.Database, owner: str, contact: str) -> None:
    db.conn.execute("DELETE FROM roster WHERE owner = ? AND contact = ?", (owner, contact))
