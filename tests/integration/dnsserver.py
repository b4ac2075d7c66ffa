"""A tiny authoritative DNS server (Twisted Names) for the interop tests, run as a subprocess.

Prosody finds its peers only through DNS, and its resolver ignores /etc/hosts (DESIGN §7), so
the tests serve the test domains' SRV and A records themselves:

    python dnsserver.py '{"a.test": {"srv": ["xmpp.a.test", 5269]},
                          "xmpp.a.test": {"a": "127.0.0.2"}}'

Other SRV names go under "services" and NAPTR records (RFC 3403: order, preference, flags,
service, regexp, replacement) under "naptr", as SIP federation finds its partners:

    {"b.test": {"services": {"_sipfederationtls._tcp": ["sip.b.test", 5061]},
                "naptr": [[10, 10, "s", "SIPS+D2T", "", "_sipfederationtls._tcp.b.test"]]}}

It binds UDP on 127.0.0.1, port chosen by the system, prints that port on one line, and serves
until stdin closes (the test ends) or it is terminated; each query is logged on stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import defer, reactor, stdio
from twisted.internet.protocol import Protocol
from twisted.names import dns, error, server

TTL = 5


class Records:
    """A resolver answering from a fixed table: {name: {"a": ip, "srv": [target, port],
    "services": {"_service._proto": [target, port]}, "naptr": [[...], ...]}}."""

    def __init__(self, table: dict[str, dict[str, Any]]):
        self.table = {k.lower().rstrip("."): v for k, v in table.items()}

    def _names(self) -> set[str]:
        names = set()
        for name in self.table:
            names.add(name)
            if "srv" in self.table[name]:
                names.add(f"_xmpp-server._tcp.{name}")
            for service in self.table[name].get("services", {}):
                names.add(f"{service}.{name}")
        return names

    def _service(self, name: str) -> tuple[str, int] | None:
        """The SRV target of a name listed under some domain's "services"."""
        for domain, entry in self.table.items():
            for service, target in entry.get("services", {}).items():
                if name == f"{service}.{domain}":
                    return str(target[0]), int(target[1])
        return None

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        name = query.name.name.decode().lower().rstrip(".")
        print(f"query {name} {dns.QUERY_TYPES.get(query.type, query.type)}", file=sys.stderr)
        answers: list[dns.RRHeader] = []
        if query.type == dns.SRV and name.startswith("_xmpp-server._tcp."):
            entry = self.table.get(name.removeprefix("_xmpp-server._tcp."), {})
            if "srv" in entry:
                target, port = entry["srv"]
                record = dns.Record_SRV(0, 0, int(port), target, ttl=TTL)
                answers.append(dns.RRHeader(name, dns.SRV, ttl=TTL, payload=record, auth=True))
        elif query.type == dns.SRV and (found := self._service(name)) is not None:
            record = dns.Record_SRV(0, 0, found[1], found[0], ttl=TTL)
            answers.append(dns.RRHeader(name, dns.SRV, ttl=TTL, payload=record, auth=True))
        elif query.type == dns.NAPTR and self.table.get(name, {}).get("naptr"):
            for order, pref, flags, service, regexp, replacement in self.table[name]["naptr"]:
                record = dns.Record_NAPTR(
                    order, pref, flags.encode(), service.encode(), regexp.encode(), replacement,
                    ttl=TTL,
                )  # fmt: skip
                answers.append(dns.RRHeader(name, dns.NAPTR, ttl=TTL, payload=record, auth=True))
        elif query.type == dns.A and "a" in self.table.get(name, {}):
            record = dns.Record_A(self.table[name]["a"], ttl=TTL)
            answers.append(dns.RRHeader(name, dns.A, ttl=TTL, payload=record, auth=True))
        known = self._names()
        if answers or any(n == name or n.endswith("." + name) for n in known):
            return defer.succeed((answers, [], []))  # a known name or parent: NOERROR
        return defer.fail(error.DomainError(name))


class StopOnClose(Protocol):
    def connectionLost(self, reason: Any = None) -> None:
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined]


def main() -> None:
    table = json.loads(sys.argv[1])
    factory = server.DNSServerFactory(clients=[Records(table)])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")  # type: ignore[attr-defined]
    print(port.getHost().port, flush=True)
    stdio.StandardIO(StopOnClose())
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
