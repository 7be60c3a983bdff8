"""Clinical coherence and rough realism of the cardiometabolic modules (type 2 diabetes, hypertension,
chronic kidney disease) on the shared cohort of the shipped modules."""

from __future__ import annotations

import pandas as pd
import pytest

import simulator
from simulator.fit.validation import Validation

pytestmark = pytest.mark.slow  # statistics of the shared 3,000-patient cohort and of a 30,000-patient one
REFERENCE = pd.Timestamp("2024-07-01", tz="UTC")
T2D = "44054006"
PREDIABETES = "714628002"
HTN = "38341003"
NEPHROPATHY = "127013003"
RETINOPATHY = "4855003"
NEUROPATHY = "368581000119106"
CKD = "709044004"
CKD_STAGE4 = "431857002"
CKD_STAGE5 = "433146000"
ESRD = "46177005"
HEMODIALYSIS = "302497006"
TRANSPLANT = "70536003"
EYE_EXAM = "36228007"
FOOT_EXAM = "401191002"
HBA1C = "4548-4"
EGFR = "98979-8"
CREATININE = "2160-0"
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"
# metformin ER, IR and 1000 mg, glipizide, SGLT2 inhibitor, glargine
DIABETES_DRUGS = {"860975", "861007", "861004", "310490", "1373463", "285018"}
HTN_DRUGS = {"314076", "979492", "310798", "197361"}  # lisinopril, losartan, hydrochlorothiazide, amlodipine
ATORVASTATIN = "617311"


def first_time(events: pd.DataFrame, kind: str, codes: set[str]) -> pd.Series:
    """Per patient, the time of the first event of `kind` with one of `codes`."""
    hits = events[(events.kind == kind) & events.code.isin(codes)]
    return hits.groupby("patient").time.min()


def living(pop: simulator.Population, low: float = 18) -> pd.DataFrame:
    """Patients alive at the reference date aged `low` or more, indexed by patient index, with their age."""
    p = pop.patients
    alive = p[p.death_time.isna() | (p.death_time > REFERENCE)].set_index("index")
    alive = alive.assign(age=(REFERENCE - alive.birth_time).dt.days / 365.25)
    return alive[alive.age >= low]


def active_at_reference(pop: simulator.Population, code: str, people: pd.DataFrame) -> pd.Series:
    """Whether each of `people` has the condition active at the reference date (last onset not resolved)."""
    ev = pop.events
    onset = ev[(ev.kind == "condition_onset") & (ev.code == code)].groupby("patient").time.max()
    resolved = ev[(ev.kind == "condition_resolved") & (ev.code == code)].groupby("patient").time.max()
    onset, resolved = onset.reindex(people.index), resolved.reindex(people.index)
    return onset.notna() & (resolved.isna() | (resolved < onset))


def wellness_readings(pop: simulator.Population, codes: set[str]) -> pd.DataFrame:
    """Observations with one of `codes` taken at wellness visits: patient, encounter, time, code, value."""
    ev = pop.events
    visits = ev.loc[(ev.kind == "encounter_start") & (ev.encounter_class == "wellness"), ["patient", "encounter"]]
    readings = ev.loc[
        (ev.kind == "observation") & ev.code.isin(codes), ["patient", "encounter", "time", "code", "value"]
    ]
    return readings.merge(visits, on=["patient", "encounter"]).assign(code=lambda d: d.code.astype(str))


def last_wellness_bp(pop: simulator.Population, people: pd.DataFrame) -> pd.DataFrame:
    """Mean systolic and diastolic reading of each person's last wellness visit (like NHANES, a visit mean)."""
    bp = wellness_readings(pop, {SYSTOLIC, DIASTOLIC})
    bp = bp[bp.encounter == bp.groupby("patient").encounter.transform("max")]
    table = bp.pivot_table(index="patient", columns="code", values="value")
    return table.reindex(people.index).rename(columns={SYSTOLIC: "sbp", DIASTOLIC: "dbp"})


