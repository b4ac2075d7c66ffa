"""The session registry's counts by protocol, kept as endpoints come and go (the counters feed
reads them every few seconds, so they must not need a walk over every session)."""

from __future__ import annotations

from standard_edition.core.jid import parse_jid
from standard_edition.core.sessions import SessionRegistry


class Ep:
    presence = None
    interested = False

    def __init__(self, jid: str, protocol: str) -> None:
        self.jid = parse_jid(jid)
        self.protocol = protocol


def _walked(sessions: SessionRegistry) -> dict[str, int]:
    out: dict[str, int] = {}
    for ep in sessions:
        out[ep.protocol] = out.get(ep.protocol, 0) + 1
    return out


def test_counts_follow_logins_replacements_and_logouts() -> None:
    sessions = SessionRegistry()
    assert sessions.counts_by_protocol() == {}
    desk = Ep("alice@example.test/desk", "xmpp")
    phone = Ep("alice@example.test/phone", "sip")
    bob = Ep("bob@example.test/desk", "xmpp")
    for ep in (desk, phone, bob):
        sessions.add(ep)
    assert sessions.counts_by_protocol() == {"xmpp": 2, "sip": 1} == _walked(sessions)
    sessions.add(desk)  # the same endpoint again: nothing changes
    assert sessions.counts_by_protocol() == {"xmpp": 2, "sip": 1}
    newer = Ep("alice@example.test/phone", "xmpp")  # takes the phone's address over
    assert sessions.add(newer) is phone
    assert sessions.counts_by_protocol() == {"xmpp": 3} == _walked(sessions)
    assert not sessions.remove(phone)  # already replaced: no change
    assert sessions.remove(newer) and sessions.remove(bob) and sessions.remove(desk)
    assert sessions.counts_by_protocol() == {} == _walked(sessions)
