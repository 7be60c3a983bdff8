"""Clinical invariants hold on every generated cohort, and the checks themselves catch violations."""

from __future__ import annotations

import pandas as pd
import pytest

from simulator.tables.invariants import check_invariants

SHIPPED = [pytest.param(c, marks=pytest.mark.slow) for c in ("shipped_population", "shipped_lifetime")]


@pytest.mark.parametrize("cohort", ["fixture_population", *SHIPPED])
def test_generated_cohorts_satisfy_every_invariant(cohort: str, request: pytest.FixtureRequest) -> None:
    population = request.getfixturevalue(cohort)
    assert len(population.events) > 0
    violations = {
        name: found for name, found in check_invariants(population.patients, population.events).items() if found
    }
    assert violations == {}


@pytest.mark.slow
def test_lifetime_cohort_everyone_dies_and_population_cohort_is_mostly_alive(
    shipped_population, shipped_lifetime
) -> None:
    assert shipped_lifetime.patients["death_time"].notna().all()
    living = shipped_population.patients[~shipped_population.patients["is_decedent"]]
    assert living["death_time"].isna().mean() > 0.95  # background mortality is conditioned away
    decedents = shipped_population.patients[shipped_population.patients["is_decedent"]]
    assert decedents["death_time"].notna().all()


def _broken(population, mutate) -> dict[str, list[str]]:
    events = population.events.copy()
    patients = population.patients.copy()
    mutate(patients, events)
    return {k: v for k, v in check_invariants(patients, events).items() if v}


def _first_row(events: pd.DataFrame, kind: str) -> int:
    return int(events.index[events["kind"] == kind][0])


def test_checks_catch_time_going_backwards(fixture_population) -> None:
    def mutate(patients, events):
        row = _first_row(events, "encounter_end")
        events.loc[row, "time"] = events.loc[row, "time"] - pd.Timedelta(days=3650)

    assert {"events_ordered", "encounters_end"} <= set(_broken(fixture_population, mutate))


def test_checks_catch_events_after_death(fixture_population) -> None:
    def mutate(patients, events):
        patients.loc[0, "death_time"] = events.loc[events["patient"] == 0, "time"].iloc[0] - pd.Timedelta(days=1)

    assert "nothing_after_death" in _broken(fixture_population, mutate)


def test_checks_catch_encounter_without_end(fixture_population) -> None:
    def mutate(patients, events):
        events.loc[_first_row(events, "encounter_end"), "kind"] = "symptom"  # the end disappears

    assert "encounters_end" in _broken(fixture_population, mutate)


def test_checks_catch_observation_outside_encounter(fixture_population) -> None:
    def mutate(patients, events):
        events.loc[_first_row(events, "observation"), "encounter"] = -1

    assert "observations_in_encounters" in _broken(fixture_population, mutate)


def test_checks_catch_medication_stopped_before_started(fixture_population) -> None:
    def mutate(patients, events):
        events.loc[_first_row(events, "medication_start"), "kind"] = "medication_stop"

    assert "medications_started_before_stopped" in _broken(fixture_population, mutate)


def test_checks_catch_diagnosis_before_onset(fixture_population) -> None:
    def mutate(patients, events):
        events.loc[_first_row(events, "condition_onset"), "kind"] = "symptom"

    assert "diagnosis_after_onset" in _broken(fixture_population, mutate)


def test_checks_catch_unknown_code_system(fixture_population) -> None:
    def mutate(patients, events):
        events["system"] = events["system"].cat.add_categories(["http://example.org/made-up"])
        events.loc[0, "system"] = "http://example.org/made-up"

    assert "codes_valid" in _broken(fixture_population, mutate)
