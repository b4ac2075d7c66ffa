"""XEP-0054 vCard-temp cards and XEP-0153 avatar hashes in presence.

A user reads and replaces their own card (an iq with no 'to', or to their own bare address);
anyone may ask for another user's card at that user's bare address, and the server answers on
the user's behalf. Cards live in the store (table `vcards`); presence and the directory only
need the photo hash, the formatted name and a work e-mail address, which are kept in memory.

Who reads what follows the access levels of DESIGN §4 (`presence.access.card_parts` decides,
`PresenceService.level` says which level a reader has):

- the user, and Friends and Family: the whole card;
- Workgroup: all but HOME entries (TEL, ADR, LABEL or EMAIL marked HOME) and the birthday;
- Colleagues (the default inside the domain): as Workgroup, without mobile numbers (TEL CELL);
- External contacts (other domains, over federation): the name (FN, N, NICKNAME) and PHOTO;
- Blocked: nothing. The answer is `service-unavailable`, the same as for an address with no
  account, so a blocked reader cannot tell that the account exists (XEP-0054 §3.2).

Where the card has no FN or NICKNAME, the account's display name (`se-ctl user add --name`)
fills them in for every reader who sees names. Privacy mode hides presence, not the card: a
colleague may look a user up like a directory entry.

XEP-0153: when a user's card has a PHOTO, every presence the server sends for that user carries
`<x xmlns='vcard-temp:x:update'><photo>SHA-1</photo></x>` unless the client put its own `x`
with a `<photo/>` there (XEP-0398 §4: an `x` without one is replaced). A card without a PHOTO
gives an empty `<photo/>`: "no avatar", which is how contacts' clients learn to clear a picture
the user removed (an `x` without `<photo/>` would say "not ready to tell", and they would keep
it). A user who never stored a card gets no `x` at all. SIP users' presence carries it too,
since it is rendered by the same core call. Readers who may not see presence get none, hence no
hash either. Replacing or removing the photo sends the user's presence again from the endpoints
whose clients do not announce the hash themselves. pep/avatar.py keeps the PHOTO and the
XEP-0084 avatar nodes the same (XEP-0398), so an avatar removed there clears it too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlite_utils
from twisted.internet.defer import Deferred
from twisted.python import log

from standard_edition.core.accounts import Accounts
from standard_edition.core.jid import JID
from standard_edition.presence.access import CardPart, card_parts
from standard_edition.store.database import Database
from standard_edition.xmpp.stanzas import StanzaError, error_reply, result_reply
from standard_edition.xmpp.xml import serialize

if TYPE_CHECKING:
    from standard_edition.core.router import Router
    from standard_edition.xmpp.c2s import C2SProtocol

NS_VCARD = "vcard-temp"
NS_VCARD_UPDATE = "vcard-temp:x:update"  # XEP-0153
V = "{" + NS_VCARD + "}"
VCARD = V + "vCard"
UPDATE = "{" + NS_VCARD_UPDATE + "}x"
PHOTO = "{" + NS_VCARD_UPDATE + "}photo"
DEFAULT_MAX_SIZE = 131_072  # bytes of a card as sent; avatars are a few kilobytes


@dataclass(frozen=True, slots=True)
class CardSummary:
    """What presence and the directory need from a card, kept in memory for every user."""

    photo_sha1: str | None = None
    fn: str | None = None
    email: str | None = None


def summarize(card: ET.Element) -> CardSummary:
    """The photo hash (XEP-0153 §2: SHA-1 of the image data), FN and first work e-mail.

    Raises StanzaError for a PHOTO whose BINVAL is not base64."""
    photo_sha1 = None
    binval = card.findtext(V + "PHOTO/" + V + "BINVAL")
    if binval is not None and binval.strip():
        try:
            data = base64.b64decode("".join(binval.split()), validate=True)
        except (binascii.Error, ValueError):
            raise StanzaError("bad-request", "the PHOTO's BINVAL is not base64") from None
        photo_sha1 = hashlib.sha1(data).hexdigest()  # the XEP's name for it
    fn = (card.findtext(V + "FN") or "").strip() or None
    email = None
    for entry in card.findall(V + "EMAIL"):
        address = (entry.findtext(V + "USERID") or "").strip()
        if address and entry.find(V + "HOME") is None:
            email = address
            break
    return CardSummary(photo_sha1, fn, email)


def part_of(child: ET.Element) -> CardPart:
    """Which part of the card (presence.access.CardPart) one child element belongs to."""
    tag = child.tag
    if not tag.startswith(V):
        return CardPart.PERSONAL  # another namespace's extension: only close contacts
    name = tag[len(V) :]
    if name in ("FN", "N", "NICKNAME", "SORT-STRING"):
        return CardPart.NAME
    if name == "PHOTO":
        return CardPart.PHOTO
    if name == "BDAY":
        return CardPart.PERSONAL
    if name in ("TEL", "ADR", "LABEL", "EMAIL") and child.find(V + "HOME") is not None:
        return CardPart.HOME
    if name == "TEL" and child.find(V + "CELL") is not None:
        return CardPart.MOBILE
    return CardPart.WORK


def visible_card(card: ET.Element | None, parts: frozenset[CardPart], name: str) -> ET.Element:
    """A new card with only the parts a reader may see, FN and NICKNAME filled in from the
    account's display name where the card has none."""
    out = ET.Element(VCARD)
    if card is not None:
        out.extend(child for child in card if part_of(child) in parts)
    if name and CardPart.NAME in parts:
        if out.find(V + "FN") is None:
            fn = ET.Element(V + "FN")
            fn.text = name
            out.insert(0, fn)
        if out.find(V + "NICKNAME") is None:
            ET.SubElement(out, V + "NICKNAME").text = name
    return out


