"""Which upload slots are open and which files are kept: the service's state, without I/O.

A slot is granted (pending), claimed by the PUT that uses it (uploading), and becomes a stored
file once its body is on disk and its row committed; a PUT that fails gives the slot back while
it is still valid. Pending and uploading slots count towards the owner's quota, so two uploads
at once cannot both squeeze under it. The clock is injected: tests drive it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from standard_edition.upload.rules import SLOT_LIFETIME, Limits, SlotRequest, check

TOKEN_BYTES = 24  # 32 URL-safe characters, 192 bits: not guessable


@dataclass(frozen=True, slots=True)
class Slot:
    put_token: str  # the secret of the PUT URL
    get_token: str  # the secret of the GET URL; the file's name on disk
    owner: str
    filename: str
    size: int
    content_type: str
    declared: bool  # the PUT must carry the same Content-Type
    origin: str  # "internal" or "edge": which base URL the links use
    valid_until: float


@dataclass(frozen=True, slots=True)
class StoredFile:
    token: str
    owner: str
    filename: str
    content_type: str
    size: int
    created: float
    expires: float | None  # None: kept until removed


class Ledger:
    def __init__(
        self,
        limits: Limits,
        clock: Callable[[], float],
        token: Callable[[], str] = lambda: secrets.token_urlsafe(TOKEN_BYTES),
    ) -> None:
        self.limits = limits
        self.clock = clock
        self._token = token
        self.pending: dict[str, Slot] = {}  # put token -> slot
        self.uploading: dict[str, Slot] = {}
        self.files: dict[str, StoredFile] = {}  # get token -> file
        self._stored: dict[str, int] = {}  # owner -> bytes of kept files

    def load(self, files: Iterable[StoredFile]) -> None:
        for f in files:
            self._add(f)

    def _add(self, f: StoredFile) -> None:
        self.files[f.token] = f
        self._stored[f.owner] = self._stored.get(f.owner, 0) + f.size

    # -- slots ---------------------------------------------------------------------------------

    def used(self, owner: str) -> tuple[int, int]:
        """(bytes kept or reserved by open slots, number of unused slots) of one user."""
        now = self.clock()
        waiting = [s for s in self.pending.values() if s.owner == owner and s.valid_until > now]
        busy = [s for s in self.uploading.values() if s.owner == owner]
        reserved = sum(s.size for s in waiting) + sum(s.size for s in busy)
        return self._stored.get(owner, 0) + reserved, len(waiting)

    def grant(self, owner: str, req: SlotRequest, origin: str) -> Slot:
        """A new slot for this request; rules.Refused when the rules or the quota say no."""
        used, pending = self.used(owner)
        check(req, self.limits, used, pending)
        slot = Slot(
            put_token=self._token(),
            get_token=self._token(),
            owner=owner,
            filename=req.filename,
            size=req.size,
            content_type=req.content_type,
            declared=req.declared,
            origin=origin,
            valid_until=self.clock() + SLOT_LIFETIME,
        )
        self.pending[slot.put_token] = slot
        return slot

    def slot_state(self, put_token: str) -> str:
        """ "open", "busy" (a PUT is using it) or "gone" (unknown, used or expired)."""
        if put_token in self.uploading:
            return "busy"
        slot = self.pending.get(put_token)
        return "open" if slot is not None and slot.valid_until > self.clock() else "gone"

    def claim(self, put_token: str) -> Slot | None:
        """The PUT starts: the slot is taken so that nobody else can use it."""
        if self.slot_state(put_token) != "open":
            return None
        slot = self.pending.pop(put_token)
        self.uploading[put_token] = slot
        return slot

    def release(self, slot: Slot) -> None:
        """The PUT failed: the slot may be used again until it expires."""
        if self.uploading.pop(slot.put_token, None) is not None and slot.valid_until > self.clock():
            self.pending[slot.put_token] = slot

    def stored_file(self, slot: Slot) -> StoredFile:
        """The row to commit for a slot whose body is on disk."""
        now = self.clock()
        expire = self.limits.expire_after
        return StoredFile(
            token=slot.get_token,
            owner=slot.owner,
            filename=slot.filename,
            content_type=slot.content_type,
            size=slot.size,
            created=now,
            expires=now + expire if expire else None,
        )

    def stored(self, slot: Slot, f: StoredFile) -> None:
        """The file is committed: its slot is used up."""
        self.uploading.pop(slot.put_token, None)
        self._add(f)

    # -- files ---------------------------------------------------------------------------------

    def lookup(self, token: str) -> StoredFile | None:
        """A file that may be served now (an expired one is not, even before it is removed)."""
        f = self.files.get(token)
        if f is None or (f.expires is not None and f.expires <= self.clock()):
            return None
        return f

    def due(self) -> list[str]:
        """Tokens of the files whose time is up."""
        now = self.clock()
        return [t for t, f in self.files.items() if f.expires is not None and f.expires <= now]

    def remove(self, tokens: Iterable[str]) -> int:
        """Forget these files; returns the bytes freed."""
        freed = 0
        for t in tokens:
            f = self.files.pop(t, None)
            if f is None:
                continue
            freed += f.size
            left = self._stored.get(f.owner, 0) - f.size
            if left > 0:
                self._stored[f.owner] = left
            else:
                self._stored.pop(f.owner, None)
        return freed

    def purge_slots(self) -> int:
        """Drop the pending slots nobody used in time; returns how many."""
        now = self.clock()
        stale = [t for t, s in self.pending.items() if s.valid_until <= now]
        for t in stale:
            del self.pending[t]
        return len(stale)

    def totals(self) -> dict[str, int]:
        return {
            "files": len(self.files),
            "bytes": sum(self._stored.values()),
            "slots_open": len(self.pending),
            "uploading": len(self.uploading),
        }
