"""XEP-0398: the XEP-0084 avatar (PEP) and the vCard PHOTO (XEP-0153) are one picture.

A client that publishes its avatar to PEP gets it in its vCard too, so vCard-only clients and
the photo hash in presence show it; a client that sets a vCard PHOTO gets the avatar data and
metadata items published on its behalf, so PEP-only clients see it. Each direction first checks
whether the other side already shows the same picture (by SHA-1), so a conversion never sets
off the opposite one. Removing the avatar (metadata without an <info/>) clears the PHOTO, and
a card whose PHOTO was removed publishes such empty metadata.

Nodes this module creates get the PEP default configuration (access model presence, XEP-0163
§4.4; XEP-0398 names none); nodes the user configured keep theirs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Literal

from twisted.internet.defer import Deferred, succeed
from twisted.python import log

from standard_edition.pep.model import Item, NodeConfig
from standard_edition.pep.service import PepService
from standard_edition.xmpp.iq import IqHandlers
from standard_edition.xmpp.stanzas import StanzaError
from standard_edition.xmpp.vcard import VCARD, V, VCards

NS_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"
NS_DATA = "urn:xmpp:avatar:data"
NS_META = "urn:xmpp:avatar:metadata"
DATA = "{" + NS_DATA + "}data"
META = "{" + NS_META + "}metadata"
INFO = "{" + NS_META + "}info"
NO_AVATAR_ID = "current"  # the item id of metadata that says "no avatar"
OCTETS = "application/octet-stream"  # the type of a picture nobody named and we cannot tell


@dataclass(frozen=True, slots=True)
class Picture:
    sha1: str  # hex, the XEP-0084 item id and the XEP-0153 hash
    data: bytes
    type: str


def image_type(data: bytes) -> str | None:
    """The media type named by the first bytes of an image, for the formats avatars use."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) when the header says it without decoding the picture: PNG's IHDR,
    GIF's logical screen, JPEG's start-of-frame marker."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data.startswith((b"GIF87a", b"GIF89a")) and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            # SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC) carry the frame's size
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            if length < 2:
                return None
            i += 2 + length
    return None


def metadata_for(data: bytes, sha1: str, mtype: str) -> ET.Element:
    """XEP-0084 §4.2: one <info/> for an image published to the data node."""
    info = {"id": sha1, "bytes": str(len(data)), "type": mtype}
    size = image_size(data)
    if size is not None and all(size):
        info["width"], info["height"] = str(size[0]), str(size[1])
    meta = ET.Element(META)
    ET.SubElement(meta, INFO, info)
    return meta


def with_photo(card: ET.Element | None, photo: tuple[bytes, str] | None) -> ET.Element:
    """A copy of the card with its PHOTO replaced by `photo` (data, type), or removed."""
    out = ET.Element(VCARD)
    if card is not None:
        out.extend(child for child in card if child.tag != V + "PHOTO")
    if photo is not None:
        data, mtype = photo
        el = ET.SubElement(out, V + "PHOTO")
        ET.SubElement(el, V + "TYPE").text = mtype
        ET.SubElement(el, V + "BINVAL").text = base64.b64encode(data).decode("ascii")
    return out


def attach(iq: IqHandlers, service: PepService, vcards: VCards) -> AvatarConversion:
    """Convert both ways, and say so in the account's disco#info (XEP-0398 §2)."""
    iq.account_features.append(NS_CONVERSION)
    return AvatarConversion(service, vcards)


