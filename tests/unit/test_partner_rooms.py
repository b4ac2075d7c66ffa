"""Which partner rooms our clients sit in (xmpp/partner_rooms.py), and what they are told when
the federation policy takes them out, without sockets: a fake s2s adapter, router and policy."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from standard_edition.core.jid import JID, parse_jid
from standard_edition.core.model import Presence
from standard_edition.xmpp.partner_rooms import MUC_X, NS_MUC_USER, PartnerRooms
from standard_edition.xmpp.stanzas import C

ALICE = parse_jid("alice@a.test/laptop")
ROOM = parse_jid("team@conference.b.test")
X = "{" + NS_MUC_USER + "}"


class Client:
    def __init__(self) -> None:
        self.got: list[ET.Element] = []

    def deliver_stanza(self, el: ET.Element) -> None:
        self.got.append(el)


class Sessions(dict[JID, Any]):
    pass


class Router:
    def __init__(self) -> None:
        self.sessions = Sessions()


class S2S:
    def __init__(self) -> None:
        self.presence_sent: list[Any] = []
        self.room_presence_seen: list[Any] = []


class Policy:
    def __init__(self) -> None:
        self.blocked: set[str] = set()
        self.on_refused: list[Any] = []
        self.on_user_changed: list[Any] = []

    def domain_allowed(self, domain: str) -> bool:
        return not any(domain == b or domain.endswith("." + b) for b in self.blocked)

    def block(self, domain: str) -> None:
        self.blocked.add(domain)
        for listener in self.on_refused:
            listener("")


def setup() -> tuple[PartnerRooms, S2S, Policy, Client]:
    s2s, router, policy, client = S2S(), Router(), Policy(), Client()
    router.sessions[ALICE] = client
    return PartnerRooms(s2s, router, policy), s2s, policy, client  # type: ignore[arg-type]


def join(s2s: S2S, nick: str) -> None:
    for sent in s2s.presence_sent:
        sent(ALICE, parse_jid(f"{ROOM}/{nick}"), Presence(payload=(ET.Element(MUC_X),)))


def room_says(s2s: S2S, nick: str, ptype: str) -> None:
    el = ET.Element(C + "presence", {"type": ptype})
    for seen in s2s.room_presence_seen:
        seen(parse_jid(f"{ROOM}/{nick}"), ALICE, el)


def test_a_blocked_partner_room_tells_its_occupant_of_ours_that_it_left() -> None:
    rooms, s2s, policy, client = setup()
    join(s2s, "alice")
    policy.block("b.test")
    (el,) = client.got
    assert el.get("from") == f"{ROOM}/alice" and el.get("type") == "unavailable"
    codes = [s.get("code") for s in el.findall(f"{X}x/{X}status")]
    assert codes == ["110", "307", "333"]
    assert "b.test" in (el.findtext(f"{X}x/{X}item/{X}reason") or "")
    assert rooms.seats == {}
    policy.block("c.test")
    assert len(client.got) == 1  # told once


def test_presence_to_a_contact_is_no_seat_and_a_left_room_is_forgotten() -> None:
    rooms, s2s, policy, client = setup()
    for sent in s2s.presence_sent:
        sent(ALICE, parse_jid("erin@b.test/phone"), Presence())  # no MUC element
    join(s2s, "alice")
    for sent in s2s.presence_sent:
        sent(ALICE, parse_jid(f"{ROOM}/alice"), None)  # the client leaves
    policy.block("b.test")
    assert client.got == [] and rooms.seats == {}


def test_a_refused_nickname_change_keeps_the_seat_under_the_old_one() -> None:
    _, s2s, policy, client = setup()
    join(s2s, "alice")
    join(s2s, "bob")  # asks for another nickname
    room_says(s2s, "bob", "error")  # conflict: the old one stays
    room_says(s2s, "carol", "unavailable")  # another occupant leaving is not about us
    policy.block("b.test")
    (el,) = client.got
    assert el.get("from") == f"{ROOM}/alice"


def test_a_kicked_occupant_is_not_told_again_and_a_gone_session_not_at_all() -> None:
    rooms, s2s, policy, client = setup()
    join(s2s, "alice")
    room_says(s2s, "alice", "unavailable")  # the room removed her itself
    assert rooms.seats == {}
    policy.block("b.test")
    assert client.got == []
    rooms2, s2s2, policy2, client2 = setup()
    join(s2s2, "alice")
    rooms2.router.sessions[ALICE] = Client()  # a newer session with the same address
    policy2.block("b.test")
    assert client2.got == []
