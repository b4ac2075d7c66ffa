"""The user directory: colleagues found by user name and display name (DESIGN §9).

Protocol-free: XMPP's XEP-0055 search (xmpp/search.py) asks it, and so could any other adapter.
Matching is a case-insensitive substring test, so "rob" finds Robert Brown. Disabled accounts
are not listed, nor users who blocked the one searching. `search` gives at most `limit` entries,
with the number of matches, so that the answer can say it was cut short; `matches` gives them
all in a stable order, for an answer that pages through them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from standard_edition.core.accounts import Accounts

SEARCH_LIMIT = 50  # entries in one answer; the rest are counted, not listed


@dataclass(frozen=True, slots=True)
class Entry:
    username: str
    address: str  # user@domain
    name: str  # display name: the admin's, else the card's full name, else empty
    first: str  # the display name's words but the last
    last: str  # its last word
    email: str


@dataclass(frozen=True, slots=True)
class Query:
    """What to look for; empty fields match everyone, given ones must all match."""

    text: str = ""  # user name or display name
    first: str = ""
    last: str = ""
    nick: str = ""  # user name
    email: str = ""

    @property
    def empty(self) -> bool:
        return not (self.text or self.first or self.last or self.nick or self.email)


def split_name(name: str) -> tuple[str, str]:
    """("Robert", "Brown") from "Robert Brown"; a single word is a first name."""
    words = name.split()
    if len(words) < 2:
        return (name.strip(), "")
    return (" ".join(words[:-1]), words[-1])


@dataclass(frozen=True, slots=True)
class Result:
    entries: list[Entry]
    total: int  # matches before the limit

    @property
    def truncated(self) -> bool:
        return self.total > len(self.entries)


class Directory:
    def __init__(
        self,
        accounts: Accounts,
        card: Callable[[str], tuple[str | None, str | None]] = lambda _: (None, None),
        limit: int = SEARCH_LIMIT,
    ) -> None:
        """`card(username)` gives (full name, e-mail) from the user's contact card."""
        self._accounts = accounts
        self._card = card
        self.limit = limit

    def entry(self, username: str) -> Entry | None:
        acct = self._accounts.get(username)
        if acct is None:
            return None
        fn, email = self._card(username)
        name = acct.name or fn or ""
        first, last = split_name(name)
        address = f"{username}@{self._accounts.domain}"
        return Entry(username, address, name, first, last, email or "")

    def search(self, query: Query, hidden: Callable[[str], bool] = lambda _: False) -> Result:
        """The first `limit` of `matches`, and how many there are."""
        found = self.matches(query, hidden)
        return Result(found[: self.limit], len(found))

    def matches(self, query: Query, hidden: Callable[[str], bool] = lambda _: False) -> list[Entry]:
        """Every enabled account matching `query`, ordered by user name (so that a client paging
        through them sees each once); `hidden(username)` leaves some out (the users who blocked
        the one searching)."""
        q = Query(
            *(
                s.strip().casefold()
                for s in (query.text, query.first, query.last, query.nick, query.email)
            )
        )
        found: list[Entry] = []
        for acct in self._accounts.all():  # sorted by user name
            if not acct.enabled or hidden(acct.username):
                continue
            e = self.entry(acct.username)
            if e is not None and _matches(e, q):
                found.append(e)
        return found


def _matches(e: Entry, q: Query) -> bool:
    def has(value: str, part: str) -> bool:
        return not part or part in value.casefold()

    return (
        (not q.text or q.text in e.username.casefold() or q.text in e.name.casefold())
        and has(e.first, q.first)
        and has(e.last, q.last)
        and has(e.username, q.nick)
        and has(e.email, q.email)
    )
