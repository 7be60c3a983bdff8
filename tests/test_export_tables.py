"""The per-type tables (CSV and Parquet) and the run manifest: every event lands in a table, the
tables and the FHIR output agree per patient, every file is listed with its count and checksum."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pandas as pd
from conftest import read_ndjson

from simulator.engine.codes import EVENT_KINDS
from simulator.export.bundles import SHARED_BUNDLE
from simulator.export.clinical_tables import KIND_TABLES, TABLES, _pair


def test_every_event_kind_of_the_kernel_has_a_table() -> None:
    assert set(KIND_TABLES) == set(EVENT_KINDS)
    assert set(KIND_TABLES.values()) == set(TABLES)


def test_overlapping_courses_of_one_code_pair_first_in_first_out() -> None:
    """Two modules may prescribe the same drug: each stop closes one course, none is counted twice."""
    code = pd.Categorical(["a", "a", "b"], categories=["a", "b"])
    starts = pd.DataFrame({"patient": [0, 0, 0], "code": code, "start": [1, 2, 3]})
    stops = pd.DataFrame({"patient": [0, 0], "code": pd.Categorical(["a", "a"], categories=["a", "b"]), "stop": [4, 5]})
    paired = _pair(starts, stops)
    assert paired["start"].tolist() == [1, 2, 3]
    assert paired["stop"].tolist()[:2] == [4, 5] and pd.isna(paired["stop"].iloc[2])


def test_csv_and_parquet_hold_the_same_tables(fixture_export: Path) -> None:
    for name in ("patients", "events", *TABLES):
        parquet = pd.read_parquet(fixture_export / "parquet" / f"{name}.parquet")
        csv = pd.read_csv(fixture_export / "csv" / f"{name}.csv")
        assert list(csv.columns) == list(parquet.columns) and len(csv) == len(parquet), name
    assert len(pd.read_parquet(fixture_export / "parquet" / "patients.parquet")) == 150


def test_every_event_is_in_its_table(fixture_export: Path) -> None:
    tables = {name: pd.read_parquet(fixture_export / "parquet" / f"{name}.parquet") for name in ("events", *TABLES)}
    kinds = tables["events"]["kind"].astype(str).value_counts()
    assert [kind for kind in EVENT_KINDS if not kinds.get(kind, 0)] == []
    assert len(tables["encounters"]) == kinds["encounter_start"]
    assert tables["encounters"]["end_time"].notna().sum() == kinds["encounter_end"]
    conditions = tables["conditions"]
    assert len(conditions) == kinds["condition_onset"]
    assert conditions["diagnosis_time"].notna().sum() == kinds["condition_diagnosis"]
    assert conditions["resolution_time"].notna().sum() == kinds["condition_resolved"]
    assert (
        conditions["diagnosis_time"].dropna() >= conditions.loc[conditions["diagnosis_time"].notna(), "onset_time"]
    ).all()
    medications = tables["medications"]
    assert (
        len(medications) == kinds["medication_start"]
        and medications["stop_time"].notna().sum() == kinds["medication_stop"]
    )
    for name, kind in (
        ("observations", "observation"),
        ("procedures", "procedure"),
        ("immunizations", "immunization"),
        ("symptoms", "symptom"),
        ("deaths", "death"),
    ):
        assert len(tables[name]) == kinds[kind], name
    assert tables["encounters"]["reason_condition_id"].notna().any()
    all_ids = pd.concat([tables[name]["id"] for name in TABLES])
    assert all_ids.is_unique


def _per_patient(resources: list[dict], key: str = "subject") -> Counter[str]:
    return Counter(r[key]["reference"].removeprefix("Patient/") for r in resources)


def test_tables_and_fhir_agree_per_patient(fixture_export: Path) -> None:
    """Same counts per patient: encounters, diagnosed conditions (encounter diagnoses), medications, procedures,
    immunizations; observations = measurements - blood-pressure pairs + reported symptoms + causes of death."""
    fhir = read_ndjson(fixture_export)
    table = {name: pd.read_parquet(fixture_export / "parquet" / f"{name}.parquet") for name in TABLES}

    def counts(frame: pd.DataFrame) -> Counter[str]:
        return Counter(frame["patient_id"].tolist())

    assert _per_patient(fhir["Encounter"]) == counts(table["encounters"])
    diagnoses = [c for c in fhir["Condition"] if c["category"][0]["coding"][0]["code"] == "encounter-diagnosis"]
    assert _per_patient(diagnoses) == counts(table["conditions"][table["conditions"]["diagnosis_time"].notna()])
    assert _per_patient(fhir["MedicationRequest"]) == counts(table["medications"])
    assert _per_patient(fhir["Procedure"]) == counts(table["procedures"])
    assert _per_patient(fhir["Immunization"], "patient") == counts(table["immunizations"])
    observations = table["observations"]
    systolic = observations[observations["code"].astype(str) == "8480-6"]
    diastolic = observations[observations["code"].astype(str) == "8462-4"]
    pairs = systolic.merge(diastolic, on=["patient_id", "encounter_id", "time"])
    reported = table["symptoms"][table["symptoms"]["reported_time"].notna()]  # a symptom never presented: no FHIR
    expected = counts(observations) + counts(reported) + counts(table["deaths"])
    expected.subtract(counts(pairs))
    assert _per_patient(fhir["Observation"]) == +expected
    panels = sum(1 for o in fhir["Observation"] if o["code"]["coding"][0]["code"] == "85354-9")
    assert panels == len(pairs)


def test_run_manifest_lists_every_file_with_count_and_checksum(fixture_export: Path) -> None:
    manifest = json.loads((fixture_export / "manifest.json").read_text())
    files = {p.relative_to(fixture_export).as_posix() for p in fixture_export.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    for name, entry in manifest["files"].items():
        data = (fixture_export / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data), name
        if name.endswith(".ndjson"):
            assert entry["resources"] == data.count(b"\n")
        if name.endswith(".csv"):
            assert entry["rows"] == len(pd.read_csv(fixture_export / name))
    resources = sum(v["resources"] for k, v in manifest["files"].items() if k.endswith(".ndjson"))
    shared = len(json.loads((fixture_export / "bundles" / SHARED_BUNDLE).read_text())["entry"])
    assert resources == manifest["counts"]["resources"] + shared  # + the shared provider directory
    assert manifest["formats"] == ["ndjson", "bundles", "csv", "parquet"]


def test_bulk_manifest(fixture_export: Path) -> None:
    bulk = json.loads((fixture_export / "fhir" / "manifest.json").read_text())
    assert bulk["transactionTime"] and bulk["request"] and bulk["requiresAccessToken"] is False and bulk["error"] == []
    for output in bulk["output"]:
        path = fixture_export / "fhir" / f"{output['type']}.ndjson"
        assert output["url"] == path.resolve().as_uri()  # absolute, as the Bulk Data spec asks
        assert output["count"] == len(path.read_bytes().splitlines())
