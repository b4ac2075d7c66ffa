"""Presence state of every user: endpoints, manual state, calendar, notes, levels, blocks.

Machine state (what each endpoint says) lives in memory only: after a restart everyone is
Offline until they reconnect. What the user chose (manual state, notes, access levels, blocks,
privacy mode, calendar) is written through to the store and survives restarts. Each change
re-aggregates the user and, when the result differs, tells the listeners (the router).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils
from twisted.internet.defer import Deferred, succeed
from twisted.python import log

from standard_edition.core.events import EventBus
from standard_edition.core.jid import JID
from standard_edition.presence.access import LEVEL_NAMES, Level, default_level
from standard_edition.presence.aggregate import aggregate, next_change
from standard_edition.presence.model import (
    Activity,
    Aggregate,
    CalendarBlock,
    EndpointState,
    Manual,
)
from standard_edition.store.database import Database


class Keep:
    """Leave this part of the state as it is."""


KEEP = Keep()
Listener = Callable[[str, Aggregate, Aggregate | None], None]


@dataclass
class UserPresence:
    endpoints: dict[str, EndpointState] = field(default_factory=dict)
    manual: Manual | None = None
    calendar: list[CalendarBlock] = field(default_factory=list)
    note: str | None = None
    oof_note: str | None = None
    privacy: bool | None = None  # None: the server's default
    levels: dict[JID, Level] = field(default_factory=dict)
    blocked: set[JID] = field(default_factory=set)
    last: Aggregate | None = None
    timer: Any = None


class PresenceService:
    def __init__(
        self, reactor: Any, db: Database, domain: str, privacy_default: bool = False
    ) -> None:
        self.privacy_default = privacy_default
        self._reactor = reactor
        self._db = db
        self.domain = domain
        self._users: dict[str, UserPresence] = {}
        self.listeners: list[Listener] = []
        # told when what a watcher may see changed without the aggregate changing
        self.level_listeners: list[Callable[[str], None]] = []
        self.events: EventBus | None = None  # told of each aggregate change (topic "presence")

    @property
    def reactor(self) -> Any:
        """The reactor (IReactorTime) this service's timers, and the router's, run on."""
        return self._reactor

    def now(self) -> float:
        return float(self._reactor.seconds())

    # -- loading -----------------------------------------------------------------------------

    def load(self) -> Deferred[None]:
        def read(db: sqlite_utils.Database) -> dict[str, list[dict[str, Any]]]:
            return {
                t: list(db[t].rows)
                for t in ("presence_settings", "access_levels", "blocklist", "calendar")
            }

        def keep(tables: dict[str, list[dict[str, Any]]]) -> None:
            from standard_edition.core.jid import parse_jid

            for r in tables["presence_settings"]:
                u = self._user(r["username"])
                u.privacy = None if r["privacy"] is None else bool(r["privacy"])
                u.note = r["note"]
                u.oof_note = r["oof_note"]
                if r["manual_code"] is not None:
                    act = Activity(r["manual_activity"]) if r["manual_activity"] else None
                    u.manual = Manual(r["manual_code"], act, r["manual_until"])
            for r in tables["access_levels"]:
                self._user(r["owner"]).levels[parse_jid(r["contact"])] = LEVEL_NAMES[r["level"]]
            for r in tables["blocklist"]:
                self._user(r["owner"]).blocked.add(parse_jid(r["jid"]))
            for r in tables["calendar"]:
                block = CalendarBlock(Activity(r["activity"]), r["start"], r["end"])
                self._user(r["owner"]).calendar.append(block)

        return self._db.run(read).addCallback(keep)

    def _user(self, username: str) -> UserPresence:
        u = self._users.get(username)
        if u is None:
            u = self._users[username] = UserPresence()
        return u

    def forget(self, username: str) -> None:
        u = self._users.pop(username, None)
        if u is not None and u.timer is not None and u.timer.active():
            u.timer.cancel()

    # -- reading -----------------------------------------------------------------------------

    def aggregate(self, username: str) -> Aggregate:
        u = self._user(username)
        if u.last is not None:
            # kept current: every input change and every timed threshold re-aggregates, and
            # a broadcast asks once per access level its watchers have
            return u.last
        return aggregate(u.endpoints.values(), u.manual, u.calendar, self.now(), u.note, u.oof_note)

    def details(self, username: str) -> dict[str, Any]:
        u = self._user(username)
        return {
            "endpoints": dict(u.endpoints),
            "manual": u.manual,
            "calendar": list(u.calendar),
            "privacy": self.privacy(username),
            "levels": dict(u.levels),
            "blocked": sorted(str(j) for j in u.blocked),
        }

    def level(self, owner: str, watcher: JID) -> Level:
        """The access level `watcher` has to `owner`'s presence."""
        u = self._users.get(owner)
        bare = watcher.bare
        if u is not None:
            if bare in u.blocked or JID(None, bare.domain, None) in u.blocked:
                return Level.BLOCKED
            explicit = u.levels.get(bare)
            if explicit is not None:
                return explicit
        return default_level(self.domain, bare.domain)

    def is_blocked(self, owner: str, other: JID) -> bool:
        u = self._users.get(owner)
        if u is None:
            return False
        bare = other.bare
        return bare in u.blocked or JID(None, bare.domain, None) in u.blocked

    def blocklist(self, owner: str) -> list[JID]:
        return sorted(self._user(owner).blocked, key=str)

    def privacy(self, owner: str) -> bool:
        u = self._users.get(owner)
        if u is None or u.privacy is None:
            return self.privacy_default
        return u.privacy

    # -- machine state -----------------------------------------------------------------------

    def endpoint_update(
        self,
        username: str,
        key: str,
        state: EndpointState,
        *,
        manual: Manual | Keep | None = KEEP,
        note: str | Keep | None = KEEP,
    ) -> bool:
        """One endpoint published its state (and maybe a manual state or a note); True when
        the user's aggregate changed, in which case the listeners were told."""
        u = self._user(username)
        u.endpoints[key] = state
        save = False
        if not isinstance(manual, Keep) and manual != u.manual:
            u.manual, save = manual, True
        if not isinstance(note, Keep) and note != u.note:
            u.note, save = note, True
        if save:
            self._save_settings(username)
        return self._changed(username)

    def endpoint_remove(self, username: str, key: str) -> bool:
        u = self._users.get(username)
        if u is not None and u.endpoints.pop(key, None) is not None:
            return self._changed(username)
        return False

    # -- choices, persisted ------------------------------------------------------------------

    def set_manual(self, username: str, manual: Manual | None) -> Deferred[None]:
        u = self._user(username)
        if u.manual == manual:
            return self._noop()
        u.manual = manual
        self._changed(username)
        return self._save_settings(username)

    def set_note(self, username: str, note: str | None) -> Deferred[None]:
        u = self._user(username)
        if u.note == note:
            return self._noop()
        u.note = note
        self._changed(username)
        return self._save_settings(username)

    def set_oof_note(self, username: str, note: str | None) -> Deferred[None]:
        u = self._user(username)
        u.oof_note = note
        self._changed(username)
        return self._save_settings(username)

    def set_privacy(self, username: str, on: bool) -> Deferred[None]:
        self._user(username).privacy = on
        return self._save_settings(username)

    def set_calendar(self, username: str, blocks: list[CalendarBlock]) -> Deferred[None]:
        u = self._user(username)
        u.calendar = sorted(blocks, key=lambda b: b.start)
        self._changed(username)

        def write(db: sqlite_utils.Database) -> None:
            db.conn.execute("DELETE FROM calendar WHERE owner = ?", (username,))
            db["calendar"].insert_all(
                {"owner": username, "activity": b.activity.value, "start": b.start, "end": b.end}
                for b in u.calendar
            )

        return self._write(write)

    def set_level(self, owner: str, contact: JID, level: Level | None) -> Deferred[None]:
        """Set (or with None, reset to the default) a contact's access level."""
        u = self._user(owner)
        contact = contact.bare
        if level is None:
            u.levels.pop(contact, None)
        else:
            u.levels[contact] = level
        self._notify_level(owner)

        def write(db: sqlite_utils.Database) -> None:
            db.conn.execute(
                "DELETE FROM access_levels WHERE owner = ? AND contact = ?", (owner, str(contact))
            )
            if level is not None:
                db["access_levels"].insert(
                    {"owner": owner, "contact": str(contact), "level": level.label}
                )

        return self._write(write)

    def block(self, owner: str, jids: list[JID]) -> Deferred[None]:
        u = self._user(owner)
        new = [j.bare for j in jids if j.bare not in u.blocked]
        u.blocked.update(new)
        self._notify_level(owner)

        def write(db: sqlite_utils.Database) -> None:
            db["blocklist"].upsert_all(
                ({"owner": owner, "jid": str(j)} for j in new), pk=("owner", "jid")
            )

        return self._write(write)

    def unblock(self, owner: str, jids: list[JID] | None) -> Deferred[None]:
        """Unblock the given addresses, or everyone with None (XEP-0191 §3.4)."""
        u = self._user(owner)
        gone = set(u.blocked) if jids is None else {j.bare for j in jids} & u.blocked
        u.blocked -= gone
        self._notify_level(owner)

        def write(db: sqlite_utils.Database) -> None:
            db.conn.executemany(
                "DELETE FROM blocklist WHERE owner = ? AND jid = ?",
                [(owner, str(j)) for j in gone],
            )

        return self._write(write)

    # -- change propagation ------------------------------------------------------------------

    def _notify_level(self, owner: str) -> None:
        for cb in self.level_listeners:
            cb(owner)

    def _changed(self, username: str) -> bool:
        u = self._user(username)
        agg = aggregate(u.endpoints.values(), u.manual, u.calendar, self.now(), u.note, u.oof_note)
        before, u.last = u.last, agg
        self._schedule(username)
        if before == agg:
            return False
        for cb in self.listeners:
            cb(username, agg, before)
        if self.events is not None and self.events.wants("presence"):
            self.events.publish("presence", self._event(username, agg))
        return True

    def _event(self, username: str, agg: Aggregate) -> dict[str, Any]:
        return {
            "jid": f"{username}@{self.domain}",
            "availability": {
                "code": agg.code,
                "band": agg.band.value,
                "label": agg.label,
                "activity": agg.activity.value if agg.activity else None,
            },
            "note": agg.note,
            "oof_note": agg.oof_note,
            "source": agg.source,
        }

    def _schedule(self, username: str) -> None:
        u = self._user(username)
        if u.timer is not None and u.timer.active():
            u.timer.cancel()
        u.timer = None
        if not u.endpoints:
            return
        when = next_change(u.endpoints.values(), u.manual, u.calendar, self.now())
        if when is not None:
            # the idle thresholds, a manual state's expiry or a calendar edge is due
            u.timer = self._reactor.callLater(max(0.0, when - self.now()), self._changed, username)

    def refresh(self, username: str) -> None:
        """Re-aggregate now (after the admin changed something that time alone would not)."""
        self._changed(username)

    def _save_settings(self, username: str) -> Deferred[None]:
        u = self._user(username)
        m = u.manual
        row = {
            "username": username,
            "privacy": None if u.privacy is None else int(u.privacy),
            "manual_code": m.code if m else None,
            "manual_activity": m.activity.value if m and m.activity else None,
            "manual_until": m.until if m else None,
            "note": u.note,
            "oof_note": u.oof_note,
        }

        def write(db: sqlite_utils.Database) -> None:
            db["presence_settings"].upsert(row, pk="username")

        return self._write(write)

    def _write(self, fn: Callable[[sqlite_utils.Database], None]) -> Deferred[None]:
        d = self._db.run(fn)
        d.addErrback(lambda f: log.err(f, "presence settings not stored"))
        return d

    @staticmethod
    def _noop() -> Deferred[None]:
        return succeed(None)