class VCards:
    """The cards of every account: memory for summaries, the store for the cards."""

    def __init__(
        self, db: Database, accounts: Accounts, router: Router, max_size: int = DEFAULT_MAX_SIZE
    ) -> None:
        self._db = db
        self._accounts = accounts
        self.router = router
        self.max_size = max_size
        self._summaries: dict[str, CardSummary] = {}
        # username -> the vcard-temp:x:update element, for every user who stored a card
        self._updates: dict[str, ET.Element] = {}
        # told of each card a user set from a client: (username, card, photo hash changed);
        # pep/avatar.py converts its photo to XEP-0084 (cards it writes itself are not told)
        self.card_listeners: list[Callable[[str, ET.Element, bool], None]] = []
        # told of each user whose photo hash changed, after their contacts (e.g. the rooms the
        # user sits in, xmpp/muc.py); each gets the user name and the filter below
        self.photo_listeners: list[Callable[[str, Callable[[ET.Element | None], bool]], None]] = []
        accounts.on_removed.append(self._account_removed)
        router.presence_payload.append(self.with_photo_hash)

    def load(self) -> Deferred[int]:
        def read(db: sqlite_utils.Database) -> list[tuple[str, str | None, str | None, str | None]]:
            return list(db.execute("SELECT username, photo_sha1, fn, email FROM vcards"))

        def keep(rows: list[tuple[str, str | None, str | None, str | None]]) -> int:
            for username, photo, fn, email in rows:
                self._remember(username, CardSummary(photo, fn, email))
            return len(rows)

        return self._db.read(read).addCallback(keep)

    # -- memory ------------------------------------------------------------------------------

    def summary(self, username: str) -> CardSummary:
        return self._summaries.get(username) or CardSummary()

    def name_and_email(self, username: str) -> tuple[str | None, str | None]:
        """The card's full name and work e-mail, for the directory (core/directory.py)."""
        s = self.summary(username)
        return (s.fn, s.email)

    def photo_hash(self, username: str) -> str | None:
        return self.summary(username).photo_sha1

    def with_photo_hash(self, owner: str, payload: tuple[Any, ...]) -> tuple[Any, ...]:
        """XEP-0153 §4.1: the hash joins the presence unless the client sent its own `x` with
        a <photo/>; XEP-0398 §4: an `x` without one is replaced by the server's."""
        update = self._updates.get(owner)
        if update is None or any(_names_photo(el) for el in payload):
            return payload
        return (*(el for el in payload if el.tag != UPDATE), update)

    def photo_changed(self, username: str) -> None:
        """Contacts learn the new hash from the endpoints that do not announce it themselves."""
        self.router.rebroadcast(username, _without_own_update)
        for listener in self.photo_listeners:
            listener(username, _no_own_photo)

    def _remember(self, username: str, summary: CardSummary) -> None:
        """What presence and the directory need of a card the user has stored."""
        if summary == CardSummary():
            self._summaries.pop(username, None)
        else:
            self._summaries[username] = summary
        # XEP-0153 §4.1: a stored card without a PHOTO is "no avatar", an empty <photo/>, so
        # contacts' clients drop a picture they kept; only users with no card get no element
        update = ET.Element(UPDATE)
        ET.SubElement(update, PHOTO).text = summary.photo_sha1
        self._updates[username] = update

    def _account_removed(self, username: str) -> None:
        self._summaries.pop(username, None)
        self._updates.pop(username, None)

        def delete(db: sqlite_utils.Database) -> None:
            db.conn.execute("DELETE FROM vcards WHERE username = ?", (username,))

        self._db.run(delete).addErrback(log.err, f"vcard of removed user {username} not deleted")

    # -- the store ---------------------------------------------------------------------------

    def card(self, username: str) -> Deferred[ET.Element | None]:
        """The card as the user set it, parsed on the store thread; None when never set."""

        def read(db: sqlite_utils.Database) -> ET.Element | None:
            row = db.execute("SELECT vcard FROM vcards WHERE username = ?", (username,)).fetchone()
            return None if row is None else ET.fromstring(row[0])

        return self._db.read(read)

    def store(self, username: str, card: ET.Element) -> Deferred[bool]:
        """Replace the user's card (XEP-0054 §3.3: a set replaces the whole card); fires with
        True when the photo hash changed. Raises StanzaError before anything is written when
        the card is too large or its photo is not base64."""
        xml = serialize(card, "")
        if len(xml) > self.max_size:
            # XEP-0054 leaves the limit to the server; the text tells the user what it is
            raise StanzaError(
                "not-acceptable",
                f"the vCard is {len(xml)} bytes; this server keeps at most {self.max_size} "
                "(use a smaller photo)",
            )
        summary = summarize(card)
        row = {
            "username": username,
            "vcard": xml.decode("utf-8"),
            "photo_sha1": summary.photo_sha1,
            "fn": summary.fn,
            "email": summary.email,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }

        def write(db: sqlite_utils.Database) -> None:
            db["vcards"].upsert(row, pk="username")

        def stored(_: object) -> bool:
            before = self.photo_hash(username)
            if not self._accounts.exists(username):
                return False  # removed while the card was being written; the removal cleans up
            self._remember(username, summary)
            return before != summary.photo_sha1

        return self._db.run(write).addCallback(stored)

    # -- answering ---------------------------------------------------------------------------

    def reader_parts(self, owner: str, reader: JID) -> frozenset[CardPart]:
        """What `reader` may see of `owner`'s card (module docstring)."""
        if reader.bare == JID(owner, self.router.domain, None):
            return frozenset(CardPart)
        # other domains are External unless the user gave that contact another level
        return card_parts(self.router.presence.level(owner, reader))

    def answer(self, iq: ET.Element, owner: str, reader: JID) -> Deferred[ET.Element] | ET.Element:
        """An iq get for `owner`'s card from `reader`: the card as the reader may see it."""
        acct = self._accounts.get(owner)
        parts = self.reader_parts(owner, reader) if acct is not None else frozenset()
        if acct is None or not parts:
            return error_reply(iq, "service-unavailable")  # XEP-0054 §3.2; blocked looks absent

        def reply(card: ET.Element | None) -> ET.Element:
            out = result_reply(iq)
            out.append(visible_card(card, parts, acct.name))
            return out

        return self.card(owner).addCallback(reply)


