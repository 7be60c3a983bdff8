"""Compare a cohort with the targets: a written run (`validate_run`) or one generated in memory with
the kernel alone (`validate_generated`). The numbers go to simulator/report.py.

Life expectancy needs a birth cohort followed to death: a lifetime-mode run gives it directly; for a
population-mode run a lifetime cohort of the same library and seed is simulated (kernel only).
The clinical invariants are checked on the tables (all of a written run; the first chunk of a
generated one).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.audit.report import AuditReport, audit_cohort
from simulator.days import days_since_epoch
from simulator.engine.run import RunConfig, Simulator
from simulator.fit.calibration import fits_outside_bounds, stale_fits
from simulator.fit.cohort import (
    ACTIVE,
    DIAGNOSED,
    EVER,
    Cohort,
    Needs,
    Vocabulary,
    cohort_from_tables,
    needs_of,
    simulate_cohort,
)
from simulator.fit.statistics import Comparison, compare_all
from simulator.model.library import Library
from simulator.model.loading import load_library
from simulator.model.targets import Definitions, TargetSet, load_targets
from simulator.tables.chunks import chunk_tables
from simulator.tables.invariants import check_invariants
from simulator.tables.population import Population
from simulator.version import __version__

INVARIANT_PATIENTS = 2_000  # patients of a generated cohort whose tables are checked
LAB_MIN_AGE = 18
STATUS_GROUPS = ("none", "undiagnosed", "diagnosed", "resolved")


@dataclass
class Validation:
    comparisons: list[Comparison]
    cohort: Cohort
    lifetime: Cohort | None
    invariants: dict[str, list[str]]
    invariant_patients: int
    labs: list[dict]
    card: dict
    definitions: Definitions  # the targets' measures (the report's labels and sections)
    calibration_targets: tuple[str, ...] = ()  # ids the library's declarations answer to
    audit: AuditReport | None = None  # the clinical consistency audit of the invariant patients' records


def calibration_targets(library: Library) -> tuple[str, ...]:
    """The targets the loaded modules are calibrated to (their declarations'), in first-declared order."""
    ids: dict[str, None] = {}
    for declared in library.calibration.values():
        ids.update(dict.fromkeys(declared.target_ids))
    return tuple(ids)


def default_targets(library: Library) -> TargetSet:
    return load_targets(library.rules_dir / "targets")


def lab_distributions(cohort: Cohort, targets: TargetSet, vocabulary: Vocabulary) -> list[dict]:
    """Latest reading at the reference date among living adults, by the status of a condition."""
    out = []
    adults = cohort.alive & (cohort.age_years >= LAB_MIN_AGE)
    for pair in targets.definitions.labs:
        obs, _ = vocabulary.resolve("observables", [pair.observation])
        cond, _ = vocabulary.resolve("conditions", [pair.condition])
        if not obs or not cond:
            continue
        values = cohort.observations[obs[0]]
        status = cohort.conditions[cond[0]]
        groups = {
            "none": (status & EVER) == 0,
            "undiagnosed": (status & (ACTIVE | DIAGNOSED)) == ACTIVE,
            "diagnosed": (status & (ACTIVE | DIAGNOSED)) == (ACTIVE | DIAGNOSED),
            "resolved": ((status & EVER) != 0) & ((status & ACTIVE) == 0),
        }
        stats = {}
        for name, mask in groups.items():
            chosen = values[mask & adults & ~np.isnan(values)]
            if len(chosen) == 0:
                continue
            p10, p50, p90 = np.percentile(chosen, [10, 50, 90])
            stats[name] = {
                "n": len(chosen),
                "mean": float(chosen.mean()),
                "sd": float(chosen.std(ddof=1)) if len(chosen) > 1 else 0.0,
                "p10": float(p10),
                "median": float(p50),
                "p90": float(p90),
                "values": chosen[:5_000].tolist(),  # for the plot; report.json leaves them out
            }
        out.append({"observation": pair.observation, "condition": pair.condition, "groups": stats})
    return out


def _card(library: Library, config: dict, n_patients: int, lifetime_patients: int) -> dict:
    return {
        "generator": f"ehrsim {__version__}",
        "how": (
            "simulated by ehrsim from disease-progression modules (state graphs with cited parameters) over "
            "the US Census 2024 age/sex pyramid and the NCHS 2023 life tables; fitted module parameters from "
            "rules/targets/calibration/*.fitted.yaml"
        ),
        "config": config,
        "patients": n_patients,
        "lifetime_patients": lifetime_patients,
        "modules": [{"name": m.name, "version": m.version} for m in library.modules],
        "calibration_declared": sorted(library.calibration),
        "fitted_files_applied": sorted(f for f in library.file_sha256 if f.endswith(".fitted.yaml")),
        "fits_older_than_their_module": stale_fits(library),
        "fits_outside_their_bounds": fits_outside_bounds(library),
        "intended_uses": [
            "testing software that reads EHR data (pipelines, FHIR servers, decision support)",
            "teaching and demonstrations",
            "benchmarking methods where realistic structure matters more than real outcomes",
        ],
        "not_for": [
            "clinical decisions or estimating real-world risks, effects or prevalences",
            "any claim about real patients: the records belong to no one and only the targets below were matched",
        ],
    }


def _lifetime_cohort(library: Library, seed: int, patients: int, needs: Needs, chunk_size: int) -> Cohort | None:
    if patients <= 0:
        return None
    sim = Simulator.build(RunConfig(patients=patients, seed=seed, mode="lifetime"), library)
    return simulate_cohort(sim, np.arange(patients), needs, math.inf, chunk_size)


def validate_generated(
    patients: int,
    seed: int = 0,
    lifetime_patients: int | None = None,
    library: Library | None = None,
    targets: TargetSet | None = None,
    chunk_size: int = 10_000,
) -> Validation:
    """Generate `patients` (population mode, kernel only) and a lifetime cohort, and compare."""
    library = library or load_library()
    targets = targets or default_targets(library)
    vocabulary = Vocabulary.of(library)
    needs = needs_of(targets.definitions, vocabulary)
    lifetime_patients = min(patients, 20_000) if lifetime_patients is None else lifetime_patients
    sim = Simulator.build(RunConfig(patients=patients, seed=seed, chunk_size=chunk_size), library)
    cohort = simulate_cohort(sim, np.arange(patients), needs, sim.reference_t, chunk_size)
    checked = chunk_tables(sim, 0, min(patients, INVARIANT_PATIENTS))
    invariants = check_invariants(checked.patients, checked.events)
    audit = audit_cohort(library, checked.patients, checked.events, seed)
    lifetime = _lifetime_cohort(library, seed, lifetime_patients, needs, chunk_size)
    config = {"mode": "population", "seed": seed, "reference_date": str(sim.config.reference_date or "default")}
    return Validation(
        compare_all(targets, cohort, vocabulary, lifetime),
        cohort,
        lifetime,
        invariants,
        len(checked.patients),
        lab_distributions(cohort, targets, vocabulary),
        _card(library, config, patients, lifetime_patients),
        targets.definitions,
        calibration_targets(library),
        audit,
    )


def living_cohort(patients: pd.DataFrame) -> pd.DataFrame:
    """The patients of a written run less its decedents (`is_decedent`; a run written before decedents
    has none): the cross-section alive at the reference date, which the targets describe."""
    if "is_decedent" not in patients:
        return patients
    return patients[~patients["is_decedent"].astype(bool).to_numpy()]


def validate_run(run_dir: Path, lifetime_patients: int = 20_000, targets: TargetSet | None = None) -> Validation:
    """Compare a run written by `ehrsim generate` (its manifest and tables) with the targets."""
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no manifest.json: is it the --out directory of ehrsim generate?")
    manifest = json.loads(manifest_path.read_text())
    config = manifest.get("config", {})
    library = load_library(
        Path(config["modules_dir"]) if config.get("modules_dir") else None,
        Path(config["rules_dir"]) if config.get("rules_dir") else None,
    )
    targets = targets or default_targets(library)
    vocabulary = Vocabulary.of(library)
    needs = needs_of(targets.definitions, vocabulary)
    population = Population(manifest, out=run_dir)
    patients, events = population.patients, population.events
    t_ref = days_since_epoch(date.fromisoformat(config["reference_date"]))
    living = living_cohort(patients)
    cohort = cohort_from_tables(living, events[events["patient"].isin(living["index"])], t_ref, needs)
    lifetime_run = config.get("mode") == "lifetime"
    seed = int(manifest.get("seed", 0))
    lifetime = cohort if lifetime_run else _lifetime_cohort(library, seed, lifetime_patients, needs, 10_000)
    card_config = {k: config.get(k) for k in ("mode", "seed", "reference_date", "patients")}
    audited = patients.iloc[:INVARIANT_PATIENTS]
    audit = audit_cohort(library, audited, events[events["patient"].isin(audited["index"])], seed)
    return Validation(
        compare_all(targets, cohort, vocabulary, lifetime),
        cohort,
        lifetime,
        check_invariants(patients, events),
        len(patients),
        lab_distributions(cohort, targets, vocabulary),
        _card(library, card_config, len(living), len(living) if lifetime_run else lifetime_patients),
        targets.definitions,
        calibration_targets(library),
        audit,
    )
