"""Death as an event of the record: every course a patient takes stops at death, and a product is never
ordered twice at once, whichever modules order it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simulator
from simulator.engine.compiler import admission_observations
from simulator.export.clinical_tables import build_tables
from simulator.export.context import ExportContext
from simulator.model.loading import load_library

FIXTURE = Path(__file__).parent / "data" / "fixture"
FIXTURE_RULES = FIXTURE / "rules"
FIXTURE_LIBRARY = {"modules": FIXTURE / "modules", "rules_dir": FIXTURE_RULES}
LIFETIMES = ["fixture_population", pytest.param("shipped_lifetime", marks=pytest.mark.slow)]


def _courses_open_at_end(events: pd.DataFrame) -> pd.Series:
    """Per patient and product: courses started minus courses stopped over the whole record."""
    meds = events[events["kind"].isin(["medication_start", "medication_stop"])]
    sign = (meds["kind"] == "medication_start").astype(int) * 2 - 1
    return sign.groupby([meds["patient"], meds["code"]], observed=True).sum()


@pytest.mark.parametrize("cohort", LIFETIMES)
def test_no_medication_is_active_after_death(cohort: str, request: pytest.FixtureRequest) -> None:
    population = request.getfixturevalue(cohort)
    events, patients = population.events, population.patients
    assert patients["death_time"].notna().all()
    assert (events["kind"] == "medication_start").any()
    open_courses = _courses_open_at_end(events)
    assert (open_courses == 0).all(), open_courses[open_courses != 0].head()
    stops = events[events["kind"] == "medication_stop"].merge(
        patients[["index", "death_time"]], left_on="patient", right_on="index"
    )
    assert (stops["time"] <= stops["death_time"]).all()
    at_death = stops[stops["time"] == stops["death_time"]]
    assert len(at_death) > 0  # some courses were still running when the patient died


def test_a_stop_at_death_belongs_to_the_module_that_started_the_course(fixture_population) -> None:
    events = fixture_population.events
    meds = events[events["kind"].isin(["medication_start", "medication_stop"])]
    deaths = fixture_population.patients.set_index("index")["death_time"]
    at_death = meds[(meds["kind"] == "medication_stop") & (meds["time"] == meds["patient"].map(deaths))]
    assert len(at_death) > 0
    starts = meds[meds["kind"] == "medication_start"]
    last_start = starts.groupby(["patient", "code"], observed=True)["module"].last()
    started_by = last_start.reindex(pd.MultiIndex.from_frame(at_death[["patient", "code"]])).to_numpy()
    assert (at_death["module"].astype(str).to_numpy() == started_by.astype(str)).all()


_ORDERING_MODULE = """
name: {name}
title: Orders acetaminophen (test fixture)
sources: {{a: "assumption: test fixture values"}}
medications:
  {name}_acetaminophen: {{code: {{system: RxNorm, code: "313782", display: Acetaminophen 325 MG Oral Tablet}}}}
start: {name}_wait
states:
  {name}_wait:
    after: {{distribution: exact, value: {start_day}, unit: days, source: a}}
    next: {name}_visit
  {name}_visit:
    encounter:
      class: ambulatory
      code: {{system: SNOMED, code: "185347001", display: Encounter for problem (procedure)}}
      duration: {{distribution: exact, value: 20, unit: minutes, source: a}}
    start_medication: [{name}_acetaminophen]
    after: {{distribution: exact, value: 10, unit: days, source: a}}
    next: {name}_stop
  {name}_stop:
    stop_medication: [{name}_acetaminophen]
    terminal: true
