"""Print the cost of each example scenario against plain patients (kernel and truth tables; and end to end).

    python benchmarks/scenarios.py                    # every file in examples/scenarios/
    python benchmarks/scenarios.py --patients 200     # more patients per scenario
    python benchmarks/scenarios.py --examples DIR     # the scenario files of another folder
    python benchmarks/scenarios.py --end-to-end 500   # also whole runs to FHIR ndjson, as `ehrsim generate` makes them

Cost per patient: the seconds of a scenario patient (its rejected histories and passed-over candidates
included) over the seconds of a plain patient of the same mode (`x plain`), and over those of a plain patient
drawn inside the scenario's `who` (`x same who`: the same ages and sexes, the unconditioned model, its lives
that end before the end date lived again as a plain population run does), both after
Numba's compilation and timed in the same process, each the fastest of 3 runs. The goal (issue 32) is at
most 3x. `n_eff/n`: the weights' effective sample size over the patients (1: equal weights; larger tilts cost
spread in the weights).

With `--end-to-end N`, also the cost of a patient of a whole run written to FHIR ndjson (`simulator.generate`,
the scenario's own streams and messy data included) over that of a plain run's patient (`x plain, e2e`): the
time of N patients less that of N / 5, over 4N / 5, so that the start-up of a run (loading the library and
Numba's cache) counts in neither, after a run of 10 patients that warms up what a process does only once.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import simulator
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


def end_to_end(path: Path | None, mode: str, patients: int, out: Path) -> float:
    """Seconds a patient of a whole run to ndjson costs beyond the run's start-up: a scenario run (the file
    `path` with its `patients` replaced) or, with `path` None, a plain one."""
    seconds = []
    for n in (10, patients // 5, patients):  # the first run warms up what a process does once (imports, caches)
        started = time.perf_counter()
        if path is None:
            simulator.generate(patients=n, seed=1, mode=mode, out=out / f"plain{n}", formats="ndjson")
        else:
            copy = out / f"{path.stem}{n}.yaml"
            copy.write_text(re.sub(r"(?m)^patients: *\d+", f"patients: {n}", path.read_text()))
            simulator.generate(scenario=copy, seed=1, out=out / f"{path.stem}{n}", formats="ndjson")
        seconds.append(time.perf_counter() - started)
    return (seconds[2] - seconds[1]) / (patients - patients // 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--plain", type=int, default=5000, help="plain patients timed for the comparison")
    parser.add_argument("--examples", type=Path, default=EXAMPLES)
    parser.add_argument("--end-to-end", type=int, default=0, metavar="N", help="patients of the whole runs timed")
    args = parser.parse_args()
    print(
        f"{'example':<22} {'s/patient':>10} {'x plain':>8} {'x same who':>11} {'histories':>10} {'passed over':>12} "
        f"{'n_eff/n':>8}" + (f" {'x plain, e2e':>13}" if args.end_to_end else "")
    )
    plain: dict[str, float] = {}
    plain_e2e: dict[str, float] = {}
    scratch = tempfile.TemporaryDirectory()
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
        e2e = ""
        if args.end_to_end:
            out = Path(scratch.name)
            if mode not in plain_e2e:
                plain_e2e[mode] = end_to_end(None, mode, args.end_to_end, out)
            e2e = f" {end_to_end(path, mode, args.end_to_end, out) / plain_e2e[mode]:>13.2f}"
        print(
            f"{path.stem:<22} {seconds:>10.4f} {seconds / plain[mode]:>8.2f} {seconds / same_who:>11.2f} "
            f"{chunk.attempts.mean():>10.2f} {chunk.passed_over.mean():>12.2f} {n_eff / args.patients:>8.2f}{e2e}",
            flush=True,
        )
    for mode, seconds in plain.items():
        print(
            f"plain patient ({mode}): {seconds:.5f} s"
            + (f"; end to end {plain_e2e[mode]:.5f} s" if mode in plain_e2e else "")
        )
    scratch.cleanup()


if __name__ == "__main__":
    main()
