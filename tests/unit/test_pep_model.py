"""The protocol-free PEP core: node configuration, preconditions, eviction, access, caps."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from standard_edition.pep.caps import (
    Caps,
    CapsCache,
    caps_of,
    features_of,
    notify_nodes,
    ver_matches,
    verification_string,
)
from standard_edition.pep.model import (
    MAX_ITEMS,
    Item,
    Node,
    NodeConfig,
    PubsubError,
    Relation,
    check_access,
    from_dict,
    parse_config,
    preconditions_met,
    to_dict,
)
from standard_edition.pep.private import to_bookmarks2, to_legacy


def item(i: str) -> Item:
    return Item(i, ET.Element("{urn:x}p"), "alice@example.test", 0.0)


def test_publish_evicts_the_oldest_beyond_max_items_and_republish_moves_to_the_end():
    node = Node("alice", "n", NodeConfig(max_items=2))
    assert node.publish(item("a")) == []
    assert node.publish(item("b")) == []
    assert node.publish(item("a")) == []  # same id replaces, now newest
    assert node.publish(item("c")) == ["b"]
    assert [i.id for i in node.newest()] == ["a", "c"]
    assert node.last is not None and node.last.id == "c"
    assert [i.id for i in node.newest(1)] == ["c"]


def test_publish_options_preconditions_compare_normalised_values():
    config = parse_config(
        NodeConfig(), {"pubsub#access_model": ["open"], "pubsub#max_items": ["max"]}
    )
    assert config.access_model == "open" and config.max_items == MAX_ITEMS
    assert preconditions_met(config, {"FORM_TYPE": ["x"], "pubsub#access_model": ["open"]})
    assert preconditions_met(config, {"pubsub#max_items": [str(MAX_ITEMS)]})
    assert preconditions_met(config, {"pubsub#persist_items": ["true"]})
    assert not preconditions_met(config, {"pubsub#access_model": ["whitelist"]})
    assert not preconditions_met(config, {"pubsub#persist_items": ["0"]})
    assert not preconditions_met(config, {"pubsub#unknown": ["1"]})


@pytest.mark.parametrize(
    "fields",
    [
        {"pubsub#access_model": ["authorize"]},
        {"pubsub#max_items": ["0"]},
        {"pubsub#max_items": ["lots"]},
        {"pubsub#persist_items": ["maybe"]},
        {"pubsub#made_up": ["1"]},
    ],
)
def test_bad_configuration_values_are_refused(fields):
    with pytest.raises(PubsubError) as e:
        parse_config(NodeConfig(), fields)
    assert e.value.condition == "not-acceptable"


def test_config_survives_the_store_round_trip():
    config = NodeConfig("roster", False, 7, "never", roster_groups_allowed=("Team",), title="t")
    assert from_dict(to_dict(config)) == config


def test_access_models_decide_who_reads():
    def refusal(model: str, rel: Relation, who: str = "bob@example.test", affs=None):
        node = Node("alice", "n", NodeConfig(access_model=model, roster_groups_allowed=("Team",)))
        node.affiliations.update(affs or {})
        try:
            check_access(node, who, rel)
        except PubsubError as e:
            return e.condition, e.app and e.app.rpartition("}")[2]
        return None

    stranger, contact = Relation(), Relation(subscribed=True, groups=("Team",))
    assert refusal("open", stranger) is None
    assert refusal("presence", stranger) == ("not-authorized", "presence-subscription-required")
    assert refusal("presence", contact) is None
    assert refusal("roster", Relation(subscribed=True)) == ("not-authorized", "not-in-roster-group")
    assert refusal("roster", contact) is None
    assert refusal("whitelist", contact) == ("not-allowed", "closed-node")
    assert refusal("whitelist", stranger, affs={"bob@example.test": "member"}) is None
    assert refusal("open", stranger, affs={"bob@example.test": "outcast"}) == ("forbidden", None)
    assert refusal("open", Relation(blocked=True)) == ("forbidden", None)
    assert refusal("whitelist", Relation(is_owner=True)) is None


DISCO = "http://jabber.org/protocol/disco#info"


def test_caps_ver_of_the_xep_0115_example_verifies():
    # XEP-0115 §5.2, the simple example
    q = ET.Element(f"{{{DISCO}}}query")
    ET.SubElement(
        q, f"{{{DISCO}}}identity", {"category": "client", "type": "pc", "name": "Exodus 0.9.1"}
    )
    for var in (
        "http://jabber.org/protocol/caps",
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "http://jabber.org/protocol/muc",
    ):
        ET.SubElement(q, f"{{{DISCO}}}feature", {"var": var})
    assert verification_string(q).startswith("client/pc//Exodus 0.9.1<")
    assert ver_matches(
        Caps("http://code.google.com/p/exodus", "QgayPKawpkPSDYmwT/WM94uAlu0=", "sha-1"), q
    )
    assert not ver_matches(Caps("n", "QgayPKawpkPSDYmwT/WM94uAlu0=", "md4"), q)
    ET.SubElement(q, f"{{{DISCO}}}feature", {"var": "urn:xmpp:avatar:metadata+notify"})
    assert not ver_matches(Caps("n", "QgayPKawpkPSDYmwT/WM94uAlu0=", "sha-1"), q)
    assert notify_nodes(features_of(q)) == {"urn:xmpp:avatar:metadata"}


def test_caps_element_is_read_from_presence_and_cached_by_ver():
    c = ET.Element(
        "{http://jabber.org/protocol/caps}c", {"node": "n", "ver": "v=", "hash": "SHA-1"}
    )
    caps = caps_of((ET.Element("{urn:x}other"), c))
    assert caps == Caps("n", "v=", "sha-1")
    cache = CapsCache(limit=2)
    assert cache.get(caps) is None
    cache.put(caps, frozenset({"a"}))
    assert cache.get(caps) == {"a"}
    cache.put(Caps("n", "w=", "sha-1"), frozenset())
    cache.put(Caps("n", "x=", "sha-1"), frozenset())
    assert cache.get(caps) is None and len(cache) == 2  # the oldest went
    assert caps_of((ET.Element("{http://jabber.org/protocol/caps}c", {"ver": ""}),)) is None


def test_bookmarks_convert_both_ways_and_keep_extensions():
    b2 = ET.fromstring(
        "<conference xmlns='urn:xmpp:bookmarks:1' name='Team' autojoin='1'><nick>al</nick>"
        "<extensions><x xmlns='urn:example'/></extensions></conference>"
    )
    legacy = to_legacy("team@conference.example.test", b2)
    assert legacy is not None
    assert legacy.get("jid") == "team@conference.example.test" and legacy.get("autojoin") == "true"
    assert legacy.findtext("{storage:bookmarks}nick") == "al"
    back = to_bookmarks2(legacy, b2)
    assert back.get("name") == "Team" and back.get("autojoin") == "true"
    assert back.find("{urn:xmpp:bookmarks:1}extensions/{urn:example}x") is not None
    assert to_legacy("x@y", ET.Element("{urn:other}conference")) is None