# -- iq handlers -----------------------------------------------------------------------------


def own_card(vcards: VCards, stream: C2SProtocol, iq: ET.Element, q: ET.Element) -> Any:
    """XEP-0054 §3.1 / §3.3: the user reads or replaces their own card."""
    assert stream.jid is not None and stream.jid.local is not None
    user = stream.jid.local
    if iq.get("type") == "get":
        return vcards.answer(iq, user, stream.jid)
    d = vcards.store(user, q)

    def stored(changed: bool) -> ET.Element:
        if changed:
            vcards.photo_changed(user)
        for listener in vcards.card_listeners:
            try:
                listener(user, q, changed)
            except Exception:
                log.err(None, f"vcard: after {user} set a card")
        return result_reply(iq)

    return d.addCallback(stored)


def other_card(
    vcards: VCards, stream: C2SProtocol, iq: ET.Element, owner: str | None
) -> ET.Element | Deferred[ET.Element]:
    """XEP-0054 §3.2: another user's card, answered on that user's behalf."""
    assert stream.jid is not None
    if iq.get("type") != "get":
        if owner is None:
            return error_reply(iq, "service-unavailable")
        return error_reply(iq, "forbidden", "only the owner of a vCard may change it")
    if owner is None:
        return error_reply(iq, "service-unavailable")
    return vcards.answer(iq, owner, stream.jid)


def remote_card(vcards: VCards, iq: ET.Element, sender: JID, owner: str) -> Any:
    """An iq for a local user that came over federation (xmpp/s2s.py `account_iq`): a card
    request gets what the sender's level allows (External by default); None: not a card."""
    if iq.find(VCARD) is None:
        return None
    if iq.get("type") != "get":
        return error_reply(iq, "forbidden", "only the owner of a vCard may change it")
    return vcards.answer(iq, owner, sender)


def _names_photo(el: Any) -> bool:
    """A client's own vcard-temp:x:update with a <photo/> (empty: it says "no avatar")."""
    return bool(el.tag == UPDATE and el.find(PHOTO) is not None)


def _without_own_update(ep: Any) -> bool:
    presence = getattr(ep, "presence", None)
    return presence is None or not any(_names_photo(el) for el in presence.payload)


def _no_own_photo(presence: ET.Element | None) -> bool:
    """A room occupant's last presence does not announce a photo of the client's own."""
    return presence is None or not any(_names_photo(el) for el in presence)
