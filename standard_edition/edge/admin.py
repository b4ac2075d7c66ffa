"""What se-ctl may do about the edge: federation lists, pinned certificates, user policies.

Mixed into core/admin.py's Admin; the requests are declared in control/api.py. Every change is
a run-time setting (DESIGN §8): stored, in force at once, winning over config.toml.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from standard_edition.config import ConfigError, _domain
from standard_edition.control.api import ControlError
from standard_edition.core.federation import MODES, FederationPolicy, fingerprint

MAX_PEM = 100_000  # characters of a certificate file sent over the control socket


class EdgeAdmin:
    edge: Any = None  # edge/listeners.py Edge, set by the server
    router: Any

    def _policy(self) -> FederationPolicy:
        policy = getattr(self.router, "federation", None)
        if policy is None:
            raise ControlError("unavailable", "this server has no federation policy")
        return policy  # type: ignore[no-any-return]

    @staticmethod
    def _domain(domain: str) -> str:
        try:
            return _domain("domain", domain)
        except ConfigError as e:
            raise ControlError("invalid", str(e)) from None

    def edge_status(self) -> dict[str, Any] | None:
        return None if self.edge is None else self.edge.status()

    def federation_list(self) -> dict[str, Any]:
        out = self._policy().describe()
        s2s = self.edge.s2s if self.edge is not None else None
        out["enabled"] = s2s is not None
        out["streams"] = None if s2s is None else s2s.status()
        return out

    @inlineCallbacks
    def federation_mode(self, mode: str):  # type: ignore[no-untyped-def]
        if mode not in MODES:
            raise ControlError("invalid", f"mode: {mode!r} is not one of {', '.join(MODES)}")
        yield self._policy().set_mode(mode)
        return self.federation_list()

    @inlineCallbacks
    def federation_allow(self, domain: str, remove: bool = False):  # type: ignore[no-untyped-def]
        yield self._policy().allow_domain(self._domain(domain), not remove)
        return self.federation_list()

    @inlineCallbacks
    def federation_block(self, domain: str, remove: bool = False):  # type: ignore[no-untyped-def]
        yield self._policy().block_domain(self._domain(domain), not remove)
        return self.federation_list()

    @inlineCallbacks
    def federation_trust(  # type: ignore[no-untyped-def]
        self, domain: str, cert: str | None = None, remove: bool = False
    ):
        name = self._domain(domain)
        if remove == (cert is not None):
            raise ControlError("invalid", "give the certificate (--cert FILE) or --remove")
        if cert is not None:
            if len(cert) > MAX_PEM:
                raise ControlError("invalid", "certificate file too large")
            try:
                digest = fingerprint(cert)
            except ValueError:
                raise ControlError("invalid", "not a PEM certificate") from None
            yield self._policy().trust(name, cert)
            return {"domain": name, "sha256": digest}
        yield self._policy().trust(name, None)
        return {"domain": name, "sha256": None}

    def policy_show(self, jid: str) -> dict[str, Any]:
        acct = self._account(jid)  # type: ignore[attr-defined]
        return {"jid": self._jid(acct.username), **self._policy().user_policy(acct.username)}  # type: ignore[attr-defined]

    @inlineCallbacks
    def policy_set(  # type: ignore[no-untyped-def]
        self,
        jid: str,
        outside_access: bool | None = None,
        federation_access: bool | None = None,
    ):
        acct = self._account(jid)  # type: ignore[attr-defined]
        changes = {
            k: v
            for k, v in (
                ("outside_access", outside_access),
                ("federation_access", federation_access),
            )
            if v is not None
        }
        if changes:
            # in force at once, open sessions and streams included (edge/enforce.py)
            yield self._policy().set_user(acct.username, **changes)
        return self.policy_show(jid)
