"""XEP-0398: a PEP avatar (XEP-0084) becomes the vCard PHOTO (XEP-0054/0153) and back, end to
end with slixmpp's xep_0084, xep_0054 and xep_0153; each conversion happens once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import zlib
from typing import Any

from slixmpp.plugins.xep_0054.stanza import VCardTemp
from slixmpp.xmlstream import ET

from .server import Server
from .test_pep import EVENT, META, PLUGINS, event_of, friends
from .xmppclient import Client, Sessions, next_matching, nothing_matching

V = "{vcard-temp}"
UPDATE = "{vcard-temp:x:update}x"
INFO = f"{{{META}}}info"
CONVERSION = "urn:xmpp:pep-vcard-conversion:0"


def png(width: int, height: int) -> bytes:
    """A real PNG of one red colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def gif(width: int, height: int) -> bytes:
    """A one-colour GIF89a."""
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
        + b"\xff\x00\x00\x00\x00\x00"
        + b",\x00\x00\x00\x00"
        + struct.pack("<HH", width, height)
        + b"\x00\x02\x02D\x01\x00;"
    )


async def login(ss: Sessions, user: str, *plugins: str, notify: tuple[str, ...] = ()) -> Client:
    c = ss.client(user, resource="av")
    for p in (*PLUGINS, "xep_0054", *plugins):
        c.register_plugin(p)
    if notify:
        c.plugin["xep_0163"].add_interest(list(notify))
    return await c.start()


async def read_card(c: Client, jid: str) -> ET.Element:
    iq = await c.plugin["xep_0054"].get_vcard(jid, cached=False, timeout=10)
    found = iq.xml.find(V + "vCard")
    assert found is not None, iq
    return found


def photo_of(card: ET.Element) -> tuple[bytes, str] | None:
    binval = card.findtext(f"{V}PHOTO/{V}BINVAL")
    if not binval:
        return None
    return base64.b64decode("".join(binval.split())), card.findtext(f"{V}PHOTO/{V}TYPE") or ""


def announced(p: Any, jid: str) -> str | None:
    """The avatar a presence from `jid` announces: its hash, "" for none (an empty <photo/>),
    None when it says nothing (or is from someone else)."""
    if p["from"].bare != jid:
        return None
    photo = p.xml.find(f"{UPDATE}/{{vcard-temp:x:update}}photo")
    return None if photo is None else photo.text or ""


def pep_status(server: Server) -> dict[str, Any]:
    return json.loads(server.ctl_ok("status", "--json").stdout)["pep"]  # type: ignore[no-any-return]


def test_pep_avatar_becomes_the_vcard_photo_and_the_presence_hash(server: Server, run: Any) -> None:
    alice, bob, carol = server.new_users("alice", "bob", "carol")
    aj = f"{alice}@{server.domain}"
    image = png(3, 2)
    sha = hashlib.sha1(image).hexdigest()

    async def scenario() -> None:
        async with Sessions(server) as ss:
            # alice's client speaks PEP only; bob's reads vCard hashes and asks for avatars
            a = await login(ss, alice)
            b = await login(ss, bob, "xep_0153", notify=(META,))
            hashes: asyncio.Queue[Any] = asyncio.Queue()
            b.add_event_handler("vcard_avatar_update", hashes.put_nowait)
            await friends(a, b)
            info = await a.plugin["xep_0030"].get_info(jid=aj, timeout=10)
            assert CONVERSION in info["disco_info"]["features"]

            await a.plugin["xep_0084"].publish_avatar(image)
            await a.plugin["xep_0084"].publish_avatar_metadata(
                [{"id": sha, "type": "image/png", "bytes": len(image)}]
            )
            # bob's presence view of alice carries the hash of the picture she published
            p = await next_matching(hashes, lambda p: p["from"].bare == aj, 15)
            assert p["vcard_temp_update"]["photo"] == sha
            assert photo_of(await read_card(b, aj)) == (image, "image/png")
            # XEP-0398 §4: presence sent to one address outside the roster carries it too
            c = await login(ss, carol)
            a.send_presence(pto=c.boundjid.bare)
            p = await next_matching(c.presences, lambda p: p["from"].bare == aj, 10)
            assert p.xml.findtext(f"{UPDATE}/{{vcard-temp:x:update}}photo") == sha
            # the conversion published nothing back: one metadata notification, alice's own
            await next_matching(b.inbox, event_of(META, aj))
            await nothing_matching(b.inbox, event_of(META, aj), 1.5)

            # turning the avatar off (metadata without info) clears the PHOTO, and presence
            # says "no avatar" with an empty <photo/> (XEP-0153), so bob's client drops it
            await a.plugin["xep_0084"].stop()
            await next_matching(b.presences, lambda p: announced(p, aj) == "", 15)
            assert photo_of(await read_card(b, aj)) is None

            # the same picture again, then the metadata node deleted: cleared the same way
            await a.plugin["xep_0084"].publish_avatar_metadata(
                [{"id": sha, "type": "image/png", "bytes": len(image)}]
            )
            await next_matching(b.presences, lambda p: announced(p, aj) == sha, 15)
            await a.plugin["xep_0060"].delete_node(aj, META, timeout=10)
            await next_matching(b.presences, lambda p: announced(p, aj) == "", 15)
            assert photo_of(await read_card(b, aj)) is None

    run(scenario())


def test_vcard_photo_is_published_once_as_the_pep_avatar(server: Server, run: Any) -> None:
    alice, bob = server.new_users("alice", "bob")
    aj = f"{alice}@{server.domain}"
    image = gif(5, 7)
    sha = hashlib.sha1(image).hexdigest()

    def metadata(m: Any) -> ET.Element | None:
        return m.xml.find(f"{EVENT}/*/*/{{{META}}}metadata")  # type: ignore[no-any-return]

    async def scenario() -> None:
        async with Sessions(server) as ss:
            # alice's client knows vCards only; bob's wants PEP avatar notifications
            a = await login(ss, alice, "xep_0153")
            b = await login(ss, bob, notify=(META,))
            await friends(a, b)
            before = pep_status(server)
            card = VCardTemp()
            card["FN"] = "Alice"
            card["PHOTO"]["TYPE"] = "image/gif"
            card["PHOTO"]["BINVAL"] = image
            await a.plugin["xep_0054"].publish_vcard(card, timeout=10)

            got = await next_matching(b.inbox, event_of(META, aj), 15)
            info = metadata(got).find(INFO)  # type: ignore[union-attr]
            assert info is not None
            assert (info.get("id"), info.get("type"), info.get("bytes")) == (
                sha,
                "image/gif",
                str(len(image)),
            )
            assert (info.get("width"), info.get("height")) == ("5", "7")
            data = await b.plugin["xep_0084"].retrieve_avatar(aj, sha, timeout=10)
            assert data["pubsub"]["items"]["item"]["avatar_data"]["value"] == image
            # no loop: the metadata did not come back into the card and out again
            await nothing_matching(b.inbox, event_of(META, aj), 1.5)
            after = pep_status(server)
            assert after["published"] - before["published"] == 2  # the data, the metadata
            assert after["notifications"] > before["notifications"]

            # a card without the PHOTO turns the PEP avatar off too
            await a.plugin["xep_0054"].publish_vcard(VCardTemp(), timeout=10)
            got = await next_matching(b.inbox, event_of(META, aj), 15)
            off = metadata(got)
            assert off is not None and off.find(INFO) is None

    run(scenario())
    text = server.ctl_ok("status").stdout
    line = next(ln for ln in text.splitlines() if ln.startswith("pep:"))
    assert "published" in line and "notifications" in line and "caps_queries" in line
