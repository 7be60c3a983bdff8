"""Clinical coherence of the cardiovascular modules (coronary heart disease, heart failure, stroke,
atrial fibrillation) on one generated cohort of the shipped modules."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import simulator

pytestmark = pytest.mark.slow  # statistics of a 12,000-patient cohort of the shipped modules
REFERENCE = pd.Timestamp("2024-07-01", tz="UTC")
CHD = "53741008"
MI = "22298006"
HF = "84114007"
STROKE = "230690007"
AF = "49436004"
T2D = "44054006"
SMOKER = "77176002"
TROPONIN = "89579-7"
PCI = "415070008"
HEAD_CT = "303653007"
THROMBOLYSIS = "426347000"
CABG = "232717009"
HF_ONLY_DRUGS = {"1656349", "313096", "1488569", "313988"}  # ARNI, spironolactone, dapagliflozin, furosemide
APIXABAN = "1364445"
ASPIRIN = "243670"
CLOPIDOGREL = "309362"
CARDIOVASCULAR_DEATHS = {MI, CHD, HF, STROKE}


@pytest.fixture(scope="session")
def cardio_population() -> simulator.Population:
    """A cohort large enough for a few hundred infarctions and strokes (the shared one has about 100), and
    for at least 8 first strokes with atrial fibrillation at 55-90 (about 12 here; 7 at 8,000 patients)."""
    return simulator.generate(patients=12000, seed=21, chunk_size=4000)


def first_time(events: pd.DataFrame, kind: str, codes: set[str]) -> pd.Series:
    """Per patient, the time of the first event of `kind` with one of `codes`."""
    hits = events[(events.kind == kind) & events.code.isin(codes)]
    return hits.groupby("patient").time.min()


def living_adults(pop: simulator.Population, low: float = 20, high: float = 200) -> pd.DataFrame:
    """Patients alive at the reference date aged [low, high), with their age."""
    p = pop.patients
    alive = p[p.death_time.isna() | (p.death_time > REFERENCE)].copy()
    alive["age"] = (REFERENCE - alive.birth_time).dt.days / 365.25
    return alive[(alive.age >= low) & (alive.age < high)]


def encounter_classes(events: pd.DataFrame, rows: pd.DataFrame) -> pd.Series:
    """The class of the encounter each row happened in (NaN outside one)."""
    starts = events[events.kind == "encounter_start"].set_index(["patient", "encounter"]).encounter_class
    return pd.Series(starts.reindex(pd.MultiIndex.from_arrays([rows.patient, rows.encounter])).to_numpy())


def rate_ratio(
    pop: simulator.Population, exposure: str, outcome: str, low: float, high: float
) -> tuple[float, int, int]:
    """Rate of first `outcome` onsets per person-year at ages [low, high) while condition `exposure` is
    active (every onset-to-resolution episode), over the rate while it is not; and the numbers of
    outcomes with and without the exposure."""
    p = pop.patients.set_index("index")
    ev = pop.events
    years = pd.Timedelta(days=365.25)
    start = p.birth_time + low * years
    end = pd.concat([p.birth_time + high * years, p.death_time.fillna(REFERENCE)], axis=1).min(axis=1)
    end = end.clip(upper=REFERENCE)
    first = first_time(ev, "condition_onset", {outcome}).reindex(p.index)
    stop = pd.concat([end, first], axis=1).min(axis=1)  # follow-up ends at the first outcome
    changes = ev[ev.kind.isin(["condition_onset", "condition_resolved"]) & (ev.code == exposure)]
    onsets, ends = (changes[changes.kind == k][["patient", "time"]] for k in ("condition_onset", "condition_resolved"))
    for table in (onsets, ends):  # onsets and resolutions alternate: episode i ends at resolution i (or never)
        table["episode"] = table.groupby("patient").cumcount()
    episodes = onsets.merge(ends, on=["patient", "episode"], how="left", suffixes=("_on", "_off"))
    begin, limit = episodes.patient.map(start), episodes.patient.map(stop)
    lo = episodes.time_on.where(episodes.time_on > begin, begin)
    hi = episodes.time_off.fillna(limit)
    hi = hi.where(hi < limit, limit)
    person_years = ((hi - lo).clip(lower=pd.Timedelta(0)) / years).groupby(episodes.patient).sum()
    exposed = person_years.reindex(p.index).fillna(0.0)
    when = episodes.patient.map(first)
    inside = (episodes.time_on <= when) & (episodes.time_off.isna() | (when < episodes.time_off))
    total = ((stop - start).clip(lower=pd.Timedelta(0)) / years).fillna(0.0)
    counted = first.notna() & (first >= start) & (first <= end)
    during = counted & p.index.isin(episodes.patient[inside])
    rate_exposed = during.sum() / exposed.sum()
    rate_other = (counted & ~during).sum() / (total - exposed).sum()
    return rate_exposed / rate_other, int(during.sum()), int((counted & ~during).sum())


def ever_diagnosed(pop: simulator.Population, code: str) -> set[int]:
    ev = pop.events
    return set(ev.loc[(ev.kind == "condition_diagnosis") & (ev.code == code) & (ev.time <= REFERENCE), "patient"])


def test_revascularisation_only_after_coronary_diagnosis(cardio_population: simulator.Population) -> None:
    ev = cardio_population.events
    procedures = ev[(ev.kind == "procedure") & ev.code.isin({PCI, CABG})]
    assert len(procedures) > 50
    diagnosed = first_time(ev, "condition_diagnosis", {CHD})
    when = procedures.patient.map(diagnosed)
    assert when.notna().all(), "PCI/CABG in a patient never diagnosed with CHD"
    assert (procedures.time >= when).all(), "PCI/CABG before the CHD diagnosis"


def test_clopidogrel_follows_pci_with_aspirin_for_its_guideline_duration(
    cardio_population: simulator.Population,
) -> None:
    """Dual antiplatelet therapy (levine2016): clopidogrel starts at a PCI from 1998 on, beside aspirin, and
    stops 12 months after PCI for an infarction or 6 months after elective PCI (or at death)."""
    ev = cardio_population.events
    starts = ev[(ev.kind == "medication_start") & (ev.code == CLOPIDOGREL)]
    assert len(starts) > 20
    assert (starts.time >= pd.Timestamp("1998-01-01", tz="UTC")).all()
    assert set(starts.state.astype(str)) == {"mi_pci_dapt", "elective_pci_dapt"}
    pci = ev[(ev.kind == "procedure") & (ev.code == PCI)][["patient", "time"]]
    assert len(starts.merge(pci, on=["patient", "time"])) == len(starts), "clopidogrel without a PCI that instant"
    aspirin_starts = first_time(ev, "medication_start", {ASPIRIN})
    assert (starts.patient.map(aspirin_starts) <= starts.time).all(), "clopidogrel without aspirin"
    stops = ev[(ev.kind == "medication_stop") & (ev.code == CLOPIDOGREL)][["patient", "time"]]
    courses = pd.merge_asof(
        starts[["patient", "time", "state"]].sort_values("time"),
        stops.rename(columns={"time": "stop"}).sort_values("stop"),
        left_on="time",
        right_on="stop",
        by="patient",
        direction="forward",
    )
    months = (courses.stop - courses.time).dt.days / 30.44
    ended = courses[courses.stop.notna() & (courses.stop <= REFERENCE)]
    deaths = cardio_population.patients.set_index("index").death_time
    by_schedule = ended[ended.stop != ended.patient.map(deaths)]
    assert len(by_schedule) > 10
    expected = by_schedule.state.map({"mi_pci_dapt": 12.0, "elective_pci_dapt": 6.0})
    assert ((months.loc[by_schedule.index] - expected).abs() < 0.5).all()


def test_troponin_measured_and_raised_in_every_infarction_visit(cardio_population: simulator.Population) -> None:
    ev = cardio_population.events
    mi = ev[(ev.kind == "condition_diagnosis") & (ev.code == MI)]
    assert len(mi) > 100
    assert (encounter_classes(ev, mi) == "emergency").all()
    troponin = ev[(ev.kind == "observation") & (ev.code == TROPONIN)]
    measured = set(zip(troponin.patient, troponin.encounter, strict=True))
    # the high-sensitivity assay is recorded from its first US clearance (June 2018, rules/calendar.yaml)
    since_hs = mi[mi.time >= pd.Timestamp("2018-06-01", tz="UTC")]
    assert len(since_hs) > 30 and all(key in measured for key in zip(since_hs.patient, since_hs.encounter, strict=True))
    assert (troponin.time >= pd.Timestamp("2018-06-01", tz="UTC")).all()
    # Thygesen 2018: infarction means troponin above the 99th percentile limit (about 26 ng/L).
    in_mi = troponin.merge(mi[["patient", "encounter"]], on=["patient", "encounter"])
    assert (in_mi.value > 26).mean() > 0.95
    assert (troponin.unit == "ng/L").all()
    # The rise of an infarction (coronary_heart_disease.yaml): the 2-hour repeat in the emergency visit is
    # higher than the first value, and the sample near the peak, in the admission (the next encounter), higher
    # still.
    visit = in_mi.sort_values("time").groupby(["patient", "encounter"]).value.agg(["first", "last", "size"])
    assert (visit["size"] == 2).mean() > 0.95
    assert (visit["last"] > visit["first"]).mean() > 0.99
    peak = visit.reset_index().assign(encounter=lambda f: f.encounter + 1).merge(troponin, on=["patient", "encounter"])
    assert len(peak) > 0.8 * len(visit)
    assert (peak.value > peak["last"]).mean() > 0.99


def test_every_acute_admission_follows_an_emergency_visit(cardio_population: simulator.Population) -> None:
    """MI, heart failure and stroke admissions start the moment the same module's emergency visit ends."""
    ev = cardio_population.events
    acute = {"mi_admission", "hf_admission", "ischaemic_admission", "haemorrhagic_admission"}
    admissions = ev[(ev.kind == "encounter_start") & ev.state.isin(acute)]
    assert admissions.state.nunique() == len(acute)
    emergency_ends = ev[(ev.kind == "encounter_end") & (ev.encounter_class == "emergency")]
    ends = set(zip(emergency_ends.patient, emergency_ends.module, emergency_ends.time, strict=True))
    keys = zip(admissions.patient, admissions.module, admissions.time, strict=True)
    assert all(key in ends for key in keys)