class AvatarConversion:
    def __init__(self, service: PepService, vcards: VCards) -> None:
        self.service = service
        self.vcards = vcards
        service.node_listeners.append(self._node_changed)
        vcards.card_listeners.append(self._card_set)

    # -- PEP to vCard (XEP-0398 §3.1) -------------------------------------------------------------

    def wanted_photo(self, owner: str) -> Picture | Literal[False] | None:
        """What the metadata node says the picture is; None for "no avatar"; False when it
        says nothing the vCard can hold (only an external URL, or data not published yet or
        not matching its id)."""
        node = self.service.node(owner, NS_META)
        last = node.last if node is not None else None
        if last is None or last.payload.tag != META:
            return None
        infos = last.payload.findall(INFO)
        if not infos:
            return None  # §4.2 of XEP-0084: metadata without <info/> turns the avatar off
        # §3.1: the info that does not point to an external URL
        inline = [i for i in infos if not i.get("url")]
        if not inline:
            return False
        info = inline[0]
        sha1 = (info.get("id") or "").lower()
        data_node = self.service.node(owner, NS_DATA)
        item = data_node.items.get(info.get("id", "")) if data_node is not None else None
        data = _data_of(item)
        if data is None:
            return False
        if hashlib.sha1(data).hexdigest() != sha1:
            log.msg(f"avatar of {owner}: the data does not hash to the metadata's id; not copied")
            return False
        return Picture(sha1, data, info.get("type") or image_type(data) or OCTETS)

    def _node_changed(self, owner: str, name: str) -> None:
        if name not in (NS_META, NS_DATA):
            return
        wanted = self.wanted_photo(owner)
        if wanted is False:
            return
        if name == NS_DATA:
            # data after its metadata: only the item just published can complete the picture
            # (an older item the metadata still names is the card's old picture, not news)
            data_node = self.service.node(owner, NS_DATA)
            last = data_node.last if data_node is not None else None
            if wanted is None or last is None or last.id.lower() != wanted.sha1:
                return
        current = self.vcards.photo_hash(owner)
        if wanted is None:
            if current is None:
                return
            photo = None
        else:
            if wanted.sha1 == current:
                return  # already the card's picture: the conversion that made it, or no change
            photo = (wanted.data, wanted.type)
        d = self.vcards.card(owner)
        d.addCallback(self._store_photo, owner, photo)
        d.addErrback(lambda f: log.err(f, f"avatar of {owner}: the vCard was not updated"))

    def _store_photo(
        self, card: ET.Element | None, owner: str, photo: tuple[bytes, str] | None
    ) -> Deferred[None]:
        try:
            d = self.vcards.store(owner, with_photo(card, photo))
        except StanzaError as e:
            # the card's size limit: vCard-only clients keep the previous picture
            log.msg(f"avatar of {owner} not copied to the vCard: {e.text}")
            return succeed(None)

        def stored(changed: bool) -> None:
            if changed:
                self.vcards.photo_changed(owner)

        return d.addCallback(stored)

    # -- vCard to PEP (XEP-0398 §3.2) -------------------------------------------------------------

    def _card_set(self, owner: str, card: ET.Element, changed: bool) -> None:
        d = self.publish_photo(owner, card, changed)
        d.addErrback(lambda f: log.err(f, f"avatar of {owner}: the PEP avatar was not updated"))

    def publish_photo(self, owner: str, card: ET.Element, changed: bool) -> Deferred[Any]:
        """Publish the card's PHOTO as the avatar: the data item, then the metadata; or empty
        metadata when the card's PHOTO was removed."""
        svc = self.service
        me = svc.bare(owner)
        binval = "".join((card.findtext(V + "PHOTO/" + V + "BINVAL") or "").split())
        try:
            data = base64.b64decode(binval, validate=True)
        except (binascii.Error, ValueError):
            return succeed(None)  # the card was refused for it before it got here
        meta_node = svc.node(owner, NS_META)
        last = meta_node.last if meta_node is not None else None
        shown = last.payload.findall(INFO) if last is not None else []
        if not data:
            if not changed or not shown:
                return succeed(None)  # the card never had this picture, or PEP has none either
            return svc.publish(owner, NS_META, NO_AVATAR_ID, ET.Element(META), me, NodeConfig())
        sha1 = hashlib.sha1(data).hexdigest()
        if any(i.get("id", "").lower() == sha1 and not i.get("url") for i in shown):
            return succeed(None)  # PEP already shows this picture
        mtype = (card.findtext(V + "PHOTO/" + V + "TYPE") or "").strip()
        mtype = mtype or image_type(data) or OCTETS
        payload = ET.Element(DATA)
        payload.text = base64.b64encode(data).decode("ascii")
        d = svc.publish(owner, NS_DATA, sha1, payload, me, NodeConfig())
        # §3.2: the metadata after the data, so a reader never finds an id without its data
        meta = metadata_for(data, sha1, mtype)
        return d.addCallback(lambda _: svc.publish(owner, NS_META, sha1, meta, me, NodeConfig()))


def _data_of(item: Item | None) -> bytes | None:
    if item is None or item.payload.tag != DATA or not item.payload.text:
        return None
    try:
        return base64.b64decode("".join(item.payload.text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
