"""Who sees what of a user's presence: the one place that decides it (DESIGN §4).

Access levels are Skype's privacy relationships. Every protocol adapter asks `view` what a
given watcher may see, so XMPP presence, SIP NOTIFY and probes always agree.
"""

from __future__ import annotations

from enum import IntEnum

from standard_edition.presence.model import OFFLINE, Aggregate


class Level(IntEnum):
    BLOCKED = 0  # sees Offline, cannot IM
    EXTERNAL = 1  # availability only
    COLLEAGUES = 2  # + note and activity (default for the same domain)
    WORKGROUP = 3  # + out-of-office note
    FRIENDS = 4  # Friends and Family: everything

    @property
    def label(self) -> str:
        return LEVEL_NAMES_OUT[self]


LEVEL_NAMES = {
    "blocked": Level.BLOCKED,
    "external": Level.EXTERNAL,
    "colleagues": Level.COLLEAGUES,
    "workgroup": Level.WORKGROUP,
    "friends": Level.FRIENDS,
    "friends-and-family": Level.FRIENDS,
}
LEVEL_NAMES_OUT = {
    Level.BLOCKED: "blocked",
    Level.EXTERNAL: "external",
    Level.COLLEAGUES: "colleagues",
    Level.WORKGROUP: "workgroup",
    Level.FRIENDS: "friends-and-family",
}


def default_level(owner_domain: str, watcher_domain: str) -> Level:
    return Level.COLLEAGUES if owner_domain == watcher_domain else Level.EXTERNAL


def view(agg: Aggregate, level: Level) -> Aggregate:
    """What a watcher at `level` sees of `agg`."""
    if level is Level.BLOCKED:
        return Aggregate(OFFLINE, source="offline")
    if level is Level.EXTERNAL:
        return Aggregate(agg.code, source=agg.source)
    if level is Level.COLLEAGUES:
        return Aggregate(agg.code, agg.activity, agg.note, None, agg.source)
    return agg
