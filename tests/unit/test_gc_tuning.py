"""The collector's start-up tuning: start-up objects frozen, thresholds raised, and cyclic
garbage made afterwards still freed by the collector's own passes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from standard_edition import gc_tuning


class _Node:
    """A container that can point at itself: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.other: object = self


@pytest.fixture
def tuned() -> Iterator[None]:
    before = gc.get_threshold()
    assert gc.isenabled()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_start_up_objects_are_frozen_and_thresholds_raised(tuned: None) -> None:
    made_at_start = [_Node() for _ in range(100)]
    frozen = gc_tuning.tune_after_start()
    assert frozen == gc.get_freeze_count() >= len(made_at_start)
    assert gc.get_threshold() == gc_tuning.THRESHOLDS
    assert gc_tuning.THRESHOLDS[2] > 10  # CPython's default for generation 2
    # frozen objects are in no generation: no pass walks them
    tracked = {id(o) for o in gc.get_objects()}
    assert not any(id(n) in tracked for n in made_at_start)


def test_start_up_garbage_is_collected_not_frozen(tuned: None) -> None:
    cycle = _Node()
    gone = weakref.ref(cycle)
    del cycle
    gc_tuning.tune_after_start()
    assert gone() is None


def test_a_cycle_made_after_start_up_is_freed_by_the_automatic_passes(tuned: None) -> None:
    gc_tuning.tune_after_start()
    cycle = _Node()
    gone = weakref.ref(cycle)
    del cycle
    assert gone() is not None  # reference counting alone cannot free it
    # more new containers than the first generation's threshold: a pass runs by itself
    kept = [[] for _ in range(2 * gc_tuning.THRESHOLDS[0])]
    assert gone() is None
    assert len(kept) == 2 * gc_tuning.THRESHOLDS[0]


def test_an_old_cycle_made_after_start_up_is_not_frozen(tuned: None) -> None:
    gc_tuning.tune_after_start()
    session = _Node()
    gone = weakref.ref(session)
    gc.collect(1)  # while in use it ages into the oldest generation, as a session's state does
    assert gc.get_freeze_count() > 0 and any(o is session for o in gc.get_objects(2))
    del session
    gc.collect()
    assert gone() is None


def test_cyclic_garbage_made_without_pause_stays_bounded(tuned: None) -> None:
    gc_tuning.tune_after_start()
    alive: weakref.WeakSet[_Node] = weakref.WeakSet()
    most = 0
    for _ in range(20 * gc_tuning.THRESHOLDS[0]):
        alive.add(_Node())  # each dropped at once: garbage only the collector frees
        most = max(most, len(alive))
    # never more than a few first-generation passes' worth waits to be freed
    assert most <= 2 * gc_tuning.THRESHOLDS[0]