def test_stroke_imaged_in_the_emergency_visit(cardio_population: simulator.Population) -> None:
    ev = cardio_population.events
    stroke = ev[(ev.kind == "condition_diagnosis") & (ev.code == STROKE)]
    assert len(stroke) > 100
    assert (encounter_classes(ev, stroke) == "emergency").all()
    ct = ev[(ev.kind == "procedure") & (ev.code == HEAD_CT)]
    imaged = set(zip(ct.patient, ct.encounter, strict=True))
    since_ct = stroke[stroke.time >= pd.Timestamp("1973-01-01", tz="UTC")]  # head CT from 1973 (calendar)
    assert all(key in imaged for key in zip(since_ct.patient, since_ct.encounter, strict=True))
    # Thrombolysis only in a stroke emergency visit, for about 10% of ischaemic strokes (87% of strokes).
    lysis = ev[(ev.kind == "procedure") & (ev.code == THROMBOLYSIS)]
    assert set(zip(lysis.patient, lysis.encounter, strict=True)) <= imaged
    since_lysis = ev.time >= pd.Timestamp("1996-01-01", tz="UTC")  # thrombolysis from 1996 (calendar)
    ischaemic = (ev.kind == "encounter_start") & (ev.state == "ischaemic_emergency") & since_lysis
    assert 0.05 < len(lysis) / ischaemic.sum() < 0.15


