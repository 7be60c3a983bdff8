"""The Numba kernel against the slow Python reference (simulator/reference.py): for the same people, the
same events in the same order, patient by patient (times and values to 1e-9).

Cohorts: the fixture library in tests/data/fixture (written to exercise every feature of the module
format; a coverage test checks that it does) and the shipped modules/ and rules/, in population and
lifetime mode.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA

from simulator.days import year_start
from simulator.engine.codes import EVENT_KINDS, K_ONSET
from simulator.engine.people import sample
from simulator.engine.reference import EPS_DAYS, PatientRun, simulate
from simulator.engine.run import LIFETIME_HORIZON_YEARS, RunConfig, Simulator
from simulator.model.library import Library
from simulator.model.loading import load_library
from simulator.model.schema import Exact, Exponential, Gamma, LogNormal, Normal, Uniform

FIXTURE = DATA / "fixture"
EXACT_COLUMNS = ("patient", "kind", "code", "encounter", "module", "state")
TOLERANCE = 1e-9  # days, and observation / severity units


def build(modules_dir: Path, rules_dir: Path, mode: str, seed: int) -> Simulator:
    return Simulator.build(RunConfig(seed=seed, mode=mode, modules_dir=modules_dir, rules_dir=rules_dir))


def kernel_events(sim: Simulator, index: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """The kernel's events as the reference writes them (names instead of ids), and the event
    stream of each patient (population mode redraws patients killed before the reference date)."""
    events, patient, errors, _, _, stream, _ = sim.simulate(index)
    assert not errors.any(), f"kernel error bits {np.unique(errors)}"
    codes = np.array([f"{c.system}|{c.code}" for c in sim.names.codes] + [""], dtype=object)
    modules = np.array([s.split(".", 1)[0] for s in sim.names.states] + [""], dtype=object)
    states = np.array(list(sim.names.state_names) + [""], dtype=object)
    frame = pd.DataFrame(
        {
            "patient": patient,
            "t": events.t,
            "kind": np.array(EVENT_KINDS, dtype=object)[events.kind],
            "code": codes[events.code],
            "value": events.value,
            "encounter": events.encounter,
            "module": modules[events.state],  # -1 (background) picks the trailing ""
            "state": states[events.state],
        }
    )
    return frame, stream


def reference_events(
    sim: Simulator,
    index: np.ndarray,
    stream: np.ndarray,
    run_class: type[PatientRun] = PatientRun,
) -> pd.DataFrame:
    """The reference's events for the same people living the same event streams, drawn and bounded
    exactly as Simulator.simulate does."""
    lifetime = sim.config.mode == "lifetime"
    people = sample(sim.people_tables, sim.config.seed, index, lifetime)._replace(index=stream)
    t_end = people.birth_t + LIFETIME_HORIZON_YEARS * 365.25 if lifetime else np.full(len(index), sim.reference_t)
    events = simulate(sim.library, sim.config.seed, people, t_end, run_class)
    events["patient"] = events["patient"].map(dict(zip(stream.tolist(), index.tolist(), strict=True)))
    return events


def assert_same_events(kernel: pd.DataFrame, ref: pd.DataFrame) -> None:
    """Row by row (both are in patient order, then in the order events happened); on a difference,
    show that patient's events around the first one from both sides."""
    n = min(len(kernel), len(ref))
    same = np.ones(n, dtype=bool)
    for column in EXACT_COLUMNS:
        same &= kernel[column].to_numpy()[:n] == ref[column].to_numpy()[:n]
    same &= np.abs(kernel["t"].to_numpy()[:n] - ref["t"].to_numpy()[:n]) <= TOLERANCE
    a, b = kernel["value"].to_numpy()[:n], ref["value"].to_numpy()[:n]
    same &= (np.abs(a - b) <= TOLERANCE) | (np.isnan(a) & np.isnan(b))
    if same.all() and len(kernel) == len(ref):
        return
    row = int(np.argmin(same)) if not same.all() else n
    patient = (kernel if row < len(kernel) else ref)["patient"].iloc[row]
    first = row - int(np.searchsorted(kernel["patient"].to_numpy(), patient))
    sides = {"kernel": kernel, "reference": ref}
    show = pd.concat({k: v[v["patient"] == patient].reset_index(drop=True) for k, v in sides.items()}, axis=1)
    with pd.option_context("display.precision", 10, "display.width", 250):
        context = show.iloc[max(0, first - 4) : first + 4].to_string()
    pytest.fail(
        f"kernel and reference differ for patient {patient} at its event {first} "
        f"({len(kernel)} kernel events, {len(ref)} reference events in all):\n{context}"
    )


# --- the fixture library -------------------------------------------------------------------------


