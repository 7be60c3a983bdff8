"""Python's cyclic garbage collector, run less often while a run simulates and writes.

A run allocates hundreds of thousands of short-lived containers (pandas and Arrow wrappers, tuples) while it
holds large object arrays (ids, codes) for a chunk. With Python's default thresholds (a young collection every
700 allocations) the collector's passes, and the full ones they trigger, walked those arrays again and again:
0.83 s of the 23 s of CPU of a 3,000-patient ndjson run (2026-12-08, docs/performance.md). With a young
collection every 10,000 allocations they took 0.36 s. The threshold is process-wide: it is set on entry and
put back on exit (two runs at once in threads share it)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 10_000  # allocations less deallocations between young collections (Python's default: 700)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect young objects every YOUNG_THRESHOLD allocations inside the block (usable as a decorator)."""
    before = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
