"""FederationPolicy.domain_allowed remembers its answers; every change of mode or lists, by
se-ctl or by `config reset`, must be seen at once."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sqlite_utils
from twisted.internet.defer import Deferred, succeed

from standard_edition import config
from standard_edition.core.federation import FederationPolicy
from standard_edition.core.settings import Settings


class NowDatabase:
    """The store's `run`, done at once on an in-memory SQLite (no writer thread)."""

    def __init__(self) -> None:
        self.db = sqlite_utils.Database(memory=True)
        self.db["settings"].create({"key": str, "value": str}, pk="key")

    def run(self, fn: Any) -> Deferred[Any]:
        return succeed(fn(self.db))


def policy(**cfg: Any) -> tuple[FederationPolicy, Settings]:
    base = replace(config.load(None), **cfg)
    settings = Settings(NowDatabase())  # type: ignore[arg-type]
    settings.load()
    return FederationPolicy(base, settings), settings


def test_allowlist_covers_subdomains_and_block_wins() -> None:
    p, _ = policy(federation_mode="allowlist", federation_allow=("partner.example",))
    assert p.domain_allowed("partner.example")
    assert p.domain_allowed("conference.partner.example")
    assert p.domain_allowed("Partner.Example.")
    assert not p.domain_allowed("other.example")
    assert not p.domain_allowed("notpartner.example")
    p.block_domain("conference.partner.example")
    assert not p.domain_allowed("conference.partner.example")
    assert p.domain_allowed("partner.example")


def test_a_remembered_answer_follows_every_change() -> None:
    p, settings = policy(federation_mode="allowlist", federation_allow=())
    for _ in range(2):  # the second asks are answered from memory
        assert not p.domain_allowed("partner.example")
    p.allow_domain("partner.example")
    assert p.domain_allowed("partner.example")
    p.block_domain("partner.example")
    assert not p.domain_allowed("partner.example")
    p.block_domain("partner.example", blocked=False)
    assert not p.domain_allowed("partner.example")  # not blocked, but not allowed either
    p.set_mode("open")
    assert p.domain_allowed("partner.example") and p.domain_allowed("anyone.example")
    # `se-ctl config reset federation.mode`: the file's allowlist is in force again
    settings.delete("federation.mode")
    p.refresh()
    assert not p.domain_allowed("anyone.example")


def test_made_up_names_do_not_grow_the_memory_without_bound() -> None:
    p, _ = policy(federation_mode="open")
    for i in range(10_000):
        assert p.domain_allowed(f"host{i}.example")
    assert len(p._answers) <= 4096
