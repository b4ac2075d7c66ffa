"""Who sees what of a user's presence: the one place that decides it (DESIGN §4).

Access levels are Skype's privacy relationships. Every protocol adapter asks `view` what a
given watcher may see, so XMPP presence, SIP NOTIFY and probes always agree, and asks
`card_parts` which parts of a user's contact card (XEP-0054 vCard) a watcher may read.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

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


class CardPart(StrEnum):
    """Parts of a contact card, from the most public to the most private."""

    NAME = "name"  # full name, structured name, nickname
    PHOTO = "photo"  # the picture (its hash also travels in presence, XEP-0153)
    WORK = "work"  # work phones, addresses and e-mail, organisation, title, notes
    MOBILE = "mobile"  # mobile phone numbers
    HOME = "home"  # home phones, addresses and e-mail
    PERSONAL = "personal"  # birthday, and whatever else only close contacts see


# Skype's contact card by relationship: external contacts see a name and a picture, colleagues
# the work details, workgroup also mobile numbers, friends and family everything.
_CARD_PARTS = {
    Level.BLOCKED: frozenset[CardPart](),
    Level.EXTERNAL: frozenset({CardPart.NAME, CardPart.PHOTO}),
    Level.COLLEAGUES: frozenset({CardPart.NAME, CardPart.PHOTO, CardPart.WORK}),
    Level.WORKGROUP: frozenset({CardPart.NAME, CardPart.PHOTO, CardPart.WORK, CardPart.MOBILE}),
    Level.FRIENDS: frozenset(CardPart),
}


def card_parts(level: Level) -> frozenset[CardPart]:
    """The parts of a user's card a watcher at `level` may read; empty: none, not even that
    the card exists."""
    return _CARD_PARTS[level]
