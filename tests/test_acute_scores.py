"""Pain and Glasgow coma scores at acute encounters (modules/acute_scores.yaml): a 0-10 pain rating at every
emergency visit and ward admission that follows the presentation, the Glasgow coma score at the emergency visits
of stroke, ketoacidosis and pneumonia and hourly in the ICU, lower where the illness clouds consciousness."""

from __future__ import annotations

import pandas as pd
import pytest

import simulator
from simulator.engine.compiler import start_observations
from simulator.model.library import Library

PAIN, GCS = "72514-3", "9269-2"


def test_scores_are_integer_observables_on_their_scales(shipped_library: Library) -> None:
    scores = shipped_library.module("acute_scores").observables
    assert (scores["pain_score"].decimals, tuple(scores["pain_score"].limits)) == (0, (0, 10))
    assert (scores["gcs_total"].decimals, tuple(scores["gcs_total"].limits)) == (0, (3, 15))
    assert "pain_score" in start_observations(shipped_library, "emergency")
    assert "pain_score" in start_observations(shipped_library, "inpatient")
    assert "gcs_total" in start_observations(shipped_library, "icu")


def _at_start(population: simulator.Population, code: str, encounter_class: str) -> pd.DataFrame:
    """Each encounter of the class with its reading of the code at its start (NaN: none), and the module that
    started it."""
    events = population.events
    starts = events[(events["kind"] == "encounter_start") & (events["encounter_class"] == encounter_class)]
    readings = events[(events["kind"] == "observation") & (events["code"] == code)]
    return starts[["patient", "encounter", "time", "module"]].merge(
        readings[["patient", "encounter", "time", "value"]], on=["patient", "encounter", "time"], how="left"
    )


def _on_scale(values: pd.Series, low: int, high: int) -> bool:
    return bool(((values >= low) & (values <= high) & (values == values.round())).all())


@pytest.mark.slow
def test_every_emergency_visit_rates_pain_from_2001(shipped_population: simulator.Population) -> None:
    visits = _at_start(shipped_population, PAIN, "emergency")
    recent = visits["time"] >= pd.Timestamp("2001-01-01", tz="UTC")
    assert recent.sum() > 100 and (~recent).sum() > 20
    assert visits.loc[recent, "value"].notna().all()
    assert visits.loc[~recent, "value"].isna().all()
    assert _on_scale(visits["value"].dropna(), 0, 10)


@pytest.mark.slow
def test_pain_follows_the_presentation(shipped_population: simulator.Population) -> None:
    """Infarction (median 8 of body2016) above pneumonia (pleuritic pain) above the baseline of a ward admission
    after the emergency department has treated the pain."""
    visits = _at_start(shipped_population, PAIN, "emergency").dropna(subset=["value"])
    by_module = visits.groupby("module")["value"].agg(["mean", "size"])
    infarction, pneumonia = by_module.loc["coronary_heart_disease"], by_module.loc["pneumonia_sepsis"]
    admissions = _at_start(shipped_population, PAIN, "inpatient")["value"].dropna()
    assert infarction["size"] >= 10 and pneumonia["size"] >= 10 and len(admissions) > 100
    assert 5.5 < infarction["mean"] < 8.5
    assert 2.5 < pneumonia["mean"] < 5.5
    assert admissions.mean() < 2
    assert infarction["mean"] > pneumonia["mean"] + 1 > admissions.mean() + 2


@pytest.mark.slow
def test_glasgow_coma_score_where_consciousness_is_assessed(shipped_population: simulator.Population) -> None:
    """Hourly on the ICU chart of every ICU stay, at the stroke and pneumonia emergency visits; septic shock and
    stroke lower it, a patient without either scores 15."""
    events = shipped_population.events
    readings = events[(events["kind"] == "observation") & (events["code"] == GCS)]
    assert _on_scale(readings["value"], 3, 15)
    icu = _at_start(shipped_population, GCS, "icu")
    scored = icu["time"] >= pd.Timestamp("1974-07-01", tz="UTC")  # the scale's publication (rules/calendar.yaml)
    assert scored.sum() >= 10 and icu.loc[scored, "value"].notna().all() and icu.loc[~scored, "value"].isna().all()
    assert icu["value"].mean() < 14
    emergency = _at_start(shipped_population, GCS, "emergency").dropna(subset=["value"])
    stroke = emergency[emergency["module"] == "stroke"]["value"]
    assert len(stroke) >= 10 and stroke.mean() < 14.5
    elsewhere = readings[~readings["module"].isin(["stroke", "pneumonia_sepsis", "type1_diabetes"])]
    assert elsewhere.empty
