"""Finding a partner domain's SIP federation server (RFC 3263 §4, TLS only).

The order: the [federation.hosts] map's `sip` entry (LANs and tests), then DNS: NAPTR records
offering SIPS over TCP ("SIPS+D2T", RFC 3263 §4.1) and the SRV names they point to, else the
SRV names tried without NAPTR: Skype's `_sipfederationtls._tcp` first, then `_sips._tcp`
(§4.2), else the domain's own A/AAAA address on 5061 (§4.2, last paragraph). Each SRV set is
ordered by priority, then by weight (RFC 2782). The resolver is a Twisted Names resolver,
injected so tests can answer from a table.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.names import dns, error
from twisted.python import log

__all__ = ["DEFAULT_TLS_PORT", "SRV_NAMES", "host_entry", "locate"]

DEFAULT_TLS_PORT = 5061
NAPTR_SERVICE = "SIPS+D2T"  # RFC 3263 §4.1: SIP over TLS over TCP
SRV_NAMES = ("_sipfederationtls._tcp", "_sips._tcp")
_ABSENT = (error.DomainError, error.DNSNameError, error.DNSServerError, error.DNSQueryRefusedError)


def _text(v: Any) -> str:
    """A NAPTR character-string or a Name as str, whatever Twisted version made it."""
    v = getattr(v, "string", getattr(v, "name", v))
    return v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)


def _records(answer: Any, rtype: int) -> list[Any]:
    return [r.payload for r in answer[0] if r.type == rtype]


def _srv_order(records: list[Any]) -> list[tuple[str, int]]:
    """RFC 2782: lowest priority first; within one, heavier weight first (with a shuffle)."""
    usable = [p for p in records if _text(p.target) not in ("", ".")]
    usable.sort(key=lambda p: (p.priority, -(p.weight + random.random())))
    return [(_text(p.target), p.port) for p in usable]


@inlineCallbacks
def _srv(resolver: Any, name: str):  # type: ignore[no-untyped-def]
    try:
        answer = yield resolver.lookupService(name)
    except _ABSENT:
        return []
    except Exception as e:  # a timeout or a refused query: try the next way
        log.msg(f"sip federation: SRV lookup of {name} failed: {e}")
        return []
    return _srv_order(_records(answer, dns.SRV))


@inlineCallbacks
def _naptr(resolver: Any, domain: str):  # type: ignore[no-untyped-def]
    """The SRV names the domain's NAPTR records give for SIPS over TCP, in their order."""
    try:
        answer = yield resolver.lookupNamingAuthorityPointer(domain)
    except _ABSENT:
        return []
    except Exception as e:
        log.msg(f"sip federation: NAPTR lookup of {domain} failed: {e}")
        return []
    chosen = [
        p
        for p in _records(answer, dns.NAPTR)
        if _text(p.service).upper() == NAPTR_SERVICE and _text(p.flags).lower() == "s"
    ]
    chosen.sort(key=lambda p: (p.order, p.preference))
    return [_text(p.replacement) for p in chosen if _text(p.replacement) not in ("", ".")]


def host_entry(hosts: dict[str, Any], domain: str) -> dict[str, Any] | None:
    """The [federation.hosts] entry for `domain`; a partner's entry serves its subdomains too
    (as for XMPP s2s)."""
    labels = domain.lower().rstrip(".").split(".")
    for i in range(max(1, len(labels) - 1)):
        entry = hosts.get(".".join(labels[i:]))
        if entry is not None:
            return entry  # type: ignore[no-any-return]
    return None


def locate(domain: str, hosts: dict[str, Any], resolver: Any) -> Deferred[list[tuple[str, int]]]:
    """The (host, port) list to try in order for `domain`'s SIP federation server."""
    entry = (host_entry(hosts, domain) or {}).get("sip")
    if entry is not None:
        from twisted.internet.defer import succeed

        return succeed([(entry.host, entry.port)])
    return _dns(domain, resolver)  # type: ignore[no-any-return]


@inlineCallbacks
def _dns(domain: str, resolver: Any):  # type: ignore[no-untyped-def]
    for name in (yield _naptr(resolver, domain)):
        found = yield _srv(resolver, name)
        if found:
            return found
    for prefix in SRV_NAMES:
        found = yield _srv(resolver, f"{prefix}.{domain}")
        if found:
            return found
    return [(domain, DEFAULT_TLS_PORT)]  # connecting resolves its A/AAAA records
