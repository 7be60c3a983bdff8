"""Library load time: the median of N loads of the shipped library, cold (the first load in a fresh
process, imports not counted) and warm (later loads in one process), and the share of a warm load
spent parsing YAML. Writes nothing.

    python benchmarks/load.py --runs 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from simulator.model import fitted, loading, parsing, targets
from simulator.model.loading import load_library
from simulator.model.parsing import Located, parse_yaml

_COLD = (
    "import time; from simulator.model.loading import load_library; "
    "t = time.perf_counter(); load_library(); print(time.perf_counter() - t)"
)


def cold_seconds() -> float:
    """One load in a fresh interpreter, timed inside it after the imports."""
    result = subprocess.run([sys.executable, "-c", _COLD], capture_output=True, text=True, check=True)
    return float(result.stdout)


def warm_seconds() -> tuple[float, float]:
    """(whole load, time inside parse_yaml) of one load in this process."""
    parsing_s = 0.0

    def timed(path: Path, display_name: str | None = None) -> Located:
        nonlocal parsing_s
        started = time.perf_counter()
        try:
            return parse_yaml(path, display_name)
        finally:
            parsing_s += time.perf_counter() - started

    patches: list[Any] = [mock.patch.object(m, "parse_yaml", timed) for m in (loading, fitted, targets, parsing)]
    for patch in patches:
        patch.start()
    try:
        started = time.perf_counter()
        load_library()
        return time.perf_counter() - started, parsing_s
    finally:
        for patch in patches:
            patch.stop()


def median(runs: int, once: Callable[[], float]) -> tuple[float, float, float]:
    times = [once() for _ in range(runs)]
    return statistics.median(times), min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="loads of each kind")
    args = parser.parse_args()
    cold = median(args.runs, cold_seconds)
    load_library()  # the first load in this process is a cold one
    warm = [warm_seconds() for _ in range(args.runs)]
    totals = [w[0] for w in warm]
    share = statistics.median(p / t for t, p in warm)
    print(f"cold load: median {cold[0]:.3f} s (min {cold[1]:.3f}, max {cold[2]:.3f}, {args.runs} processes)")
    print(f"warm load: median {statistics.median(totals):.3f} s (min {min(totals):.3f}, max {max(totals):.3f})")
    print(f"parsing YAML: {share:.0%} of a warm load")


if __name__ == "__main__":
    main()
