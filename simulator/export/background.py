"""Output written in a background thread, in order, while the next chunk is simulated and its text built.

A run's writers hand their file writes (compression, the write itself, its SHA-256) to one `Background`
thread; they run one after the other in the order given, so every file gets the same bytes as when
written in place, and the main thread goes on building the next slice's resources, or the kernel
simulating the next chunk. zlib, zstandard, hashlib and file writes release the GIL on large buffers, so
the two threads use two cores. At most `limit_bytes` of output wait at once (memory stays bounded by the
chunk, not the run); an error in the thread (a full disk) is raised in the main thread by the next
`submit` or by `drain`, and nothing is written after it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

# Output that may wait for the thread: about one slice of FHIR text (`writers.FHIR_SLICE` patients, about
# 400 MB as ndjson), so that building the next slice overlaps writing the last without holding more.
LIMIT_BYTES = 512 << 20


class Background:
    """One writing thread, started at the first `submit`; `close` ends it (after what is queued)."""

    def __init__(self, limit_bytes: int = LIMIT_BYTES):
        self.limit_bytes = limit_bytes
        self._changed = threading.Condition()
        self._jobs: deque[tuple[Callable[[], None], int]] = deque()
        self._waiting_bytes = 0
        self._error: BaseException | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None], size: int) -> None:
        """Run `job` after every job submitted before it; `size`: the bytes it holds, counted until it is done.
        Waits while the thread is `limit_bytes` behind; raises the thread's error, if it had one."""
        with self._changed:
            while self._jobs and self._waiting_bytes + size > self.limit_bytes and self._error is None:
                self._changed.wait()
            self._raise()
            self._jobs.append((job, size))
            self._waiting_bytes += size
            self._changed.notify_all()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ehrsim-writer", daemon=True)
            self._thread.start()

    def drain(self) -> None:
        """Wait until every job submitted is done; raises the thread's error, if it had one."""
        with self._changed:
            while self._jobs:
                self._changed.wait()
            self._raise()

    def close(self) -> None:
        """End the thread once what is queued is done (jobs after an error are skipped); raises nothing, so
        that an aborting run can call it."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._jobs and not self._closing:
                    self._changed.wait()
                if not self._jobs:
                    return
                job, size = self._jobs[0]
                failed = self._error is not None
            if not failed:
                try:
                    job()
                except BaseException as exc:  # raised in the main thread by the next submit or drain
                    with self._changed:
                        self._error = exc
            with self._changed:
                self._jobs.popleft()
                self._waiting_bytes -= size
                self._changed.notify_all()
