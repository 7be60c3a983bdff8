"""The garbage collector's threshold during a run: raised inside, put back after, even when the run fails."""

from __future__ import annotations

import gc

import pytest

from simulator.collector import YOUNG_THRESHOLD, fewer_collections


def test_the_threshold_is_raised_inside_and_restored_after() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        inside = gc.get_threshold()
    assert inside == (max(YOUNG_THRESHOLD, before[0]), *before[1:])
    assert gc.get_threshold() == before


def test_the_threshold_is_restored_when_the_block_fails() -> None:
    before = gc.get_threshold()

    @fewer_collections()
    def failing() -> None:
        assert gc.get_threshold()[0] >= YOUNG_THRESHOLD
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        failing()
    assert gc.get_threshold() == before


def test_a_higher_threshold_set_by_the_user_is_kept() -> None:
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD * 3, *before[1:])
    try:
        with fewer_collections():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD * 3
    finally:
        gc.set_threshold(*before)
