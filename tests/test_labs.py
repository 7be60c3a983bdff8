"""Laboratory panels of acute encounters and of the preventive schedule (modules/laboratory.yaml,
modules/blood_count.yaml, rules/lab_panels.yaml): a basic metabolic panel and a complete blood count at every
emergency, inpatient and ICU encounter whose values follow the patient's state (ketoacidosis, kidney function,
the anaemia of kidney disease), the lipid panel with its Friedewald LDL and the statin's effect, the troponin
series of a myocardial infarction, warfarin's INR checks (modules/atrial_fibrillation.yaml), and their grouping
into DiagnosticReports."""

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
LEUKOCYTES, HAEMOGLOBIN, HAEMATOCRIT, PLATELETS = "6690-2", "718-7", "4544-3", "777-3"
CBC = {LEUKOCYTES, HAEMOGLOBIN, HAEMATOCRIT, PLATELETS}
EGFR = {"98979-8", "62238-1", "33914-3"}  # the eGFR of each era (CKD-EPI 2021, CKD-EPI 2009, MDRD)
WARFARIN, APIXABAN, INR = "855332", "1364445", "6301-6"
HYPOGLYCAEMIA, CAPILLARY_GLUCOSE, IV_GLUCOSE, TYPE1 = "302866003", "41653-7", "237653", "46635009"
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


def test_every_acute_encounter_draws_a_complete_blood_count(cohort: simulator.Population) -> None:
    """Leukocytes, haemoglobin, haematocrit and platelets at the start of every acute encounter of the automated
    count's era (1961, rules/calendar.yaml), the haematocrit 3 x the haemoglobin reported with it."""
    starts = _encounter_starts(cohort)
    acute = starts[starts["encounter_class"].isin(ACUTE) & (starts["time"] >= pd.Timestamp("1962-01-01", tz="UTC"))]
    at_start = _observations(cohort, CBC).merge(acute, on=["patient", "encounter", "time"])
    per_encounter = at_start.groupby(["patient", "encounter"])["code"].nunique()
    assert len(per_encounter) == len(acute) > 100 and (per_encounter == len(CBC)).all()
    pairs = at_start.pivot_table(index=["patient", "encounter"], columns="code", values="value")
    assert (pairs[HAEMATOCRIT] - 3 * pairs[HAEMOGLOBIN]).abs().max() <= 0.5 + 1e-9


def test_blood_count_follows_sex_age_and_kidney_function(cohort: simulator.Population) -> None:
    """Adult haemoglobin by sex around dallman1977's means, women's platelets above men's (segal2006), and the
    anaemia of CKD: about a quarter anaemic at an eGFR of 15-59 (kovesdy2023: 25.3%), few above 60."""
    counts = _observations(cohort, {HAEMOGLOBIN, PLATELETS})
    patients = cohort.patients.set_index("index")
    age = (counts["time"] - counts["patient"].map(patients["birth_time"])).dt.days / 365.25
    counts = counts[age.between(20, 59).to_numpy()].assign(sex=lambda f: f["patient"].map(patients["sex"]).astype(str))
    means = counts.groupby(["code", "sex"])["value"].mean()
    assert abs(means[HAEMOGLOBIN, "M"] - 15.5) < 0.5 and abs(means[HAEMOGLOBIN, "F"] - 14.0) < 0.5
    assert means[PLATELETS, "F"] > means[PLATELETS, "M"] + 5
    adults = _observations(cohort, {HAEMOGLOBIN})
    egfr = _observations(cohort, EGFR)[["patient", "time", "value"]].rename(columns={"value": "egfr"})
    with_egfr = adults.merge(egfr, on=["patient", "time"]).assign(
        sex=lambda f: f["patient"].map(patients["sex"]).astype(str)
    )
    anaemic = with_egfr["value"] < np.where(with_egfr["sex"] == "M", 13.0, 12.0)  # kdigo2012_anaemia
    reduced = with_egfr["egfr"].between(15, 59.99)
    assert reduced.sum() > 50, "too few counts at a reduced eGFR to judge"
    normal = anaemic[with_egfr["egfr"] >= 60].mean()
    assert 0.08 < anaemic[reduced].mean() < 0.40 and normal < 0.06 and anaemic[reduced].mean() > 3 * normal


