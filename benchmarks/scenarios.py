"""Print the cost of each example scenario against plain patients (kernel and truth tables, no export).

    python benchmarks/scenarios.py                    # every file in examples/scenarios/
    python benchmarks/scenarios.py --patients 200     # more patients per scenario

Cost per patient: the seconds of a scenario patient (its rejected histories and passed-over candidates
included) over the seconds of a plain patient of the same mode, both after Numba's compilation. The goal
(issue 32) is at most 3x.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from simulator.engine.run import RunConfig, Simulator
from simulator.scenario.output import attach, check_scenario, truth_tables
from simulator.scenario.run import simulate_scenario

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "scenarios"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--plain", type=int, default=5000, help="plain patients timed for the comparison")
    args = parser.parse_args()
    per_plain: dict[str, float] = {}
    print(f"{'example':<22} {'s/patient':>10} {'x plain':>8} {'histories/patient':>18} {'passed over':>12}")
    for path in sorted(EXAMPLES.glob("*.yaml")):
        plan, library = check_scenario(path)
        mode = plan.scenario.mode
        sim = Simulator.build(RunConfig(patients=args.patients, seed=1, mode=mode), library)
        if mode not in per_plain:
            started = time.perf_counter()
            sim.simulate(np.arange(args.plain, dtype=np.int64))
            per_plain[mode] = (time.perf_counter() - started) / args.plain
        attach(sim, plan)
        sim.simulate(np.zeros(1, np.int64))  # compile for the scenario's windows
        started = time.perf_counter()
        chunk = simulate_scenario(sim, plan, np.arange(args.patients, dtype=np.int64))
        truth_tables(sim, plan, chunk)
        seconds = (time.perf_counter() - started) / args.patients
        print(
            f"{path.stem:<22} {seconds:>10.4f} {seconds / per_plain[mode]:>8.2f} "
            f"{chunk.attempts.mean():>18.2f} {chunk.passed_over.mean():>12.2f}"
        )
    for mode, seconds in per_plain.items():
        print(f"plain patient ({mode}): {seconds:.5f} s")


if __name__ == "__main__":
    main()
