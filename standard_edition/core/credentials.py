"""What an account keeps instead of its password: SCRAM keys and SIP digest HA1s.

All of them are made once, when the password is set (DESIGN §9), so the password itself is
never stored. derive() and check_password() run PBKDF2 and are slow on purpose: callers run
them on a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

SCRAM_ITERATIONS = 4096  # RFC 7677 §4: at least 4096 for SCRAM-SHA-256
SALT_BYTES = 16
# the hashes SCRAM is registered for here, with their output sizes (RFC 5802, RFC 7677)
DIGEST_SIZES = {"sha1": 20, "sha256": 32}


@dataclass(frozen=True, slots=True)
class ScramKeys:
    """RFC 5802 §3: what the server needs to check a proof and sign its answer."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "salt": _b64(self.salt),
            "iterations": self.iterations,
            "stored_key": _b64(self.stored_key),
            "server_key": _b64(self.server_key),
        }

    @classmethod
    def from_json(cls, d: Any, hash_name: str) -> ScramKeys:
        if not isinstance(d, dict):
            raise ValueError(f"credentials: scram_{hash_name} is not an object")
        iterations = d.get("iterations")
        if type(iterations) is not int or iterations < 1:
            raise ValueError(f"credentials: scram_{hash_name}.iterations must be a positive int")
        keys = cls(
            salt=_unb64(d.get("salt"), f"scram_{hash_name}.salt"),
            iterations=iterations,
            stored_key=_unb64(d.get("stored_key"), f"scram_{hash_name}.stored_key"),
            server_key=_unb64(d.get("server_key"), f"scram_{hash_name}.server_key"),
        )
        size = DIGEST_SIZES[hash_name]
        if not keys.salt or len(keys.stored_key) != size or len(keys.server_key) != size:
            raise ValueError(f"credentials: scram_{hash_name} has keys of the wrong size")
        return keys


@dataclass(frozen=True, slots=True)
class Credentials:
    scram_sha1: ScramKeys
    scram_sha256: ScramKeys
    ha1_md5: str  # hex MD5("user:realm:password"), realm = domain (RFC 2617 §3.2.2.2, RFC 3261)
    ha1_sha256: str  # the same with SHA-256 (RFC 7616 §3.4.2, RFC 8760)

    def to_json(self) -> dict[str, Any]:
        return {
            "scram_sha1": self.scram_sha1.to_json(),
            "scram_sha256": self.scram_sha256.to_json(),
            "ha1_md5": self.ha1_md5,
            "ha1_sha256": self.ha1_sha256,
        }

    @classmethod
    def from_json(cls, d: Any) -> Credentials:
        """Read what to_json wrote; raise ValueError naming the bad field."""
        if not isinstance(d, dict):
            raise ValueError("credentials: not an object")
        return cls(
            scram_sha1=ScramKeys.from_json(d.get("scram_sha1"), "sha1"),
            scram_sha256=ScramKeys.from_json(d.get("scram_sha256"), "sha256"),
            ha1_md5=_hex(d.get("ha1_md5"), "ha1_md5", 32),
            ha1_sha256=_hex(d.get("ha1_sha256"), "ha1_sha256", 64),
        )


def scram_keys(hash_name: str, password: str, salt: bytes, iterations: int) -> ScramKeys:
    """RFC 5802 §3: SaltedPassword = Hi(password, salt, i), then StoredKey and ServerKey."""
    if hash_name not in DIGEST_SIZES:
        raise ValueError(f"SCRAM hash {hash_name!r} not supported")
    if iterations < 1:
        raise ValueError("SCRAM iteration count must be positive")
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    return ScramKeys(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.new(hash_name, client_key).digest(),
        server_key=hmac.digest(salted, b"Server Key", hash_name),
    )


def derive(
    username: str, domain: str, password: str, iterations: int = SCRAM_ITERATIONS
) -> Credentials:
    """Everything an account stores; username and password are already PRECIS-prepared."""
    a1 = f"{username}:{domain}:{password}".encode()
    return Credentials(
        scram_sha1=scram_keys("sha1", password, os.urandom(SALT_BYTES), iterations),
        scram_sha256=scram_keys("sha256", password, os.urandom(SALT_BYTES), iterations),
        ha1_md5=hashlib.md5(a1).hexdigest(),
        ha1_sha256=hashlib.sha256(a1).hexdigest(),
    )


def check_password(creds: Credentials, password: str) -> bool:
    """Whether a (prepared) password matches, by recomputing the SCRAM-SHA-256 StoredKey."""
    keys = creds.scram_sha256
    candidate = scram_keys("sha256", password, keys.salt, keys.iterations)
    return hmac.compare_digest(candidate.stored_key, keys.stored_key)


def decoy_credentials(
    secret: bytes, username: str, iterations: int = SCRAM_ITERATIONS
) -> Credentials:
    """Stable fake credentials for a user that does not exist, cheap to make.

    The same name always gets the same salts, so probing twice shows nothing; the keys match
    no password, and check_password on them costs what it costs on a real account.
    """
    name = username.encode("utf-8", "surrogatepass")

    def part(label: bytes, size: int) -> bytes:
        return hmac.digest(secret, label + b"\0" + name, "sha256")[:size]

    def keys(hash_name: str) -> ScramKeys:
        size = DIGEST_SIZES[hash_name]
        label = b"decoy " + hash_name.encode()
        return ScramKeys(
            salt=part(label + b" salt", SALT_BYTES),
            iterations=iterations,
            stored_key=part(label + b" stored", size),
            server_key=part(label + b" server", size),
        )

    return Credentials(
        scram_sha1=keys("sha1"),
        scram_sha256=keys("sha256"),
        ha1_md5=part(b"decoy ha1 md5", 16).hex(),
        ha1_sha256=part(b"decoy ha1 sha256", 32).hex(),
    )


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(v: Any, field: str) -> bytes:
    if not isinstance(v, str):
        raise ValueError(f"credentials: {field} is not a string")
    try:
        return base64.b64decode(v, validate=True)
    except binascii.Error:
        raise ValueError(f"credentials: {field} is not base64") from None


def _hex(v: Any, field: str, length: int) -> str:
    if not isinstance(v, str) or len(v) != length or not set(v) <= set("0123456789abcdef"):
        raise ValueError(f"credentials: {field} is not {length} lower-case hex digits")
    return v
