"""Every file in modules/ and rules/ loads, passes the checks, and is exercised."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

import simulator
from simulator.fit.calibration import assignments, fits_outside_bounds, free_parameters, stale_fits
from simulator.model.fitted import load_fitted
from simulator.model.library import module_files
from simulator.model.parsing import format_path
from simulator.model.schema import CODE_SYSTEMS


def test_every_module_and_rules_file_loads_and_checks(shipped_library) -> None:
    library = shipped_library
    names = {m.name for m in library.modules}
    assert {"type2_diabetes", "hypertension", "wellness", "vital_signs"} <= names
    files = {p.name for p in module_files(REPO / "modules")} | {p.name for p in module_files(REPO / "rules")}
    assert len(library.modules) == len(files)
    assert all(len(digest) == 64 for digest in library.file_sha256.values())


def test_shipped_fits_are_current_and_inside_their_declared_bounds(shipped_library) -> None:
    """Every fitted file was computed from its module's present data, and every fitted value lies within
    the bounds its declaration gives relative to the module file's numbers."""
    library = shipped_library
    assert stale_fits(library) == []
    assert fits_outside_bounds(library) == []


def test_shipped_fits_record_the_multipliers_their_values_were_written_with(shipped_library) -> None:
    """Each fitted file's `parameters` reproduce its `values` (complements included) from the module file's
    own numbers, as a fit writes them, so a reader of the file sees what the simulator uses."""
    library = shipped_library
    for module, (fitted, _, _) in load_fitted(library.rules_dir, str).items():
        # parameters declared since the fit (the death parameters of stroke and CHD, not yet fitted) are not in it
        free = [f for f in free_parameters(library, library.calibration, [module]) if f.name in fitted.parameters]
        for f, parts, expected in assignments(free, [math.log(fitted.parameters[f.name]) for f in free]):
            value = fitted.values[format_path(parts)]
            written = value if isinstance(value, list) else [value]
            assert written == pytest.approx(expected, rel=1e-5, abs=1e-6), (module, f.name, parts)  # as written


def test_every_parameter_cites_a_source(shipped_library) -> None:
    """Sources are required by the schema and resolved by the checks; here: none is empty or a stub."""
    for module in shipped_library.modules:
        assert module.sources, module.name
        for key, citation in module.sources.items():
            assert len(citation.split()) >= 3, (module.name, key, citation)


def test_race_and_ethnicity_shares_sum_to_one(shipped_library) -> None:
    demographics = shipped_library.demographics
    assert abs(sum(c.share for c in demographics.race) - 1) < 1e-6
    assert abs(sum(c.share for c in demographics.ethnicity) - 1) < 1e-6


@pytest.mark.slow
def test_every_state_with_clinical_output_is_entered_in_a_cohort(shipped_population) -> None:
    """The two disease modules' core path runs: onset, diagnosis and treatment all occur."""
    events = shipped_population.events
    seen = set(zip(events["module"].astype(str), events["kind"].astype(str), strict=True))
    for module in ("type2_diabetes", "hypertension"):
        for kind in ("condition_onset", "condition_diagnosis", "medication_start", "observation"):
            assert (module, kind) in seen, (module, kind)


@pytest.mark.slow
def test_event_systems_are_known(shipped_population) -> None:
    assert set(shipped_population.events["system"].dropna().unique()) <= set(CODE_SYSTEMS.values())
    assert isinstance(shipped_population.events["time"].dtype, pd.DatetimeTZDtype)


# States no patient can be expected to enter in the coverage cohorts below, each with the reason.
_TRANSPLANT = (
    "about one kidney transplant is expected in these cohorts: 14-26 patients reach kidney failure, then "
    "0.01-0.08 transplants a year on dialysis"
)
RARE_STATES: dict[str, str] = dict.fromkeys(
    ("ckd.kidney_transplant", "ckd.kidney_transplanted", "ckd.transplant_followup", "blood_count.cbc_kidney_rising"),
    _TRANSPLANT,
)


@pytest.mark.slow
def test_every_state_is_entered_in_a_large_cohort(shipped_library) -> None:
    """Every state of every shipped module is entered by someone (kernel state-entry bits), in a
    cross-section and a birth cohort followed to death, unless RARE_STATES says why not."""
    counts = None
    for mode, n in (("population", 20_000), ("lifetime", 4_000)):
        sim = simulator.Simulator.build(simulator.RunConfig(patients=n, seed=5, mode=mode), shipped_library)
        for start in range(0, n, 10_000):
            entered = sim.simulate(np.arange(start, min(start + 10_000, n), dtype=np.int64)).state_patients()
            counts = entered if counts is None else counts + entered
    never = [name for name, k in zip(sim.names.states, counts, strict=False) if k == 0 and name not in RARE_STATES]
    assert never == [], f"states nobody entered: {never}"


def test_terminology_table_is_sorted_without_duplicates() -> None:
    """One row per (system, code), in order, so a reviewer finds a code and an addition shows in a diff."""
    import csv

    with (REPO / "rules" / "terminology.csv").open(newline="") as handle:
        keys = [(row["system"], row["code"]) for row in csv.DictReader(handle)]
    assert len(keys) == len(set(keys))
    assert keys == sorted(keys)
