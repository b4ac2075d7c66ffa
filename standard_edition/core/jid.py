"""Addresses: the one parser for JIDs (RFC 7622) and for account user names and passwords.

Every address that enters the server, from XMPP, SIP or the control socket, goes through
parse_jid; every user name through prepare_username. Both are cached: they run for every stanza.
"""

from __future__ import annotations

import functools
import ipaddress
import string
import unicodedata
from dataclasses import dataclass, replace

import precis_i18n

_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")
_OPAQUE = precis_i18n.get_profile("OpaqueString")

MAX_PART_BYTES = 1023  # RFC 7622 §3.1: each part is 1 to 1023 octets once prepared
MAX_USERNAME_CHARS = 64
MAX_LABEL_BYTES = 63  # RFC 1035 §2.3.4, applied to the A-label form as IDNA does
# RFC 7622 §3.3.1: characters a localpart may not hold even after PRECIS
_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
# RFC 3261 §25.1: user = unreserved / user-unreserved, minus the JID-forbidden characters
_USERNAME_CHARS = frozenset(string.ascii_letters + string.digits + "-_.!~*()=+$,;?")
_LDH = frozenset(string.ascii_lowercase + string.digits + "-")
# RFC 3490 §3.1: the full stops treated as label separators
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


class InvalidJID(ValueError):
    """An address or user name that cannot be prepared; str() says which and why."""


class _BareSlot:
    """Where a full JID keeps its bare JID once asked: a slot, not a field, so equality, hash,
    repr and pickling see the three parts only."""

    __slots__ = ("_bare",)
    _bare: JID


@dataclass(frozen=True, slots=True)
class JID(_BareSlot):
    """A prepared address; make it with parse_jid, which is the only way in."""

    local: str | None
    domain: str
    resource: str | None = None

    @property
    def bare(self) -> JID:
        # on every stanza's path: built directly (replace() walks the fields on each call) and
        # kept on the immutable instance after the first call
        if self.resource is None:
            return self
        bare: JID | None = getattr(self, "_bare", None)
        if bare is None:
            bare = JID(self.local, self.domain, None)
            object.__setattr__(self, "_bare", bare)
        return bare

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    def with_resource(self, resource: str | None) -> JID:
        if resource is None:
            return self.bare
        return replace(self, resource=_prepare_resource(resource))

    def __str__(self) -> str:
        s = self.domain if self.local is None else f"{self.local}@{self.domain}"
        return s if self.resource is None else f"{s}/{self.resource}"


def parse_jid(s: str) -> JID:
    """Split and prepare an address (RFC 7622 §3.1, §3.2); raise InvalidJID if it is not one."""
    # checked before the cache so a huge string from a client is never kept
    if len(s) > 3 * MAX_PART_BYTES + 2:
        raise InvalidJID(f"address {_shorten(s)}: too long")
    return _parse_jid(s)


@functools.lru_cache(maxsize=8192)
def _parse_jid(s: str) -> JID:
    # RFC 7622 §3.2: the resource starts at the first '/', the localpart ends at the first '@'
    rest, slash, resource = s.partition("/")
    local, at, domain = rest.partition("@")
    if not at:
        local, domain = "", rest
    try:
        return JID(
            _prepare_local(local) if at else None,
            _prepare_domain(domain),
            _prepare_resource(resource) if slash else None,
        )
    except InvalidJID as e:
        raise InvalidJID(f"address {_shorten(s)}: {e}") from None


def prepare_username(s: str) -> str:
    """An account's user name: PRECIS UsernameCaseMapped (RFC 8265 §3.3), then SIP-safe ASCII."""
    if len(s) > 4 * MAX_USERNAME_CHARS:
        raise InvalidJID(f"user name {_shorten(s)}: longer than {MAX_USERNAME_CHARS} characters")
    return _prepare_username(s)


@functools.lru_cache(maxsize=4096)
def _prepare_username(s: str) -> str:
    try:
        name = _USERNAME.enforce(s)
    except UnicodeError as e:
        raise InvalidJID(f"user name {_shorten(s)}: {_precis_reason(e)}") from None
    bad = sorted(set(name) - _USERNAME_CHARS)
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise InvalidJID(
            f"user name {_shorten(s)}: {shown} not allowed "
            "(letters, digits and - _ . ! ~ * ( ) = + $ , ; ? only)"
        )
    if len(name) > MAX_USERNAME_CHARS:
        raise InvalidJID(f"user name {_shorten(s)}: longer than {MAX_USERNAME_CHARS} characters")
    return name


