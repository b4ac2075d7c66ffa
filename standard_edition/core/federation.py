"""Who may talk to whom across the edge: federation mode, partner domains, per-user policies.

DESIGN §7 (Skype's external access policy). The one place that decides, for both protocols and
both directions: the router asks before anything leaves for, or arrives from, another domain,
and the edge listeners ask before a remote login. config.toml gives the defaults; what se-ctl
changed is stored as run-time settings and wins (DESIGN §8).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python import log

from standard_edition.config import Config
from standard_edition.core.settings import Settings

MODES = ("allowlist", "blocklist", "open")
USER_POLICIES = ("outside_access", "federation_access")
TRUST_KEY = "federation.trust"  # {domain: PEM certificate the admin pinned}
MAX_ANSWERS = 4096  # domains whose answer is remembered (a flood of made-up names stays small)
USERS_KEY = "policy.users"  # {username: {"outside_access": bool, "federation_access": bool}}

# the run-time keys with their config.toml value (se-ctl config reset KEY returns to it)
RUNTIME_KEYS: dict[str, Callable[[Config], Any]] = {
    "federation.mode": lambda cfg: cfg.federation_mode,
    "federation.allow": lambda cfg: sorted(cfg.federation_allow),
    "federation.block": lambda cfg: sorted(cfg.federation_block),
}


class FederationPolicy:
    def __init__(self, cfg: Config, settings: Settings) -> None:
        self.cfg = cfg
        self.settings = settings
        # told (with the domain) when a domain stops being allowed: its streams are closed
        self.on_refused: list[Callable[[str], None]] = []
        # told (user name, the changes) once a user's policy changed (edge/enforce.py)
        self.on_user_changed: list[Callable[[str, dict[str, bool]], None]] = []
        # domain_allowed's answers, asked for every stanza that crosses the edge; valid while
        # the config and the stored mode and lists are the very objects they were worked
        # out from (Settings replaces a value when it is set, and drops it when reset)
        self._answers: dict[str, bool] = {}
        self._answers_from: tuple[object, ...] = ()

    # -- what is in force ----------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return str(self.settings.get("federation.mode", self.cfg.federation_mode))

    @property
    def allow(self) -> frozenset[str]:
        return frozenset(self.settings.get("federation.allow", self.cfg.federation_allow))

    @property
    def block(self) -> frozenset[str]:
        return frozenset(self.settings.get("federation.block", self.cfg.federation_block))

    def domain_allowed(self, domain: str) -> bool:
        """May this server exchange anything with `domain`? A blocked domain never may.
        A listed domain covers its subdomains (a partner's conference.partner.example)."""
        get = self.settings.get
        source = (
            self.cfg,
            get("federation.mode"),
            get("federation.allow"),
            get("federation.block"),
        )
        old = self._answers_from
        if len(old) != len(source) or any(a is not b for a, b in zip(source, old, strict=True)):
            self._answers = {}
            self._answers_from = source
        answer = self._answers.get(domain)
        if answer is None:
            answer = self._decide(domain)
            if len(self._answers) < MAX_ANSWERS:
                self._answers[domain] = answer
        return answer

    def _decide(self, domain: str) -> bool:
        labels = domain.lower().rstrip(".").split(".")
        names = {".".join(labels[i:]) for i in range(len(labels) - 1)} or {domain}
        if names & self.block:
            return False
        if self.mode == "allowlist":
            return bool(names & self.allow)
        return True  # blocklist and open: every domain not blocked

    def _user(self, username: str) -> dict[str, bool]:
        users = self.settings.get(USERS_KEY, {})
        return dict(users.get(username, {}))

    def outside_access(self, username: str) -> bool:
        """May this user log in through the edge listeners?"""
        return self._user(username).get("outside_access", self.cfg.policy_outside_access)

    def federation_access(self, username: str) -> bool:
        """May this user talk to people in other domains?"""
        return self._user(username).get("federation_access", self.cfg.policy_federation_access)

    def may_federate(self, username: str | None, domain: str) -> bool:
        """A local user (None: the server itself) and a remote domain, both ways."""
        if not self.domain_allowed(domain):
            return False
        return username is None or self.federation_access(username)

    def pinned(self, domain: str) -> str | None:
        """The PEM certificate the admin trusts for `domain`, if any."""
        trusted: dict[str, str] = self.settings.get(TRUST_KEY, {})
        return trusted.get(domain.lower())

    # -- changes (se-ctl) ----------------------------------------------------------------------

    @inlineCallbacks
    def set_mode(self, mode: str):  # type: ignore[no-untyped-def]
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        yield self.settings.set("federation.mode", mode)
        self._refused_now()

    @inlineCallbacks
    def allow_domain(self, domain: str, allowed: bool = True):  # type: ignore[no-untyped-def]
        """allowed: on the allow list and off the block list; False: off the allow list."""
        allow = set(self.allow)
        block = set(self.block)
        if allowed:
            allow.add(domain)
            block.discard(domain)
        else:
            allow.discard(domain)
        yield self.settings.set("federation.allow", sorted(allow))
        yield self.settings.set("federation.block", sorted(block))
        self._refused_now()

    @inlineCallbacks
    def block_domain(self, domain: str, blocked: bool = True):  # type: ignore[no-untyped-def]
        allow = set(self.allow)
        block = set(self.block)
        if blocked:
            block.add(domain)
            allow.discard(domain)
        else:
            block.discard(domain)
        yield self.settings.set("federation.allow", sorted(allow))
        yield self.settings.set("federation.block", sorted(block))
        self._refused_now()

    def trust(self, domain: str, pem: str | None) -> Deferred[None]:
        trusted = dict(self.settings.get(TRUST_KEY, {}))
        if pem is None:
            trusted.pop(domain, None)
        else:
            trusted[domain] = pem
        return self.settings.set(TRUST_KEY, trusted)

    def set_user(self, username: str, **changes: bool) -> Deferred[None]:
        users = {k: dict(v) for k, v in self.settings.get(USERS_KEY, {}).items()}
        entry = users.setdefault(username, {})
        entry.update(changes)
        d = self.settings.set(USERS_KEY, users)
        d.addCallback(lambda _: self._user_changed(username, dict(changes)))
        return d

    def _user_changed(self, username: str, changes: dict[str, bool]) -> None:
        for listener in self.on_user_changed:
            try:
                listener(username, changes)
            except Exception:
                log.err(None, f"federation policy: applying {username}'s new policy")

    def forget_user(self, username: str) -> Deferred[None] | None:
        users = dict(self.settings.get(USERS_KEY, {}))
        if users.pop(username, None) is None:
            return None
        return self.settings.set(USERS_KEY, users)

    def refresh(self) -> None:
        """The stored settings changed underneath (config reset): apply them to open streams."""
        self._refused_now()

    def _refused_now(self) -> None:
        for listener in self.on_refused:
            try:
                listener("")  # "" : every domain is checked again
            except Exception:
                log.err(None, "federation policy: applying a changed domain list")

    # -- what se-ctl shows ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        def source(key: str) -> str:
            return "se-ctl" if self.settings.has(key) else "config"

        trusted: dict[str, str] = self.settings.get(TRUST_KEY, {})
        return {
            "mode": self.mode,
            "allow": sorted(self.allow),
            "block": sorted(self.block),
            "trusted": {d: fingerprint(pem) for d, pem in sorted(trusted.items())},
            "source": {k.removeprefix("federation."): source(k) for k in RUNTIME_KEYS},
            "defaults": {
                "outside_access": self.cfg.policy_outside_access,
                "federation_access": self.cfg.policy_federation_access,
            },
        }

    def user_policy(self, username: str) -> dict[str, Any]:
        chosen = self._user(username)
        return {
            "outside_access": self.outside_access(username),
            "federation_access": self.federation_access(username),
            "source": {k: ("se-ctl" if k in chosen else "config") for k in USER_POLICIES},
        }


def fingerprint(pem: str) -> str:
    """SHA-256 of the certificate's DER form, as hex (what the admin compares)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(pem.encode())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
