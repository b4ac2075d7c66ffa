"""Who sent a SIP request: digest authentication against the accounts' stored HA1s.

RFC 3261 §22 with RFC 7616 / RFC 8760 algorithms: every request that needs an identity is
challenged (401 for REGISTER, 407 for the rest), MD5 first and SHA-256 after it when enabled.
Failed answers slow down per account and per source address (`Throttle`), so guessing a
password over SIP is as slow as over XMPP; an unknown user is handled like a wrong password.
An address's failures delay only that address's failing answers: other users behind the same
address (an office NAT) are answered at once when their credentials are right.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from standard_edition.core.accounts import Accounts
from standard_edition.core.jid import InvalidJID, prepare_username
from standard_edition.sip.digest import (
    DEFAULT_NONCE_LIFETIME,
    NonceCounts,
    Verdict,
    make_challenge,
    nonce_age,
    verify,
)
from standard_edition.sip.message import AuthHeader, Request

__all__ = ["AuthResult", "Authenticator", "Throttle"]

FREE_FAILURES = 3  # failures before answers slow down
MAX_DELAY = 8.0  # seconds: below a UDP client's Timer F (32 s), so it hears the answer
FORGET_AFTER = 15 * 60.0  # seconds without a failure before the count starts again


class Throttle:
    """Failure counts per key (an account, an address) and the delay they earn."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._fails: dict[str, tuple[int, float]] = {}

    def failed(self, *keys: str) -> None:
        now = self._reactor.seconds()
        for key in keys:
            n, last = self._fails.get(key, (0, now))
            if now - last > FORGET_AFTER:
                n = 0
            self._fails[key] = (n + 1, now)
        if len(self._fails) > 100_000:
            # bounded memory under a spray of addresses: drop the oldest half
            for k, _ in sorted(self._fails.items(), key=lambda kv: kv[1][1])[:50_000]:
                del self._fails[k]

    def succeeded(self, key: str) -> None:
        self._fails.pop(key, None)

    def delay(self, *keys: str) -> float:
        now = self._reactor.seconds()
        worst = 0
        for key in keys:
            n, last = self._fails.get(key, (0, now))
            if now - last <= FORGET_AFTER:
                worst = max(worst, n)
        if worst < FREE_FAILURES:
            return 0.0
        return float(min(MAX_DELAY, 0.25 * 2 ** (worst - FREE_FAILURES)))


@dataclass(frozen=True, slots=True)
class AuthResult:
    """`user` when authenticated; else `challenge` headers to send with 401/407, or
    `forbidden` for wrong credentials. `delay` is how long to hold the answer back."""

    user: str | None = None
    challenge: tuple[tuple[str, str], ...] = ()
    forbidden: bool = False
    delay: float = 0.0


class Authenticator:
    def __init__(
        self,
        reactor: Any,
        accounts: Accounts,
        realm: str,
        algorithms: tuple[str, ...] = ("MD5",),
        *,
        secret: bytes | None = None,
        lifetime: float = DEFAULT_NONCE_LIFETIME,
    ) -> None:
        self.reactor = reactor
        self.accounts = accounts
        self.realm = realm
        # DESIGN §3: MD5 is always offered first; common clients stop at a non-MD5 challenge
        self.algorithms = ("MD5", *(a for a in algorithms if a.upper() != "MD5"))
        self.secret = secret or os.urandom(32)
        self.lifetime = lifetime
        self.counts = NonceCounts()
        self.throttle = Throttle(reactor)

    def challenge(self, proxy: bool, stale: bool = False) -> tuple[tuple[str, str], ...]:
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        now = self.reactor.seconds()
        return tuple(
            (name, str(make_challenge(self.realm, self.secret, now, alg, stale=stale)))
            for alg in self.algorithms
        )

    def _credentials(self, req: Request, proxy: bool) -> AuthHeader | None:
        names = ("Proxy-Authorization", "Authorization") if proxy else ("Authorization",)
        for name in names:
            for h in req.auth_headers(name):
                if h.scheme.lower() == "digest" and h.get("realm") == self.realm:
                    return h
        return None

    def check(self, req: Request, source: str, *, proxy: bool) -> AuthResult:
        """Authenticate `req` from address `source` (RFC 3261 §22.2, §22.3)."""
        creds = self._credentials(req, proxy)
        if creds is None:
            return AuthResult(challenge=self.challenge(proxy))
        params = dict(creds.params)
        now = self.reactor.seconds()
        nonce = params.get("nonce", "")
        if nonce_age(nonce, self.secret, now) is None:
            # not a nonce of ours (e.g. from before a restart): a fresh challenge, no penalty
            return AuthResult(challenge=self.challenge(proxy))
        raw_user = params.get("username", "")
        try:
            user = prepare_username(raw_user)
        except InvalidJID:
            user = ""
        src_key = "addr:" + source
        user_key = "user:" + user
        # a guessed account's answers all wait; an address's failures hold back its failing
        # requests only, so colleagues behind the same NAT as a phone with an old password
        # still sign in at once
        user_delay = self.throttle.delay(user_key)
        delay = max(user_delay, self.throttle.delay(src_key))
        acct = self.accounts.get(user) if user else None
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm.removesuffix("-SESS") not in (a.upper() for a in self.algorithms):
            return AuthResult(challenge=self.challenge(proxy), delay=delay)
        if acct is None or not acct.enabled:
            self.throttle.failed(src_key, user_key)
            return AuthResult(forbidden=True, delay=max(delay, 0.0))
        ha1 = (
            acct.credentials.ha1_sha256
            if algorithm.startswith("SHA-256")
            else acct.credentials.ha1_md5
        )
        verdict = verify(
            params,
            req.method,
            ha1,
            self.secret,
            now,
            realm=self.realm,
            lifetime=self.lifetime,
            counts=self.counts,
        )
        if verdict is Verdict.OK:
            # the account's record goes; the address's stays (its successes are not held
            # back), so one valid account cannot wipe the record of guesses made from there
            self.throttle.succeeded(user_key)
            return AuthResult(user=user, delay=user_delay)
        if verdict is Verdict.STALE:
            # the right password with an old nonce: the client's normal path
            return AuthResult(challenge=self.challenge(proxy, stale=True), delay=user_delay)
        self.throttle.failed(src_key, user_key)
        return AuthResult(forbidden=True, delay=delay)
