"""What the control socket may do to the running server (the ControlAPI of control/api.py)."""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from standard_edition import __version__
from standard_edition.archive import store as archive_store
from standard_edition.archive.policy import ORIGIN_FILTERS, PolicyError
from standard_edition.archive.service import Archive, when
from standard_edition.config import Config
from standard_edition.control.api import ControlError
from standard_edition.core.accounts import TEST_TOKEN_TTL, Account, AccountError, Accounts
from standard_edition.core.federation import RUNTIME_KEYS as FEDERATION_KEYS
from standard_edition.core.jid import InvalidJID, parse_jid, prepare_username
from standard_edition.core.logring import LEVELS, MAX_LINES, LogRing
from standard_edition.core.router import Router
from standard_edition.core.sessions import describe as describe_session
from standard_edition.core.settings import Settings
from standard_edition.core.url_filter import RUNTIME_KEYS as URL_FILTER_KEYS
from standard_edition.core.url_filter_admin import UrlFilterAdmin
from standard_edition.core.user_import import UserImportAdmin
from standard_edition.edge.admin import EdgeAdmin
from standard_edition.presence.access import LEVEL_NAMES, Level
from standard_edition.presence.aggregate import effective_code
from standard_edition.presence.calendar import CalendarError, parse_ics
from standard_edition.presence.model import LABELS, MAX_NOTE, STATE_NAMES, Manual, band
from standard_edition.store.backup import SnapshotError, Snapshots

# settings se-ctl may change at run time, with their config.toml value
RUNTIME_KEYS: dict[str, Callable[[Config], Any]] = {
    "im.offline": lambda cfg: cfg.im_offline,
    "archive.mode": lambda cfg: cfg.archive_mode,
    "archive.users": lambda cfg: sorted(cfg.archive_users),
    "archive.internal": lambda cfg: cfg.archive_internal,
    "archive.external": lambda cfg: cfg.archive_external,
    "archive.critical": lambda cfg: cfg.archive_critical,
    "archive.keep_days": lambda cfg: cfg.archive_keep_days,
    **FEDERATION_KEYS,
    **URL_FILTER_KEYS,
}
MAX_PAGE = 5000  # archive records in one answer over the control socket
MAX_ICS = 8_000_000  # characters of an iCalendar file sent over the control socket

log = Logger(namespace="se.admin")


