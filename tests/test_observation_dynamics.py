"""Observations that evolve (Observable.correlation_days, measurement_sd, response_half_life_days): the
kernel's readings follow the documented process (docs/semantics.md, "Observations") and agree with the
reference's; on the shipped modules, adult heights stay stable and HbA1c keeps its pace (rules/audit.yaml)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_reference import assert_same_events, build, kernel_events, reference_events

import simulator

CORRELATION_DAYS = 30.0
HALF_LIFE_DAYS = 30.0

PROBE = f"""
name: probe
title: Readings on a fixed schedule from age 20
sources: {{a: "assumption: test"}}
attributes:
  level: {{description: "0, then a step to 1", affects: {{lagged: 1.0}}}}
observables:
  daily:      # only the visit component, correlated over {CORRELATION_DAYS} days
    code: {{system: LOINC, code: 8867-4, display: Heart rate}}
    category: vital-signs
    unit: /min
    mean: 0
    sd: 1
    correlation_days: {CORRELATION_DAYS}
    decimals: 6
    source: a
  noisy:      # only a measurement error
    code: {{system: LOINC, code: 9279-1, display: Respiratory rate}}
    category: vital-signs
    unit: /min
    mean: 0
    measurement_sd: 1
    decimals: 6
    source: a
  sparse:     # correlated over {CORRELATION_DAYS} days, read five years apart
    code: {{system: LOINC, code: 8310-5, display: Body temperature}}
    category: vital-signs
    unit: Cel
    mean: 0
    sd: 1
    correlation_days: {CORRELATION_DAYS}
    decimals: 6
    source: a
  lagged:     # the attribute through a lag, nothing random
    code: {{system: LOINC, code: 4548-4, display: Hemoglobin A1c/Hemoglobin.total in Blood}}
    category: laboratory
    unit: "%"
    mean: 0
    response_half_life_days: {HALF_LIFE_DAYS}
    decimals: 6
    source: a
start: born
states:
  born:
    after: {{distribution: exact, value: 20, unit: years, source: a}}
    next: first_day
  first_day:
    next: daily_visit
  daily_visit:
    encounter: &visit  # icu: an office visit waits for clinic hours, an emergency arrival for its hour of day
      class: icu
      code: {{system: SNOMED, code: "390906007", display: Follow-up encounter (procedure)}}
      duration: {{distribution: exact, value: 10, unit: minutes, source: a}}
    observe: [daily, noisy]
    after: {{distribution: exact, value: 1, unit: days, source: a}}
    next: daily_check
  daily_check:
    cases: [{{when: {{since: first_day, op: "<", value: 20, unit: days}}, to: daily_visit}}]
    otherwise: step
  step:       # a reading just as the attribute steps up: the lagged level has not moved yet
    encounter: *visit
    set: [{{attribute: level, to: 1, source: a}}]
    observe: [lagged]
    after: {{distribution: exact, value: {HALF_LIFE_DAYS}, unit: days, source: a}}
    next: one_half_life
  one_half_life:
    encounter: *visit
    observe: [lagged]
    after: {{distribution: exact, value: {HALF_LIFE_DAYS}, unit: days, source: a}}
    next: two_half_lives
  two_half_lives:
    encounter: *visit
    observe: [lagged]
    after: {{distribution: exact, value: 1, unit: days, source: a}}
    next: sparse_visit
  sparse_visit:
    encounter: *visit
    observe: [sparse]
    after: {{distribution: exact, value: 5, unit: years, source: a}}
    next: sparse_visit
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory, bare_rules: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kernel and reference events of 400 lifetimes of the probe module alone."""
    modules = tmp_path_factory.mktemp("probe") / "modules"
    modules.mkdir()
    (modules / "probe.yaml").write_text(PROBE)
    sim = build(modules, bare_rules, "lifetime", seed=2)
    index = np.arange(400, dtype=np.int64)
    kernel, stream = kernel_events(sim, index)
    return kernel, reference_events(sim, index, stream)


def readings(events: pd.DataFrame, loinc: str) -> pd.DataFrame:
    """One observable's readings, with the patient's previous reading of it beside each (NaN: none)."""
    rows = events[(events.kind == "observation") & (events.code == f"LOINC|{loinc}")].reset_index(drop=True)
    same = rows.patient.eq(rows.patient.shift())
    return rows.assign(previous=rows.value.shift().where(same), days=(rows.t - rows.t.shift()).where(same))


def test_kernel_and_reference_agree(probe: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    kernel, ref = probe
    assert (kernel.kind == "observation").sum() > 5000
    assert_same_events(kernel, ref)


def test_readings_a_day_apart_are_correlated_as_the_process_says(probe: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    daily = readings(probe[0], "8867-4").dropna(subset="previous")
    assert len(daily) > 5000 and np.allclose(daily.days, 1.0)
    assert abs(daily.value.std() - 1.0) < 0.05  # stationary: every reading keeps the variance sd^2
    expected = math.exp(-1.0 / CORRELATION_DAYS)  # 0.967
    assert abs(np.corrcoef(daily.previous, daily.value)[0, 1] - expected) < 0.01


def test_measurement_error_is_fresh_at_each_reading(probe: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    noisy = readings(probe[0], "9279-1").dropna(subset="previous")
    assert abs(noisy.value.std() - 1.0) < 0.05
    assert abs(np.corrcoef(noisy.previous, noisy.value)[0, 1]) < 0.05


def test_readings_years_apart_are_nearly_independent(probe: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    sparse = readings(probe[0], "8310-5").dropna(subset="previous")
    assert len(sparse) > 2000 and np.allclose(sparse.days, 5 * 365.25)
    assert abs(np.corrcoef(sparse.previous, sparse.value)[0, 1]) < 0.06  # exp(-1826 / 30): zero


def test_a_lagged_reading_reaches_half_a_step_in_one_half_life(probe: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    lagged = readings(probe[0], "4548-4")
    by_number = lagged.groupby(lagged.groupby("patient").cumcount()).value
    assert by_number.count().iloc[0] > 300
    assert np.allclose(by_number.get_group(0), 0.0)  # at the step itself
    assert np.allclose(by_number.get_group(1), 0.5)  # one half-life later
    assert np.allclose(by_number.get_group(2), 0.75)  # two


@pytest.mark.slow
def test_audit_finds_stable_heights_and_paced_hba1c(tmp_path: Path) -> None:
    """The shipped modules written and audited: no adult height moves beyond measurement error plus loss
    with age, and no HbA1c is repeated within 30 days or moves faster than red cells allow."""
    out = tmp_path / "run"
    simulator.generate(patients=1000, seed=3, out=out, formats="parquet")
    by_id = {rule.id: rule for rule in simulator.audit(out).rules}
    assert by_id["adult_height_stable"].checked > 5000 and by_id["adult_height_stable"].violations == 0
    assert by_id["hba1c_pace"].checked > 3000 and by_id["hba1c_pace"].violations == 0
    assert by_id["derived_bmi"].violations == 0