"""


def test_a_product_already_taken_is_not_ordered_again_by_another_module(tmp_path: Path) -> None:
    for name, start_day in (("first", 1), ("second", 5)):
        (tmp_path / f"{name}.yaml").write_text(_ORDERING_MODULE.format(name=name, start_day=start_day))
    population = simulator.generate(patients=40, seed=3, mode="lifetime", modules_dir=tmp_path, rules_dir=FIXTURE_RULES)
    meds = population.events[population.events["kind"].isin(["medication_start", "medication_stop"])]
    lived = population.patients.loc[
        population.patients["death_time"] - population.patients["birth_time"] > pd.Timedelta(days=30), "index"
    ]
    meds = meds[meds["patient"].isin(lived)]
    assert len(lived) > 30
    # the second module's order comes while the first's course runs: one course, started and stopped by the first
    assert set(meds["module"].astype(str)) == {"first"}
    kinds = meds["kind"].astype(str).groupby(meds["patient"]).agg(tuple)
    assert len(kinds) == len(lived)
    assert kinds.map(lambda k: k == ("medication_start", "medication_stop")).all()


def _expected_cause_shares(library, deaths: pd.DataFrame) -> pd.DataFrame:
    """Per background death (rows of `deaths` with age_years, sex and time), the table's share of each cause in
    its age band and sex (columns: cause codes)."""
    causes = library.mortality.causes
    band = np.searchsorted(np.array(causes.age), deaths["age_years"].to_numpy(), side="right") - 1
    table_of = {
        s: np.array([getattr(c, sex) for c in causes.causes], np.float64).T
        for s, sex in (("M", "male"), ("F", "female"))
    }
    rows = []
    for s, b, year in zip(deaths["sex"], band, deaths["time"].dt.year, strict=True):
        deaths_then = table_of[s][b] * np.array([c.since is None or c.since <= year for c in causes.causes])
        rows.append(deaths_then / deaths_then.sum())  # a cause with `since` is drawn only from its year
    return pd.DataFrame(rows, columns=[c.code.code for c in causes.causes], index=deaths.index)


@pytest.mark.parametrize("cohort", LIFETIMES)
def test_background_death_causes_follow_the_table_by_age_and_sex(cohort: str, request: pytest.FixtureRequest) -> None:
    """The causes of background deaths match the NCHS shares of each age band and sex: per broad age group,
    each cause's count lies within 4 standard errors of the sum of its per-death probabilities."""
    population = request.getfixturevalue(cohort)
    library = load_library(**(FIXTURE_LIBRARY if cohort == "fixture_population" else {}))
    events, patients = population.events, population.patients.set_index("index")
    deaths = events[(events["kind"] == "death") & events["module"].isna()].copy()  # background deaths
    assert len(deaths) > 100
    deaths["age_years"] = (deaths["time"] - deaths["patient"].map(patients["birth_time"])).dt.days / 365.25
    deaths["sex"] = deaths["patient"].map(patients["sex"]).astype(str)
    expected = _expected_cause_shares(library, deaths)
    groups = pd.cut(deaths["age_years"], [0, 45, 65, 75, 85, 200], right=False)
    checked = 0
    for _, rows in deaths.groupby(groups, observed=True):
        if len(rows) < 40:
            continue
        p = expected.loc[rows.index]
        observed = rows["code"].astype(str).value_counts().reindex(p.columns, fill_value=0)
        sd = np.sqrt((p * (1 - p)).sum())
        assert (abs(observed - p.sum()) <= 4 * sd + 1).all(), (observed.to_dict(), p.sum().to_dict())
        checked += 1
    assert checked >= 2
    assert set(deaths["code"].astype(str)) <= set(expected.columns)


def _terminal_stays(events: pd.DataFrame) -> pd.DataFrame:
    """The terminal stays (inpatient encounters no module started) with their admission, end and the patient's
    death and previous event times."""
    stays = events[(events["kind"] == "encounter_start") & events["module"].isna()][["patient", "encounter", "time"]]
    ends = events[(events["kind"] == "encounter_end") & events["module"].isna()][["patient", "encounter", "time"]]
    deaths = events[events["kind"] == "death"].set_index("patient")["time"]
    stays = stays.merge(ends, on=["patient", "encounter"], suffixes=("_start", "_end"))
    stays["death"] = stays["patient"].map(deaths)
    return stays


