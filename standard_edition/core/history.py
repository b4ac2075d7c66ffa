"""Each user's message history (what XEP-0313 serves): both sides of their one-to-one chats.

Rows are written in batches on the store's thread: a message adds to a pending list that is
flushed within FLUSH_DELAY seconds, or at once when BATCH_MAX rows wait, so history never costs
a transaction per message. Queries flush first so a client always finds what it just sent.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import sqlite_utils
from twisted.internet.defer import Deferred, succeed
from twisted.python import log

from standard_edition import flatjson
from standard_edition.core.jid import JID, parse_jid
from standard_edition.core.model import Message
from standard_edition.store.database import Database

FLUSH_DELAY = 0.01
BATCH_MAX = 500
PAGE_MAX = 100  # results per query page at most


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    stamp: float
    message: Message


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[Entry]
    complete: bool  # nothing further in the direction of the query
    count: int  # how many rows match the filter in all


class UnknownId(Exception):
    """An RSM `after`/`before` id that is not in this user's history."""


class MessageHistory:
    def __init__(self, reactor: Any, db: Database) -> None:
        self._reactor = reactor
        self._db = db
        self._pending: list[dict[str, Any]] = []
        self._timer: Any = None
        self._flushing: Deferred[None] | None = None
        self.failures = 0
        # a message between two local users is recorded twice (each keeps their own line):
        # the second record reuses the first one's text
        self._last: tuple[Message | None, str] = (None, "")

    def record(self, owner: str, peer: JID, outgoing: bool, msg: Message, stamp: float) -> None:
        last, text = self._last
        if last is not msg:
            text = _encode(msg)
            self._last = (msg, text)
        self._pending.append(
            {
                "owner": owner,
                "peer": str(peer.bare),
                "stamp": stamp,
                "outgoing": int(outgoing),
                "message": text,
            }
        )
        if len(self._pending) >= BATCH_MAX:
            self.flush()
        elif self._timer is None:
            self._timer = self._reactor.callLater(FLUSH_DELAY, self.flush)

    def flush(self) -> Deferred[None]:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        rows, self._pending = self._pending, []
        if not rows:
            return succeed(None)

        def write(db: sqlite_utils.Database) -> None:
            db["mam"].insert_all(rows)

        def failed(f: Any) -> None:
            self.failures += len(rows)
            log.err(f, f"message history: {len(rows)} rows not stored")

        return self._db.run(write).addErrback(failed)

    def query(
        self,
        owner: str,
        *,
        peer: JID | None = None,
        start: float | None = None,
        end: float | None = None,
        after: int | None = None,
        before: int | None = None,
        last_page: bool = False,
        limit: int = PAGE_MAX,
    ) -> Deferred[Page]:
        """A page of the user's history, oldest first (RSM: after/before ids, or the last page)."""
        self.flush()
        limit = max(0, min(limit, PAGE_MAX))
        where = ["owner = ?"]
        args: list[Any] = [owner]
        if peer is not None:
            where.append("peer = ?")
            args.append(str(peer.bare))
        if start is not None:
            where.append("stamp >= ?")
            args.append(start)
        if end is not None:
            where.append("stamp <= ?")
            args.append(end)

        def read(db: sqlite_utils.Database) -> Page:
            for ref in (after, before):
                if (
                    ref is not None
                    and not db.execute(
                        "SELECT 1 FROM mam WHERE id = ? AND owner = ?", [ref, owner]
                    ).fetchone()
                ):
                    raise UnknownId(ref)
            base = " AND ".join(where)
            count = db.execute(f"SELECT COUNT(*) FROM mam WHERE {base}", args).fetchone()[0]
            cond, cargs = base, list(args)
            if after is not None:
                cond += " AND id > ?"
                cargs.append(after)
            if before is not None:
                cond += " AND id < ?"
                cargs.append(before)
            backwards = before is not None or last_page
            order = "DESC" if backwards else "ASC"
            rows = db.execute(
                f"SELECT id, stamp, message FROM mam WHERE {cond} ORDER BY id {order} LIMIT ?",
                [*cargs, limit + 1],
            ).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            if backwards:
                rows.reverse()
            entries = [Entry(r[0], r[1], decode_message(r[2], r[1])) for r in rows]
            return Page(entries, not more, count)

        # queued on the store's thread after the flush above, so it sees those rows
        return self._db.run(read)


def _encode(msg: Message) -> str:
    return _dumps(
        {
            "sender": str(msg.sender),
            "to": str(msg.to),
            "type": msg.type,
            "body": msg.body,
            "id": msg.id,
            "payload": [_xml(el) for el in msg.payload],
        }
    )


_dumps = flatjson.encoder()  # json.dumps's text, in half its time


def _xml(el: ET.Element) -> str:
    """One payload element as text that ET.fromstring reads back the same. A leaf with text
    only (a <body/>, nearly every payload) is written directly: ET.tostring costs three times
    as much."""
    tag = el.tag
    if not el.attrib and not len(el) and isinstance(tag, str) and tag[:1] == "{":
        ns, _, local = tag[1:].rpartition("}")
        return f"<{local} xmlns={quoteattr(ns)}>{escape(el.text or '')}</{local}>"
    return ET.tostring(el, encoding="unicode")


def decode_message(text: str, stamp: float) -> Message:
    rec = json.loads(text)
    return Message(
        sender=parse_jid(rec["sender"]),
        to=parse_jid(rec["to"]),
        type=rec["type"],
        body=rec["body"],
        id=rec["id"],
        payload=tuple(ET.fromstring(x) for x in rec["payload"]),
        delay=datetime.fromtimestamp(stamp, UTC),
    )
