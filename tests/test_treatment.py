"""Guideline treatment on the shared cohort of the shipped modules: metformin titrated to its maximum dose before
any add-on (modules/type2_diabetes.yaml), and the adult tetanus-diphtheria booster of each era
(rules/immunizations.yaml with rules/calendar.yaml)."""

from __future__ import annotations

import pandas as pd
import pytest

import simulator

pytestmark = pytest.mark.slow  # statistics of the shared 3,000-patient cohort
REFERENCE = pd.Timestamp("2024-07-01", tz="UTC")
T1D, T2D = "46635009", "44054006"
HBA1C = "4548-4"
METFORMIN_START = {"860975", "861007"}  # 500 mg, extended release (2000) or immediate release (1995)
METFORMIN_MAX = "861004"  # 1000 mg twice daily
# Add-ons of type 2 diabetes: glipizide, canagliflozin, basal insulin (glargine vial, NPH before 2000).
ADD_ONS = {"310490", "1373463", "285018", "311028"}
TD, TD_PRESERVATIVE_FREE, TDAP = "09", "113", "115"


def courses(pop: simulator.Population, codes: set[str]) -> pd.DataFrame:
    """One row per medication course with one of `codes`: patient, code, start and stop time (NaT: open)."""
    ev = pop.events
    meds = ev[ev.kind.isin(["medication_start", "medication_stop"]) & ev.code.isin(codes)]
    meds = meds.assign(code=meds.code.astype(str)).sort_values(["patient", "code", "time"], kind="stable")
    starts = meds[meds.kind == "medication_start"].reset_index(drop=True)
    stops = meds[meds.kind == "medication_stop"].reset_index(drop=True)
    starts["n"] = starts.groupby(["patient", "code"]).cumcount()
    stops["n"] = stops.groupby(["patient", "code"]).cumcount()
    merged = starts.merge(stops[["patient", "code", "n", "time"]], on=["patient", "code", "n"], how="left")
    return merged.rename(columns={"time_x": "start", "time_y": "stop"})[["patient", "code", "start", "stop"]]


def type1_patients(pop: simulator.Population) -> set[int]:
    ev = pop.events
    return set(ev[(ev.kind == "condition_diagnosis") & (ev.code == T1D)].patient)


def test_no_add_on_before_three_months_at_the_maximum_metformin_dose(
    shipped_population: simulator.Population,
) -> None:
    """chamberlain2017 / ADA: a second agent only after 3 months of monotherapy at the maximum tolerated dose."""
    pop = shipped_population
    add_ons = courses(pop, ADD_ONS)
    add_ons = add_ons[~add_ons.patient.isin(type1_patients(pop))]
    first_add_on = add_ons.groupby("patient").start.min()
    maximum = courses(pop, {METFORMIN_MAX}).groupby("patient").start.min()
    assert len(first_add_on) >= 5
    reached = maximum.reindex(first_add_on.index)
    assert reached.notna().all(), "an add-on for a patient never on the maximum metformin dose"
    assert ((first_add_on - reached) >= pd.Timedelta(days=89)).all(), "an add-on within 3 months of titration"


def test_titration_replaces_the_starting_dose(shipped_population: simulator.Population) -> None:
    """The 500 mg course stops when the 2,000 mg course starts: never two metformin courses at once."""
    metformin = courses(shipped_population, METFORMIN_START | {METFORMIN_MAX})
    maximum = metformin[metformin.code == METFORMIN_MAX].set_index("patient").start
    starting = metformin[metformin.code != METFORMIN_MAX].set_index("patient")
    titrated = starting[starting.index.isin(maximum.index)]
    assert len(titrated) >= 20
    assert (titrated.stop == maximum.reindex(titrated.index)).all()
    assert (metformin.groupby("patient").size() <= 2).all()


def test_high_hba1c_on_metformin_is_on_the_maximum_dose(shipped_population: simulator.Population) -> None:
    """Patients who have taken metformin for a year or more and whose latest HbA1c is 8% or more are on the
    maximum dose: an HbA1c above the 7% goal raises the starting dose at that visit (no nine years on 500 mg)."""
    pop = shipped_population
    metformin = courses(pop, METFORMIN_START | {METFORMIN_MAX})
    first = metformin.groupby("patient").start.min()
    running = metformin[metformin.stop.isna()].set_index("patient").code
    ev = pop.events
    hba1c = ev[(ev.kind == "observation") & (ev.code == HBA1C)].sort_values("time").groupby("patient").last()
    dead = pop.patients.set_index("index").death_time
    people = first[(first < REFERENCE - pd.Timedelta(days=365)) & dead.reindex(first.index).isna()].index
    high = hba1c.reindex(people)
    high = high[(high.value >= 8.0) & (high.time > first.reindex(high.index) + pd.Timedelta(days=365))]
    assert len(high) >= 10
    on_max = (running.reindex(high.index) == METFORMIN_MAX).mean()
    assert on_max >= 0.95, f"{on_max:.0%} of patients with HbA1c >= 8% after a year of metformin on 2,000 mg"


def test_no_canagliflozin_course_or_effect_before_its_approval(shipped_population: simulator.Population) -> None:
    """The SGLT2 inhibitor is chosen only from 2013; before, the second agent is the sulfonylurea."""
    ev = shipped_population.events
    cana = ev[(ev.kind == "medication_start") & (ev.code == "1373463")]
    assert (cana.time >= pd.Timestamp("2013-01-01", tz="UTC")).all()
    states = ev[(ev.module == "type2_diabetes") & (ev.state == "t2d_start_canagliflozin")]
    assert (states.time >= pd.Timestamp("2013-01-01", tz="UTC")).all()


def test_adult_boosters_before_2003_are_adult_td(shipped_population: simulator.Population) -> None:
    """Before the preservative-free Td (November 2003) and Tdap (2005) the 10-yearly booster is adult Td
    (CVX 09, licensed 1953): adults of that era have boosters, all of them CVX 09."""
    ev = shipped_population.events
    shots = ev[(ev.kind == "immunization") & ev.code.isin({TD, TD_PRESERVATIVE_FREE, TDAP})]
    shots = shots.assign(code=shots.code.astype(str))
    early = shots[shots.time < pd.Timestamp("2003-11-01", tz="UTC")]
    assert len(early) >= 50 and (early.code == TD).all()
    assert (shots[shots.code == TDAP].time >= pd.Timestamp("2005-06-01", tz="UTC")).all()
    assert (shots[shots.code == TD].time >= pd.Timestamp("1953-01-01", tz="UTC")).all()
    # The booster's coverage before 2003 is of the order of today's (about 63% within 10 years, lu2021):
    # adults alive and 30+ on 2000-01-01 with a Td in the 10 years before it.
    day = pd.Timestamp("2000-01-01", tz="UTC")
    people = shipped_population.patients.set_index("index")
    adults = people[(people.birth_time < day - pd.DateOffset(years=30))].index
    recent = early[(early.time < day) & (early.time >= day - pd.DateOffset(years=10))].patient
    coverage = pd.Index(adults).isin(recent).mean()
    assert 0.3 <= coverage <= 0.9, f"Td coverage in the 1990s {coverage:.0%}"
