"""Busy blocks from an iCalendar file (RFC 5545): meetings and out-of-office time.

Only what presence needs is read: each VEVENT's start and end (DTEND or DURATION), whether it
blocks time (TRANSP, STATUS) and whether it is out of office (Outlook's
X-MICROSOFT-CDO-BUSYSTATUS:OOF). Recurring events (RRULE) are counted and left out rather than
guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from standard_edition.presence.model import Activity, CalendarBlock

MAX_EVENTS = 10_000
_DURATION = re.compile(
    r"^(?P<sign>[+-])?P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)


class CalendarError(ValueError):
    """A file that is not a usable iCalendar; str() says where."""


@dataclass(frozen=True, slots=True)
class Imported:
    blocks: list[CalendarBlock]
    recurring_skipped: int
    free_skipped: int


def _unfold(text: str) -> list[str]:
    """RFC 5545 §3.1: a line starting with a space or tab continues the previous one."""
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += raw[1:]
        elif raw:
            lines.append(raw)
    return lines


def _split(line: str) -> tuple[str, dict[str, str], str]:
    head, sep, value = line.partition(":")
    if not sep:
        raise CalendarError(f"not a content line: {line[:60]!r}")
    name, *params = head.split(";")
    out: dict[str, str] = {}
    for p in params:
        k, _, v = p.partition("=")
        out[k.upper()] = v.strip('"')
    return name.upper(), out, value


def _when(value: str, params: dict[str, str], local: tzinfo) -> datetime:
    try:
        if params.get("VALUE") == "DATE" or len(value) == 8:
            d = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
            return datetime(d.year, d.month, d.day, tzinfo=local)
        stamp = datetime.strptime(value.rstrip("Z"), "%Y%m%dT%H%M%S")
    except ValueError:
        raise CalendarError(f"not an iCalendar date or date-time: {value[:40]!r}") from None
    if value.endswith("Z"):
        return stamp.replace(tzinfo=UTC)
    tz: tzinfo = local
    if "TZID" in params:
        try:
            tz = ZoneInfo(params["TZID"])
        except (ZoneInfoNotFoundError, ValueError):
            tz = local  # a Windows zone name or a custom VTIMEZONE: the server's zone
    return stamp.replace(tzinfo=tz)


def _duration(value: str) -> timedelta:
    m = _DURATION.match(value)
    if not m:
        raise CalendarError(f"not an iCalendar duration: {value[:40]!r}")
    parts = {k: int(v) for k, v in m.groupdict().items() if v and k != "sign"}
    delta = timedelta(
        weeks=parts.get("w", 0),
        days=parts.get("d", 0),
        hours=parts.get("h", 0),
        minutes=parts.get("m", 0),
        seconds=parts.get("s", 0),
    )
    return -delta if m.group("sign") == "-" else delta


def parse_ics(text: str, local: tzinfo | None = None) -> Imported:
    local = local or datetime.now().astimezone().tzinfo or UTC
    lines = _unfold(text)
    if not lines or lines[0].strip().upper() != "BEGIN:VCALENDAR":
        raise CalendarError("not an iCalendar file (no BEGIN:VCALENDAR)")
    blocks: list[CalendarBlock] = []
    recurring = free = 0
    event: dict[str, tuple[dict[str, str], str]] | None = None
    for n, line in enumerate(lines, 1):
        try:
            name, params, value = _split(line)
        except CalendarError as e:
            raise CalendarError(f"line {n}: {e}") from None
        if name == "BEGIN" and value.upper() == "VEVENT":
            event = {}
        elif name == "END" and value.upper() == "VEVENT" and event is not None:
            try:
                outcome = _event(event, local)
            except CalendarError as e:
                raise CalendarError(f"event ending on line {n}: {e}") from None
            if outcome == "recurring":
                recurring += 1
            elif outcome == "free":
                free += 1
            else:
                blocks.append(outcome)
                if len(blocks) > MAX_EVENTS:
                    raise CalendarError(f"more than {MAX_EVENTS} events")
            event = None
        elif event is not None:
            event.setdefault(name, (params, value))
    return Imported(blocks, recurring, free)


def _event(ev: dict[str, tuple[dict[str, str], str]], local: tzinfo) -> CalendarBlock | str:
    if "RRULE" in ev:
        return "recurring"
    if ev.get("TRANSP", ({}, ""))[1].upper() == "TRANSPARENT":
        return "free"
    if ev.get("STATUS", ({}, ""))[1].upper() == "CANCELLED":
        return "free"
    if "DTSTART" not in ev:
        raise CalendarError("no DTSTART")
    start = _when(ev["DTSTART"][1], ev["DTSTART"][0], local)
    if "DTEND" in ev:
        end = _when(ev["DTEND"][1], ev["DTEND"][0], local)
    elif "DURATION" in ev:
        end = start + _duration(ev["DURATION"][1])
    else:
        all_day = len(ev["DTSTART"][1]) == 8
        end = start + (timedelta(days=1) if all_day else timedelta(0))
    if end <= start:
        return "free"
    busy = ev.get("X-MICROSOFT-CDO-BUSYSTATUS", ({}, ""))[1].upper()
    activity = Activity.OUT_OF_OFFICE if busy == "OOF" else Activity.IN_A_MEETING
    if busy == "FREE":
        return "free"
    return CalendarBlock(activity, start.timestamp(), end.timestamp())