CALENDAR_CROSSINGS = {  # the fixture's before_year guards: a hazard ratio (2000) and a waiting case (1995)
    year_start(2000) + EPS_DAYS: "hazard re-drawn on a calendar date",
    year_start(1995) + EPS_DAYS: "waiting cases decided on a calendar date",
}


class Recorder(PatientRun):
    """The reference, counting the paths it takes into `seen` (set per cohort by a subclass)."""

    seen: Counter[str]

    def run_actions(self, track, name, state, t) -> None:  # noqa: ANN001
        self.seen[f"entered {track.module.name}.{name}"] += 1
        if state.after is not None:
            self.seen[f"delay {type(state.after).__name__}"] += 1
        super().run_actions(track, name, state, t)

    def leave(self, track, t) -> None:  # noqa: ANN001
        state = track.module.states[track.state]
        if state.hazards is not None:
            self.seen["hazard fired" if track.wake == "fire" else "hazard re-checked at a guard's crossing"] += 1
        elif track.waiting == "cases" and track.wake == "reevaluate" and track.wake_t == math.inf:
            self.seen["waiting cases re-checked at a guard's crossing"] += 1  # woken by the main loop
        elif state.wait_for == "wellness":
            self.seen[f"join {self.index} {track.encounter}"] += 1
        if track.waiting == "cases" and CALENDAR_CROSSINGS.get(t) == "waiting cases decided on a calendar date":
            self.seen[CALENDAR_CROSSINGS[t]] += 1
        super().leave(track, t)

    def schedule_hazards(self, track, t) -> None:  # noqa: ANN001
        woken = track.wake == "reevaluate" and track.wake_t == math.inf
        if self.entered[(track.module.name, track.state)] < t and not woken:
            self.seen["hazard re-drawn: its hazard-ratio product changed"] += 1
        if CALENDAR_CROSSINGS.get(t) == "hazard re-drawn on a calendar date":
            self.seen[CALENDAR_CROSSINGS[t]] += 1
        super().schedule_hazards(track, t)

    def clinic_slot(self, t, rng) -> float:  # noqa: ANN001
        self.seen["clinic visit deferred to a slot"] += 1
        return super().clinic_slot(t, rng)

    def take_round(self, pending, t) -> None:  # noqa: ANN001
        self.seen[f"round of an open {pending.encounter_class} encounter"] += 1
        super().take_round(pending, t)

    def observe(self, name, t, rng) -> float:  # noqa: ANN001
        value = super().observe(name, t, rng)
        if math.isnan(value):
            self.seen["derived observable with an input never measured"] += 1
        return value


@pytest.fixture(scope="module")
def fixture_cohorts() -> dict[str, tuple[pd.DataFrame, pd.DataFrame, Counter[str]]]:
    """mode -> (kernel events, reference events, reference paths) for 200 patients of the fixture library."""
    out = {}
    for mode, seed in (("population", 7), ("lifetime", 4)):
        sim = build(FIXTURE / "modules", FIXTURE / "rules", mode, seed)
        index = np.arange(200, dtype=np.int64)
        seen: Counter[str] = Counter()
        recorder = type("CohortRecorder", (Recorder,), {"seen": seen})
        kernel, stream = kernel_events(sim, index)
        out[mode] = (kernel, reference_events(sim, index, stream, recorder), seen)
    return out


@pytest.mark.parametrize("mode", ["population", "lifetime"])
def test_kernel_matches_reference_on_fixture(fixture_cohorts, mode: str) -> None:
    kernel, ref, _ = fixture_cohorts[mode]
    assert len(ref) > 10_000
    assert_same_events(kernel, ref)


