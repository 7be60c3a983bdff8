"""Calibration time: fit every declared group of modules (kernel only, common random numbers) and
print the wall time, the evaluations and the loss before and after. Writes nothing.

    NUMBA_NUM_THREADS=1 python benchmarks/calibration.py --patients 4000 --max-iterations 8
    python benchmarks/calibration.py --differences   # a differenced Jacobian at every step (no Broyden)
"""

from __future__ import annotations

import argparse
import time

import numba

from simulator.fit.calibration import fit, fit_groups
from simulator.fit.validation import default_targets
from simulator.model.loading import load_library


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=4_000, help="patients per evaluation")
    parser.add_argument("--max-iterations", type=int, default=8)
    parser.add_argument("--differences", action="store_true", help="difference the Jacobian at every step")
    parser.add_argument("--seed", type=int, default=20_240_701)
    parser.add_argument("--quiet", action="store_true", help="no fit table")
    args = parser.parse_args()
    started = time.perf_counter()
    library = load_library()
    targets = default_targets(library)
    groups = fit_groups(library, list(library.calibration))
    report = (lambda line: None) if args.quiet else print
    rows = []
    for group in groups:
        result = fit(
            library,
            targets,
            library.calibration,
            group,
            args.patients,
            args.seed,
            args.max_iterations,
            report,
            broyden=not args.differences,
        )
        rows.append((group, result))
    total = time.perf_counter() - started
    print(f"\nthreads {numba.get_num_threads()}, {args.patients:,} patients per evaluation")
    print(f"{'modules':40} {'params':>6} {'targets':>7} {'evals':>5} {'seconds':>8} {'loss before':>11} {'after':>8}")
    for group, r in rows:
        print(
            f"{', '.join(group):40} {len(r.names):6d} {len(r.after):7d} {r.evaluations:5d} {r.seconds:8.1f} "
            f"{r.loss_before:11.2f} {r.loss_after:8.2f}"
        )
    print(f"whole library: {total:.1f} s")


if __name__ == "__main__":
    main()
