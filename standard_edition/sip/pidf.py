"""PIDF (RFC 3863) with RPID (RFC 4480): the core's presence as a document, and back.

Outgoing: one tuple per endpoint (basic open/closed), the user's aggregate in a data-model
person element (RFC 4479) with RPID activities per RFC 8048 §4 and DESIGN §4 (Busy and
Do Not Disturb are `busy`, Be Right Back and Away are `away`, idle bands add
`<user-input>idle</user-input>`), and the exact availability code in our namespaced element,
which other software ignores.

Incoming (PUBLISH): what the document says about the user, as core values: RPID
`<user-input>idle` is machine state, an RPID activity or our code element is a manual state,
an open tuple without either means "available again" (DESIGN §4).
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

from standard_edition.presence.aggregate import IDLE_AFTER
from standard_edition.presence.model import (
    AVAILABLE,
    AWAY,
    BUSY,
    MAX_NOTE,
    OFFLINE,
    Activity,
    Aggregate,
    Band,
    EndpointState,
    InvalidCode,
    Manual,
    band,
)

__all__ = ["PidfError", "Published", "Tuple", "build", "parse"]

PIDF = "urn:ietf:params:xml:ns:pidf"
DM = "urn:ietf:params:xml:ns:pidf:data-model"
RPID = "urn:ietf:params:xml:ns:pidf:rpid"
SE = "urn:se-appliance:presence:0"
MAX_DOCUMENT = 16 * 1024

for _prefix, _ns in (("dm", DM), ("rpid", RPID), ("se", SE)):
    ET.register_namespace(_prefix, _ns)

# RFC 8048 §4 and DESIGN §4: the RPID activity each band shows as (None: none)
BAND_ACTIVITY: dict[Band, str | None] = {
    Band.AVAILABLE: None,
    Band.IDLE: "away",
    Band.BUSY: "busy",
    Band.BUSY_IDLE: "busy",
    Band.DND: "busy",
    Band.BRB: "away",
    Band.AWAY: "away",
    Band.OFFLINE: None,
}
# our activities with a closer RPID term (RFC 4480 §3.2)
ACTIVITY_RPID = {
    Activity.IN_A_CALL: "on-the-phone",
    Activity.IN_A_MEETING: "meeting",
    Activity.OUT_OF_OFFICE: "vacation",
}
# RPID activities a SIP client publishes, as the manual state they mean (DESIGN §4)
RPID_MANUAL: dict[str, tuple[int, Activity | None]] = {
    "busy": (BUSY, None),
    "on-the-phone": (BUSY, Activity.IN_A_CALL),
    "meeting": (BUSY, Activity.IN_A_MEETING),
    "away": (AWAY, None),
    "vacation": (AWAY, Activity.OUT_OF_OFFICE),
    "holiday": (AWAY, Activity.OUT_OF_OFFICE),
    "permanent-absence": (AWAY, Activity.OUT_OF_OFFICE),
}


class PidfError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Tuple:
    """One endpoint in the document: its id and whether it is open."""

    id: str
    open: bool
    contact: str | None = None


def _q(ns: str, name: str) -> str:
    return "{" + ns + "}" + name


def build(entity: str, tuples: list[Tuple], agg: Aggregate | None) -> bytes:
    """The document a watcher gets; `agg` None means Offline (or nothing it may see)."""
    # PIDF is the default namespace, as RFC 3863 writes it: simple clients (baresip) match
    # `<basic>` literally and read a prefixed `<ns0:basic>` as no status at all
    root = ET.Element("presence", {"xmlns": PIDF, "entity": entity})
    shown = agg if agg is not None and agg.band is not Band.OFFLINE else None
    if not tuples or shown is None:
        tuples = [Tuple("offline", False)]
    for t in tuples:
        el = ET.SubElement(root, "tuple", {"id": t.id})
        status = ET.SubElement(el, "status")
        ET.SubElement(status, "basic").text = "open" if t.open else "closed"
        if t.contact:
            ET.SubElement(el, "contact").text = t.contact
    person = ET.SubElement(root, _q(DM, "person"), {"id": "p"})
    if shown is not None:
        b = shown.band
        name = ACTIVITY_RPID.get(shown.activity) if shown.activity else None
        name = name or BAND_ACTIVITY[b]
        if name:
            acts = ET.SubElement(person, _q(RPID, "activities"))
            ET.SubElement(acts, _q(RPID, name))
        if b in (Band.IDLE, Band.BUSY_IDLE):
            ET.SubElement(person, _q(RPID, "user-input")).text = "idle"
        ours = ET.SubElement(person, _q(SE, "availability"), {"code": str(shown.code)})
        if shown.activity:
            ours.set("activity", shown.activity.value)
        if shown.note:
            ET.SubElement(person, _q(DM, "note")).text = shown.note
    else:
        ET.SubElement(person, _q(SE, "availability"), {"code": str(OFFLINE)})
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Published:
    """What a PUBLISH says: the endpoint's machine state, maybe a manual state, a note."""

    state: EndpointState
    manual: Manual | None = None
    clear_manual: bool = False
    note: str | None = None


def parse(body: bytes, now: float) -> Published:
    """Read a PIDF document from a PUBLISH (RFC 3903 §4, RFC 3863 §4, RFC 4480)."""
    if len(body) > MAX_DOCUMENT:
        raise PidfError("document too large")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise PidfError("DTDs are not allowed")  # no entity expansion, ever
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise PidfError(f"not well-formed: {e}") from None
    if root.tag != _q(PIDF, "presence"):
        raise PidfError("not a PIDF document")
    basics = [(b.text or "").strip() for b in root.iter(_q(PIDF, "basic"))]
    is_open = not basics or "open" in basics
    note = None
    for tag in (_q(DM, "note"), _q(PIDF, "note"), _q(RPID, "note")):
        found = root.find(".//" + tag)
        if found is not None and (found.text or "").strip():
            note = found.text.strip()[:MAX_NOTE]  # type: ignore[union-attr]
            break
    idle_since = None
    user_input = root.find(".//" + _q(RPID, "user-input"))
    if user_input is not None and (user_input.text or "").strip() == "idle":
        idle_since = now - IDLE_AFTER  # RPID idle: Inactive now, unless it says since when
        last = user_input.get("last-input")
        if last:
            with contextlib.suppress(ValueError):
                idle_since = datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp()
    manual = None
    ours = root.find(".//" + _q(SE, "availability"))
    if ours is not None:
        try:
            code = int(ours.get("code", ""))
            band(code)
        except (ValueError, InvalidCode):
            raise PidfError("bad availability code") from None
        act = ours.get("activity")
        try:
            manual = Manual(code, Activity(act) if act else None)
        except ValueError:
            raise PidfError("unknown activity") from None
    else:
        acts = root.find(".//" + _q(RPID, "activities"))
        if acts is not None:
            for child in acts:
                local = child.tag.rpartition("}")[2]
                if local in RPID_MANUAL:
                    code, act = RPID_MANUAL[local]
                    manual = Manual(code, act)
                    break
    if not is_open:
        return Published(EndpointState(OFFLINE), None, False, note)
    clear = manual is None and idle_since is None
    return Published(EndpointState(AVAILABLE, idle_since), manual, clear, note)
