"""ICU and ward physiology (issue 30 part 6): vital signs are correlated trajectories that follow the clinical
state, not independent draws around a fixed mean.

On a lifetime cohort of the shipped modules: hourly ICU readings are autocorrelated; a hospitalised pneumonia's
temperature and heart rate fall from admission to discharge (antibiotics, halm1998); pulse oximetry rises after
oxygen and the mean arterial pressure after norepinephrine (evans2021); every reading stays inside its limits.
Unit tests: a change with a response half-life reaches the readings first order, and the loader refuses one
on an attribute whose observable lags its effects itself.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simulator
from simulator.model.library import Library
from simulator.model.loading import load_library
from simulator.model.parsing import LoadError

HOUR = pd.Timedelta(hours=1)
SPO2 = "Oxygen saturation in Arterial blood by Pulse oximetry"
OXYGEN = "57485005"


@pytest.fixture(scope="module")
def lifetimes() -> simulator.Population:
    """Lifetimes, so that enough patients reach an ICU stay (about one in 60 lives)."""
    return simulator.generate(patients=3000, seed=21, mode="lifetime")


@pytest.fixture(scope="module")
def readings(lifetimes: simulator.Population) -> pd.DataFrame:
    events = lifetimes.events
    return events[events["kind"] == "observation"]


def _stays(events: pd.DataFrame, encounter_class: str) -> pd.DataFrame:
    starts = events[(events["kind"] == "encounter_start") & (events["encounter_class"] == encounter_class)]
    return starts[["patient", "encounter"]]


def _lag1_within_stay(rows: pd.DataFrame) -> float:
    """Lag-1 autocorrelation of hourly readings, each stay's own mean removed (pooled over stays)."""
    rows = rows.sort_values(["patient", "encounter", "time"])
    stay = rows.groupby(["patient", "encounter"])
    rows = rows.assign(previous=stay["value"].shift(1), gap=stay["time"].diff())
    rows = rows[(rows["gap"] - HOUR).abs() < pd.Timedelta(minutes=5)]
    stay = rows.groupby(["patient", "encounter"])
    x = rows["value"] - stay["value"].transform("mean")
    y = rows["previous"] - stay["previous"].transform("mean")
    return float(np.corrcoef(x, y)[0, 1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("display", "least"),
    [("Heart rate", 0.6), ("Respiratory rate", 0.5), (SPO2, 0.4), ("Body temperature", 0.5)],
)
def test_hourly_icu_readings_are_autocorrelated(lifetimes, readings, display: str, least: float) -> None:
    """correlation_days 0.25 gives exp(-1/6) = 0.85 to the visit component; rounding and the patient's fixed
    part (removed with the stay's mean) lower the within-stay figure."""
    icu = readings.merge(_stays(lifetimes.events, "icu"), on=["patient", "encounter"])
    rows = icu[icu["display"] == display]
    assert rows[["patient", "encounter"]].drop_duplicates().shape[0] >= 15
    assert _lag1_within_stay(rows) > least


@pytest.mark.slow
def test_pneumonia_temperature_and_heart_rate_fall_from_admission_to_discharge(lifetimes, readings) -> None:
    """First reading of the emergency visit against the last reading of the hospital stay (ward), per episode
    (the readings between the emergency visit and the end of the ward stay are the stay's)."""
    events = lifetimes.events
    cap = readings[readings["module"].isin(["pneumonia_sepsis", "vital_signs"])]
    ed = events[
        (events["module"] == "pneumonia_sepsis")
        & (events["kind"] == "encounter_start")
        & (events["encounter_class"] == "emergency")
    ][["patient", "time"]].rename(columns={"time": "ed_t"})
    wards = events[
        (events["module"] == "pneumonia_sepsis")
        & (events["kind"] == "encounter_end")
        & (events["encounter_class"] == "inpatient")
    ][["patient", "time"]].rename(columns={"time": "end_t"})
    episodes = pd.merge_asof(
        wards.sort_values("end_t"), ed.sort_values("ed_t"), left_on="end_t", right_on="ed_t", by="patient"
    )
    assert len(episodes) >= 40
    for display, drop in (("Body temperature", 0.5), ("Heart rate", 8.0)):
        rows = cap[cap["display"] == display].merge(episodes, on="patient")
        rows = rows[(rows["time"] >= rows["ed_t"]) & (rows["time"] <= rows["end_t"])].sort_values("time")
        course = rows.groupby(["patient", "ed_t"])["value"]
        first, last = course.first(), course.last()
        assert (first - last).mean() > drop, display


@pytest.mark.slow
def test_spo2_rises_after_oxygen_and_pressure_after_norepinephrine(lifetimes, readings) -> None:
    events = lifetimes.events
    oxygen = events[(events["kind"] == "procedure") & (events["code"] == OXYGEN)][["patient", "time"]]
    oxygen = oxygen.rename(columns={"time": "o2_t"})
    spo2 = readings[readings["display"] == SPO2].merge(oxygen, on="patient")
    hours = (spo2["time"] - spo2["o2_t"]) / HOUR
    before = spo2[(hours > -0.1) & (hours <= 0)].groupby("patient")["value"].mean()  # the triage reading
    after = spo2[(hours > 1) & (hours < 6)].groupby("patient")["value"].mean()
    rise = (after - before.reindex(after.index)).dropna()
    assert len(rise) >= 15 and rise.mean() > 2  # +4 from oxygen (assumption_oxygen_effect), less rounding

    started = events[(events["kind"] == "medication_start") & events["display"].str.contains("norepinephrine")]
    pressure = readings[readings["display"].isin(["Systolic blood pressure", "Diastolic blood pressure"])]
    pressure = pressure.merge(started[["patient", "time"]].rename(columns={"time": "ne_t"}), on="patient")
    pressure = pressure.assign(hours=(pressure["time"] - pressure["ne_t"]) / HOUR)
    pressure = pressure[(pressure["hours"] > -3) & (pressure["hours"] < 12)]
    table = pressure.pivot_table(index=["patient", "time", "hours"], columns="display", values="value").dropna()
    table = table.reset_index()
    mean_arterial = (table["Systolic blood pressure"] + 2 * table["Diastolic blood pressure"]) / 3
    table = table.assign(map=mean_arterial)
    at_start = table[table["hours"] <= 0].groupby("patient")["map"].mean()
    later = table[table["hours"] > 6].groupby("patient")["map"].mean()
    rise = (later - at_start.reindex(later.index)).dropna()
    assert len(rise) >= 5 and rise.mean() > 5


def _arrival_and_discharge(events: pd.DataFrame, readings: pd.DataFrame, module: str, display: str) -> pd.DataFrame:
    """Per admitted episode of `module`: the first reading of `display` at its emergency visit (arrival) and the
    last one of the ward stay that follows it within a day (before discharge or death)."""
    starts = events[(events["kind"] == "encounter_start") & (events["module"] == module)]
    ed = starts[starts["encounter_class"] == "emergency"][["patient", "encounter", "time"]]
    ward = starts[starts["encounter_class"] == "inpatient"][["patient", "encounter", "time"]]
    episodes = pd.merge_asof(
        ward.sort_values("time"),
        ed.rename(columns={"encounter": "ed_encounter", "time": "ed_t"}).sort_values("ed_t"),
        left_on="time",
        right_on="ed_t",
        by="patient",
    ).dropna(subset=["ed_t"])
    episodes = episodes[episodes["time"] - episodes["ed_t"] < pd.Timedelta(days=1)]
    rows = readings[readings["display"] == display].sort_values("time")
    arrival = rows.groupby(["patient", "encounter"])["value"].first().rename("arrival")
    last = rows.groupby(["patient", "encounter"])["value"].last().rename("discharge")
    episodes = episodes.join(arrival, on=["patient", "ed_encounter"]).join(last, on=["patient", "encounter"])
    return episodes.dropna(subset=["arrival", "discharge"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "display", "fall"),
    [
        # The shifts of each module's presenting attribute (its sources: registry or cohort means at arrival),
        # times the share of them gone by the last ward reading (response half-lives), less the noise of a
        # few dozen episodes.
        ("coronary_heart_disease", "Systolic blood pressure", 4.0),
        ("heart_failure", "Respiratory rate", 2.0),
        ("heart_failure", SPO2, -0.5),
        ("copd", "Heart rate", 5.0),
        ("copd", "Respiratory rate", 1.5),
        ("copd", SPO2, -0.5),
        ("asthma", "Heart rate", 5.0),
        ("stroke", "Systolic blood pressure", 8.0),
    ],
)
def test_acute_vital_signs_recover_from_arrival_to_discharge(lifetimes, readings, module, display, fall) -> None:
    """Issue 30 part 1: the vital signs of myocardial infarction, heart failure decompensation, COPD and asthma
    exacerbations and stroke follow the presenting state at arrival and recover over the ward rounds; a
    negative `fall` is a rise (pulse oximetry)."""
    episodes = _arrival_and_discharge(lifetimes.events, readings, module, display)
    assert len(episodes) >= 15, module
    change = (episodes["arrival"] - episodes["discharge"]).mean()
    assert change > fall if fall > 0 else change < fall, (module, display, change)


@pytest.mark.slow
def test_acute_readings_stay_inside_their_limits(lifetimes, readings, shipped_library: Library) -> None:
    limits = {o.code.display: o.limits for m in shipped_library.modules for o in m.observables.values() if o.limits}
    stays = [_stays(lifetimes.events, encounter_class) for encounter_class in ("emergency", "inpatient", "icu")]
    acute = readings.merge(pd.concat(stays), on=["patient", "encounter"])
    assert len(acute) > 10_000
    for display, (low, high) in limits.items():
        values = acute.loc[acute["display"] == display, "value"]
        assert values.between(low, high).all(), display


MODULE = """
name: lagged
title: Lagged
version: 1
description: An illness whose effect on a reading builds up with a half-life.
sources: {{a: assumption}}
attributes:
  ill: {{description: illness, affects: {{level: 10}}}}
observables:
  level:
    code: {{system: LOINC, code: 8867-4, display: Heart rate}}
    category: vital-signs
    unit: /min
    mean: 50
    limits: [0, 200]
    {observable_lag}
    source: a
start: onset
states:
  onset:
    set: [{{attribute: ill, to: 1, response_half_life_days: 1, source: a}}]
    next: first
  first:
    after: {{distribution: exact, value: 1, unit: days, source: a}}
    encounter: {{class: ambulatory, code: {VISIT}, duration: {THIRTY_MINUTES}}}
    observe: [level]
    next: second
  second:
    after: {{distribution: exact, value: 1, unit: days, source: a}}
    encounter: {{class: ambulatory, code: {VISIT}, duration: {THIRTY_MINUTES}}}
    observe: [level]
    next: done
  done:
    terminal: true
"""


VISIT = "{system: SNOMED, code: 185345009, display: Encounter for symptom (procedure)}"
THIRTY_MINUTES = "{distribution: exact, value: 30, unit: minutes, source: a}"


def _write(tmp_path: Path, observable_lag: str = "") -> Path:
    path = tmp_path / "lagged.yaml"
    path.write_text(
        textwrap.dedent(MODULE.format(observable_lag=observable_lag, VISIT=VISIT, THIRTY_MINUTES=THIRTY_MINUTES))
    )
    return path


def test_a_change_with_a_response_half_life_reaches_readings_first_order(tmp_path: Path, bare_rules: Path) -> None:
    """No spread: the reading's distance to its target (mean 50 + 10) halves every day between two readings."""
    population = simulator.generate(
        patients=5, seed=1, mode="lifetime", modules_dir=_write(tmp_path).parent, rules_dir=bare_rules
    )
    values = population.events.query("kind == 'observation' and module == 'lagged'").sort_values("time")
    pairs = values.groupby("patient").agg(t1=("time", "first"), t2=("time", "last"), v1=("value", "first"))
    pairs = pairs.join(values.groupby("patient")["value"].last().rename("v2"))
    days = (pairs["t2"] - pairs["t1"]) / pd.Timedelta(days=1)
    assert len(pairs) == 5 and (days > 0.5).all() and (pairs["v2"] > pairs["v1"]).all()
    assert np.allclose(60 - pairs["v2"], (60 - pairs["v1"]) * 0.5**days, atol=0.1)


def test_a_lagged_change_on_a_lagging_observable_is_refused(tmp_path: Path, bare_rules: Path) -> None:
    with pytest.raises(LoadError, match="lag"):
        load_library([_write(tmp_path, "response_half_life_days: 2")], bare_rules)
