"""Server side of SIP digest authentication (RFC 3261 §22.4, RFC 7616, RFC 8760).

Stateless nonces: a nonce carries its issue time and a random part, signed with an HMAC
under a server secret, so any nonce can be checked for authenticity and age without a
table. The only state is the optional `NonceCounts`, a bounded record of the last
nonce-count seen per nonce, which turns a replayed `nc` into a fresh challenge.

The account's stored HA1 (hex of H(user:realm:password), realm = domain) is all that is
needed; the password never is. Comparisons of secrets are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from standard_edition.sip.message import quote_string

__all__ = [
    "ALGORITHMS",
    "DEFAULT_NONCE_LIFETIME",
    "Challenge",
    "NonceCounts",
    "Verdict",
    "compute_response",
    "make_challenge",
    "make_nonce",
    "nonce_age",
    "verify",
]

# RFC 7616 §3.3 / RFC 8760 §2.1: algorithm names and their hashes; -sess variants share them
ALGORITHMS: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "MD5-SESS": hashlib.md5,
    "SHA-256-SESS": hashlib.sha256,
}
_HEX_SIZE = {"MD5": 32, "SHA-256": 64, "MD5-SESS": 32, "SHA-256-SESS": 64}
_CANONICAL_ALG = {"MD5": "MD5", "SHA-256": "SHA-256", "MD5-SESS": "MD5-sess"}
_CANONICAL_ALG["SHA-256-SESS"] = "SHA-256-sess"

DEFAULT_NONCE_LIFETIME = 300.0  # seconds; a client then gets stale=true and retries
_MAC_BYTES = 16
_RAND_BYTES = 8
_NONCE_BYTES = 8 + _RAND_BYTES + _MAC_BYTES
_CLOCK_SKEW = 5.0


class Verdict(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right credentials, old or reused nonce: challenge again with stale=true
    BAD = "bad"  # wrong credentials or a forged/garbled answer


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, b"sip-digest-nonce\x00" + body, hashlib.sha256).digest()[:_MAC_BYTES]


def make_nonce(secret: bytes, now: float) -> str:
    """A nonce = base64url(issue time, random, HMAC(secret, both)) (RFC 7616 §3.3 nonce)."""
    body = struct.pack(">Q", int(now)) + os.urandom(_RAND_BYTES)
    return base64.urlsafe_b64encode(body + _mac(secret, body)).rstrip(b"=").decode("ascii")


def nonce_age(nonce: str, secret: bytes, now: float) -> float | None:
    """Seconds since `nonce` was issued, or None if it is not one of ours."""
    if len(nonce) != 43:  # base64url of 32 bytes, unpadded
        return None
    try:
        raw = base64.urlsafe_b64decode(nonce + "=")
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _NONCE_BYTES:
        return None
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    (issued,) = struct.unpack(">Q", body[:8])
    age = now - issued
    if age < -_CLOCK_SKEW:
        return None
    return max(age, 0.0)


@dataclass(frozen=True, slots=True)
class Challenge:
    """One WWW-Authenticate / Proxy-Authenticate Digest challenge (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    opaque: str | None = None
    stale: bool = False
    qop: str = "auth"

    def __str__(self) -> str:
        parts = [f"Digest realm={quote_string(self.realm)}", f"nonce={quote_string(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={quote_string(self.opaque)}")
        parts.append(f"algorithm={self.algorithm}")
        parts.append(f"qop={quote_string(self.qop)}")
        if self.stale:
            parts.append("stale=true")
        return ", ".join(parts)


def make_challenge(
    realm: str,
    secret: bytes,
    now: float,
    algorithm: str = "MD5",
    *,
    stale: bool = False,
    opaque: str | None = None,
) -> Challenge:
    """A fresh challenge. Send one per enabled algorithm, MD5 first (DESIGN §3, RFC 8760 §2.4)."""
    key = algorithm.upper()
    if key not in ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return Challenge(realm, make_nonce(secret, now), _CANONICAL_ALG[key], opaque, stale)


def compute_response(
    algorithm: str,
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = "auth",
    nc: str = "",
    cnonce: str = "",
) -> str:
    """The request-digest of RFC 7616 §3.4.1 (qop=auth) or RFC 2069 (qop None)."""
    key = algorithm.upper()
    h = ALGORITHMS[key]

    def hx(s: str) -> str:
        return h(s.encode("utf-8", "surrogateescape")).hexdigest()

    ha1 = ha1_hex.lower()
    if key.endswith("-SESS"):
        # RFC 7616 §3.4.2: A1 of a -sess algorithm adds the nonce and cnonce
        ha1 = hx(f"{ha1}:{nonce}:{cnonce}")
    ha2 = hx(f"{method}:{uri}")
    if qop is None:
        return hx(f"{ha1}:{nonce}:{ha2}")
    return hx(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


class NonceCounts:
    """Last nonce-count seen per nonce (RFC 7616 §3.4: a reused nc is a replay).

    Bounded: the least recently used nonce is forgotten first. A forgotten nonce is old,
    and its age still limits how long a replay could work.
    """

    def __init__(self, max_entries: int = 65_536) -> None:
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._seen)

    def advance(self, nonce: str, nc: int) -> bool:
        """Record `nc` for `nonce`; False if it is not larger than the last one seen."""
        last = self._seen.get(nonce)
        if last is not None and nc <= last:
            return False
        self._seen[nonce] = nc
        self._seen.move_to_end(nonce)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return True


def verify(
    params: Mapping[str, str],
    method: str,
    ha1_hex: str,
    secret: bytes,
    now: float,
    *,
    realm: str | None = None,
    lifetime: float = DEFAULT_NONCE_LIFETIME,
    counts: NonceCounts | None = None,
    allow_rfc2069: bool = False,
) -> Verdict:
    """Check the Digest credentials `params` (an Authorization header's parameters).

    `ha1_hex` must be the stored HA1 for the algorithm the client used
    (`params.get("algorithm", "MD5")`). STALE is returned only when the response proves
    knowledge of the password (RFC 7616 §3.3 stale).
    """
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in ALGORITHMS or len(ha1_hex) != _HEX_SIZE[algorithm]:
        return Verdict.BAD
    nonce = params.get("nonce")
    uri = params.get("uri")
    given = params.get("response")
    if nonce is None or uri is None or given is None or params.get("username") is None:
        return Verdict.BAD
    if realm is not None and params.get("realm") != realm:
        return Verdict.BAD
    qop = params.get("qop")
    nc_value = 0
    if qop is None:
        if not allow_rfc2069 or algorithm.endswith("-SESS"):
            return Verdict.BAD
        expected = compute_response(algorithm, ha1_hex, nonce, method, uri, qop=None)
    else:
        nc = params.get("nc", "")
        cnonce = params.get("cnonce")
        if qop != "auth" or cnonce is None or len(nc) != 8:
            return Verdict.BAD
        try:
            nc_value = int(nc, 16)
        except ValueError:
            return Verdict.BAD
        expected = compute_response(
            algorithm, ha1_hex, nonce, method, uri, qop=qop, nc=nc, cnonce=cnonce
        )
    if not hmac.compare_digest(expected.encode(), given.lower().encode("utf-8", "replace")):
        return Verdict.BAD
    age = nonce_age(nonce, secret, now)
    if age is None:
        return Verdict.BAD
    if age > lifetime:
        return Verdict.STALE
    if counts is not None and qop is not None and not counts.advance(nonce, nc_value):
        return Verdict.STALE
    return Verdict.OK
