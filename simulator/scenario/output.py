"""A scenario run's chunks, its ground truth (in memory and as OUT/truth/ tables) and its manifest entry."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.engine.compiler import compile_library
from simulator.engine.people import build_people_tables, reference_date_of
from simulator.engine.run import Simulator
from simulator.export.writers import SCENARIO_TRUTH_TABLES, Staging
from simulator.model.library import Library
from simulator.model.loading import load_library
from simulator.model.parsing import parse_yaml, validate
from simulator.scenario.plan import Plan, load_plan
from simulator.scenario.run import simulate_scenario, truth_tables
from simulator.scenario.schema import Scenario
from simulator.tables.chunks import Chunk, _tables


def check_scenario(
    path: str | Path, modules_dir: Path | None = None, rules_dir: Path | None = None
) -> tuple[Plan, Library]:
    """Read and check a scenario file against the library (LoadError: every problem, file:line:col)."""
    library = load_library(modules_dir, rules_dir)
    model, names = compile_library(library)
    return load_plan(path, library, model, names), library


def scenario_settings(path: str | Path) -> Scenario:
    """The scenario file's own settings, checked as a file alone (the names it uses are checked by
    `check_scenario`)."""
    return validate(parse_yaml(Path(path)), Scenario)


def scenario_summary(plan: Plan, library: Library) -> str:
    """What a checked scenario asks, in one line: the counts, each tilt's factor (computed where the file
    gives none), the decedent window and the share of the population its patients are drawn from."""
    scenario = plan.scenario
    factors = ", ".join(f"x{factor:.3g}" if factor < 1000 else f"x{factor:,.0f}" for factor in plan.factors)
    tables = build_people_tables(library, reference_date_of(library))
    parts = [
        _counted(scenario.patients, "patient"),
        _counted(len(scenario.require), "requirement"),
        _counted(len(scenario.force), "forced branch", "es"),
        _counted(len(scenario.tilt), "tilted hazard") + (f" ({factors})" if factors else ""),
    ]
    if scenario.decedent_years:
        years = scenario.decedent_years
        parts.append("the dead of the last " + ("year" if years == 1 else _counted(years, "year")) + " kept")
    parts.append(f"drawn from {plan.demographic_share(tables):.1%} of the population")
    return ", ".join(parts)


def _counted(n: float, noun: str, plural: str = "s") -> str:
    return f"{n:g} {noun}" + ("" if n == 1 else plural)


def attach(sim: Simulator, plan: Plan) -> None:
    """Make `sim` simulate under the scenario's changes (its model, and each patient's windows)."""
    sim.model = plan.model
    sim.windows = plan.window_ages if plan.windows else None


def scenario_chunks(sim: Simulator, plan: Plan, truth: dict[str, list[pd.DataFrame]]) -> Iterator[Chunk]:
    """The scenario run's chunks in patient order; each chunk's truth tables are added to `truth`."""
    size, n = sim.config.chunk_size, sim.config.patients
    for start in range(0, n, size):
        chunk = simulate_scenario(sim, plan, np.arange(start, min(start + size, n), dtype=np.int64))
        for name, frame in truth_tables(sim, plan, chunk).items():
            truth.setdefault(name, []).append(frame)
        patients, events = _tables(sim, chunk.simulated, is_decedent=False)
        if plan.scenario.decedent_years:  # population mode: whoever died did so in the window, as a decedent
            patients["is_decedent"] = patients["death_time"].notna().to_numpy()
        yield Chunk(patients, events)


def joined(truth: dict[str, list[pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    return {name: pd.concat(truth[name], ignore_index=True) for name in SCENARIO_TRUTH_TABLES if name in truth}


def summary(plan: Plan, sim: Simulator, frames: dict[str, pd.DataFrame]) -> dict:
    """The scenario's entry of the run manifest: what was asked and how many histories it took."""
    weights = frames["weights"]
    return {
        "file": plan.file,
        "patients": len(weights),
        "histories_simulated": int(weights["attempts"].sum()),
        "rejected": int(weights["attempts"].sum() - len(weights)),
        "passed_over": int(weights["passed_over"].sum()),
        "demographic_share": plan.demographic_share(sim.people_tables),
        "tilt_factors": list(plan.factors),  # each tilt's, computed where the file gives none
        "scenario": plan.scenario.model_dump(mode="json"),
    }


def write_truth(staging: Staging, frames: dict[str, pd.DataFrame], formats: tuple[str, ...]) -> dict[str, dict]:
    """The truth tables as Parquet (and CSV when csv is among the formats) in the run's truth/ folder
    (`Export.truth_staging`, put in place with the run), and their manifest entries."""
    suffixes = [".parquet", ".csv"] if "csv" in formats else [".parquet"]
    for name, frame in frames.items():
        for suffix in suffixes:
            path = staging.dir / f"{name}{suffix}"
            if suffix == ".csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
            staging.record(path.name, "rows", len(frame), path, hashlib.sha256(path.read_bytes()).hexdigest())
    return staging.files
