"""Presence fan-out: a broadcast rendered once per access level, its stanza serialised once
and reused for every watcher, and big fan-outs spread over reactor turns in order. The real
router, presence service, rosters and session registry, on an injected clock, with endpoints
that record what they are given."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from standard_edition.core.fanout import PresenceFanout
from standard_edition.core.jid import JID, parse_jid
from standard_edition.core.model import Presence, RosterItem
from standard_edition.core.offline import OfflineStore
from standard_edition.core.roster import Rosters
from standard_edition.core.router import Router
from standard_edition.core.sessions import SessionRegistry
from standard_edition.core.subscription import State, Sub
from standard_edition.presence.access import Level
from standard_edition.presence.model import AWAY, EndpointState
from standard_edition.presence.service import PresenceService
from standard_edition.xmpp.presence_wire import PresenceWire
from standard_edition.xmpp.stanzas import presence_stanza
from standard_edition.xmpp.xml import serialize

DOMAIN = "example.test"


class _NoStore:
    """The services write through to the store; these tests look only at what is delivered."""

    def run(self, fn: Any, *args: Any) -> Deferred[None]:
        return succeed(None)


class _Accounts:
    """Every name has an account (creating real ones derives keys on a thread)."""

    def __init__(self) -> None:
        self.on_removed: list[Any] = []
        self.on_disabled: list[Any] = []

    def exists(self, username: str) -> bool:
        return True


class Turns(Clock):
    """A clock that runs reactor turns: like the reactor, a turn runs the calls that were due
    when it began, not those they schedule for "now" (Clock.advance would run those too)."""

    def turn(self) -> None:
        due = [c for c in self.calls if c.getTime() <= self.seconds()]
        for call in due:
            self.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


class Recorder:
    """An endpoint that keeps (sender, presence) for each presence delivered to it."""

    protocol = "xmpp"
    address = "127.0.0.1:5"
    since = 0.0
    secure = True
    interested = True

    def __init__(self, jid: str, available: bool = True) -> None:
        self.jid = parse_jid(jid)
        self.presence: Presence | None = Presence() if available else None
        self.got: list[tuple[JID, Presence | None]] = []

    def deliver_presence(self, sender: JID, presence: Presence | None) -> None:
        self.got.append((sender, presence))

    def deliver_message(self, msg: Any) -> None:
        pass

    def deliver_subscription(self, sender: JID, kind: Any) -> None:
        pass

    def deliver_roster_push(self, item: Any, removed: bool = False) -> None:
        pass

    def close(self, condition: str, text: str = "") -> None:
        pass


# -- the queue ---------------------------------------------------------------------------


def _queue(per_turn: int, *jids: str) -> tuple[Turns, PresenceFanout, list[Recorder]]:
    clock, sessions = Turns(), SessionRegistry()
    eps = [Recorder(j) for j in jids]
    for ep in eps:
        sessions.add(ep)
    return clock, PresenceFanout(clock, sessions, per_turn), eps


ALICE = parse_jid(f"alice@{DOMAIN}/desk")


def test_small_fanout_is_delivered_at_once() -> None:
    clock, fanout, eps = _queue(4, f"bob@{DOMAIN}/a", f"carol@{DOMAIN}/a")
    p = Presence(status="here")
    for ep in eps:
        fanout.deliver(ep, ALICE, p)
    assert [ep.got for ep in eps] == [[(ALICE, p)], [(ALICE, p)]]
    assert fanout.waiting == 0
    clock.turn()  # the turn ends with nothing left to do
    assert clock.getDelayedCalls() == []


def test_big_fanout_spreads_over_turns() -> None:
    clock, fanout, eps = _queue(3, *(f"w{i}@{DOMAIN}/r" for i in range(8)))
    p = Presence(status="one")
    for ep in eps:
        fanout.deliver(ep, ALICE, p)
    delivered = [sum(len(ep.got) for ep in eps)]
    while fanout.waiting:
        clock.turn()
        delivered.append(sum(len(ep.got) for ep in eps))
    assert delivered == [3, 6, 8]
    assert all(ep.got == [(ALICE, p)] for ep in eps)


def test_many_stanzas_to_one_endpoint_are_written_in_one_turn() -> None:
    # a login gathers every contact's presence for the new session: one TLS record's worth
    _, fanout, (ep,) = _queue(2, f"bob@{DOMAIN}/a")
    for i in range(60):
        fanout.deliver(ep, parse_jid(f"c{i}@{DOMAIN}/r"), Presence())
    assert len(ep.got) == 60 and fanout.waiting == 0


def test_two_changes_together_keep_each_watchers_order() -> None:
    clock, fanout, eps = _queue(3, *(f"w{i}@{DOMAIN}/r" for i in range(5)))
    first, second = Presence(status="one"), Presence(status="two")
    for p in (first, second):
        for ep in eps:
            fanout.deliver(ep, ALICE, p)
    # the first three were written to already this turn: the second change joins them
    assert [len(ep.got) for ep in eps] == [2, 2, 2, 0, 0]
    clock.turn()
    for ep in eps:
        assert [p for _, p in ep.got] == [first, second]


def test_a_watcher_with_presence_waiting_gets_a_newer_one_after_it() -> None:
    clock, fanout, eps = _queue(2, *(f"{n}@{DOMAIN}/a" for n in "abcde"))
    a, _, c, _, e = eps
    old, new = Presence(status="old"), Presence(status="new")
    for ep in eps:
        fanout.deliver(ep, ALICE, old)
    assert fanout.waiting == 3  # c, d, e
    clock.turn()  # c and d now; e waits
    fanout.deliver(c, ALICE, new)  # written to this turn already: at once
    assert c.got == [(ALICE, old), (ALICE, new)]
    fanout.deliver(e, ALICE, new)  # behind e's old one
    fanout.deliver(a, ALICE, new)  # the turn is full
    assert e.got == [] and a.got == [(ALICE, old)]
    clock.turn()
    assert e.got == [(ALICE, old), (ALICE, new)]
    assert a.got == [(ALICE, old), (ALICE, new)]
    assert fanout.waiting == 0


def test_ended_session_gets_nothing_and_a_resumed_stream_gets_what_waited() -> None:
    clock, fanout, eps = _queue(1, f"bob@{DOMAIN}/a", f"carol@{DOMAIN}/a", f"dave@{DOMAIN}/a")
    bob, carol, dave = eps
    p = Presence(status="x")
    for ep in eps:
        fanout.deliver(ep, ALICE, p)
    sessions = fanout._sessions
    sessions.remove(carol)  # logged out before its turn
    resumed = Recorder(str(dave.jid))  # XEP-0198: a new stream took dave's session over
    sessions.add(resumed)
    clock.turn()
    clock.turn()
    assert bob.got == [(ALICE, p)]
    assert carol.got == [] and dave.got == []
    assert resumed.got == [(ALICE, p)]


def test_a_new_login_without_presence_does_not_get_the_old_sessions_presence() -> None:
    clock, fanout, eps = _queue(1, f"bob@{DOMAIN}/a", f"carol@{DOMAIN}/a")
    _, carol = eps
    fanout.deliver(eps[0], ALICE, Presence())
    fanout.deliver(carol, ALICE, Presence())
    newer = Recorder(str(carol.jid), available=False)  # same resource, no presence yet
    fanout._sessions.add(newer)
    clock.turn()
    assert newer.got == [] and carol.got == []


def test_flush_writes_an_endpoints_waiting_presence_now_and_the_rest_keep_their_turns() -> None:
    clock, fanout, eps = _queue(2, *(f"{n}@{DOMAIN}/a" for n in "abcde"))
    old, new = Presence(status="old"), Presence(status="new")
    for ep in eps:
        fanout.deliver(ep, ALICE, old)
    a, _, c, d, e = eps
    fanout.deliver(d, ALICE, new)  # waits behind d's old one
    assert fanout.waiting == 4  # c, d twice, e
    fanout.flush(d)  # a message for d is about to be written
    assert d.got == [(ALICE, old), (ALICE, new)]
    assert fanout.waiting == 2
    fanout.flush(a)  # nothing waits for a: nothing happens
    assert a.got == [(ALICE, old)]
    while fanout.waiting:
        clock.turn()
    assert c.got == [(ALICE, old)] and e.got == [(ALICE, old)]
    assert d.got == [(ALICE, old), (ALICE, new)]  # nothing written twice
    # d has no queue left: a newer presence goes at once if the turn allows, in order
    clock.turn()
    fanout.deliver(d, ALICE, Presence(status="newest"))
    assert [p.status for _, p in d.got if p is not None] == ["old", "new", "newest"]


def test_per_turn_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PresenceFanout(Clock(), SessionRegistry(), 0)


# -- the router: one rendering per access level ----------------------------------------------


def _router(*contacts: str) -> tuple[Turns, Router, dict[str, Recorder]]:
    clock, store = Turns(), _NoStore()
    presence = PresenceService(clock, store, DOMAIN)  # type: ignore[arg-type]
    rosters, sessions = Rosters(store), SessionRegistry()  # type: ignore[arg-type]
    router = Router(
        DOMAIN,
        _Accounts(),  # type: ignore[arg-type]
        rosters,
        sessions,
        OfflineStore(store),  # type: ignore[arg-type]
        presence,
    )
    eps = {}
    for name in contacts:
        both = State(Sub.BOTH)
        rosters.put("alice", RosterItem(JID(name, DOMAIN, None), state=both))
        rosters.put(name, RosterItem(JID("alice", DOMAIN, None), state=both))
        eps[name] = ep = Recorder(f"{name}@{DOMAIN}/desk")
        sessions.add(ep)
    eps["alice"] = Recorder(f"alice@{DOMAIN}/desk", available=False)
    sessions.add(eps["alice"])
    return clock, router, eps


def _last_from_alice(ep: Recorder) -> Presence | None:
    return [p for sender, p in ep.got if sender.local == "alice"][-1]


def test_watchers_at_one_level_share_a_view_and_other_levels_get_their_own() -> None:
    clock, router, eps = _router("bob", "carol", "dave", "erin")
    service = router.presence
    service.set_level("alice", JID("dave", DOMAIN, None), Level.EXTERNAL)
    service.set_level("alice", JID("erin", DOMAIN, None), Level.FRIENDS)
    service.set_oof_note("alice", "back on Monday")
    service.block("alice", [JID("carol", DOMAIN, None)])
    alice = eps["alice"]
    router.presence_update(alice, Presence(status="writing the report"))
    clock.turn()
    bob, carol, dave, erin = (_last_from_alice(eps[n]) for n in ("bob", "carol", "dave", "erin"))
    assert bob is not None and dave is not None and erin is not None
    assert carol is None  # blocked: offline
    assert bob.status == "writing the report" and bob.oof_note is None  # colleagues
    assert dave.status is None and dave.oof_note is None  # external: availability only
    assert erin.oof_note == "back on Monday"  # friends and family: everything
    assert bob is not dave and bob is not erin and dave is not erin
    # another colleague gets the very same value, so its stanza is serialised once
    router.rosters.put("alice", RosterItem(JID("frank", DOMAIN, None), state=State(Sub.BOTH)))
    frank = Recorder(f"frank@{DOMAIN}/desk")
    router.sessions.add(frank)
    router.presence_update(alice, Presence(status="lunch"))
    clock.turn()
    assert _last_from_alice(frank) is _last_from_alice(eps["bob"])


def test_a_change_reaches_watchers_as_a_new_view() -> None:
    clock, router, eps = _router("bob")
    alice = eps["alice"]
    router.presence_update(alice, Presence(status="one"))
    first = _last_from_alice(eps["bob"])
    router.presence_update(alice, Presence(status="two", state=EndpointState(AWAY)))
    clock.turn()
    second = _last_from_alice(eps["bob"])
    assert first is not None and second is not None
    assert (first.status, second.status) == ("one", "two")
    assert second.show == "xa"
    wire = PresenceWire()
    to = eps["bob"].jid
    assert wire.stanza(alice.jid, to, first) != wire.stanza(alice.jid, to, second)
    assert b"two" in wire.stanza(alice.jid, to, second)


def test_a_big_broadcast_reaches_every_watcher_over_several_turns() -> None:
    names = [f"user{i}" for i in range(60)]
    clock, router, eps = _router(*names)
    router.fanout.per_turn = 7
    router.presence_update(eps["alice"], Presence(status="storm"))
    assert sum(1 for n in names if eps[n].got) <= 7
    turns = 0
    while router.fanout.waiting:
        clock.turn()
        turns += 1
    assert turns >= 60 // 7
    assert all(_last_from_alice(eps[n]) is not None for n in names)


# -- the wire form ---------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_resource = st.sampled_from(["r", "a'b", "x&y", "<r>", 'q"t', "é ü", "phone/2"])


@given(
    status=st.none() | _text,
    show=st.sampled_from([None, "away", "xa", "dnd"]),
    priority=st.integers(-5, 5),
    code=st.none() | st.integers(3000, 20000),
    oof=st.none() | _text,
    resource=_resource,
)
def test_cached_stanza_is_byte_for_byte_the_serialised_element(
    status: str | None,
    show: str | None,
    priority: int,
    code: int | None,
    oof: str | None,
    resource: str,
) -> None:
    caps = ET.Element("{http://jabber.org/protocol/caps}c", {"node": "n'&<", "ver": "v"})
    p = Presence(show, status, priority, (caps,), code=code, activity="in-a-call", oof_note=oof)
    sender = parse_jid(f"alice@{DOMAIN}/a'b")
    wire = PresenceWire()
    for to in (parse_jid(f"bob@{DOMAIN}/{resource}"), parse_jid(f"carol@{DOMAIN}/x")):
        assert wire.stanza(sender, to, p) == serialize(presence_stanza(sender, to, p))


def test_cache_follows_the_sender_and_stays_bounded() -> None:
    wire = PresenceWire(size=2)
    p = Presence(status="same")
    to = parse_jid(f"bob@{DOMAIN}/r")
    a, b = parse_jid(f"alice@{DOMAIN}/x"), parse_jid(f"carol@{DOMAIN}/y")
    assert wire.stanza(b, to, p) == serialize(presence_stanza(b, to, p))
    assert wire.stanza(a, to, p) == serialize(presence_stanza(a, to, p))
    for i in range(5):
        wire.stanza(a, to, Presence(status=str(i)))
    assert len(wire) <= 2


class Inbox(Recorder):
    """An endpoint that keeps presences and messages in the order they were written to it."""

    def __init__(self, jid: str) -> None:
        super().__init__(jid)
        self.stream: list[str] = []

    def deliver_presence(self, sender: JID, presence: Presence | None) -> None:
        super().deliver_presence(sender, presence)
        self.stream.append(f"presence {presence.status if presence else None}")

    def deliver_message(self, msg: Any) -> None:
        self.stream.append(f"message {msg.body}")


def test_a_message_never_overtakes_the_presence_its_sender_sent_before_it() -> None:
    from standard_edition.core.model import Message

    names = [f"user{i}" for i in range(40)]
    clock, router, eps = _router(*names)
    router.fanout.per_turn = 5
    last = Inbox(f"{names[-1]}@{DOMAIN}/desk")  # the last watcher: its presence waits longest
    router.sessions.add(last)
    router.presence_update(eps["alice"], Presence(status="in a meeting"))
    assert router.fanout.waiting > 0 and last.stream == []
    msg = Message(sender=eps["alice"].jid, to=last.jid, type="chat", body="see you at 3")
    router.route_message(msg)
    assert last.stream == ["presence in a meeting", "message see you at 3"]
    while router.fanout.waiting:
        clock.turn()
    assert last.stream == ["presence in a meeting", "message see you at 3"]
    assert all(_last_from_alice(eps[n]) is not None for n in names[:-1])
