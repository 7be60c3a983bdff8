"""Symptoms: one 0-10 severity scale for every symptom (docs/module-format.md, Symptom), and each reported at
the encounter where the patient presents it, its onset kept as the ground truth (clinical_tables._symptoms)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import read_ndjson
from pydantic import ValidationError

from simulator.export.clinical_tables import SYMPTOM_REPORT_WITHIN
from simulator.model.library import Library
from simulator.model.schema import SYMPTOM_SCALE_MAX, Symptom

CODE = {"system": "SNOMED", "code": "49727002", "display": "Cough (finding)"}


def test_every_shipped_symptom_is_on_the_one_scale(shipped_library: Library) -> None:
    ranges = [
        (symptom.severity.low, symptom.severity.high)
        for module in shipped_library.modules
        for state in module.states.values()
        for symptom in state.symptom
    ]
    assert len(ranges) > 20
    assert all(0 <= low <= high <= SYMPTOM_SCALE_MAX for low, high in ranges)


def test_a_severity_off_the_scale_is_refused() -> None:
    with pytest.raises(ValidationError, match="0-10 scale"):
        Symptom.model_validate(
            {"code": CODE, "severity": {"distribution": "uniform", "low": 25, "high": 75}, "source": "a"}
        )
    Symptom.model_validate({"code": CODE, "severity": {"distribution": "normal", "mean": 6, "sd": 2}, "source": "a"})


def test_drawn_severities_stay_on_the_scale(fixture_export: Path) -> None:
    """The fixture draws severities from normal and exponential distributions: clipped to 0-10."""
    symptoms = pd.read_parquet(fixture_export / "parquet" / "symptoms.parquet")
    assert len(symptoms) > 50
    assert symptoms["severity"].between(0, SYMPTOM_SCALE_MAX).all()


def _reported(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    symptoms = pd.read_parquet(out / "parquet" / "symptoms.parquet")
    encounters = pd.read_parquet(out / "parquet" / "encounters.parquet")
    return symptoms, encounters


def test_symptoms_are_reported_inside_the_encounter_they_are_presented_at(shipped_export: Path) -> None:
    symptoms, encounters = _reported(shipped_export)
    reported = symptoms[symptoms["reported_time"].notna()]
    assert len(reported) > 20
    assert reported["encounter_id"].notna().all()
    assert (symptoms["encounter_id"].notna() == symptoms["reported_time"].notna()).all()
    assert (reported["reported_time"] >= reported["time"]).all()
    assert (reported["reported_time"] - reported["time"] <= SYMPTOM_REPORT_WITHIN).all()
    inside = reported.merge(encounters[["id", "start_time", "end_time"]], left_on="encounter_id", right_on="id")
    assert len(inside) == len(reported)
    assert (inside["reported_time"] >= inside["start_time"]).all()
    ended = inside[inside["end_time"].notna()]
    assert (ended["reported_time"] <= ended["end_time"]).all()
    # most symptoms begin before the visit (an infection's onset, days before it is seen)
    assert (reported["reported_time"] > reported["time"]).mean() > 0.3


def test_fhir_symptoms_carry_the_presenting_encounter_and_time(shipped_export: Path) -> None:
    symptoms, _ = _reported(shipped_export)
    reported = symptoms[symptoms["reported_time"].notna()].set_index("id")
    fhir = {o["id"]: o for o in read_ndjson(shipped_export)["Observation"] if o["id"] in reported.index}
    assert len(fhir) == len(reported)
    for resource_id, observation in fhir.items():
        row = reported.loc[resource_id]
        assert observation["encounter"]["reference"] == f"Encounter/{row['encounter_id']}"
        assert abs(pd.Timestamp(observation["effectiveDateTime"]) - row["reported_time"]) < pd.Timedelta(seconds=1)
