"""Outgoing presence stanzas on the wire, serialised once and reused for every watcher.

A presence change fans out to every watcher, and the router hands all watchers at one access
level the very same Presence value. Its stanza differs between them only in the `to` address,
so it is built and serialised once, split around that address, and each watcher's copy is the
two halves joined by its own address: the same bytes `serialize(presence_stanza(...))` writes.
"""

from __future__ import annotations

from standard_edition.core.jid import JID
from standard_edition.core.model import Presence
from standard_edition.xmpp.stanzas import presence_stanza
from standard_edition.xmpp.xml import _escape_attr, serialize

# stands for the `to` address while the stanza is serialised; U+E000 (private use) is legal
# XML, written unescaped, and `from` cannot contain the quote that ends it in the search below
_TO = "\ue000"
_TO_ATTR = b" to='" + _TO.encode() + b"'"


class PresenceWire:
    """The serialised halves of the presences sent most recently, by Presence value."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        # id(presence) -> (sender, presence, bytes before the address, bytes after it); the
        # entry holds the Presence itself, so its id cannot be reused while it is cached
        self._halves: dict[int, tuple[JID, Presence, bytes, bytes]] = {}

    def __len__(self) -> int:
        return len(self._halves)

    def stanza(self, sender: JID, to: JID, presence: Presence) -> bytes:
        """serialize(presence_stanza(sender, to, presence)), from the cached halves when this
        sender's `presence` (the same object) was written before."""
        hit = self._halves.get(id(presence))
        if hit is None or hit[1] is not presence or hit[0] != sender:
            hit = self._split(sender, presence)
        return b"".join((hit[2], _escape_attr(str(to)).encode(), hit[3]))

    def _split(self, sender: JID, presence: Presence) -> tuple[JID, Presence, bytes, bytes]:
        el = presence_stanza(sender, sender, presence)
        el.set("to", _TO)
        whole = serialize(el)
        # `from` comes first and its value has every quote escaped: the first match is `to`
        at = whole.index(_TO_ATTR)
        entry = (sender, presence, whole[: at + 5], whole[at + len(_TO_ATTR) - 1 :])
        if len(self._halves) >= self.size:
            self._halves.clear()  # a new broadcast rarely needs an old one's halves
        self._halves[id(presence)] = entry
        return entry


# shared by every c2s stream: one broadcast reaches watchers on any listener
WIRE = PresenceWire()