def test_no_diabetes_medication_without_a_diabetes_diagnosis(shipped_population: simulator.Population) -> None:
    ev = shipped_population.events
    starts = ev[(ev.kind == "medication_start") & ev.code.isin(DIABETES_DRUGS)]
    assert len(starts) > 50
    diagnosed = first_time(ev, "condition_diagnosis", {T2D})
    when = starts.patient.map(diagnosed)
    assert when.notna().all(), "diabetes drug for a patient never diagnosed with diabetes"
    assert (starts.time >= when).all(), "diabetes drug before the diagnosis"


def test_hba1c_is_higher_in_diabetics(shipped_population: simulator.Population) -> None:
    ev = shipped_population.events
    latest = ev[(ev.kind == "observation") & (ev.code == HBA1C)].groupby("patient").value.last()
    diabetic = latest.index.isin(set(first_time(ev, "condition_onset", {T2D}).index))
    assert diabetic.sum() > 50 and (~diabetic).sum() > 200
    # menke2018 (type2_diabetes.yaml): about 7.4% in treated diabetes against about 5.4% without.
    assert latest[diabetic].mean() - latest[~diabetic].mean() > 1.0
    assert 6.5 < latest[diabetic].mean() < 8.5


def test_blood_pressure_falls_once_hypertension_is_treated(shipped_population: simulator.Population) -> None:
    """Per treated patient: wellness-visit systolic BP in the 3 years before the first drug against the years
    after it (the treatment decisions use the module's own follow-up readings, not these)."""
    start = first_time(shipped_population.events, "medication_start", HTN_DRUGS)
    sbp = wellness_readings(shipped_population, {SYSTOLIC})
    sbp = sbp[sbp.patient.isin(start.index)].assign(start=lambda d: d.patient.map(start))
    before = sbp[(sbp.time < sbp.start) & (sbp.time > sbp.start - pd.Timedelta(days=3 * 365))]
    after = sbp[sbp.time > sbp.start + pd.Timedelta(days=30)]
    paired = pd.concat([before.groupby("patient").value.mean(), after.groupby("patient").value.mean()], axis=1)
    paired = paired.dropna()
    assert len(paired) > 100
    assert (paired.iloc[:, 0] - paired.iloc[:, 1]).mean() > 3


def test_treated_blood_pressure_is_realistic(shipped_population: simulator.Population) -> None:
    people = living(shipped_population)
    bp = last_wellness_bp(shipped_population, people).dropna()
    treated = bp[bp.index.isin(set(first_time(shipped_population.events, "medication_start", HTN_DRUGS).index))]
    assert len(treated) > 100
    # muntner2018 (hypertension.yaml): treated US adults average 130.7/71.1 mmHg.
    assert 124 < treated.sbp.mean() < 137


def _hypertension_cascade(pop: simulator.Population) -> pd.DataFrame:
    """Living adults with a wellness BP: age, hypertensive (last wellness visit >= 130/80 or a drug started),
    aware (diagnosed), treated (a drug started), controlled (treated and below 130/80), and with the condition."""
    people = living(pop)
    bp = last_wellness_bp(pop, people).dropna()
    ev = pop.events
    treated = bp.index.isin(set(first_time(ev, "medication_start", HTN_DRUGS).index))
    high = ((bp.sbp >= 130) | (bp.dbp >= 80)).to_numpy()
    return pd.DataFrame(
        {
            "age": people.age.reindex(bp.index),
            "hypertensive": high | treated,
            "aware": bp.index.isin(set(first_time(ev, "condition_diagnosis", {HTN}).index)),
            "treated": treated,
            "controlled": treated & ~high,
            "condition": active_at_reference(pop, HTN, people).reindex(bp.index).to_numpy(),
        },
        index=bp.index,
    )


def test_hypertension_awareness_treatment_and_control(shipped_population: simulator.Population) -> None:
    """Among adults with hypertension, fryar2024: aware 59.2%, treated 51.2%, controlled (< 130/80) 20.7%;
    aware 27.2 / 56.7 / 73.7% at 18-39 / 40-59 / 60+ (all calibration targets)."""
    cascade = _hypertension_cascade(shipped_population)
    hypertensive = cascade[cascade.hypertensive]
    assert len(hypertensive) > 500
    assert abs(hypertensive.aware.mean() - 0.592) < 0.06
    assert abs(hypertensive.treated.mean() - 0.512) < 0.06
    assert abs(hypertensive.controlled.mean() - 0.207) < 0.05
    bands = pd.cut(hypertensive.age, [18, 40, 60, 200], right=False)
    aware_by_age = hypertensive.aware.groupby(bands, observed=True).mean().to_numpy()
    assert (abs(aware_by_age - [0.272, 0.567, 0.737]) < 0.12).all(), aware_by_age


