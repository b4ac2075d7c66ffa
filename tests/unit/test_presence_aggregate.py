"""DESIGN §4 aggregation rules, the idle clock, and what each access level sees."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from standard_edition.presence.access import Level, default_level, view
from standard_edition.presence.aggregate import (
    AWAY_AFTER,
    IDLE_AFTER,
    aggregate,
    effective_code,
    next_change,
)
from standard_edition.presence.model import (
    AVAILABLE,
    AWAY,
    BRB,
    BUSY,
    BUSY_IDLE,
    DND,
    IDLE,
    OFFLINE,
    Activity,
    Aggregate,
    Band,
    CalendarBlock,
    EndpointState,
    InvalidCode,
    Manual,
    band,
)

NOW = 1_000_000.0

codes = st.integers(min_value=3000, max_value=17999)
idle = st.one_of(st.none(), st.floats(min_value=0, max_value=3 * AWAY_AFTER))
endpoints = st.lists(
    st.builds(lambda c, i: EndpointState(c, None if i is None else NOW - i), codes, idle),
    max_size=5,
)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (3000, Band.AVAILABLE),
        (3500, Band.AVAILABLE),
        (4499, Band.AVAILABLE),
        (4500, Band.IDLE),
        (6000, Band.BUSY),
        (7500, Band.BUSY_IDLE),
        (9000, Band.DND),
        (12000, Band.BRB),
        (15000, Band.AWAY),
        (17999, Band.AWAY),
        (18000, Band.OFFLINE),
    ],
)
def test_code_falls_in_its_band(code: int, name: Band) -> None:
    assert band(code) is name


@pytest.mark.parametrize("code", [0, 2999, 30000, -1])
def test_code_out_of_range_is_refused(code: int) -> None:
    with pytest.raises(InvalidCode):
        band(code)


def test_no_endpoint_is_offline_whatever_was_set_by_hand() -> None:
    assert aggregate([], Manual(DND), [], NOW).code == OFFLINE


@given(endpoints, codes)
def test_manual_state_wins_over_any_machine_state(eps: list[EndpointState], code: int) -> None:
    got = aggregate(eps, Manual(code), [], NOW)
    if eps:
        assert got.code == code and got.source == "manual"
    else:
        assert got.code == OFFLINE


def test_expired_manual_state_no_longer_counts() -> None:
    eps = [EndpointState(AVAILABLE)]
    assert aggregate(eps, Manual(DND, until=NOW - 1), [], NOW).code == AVAILABLE
    assert aggregate(eps, Manual(DND, until=NOW + 1), [], NOW).code == DND


@given(endpoints)
def test_most_available_active_endpoint_wins(eps: list[EndpointState]) -> None:
    got = aggregate(eps, None, [], NOW)
    if not eps:
        assert got.code == OFFLINE
        return
    effective = [effective_code(e, NOW) for e in eps]
    active = [c for c in effective if band(c) not in (Band.IDLE, Band.BUSY_IDLE, Band.AWAY)]
    assert got.code == (min(active) if active else min(effective))
    # never better than the best endpoint, never worse than the worst
    assert min(effective) <= got.code <= max(effective)


def test_idle_endpoint_is_inactive_after_5_minutes_and_away_after_10() -> None:
    ep = EndpointState(AVAILABLE, idle_since=NOW)
    assert effective_code(ep, NOW + IDLE_AFTER - 1) == AVAILABLE
    assert effective_code(ep, NOW + IDLE_AFTER) == IDLE
    assert effective_code(ep, NOW + AWAY_AFTER - 1) == IDLE
    assert effective_code(ep, NOW + AWAY_AFTER) == AWAY


def test_idle_busy_endpoint_is_busy_idle() -> None:
    assert effective_code(EndpointState(BUSY, NOW - IDLE_AFTER), NOW) == BUSY_IDLE


def test_idle_laptop_and_active_phone_stay_available() -> None:
    laptop = EndpointState(AVAILABLE, idle_since=NOW - 2 * AWAY_AFTER)
    phone = EndpointState(AVAILABLE)
    assert aggregate([laptop, phone], None, [], NOW).code == AVAILABLE
    assert aggregate([laptop], None, [], NOW).code == AWAY


def test_active_brb_endpoint_beats_an_idle_available_one() -> None:
    # an active endpoint outranks an idle one even when the idle one is "more available"
    assert (
        aggregate(
            [EndpointState(BRB), EndpointState(AVAILABLE, NOW - IDLE_AFTER)], None, [], NOW
        ).code
        == BRB
    )


def test_meeting_in_the_calendar_shows_busy_with_the_activity_then_ends() -> None:
    eps = [EndpointState(AVAILABLE)]
    meeting = [CalendarBlock(Activity.IN_A_MEETING, NOW, NOW + 3600)]
    during = aggregate(eps, None, meeting, NOW + 10)
    assert (during.code, during.activity, during.source) == (
        BUSY,
        Activity.IN_A_MEETING,
        "calendar",
    )
    assert aggregate(eps, None, meeting, NOW + 3600).code == AVAILABLE
    assert aggregate(eps, None, meeting, NOW - 1).code == AVAILABLE


def test_meeting_while_idle_is_busy_idle_and_dnd_is_kept() -> None:
    meeting = [CalendarBlock(Activity.IN_A_MEETING, NOW - 1, NOW + 3600)]
    assert (
        aggregate([EndpointState(AVAILABLE, NOW - IDLE_AFTER)], None, meeting, NOW).code
        == BUSY_IDLE
    )
    assert aggregate([EndpointState(DND)], None, meeting, NOW).code == DND


def test_out_of_office_is_away_with_its_activity() -> None:
    oof = [CalendarBlock(Activity.OUT_OF_OFFICE, NOW - 1, NOW + 1)]
    got = aggregate([EndpointState(AVAILABLE)], None, oof, NOW)
    assert (got.code, got.activity) == (AWAY, Activity.OUT_OF_OFFICE)


def test_next_change_is_the_nearest_threshold() -> None:
    ep = EndpointState(AVAILABLE, idle_since=NOW)
    assert next_change([ep], None, [], NOW) == NOW + IDLE_AFTER
    assert next_change([ep], None, [], NOW + IDLE_AFTER) == NOW + AWAY_AFTER
    assert next_change([ep], Manual(DND, until=NOW + 60), [], NOW) == NOW + 60
    assert next_change([EndpointState()], None, [], NOW) is None


FULL = Aggregate(BUSY, Activity.IN_A_MEETING, "quarterly review", "back Monday", "manual")


def test_blocked_watcher_sees_offline_and_nothing_else() -> None:
    seen = view(FULL, Level.BLOCKED)
    assert (seen.code, seen.note, seen.activity, seen.oof_note) == (OFFLINE, None, None, None)


def test_external_watcher_sees_availability_only() -> None:
    seen = view(FULL, Level.EXTERNAL)
    assert (seen.code, seen.note, seen.activity, seen.oof_note) == (BUSY, None, None, None)


def test_colleague_sees_note_and_activity_but_not_out_of_office_note() -> None:
    seen = view(FULL, Level.COLLEAGUES)
    assert (seen.note, seen.activity, seen.oof_note) == (
        "quarterly review",
        Activity.IN_A_MEETING,
        None,
    )


@pytest.mark.parametrize("level", [Level.WORKGROUP, Level.FRIENDS])
def test_workgroup_and_friends_see_everything(level: Level) -> None:
    assert view(FULL, level) == FULL


def test_same_domain_is_colleague_other_domain_is_external() -> None:
    assert default_level("example.test", "example.test") is Level.COLLEAGUES
    assert default_level("example.test", "partner.example") is Level.EXTERNAL


class _NoStore:
    """The service writes through to the store; these tests look only at the timing."""

    def run(self, fn, *args):  # type: ignore[no-untyped-def]
        from twisted.internet.defer import succeed

        return succeed(None)


def test_idle_timers_move_the_user_on_the_injected_clock() -> None:
    from twisted.internet.task import Clock

    from standard_edition.presence.service import PresenceService

    clock = Clock()
    clock.advance(NOW)
    service = PresenceService(clock, _NoStore(), "example.test")  # type: ignore[arg-type]
    seen: list[int] = []
    service.listeners.append(lambda user, agg, before: seen.append(agg.code))
    service.endpoint_update("alice", "laptop", EndpointState(AVAILABLE, idle_since=NOW))
    assert seen == [AVAILABLE]
    clock.advance(IDLE_AFTER)
    assert seen == [AVAILABLE, IDLE]
    clock.advance(AWAY_AFTER - IDLE_AFTER)
    assert seen == [AVAILABLE, IDLE, AWAY]
    # the phone comes in active: available again, and no timer is left to fire
    service.endpoint_update("alice", "phone", EndpointState(AVAILABLE))
    assert seen[-1] == AVAILABLE
    service.endpoint_remove("alice", "phone")
    service.endpoint_remove("alice", "laptop")
    assert seen[-1] == OFFLINE
    assert clock.getDelayedCalls() == []


def test_manual_state_with_expiry_ends_on_time() -> None:
    from twisted.internet.task import Clock

    from standard_edition.presence.service import PresenceService

    clock = Clock()
    clock.advance(NOW)
    service = PresenceService(clock, _NoStore(), "example.test")  # type: ignore[arg-type]
    service.endpoint_update("bob", "pc", EndpointState(AVAILABLE))
    service.set_manual("bob", Manual(DND, until=NOW + 60))
    assert service.aggregate("bob").code == DND
    clock.advance(60)
    assert service.aggregate("bob").code == AVAILABLE
    assert service.aggregate("bob").source == "machine"
