"""RFC 3263 §4 location of a partner's SIP federation server, from a table of DNS answers."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.names import dns, error

from standard_edition.config import Address
from standard_edition.sip.locate import locate


class TableResolver:
    """Answers NAPTR and SRV queries from a dict; anything else is NXDOMAIN."""

    def __init__(self, naptr: dict[str, list[Any]], srv: dict[str, list[Any]]) -> None:
        self.naptr = naptr
        self.srv = srv
        self.asked: list[str] = []

    def _answer(self, name: str, rtype: int, records: list[Any]) -> Any:
        return defer.succeed(([dns.RRHeader(name, rtype, payload=r) for r in records], [], []))

    def lookupNamingAuthorityPointer(self, name: str) -> Any:
        self.asked.append(f"NAPTR {name}")
        if name in self.naptr:
            return self._answer(name, dns.NAPTR, self.naptr[name])
        return defer.fail(error.DomainError(name))

    def lookupService(self, name: str) -> Any:
        self.asked.append(f"SRV {name}")
        if name in self.srv:
            return self._answer(name, dns.SRV, self.srv[name])
        return defer.fail(error.DomainError(name))


def result(d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the lookup did not finish"
    return out[0]


def naptr(order: int, pref: int, service: bytes, replacement: bytes) -> Any:
    return dns.Record_NAPTR(order, pref, b"s", service, b"", replacement)


def test_static_map_wins_and_asks_no_dns() -> None:
    r = TableResolver({}, {})
    hosts = {"partner.example": {"sip": Address("127.0.0.3", 5071)}}
    assert result(locate("partner.example", hosts, r)) == [("127.0.0.3", 5071)]
    assert r.asked == []


def test_naptr_for_sips_over_tcp_points_to_its_srv_records() -> None:
    r = TableResolver(
        {
            "p.example": [
                naptr(10, 10, b"SIP+D2U", b"_sip._udp.p.example"),
                naptr(20, 10, b"SIPS+D2T", b"_sips._tcp.p.example"),
            ]
        },
        {"_sips._tcp.p.example": [dns.Record_SRV(0, 0, 5061, b"sip.p.example")]},
    )
    assert result(locate("p.example", {}, r)) == [("sip.p.example", 5061)]
    assert "SRV _sip._udp.p.example" not in r.asked  # UDP is no federation transport


def test_without_naptr_skype_federation_srv_comes_before_sips() -> None:
    r = TableResolver(
        {},
        {
            "_sipfederationtls._tcp.p.example": [
                dns.Record_SRV(20, 0, 5062, b"backup.p.example"),
                dns.Record_SRV(10, 0, 5061, b"edge.p.example"),
            ],
            "_sips._tcp.p.example": [dns.Record_SRV(0, 0, 5061, b"other.p.example")],
        },
    )
    assert result(locate("p.example", {}, r)) == [
        ("edge.p.example", 5061),
        ("backup.p.example", 5062),
    ]


def test_sips_srv_then_the_domain_itself_on_5061() -> None:
    r = TableResolver({}, {"_sips._tcp.p.example": [dns.Record_SRV(0, 0, 5081, b"s.p.example")]})
    assert result(locate("p.example", {}, r)) == [("s.p.example", 5081)]
    nothing = TableResolver({}, {})
    assert result(locate("q.example", {}, nothing)) == [("q.example", 5061)]
    assert nothing.asked == [
        "NAPTR q.example",
        "SRV _sipfederationtls._tcp.q.example",
        "SRV _sips._tcp.q.example",
    ]


def test_a_dot_target_means_no_service_there() -> None:
    r = TableResolver({}, {"_sipfederationtls._tcp.p.example": [dns.Record_SRV(0, 0, 0, b".")]})
    assert result(locate("p.example", {}, r)) == [("p.example", 5061)]
