"""Clinical coherence of the type 1 diabetes module (modules/type1_diabetes.yaml) on a cohort of the
shipped modules, and its prevalence against the calibration target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import simulator
from simulator.fit.statistics import wilson
from simulator.fit.validation import Validation

pytestmark = pytest.mark.slow  # statistics of 8,000- and 3 x 12,000-patient cohorts of the shipped modules
REPO = Path(__file__).resolve().parents[1]
REFERENCE = pd.Timestamp("2024-07-01", tz="UTC")
T1D, T2D, PREDIABETES = "46635009", "44054006", "714628002"
KETOACIDOSIS = "420270002"
T1D_INSULINS = {"847230", "865098", "311028", "311036"}  # glargine pen, lispro; before them NPH, regular (1982)
BASAL = {"847230": "2000-01-01", "311028": "1982-10-01"}  # the basal insulin and its era's start
MEALTIME = {"865098": "1996-06-01", "311036": "1982-10-01"}
HBA1C = "4548-4"
IV_INSULIN = "311034"  # insulin regular, human, for the ketoacidosis infusion (rules/calendar.yaml: from 1982)
# The presentation labs of ketoacidosis and the ADA consensus criteria they meet (kitabchi2009 in the module).
DKA_CRITERIA = {"2345-7": (">", 250.0), "2744-1": ("<", 7.30), "1963-8": ("<", 18.0)}
POTASSIUM = "2823-3"


@pytest.fixture(scope="module")
def cohort() -> simulator.Population:
    """A cross-section large enough for a few dozen patients with type 1 diabetes."""
    return simulator.generate(patients=8000, seed=7)


def first_time(events: pd.DataFrame, kind: str, codes: set[str]) -> pd.Series:
    """Per patient, the time of the first event of `kind` with one of `codes`."""
    hits = events[(events.kind == kind) & events.code.isin(codes)]
    return hits.groupby("patient").time.min()


def test_insulin_only_after_a_type1_diagnosis(cohort: simulator.Population) -> None:
    ev = cohort.events
    starts = ev[(ev.kind == "medication_start") & ev.code.isin(T1D_INSULINS)]
    diagnosed = first_time(ev, "condition_diagnosis", {T1D})
    assert len(diagnosed) >= 20
    when = starts.patient.map(diagnosed)
    assert when.notna().all(), "type 1 insulin for a patient never diagnosed with type 1 diabetes"
    assert (starts.time >= when).all(), "insulin before the diagnosis"
    # Basal and bolus insulin, both for every patient diagnosed since human insulin (October 1982): NPH and
    # regular human insulin before the analogues (rules/calendar.yaml `before`); animal insulin before it has no
    # RxNorm code, so no course starts before 1982.
    per_patient = starts.groupby("patient").code.nunique()
    human_era = diagnosed[diagnosed >= pd.Timestamp("1983-01-01", tz="UTC")]
    assert len(human_era) >= 10 and (per_patient.reindex(human_era.index) == 2).all()
    assert (starts.time >= pd.Timestamp("1982-10-01", tz="UTC")).all()


@pytest.mark.parametrize("products", [BASAL, MEALTIME], ids=["basal", "mealtime"])
def test_insulin_of_its_era(cohort: simulator.Population, products: dict[str, str]) -> None:
    """Each insulin course starts under the product of its date: the analogue from its approval (glargine 2000,
    lispro 1996), human NPH or regular insulin from 1982 to then."""
    ev = cohort.events
    starts = ev[(ev.kind == "medication_start") & ev.code.isin(products)].assign(code=lambda d: d.code.astype(str))
    analogue, human = products
    analogue_from = pd.Timestamp(products[analogue], tz="UTC")
    assert (starts[starts.code == analogue].time >= analogue_from).all()
    assert (starts[starts.code == human].time < analogue_from).all()
    assert (starts.code == human).sum() >= 3, "no human insulin course before the analogue"


def test_every_type1_patient_alive_in_the_human_insulin_era_has_insulin(cohort: simulator.Population) -> None:
    """Diagnosed before 1983 or after, a patient with type 1 diabetes has a basal-bolus course once human
    insulin exists (a patient diagnosed earlier gets it at the first follow-up visit of its era)."""
    ev = cohort.events
    diagnosed = first_time(ev, "condition_diagnosis", {T1D})
    deaths = cohort.patients.set_index("index").death_time.reindex(diagnosed.index)
    era = pd.Timestamp("1983-01-01", tz="UTC")
    # Alive for a year after the later of the diagnosis and the era's start (time for a follow-up visit).
    due = diagnosed.where(diagnosed > era, era) + pd.Timedelta(days=365)
    alive = diagnosed[(deaths.isna() | (deaths > due)) & (due < REFERENCE)]
    insulin = first_time(ev, "medication_start", set(BASAL))
    assert len(alive) >= 20
    assert alive.index.isin(insulin.index).mean() >= 0.98
    early = alive[alive < era]
    if len(early):
        assert (insulin.reindex(early.index) >= era - pd.Timedelta(days=92)).all()


def test_diagnosis_follows_onset_within_weeks(cohort: simulator.Population) -> None:
    ev = cohort.events
    onset = first_time(ev, "condition_onset", {T1D})
    diagnosed = first_time(ev, "condition_diagnosis", {T1D})
    lag = (diagnosed - onset.reindex(diagnosed.index)).dt.days
    assert lag.notna().all(), "diagnosis without onset"
    # 2-6 weeks, then the ambulatory visit waits for the next clinic slot (up to about 3 days over a weekend).
    assert (lag >= 14).all() and (lag <= 46).all(), "diagnosis outside 2-6 weeks of symptoms"
    # Onset within the last 6 weeks is the only reason for an undiagnosed case at the reference date.
    undiagnosed = onset[~onset.index.isin(diagnosed.index)]
    assert (undiagnosed > REFERENCE - pd.Timedelta(weeks=6)).all()


def test_onset_mostly_in_childhood_and_never_on_top_of_type2(cohort: simulator.Population) -> None:
    ev = cohort.events
    onset = first_time(ev, "condition_onset", {T1D})
    birth = cohort.patients.set_index("index").birth_time
    age_at_onset = (onset - birth.reindex(onset.index)).dt.days / 365.25
    assert (age_at_onset < 20).mean() > 0.5  # SEARCH youth incidence dominates (divers2020, rogers2017)
    # Per condition, the last onset or resolution before the type 1 onset must not be an onset.
    type2_side = ev[ev.kind.isin(["condition_onset", "condition_resolved"]) & ev.code.isin({T2D, PREDIABETES})]
    before = type2_side[type2_side.time < type2_side.patient.map(onset)]
    last = before.sort_values("time").groupby(["patient", "code"], observed=True).kind.last()
    assert not (last == "condition_onset").any(), "type 1 onset while type 2 diabetes or prediabetes was active"


def test_ketoacidosis_presents_in_the_emergency_department(cohort: simulator.Population) -> None:
    ev = cohort.events
    dka = ev[(ev.kind == "condition_diagnosis") & (ev.code == KETOACIDOSIS)]
    diagnosed = first_time(ev, "condition_diagnosis", {T1D})
    assert 0.1 < dka.patient.nunique() / len(diagnosed) < 0.7  # jensen2021 youth 0.38, adults 0.25 (assumption)
    visits = ev[ev.kind == "encounter_start"].set_index(["patient", "encounter"]).encounter_class
    classes = visits.reindex(pd.MultiIndex.from_arrays([dka.patient, dka.encounter]))
    assert (classes == "emergency").all(), "ketoacidosis diagnosed outside an emergency visit"
    onset = ev[(ev.kind == "condition_onset") & (ev.code == KETOACIDOSIS)]
    assert sorted(onset.patient) == sorted(dka.patient)
    assert (dka.time == dka.patient.map(diagnosed)).all(), "ketoacidosis apart from the diagnosis"
    resolved = ev[(ev.kind == "condition_resolved") & (ev.code == KETOACIDOSIS)].groupby("patient").time.max()
    stay_days = (dka.patient.map(resolved) - dka.time) / pd.Timedelta(days=1)
    finished = dka.time < REFERENCE - pd.Timedelta(days=30)
    assert stay_days[finished].between(0.2, 15).all(), "no discharge after ketoacidosis"


def test_ketoacidosis_gets_insulin_and_labs_at_presentation(cohort: simulator.Population) -> None:
    """Issue 30: insulin for ketoacidosis starts at the emergency visit, not days later, and the visit records
    glucose, pH, bicarbonate and potassium with values that meet the DKA criteria (Kitabchi 2009)."""
    ev = cohort.events
    dka = ev[(ev.kind == "condition_diagnosis") & (ev.code == KETOACIDOSIS)].set_index(["patient", "encounter"])
    assert len(dka) >= 5
    starts = ev[(ev.kind == "medication_start") & (ev.code == IV_INSULIN)].set_index(["patient", "encounter"])
    in_era = dka[dka.time >= pd.Timestamp("1983-01-01", tz="UTC")]
    assert len(in_era) >= 5 and in_era.index.isin(starts.index).all(), "ketoacidosis without an insulin infusion"
    assert (starts.time.reindex(in_era.index) == in_era.time).all(), "the infusion starts after presentation"
    stops = ev[(ev.kind == "medication_stop") & (ev.code == IV_INSULIN)].groupby("patient").time.min()
    started = starts.reset_index().set_index("patient").time
    assert (stops.reindex(started.index).dropna() > started.reindex(stops.index).dropna()).all()
    subcutaneous = first_time(ev, "medication_start", T1D_INSULINS)
    ended = stops.reindex(subcutaneous.index).dropna()
    assert (ended == subcutaneous.reindex(ended.index)).all(), "the infusion stops when basal-bolus insulin starts"
    labs = ev[ev.kind == "observation"].set_index(["patient", "encounter"])
    labs = labs[labs.index.isin(dka.index)]
    for code, (op, limit) in DKA_CRITERIA.items():
        values = labs[labs.code == code].value
        assert len(values) == len(dka), f"{code} missing at a ketoacidosis presentation"
        assert ((values > limit) if op == ">" else (values < limit)).mean() >= 0.95, code
    potassium = labs[labs.code == POTASSIUM].value
    assert len(potassium) == len(dka) and potassium.between(3.3, 7.0).all()  # insulin only from 3.3 mmol/L
    # Outside ketoacidosis these labs are not taken by the module: the ambulatory diagnosis path records none
    # (the ketoacidosis admission records the basic metabolic panel's glucose, modules/laboratory.yaml).
    elsewhere = ev[(ev.kind == "observation") & ev.code.isin(DKA_CRITERIA) & (ev.module == "type1_diabetes")]
    assert set(elsewhere.state.astype(str)) <= {"t1d_dka_emergency", "t1d_dka_admission"}


def test_hba1c_is_high_in_type1_and_checked_about_quarterly(cohort: simulator.Population) -> None:
    ev = cohort.events
    readings = ev[(ev.kind == "observation") & (ev.code == HBA1C)]
    latest = readings.sort_values("time").groupby("patient").value.last()
    diagnosed = first_time(ev, "condition_diagnosis", {T1D})
    any_diabetes = set(first_time(ev, "condition_onset", {T1D, T2D, PREDIABETES}).index)
    type1 = latest[latest.index.isin(diagnosed.index)]
    without = latest[~latest.index.isin(any_diabetes)]
    # foster2019: mean HbA1c 7.5-9.3% by age in the T1D Exchange; norm about 5.3% (type2_diabetes.yaml).
    assert 7.2 < type1.mean() < 9.0
    assert type1.mean() - without.mean() > 1.8
    # The diagnosis rests on an HbA1c of 6.5% or more (ADA), about 11% before insulin (assumption_onset_excess).
    # HbA1c is recorded from 1976 (rules/calendar.yaml); before, the module reads it without a record.
    since = pd.Timestamp("1976-08-01", tz="UTC")
    recorded = diagnosed[diagnosed >= since]
    at_diagnosis = readings[readings.time == readings.patient.map(recorded)].value
    assert len(at_diagnosis) == len(recorded) and (at_diagnosis >= 6.5).all() and at_diagnosis.mean() > 9.5
    long_known = diagnosed[diagnosed < REFERENCE - pd.Timedelta(days=2 * 365)]
    follow_up = readings[readings.patient.isin(long_known.index) & (readings.module == "type1_diabetes")]
    years = ((REFERENCE - long_known.clip(lower=since)).dt.days / 365.25).sum()
    assert 3.0 < len(follow_up) / years < 5.5  # 4 visits a year (ada_soc_2024_glycemic)


def test_adult_prevalence_is_near_the_target(kernel_validation_36000: Validation) -> None:
    """type1_diabetes_diagnosed/20-120/all/2016: 0.5% of adults (Xu G et al. BMJ 2018), via the project's
    own target definitions on the shared kernel-only cohort of 36,000 (about 160 cases): a cohort of 12,000 has
    about 55, a 95% interval of +-27%, and one such seed fell outside the target's +-10% by chance (0.71%;
    0.54% at 100,000 patients), hence the larger cohort and the interval test."""
    rows = [c for c in kernel_validation_36000.comparisons if c.target.id == "type1_diabetes_diagnosed/20-120/all/2016"]
    assert len(rows) == 1
    lo, hi = wilson(rows[0].count, rows[0].n)
    assert lo <= 0.0055 and hi >= 0.0045  # the 95% interval meets the target +-10%


def test_patient_timeline_example_shows_a_type1_case() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "patient_timeline.py"), "--module", "type1_diabetes"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    assert "patient id" in result.stdout.splitlines()[0]
    assert "Diabetes mellitus type 1 (disorder)" in result.stdout
    assert "insulin lispro" in result.stdout
