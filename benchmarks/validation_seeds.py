"""Validation on several cohorts: how many calibration targets pass on each seed, and which misses
recur on every seed (a bias of the shipped values) rather than on one (the cohort's sampling noise).
Also the calibration targets whose mean over the seeds is off by more than 5%: the biases that make
a row miss on an unlucky seed. "unbiased misses": how many a model without bias would miss on such a
cohort on average, by sampling alone (the report's `calibration_misses_expected_without_bias`), and
the same over all the seeds against the misses counted: more misses than that is bias, not noise.

    python benchmarks/validation_seeds.py --patients 100000 --seeds 0 1 2

Each seed is a different 100,000-patient cohort of the same library (kernel only, like
`ehrsim validate --patients`). Writes nothing.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from simulator.fit.report import summary
from simulator.fit.validation import validate_generated

BIAS = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--lifetime-patients", type=int, default=20_000, help="birth cohort for life expectancy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    misses: Counter[str] = Counter()
    expected = 0.0  # misses a model without bias would make over all the seeds
    relative: dict[str, list[float]] = {}
    every: dict[str, list[float]] = {}  # every calibration target's relative difference, seed by seed
    print(
        f"{'seed':>4} {'calibration':>12} {'unbiased misses':>15} {'primary':>9} {'life exp.':>9} "
        f"{'invariants':>10} {'seconds':>8}"
    )
    for seed in args.seeds:
        started = time.perf_counter()
        v = validate_generated(args.patients, seed, args.lifetime_patients)
        s = summary(v)
        for c in v.comparisons:
            if c.target.id in s["failed_calibration"]:
                relative.setdefault(c.target.id, []).append(c.difference / c.target.value)
            if c.target.id in v.calibration_targets and c.passed is not None:
                every.setdefault(c.target.id, []).append(c.difference / c.target.value)
        misses.update(s["failed_calibration"])
        expected += s["calibration_misses_expected_without_bias"]
        e0 = s["life_expectancy_at_birth"]["simulated"] if s["life_expectancy_at_birth"] else float("nan")
        print(
            f"{seed:>4} {s['passed_calibration']:>5} of {s['calibration_targets']:<4} "
            f"{s['calibration_misses_expected_without_bias']:>15.2f} "
            f"{s['passed_primary']:>3} of {s['compared_primary']:<3} {e0:>9.2f} {s['invariant_violations']:>10} "
            f"{time.perf_counter() - started:>8.0f}"
        )
    print(
        f"\nin all: {sum(misses.values())} calibration targets missed over {len(args.seeds)} seeds; "
        f"a model without bias would miss {expected:.1f}"
    )
    print(f"\ncalibration targets missed (on how many of {len(args.seeds)} seeds; relative difference where missed)")
    for target_id, count in misses.most_common():
        shown = ", ".join(f"{r:+.0%}" for r in relative[target_id])
        print(f"  {count}  {target_id:50} {shown}")
    means = {target_id: sum(r) / len(r) for target_id, r in every.items()}
    print(f"\ncalibration targets off by more than {BIAS:.0%} on average over the seeds")
    for target_id, mean in sorted(means.items(), key=lambda item: -abs(item[1])):
        if abs(mean) > BIAS:
            print(f"  {target_id:53} {mean:+.1%}")


if __name__ == "__main__":
    main()