def test_anticoagulant_only_with_atrial_fibrillation(cardio_population: simulator.Population) -> None:
    ev = cardio_population.events
    starts = ev[(ev.kind == "medication_start") & (ev.code == APIXABAN)]
    assert len(starts) > 30
    diagnosed = first_time(ev, "condition_diagnosis", {AF})
    when = starts.patient.map(diagnosed)
    assert when.notna().all() and (starts.time >= when).all()


def test_heart_failure_drugs_only_with_heart_failure(cardio_population: simulator.Population) -> None:
    ev = cardio_population.events
    starts = ev[(ev.kind == "medication_start") & ev.code.isin(HF_ONLY_DRUGS)]
    assert len(starts) > 100
    diagnosed = first_time(ev, "condition_diagnosis", {HF})
    when = starts.patient.map(diagnosed)
    assert when.notna().all() and (starts.time >= when).all()


def test_heart_failure_values_follow_the_disease(cardio_population: simulator.Population) -> None:
    ev = cardio_population.events
    lvef = ev[(ev.kind == "observation") & (ev.code == "10230-1")]
    reduced = set(lvef.loc[lvef.value <= 40, "patient"])
    # from echocardiography's date (rules/calendar.yaml, 1968): before it the record holds no LVEF to show
    started = ev[(ev.kind == "medication_start") & ev.code.isin({"1656349", "313096"})]
    arni_or_mra = set(started.loc[started.time >= pd.Timestamp("1968-01-01", tz="UTC"), "patient"])
    assert arni_or_mra <= reduced, "HFrEF drugs given with LVEF > 40%"
    assert 0.3 < len(reduced) / lvef.patient.nunique() < 0.7  # about half reduced (dunlay2017)
    probnp = ev[(ev.kind == "observation") & (ev.code == "33762-6")]
    assert (probnp.value >= 125).mean() > 0.9  # mcdonagh2021 chronic threshold; measured only in heart failure


