"""Which federation carries a partner domain: XMPP when it has an XMPP route, else SIP."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.names import dns, error

from standard_edition.config import Address
from standard_edition.core.jid import JID
from standard_edition.core.model import Message
from standard_edition.core.subscription import Kind
from standard_edition.edge.routes import ROUTE_TTL, FederationRoutes


class Recorder:
    def __init__(self, name: str, log: list[tuple[str, str, str]]) -> None:
        self.name = name
        self.log = log

    def send_message(self, msg: Message) -> defer.Deferred[None]:
        self.log.append((self.name, "message", msg.to.domain))
        return defer.succeed(None)

    def send_presence(self, sender: JID, to: JID, presence: Any) -> None:
        self.log.append((self.name, "presence", to.domain))

    def send_subscription(self, sender: JID, to: JID, kind: Kind) -> None:
        self.log.append((self.name, kind.value, to.domain))

    def send_probe(self, sender: JID, to: JID) -> None:
        self.log.append((self.name, "probe", to.domain))


class Resolver:
    def __init__(self) -> None:
        self.pending: dict[str, defer.Deferred[Any]] = {}

    def lookupService(self, name: str) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending[name] = d
        return d


ALICE = JID("alice", "a.test", None)


def routes(hosts: dict[str, Any]) -> tuple[FederationRoutes, list[Any], Resolver, Clock]:
    log: list[Any] = []
    clock, resolver = Clock(), Resolver()
    r = FederationRoutes(clock, hosts, Recorder("xmpp", log), Recorder("sip", log), resolver)
    return r, log, resolver, clock


def test_the_static_map_decides_by_its_entry() -> None:
    r, log, resolver, _ = routes(
        {
            "x.test": {"xmpp": Address("127.0.0.3", 5269), "sip": Address("127.0.0.3", 5061)},
            "s.test": {"sip": Address("127.0.0.4", 5061)},
        }
    )
    r.send_probe(ALICE, JID("erin", "x.test", None))
    r.send_probe(ALICE, JID("erin", "s.test", None))
    assert log == [("xmpp", "probe", "x.test"), ("sip", "probe", "s.test")]
    assert resolver.pending == {}


def test_srv_xmpp_server_records_mean_xmpp_and_everything_waits_in_order() -> None:
    r, log, resolver, _ = routes({})
    erin = JID("erin", "p.test", None)
    done = r.send_message(Message(ALICE, erin, "chat", "hi"))
    r.send_subscription(ALICE, erin, Kind.SUBSCRIBE)
    assert log == [] and list(resolver.pending) == ["_xmpp-server._tcp.p.test"]
    srv = dns.RRHeader(
        "_xmpp-server._tcp.p.test", dns.SRV, payload=dns.Record_SRV(0, 0, 5269, b"x.p.test")
    )
    resolver.pending.pop("_xmpp-server._tcp.p.test").callback(([srv], [], []))
    assert log == [("xmpp", "message", "p.test"), ("xmpp", "subscribe", "p.test")]
    assert done.called


def test_no_xmpp_route_means_sip_for_a_while() -> None:
    r, log, resolver, clock = routes({})
    erin = JID("erin", "q.test", None)
    r.send_probe(ALICE, erin)
    resolver.pending.pop("_xmpp-server._tcp.q.test").errback(error.DomainError("q.test"))
    r.send_presence(ALICE, erin, None)
    assert log == [("sip", "probe", "q.test"), ("sip", "presence", "q.test")]
    assert resolver.pending == {}  # remembered
    clock.advance(ROUTE_TTL + 1)
    r.send_probe(ALICE, erin)
    assert "_xmpp-server._tcp.q.test" in resolver.pending  # asked again


def test_one_adapter_alone_takes_everything() -> None:
    log: list[Any] = []
    only_sip = FederationRoutes(Clock(), {}, None, Recorder("sip", log), Resolver())
    only_sip.send_probe(ALICE, JID("erin", "z.test", None))
    assert log == [("sip", "probe", "z.test")]


def test_decide_waits_for_dns_and_names_the_federation() -> None:
    r, log, resolver, _ = routes({"m.test": {"sip": Address("127.0.0.3", 5061)}})
    decided: list[str] = []
    r.decide("m.test").addCallback(decided.append)  # in the map: known at once
    r.decide("q.test").addCallback(decided.append)
    assert decided == ["sip"]
    resolver.pending["_xmpp-server._tcp.q.test"].callback(([], [], []))  # no SRV: SIP
    assert decided == ["sip", "sip"]
    srv = dns.RRHeader(
        "_xmpp-server._tcp.x.test", dns.SRV, payload=dns.Record_SRV(0, 0, 5269, b"xmpp.x.test")
    )
    r.decide("x.test").addCallback(decided.append)
    resolver.pending["_xmpp-server._tcp.x.test"].callback(([srv], [], []))
    assert decided == ["sip", "sip", "xmpp"] and log == []
