"""Print simulation throughput and peak memory for growing populations.

    python benchmarks/throughput.py                 # 10k, 100k and 1M patients
    python benchmarks/throughput.py --sizes 10000   # just one size

For each size, in a fresh process (so peak memory is that run's own): patient-lifetimes per second
with the kernel alone, and with tables written to Parquet; events per second; peak resident memory.
The first run in a new environment also pays for Numba compilation (cached afterwards); that time
is printed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _child(mode: str, patients: int, chunk_size: int) -> None:
    """Run one measurement and print it as JSON (runs in its own process)."""
    import numpy as np

    import simulator
    from simulator.engine.run import RunConfig, Simulator

    started = time.perf_counter()
    if mode == "kernel":
        sim = Simulator.build(RunConfig(patients=patients, seed=1, chunk_size=chunk_size))
        sim.simulate(np.arange(min(patients, 100), dtype=np.int64))  # compile or load the cache
        warm = time.perf_counter()
        events = 0
        for start in range(0, patients, chunk_size):
            index = np.arange(start, min(start + chunk_size, patients), dtype=np.int64)
            buffers, _, errors, _, _, _, _ = sim.simulate(index)
            events += len(buffers.t)
            assert not errors.any()
        seconds = time.perf_counter() - warm
    else:
        with tempfile.TemporaryDirectory() as out:
            simulator.generate(patients=min(patients, 100), seed=1, out=out, formats="parquet")  # compile or load
            warm = time.perf_counter()
            population = simulator.generate(
                patients=patients, seed=1, out=out, chunk_size=chunk_size, formats="parquet"
            )
            seconds = time.perf_counter() - warm
            events = population.manifest["counts"]["events"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "mode": mode,
                "patients": patients,
                "seconds": seconds,
                "events": events,
                "warmup_s": warm - started,
                "peak_mb": peak_mb,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--modes", nargs="+", default=["kernel", "parquet"], choices=["kernel", "parquet"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    print(f"ehrsim throughput on {os.cpu_count()} cores, chunk size {args.chunk_size}")
    print(
        f"{'mode':8} {'patients':>10} {'seconds':>9} {'patients/s':>11} {'events/s':>12} "
        f"{'events/patient':>14} {'peak MB':>8} {'warm-up s':>9}"
    )
    for size in args.sizes:
        for mode in args.modes:
            command = [sys.executable, __file__, "--child", mode, str(size), str(args.chunk_size)]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            seconds = result["seconds"]
            print(
                f"{mode:8} {size:>10,} {seconds:>9.2f} {size / seconds:>11,.0f} {result['events'] / seconds:>12,.0f} "
                f"{result['events'] / size:>14.0f} {result['peak_mb']:>8.0f} {result['warmup_s']:>9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