def test_fixture_exercises_every_feature(fixture_cohorts) -> None:
    """Over both cohorts: every state entered, every delay kind drawn, every re-check path taken,
    every event kind emitted, and the tie and death cases the kernel orders specially."""
    seen = sum((cohort[2] for cohort in fixture_cohorts.values()), Counter())
    events = pd.concat([cohort[1] for cohort in fixture_cohorts.values()], keys=list(fixture_cohorts))
    library = load_library(FIXTURE / "modules", FIXTURE / "rules")
    never = [f"{m.name}.{s}" for m in library.modules for s in m.states if not seen[f"entered {m.name}.{s}"]]
    assert never == [], f"states no patient entered: {never}"
    for dist in (Exact, Uniform, Normal, Exponential, LogNormal, Gamma):
        assert seen[f"delay {dist.__name__}"] > 0, dist.__name__
    for path in (
        "hazard fired",
        "hazard re-checked at a guard's crossing",
        "hazard re-drawn: its hazard-ratio product changed",
        "waiting cases re-checked at a guard's crossing",
        "derived observable with an input never measured",
        "clinic visit deferred to a slot",
        "round of an open inpatient encounter",
        "round of an open icu encounter",
        *CALENDAR_CROSSINGS.values(),
    ):
        assert seen[path] > 0, path
    assert max(n for key, n in seen.items() if key.startswith("join ")) >= 2, "no visit joined by two modules"
    assert set(events["kind"]) == set(EVENT_KINDS)
    # eras (the fixture's calendar): before extended-release metformin's date a course starts (and stops)
    # under immediate-release metformin, and before the influenza vaccine's date for the patient's age the
    # earlier influenza vaccine is given
    era = events[events["code"].isin(["RxNorm|861007", "CVX|141"])]
    assert {"medication_start", "medication_stop", "immunization"} <= set(era["kind"])
    assert (events["module"] == "").any(), "no background death"
    # a tie: a visit ends as the module starts the next encounter; the end comes first
    t, kind, patient = (events[c].to_numpy() for c in ("t", "kind", "patient"))
    tie = (t[1:] == t[:-1]) & (patient[1:] == patient[:-1]) & (kind[:-1] == "encounter_end")
    assert (tie & (kind[1:] == "encounter_start")).any()
    # a module's death closes an encounter it had open since earlier
    deaths = events.loc[(events["kind"] == "death") & (events["module"] != ""), ["patient", "t"]]
    closed = events[events["kind"] == "encounter_end"].merge(deaths, on=["patient", "t"])
    starts = events[events["kind"] == "encounter_start"]
    closed = closed.merge(starts, on=["patient", "encounter"], suffixes=("", "_start"))
    assert (closed["t_start"] < closed["t"]).any()


# --- the shipped library -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "n"), [("population", 200), ("lifetime", 100)])
def test_kernel_matches_reference_on_shipped_library(mode: str, n: int, shipped_library: Library) -> None:
    sim = Simulator.build(RunConfig(seed=5, mode=mode), shipped_library)  # a LoadError fails the fixture
    index = np.arange(n, dtype=np.int64)
    kernel, stream = kernel_events(sim, index)
    assert_same_events(kernel, reference_events(sim, index, stream))


# --- regression: a hazard ratio whose guard another module makes flip ------------------------------

EXPOSURE = """
name: exposure
title: Exposure that starts at 10 years and then grows by 1 per year
sources: {a: "assumption: test"}
attributes:
  dose: {description: "Exposure, in units that grow by one per year from age 10."}
start: unexposed
states:
  unexposed:
    after: {distribution: exact, value: 10, unit: years, source: a}
    next: exposed
  exposed:
    set: [{attribute: dose, to: 0, per_year: 1, source: a}]
    terminal: true
"""
OUTCOME = """
name: outcome
title: A disease whose hazard is a million times higher once the dose reaches 5 (at 15 years)
sources: {a: "assumption: test"}
conditions:
  dz: {code: {system: SNOMED, code: "44054006", display: Diabetes mellitus type 2 (disorder)}}
start: at_risk
states:
  at_risk:
    hazards:
      - to: sick
        rate_per_year: 0.0001
        hazard_ratios: [{when: {attribute: dose, op: ">=", value: 5}, ratio: 1000000, source: a}]
        source: a
  sick:
    onset: [dz]
    terminal: true
"""


def test_hazard_ratio_follows_a_drift_set_by_another_module(tmp_path: Path) -> None:
    """DESIGN.md: when an attribute a pending hazard depends on changes, the hazard is re-drawn from that
    moment. Here the ratio applies from age 15 (rate 100 per year), so nearly everyone older than 16 has
    onset within weeks of turning 15."""
    rules = tmp_path / "rules"  # the fixture rules without their module (no wellness visits to mask it)
    shutil.copytree(FIXTURE / "rules", rules, ignore=shutil.ignore_patterns("vitals.yaml"))
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "exposure.yaml").write_text(EXPOSURE)
    (tmp_path / "modules" / "outcome.yaml").write_text(OUTCOME)
    sim = build(tmp_path / "modules", rules, "population", seed=1)
    index = np.arange(300, dtype=np.int64)
    events, patient, _, people, _, _, _ = sim.simulate(index)
    onset_age = np.full(len(index), np.nan)
    is_onset = events.kind == K_ONSET
    onset_age[patient[is_onset]] = (events.t[is_onset] - people.birth_t[patient[is_onset]]) / 365.25
    older = (sim.reference_t - people.birth_t) / 365.25 > 16
    assert older.sum() > 100
    assert np.mean((onset_age[older] >= 15) & (onset_age[older] < 15.2)) > 0.9


# --- a derived value that is a sum (the Friedewald LDL cholesterol) ------------------------------------

