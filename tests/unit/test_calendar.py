"""iCalendar busy blocks (RFC 5545) for calendar states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from standard_edition.presence.calendar import CalendarError, parse_ics
from standard_edition.presence.model import Activity

LOCAL = timezone(timedelta(hours=1))


def cal(*events: str) -> str:
    body = "".join(f"BEGIN:VEVENT\r\n{e}END:VEVENT\r\n" for e in events)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{body}END:VCALENDAR\r\n"


def test_utc_meeting_becomes_a_busy_block() -> None:
    got = parse_ics(cal("DTSTART:20260301T100000Z\r\nDTEND:20260301T110000Z\r\n"), LOCAL)
    (block,) = got.blocks
    assert block.activity is Activity.IN_A_MEETING
    assert block.start == datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp()
    assert block.end - block.start == 3600


def test_floating_time_is_local_and_tzid_is_honoured() -> None:
    got = parse_ics(
        cal(
            "DTSTART:20260301T100000\r\nDURATION:PT30M\r\n",
            "DTSTART;TZID=Europe/Lisbon:20260301T100000\r\nDTEND;TZID=Europe/Lisbon:20260301T103000\r\n",
        ),
        LOCAL,
    )
    floating, lisbon = got.blocks
    assert floating.start == datetime(2026, 3, 1, 10, tzinfo=LOCAL).timestamp()
    assert lisbon.start == datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp()  # WET in March


def test_outlook_oof_is_out_of_office_and_free_time_is_skipped() -> None:
    got = parse_ics(
        cal(
            "DTSTART;VALUE=DATE:20260302\r\nX-MICROSOFT-CDO-BUSYSTATUS:OOF\r\n",
            "DTSTART:20260301T100000Z\r\nDTEND:20260301T110000Z\r\nTRANSP:TRANSPARENT\r\n",
            "DTSTART:20260301T100000Z\r\nDTEND:20260301T110000Z\r\nSTATUS:CANCELLED\r\n",
        ),
        LOCAL,
    )
    (oof,) = got.blocks
    assert oof.activity is Activity.OUT_OF_OFFICE and oof.end - oof.start == 86400
    assert got.free_skipped == 2


def test_recurring_events_are_counted_not_guessed() -> None:
    got = parse_ics(cal("DTSTART:20260301T100000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=DAILY\r\n"), LOCAL)
    assert got.blocks == [] and got.recurring_skipped == 1


def test_folded_lines_are_unfolded() -> None:
    got = parse_ics(cal("DTSTART:20260301T1000\r\n 00Z\r\nDTEND:20260301T110000Z\r\n"), LOCAL)
    assert len(got.blocks) == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        cal("DTEND:20260301T110000Z\r\n"),
        cal("DTSTART:tomorrow\r\n"),
        cal("DTSTART:20260301T100000Z\r\nDURATION:one hour\r\n"),
        cal("no colon here\r\n"),
    ],
)
def test_bad_files_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(CalendarError):
        parse_ics(text, LOCAL)