def prepare_password(s: str) -> str:
    """A password as PRECIS OpaqueString (RFC 8265 §4.2); never cached, never logged."""
    try:
        prepared: str = _OPAQUE.enforce(s)
    except UnicodeError as e:
        raise ValueError(f"password {_precis_reason(e)}") from None
    return prepared


def _prepare_local(local: str) -> str:
    try:
        prepared: str = _USERNAME.enforce(local)
    except UnicodeError as e:
        raise InvalidJID(f"localpart {_precis_reason(e)}") from None
    bad = sorted(set(prepared) & _LOCAL_FORBIDDEN)
    if bad:
        raise InvalidJID(f"localpart: {' '.join(repr(c) for c in bad)} not allowed")
    _check_length("localpart", prepared)
    return prepared


def _prepare_resource(resource: str) -> str:
    try:
        prepared: str = _OPAQUE.enforce(resource)
    except UnicodeError as e:
        raise InvalidJID(f"resourcepart {_precis_reason(e)}") from None
    _check_length("resourcepart", prepared)
    return prepared


def _prepare_domain(domain: str) -> str:
    # RFC 7622 §3.2.1 with the RFC 5895 mappings: dots, lower case, NFC; one trailing dot dropped
    domain = unicodedata.normalize("NFC", domain.translate(_DOTS).lower())
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain:
        raise InvalidJID("domainpart is empty")
    if domain.startswith("["):
        return _prepare_ipv6(domain)
    labels = [_prepare_label(label) for label in domain.split(".")]
    prepared = ".".join(labels)
    _check_length("domainpart", prepared)
    return prepared


def _prepare_ipv6(domain: str) -> str:
    # RFC 7622 §3.2: an IPv6 address is written as in a URI, in brackets (RFC 3986 §3.2.2)
    if not domain.endswith("]"):
        raise InvalidJID("domainpart: unclosed IPv6 literal")
    try:
        return f"[{ipaddress.IPv6Address(domain[1:-1]).compressed}]"
    except ValueError:
        raise InvalidJID("domainpart: bad IPv6 literal") from None


def _prepare_label(label: str) -> str:
    """One DNS label as a U-label; a simple IDNA2008-like check, not the full tables."""
    if not label:
        raise InvalidJID("domainpart has an empty label")
    if label.isascii() and label.startswith("xn--"):
        # RFC 5891 §5.5: an A-label is compared as its U-label
        try:
            label = unicodedata.normalize("NFC", label[4:].encode().decode("punycode").lower())
        except UnicodeError:
            raise InvalidJID(f"domainpart: bad A-label {label!r}") from None
        if not label or label.isascii():
            raise InvalidJID("domainpart: A-label does not decode to a U-label")
    if label.startswith("-") or label.endswith("-"):
        raise InvalidJID(f"domainpart: label {label!r} starts or ends with '-'")
    if label.isascii():
        if not set(label) <= _LDH:
            raise InvalidJID(f"domainpart: label {label!r} has a character not allowed in DNS")
        encoded_len = len(label)
    else:
        if unicodedata.category(label[0]).startswith("M"):
            raise InvalidJID(f"domainpart: label {label!r} starts with a combining mark")
        for c in label:
            if c != "-" and unicodedata.category(c)[0] not in "LMN":
                raise InvalidJID(f"domainpart: {c!r} not allowed in a domain name")
        encoded_len = 4 + len(label.encode("punycode"))
    if encoded_len > MAX_LABEL_BYTES:
        raise InvalidJID(f"domainpart: label longer than {MAX_LABEL_BYTES} octets")
    return label


def _check_length(part: str, value: str) -> None:
    if len(value.encode("utf-8")) > MAX_PART_BYTES:
        raise InvalidJID(f"{part} longer than {MAX_PART_BYTES} octets")


def _precis_reason(e: UnicodeError) -> str:
    """precis_i18n reports 'DISALLOWED/spaces' and the like; say it in words."""
    reason = str(getattr(e, "reason", "")) or "not allowed"
    kind = reason.rpartition("/")[2]
    if kind == "empty":
        return "is empty"
    obj = getattr(e, "object", "")
    start = getattr(e, "start", 0)
    if isinstance(obj, str) and 0 <= start < len(obj):
        return f"has a character not allowed: U+{ord(obj[start]):04X} ({kind})"
    return f"not allowed ({kind})"


def _shorten(s: str) -> str:
    return repr(s if len(s) <= 40 else s[:37] + "...")
