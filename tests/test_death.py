"""Death as an event of the record: every course a patient takes stops at death, and a product is never
ordered twice at once, whichever modules order it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import simulator

FIXTURE_RULES = Path(__file__).parent / "data" / "fixture" / "rules"
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
