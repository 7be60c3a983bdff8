"""Print the cost of each example scenario against plain patients (kernel and truth tables, no export).

    python benchmarks/scenarios.py                    # every file in examples/scenarios/
    python benchmarks/scenarios.py --patients 200     # more patients per scenario
    python benchmarks/scenarios.py --examples DIR     # the scenario files of another folder

Cost per patient: the seconds of a scenario patient (its rejected histories and passed-over candidates
included) over the seconds of a plain patient of the same mode (`x plain`), and over those of a plain patient
drawn inside the scenario's `who` (`x same who`: the same ages and sexes, the unconditioned model, its lives
that end before the end date lived again as a plain population run does), both after
Numba's compilation and timed in the same process, each the fastest of 3 runs. The goal (issue 32) is at
most 3x. `n_eff/n`: the weights' effective sample size over the patients (1: equal weights; larger tilts cost
spread in the weights).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from simulator.engine.people import People, sample
from simulator.engine.run import RunConfig, Simulator, _subset
from simulator.scenario.output import attach, check_scenario, truth_tables
from simulator.scenario.plan import Plan
from simulator.scenario.run import _t_end, simulate_scenario

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "scenarios"


def best_of(run: Callable[..., object], *args: object, repeats: int = 3) -> float:
    """The fastest of `repeats` calls of run(*args), in seconds (the first also grows the event buffer)."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(*args)
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def plain_lives(sim: Simulator, people: People) -> None:
    """`people` as a plain run makes them: in population mode a life a module ends before the end date is
    lived again."""
    result, counts = sim._simulate_streams(people.index, people.index, learn_capacity=True, people=people)
    if sim.config.mode == "population":
        sim._redraw_the_dead(result, counts, 0, np.inf)


def scenario_patients(sim: Simulator, plan: Plan, index: np.ndarray) -> None:
    truth_tables(sim, plan, simulate_scenario(sim, plan, index))


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
            plain[mode] = best_of(sim.simulate, np.arange(args.plain, dtype=np.int64)) / args.plain
        drawn = sample(sim.people_tables, 1, np.arange(args.plain, dtype=np.int64) + 10**9, lifetime)
        inside = plan.in_who(drawn) & (lifetime | plan.in_who_age(drawn, _t_end(sim, drawn, lifetime)))
        same = _subset(drawn, inside)
        same_who = best_of(plain_lives, sim, same) / len(same.index)
        attach(sim, plan)
        index = np.arange(args.patients, dtype=np.int64)
        chunk = simulate_scenario(sim, plan, index)
        seconds = best_of(scenario_patients, sim, plan, index) / args.patients
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
