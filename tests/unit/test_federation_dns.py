"""[federation] dns: the resolvers partner lookups ask, and how a target name becomes an address."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.names import dns, error

from standard_edition import config
from standard_edition.config import Address, ConfigError
from standard_edition.edge.listeners import dns_resolver
from standard_edition.xmpp.s2s import address_of


def load(tmp_path: Path, federation: str) -> config.Config:
    path = tmp_path / "config.toml"
    path.write_text(f'domain = "a.test"\n[federation]\n{federation}\n')
    return config.load(path)


def test_dns_servers_are_ip_addresses_with_an_optional_port(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'dns = ["192.0.2.53", "127.0.0.1:5353", "[::1]:53"]')
    assert cfg.federation_dns == (
        Address("192.0.2.53", 53),
        Address("127.0.0.1", 5353),
        Address("::1", 53),
    )
    assert load(tmp_path, "").federation_dns == ()
    assert dns_resolver(load(tmp_path, "")) is None  # the system's resolver


@pytest.mark.parametrize("value", ['["localhost:53"]', '["ns.example:53"]', '"127.0.0.1"'])
def test_a_bad_dns_entry_is_one_line_naming_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, f"dns = {value}")
    assert str(e.value).startswith("federation.dns:")


class Table:
    def __init__(self, records: dict[str, str]) -> None:
        self.records = records

    def lookupAddress(self, name: str) -> defer.Deferred[Any]:
        if name not in self.records:
            return defer.fail(error.DNSNameError(name))
        rr = dns.RRHeader(name, dns.A, payload=dns.Record_A(self.records[name]))
        return defer.succeed(([rr], [], []))


def test_a_target_name_is_resolved_by_the_configured_resolver_only() -> None:
    got: list[Any] = []
    address_of("xmpp.b.test", Table({"xmpp.b.test": "127.0.0.3"})).addBoth(got.append)
    address_of("127.0.0.9", Table({})).addBoth(got.append)  # an address stays itself
    address_of("b.test", None).addBoth(got.append)  # no resolver: the system resolves the name
    assert got == ["127.0.0.3", "127.0.0.9", "b.test"]
    address_of("gone.test", Table({})).addErrback(lambda f: got.append(f.type))
    assert got[-1] is error.DNSNameError
