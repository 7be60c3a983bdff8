"""Laboratory panels of acute encounters and of the preventive schedule (modules/laboratory.yaml,
rules/lab_panels.yaml): a basic metabolic panel at every emergency, inpatient and ICU encounter whose values
follow the patient's state (ketoacidosis, kidney function), the lipid panel with its Friedewald LDL and the
statin's effect, the troponin series of a myocardial infarction, and their grouping into DiagnosticReports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simulator
from simulator.model.library import Library
from tests.conftest import read_ndjson

ACUTE = ("emergency", "inpatient", "icu")
BMP = {"2951-2", "2823-3", "2075-0", "2028-9", "3094-0", "2160-0", "2345-7", "17861-6"}
CO2, GLUCOSE, POTASSIUM, BUN, CREATININE = "2028-9", "2345-7", "2823-3", "3094-0", "2160-0"
BETA_HYDROXYBUTYRATE = "53060-9"
KETOACIDOSIS = "420270002"
TOTAL, HDL, TRIGLYCERIDES, LDL = "2093-3", "2085-9", "2571-8", "13457-7"
TROPONIN = {"89579-7", "10839-9"}  # high-sensitivity troponin I and the conventional assay before it
INFARCTION = "22298006"
STATIN = "617311"  # atorvastatin 40 mg


@pytest.fixture(scope="module")
def cohort() -> simulator.Population:
    """Enough patients for a few dozen infarctions and ketoacidosis presentations."""
    return simulator.generate(patients=6000, seed=17, chunk_size=3000)


def _observations(population: simulator.Population, codes: set[str]) -> pd.DataFrame:
    events = population.events
    obs = events[(events["kind"] == "observation") & events["code"].isin(codes)]
    return obs[["patient", "time", "code", "value", "encounter"]].assign(code=lambda f: f["code"].astype(str))


def _encounter_starts(population: simulator.Population) -> pd.DataFrame:
    events = population.events
    starts = events[events["kind"] == "encounter_start"]
    return starts[["patient", "encounter", "time", "encounter_class", "reason"]]


def test_every_acute_encounter_draws_a_basic_metabolic_panel(cohort: simulator.Population) -> None:
    starts = _encounter_starts(cohort)
    acute = starts[starts["encounter_class"].isin(ACUTE)]
    assert len(acute) > 100 and set(acute["encounter_class"].astype(str)) == set(ACUTE)
    at_start = _observations(cohort, BMP).merge(acute, on=["patient", "encounter", "time"])
    per_encounter = at_start.groupby(["patient", "encounter"])["code"].nunique()
    assert len(per_encounter) == len(acute)
    assert (per_encounter == len(BMP)).all()
    # once at the start, not on the ward rounds that repeat the vital signs
    during = _observations(cohort, {"2951-2"}).merge(acute, on=["patient", "encounter"], suffixes=("", "_start"))
    assert (during["time"] == during["time_start"]).all()


def test_basic_metabolic_panel_values_follow_state(cohort: simulator.Population) -> None:
    """Reference values outside disease; ketoacidosis lowers the total CO2 and raises glucose and potassium;
    urea nitrogen follows the creatinine it is computed from."""
    starts = _encounter_starts(cohort)
    panel = _observations(cohort, BMP | {BETA_HYDROXYBUTYRATE}).merge(
        starts[starts["encounter_class"].isin(ACUTE)], on=["patient", "encounter", "time"]
    )
    # the emergency visit and the admission of ketoacidosis, both before it resolves
    is_dka = panel["reason"].astype(str) == "t1d_ketoacidosis"
    in_dka, other = panel[is_dka], panel[~is_dka]
    assert in_dka["patient"].nunique() >= 5, "too few ketoacidosis presentations to judge"
    value = lambda frame, code: frame.loc[frame["code"] == code, "value"]  # noqa: E731
    # kitabchi2009: bicarbonate <= 18 mmol/L; umpierrez2024: beta-hydroxybutyrate >= 3.0 mmol/L
    assert (value(in_dka, CO2) < 18).all() and value(other, CO2).between(18, 34).mean() > 0.99
    assert (value(in_dka, BETA_HYDROXYBUTYRATE) >= 3.0).all()
    assert (value(in_dka, GLUCOSE) > 250).all() and value(other, GLUCOSE).median() < 140
    assert value(in_dka, POTASSIUM).mean() > value(other, POTASSIUM).mean() + 0.3
    sodium = value(other, "2951-2")
    assert abs(sodium.mean() - 140) < 1 and sodium.between(130, 150).mean() > 0.99
    # urea nitrogen is 15 x the creatinine reported with it (laboratory.yaml), within rounding (below its
    # upper limit, 250 mg/dL)
    pairs = panel[panel["code"].isin({BUN, CREATININE})].pivot_table(
        index=["patient", "encounter"], columns="code", values="value"
    )
    unclipped = pairs[pairs[CREATININE] < 16]
    assert (unclipped[BUN] - 15 * unclipped[CREATININE]).abs().max() <= 0.5 + 15 * 0.005 + 1e-9
    assert pairs[CREATININE].max() > 2 * pairs[CREATININE].median()  # kidney disease shows in it


def test_lipid_panel_on_the_preventive_schedule(cohort: simulator.Population) -> None:
    """From 40 at wellness visits, the calculated LDL equal to the Friedewald equation of the reported lipids,
    and lower on a statin."""
    lipids = _observations(cohort, {TOTAL, HDL, TRIGLYCERIDES, LDL})
    assert lipids["patient"].nunique() > 500
    birth = cohort.patients.set_index("index")["birth_time"]
    age = (lipids["time"] - lipids["patient"].map(birth)).dt.days / 365.25
    assert age.min() >= 40
    starts = _encounter_starts(cohort)
    visits = lipids.merge(starts, on=["patient", "encounter"], suffixes=("", "_start"))
    assert len(visits) == len(lipids) and (visits["encounter_class"] == "wellness").all()
    panel = lipids.pivot_table(index=["patient", "time"], columns="code", values="value")
    # the calculated LDL from the Friedewald equation's publication on (June 1972, rules/calendar.yaml)
    friedewald_era = panel.index.get_level_values("time") >= pd.Timestamp("1972-06-01", tz="UTC")
    assert panel[[TOTAL, HDL, TRIGLYCERIDES]].notna().all().all()
    assert panel.loc[friedewald_era, LDL].notna().all() and panel.loc[~friedewald_era, LDL].isna().all()
    panel = panel[friedewald_era]
    friedewald = (panel[TOTAL] - panel[HDL] - panel[TRIGLYCERIDES] / 5).clip(lower=0)
    assert (panel[LDL] - friedewald).abs().max() <= 0.5 + 1e-9
    # a statin taken at the panel lowers the LDL by about 58 mg/dL (assumption_statin_effect)
    events = cohort.events
    courses = events[events["kind"].isin(["medication_start", "medication_stop"]) & (events["code"] == STATIN)]
    step = np.where(courses["kind"] == "medication_start", 1, -1)
    courses = courses[["patient", "time"]].assign(step=step).sort_values("time", kind="stable")
    courses["courses"] = courses.groupby("patient")["step"].cumsum()
    tested = panel.reset_index()[["patient", "time"]].reset_index().sort_values("time", kind="stable")
    current = pd.merge_asof(tested, courses, on="time", by="patient", direction="backward")
    taking = pd.Series(current.set_index("index")["courses"].fillna(0).sort_index().to_numpy() > 0, panel.index)
    on_statin, off_statin = panel.loc[taking, LDL], panel.loc[~taking, LDL]
    assert len(on_statin) > 30
    assert 40 < off_statin.mean() - on_statin.mean() < 80
    # off a statin, the NHANES means the module draws around (carroll2012)
    assert abs(panel.loc[~taking, TOTAL].mean() - 196) < 6 and abs(panel.loc[~taking, HDL].mean() - 52.5) < 3


def test_troponin_rises_over_the_first_day_of_an_infarction(cohort: simulator.Population) -> None:
    """At arrival, 2 hours later (the ESC 0h/2h algorithm) and near the peak 12 hours after arrival: a rise
    each time, above the rule-in change, and nothing lower within the first day."""
    troponin = _observations(cohort, TROPONIN)
    starts = _encounter_starts(cohort)
    arrivals = starts[
        (starts["encounter_class"] == "emergency") & (starts["reason"].astype(str) == "myocardial_infarction")
    ]
    series = troponin.merge(arrivals[["patient", "time"]].rename(columns={"time": "arrival"}), on="patient")
    since = series["time"] - series["arrival"]
    series = series[(since >= pd.Timedelta(0)) & (since <= pd.Timedelta(hours=24))].assign(since=since)
    per_infarction = series.groupby(["patient", "arrival"])
    assert per_infarction.ngroups >= 10, "too few infarctions in the troponin era"
    hours = per_infarction["since"].apply(lambda s: tuple(round(h) for h in s.dt.total_seconds() / 3600))
    assert (hours == (0, 2, 12)).mean() > 0.9  # the rest: the record ended (reference date) before a sample
    for _, group in per_infarction:
        values = group.sort_values("time")["value"].to_numpy()
        assert (np.diff(values) > 0).all(), values
    first_two = per_infarction["value"].apply(lambda v: v.iloc[1] - v.iloc[0] if len(v) > 1 else np.nan).dropna()
    assert (first_two >= 15).mean() > 0.95  # collet2021's 2-hour rule-in change (Architect hs-cTnI)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("labs") / "out"
    simulator.generate(patients=120, seed=4, out=out, formats="ndjson")
    return read_ndjson(Path(out))


def test_panels_are_one_diagnostic_report_each(reports: dict[str, list[dict]], shipped_library: Library) -> None:
    """A basic metabolic panel and a lipid panel are each one DiagnosticReport coded with the panel, holding
    their results of that encounter and time."""
    panels = {p.code.code: set(p.members) for p in shipped_library.lab_panels.panels}
    labs = {f"Observation/{o['id']}": o for o in reports["Observation"]}
    seen = {"51990-0": 0, "24331-1": 0}
    for report in reports["DiagnosticReport"]:
        code = report["code"]["coding"][0]["code"]
        if code not in seen:
            continue
        seen[code] += 1
        results = [labs[r["reference"]] for r in report["result"]]
        result_codes = {r["code"]["coding"][0]["code"] for r in results}
        assert result_codes <= panels[code]
        assert len(results) >= (8 if code == "51990-0" else 3)
        assert {r["effectiveDateTime"] for r in results} == {report["effectiveDateTime"]}
    assert seen["51990-0"] > 10 and seen["24331-1"] > 10