# rules/audit.yaml duplicate_drug_class: ACE inhibitor, ARB, ARNI (heidenreich2022: the ARNI replaces the others);
# canagliflozin, dapagliflozin (two SGLT2 inhibitors).
RAS_BLOCKERS = {"314076", "979492", "1656349"}
SGLT2_INHIBITORS = {"1373463", "1488569"}


def patients_with_overlapping_courses(events: pd.DataFrame, codes: set[str]) -> int:
    """How many patients take two of `codes` at once (a product is never started twice while taken, so two
    courses open at one time are two products; a stop and a start at the same time do not overlap)."""
    meds = events[events.kind.isin(["medication_start", "medication_stop"]) & events.code.isin(codes)]
    meds = meds.assign(step=(meds.kind == "medication_start").astype(int) * 2 - 1)
    meds = meds.sort_values(["patient", "time", "step"], kind="stable")
    open_courses = meds.groupby("patient").step.cumsum()
    return int(open_courses.gt(1).groupby(meds.patient).any().sum())


@pytest.mark.parametrize("cohort", ["cardio_population", "shipped_lifetime"])
@pytest.mark.parametrize("codes", [RAS_BLOCKERS, SGLT2_INHIBITORS], ids=["ras_blockers", "sglt2_inhibitors"])
def test_no_two_drugs_of_one_class_at_once(cohort: str, codes: set[str], request: pytest.FixtureRequest) -> None:
    events = request.getfixturevalue(cohort).events
    starts = events[(events.kind == "medication_start") & events.code.isin(codes)]
    assert starts.code.nunique() == len(codes)  # every product of the class is given
    assert patients_with_overlapping_courses(events, codes) == 0


