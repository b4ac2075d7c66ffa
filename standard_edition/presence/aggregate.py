"""One user's presence from all their endpoints, their manual state and their calendar.

`aggregate` is a pure function of its inputs and the time: DESIGN §4's rules, in order:
no endpoint is Offline; a manual state wins; otherwise the most available *active* endpoint
wins (an idle one only when none is active); an idle endpoint is Inactive after 5 minutes and
Away after 5 more; a calendar block turns the machine state into Busy / Away with an activity.
"""

from __future__ import annotations

from collections.abc import Iterable

from standard_edition.presence.model import (
    ACTIVITY_CODE,
    AWAY,
    BUSY_IDLE,
    IDLE,
    OFFLINE,
    Activity,
    Aggregate,
    Band,
    CalendarBlock,
    EndpointState,
    Manual,
    band,
)

IDLE_AFTER = 5 * 60.0  # seconds of no use before an endpoint is Inactive
AWAY_AFTER = 10 * 60.0  # ... and before it is Away


def effective_code(ep: EndpointState, now: float) -> int:
    """An endpoint's code once its idle time is taken into account."""
    if ep.idle_since is None:
        return ep.code
    idle = now - ep.idle_since
    if idle >= AWAY_AFTER:
        return max(ep.code, AWAY)
    if idle >= IDLE_AFTER:
        b = band(ep.code)
        if b is Band.AVAILABLE:
            return IDLE
        if b is Band.BUSY:
            return BUSY_IDLE
    return ep.code


def _is_idle(code: int) -> bool:
    return band(code) in (Band.IDLE, Band.BUSY_IDLE, Band.AWAY)


def machine_code(endpoints: Iterable[EndpointState], now: float) -> int:
    codes = [effective_code(ep, now) for ep in endpoints]
    if not codes:
        return OFFLINE
    active = [c for c in codes if not _is_idle(c)]
    # the most available active endpoint wins; idle ones count only when none is active
    return min(active) if active else min(codes)


def calendar_activity(calendar: Iterable[CalendarBlock], now: float) -> Activity | None:
    current = [b for b in calendar if b.active(now)]
    if not current:
        return None
    # out of office outranks a meeting when both apply
    if any(b.activity is Activity.OUT_OF_OFFICE for b in current):
        return Activity.OUT_OF_OFFICE
    return current[0].activity


def aggregate(
    endpoints: Iterable[EndpointState],
    manual: Manual | None,
    calendar: Iterable[CalendarBlock],
    now: float,
    note: str | None = None,
    oof_note: str | None = None,
) -> Aggregate:
    endpoints = list(endpoints)
    if not endpoints:
        return Aggregate(OFFLINE, None, note, oof_note, "offline")
    if manual is not None and manual.active(now):
        return Aggregate(manual.code, manual.activity, note, oof_note, "manual")
    code = machine_code(endpoints, now)
    activity = calendar_activity(calendar, now)
    if activity is not None:
        wanted = ACTIVITY_CODE[activity]
        if band(code) in (Band.IDLE, Band.BUSY_IDLE) and band(wanted) is Band.BUSY:
            return Aggregate(BUSY_IDLE, activity, note, oof_note, "calendar")
        if code <= wanted:
            return Aggregate(wanted, activity, note, oof_note, "calendar")
    return Aggregate(code, None, note, oof_note, "machine")


def next_change(
    endpoints: Iterable[EndpointState],
    manual: Manual | None,
    calendar: Iterable[CalendarBlock],
    now: float,
) -> float | None:
    """The earliest moment after `now` at which `aggregate` may give another answer."""
    times: list[float] = []
    for ep in endpoints:
        if ep.idle_since is not None:
            times += [ep.idle_since + IDLE_AFTER, ep.idle_since + AWAY_AFTER]
    if manual is not None and manual.until is not None:
        times.append(manual.until)
    for b in calendar:
        times += [b.start, b.end]
    later = [t for t in times if t > now]
    return min(later) if later else None
