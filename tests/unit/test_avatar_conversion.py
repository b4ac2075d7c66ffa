"""XEP-0398 helpers: the picture's type and size read from its header, the card with a new
PHOTO, and the XEP-0084 metadata made from a vCard photo."""

from __future__ import annotations

import base64
import hashlib
import struct
import xml.etree.ElementTree as ET
from typing import Any

from twisted.internet.defer import Deferred, succeed

from standard_edition.core.jid import JID
from standard_edition.pep.avatar import (
    DATA,
    INFO,
    META,
    NS_DATA,
    NS_META,
    AvatarConversion,
    image_size,
    image_type,
    metadata_for,
    with_photo,
)
from standard_edition.pep.model import Item, Node, NodeConfig
from standard_edition.xmpp.vcard import VCARD, V, summarize

PNG_HEAD = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 64, 48)
GIF_HEAD = b"GIF89a" + struct.pack("<HH", 32, 16) + b"\x80\x00\x00"


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def test_types_and_sizes_come_from_the_header() -> None:
    assert (image_type(PNG_HEAD), image_size(PNG_HEAD)) == ("image/png", (64, 48))
    assert (image_type(GIF_HEAD), image_size(GIF_HEAD)) == ("image/gif", (32, 16))
    assert (image_type(jpeg(640, 480)), image_size(jpeg(640, 480))) == ("image/jpeg", (640, 480))
    assert image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"


def test_unknown_or_truncated_pictures_have_no_size() -> None:
    assert image_type(b"plain bytes") is None and image_size(b"plain bytes") is None
    assert image_size(PNG_HEAD[:20]) is None
    assert image_size(b"\xff\xd8\xff\xe0\x00\x01") is None  # a segment length below 2
    assert image_size(b"\xff\xd8\x00garbage") is None


def test_metadata_names_id_bytes_type_and_size_when_known() -> None:
    meta = metadata_for(PNG_HEAD, "abc", "image/png")
    info = meta.find(INFO)
    assert info is not None and info.attrib == {
        "id": "abc",
        "bytes": str(len(PNG_HEAD)),
        "type": "image/png",
        "width": "64",
        "height": "48",
    }
    info = metadata_for(b"opaque", "def", "image/x-custom").find(INFO)
    assert info is not None and "width" not in info.attrib and "height" not in info.attrib


def test_the_photo_is_replaced_and_the_rest_of_the_card_kept() -> None:
    card = ET.fromstring(
        "<vCard xmlns='vcard-temp'><FN>Alice</FN>"
        "<PHOTO><TYPE>image/gif</TYPE><BINVAL>b2xk</BINVAL></PHOTO><TITLE>Boss</TITLE></vCard>"
    )
    new = with_photo(card, (b"new picture", "image/png"))
    assert [c.tag for c in new] == [V + "FN", V + "TITLE", V + "PHOTO"]
    assert new.findtext(f"{V}PHOTO/{V}TYPE") == "image/png"
    assert base64.b64decode(new.findtext(f"{V}PHOTO/{V}BINVAL") or "") == b"new picture"
    assert summarize(new).photo_sha1 is not None
    cleared = with_photo(card, None)
    assert cleared.find(V + "PHOTO") is None and cleared.findtext(V + "FN") == "Alice"
    assert with_photo(None, None).tag == VCARD and len(with_photo(None, None)) == 0


# -- the conversion, over stand-ins for the PEP service and the card store -------------------


class FakePep:
    """Nodes in memory; a publish tells the listeners at once, as the service does on commit."""

    domain = "example.test"

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, str], Node] = {}
        self.node_listeners: list[Any] = []
        self.published: list[tuple[str, str]] = []

    def node(self, owner: str, name: str) -> Node | None:
        return self.nodes.get((owner, name))

    def bare(self, owner: str) -> JID:
        return JID(owner, self.domain, None)

    def publish(
        self,
        owner: str,
        name: str,
        item_id: str,
        payload: ET.Element,
        publisher: JID,
        config: NodeConfig | None = None,
    ) -> Deferred[None]:
        node = self.nodes.setdefault((owner, name), Node(owner, name, config or NodeConfig()))
        node.publish(Item(item_id, payload, str(publisher.bare), 0.0))
        self.published.append((name, item_id))
        for listener in self.node_listeners:
            listener(owner, name)
        return succeed(None)


