"""simulator/engine/byref.py: a named tuple of arrays handed to compiled helpers as one pointer reads as the
tuple, and leaves its arrays' reference counts as they were."""

from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np
from numba import njit

from simulator.engine.byref import by_ref


class Pair(NamedTuple):
    values: np.ndarray
    counts: np.ndarray
    scale: float


@njit(_nrt=False, no_cpython_wrapper=True)
def _weighted(pair: Pair, i: int) -> float:
    return pair.values[i] * pair.counts[i] * pair.scale


@njit
def _total(pair: Pair) -> float:
    ref = by_ref(pair)
    total = 0.0
    for i in range(ref.values.shape[0]):
        total += _weighted(ref, i)
        ref.counts[i] += 1  # writes reach the caller's arrays
    return total


def test_fields_read_through_the_pointer_as_the_tuple() -> None:
    pair = Pair(np.array([1.0, 2.0, 3.0]), np.array([1, 2, 3]), 0.5)
    assert _total(pair) == (1 * 1 + 2 * 2 + 3 * 3) * 0.5
    assert pair.counts.tolist() == [2, 3, 4]


def test_reading_a_field_leaves_the_reference_count_alone() -> None:
    """The compiled caller counts references: each field read through the pointer is increfed before its
    decref (without it, the arrays were freed under the caller: a crash in the kernel)."""
    pair = Pair(np.arange(4.0), np.zeros(4, np.int64), 1.0)
    before = sys.getrefcount(pair.values), sys.getrefcount(pair.counts)
    for _ in range(1000):
        _total(pair)
    assert (sys.getrefcount(pair.values), sys.getrefcount(pair.counts)) == before
    assert pair.values.tolist() == [0.0, 1.0, 2.0, 3.0] and pair.counts.tolist() == [1000] * 4
