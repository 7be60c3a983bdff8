"""Codes by era (rules/calendar.yaml `before`) and the eGFR computed from its creatinine (modules/ckd.yaml), on
the shared cohort of the shipped modules: what a generated record contains before and after a code's date."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import simulator
from simulator.model.library import Library
from simulator.model.schema import GfrEquation

pytestmark = pytest.mark.slow  # statistics of the shared 3,000-patient cohort
EGFR_2021, EGFR_2009, EGFR_MDRD, CREATININE = "98979-8", "62238-1", "33914-3", "2160-0"


def coded(pop: simulator.Population, kind: str, codes: set[str]) -> pd.DataFrame:
    """Events of `kind` with one of `codes`, with the patient's birth time, sex and race."""
    ev = pop.events
    rows = ev[(ev.kind == kind) & ev.code.isin(codes)].assign(code=lambda d: d.code.astype(str))
    people = pop.patients.set_index("index")[["birth_time", "sex", "race"]]
    return rows.join(people, on="patient")


def test_hepatitis_b_at_birth_only_from_1991(shipped_population: simulator.Population) -> None:
    """Universal infant hepatitis B vaccination began with ACIP's 1991 recommendation: a patient born in 1930
    got none at birth; children born since get it."""
    hepb = coded(shipped_population, "immunization", {"08"})
    assert (hepb.time >= pd.Timestamp("1991-01-01", tz="UTC")).all()
    births = shipped_population.patients.birth_time
    early = births < pd.Timestamp("1990-01-01", tz="UTC")
    assert early.sum() > 1000 and not hepb.patient.isin(shipped_population.patients["index"][early]).any()
    late = shipped_population.patients["index"][births > pd.Timestamp("1995-01-01", tz="UTC")]
    assert hepb.patient.isin(late).sum() > 0.5 * len(late)


def test_pcv7_before_2010_and_pcv13_after(shipped_population: simulator.Population) -> None:
    """The infant pneumococcal conjugate doses: none before 2000, PCV7 until February 2010, PCV13 since."""
    pcv = coded(shipped_population, "immunization", {"100", "133"})
    switch = pd.Timestamp("2010-02-01", tz="UTC")
    pcv7, pcv13 = pcv[pcv.code == "100"], pcv[pcv.code == "133"]
    assert len(pcv7) > 50 and len(pcv13) > 50
    assert (pcv7.time >= pd.Timestamp("2000-01-01", tz="UTC")).all() and (pcv7.time < switch).all()
    assert (pcv13.time >= switch).all()


def test_dtp_before_dtap(shipped_population: simulator.Population) -> None:
    dtp = coded(shipped_population, "immunization", {"01", "20"})
    start = {"01": "1949-01-01", "20": "1997-01-01"}
    for code, first in start.items():
        times = dtp.time[dtp.code == code]
        assert len(times) > 50 and (times >= pd.Timestamp(first, tz="UTC")).all(), code
    assert (dtp.time[dtp.code == "01"] < pd.Timestamp("1997-01-01", tz="UTC")).all()


def test_a_course_stops_under_the_code_it_started_under(shipped_population: simulator.Population) -> None:
    """Every stop has an earlier start of the same code for the patient, and no code starts before its date."""
    ev = shipped_population.events
    courses = ev[ev.kind.isin(["medication_start", "medication_stop"])].assign(code=lambda d: d.code.astype(str))
    courses = courses.sort_values(["patient", "code", "time"], kind="stable")
    running = np.where(courses.kind == "medication_start", 1, -1)
    open_courses = pd.Series(running, index=courses.index).groupby([courses.patient, courses.code]).cumsum()
    assert (open_courses >= 0).all() and (courses.kind == "medication_stop").sum() > 100
    canagliflozin = courses[courses.code == "1373463"]
    assert (canagliflozin.time >= pd.Timestamp("2013-01-01", tz="UTC")).all()


def equations(library: Library) -> dict[str, GfrEquation]:
    [egfr] = [o for m in library.modules for o in m.observables.values() if o.code.code == EGFR_2021]
    assert egfr.estimated is not None
    return {e.code: e for e in egfr.estimated.equations}


def test_the_equations_give_published_values(shipped_library: Library) -> None:
    """The published forms (inker2021, levey2009, levey2006) worked by hand: a man of 50 with creatinine 1.0
    mg/dL and a woman of 60 with 0.8; the 2009 equation multiplies a Black patient's value by 1.159."""
    by_code = equations(shipped_library)
    assert by_code[EGFR_2021].gfr(1.0, 50, False, "white") == pytest.approx(142 * (1.0 / 0.9) ** -1.2 * 0.9938**50)
    woman = 142 * (0.8 / 0.7) ** -1.2 * 0.9938**60 * 1.012
    assert by_code[EGFR_2021].gfr(0.8, 60, True, "white") == pytest.approx(woman)
    assert by_code[EGFR_2009].gfr(0.6, 60, True, "white") == pytest.approx(
        141 * (0.6 / 0.7) ** -0.329 * 0.993**60 * 1.018
    )
    assert by_code[EGFR_MDRD].gfr(1.5, 70, False, "white") == pytest.approx(175 * 1.5**-1.154 * 70**-0.203)
    ratio = by_code[EGFR_2009].gfr(1.2, 70, False, "black") / by_code[EGFR_2009].gfr(1.2, 70, False, "white")
    assert ratio == pytest.approx(1.159)
    for equation in by_code.values():  # the creatinine of a GFR gives that GFR back
        assert equation.gfr(equation.creatinine(37.0, 64, True, "black"), 64, True, "black") == pytest.approx(37.0)


def test_egfr_is_the_equation_of_the_creatinine_reported_with_it(
    shipped_population: simulator.Population, shipped_library: Library
) -> None:
    """Each eGFR, by the equation of its code, of the creatinine of the same time, the patient's age in
    completed years and sex (and race for the older equations); adults only; none before August 2006."""
    by_code = equations(shipped_library)
    egfr = coded(shipped_population, "observation", set(by_code))
    creatinine = coded(shipped_population, "observation", {CREATININE})[["patient", "time", "value"]]
    egfr = egfr.merge(creatinine, on=["patient", "time"], suffixes=("", "_creatinine"), how="left")
    assert egfr.value_creatinine.notna().all() and set(egfr.code) == set(by_code)
    now, born = egfr.time.dt, egfr.birth_time.dt
    age = now.year - born.year - ((now.month * 100 + now.day) < (born.month * 100 + born.day))  # completed years
    assert age.min() >= 18 and egfr.time.min() >= pd.Timestamp("2006-08-01", tz="UTC")
    expected = [
        by_code[code].gfr(scr, a, sex == "F", str(race))
        for code, scr, a, sex, race in zip(egfr.code, egfr.value_creatinine, age, egfr.sex, egfr.race, strict=True)
    ]
    off = np.abs(egfr.value.to_numpy() - np.array(expected))
    assert off.max() <= 0.5 + 1e-9  # the rounding to a whole number
    for code, first in ((EGFR_2021, "2021-09-01"), (EGFR_2009, "2009-05-01")):
        assert (egfr.time[egfr.code == code] >= pd.Timestamp(first, tz="UTC")).all()