def test_the_arni_replaces_an_ace_inhibitor_or_arb(shipped_lifetime: simulator.Population) -> None:
    """heidenreich2022: from 2016 a patient on lisinopril or losartan stops it when sacubitril/valsartan starts."""
    ev = shipped_lifetime.events
    arni = ev[(ev.kind == "medication_start") & (ev.code == "1656349")]
    stops = ev[(ev.kind == "medication_stop") & ev.code.isin({"314076", "979492"})]
    switched = arni.merge(stops, on=["patient", "time"])
    assert len(switched) > 0


@pytest.mark.parametrize(
    ("exposure", "outcome", "low", "high"),
    [
        # INTERHEART (yusuf2004): odds ratios 2.37 for diabetes, 2.87 for current smoking (the modules' hazard
        # ratios on first CHD events; the MI hazard after angina carries no smoking ratio, so the measured first-MI
        # ratio of smokers is lower, about 1.5).
        (T2D, MI, 40, 80),
        (SMOKER, MI, 40, 80),
        # Wolf 1991: atrial fibrillation nearly fivefold (0.28 x that on apixaban, which 60% take).
        (AF, STROKE, 55, 90),
    ],
)
def test_risk_factor_raises_the_first_event_rate(
    cardio_population: simulator.Population, exposure: str, outcome: str, low: float, high: float
) -> None:
    """First-event rate per person-year while the risk factor is active against while it is not, over
    an age window (person-time avoids the survival and duration biases of comparing prevalences): the
    lower end of the ratio's 95% interval (Poisson counts) is above 1."""
    ratio, exposed, other = rate_ratio(cardio_population, exposure, outcome, low, high)
    assert exposed >= 8 and other >= 8
    lower = ratio * math.exp(-1.96 * math.sqrt(1 / exposed + 1 / other))
    assert lower > 1.0, (ratio, lower, exposed)


def test_cardiovascular_deaths_have_valid_causes_and_nothing_after(shipped_lifetime: simulator.Population) -> None:
    """On a birth cohort followed to death (the cross-section is alive at the reference date)."""
    p = shipped_lifetime.patients
    ev = shipped_lifetime.events
    dead = p[p.death_cause_code.isin(CARDIOVASCULAR_DEATHS)]
    assert len(dead) > 30
    for code in CARDIOVASCULAR_DEATHS & set(dead.death_cause_code):
        patients = dead.loc[dead.death_cause_code == code, "index"]
        onset = set(ev.loc[(ev.kind == "condition_onset") & (ev.code == code), "patient"])
        assert patients.isin(onset).all(), f"death from {code} without its onset"
    last = ev.groupby("patient").time.max()
    assert (last.reindex(dead["index"]).to_numpy() <= dead.death_time.to_numpy()).all()


@pytest.mark.parametrize(
    ("code", "low", "high", "target"),
    [
        # cohort_targets.csv chd / heart_disease_self_report rows (NHANES 2015-2018; NHIS 2019).
        (CHD, 20, 200, 7.2),
        (CHD, 45, 55, 3.6),
        (CHD, 55, 65, 9.0),
        (CHD, 65, 75, 14.3),
        (CHD, 75, 200, 24.2),
        (MI, 20, 200, 3.1),  # myocardial_infarction_history
        (HF, 20, 200, 2.2),  # heart_failure
        # stroke_history rows (NHIS 2016, secondary copy).
        (STROKE, 18, 45, 0.6),
        (STROKE, 45, 65, 3.2),
        (STROKE, 65, 75, 6.6),
        (STROKE, 75, 200, 11.1),
    ],
)
def test_prevalence_within_factor_two_of_targets(
    cardio_population: simulator.Population, code: str, low: float, high: float, target: float
) -> None:
    adults = living_adults(cardio_population, low, high)
    prevalence = 100 * adults["index"].isin(ever_diagnosed(cardio_population, code)).mean()
    assert target / 2 < prevalence < target * 2, prevalence
