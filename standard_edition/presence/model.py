"""The Skype for Business presence model: availability codes, their bands, activities.

Availability is a number; what people see is its band (DESIGN §4). A client that publishes an
exact code keeps it; aggregation works on codes and shows bands.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from enum import StrEnum


class Band(StrEnum):
    AVAILABLE = "available"
    IDLE = "idle"  # Available - Idle ("Inactive")
    BUSY = "busy"
    BUSY_IDLE = "busy-idle"
    DND = "dnd"
    BRB = "be-right-back"
    AWAY = "away"
    OFFLINE = "offline"


# (lowest code of the band, band, the code a client usually publishes for it)
_BANDS = [
    (3000, Band.AVAILABLE, 3500),
    (4500, Band.IDLE, 5000),
    (6000, Band.BUSY, 6500),
    (7500, Band.BUSY_IDLE, 7500),
    (9000, Band.DND, 9500),
    (12000, Band.BRB, 12500),
    (15000, Band.AWAY, 15500),
    (18000, Band.OFFLINE, 18500),
]
_LOWS = [lo for lo, _, _ in _BANDS]
MIN_CODE = 3000
MAX_CODE = 29999

LABELS = {
    Band.AVAILABLE: "Available",
    Band.IDLE: "Available - Idle",
    Band.BUSY: "Busy",
    Band.BUSY_IDLE: "Busy - Idle",
    Band.DND: "Do Not Disturb",
    Band.BRB: "Be Right Back",
    Band.AWAY: "Away",
    Band.OFFLINE: "Offline",
}


class InvalidCode(ValueError):
    pass


def band(code: int) -> Band:
    if not MIN_CODE <= code <= MAX_CODE:
        raise InvalidCode(f"availability code {code} is outside {MIN_CODE}-{MAX_CODE}")
    return _BANDS[bisect_right(_LOWS, code) - 1][1]


def code_of(b: Band) -> int:
    """The usual code for a band."""
    for _, name, usual in _BANDS:
        if name is b:
            return usual
    raise AssertionError(b)


AVAILABLE = code_of(Band.AVAILABLE)
IDLE = code_of(Band.IDLE)
BUSY = code_of(Band.BUSY)
BUSY_IDLE = code_of(Band.BUSY_IDLE)
DND = code_of(Band.DND)
BRB = code_of(Band.BRB)
AWAY = code_of(Band.AWAY)
OFFLINE = code_of(Band.OFFLINE)


class Activity(StrEnum):
    IN_A_CALL = "in-a-call"  # Busy
    IN_A_MEETING = "in-a-meeting"  # Busy
    PRESENTING = "presenting"  # Do Not Disturb
    OUT_OF_OFFICE = "out-of-office"  # Away
    OFF_WORK = "off-work"  # Away


# the band an activity shows as, when it decides the state (DESIGN §4)
ACTIVITY_CODE = {
    Activity.IN_A_CALL: BUSY,
    Activity.IN_A_MEETING: BUSY,
    Activity.PRESENTING: DND,
    Activity.OUT_OF_OFFICE: AWAY,
    Activity.OFF_WORK: AWAY,
}

# names an admin or a client may set by hand: a band or an activity
STATE_NAMES: dict[str, tuple[int, Activity | None]] = {
    "available": (AVAILABLE, None),
    "busy": (BUSY, None),
    "dnd": (DND, None),
    "do-not-disturb": (DND, None),
    "be-right-back": (BRB, None),
    "brb": (BRB, None),
    "away": (AWAY, None),
    "appear-offline": (OFFLINE, None),
    **{a.value: (ACTIVITY_CODE[a], a) for a in Activity},
}

MAX_NOTE = 1024  # characters of a personal or out-of-office note


@dataclass(frozen=True, slots=True)
class Manual:
    """A state the user (or the admin) set by hand; wins over machine state until cleared."""

    code: int
    activity: Activity | None = None
    until: float | None = None  # epoch seconds; None: until changed

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True)
class CalendarBlock:
    """A busy block from the user's calendar: In a meeting or Out of office."""

    activity: Activity
    start: float
    end: float

    def active(self, now: float) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What one endpoint (an XMPP resource, a SIP registration) says about the user."""

    code: int = AVAILABLE  # the machine state it published
    idle_since: float | None = None  # epoch seconds the user stopped using it (XEP-0319, RPID)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The user's presence as everyone sees it, before access levels filter it."""

    code: int
    activity: Activity | None = None
    note: str | None = None
    oof_note: str | None = None
    source: str = "offline"  # offline | manual | calendar | machine

    @property
    def band(self) -> Band:
        return band(self.code)

    @property
    def label(self) -> str:
        text = LABELS[self.band]
        if self.activity is not None:
            text += " (" + self.activity.value.replace("-", " ") + ")"
        return text
