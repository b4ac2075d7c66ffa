"""What se-ctl may do about the IM URL filter (`se-ctl im url-filter ...`).

Mixed into core/admin.py's Admin; the requests are declared in control/api.py. Each change is
a run-time setting (DESIGN §8): stored, in force for the next message, winning over config.toml
until `se-ctl config reset im.url_filter.KEY`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from standard_edition.config import ConfigError, _domain
from standard_edition.control.api import ControlError
from standard_edition.core.url_filter import (
    MAX_PREFIX,
    MODES,
    RUNTIME_KEYS,
    SCOPES,
    from_settings,
)

MAX_DOMAINS = 10_000  # listed domains; each message is matched in time independent of this


class UrlFilterAdmin:
    cfg: Any
    router: Any
    settings: Any

    def refresh_url_filter(self) -> None:
        """Put the effective settings in force (after a change or a reset)."""
        self.router.url_filter = from_settings(self.cfg, self.settings, self.router.counters)

    def im_url_filter_show(self) -> dict[str, Any]:
        def value(key: str) -> Any:
            return self.settings.get(key, RUNTIME_KEYS[key](self.cfg))

        return {
            "mode": value("im.url_filter.mode"),
            "scope": value("im.url_filter.scope"),
            "domains": sorted(value("im.url_filter.domains")),
            "prefix": value("im.url_filter.prefix"),
            "source": {
                k.removeprefix("im.url_filter."): "se-ctl" if self.settings.has(k) else "config"
                for k in RUNTIME_KEYS
            },
        }

    @inlineCallbacks
    def im_url_filter_set(  # type: ignore[no-untyped-def]
        self,
        mode: str | None = None,
        scope: str | None = None,
        prefix: str | None = None,
        add: list[str] | None = None,
        remove: list[str] | None = None,
    ):
        changes: dict[str, Any] = {}
        if mode is not None:
            if mode not in MODES:
                raise ControlError("invalid", f"mode: {mode!r} is not one of {', '.join(MODES)}")
            changes["im.url_filter.mode"] = mode
        if scope is not None:
            if scope not in SCOPES:
                raise ControlError("invalid", f"scope: {scope!r} is not one of {', '.join(SCOPES)}")
            changes["im.url_filter.scope"] = scope
        if prefix is not None:
            if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX:
                raise ControlError("invalid", f"prefix: at most {MAX_PREFIX} characters")
            if any(ord(c) < 32 or ord(c) == 127 for c in prefix):
                raise ControlError("invalid", "prefix: one line of printable characters")
            changes["im.url_filter.prefix"] = prefix
        if add or remove:
            current = self.im_url_filter_show()["domains"]
            domains = dict.fromkeys(current)
            for d in _domains(remove or []):
                if d not in domains:
                    raise ControlError("not-found", f"{d} is not on the URL filter's list")
                del domains[d]
            for d in _domains(add or []):
                domains[d] = None
            if len(domains) > MAX_DOMAINS:
                raise ControlError("invalid", f"at most {MAX_DOMAINS} domains")
            changes["im.url_filter.domains"] = sorted(domains)
        if not changes:
            raise ControlError(
                "invalid", "nothing to change: give mode, scope, prefix, add or remove"
            )
        for key, value in changes.items():
            yield self.settings.set(key, value)
        self.refresh_url_filter()
        return self.im_url_filter_show()


def _domains(names: list[str]) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ControlError("invalid", "domains: a list of domain names")
    out = []
    for name in names:
        try:
            out.append(_domain("domain", name))
        except ConfigError as e:
            raise ControlError("invalid", str(e)) from None
    return out