def test_hypertension_control_by_sex_follows_nhanes(kernel_validation_36000: Validation) -> None:
    """fryar2024: at 40-59, 23.2% of women with hypertension are controlled (< 130/80) against 13.6% of men. The
    drug effect and the yearly rise of the BP excess are drawn by sex (hypertension.yaml) and fitted to these
    rows; women stay ahead of men, and each sex within 25% of its row (the shipped fit misses both rows' 10%
    on cohorts other than its own: README, Known limitations). The shared kernel-only cohort of 36,000 (about
    2,200 women and 2,500 men with hypertension at 40-59; one standard error about 1 point)."""
    rows = {c.target.id: c for c in kernel_validation_36000.comparisons}
    women, men = rows["hypertension_controlled/40-59/F/2021"], rows["hypertension_controlled/40-59/M/2021"]
    assert women.simulated - men.simulated > 0.02, (women.simulated, men.simulated)
    for row in (women, men):
        assert abs(row.simulated / row.target.value - 1) < 0.25, (row.target.id, row.simulated)


def test_hypertension_condition_about_as_common_as_its_definition(shipped_population: simulator.Population) -> None:
    """The people with the condition (diagnosed or not) are about as many, in each age band, as those who meet
    the 130/80-or-medication definition at their last wellness visit; the condition is not near-universal."""
    cascade = _hypertension_cascade(shipped_population)
    bands = pd.cut(cascade.age, [18, 40, 60, 200], right=False)
    share = cascade[["hypertensive", "condition"]].groupby(bands, observed=True).mean()
    ratio = (share.condition / share.hypertensive).to_numpy()
    assert ((ratio > 0.75) & (ratio < 1.25)).all(), share
    assert share.condition.iloc[-1] < 0.85


def test_complications_only_after_their_cause(shipped_population: simulator.Population) -> None:
    ev = shipped_population.events
    diabetes = first_time(ev, "condition_onset", {T2D})
    for complication in (NEPHROPATHY, RETINOPATHY, NEUROPATHY):
        onset = first_time(ev, "condition_onset", {complication})
        assert len(onset) > 10, complication
        assert (onset >= diabetes.reindex(onset.index)).all(), complication
    ckd = first_time(ev, "condition_onset", {CKD})
    for late in (CKD_STAGE4, CKD_STAGE5, ESRD):
        onset = first_time(ev, "condition_onset", {late})
        assert (onset >= ckd.reindex(onset.index)).all(), late


def test_complications_are_diagnosed_at_their_examination(shipped_population: simulator.Population) -> None:
    """Retinopathy is recorded at an eye examination, neuropathy at a foot examination (same moment)."""
    ev = shipped_population.events
    for condition, exam in ((RETINOPATHY, EYE_EXAM), (NEUROPATHY, FOOT_EXAM)):
        diagnoses = ev[(ev.kind == "condition_diagnosis") & (ev.code == condition)]
        assert len(diagnoses) > 10, condition
        exams = ev.loc[(ev.kind == "procedure") & (ev.code == exam), ["patient", "time"]]
        matched = diagnoses[["patient", "time"]].merge(exams.drop_duplicates(), on=["patient", "time"])
        assert len(matched) == len(diagnoses), condition


def test_dialysis_and_transplant_only_in_end_stage_kidney_disease(shipped_lifetime: simulator.Population) -> None:
    """On the birth cohort followed to death (lifetime risk of kidney failure about 1-2%)."""
    ev = shipped_lifetime.events
    esrd = first_time(ev, "condition_onset", {ESRD})
    procedures = ev[(ev.kind == "procedure") & ev.code.isin({HEMODIALYSIS, TRANSPLANT})]
    assert procedures.patient.nunique() >= 2  # 3 of 1,000 lifetimes on 2026-12-07 (5 before the mortality merge)
    when = procedures.patient.map(esrd)
    assert when.notna().all(), "dialysis or transplant without end-stage kidney disease"
    assert (procedures.time >= when).all(), "dialysis or transplant before end-stage kidney disease"


