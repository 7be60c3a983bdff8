"""Print the cost of each example scenario against plain patients (kernel and truth tables, no export).

    python benchmarks/scenarios.py                    # every file in examples/scenarios/
    python benchmarks/scenarios.py --patients 200     # more patients per scenario
    python benchmarks/scenarios.py --examples DIR     # the scenario files of another folder

Cost per patient: the seconds of a scenario patient (its rejected histories and passed-over candidates
included) over the seconds of a plain patient of the same mode (`x plain`), and over those of a plain patient
drawn inside the scenario's `who` (`x same who`: the same ages and sexes, the unconditioned model), both after
Numba's compilation and timed in the same process. The goal (issue 32) is at most 3x. `n_eff/n`: the weights'
effective sample size over the patients (1: equal weights; larger tilts cost spread in the weights).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from simulator.engine.people import sample
from simulator.engine.run import RunConfig, Simulator, _subset
from simulator.scenario.output import attach, check_scenario, truth_tables
from simulator.scenario.run import _t_end, simulate_scenario

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "scenarios"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--plain", type=int, default=5000, help="plain patients timed for the comparison")
    parser.add_argument("--examples", type=Path, default=EXAMPLES)
    args = parser.parse_args()
    print(
        f"{'example':<22} {'s/patient':>10} {'x plain':>8} {'x same who':>11} {'histories':>10} {'passed over':>12} "
        f"{'n_eff/n':>8}"
    )
    plain: dict[str, float] = {}
    for path in sorted(args.examples.glob("*.yaml")):
        plan, library = check_scenario(path)
        mode = plan.scenario.mode
        lifetime = mode == "lifetime"
        sim = Simulator.build(RunConfig(patients=args.patients, seed=1, mode=mode), library)
        if mode not in plain:
            started = time.perf_counter()
            sim.simulate(np.arange(args.plain, dtype=np.int64))
            plain[mode] = (time.perf_counter() - started) / args.plain
        drawn = sample(sim.people_tables, 1, np.arange(args.plain, dtype=np.int64) + 10**9, lifetime)
        inside = plan.in_who(drawn) & (lifetime | plan.in_who_age(drawn, _t_end(sim, drawn, lifetime)))
        same = _subset(drawn, inside)
        started = time.perf_counter()
        sim._simulate_streams(same.index, same.index, people=same)  # one history each, as a scenario candidate
        same_who = (time.perf_counter() - started) / len(same.index)
        attach(sim, plan)
        sim.simulate(np.zeros(1, np.int64))  # compile for the scenario's windows
        index = np.arange(args.patients, dtype=np.int64)
        started = time.perf_counter()
        chunk = simulate_scenario(sim, plan, index)
        truth_tables(sim, plan, chunk)
        seconds = (time.perf_counter() - started) / args.patients
        weights = np.exp(chunk.simulated.log_weight - chunk.simulated.log_weight.max())
        n_eff = weights.sum() ** 2 / (weights**2).sum()  # the weights' effective sample size (Kish)
        print(
            f"{path.stem:<22} {seconds:>10.4f} {seconds / plain[mode]:>8.2f} {seconds / same_who:>11.2f} "
            f"{chunk.attempts.mean():>10.2f} {chunk.passed_over.mean():>12.2f} {n_eff / args.patients:>8.2f}",
            flush=True,
        )
    for mode, seconds in plain.items():
        print(f"plain patient ({mode}): {seconds:.5f} s")


if __name__ == "__main__":
    main()
