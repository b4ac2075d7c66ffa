"""What the control socket can ask of the running server.

The control server (control/server.py) maps each request name to one method of an object that
implements ControlAPI; the core's implementation is core/admin.py. Methods return plain JSON-able
data, or a Deferred of it, and raise ControlError for anything the caller got wrong. Live events
("subscribe", "unsubscribe", "subscribers") belong to the connection, not to this API: see
control/stream.py.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred

JSON = Any
Result = JSON | Deferred[JSON]


class ControlError(Exception):
    """A refused request. code: a short machine word (not-found, exists, invalid, ...);
    message: the one line se-ctl prints."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ControlAPI(Protocol):
    # request "user.add" {"jid", "password", "name"?} -> {"jid", "name"}
    def user_add(self, jid: str, password: str, name: str | None = None) -> Result: ...

    # "user.list" {} -> [{"jid", "name", "enabled", "sessions"}]
    def user_list(self) -> Result: ...

    # "user.show" {"jid"} -> {"jid", "name", "enabled", "created", "sessions": [...], "roster": n}
    def user_show(self, jid: str) -> Result: ...

    # "user.remove" {"jid"} -> {"jid"}; ends the user's sessions
    def user_remove(self, jid: str) -> Result: ...

    # "user.passwd" {"jid", "password"} -> {"jid"}
    def user_passwd(self, jid: str, password: str) -> Result: ...

    # "user.disable" {"jid"} -> {"jid", "sessions_closed": n}; ends the user's sessions
    def user_disable(self, jid: str) -> Result: ...

    # "user.enable" {"jid"} -> {"jid"}
    def user_enable(self, jid: str) -> Result: ...

    # "user.import" {"rows": [{"line", "user", "name", "password"?}] (at most 500)}
    #   -> {"created": [{"line", "jid", "name", "password"? (only when generated)}],
    #       "failed": [{"line", "user", "error"}]}: each row is created whole or not at all
    def user_import(self, rows: list[dict[str, Any]]) -> Result: ...

    # "status" {} -> {"version", "domain", "uptime", "started", "listeners": [...],
    #                  "sessions": {"xmpp": n}, "users": n, "config": "path"}
    def status(self) -> Result: ...

    # "sessions" {} -> [{"jid", "protocol", "address", "since", "tls", "priority", "show"}]
    def sessions(self) -> Result: ...

    # "log.tail" {"limit"? (1..500, default 100), "level"? (info | warn | error: that or worse),
    #   "after"? (a seq: only newer lines)} -> {"lines": [{"seq", "time", "level", "namespace",
    #   "text"}], "last": seq}: the server's recent log lines, kept in memory (core/logring.py)
    def log_tail(self, limit: int = 100, level: str = "info", after: int = 0) -> Result: ...

    # "presence.show" {"jid"} -> {"jid", "availability": {"code", "band", "label", "activity"},
    #   "source", "note", "oof_note", "manual", "calendar", "endpoints": [...], "privacy", ...}
    def presence_show(self, jid: str) -> Result: ...

    # "presence.set" {"jid", "state"?, "until"? (epoch seconds), "note"?, "oof_note"?,
    #   "privacy"?} -> the new presence.show; state is a band or activity name (STATE_NAMES)
    def presence_set(
        self,
        jid: str,
        state: str | None = None,
        until: float | int | None = None,
        note: str | None = None,
        oof_note: str | None = None,
        privacy: bool | None = None,
    ) -> Result: ...

    # "presence.clear" {"jid"} -> presence.show after the manual state ends
    def presence_clear(self, jid: str) -> Result: ...

    # "presence.level" {"jid", "contact", "level"} -> {"jid", "contact", "level"};
    # level: blocked | external | colleagues | workgroup | friends-and-family | default
    def presence_level(self, jid: str, contact: str, level: str) -> Result: ...

    # "calendar.import" {"jid", "ics": text of an iCalendar file} -> {"jid", "blocks",
    #   "recurring_skipped", "free_skipped"}; replaces the user's calendar blocks
    def calendar_import(self, jid: str, ics: str) -> Result: ...

    # "calendar.clear" {"jid"} -> {"jid"}
    def calendar_clear(self, jid: str) -> Result: ...

    # "im.offline" {"enabled"} -> {"offline_im": bool, "source": "se-ctl"}; stored, wins over
    # config.toml until "config.reset" {"key": "im.offline"}
    def im_offline(self, enabled: bool) -> Result: ...

    # "config.reset" {"key"} -> {"key", "value", "source": "config"}
    def config_reset(self, key: str) -> Result: ...

    # "im.url.filter.show" {} -> {"mode", "scope", "domains", "prefix",
    #   "source": {"mode"|"scope"|"domains"|"prefix": "config" | "se-ctl"}}: the IM URL filter
    def im_url_filter_show(self) -> Result: ...

    # "im.url.filter.set" {"mode"? (off | warn | block), "scope"? (domains | all), "prefix"?,
    #   "add"? [domain], "remove"? [domain]} -> im.url.filter.show; stored, in force at once,
    #   winning over config.toml until config.reset of im.url_filter.KEY
    def im_url_filter_set(
        self,
        mode: str | None = None,
        scope: str | None = None,
        prefix: str | None = None,
        add: list[str] | None = None,
        remove: list[str] | None = None,
    ) -> Result: ...

    # "conference.list" {} -> [{"room", "name", "subject", "persistent", "members_only", "count",
    #                         "occupants": [...], "members", "history"}]
    def conference_list(self) -> Result: ...

    # "archive.policy.show" {} -> {"mode", "users", "internal", "external", "critical",
    #   "keep_days", "source": {setting: "config" | "se-ctl"}}
    def archive_policy_show(self) -> Result: ...

    # "archive.policy.set" {"mode"?, "users"? (replaces), "add"?, "remove"?, "internal"?,
    #   "external"?, "critical"?, "keep_days"?} -> archive.policy.show; stored (wins over
    #   config.toml until config.reset), in force at once, and recorded in the archive
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
    ) -> Result: ...

    # "archive.search" {"user"?, "peer"? (address or *@domain), "room"?, "since"?, "until"?
    #   (YYYY-MM-DD: whole days, server time zone, inclusive; or ISO 8601), "text"? (FTS5),
    #   "protocol"?, "after"? (cursor), "limit"? (1..5000), "count"?}
    #   -> {"records": [{"id", "time", "ts", "sender", "recipient", "room", "body", ...}],
    #       "next": cursor | null, "total"? }
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
        origin: str | None = None,  # internal | remote | edge | federated | external
    ) -> Result: ...

    # "archive.purge" {"before": date or date-time} -> {"removed", "before", "first_kept"};
    #   recorded in the archive's chain
    def archive_purge(self, before: str) -> Result: ...

    # "archive.verify" {} -> {"ok", "records", "days", "first_id", "last_id", "head",
    #   "broken": {"id", "day", "reason"} | null}
    def archive_verify(self) -> Result: ...

    # "test.credential" {"jid"} -> {"jid", "token", "expires_in", "c2s": ["host:port"],
    #   "certificate_sha256"}: a one-time credential SASL PLAIN accepts once for that account
    #   within expires_in seconds (se-ctl test im|presence); logged, never stored
    def test_credential(self, jid: str) -> Result: ...

    # "backup.start" {"uploads"?} -> {"id", "chunk", "manifest": {"format", "version", "domain",
    #   "schemas": {file: user_version}, "uploads": "included" | "left out",
    #   "members": [{"name", "size", "sha256"}], ...}}:
    #   a consistent snapshot of every database (SQLite backup API on its writer thread), the
    #   config file and the certificate, and with "uploads" (default true) the uploaded files
    #   as members uploads/<token>; kept until backup.finish (or 10 idle minutes)
    def backup_start(self, uploads: bool = True) -> Result: ...

    # "backup.read" {"id", "name", "offset"} -> {"data": base64, "eof": bool}: the member's
    #   bytes from offset, at most "chunk" of them
    def backup_read(self, id: str, name: str, offset: int) -> Result: ...

    # "backup.finish" {"id"} -> {"id"}: the snapshot is removed
    def backup_finish(self, id: str) -> Result: ...

    # "federation.list" {} -> {"enabled", "mode", "allow", "block", "trusted": {domain: sha256},
    #   "source": {"mode"|"allow"|"block": "config" | "se-ctl"}, "defaults", "streams"}
    def federation_list(self) -> Result: ...

    # "federation.mode" {"mode": allowlist | blocklist | open} -> federation.list; stored
    def federation_mode(self, mode: str) -> Result: ...

    # "federation.allow" {"domain", "remove"?} -> federation.list; allowing also unblocks
    def federation_allow(self, domain: str, remove: bool = False) -> Result: ...

    # "federation.block" {"domain", "remove"?} -> federation.list; its streams end at once
    def federation_block(self, domain: str, remove: bool = False) -> Result: ...

    # "federation.trust" {"domain", "cert"? (PEM text se-ctl read), "remove"?}
    #   -> {"domain", "sha256"}: the peer's self-signed certificate proves its domain
    def federation_trust(
        self, domain: str, cert: str | None = None, remove: bool = False
    ) -> Result: ...

    # "policy.show" {"jid"} -> {"jid", "outside_access", "federation_access", "source"}
    def policy_show(self, jid: str) -> Result: ...

    # "policy.set" {"jid", "outside_access"?, "federation_access"?} -> policy.show; withdrawing
    #   outside access ends the user's edge sessions
    def policy_set(
        self,
        jid: str,
        outside_access: bool | None = None,
        federation_access: bool | None = None,
    ) -> Result: ...