class FakeCards:
    def __init__(self) -> None:
        self.cards: dict[str, ET.Element] = {}
        self.card_listeners: list[Any] = []
        self.stores = 0

    def photo_hash(self, owner: str) -> str | None:
        card = self.cards.get(owner)
        return None if card is None else summarize(card).photo_sha1

    def card(self, owner: str) -> Deferred[ET.Element | None]:
        return succeed(self.cards.get(owner))

    def store(self, owner: str, card: ET.Element) -> Deferred[bool]:
        before = self.photo_hash(owner)
        self.cards[owner] = card
        self.stores += 1
        return succeed(before != self.photo_hash(owner))

    def photo_changed(self, owner: str) -> None:
        pass

    def set_by_client(self, owner: str, card: ET.Element) -> None:
        """What xmpp/vcard.py own_card does: store, then tell the listeners."""
        before = self.photo_hash(owner)
        self.cards[owner] = card
        for listener in self.card_listeners:
            listener(owner, card, before != self.photo_hash(owner))


def conversion() -> tuple[FakePep, FakeCards]:
    pep, cards = FakePep(), FakeCards()
    AvatarConversion(pep, cards)  # type: ignore[arg-type]
    return pep, cards


def data_item(image: bytes) -> ET.Element:
    el = ET.Element(DATA)
    el.text = base64.b64encode(image).decode()
    return el


def client_publishes(pep: FakePep, image: bytes, metadata_first: bool = False) -> str:
    sha = hashlib.sha1(image).hexdigest()
    me = pep.bare("alice")
    steps = [
        (NS_DATA, data_item(image)),
        (NS_META, metadata_for(image, sha, "image/png")),
    ]
    for name, payload in reversed(steps) if metadata_first else steps:
        pep.publish("alice", name, sha, payload, me)
    return sha


def test_a_pep_avatar_reaches_the_card_in_either_publishing_order() -> None:
    for metadata_first in (False, True):
        pep, cards = conversion()
        sha = client_publishes(pep, PNG_HEAD + b"one", metadata_first)
        assert cards.photo_hash("alice") == sha and cards.stores == 1
        assert len(pep.published) == 2  # nothing published back


def test_a_card_photo_is_published_once_and_not_converted_back() -> None:
    pep, cards = conversion()
    image = GIF_HEAD + b"picture"
    card = with_photo(None, (image, "image/gif"))
    cards.set_by_client("alice", card)
    sha = hashlib.sha1(image).hexdigest()
    assert pep.published == [(NS_DATA, sha), (NS_META, sha)]
    assert cards.stores == 0  # the metadata's listener found the card already right
    cards.set_by_client("alice", card)  # the same card again: nothing new to publish
    assert len(pep.published) == 2
    # a card without the photo turns the PEP avatar off, and only that
    cards.set_by_client("alice", with_photo(card, None))
    assert pep.published[-1] == (NS_META, "current")
    meta = pep.node("alice", NS_META)
    assert meta is not None and meta.last is not None and meta.last.payload.find(INFO) is None


def test_an_older_data_item_kept_by_the_node_does_not_bring_back_the_old_picture() -> None:
    pep, cards = conversion()
    pep.nodes[("alice", NS_DATA)] = Node("alice", NS_DATA, NodeConfig(max_items=5))
    old = client_publishes(pep, PNG_HEAD + b"old")
    assert cards.photo_hash("alice") == old
    new_image = PNG_HEAD + b"new"
    cards.set_by_client("alice", with_photo(cards.cards["alice"], (new_image, "image/png")))
    assert cards.photo_hash("alice") == hashlib.sha1(new_image).hexdigest()
    assert cards.stores == 1  # only the first conversion wrote the card


def test_metadata_the_card_cannot_hold_leaves_it_alone() -> None:
    pep, cards = conversion()
    me = pep.bare("alice")
    first = client_publishes(pep, PNG_HEAD + b"kept")
    # a picture only at an external URL
    meta = ET.Element(META)
    ET.SubElement(meta, INFO, {"id": "ab" * 20, "type": "image/png", "bytes": "9", "url": "x"})
    pep.publish("alice", NS_META, "ab" * 20, meta, me)
    # data that does not hash to the id the metadata names
    pep.publish("alice", NS_DATA, "cd" * 20, data_item(b"other bytes"), me)
    pep.publish("alice", NS_META, "cd" * 20, metadata_for(b"x", "cd" * 20, "image/png"), me)
    assert cards.photo_hash("alice") == first and cards.stores == 1