def test_kidney_labs_follow_the_stage(shipped_population: simulator.Population) -> None:
    people = living(shipped_population, low=40)
    ev = shipped_population.events
    labs = ev[(ev.kind == "observation") & ev.code.isin({EGFR, CREATININE})]
    latest = labs.assign(code=labs.code.astype(str)).groupby(["patient", "code"]).value.last().unstack()
    latest = latest.reindex(people.index).dropna()
    ckd = active_at_reference(shipped_population, CKD, people).reindex(latest.index)
    stage3 = active_at_reference(shipped_population, "433144002", people).reindex(latest.index)
    assert stage3.sum() > 20 and (~ckd).sum() > 200
    assert latest.loc[stage3, EGFR].mean() < 60 < latest.loc[~ckd, EGFR].mean()
    assert latest.loc[stage3, CREATININE].mean() > latest.loc[~ckd, CREATININE].mean() + 0.2


def test_statin_share_of_diagnosed_diabetics_aged_40_to_75(shipped_population: simulator.Population) -> None:
    """ADA Standards of Care 2024 (section 10): a statin for people with diabetes at 40-75; NHANES 2015-2018
    (leino2020, type2_diabetes.yaml): 53% of them take one. The decision waits for a follow-up visit and the
    coronary and stroke modules add theirs, so a wide band around it."""
    people = living(shipped_population, 40)
    people = people[people.age < 76]
    diagnosed = people[people.index.isin(first_time(shipped_population.events, "condition_diagnosis", {T2D}).index)]
    assert len(diagnosed) > 80
    ev = shipped_population.events
    statin = ev[ev.code.eq(ATORVASTATIN) & ev.kind.isin(["medication_start", "medication_stop"])]
    statin = statin[statin.time <= REFERENCE]
    taking = statin.groupby("patient").kind.last().eq("medication_start")
    share = taking.reindex(diagnosed.index, fill_value=False).mean()
    assert 0.38 < share < 0.70, share


@pytest.mark.parametrize(
    ("code", "bands"),
    [
        # cohort_targets.csv diabetes_total (CDC NDSR, NHANES 2017-2020), all diabetes types.
        (T2D, [(18, 45, 4.8), (45, 65, 18.9), (65, 200, 29.2)]),
        # rules/targets prediabetes (CDC NDSR 2020, NHANES 2013-2016); 45-64 was 19% before it was fitted.
        (PREDIABETES, [(18, 45, 24.3), (45, 65, 41.7), (65, 200, 46.6)]),
        # cohort_targets.csv hypertension_130_80 (NCHS Data Brief Oct 2024), as the module's condition.
        (HTN, [(18, 40, 23.4), (40, 60, 52.5), (60, 200, 71.6)]),
    ],
)
def test_prevalence_within_a_factor_of_two(shipped_population: simulator.Population, code: str, bands: list) -> None:
    people = living(shipped_population)
    has = active_at_reference(shipped_population, code, people)
    for low, high, target in bands:
        in_band = (people.age >= low) & (people.age < high)
        observed = 100 * has[in_band].mean()
        assert target / 2 < observed < target * 2, (code, low, observed, target)


def test_ckd_prevalence_within_a_factor_of_two(shipped_population: simulator.Population) -> None:
    """cohort_targets.csv ckd_stage1_4 (CDC CKD in the US 2023): 6 / 12 / 34% at 18-44 / 45-64 / 65+."""
    people = living(shipped_population)
    late = active_at_reference(shipped_population, CKD_STAGE5, people) | active_at_reference(
        shipped_population, ESRD, people
    )
    stages_1_4 = active_at_reference(shipped_population, CKD, people) & ~late
    for low, high, target in ((18, 45, 6.0), (45, 65, 12.0), (65, 200, 34.0)):
        in_band = (people.age >= low) & (people.age < high)
        observed = 100 * stages_1_4[in_band].mean()
        assert target / 2 < observed < target * 2, (low, observed, target)