def test_warfarin_before_apixaban_with_inr_checks(cohort: simulator.Population) -> None:
    """Anticoagulation of atrial fibrillation starts as warfarin before 2012 and as apixaban from 2012; a warfarin
    course has its INR checked (weekly at first, then every 4 weeks: january2014) around the 2.0-3.0 target in
    nelson2015's shares; nobody else has an INR."""
    events = cohort.events
    starts = events[events["kind"] == "medication_start"].assign(code=lambda f: f["code"].astype(str))
    era = pd.Timestamp("2012-01-01", tz="UTC")
    warfarin, apixaban = starts[starts["code"] == WARFARIN], starts[starts["code"] == APIXABAN]
    assert len(warfarin) >= 5 and len(apixaban) >= 5
    assert (warfarin["time"] < era).all() and (apixaban["time"] >= era).all()
    inr = _observations(cohort, {INR})
    inr_era = set(warfarin[warfarin["time"] >= pd.Timestamp("1983-01-01", tz="UTC")]["patient"])  # who1983
    assert set(inr["patient"]) <= set(warfarin["patient"]) and len(inr_era & set(inr["patient"])) >= 0.8 * len(inr_era)
    assert 0.12 < (inr["value"] < 2.0).mean() < 0.34 and 0.07 < (inr["value"] > 3.0).mean() < 0.26
    gaps = inr.sort_values("time").groupby("patient")["time"].diff().dropna().dt.days
    # a check is an ambulatory visit, booked at the next clinic slot (rules/providers.yaml clinic_hours)
    assert gaps.between(7, 35).all() and gaps.between(28, 35).mean() > 0.5


def test_severe_hypoglycaemia_of_insulin_treated_diabetes(cohort: simulator.Population) -> None:
    """An emergency visit with a capillary glucose around elwen2015's (mean 32-35 mg/dL, mostly below 54),
    intravenous glucose and a normal re-check, only in type 1 diabetes or on insulin (modules/hypoglycaemia.yaml)."""
    events = cohort.events.assign(code=lambda f: f["code"].astype(str))
    diagnosed = events[(events["kind"] == "condition_diagnosis") & (events["code"] == HYPOGLYCAEMIA)]
    assert len(diagnosed) >= 10
    insulin = events[(events["kind"] == "medication_start") & events["display"].str.contains("insulin")]
    type1 = events[(events["kind"] == "condition_diagnosis") & (events["code"] == TYPE1)]
    assert set(diagnosed["patient"]) <= set(insulin["patient"]) | set(type1["patient"])
    visits = diagnosed[["patient", "encounter"]].merge(_encounter_starts(cohort), on=["patient", "encounter"])
    assert len(visits) == len(diagnosed) and (visits["encounter_class"].astype(str) == "emergency").all()
    glucose = _observations(cohort, {CAPILLARY_GLUCOSE}).merge(
        diagnosed[["patient", "encounter", "time"]], on=["patient", "encounter"], suffixes=("", "_visit")
    )
    at_arrival = glucose[glucose["time"] == glucose["time_visit"]]["value"]
    rechecked = glucose[glucose["time"] > glucose["time_visit"]]["value"]
    assert 25 < at_arrival.mean() < 42 and (at_arrival < 54).mean() > 0.85 and rechecked.min() >= 54
    given = events[(events["kind"] == "medication_start") & (events["code"] == IV_GLUCOSE)]
    assert len(given.merge(diagnosed, on=["patient", "encounter", "time"])) == len(diagnosed)


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
    seen = {"51990-0": 0, "24331-1": 0, "58410-2": 0}
    for report in reports["DiagnosticReport"]:
        code = report["code"]["coding"][0]["code"]
        if code not in seen:
            continue
        seen[code] += 1
        results = [labs[r["reference"]] for r in report["result"]]
        result_codes = {r["code"]["coding"][0]["code"] for r in results}
        assert result_codes <= panels[code]
        # before automated counting (April 1961, rules/calendar.yaml) a blood count reports its haemoglobin only
        counted = code != "58410-2" or report["effectiveDateTime"] >= "1961-04"
        assert len(results) >= ({"51990-0": 8, "24331-1": 3, "58410-2": 4}[code] if counted else 1)
        assert {r["effectiveDateTime"] for r in results} == {report["effectiveDateTime"]}
    assert seen["51990-0"] > 10 and seen["24331-1"] > 10 and seen["58410-2"] > 10
