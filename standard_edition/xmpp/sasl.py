"""Server-side SASL for XMPP (RFC 6120 §6): SCRAM-SHA-256/SHA-1, their -PLUS forms, and PLAIN.

Sans-I/O: a Mechanism takes the client's payloads (already base64-decoded from <auth/> and
<response/>) and returns what to send back: a Challenge, a Success or a Failure. The network
shell does the XML, the base64 and the threads.

Every exchange for an unknown user looks like one for a known user with a wrong password: the
same messages, the same work, the same Failure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from standard_edition.core.credentials import (
    DIGEST_SIZES,
    Credentials,
    ScramKeys,
    check_password,
    decoy_credentials,
)
from standard_edition.core.jid import InvalidJID, parse_jid, prepare_password, prepare_username

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"

# RFC 6120 §6.5: the defined failure conditions
CONDITIONS = frozenset(
    {
        "aborted",
        "account-disabled",
        "credentials-expired",
        "encryption-required",
        "incorrect-encoding",
        "invalid-authzid",
        "invalid-mechanism",
        "malformed-request",
        "mechanism-too-weak",
        "not-authorized",
        "temporary-auth-failure",
    }
)

MAX_PAYLOAD = 8192  # no legitimate SCRAM or PLAIN message comes near this
SERVER_NONCE_BYTES = 24

_SCRAM = {
    "SCRAM-SHA-256-PLUS": ("sha256", True),
    "SCRAM-SHA-1-PLUS": ("sha1", True),
    "SCRAM-SHA-256": ("sha256", False),
    "SCRAM-SHA-1": ("sha1", False),
}

# RFC 5802 §7: saslname = 1*(value-safe-char / "=2C" / "=3D")
_SASLNAME = re.compile(r"(?:[^\x00,=]|=2C|=3D)+\Z")
_SASLNAME_ESCAPE = re.compile(r"=(2C|3D)")
# RFC 5802 §7: printable = %x21-2B / %x2D-7E, the nonce alphabet
_PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+\Z")
# RFC 5056 §7: channel binding type names
_CB_NAME = re.compile(r"[A-Za-z0-9.-]+\Z")
# RFC 5802 §7: attr-val = ALPHA "=" value; optional extensions carry unknown letters
_EXTENSION = re.compile(r"[A-Za-z]=[^,\x00]*\Z")


@dataclass(frozen=True, slots=True)
class Challenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    username: str  # the prepared user name that logged in
    data: bytes | None = None  # additional data with success (RFC 6120 §6.3.10): SCRAM v=


@dataclass(frozen=True, slots=True)
class Failure:
    condition: str  # one of CONDITIONS
    text: str = ""

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"not a SASL failure condition: {self.condition!r}")


SaslStep: TypeAlias = Challenge | Success | Failure


class AccountLookup(Protocol):
    def __call__(self, username: str) -> tuple[Credentials, bool] | None:
        """(credentials, enabled) for a prepared user name, or None if there is no such user."""
        ...


class TestTokenCheck(Protocol):
    def __call__(self, username: str, token: str) -> bool:
        """True, once, when token is a live one-time test credential of the user."""
        ...


@dataclass(frozen=True, slots=True)
class ChannelBinding:
    """What the TLS layer can bind to: type name -> data (RFC 9266 tls-exporter, RFC 5929
    tls-server-end-point). Empty when not on TLS or when the shell cannot compute any."""

    data: dict[str, bytes] = field(default_factory=dict)


class Mechanism(ABC):
    """One SASL exchange. step() returns a Challenge until the exchange ends in a Success or a
    Failure; any step after that is a Failure('malformed-request')."""

    name: str
    blocking: bool = False  # True when step() hashes slowly; the shell runs it in a thread

    def __init__(self, name: str) -> None:
        self.name = name
        self._finished = False

    def step(self, data: bytes) -> SaslStep:
        """Take the client's decoded payload (b"" for none or '='), return the answer.

        Only the account lookup may raise; the exchange is then over."""
        if self._finished:
            return Failure("malformed-request", "the authentication exchange is over")
        self._finished = True  # until a Challenge shows the exchange goes on
        if len(data) > MAX_PAYLOAD:
            return Failure("malformed-request", "message too long")
        result = self._step(data)
        if isinstance(result, Challenge):
            self._finished = False
        return result

    @abstractmethod
    def _step(self, data: bytes) -> SaslStep: ...


def offered_mechanisms(tls: bool, cb_types: Iterable[str]) -> list[str]:
    """RFC 6120 §6.4.3: the mechanisms to offer, most preferred first."""
    offered = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"] if any(True for _ in cb_types) else []
    offered += ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    if tls:
        offered.append("PLAIN")  # RFC 6120 §13.8.3: PLAIN only where TLS protects it
    return offered


def make_mechanism(
    name: str,
    *,
    lookup: AccountLookup,
    decoy_secret: bytes,
    channel_binding: ChannelBinding,
    tls: bool,
    nonce_factory: Callable[[], str] | None = None,
    domain: str | None = None,
    test_token: TestTokenCheck | None = None,
) -> Mechanism | None:
    """A fresh exchange for a mechanism this connection offers, else None (invalid-mechanism).

    domain, when given, is the server's domain: an authzid must then name a user of it.
    test_token, when given, lets PLAIN accept a one-time test credential (se-ctl test)."""
    if name not in offered_mechanisms(tls, channel_binding.data):
        return None
    users = _Users(lookup, decoy_secret, domain)
    if name == "PLAIN":
        return Plain(users, test_token)
    hash_name, plus = _SCRAM[name]
    return Scram(name, hash_name, plus, users, channel_binding, nonce_factory or _server_nonce)


class _Users:
    """What both mechanisms need to know about the account that is logging in."""

    def __init__(self, lookup: AccountLookup, decoy_secret: bytes, domain: str | None) -> None:
        self._lookup = lookup
        self._decoy_secret = decoy_secret
        self._domain = domain

    def find(self, raw: str) -> tuple[str | None, Credentials, bool]:
        """(prepared name or None, credentials, enabled); decoy credentials when unknown."""
        try:
            user: str | None = prepare_username(raw)
        except InvalidJID:
            user = None
        found = self._lookup(user) if user is not None else None
        if user is None or found is None:
            return None, decoy_credentials(self._decoy_secret, user or raw), False
        creds, enabled = found
        return user, creds, enabled

    def authzid_ok(self, authzid: str, raw_user: str) -> bool:
        """RFC 6120 §6.3.8: an authzid, if sent, is the bare JID of the user logging in."""
        if not authzid:
            return True
        try:
            jid = parse_jid(authzid)
            user = prepare_username(raw_user)
        except InvalidJID:
            return False
        if self._domain is not None and jid.domain != self._domain:
            return False
        return jid.local == user and jid.resource is None


class Scram(Mechanism):
    """RFC 5802 with RFC 7677 (SHA-256); -PLUS binds to the TLS channel (RFC 5802 §6)."""

    def __init__(
        self,
        name: str,
        hash_name: str,
        plus: bool,
        users: _Users,
        channel_binding: ChannelBinding,
        nonce_factory: Callable[[], str],
    ) -> None:
        super().__init__(name)
        self._hash = hash_name
        self._plus = plus
        self._users = users
        self._cb = channel_binding
        self._nonce_factory = nonce_factory
        self._asked_for_first = False
        # set by the client-first message
        self._user: str | None = None
        self._enabled = False
        self._keys: ScramKeys | None = None
        self._expected_cb = b""
        self._nonce = ""
        self._auth_prefix = ""  # client-first-message-bare "," server-first-message

    def _step(self, data: bytes) -> SaslStep:
        if self._keys is None:
            if not data and not self._asked_for_first:
                # RFC 6120 §6.4.2: no initial response; an empty challenge asks for it
                self._asked_for_first = True
                return Challenge(b"")
            return self._client_first(data)
        return self._client_final(data)

    def _client_first(self, data: bytes) -> SaslStep:
        msg = _text(data)
        if msg is None:
            return Failure("malformed-request", "not UTF-8")
        parts = msg.split(",", 2)
        if len(parts) != 3:
            return Failure("malformed-request", "no GS2 header")
        flag, authz_attr, bare = parts

        # RFC 5802 §6 and §7: gs2-cbind-flag is "n", "y" or "p=" cb-name
        cb_data = b""
        if flag.startswith("p="):
            cb_type = flag[2:]
            if not self._plus:
                return Failure("malformed-request", "channel binding needs a -PLUS mechanism")
            if not _CB_NAME.match(cb_type):
                return Failure("malformed-request", "bad channel binding type")
            if cb_type not in self._cb.data:
                return Failure("not-authorized", f"channel binding {cb_type} not supported")
            cb_data = self._cb.data[cb_type]
        elif flag in ("n", "y"):
            if self._plus:
                return Failure("malformed-request", f"{self.name} needs channel binding (p=)")
            if flag == "y" and self._cb.data:
                # RFC 5802 §6: the client thinks we lack -PLUS, yet we offered it: a downgrade
                return Failure("not-authorized", "channel binding downgrade")
        else:
            return Failure("malformed-request", "bad GS2 channel binding flag")

        if authz_attr and not authz_attr.startswith("a="):
            return Failure("malformed-request", "bad GS2 authzid")
        authzid = _saslname(authz_attr[2:]) if authz_attr else ""
        if authzid is None:
            return Failure("malformed-request", "bad authzid")

        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            # RFC 5802 §5.1: mandatory extensions we do not know end the exchange
            return Failure("malformed-request", "SCRAM extensions not supported")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            return Failure("malformed-request", "expected n= and r=")
        raw_user = _saslname(attrs[0][2:])
        client_nonce = attrs[1][2:]
        if raw_user is None:
            return Failure("malformed-request", "bad user name encoding")
        if not _PRINTABLE.match(client_nonce):
            return Failure("malformed-request", "bad nonce")
        if not all(_EXTENSION.match(a) for a in attrs[2:]):
            return Failure("malformed-request", "bad attribute")
        if not self._users.authzid_ok(authzid, raw_user):
            return Failure("invalid-authzid")

        self._user, creds, self._enabled = self._users.find(raw_user)
        keys = creds.scram_sha256 if self._hash == "sha256" else creds.scram_sha1
        self._keys = keys
        self._expected_cb = f"{flag},{authz_attr},".encode() + cb_data
        self._nonce = client_nonce + self._nonce_factory()
        server_first = f"r={self._nonce},s={_b64(keys.salt)},i={keys.iterations}"
        self._auth_prefix = f"{bare},{server_first}"
        return Challenge(server_first.encode())

    def _client_final(self, data: bytes) -> SaslStep:
        assert self._keys is not None
        msg = _text(data)
        if msg is None:
            return Failure("malformed-request", "not UTF-8")
        # RFC 5802 §7: client-final-message = channel-binding "," nonce ["," extensions] "," proof
        without_proof, sep, proof_b64 = msg.rpartition(",p=")
        attrs = without_proof.split(",")
        if not sep or len(attrs) < 2 or not attrs[0].startswith("c="):
            return Failure("malformed-request", "expected c=, r= and p=")
        if not attrs[1].startswith("r=") or not all(_EXTENSION.match(a) for a in attrs[2:]):
            return Failure("malformed-request", "expected c=, r= and p=")
        cb = _unb64(attrs[0][2:])
        proof = _unb64(proof_b64)
        if cb is None or proof is None:
            return Failure("incorrect-encoding", "bad base64 in c= or p=")
        if len(proof) != DIGEST_SIZES[self._hash]:
            return Failure("malformed-request", "proof has the wrong length")
        if not hmac.compare_digest(cb, self._expected_cb):
            # RFC 5802 §6: the header (and for -PLUS the TLS data) must be what we saw
            return Failure("not-authorized", "channel binding does not match")
        if not hmac.compare_digest(attrs[1][2:].encode(), self._nonce.encode()):
            return Failure("not-authorized", "nonce does not match")

        # RFC 5802 §3: ClientKey = proof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) = StoredKey
        auth_message = f"{self._auth_prefix},{without_proof}".encode()
        signature = hmac.digest(self._keys.stored_key, auth_message, self._hash)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        stored_key = hashlib.new(self._hash, client_key).digest()
        if not hmac.compare_digest(stored_key, self._keys.stored_key) or self._user is None:
            return Failure("not-authorized")
        if not self._enabled:
            return Failure("account-disabled")
        server_signature = hmac.digest(self._keys.server_key, auth_message, self._hash)
        return Success(self._user, b"v=" + base64.b64encode(server_signature))


class Plain(Mechanism):
    """RFC 4616, offered only under TLS. Checking the password runs PBKDF2, hence blocking."""

    blocking = True

    def __init__(self, users: _Users, test_token: TestTokenCheck | None = None) -> None:
        super().__init__("PLAIN")
        self._users = users
        self._test_token = test_token
        self._asked = False

    def _step(self, data: bytes) -> SaslStep:
        if not data and not self._asked:
            # RFC 6120 §6.4.2: no initial response; an empty challenge asks for it
            self._asked = True
            return Challenge(b"")
        # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
        fields = data.split(b"\0")
        if len(fields) != 3:
            return Failure("malformed-request", "expected authzid NUL authcid NUL password")
        if not fields[1] or not fields[2] or len(fields[1]) > 255 or len(fields[2]) > 255:
            return Failure("malformed-request", "user name and password are 1 to 255 octets")
        texts = [_text(f) for f in fields]
        authzid, raw_user, raw_password = texts
        if authzid is None or raw_user is None or raw_password is None:
            return Failure("malformed-request", "not UTF-8")
        if not self._users.authzid_ok(authzid, raw_user):
            return Failure("invalid-authzid")
        try:
            password = prepare_password(raw_password)
        except ValueError:
            # no stored password can match an unpreparable one: nothing to compute
            return Failure("not-authorized")
        user, creds, enabled = self._users.find(raw_user)
        if user is not None and self._test_token is not None and self._test_token(user, password):
            # a one-time credential the admin asked for over the control socket (se-ctl test)
            return Success(user) if enabled else Failure("account-disabled")
        # runs on decoy credentials too, so an unknown user costs the same as a wrong password
        if not check_password(creds, password) or user is None:
            return Failure("not-authorized")
        if not enabled:
            return Failure("account-disabled")
        return Success(user)


def _server_nonce() -> str:
    return base64.b64encode(os.urandom(SERVER_NONCE_BYTES)).decode("ascii")


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _saslname(s: str) -> str | None:
    """RFC 5802 §5.1: undo =2C and =3D; None if the name is empty or badly escaped."""
    if not _SASLNAME.match(s):
        return None
    return _SASLNAME_ESCAPE.sub(lambda m: "," if m[1] == "2C" else "=", s)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str) -> bytes | None:
    try:
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