class Admin(EdgeAdmin, UrlFilterAdmin, UserImportAdmin):
    def __init__(
        self,
        cfg: Config,
        router: Router,
        listeners: Callable[[], list[dict[str, Any]]],
        settings: Settings,
        clock: Callable[[], float] = time.time,
        rooms_listing: Callable[[], list[dict[str, Any]]] | None = None,
        archive: Archive | None = None,
        snapshots: Snapshots | None = None,
        certificate_sha256: Callable[[], str] | None = None,
        store_paths: Callable[[], list[Any]] | None = None,
    ) -> None:
        self.archive = archive
        self.snapshots = snapshots
        self._certificate_sha256 = certificate_sha256
        self._store_paths = store_paths
        self.settings = settings
        self.rooms_listing = rooms_listing
        self.cfg = cfg
        self.router = router
        self.accounts: Accounts = router.accounts
        self._listeners = listeners
        self._clock = clock
        self.started = clock()
        self.log_ring: LogRing | None = None  # set by the server
        self.upload: Any = None  # upload/service.py UploadService, set by the server
        self.pep: Any = None  # pep/service.py PepService, set by the server

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

    # -- presence ----------------------------------------------------------------------------

    def presence_show(self, jid: str) -> dict[str, Any]:
        acct = self._account(jid)
        ps = self.router.presence
        agg = ps.aggregate(acct.username)
        d = ps.details(acct.username)
        now = ps.now()
        manual = d["manual"]
        endpoints = []
        for ep in self.router.sessions.of_user(acct.username):
            state = d["endpoints"].get(ep.jid.resource)
            if state is None:
                continue
            code = effective_code(state, now)
            endpoints.append(
                {
                    "endpoint": str(ep.jid),
                    "protocol": ep.protocol,
                    "published": state.code,
                    "idle_since": _iso(state.idle_since) if state.idle_since else None,
                    "code": code,
                    "state": LABELS[band(code)],
                }
            )
        return {
            "jid": self._jid(acct.username),
            "availability": {
                "code": agg.code,
                "band": agg.band.value,
                "label": agg.label,
                "activity": agg.activity.value if agg.activity else None,
            },
            "source": agg.source,
            "note": agg.note,
            "oof_note": agg.oof_note,
            "manual": None
            if manual is None
            else {
                "code": manual.code,
                "activity": manual.activity.value if manual.activity else None,
                "until": _iso(manual.until) if manual.until else None,
                "in_force": manual.active(now),
            },
            "calendar": [
                {"activity": b.activity.value, "start": _iso(b.start), "end": _iso(b.end)}
                for b in d["calendar"]
                if b.end > now
            ],
            "endpoints": endpoints,
            "privacy": d["privacy"],
            "blocked": d["blocked"],
            "levels": {str(k): v.label for k, v in sorted(d["levels"].items(), key=str)},
        }

    @inlineCallbacks
    def presence_set(  # type: ignore[no-untyped-def]
        self,
        jid: str,
        state: str | None = None,
        until: float | int | None = None,
        note: str | None = None,
        oof_note: str | None = None,
        privacy: bool | None = None,
    ):
        acct = self._account(jid)
        ps = self.router.presence
        if state is None and until is not None:
            raise ControlError("invalid", "--until needs --state")
        for name, text in (("note", note), ("oof_note", oof_note)):
            if text is not None and len(text) > MAX_NOTE:
                raise ControlError("invalid", f"{name}: at most {MAX_NOTE} characters")
        if state is not None:
            if state not in STATE_NAMES:
                names = ", ".join(sorted(STATE_NAMES))
                raise ControlError("invalid", f"unknown state {state!r}; one of: {names}")
            if until is not None and until <= ps.now():
                raise ControlError("invalid", "--until is in the past")
            code, activity = STATE_NAMES[state]
            yield ps.set_manual(acct.username, Manual(code, activity, until))
        if note is not None:
            yield ps.set_note(acct.username, note or None)
        if oof_note is not None:
            yield ps.set_oof_note(acct.username, oof_note or None)
        if privacy is not None:
            yield ps.set_privacy(acct.username, privacy)
        return self.presence_show(jid)

    @inlineCallbacks
    def presence_clear(self, jid: str):  # type: ignore[no-untyped-def]
        acct = self._account(jid)
        yield self.router.presence.set_manual(acct.username, None)
        return self.presence_show(jid)

    @inlineCallbacks
    def presence_level(self, jid: str, contact: str, level: str):  # type: ignore[no-untyped-def]
        acct = self._account(jid)
        try:
            other = parse_jid(contact).bare
        except InvalidJID as e:
            raise ControlError("invalid", f"{contact!r} is not a valid address: {e}") from None
        if level == "default":
            chosen = None
        elif level in LEVEL_NAMES:
            chosen = LEVEL_NAMES[level]
        else:
            names = ", ".join([*sorted(LEVEL_NAMES), "default"])
            raise ControlError("invalid", f"unknown level {level!r}; one of: {names}")
        ps = self.router.presence
        if chosen is Level.BLOCKED:
            yield ps.block(acct.username, [other])
        else:
            if ps.is_blocked(acct.username, other):
                yield ps.unblock(acct.username, [other])
            yield ps.set_level(acct.username, other, chosen)
        effective = ps.level(acct.username, other)
        return {"jid": self._jid(acct.username), "contact": str(other), "level": effective.label}

    @inlineCallbacks
    def calendar_import(self, jid: str, ics: str):  # type: ignore[no-untyped-def]
        acct = self._account(jid)
        if len(ics) > MAX_ICS:
            raise ControlError("invalid", f"calendar file over {MAX_ICS // 1_000_000} MB")
        try:
            got = parse_ics(ics)
        except CalendarError as e:
            raise ControlError("invalid", f"calendar: {e}") from None
        yield self.router.presence.set_calendar(acct.username, got.blocks)
        return {
            "jid": self._jid(acct.username),
            "blocks": len(got.blocks),
            "recurring_skipped": got.recurring_skipped,
            "free_skipped": got.free_skipped,
        }

    @inlineCallbacks
    def calendar_clear(self, jid: str):  # type: ignore[no-untyped-def]
        acct = self._account(jid)
        yield self.router.presence.set_calendar(acct.username, [])
        return {"jid": self._jid(acct.username)}

    # -- run-time settings (DESIGN §8: stored in the database, win over config.toml) -----------

    @inlineCallbacks
    def im_offline(self, enabled: bool):  # type: ignore[no-untyped-def]
        yield self.settings.set("im.offline", enabled)
        self.router.offline_enabled = enabled
        return {"offline_im": enabled, "source": "se-ctl"}

    @inlineCallbacks
    def config_reset(self, key: str):  # type: ignore[no-untyped-def]
        if key not in RUNTIME_KEYS:
            raise ControlError(
                "invalid", f"{key}: not a run-time setting; one of: {', '.join(RUNTIME_KEYS)}"
            )
        if key.startswith("archive.") and self.archive is not None:
            yield self.archive.reset([key.removeprefix("archive.")])
        yield self.settings.delete(key)
        value = RUNTIME_KEYS[key](self.cfg)
        if key == "im.offline":
            self.router.offline_enabled = value
        if key.startswith("federation.") and self.router.federation is not None:
            self.router.federation.refresh()
        if key in URL_FILTER_KEYS:
            self.refresh_url_filter()
        return {"key": key, "value": value, "source": "config"}

    def conference_list(self) -> list[dict[str, Any]]:
        return self.rooms_listing() if self.rooms_listing is not None else []

    # -- archive (DESIGN §6) -------------------------------------------------------------------

    def _archive(self) -> Archive:
        if self.archive is None:
            raise ControlError("unavailable", "this server has no archive")
        return self.archive

    def _bare(self, what: str, jid: str) -> str:
        try:
            parsed = parse_jid(jid)
        except InvalidJID as e:
            raise ControlError("invalid", f"{what} {jid!r} is not a valid address: {e}") from None
        if parsed.local is None:
            raise ControlError("invalid", f"{what} {jid!r}: give an address, user@domain")
        return str(parsed.bare)

    def archive_policy_show(self) -> dict[str, Any]:
        return self._archive().policy_json()

    def archive_policy_set(
        self,
        mode: str | None = None,
        users: list[str] | None = None,
        add: list[str] | None = None,
        remove: list[str] | None = None,
        internal: bool | None = None,
        external: bool | None = None,
        critical: bool | None = None,
        keep_days: int | None = None,
    ) -> Deferred[dict[str, Any]]:
        archive = self._archive()
        changes: dict[str, Any] = {
            k: v
            for k, v in (
                ("mode", mode),
                ("internal", internal),
                ("external", external),
                ("critical", critical),
                ("keep_days", keep_days),
            )
            if v is not None
        }
        for name, given in (("users", users), ("add", add), ("remove", remove)):
            if given is not None and not all(isinstance(u, str) for u in given):
                raise ControlError("invalid", f"{name}: expected a list of addresses")
        if users is not None or add or remove:
            chosen = set(archive.policy.users if users is None else ())
            chosen |= {self._bare("user", u) for u in users or ()}
            chosen |= {self._bare("user", u) for u in add or ()}
            chosen -= {self._bare("user", u) for u in remove or ()}
            changes["users"] = sorted(chosen)
        if not changes:
            raise ControlError("invalid", "nothing to change; see se-ctl archive policy set --help")
        try:
            return archive.set_policy(**changes)  # type: ignore[no-any-return]
        except PolicyError as e:
            raise ControlError("invalid", str(e)) from None

    def archive_search(
        self,
        user: str | None = None,
        peer: str | None = None,
        room: str | None = None,
        since: str | None = None,
        until: str | None = None,
        text: str | None = None,
        protocol: str | None = None,
        after: int = 0,
        limit: int = 50,
        count: bool = False,
        origin: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        archive = self._archive()
        if not 1 <= limit <= MAX_PAGE:
            raise ControlError("invalid", f"limit: from 1 to {MAX_PAGE}")
        origins = ORIGIN_FILTERS.get(origin or "") if origin is not None else ()
        if origins is None:
            raise ControlError("invalid", f"origin: one of {', '.join(ORIGIN_FILTERS)}")
        if peer is not None and not (peer.startswith("*@") and len(peer) > 2):
            peer = self._bare("peer", peer)
        elif peer is not None:
            peer = peer.lower()
        try:
            q = archive_store.Query(
                user=None if user is None else self._bare("user", user),
                peer=peer,
                room=None if room is None else self._bare("room", room),
                since=None if since is None else when(since),
                until=None if until is None else when(until, end=True),
                text=text or None,
                protocol=protocol,
                origins=origins,
                after=max(0, after),
                limit=limit,
            )
        except ValueError as e:
            raise ControlError("invalid", str(e)) from None

        def bad_query(f: Any) -> Any:
            if f.check(archive_store.QueryError):
                raise ControlError("invalid", str(f.value))
            return f

        return archive.search(q, with_count=count).addErrback(bad_query)

    def archive_purge(self, before: str) -> Deferred[dict[str, Any]]:
        archive = self._archive()
        try:
            cutoff = when(before)
        except ValueError as e:
            raise ControlError("invalid", f"before: {e}") from None
        if cutoff > int(self._clock() * 1_000_000):
            raise ControlError("invalid", f"before: {before!r} is in the future")
        return archive.purge(cutoff, "se-ctl archive purge").addCallback(
            lambda p: {
                "removed": p.removed,
                "before": archive_store.iso(cutoff),
                "first_kept": p.first_kept,
            }
        )

    def archive_verify(self) -> Deferred[dict[str, Any]]:
        return self._archive().verify().addCallback(lambda v: v.as_json())

    # -- synthetic transactions and backups (DESIGN §9) --------------------------------------

    def test_credential(self, jid: str) -> dict[str, Any]:
        acct = self._account(jid)
        if not acct.enabled:
            raise ControlError("disabled", f"{self._jid(acct.username)} is disabled")
        token = self.accounts.issue_test_token(acct.username)
        log.info("control: one-time test credential issued for {jid}", jid=self._jid(acct.username))
        return {
            "jid": self._jid(acct.username),
            "token": token,
            "expires_in": TEST_TOKEN_TTL,
            "c2s": [x["address"] for x in self._listeners() if x["name"] == "c2s"],
            "certificate_sha256": self._certificate_sha256() if self._certificate_sha256 else None,
        }

    def _snapshots(self) -> Snapshots:
        if self.snapshots is None:
            raise ControlError("unavailable", "this server cannot make backups")
        return self.snapshots

    def backup_start(self, uploads: bool = True) -> Deferred[dict[str, Any]]:
        return self._snapshot_errors(self._snapshots().start(uploads))

    def backup_read(self, id: str, name: str, offset: int) -> Deferred[dict[str, Any]]:
        try:
            d = self._snapshots().read(id, name, offset)
        except SnapshotError as e:
            raise ControlError(e.code, e.message) from None
        return d.addCallback(
            lambda data: {"data": base64.b64encode(data).decode("ascii"), "eof": not data}
        )

    def backup_finish(self, id: str) -> dict[str, Any]:
        try:
            self._snapshots().finish(id)
        except SnapshotError as e:
            raise ControlError(e.code, e.message) from None
        return {"id": id}

    @staticmethod
    def _snapshot_errors(d: Deferred[Any]) -> Deferred[Any]:
        def translate(f: Any) -> Any:
            if f.check(SnapshotError):
                raise ControlError(f.value.code, f.value.message)
            return f

        return d.addErrback(translate)

    def _store_bytes(self) -> int:
        total = 0
        for path in self._store_paths() if self._store_paths else ():
            for suffix in ("", "-wal"):
                with contextlib.suppress(OSError):
                    total += os.stat(f"{path}{suffix}").st_size
        return total

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
            "settings": {
                key: {
                    "value": self.settings.get(key, default(self.cfg)),
                    "source": "se-ctl" if self.settings.has(key) else "config",
                }
                for key, default in RUNTIME_KEYS.items()
            },
            "counters": dict(self.router.counters),
            "archive": self.archive.status() if self.archive is not None else None,
            "store_bytes": self._store_bytes(),
            "edge": self.edge_status(),
            "upload": self.upload.status() if self.upload is not None else None,
            "pep": self.pep.status() if self.pep is not None else None,
        }

    def log_tail(self, limit: int = 100, level: str = "info", after: int = 0) -> dict[str, Any]:
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LINES:
            raise ControlError("invalid", f"limit: a whole number from 1 to {MAX_LINES}")
        if level not in LEVELS[1:]:
            raise ControlError("invalid", f"level: one of {', '.join(LEVELS[1:])}")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise ControlError("invalid", "after: a line's seq (0 for all)")
        ring = self.log_ring
        lines = ring.tail(limit, level, after) if ring is not None else []
        return {"lines": lines, "last": ring.seq if ring is not None else 0}

    def sessions(self) -> list[dict[str, Any]]:
        return sorted((self._session(ep) for ep in self.router.sessions), key=lambda s: s["jid"])

    @staticmethod
    def _session(ep: Any) -> dict[str, Any]:
        return describe_session(ep)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