@pytest.mark.parametrize("cohort", LIFETIMES)
def test_deaths_outside_an_encounter_end_a_terminal_stay_at_the_share_of_deaths_in_hospital(
    cohort: str, request: pytest.FixtureRequest
) -> None:
    """Among background deaths with no encounter open, the share ending a terminal stay is `in_hospital.share`
    (within 4 standard errors); a stay ends at death and starts before it, nothing but its own records happens
    while it lasts, and its admission records the acute vital signs."""
    population = request.getfixturevalue(cohort)
    library = load_library(**(FIXTURE_LIBRARY if cohort == "fixture_population" else {}))
    share = library.mortality.in_hospital.share
    events = population.events
    deaths = events[events["kind"] == "death"].set_index("patient")["time"]
    ends_at_death = events[(events["kind"] == "encounter_end") & (events["time"] == events["patient"].map(deaths))]
    in_module_encounter = set(ends_at_death.loc[ends_at_death["module"].notna(), "patient"])
    background = events[(events["kind"] == "death") & events["module"].isna()]["patient"]
    outside = background[~background.isin(in_module_encounter)]
    stays = _terminal_stays(events)
    assert stays["patient"].is_unique
    assert (stays["time_end"] == stays["death"]).all() and (stays["time_start"] < stays["death"]).all()
    n, k = len(outside), outside.isin(set(stays["patient"])).sum()
    assert n > 100
    assert abs(k / n - share) <= 4 * np.sqrt(share * (1 - share) / n), (k, n, share)
    during = events.merge(stays, on="patient")
    in_stay = during["encounter_x"] == during["encounter_y"]
    later = during[(during["time"] > during["time_start"]) & (during["time"] < during["death"])]
    assert (later["encounter_x"] == later["encounter_y"]).all()  # nothing else happens in the stay
    assert during.loc[in_stay & (during["kind"] != "death"), "module"].isna().all()  # a module's death ends it
    admission = during[in_stay & (during["time"] == during["time_start"]) & (during["kind"] == "observation")]
    observables = {name: o for m in library.modules for name, o in m.observables.items()}
    first_reading = observables[admission_observations(library)[0]].code
    readings = admission[admission["code"].astype(str) == first_reading.code]
    assert set(readings["patient"]) == set(stays["patient"])  # the inpatient start's readings at admission


def test_a_terminal_stay_reads_like_a_death_in_hospital(fixture_population) -> None:
    """The death that ends a terminal stay records its encounter, the stay is an emergency admission (`emd`) for
    the cause of the death (unless unspecified), the deaths table links each death to the encounter it ended
    (the stay, or a module's expired one), and the stay's readings shift toward death by the rule's shift
    times 1 - hours before death / window (the fixture shifts height by 10 cm over 48 hours)."""
    library = load_library(**FIXTURE_LIBRARY)
    deteriorate = library.mortality.in_hospital.deteriorate
    events, patients = fixture_population.events, fixture_population.patients
    stays = _terminal_stays(events)
    deaths = events[events["kind"] == "death"].set_index("patient")
    assert (deaths.loc[stays["patient"], "encounter"].to_numpy() == stays["encounter"].to_numpy()).all()
    others = deaths.drop(index=stays["patient"])
    assert others["encounter"].isna().all() or (others["encounter"] < 0).all()

    tables = build_tables(patients, events, ExportContext.from_library(library, 8, "test", len(patients)))
    admissions = tables["encounters"][tables["encounters"]["module"].isna()]
    assert len(admissions) == len(stays) and (admissions["admit_source"] == "emd").all()
    died_in = set(tables["deaths"]["encounter_id"].dropna())
    expired = tables["encounters"].loc[tables["encounters"]["discharge_disposition"] == "exp", "id"]
    assert set(admissions["id"]) <= died_in and died_in == set(expired)
    # the stay is for the cause of the death, unless that is the unspecified Death (event)
    cause = tables["deaths"].set_index("patient")["code"].reindex(admissions["patient"]).to_numpy(dtype=object)
    specified = cause != library.mortality.cause.code
    reason = admissions["reason_code"].to_numpy(dtype=object)
    assert specified.any() and (~specified).any()
    assert (reason[specified] == cause[specified]).all() and pd.isna(reason[~specified]).all()
    assert admissions["reason_display"].notna().sum() == specified.sum()

    height = library.modules[[m.name for m in library.modules].index("vitals")].observables["height"].code.code
    readings = events[(events["kind"] == "observation") & (events["code"].astype(str) == height)].merge(
        stays, on=["patient", "encounter"]
    )
    hours = (readings["death"] - readings["time"]) / pd.Timedelta(hours=1)
    weight = np.clip(1 - hours / deteriorate.window_hours, 0, None)
    by = readings["patient"]
    dw = weight - weight.groupby(by).transform("mean")
    dr = readings["value"] - readings["value"].groupby(by).transform("mean")
    assert (dw**2).sum() > 1
    slope = (dw * dr).sum() / (dw**2).sum()
    assert abs(slope - deteriorate.shifts["height"]) < 3, slope