LIPIDS = """
name: lipids
title: Lipids measured at a yearly visit, LDL cholesterol calculated from them
sources: {a: "assumption: test"}
observables:
  total: {code: {system: LOINC, code: 2093-3, display: x}, category: laboratory, unit: mg/dL, mean: 196, sd: 38,
          persistence: 0.7, decimals: 0, source: a}
  hdl: {code: {system: LOINC, code: 2085-9, display: x}, category: laboratory, unit: mg/dL, mean: 52, sd: 14,
        decimals: 0, source: a}
  triglycerides: {code: {system: LOINC, code: 2571-8, display: x}, category: laboratory, unit: mg/dL, mean: 125,
                  sd: 65, limits: [30, 2000], decimals: 0, source: a}
  ldl: {code: {system: LOINC, code: 13457-7, display: x}, category: laboratory, unit: mg/dL,
        derived: {sum: {total: 1.0, hdl: -1.0, triglycerides: -0.2}}, limits: [0, 500], decimals: 0, source: a}
start: between
states:
  between:
    after: {distribution: exact, value: 1, unit: years, source: a}
    next: visit
  visit:
    encounter:
      class: ambulatory
      code: {system: SNOMED, code: "185345009", display: Encounter for symptom (procedure)}
      duration: {distribution: exact, value: 20, unit: minutes, source: a}
    observe: [total, hdl, triglycerides, ldl]
    next: between
"""


def test_a_sum_derived_value_matches_the_reference_and_its_terms(tmp_path: Path) -> None:
    """Derived.sum: the kernel and the reference compute the same LDL, which is the sum of its reported terms
    (rounded to the LDL's decimals, floored at its lower limit)."""
    rules = tmp_path / "rules"
    shutil.copytree(FIXTURE / "rules", rules, ignore=shutil.ignore_patterns("vitals.yaml"))
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "lipids.yaml").write_text(LIPIDS)
    sim = build(tmp_path / "modules", rules, "population", seed=2)
    index = np.arange(20, dtype=np.int64)
    kernel, stream = kernel_events(sim, index)
    assert_same_events(kernel, reference_events(sim, index, stream))
    readings = kernel[kernel["kind"] == "observation"].assign(code=lambda f: f["code"].str.split("|").str[1])
    obs = readings.pivot_table(index=["patient", "t"], columns="code", values="value")
    assert len(obs) > 100
    expected = np.floor(np.maximum(obs["2093-3"] - obs["2085-9"] - 0.2 * obs["2571-8"], 0.0) + 0.5)
    assert np.array_equal(obs["13457-7"].to_numpy(), expected.to_numpy())


# --- a scenario: tilted hazards, forced branches, the log likelihood ratio ---------------------------------

SCENARIO = """
patients: 60
require: [{condition: pneumonia}]
force:
  - {module: pneumonia_sepsis, state: cap_hospital_severity, to: cap_severe_icu}
  - {module: stroke, state: stroke_onset, to: haemorrhagic_emergency, window: {age: {min: 50}}}
tilt:
  - {module: pneumonia_sepsis, state: cap_susceptible, to: cap_onset, factor: 30, window: {age: {min: 40, max: 70}}}
  - {module: stroke, state: stroke_free, to: stroke_onset, factor: 10, window: {years_before_end: 5}}
  - {module: atrial_fibrillation, state: af_free, to: af_onset, factor: 3}
"""


@pytest.mark.slow
def test_kernel_matches_reference_under_a_scenario(tmp_path: Path, shipped_library: Library) -> None:
    """Tilted hazards (inside age windows, a window before the end, the whole life) and forced branches (in a
    window and always): the same events, and the same log likelihood ratio for each patient."""
    from simulator.scenario.output import attach
    from simulator.scenario.plan import load_plan

    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    sim = Simulator.build(RunConfig(seed=7), shipped_library)
    plan = load_plan(path, shipped_library, sim.model, sim.names)
    attach(sim, plan)
    index = np.arange(60, dtype=np.int64)
    kernel, stream = kernel_events(sim, index)
    log_weight = sim.simulate(index).log_weight
    people = sample(sim.people_tables, sim.config.seed, index, False)._replace(index=stream)
    t_end = np.full(len(index), sim.reference_t)
    ref = simulate(
        sim.library, sim.config.seed, people, t_end, PatientRun, plan.conditioning, plan.window_ages(people, t_end)
    )
    ref["patient"] = ref["patient"].map(dict(zip(stream.tolist(), index.tolist(), strict=True)))
    assert_same_events(kernel, ref)
    np.testing.assert_allclose(log_weight, ref.attrs["log_weight"], rtol=1e-9, atol=1e-9)
    assert (log_weight != 0).mean() > 0.5  # the tilts changed most lives
    forced = kernel[kernel["state"].isin(["cap_severe_icu", "haemorrhagic_emergency"])]
    assert len(forced) > 0
