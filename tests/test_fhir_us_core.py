"""US Core shape: the mandatory and must-support elements of Patient, Encounter, Condition,
Observation (vital signs and labs), MedicationRequest, Procedure and Immunization, and the fixed
LOINC/UCUM pairs of the vital-signs profile."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import read_ndjson

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
UCUM = "http://unitsofmeasure.org"
# FHIR vital-signs profile: LOINC code -> the UCUM unit it requires
VITAL_SIGN_UNITS = {
    "8302-2": "cm",
    "29463-7": "kg",
    "39156-5": "kg/m2",
    "8867-4": "/min",
    "9279-1": "/min",
    "8310-5": "Cel",
    "59408-5": "%",
    "2708-6": "%",
    "9843-4": "cm",
    "8287-5": "cm",
}


@pytest.fixture(scope="module")
def fixture_fhir(fixture_export: Path) -> dict[str, list[dict]]:
    return read_ndjson(fixture_export)


@pytest.fixture(scope="module")
def shipped_fhir(shipped_export: Path) -> dict[str, list[dict]]:
    return read_ndjson(shipped_export)


def _codings(concept: dict, system: str) -> list[str]:
    return [c["code"] for c in concept["coding"] if c["system"] == system]


def test_patient(fixture_fhir: dict) -> None:
    for patient in fixture_fhir["Patient"]:
        assert patient["identifier"][0]["system"] and patient["identifier"][0]["value"] == patient["id"]
        assert patient["name"][0]["family"] and patient["name"][0]["given"][0]
        assert patient["gender"] in ("male", "female") and len(patient["birthDate"]) == 10
        assert patient["telecom"][0]["system"] == "phone" and patient["address"][0]["postalCode"]
        extensions = {e["url"]: e for e in patient["extension"]}
        for name in ("us-core-race", "us-core-ethnicity"):
            parts = {e["url"]: e for e in extensions[US_CORE + name]["extension"]}
            assert parts["text"]["valueString"]
            if "ombCategory" in parts:
                assert parts["ombCategory"]["valueCoding"]["system"] == "urn:oid:2.16.840.1.113883.6.238"
        assert extensions[US_CORE + "us-core-birthsex"]["valueCode"] == ("M" if patient["gender"] == "male" else "F")
    deceased = [p for p in fixture_fhir["Patient"] if "deceasedDateTime" in p]
    causes = [o for o in fixture_fhir["Observation"] if o["code"]["coding"][0]["code"] == "69453-9"]
    assert deceased and len(deceased) == len(causes)
    assert {c["subject"]["reference"] for c in causes} == {f"Patient/{p['id']}" for p in deceased}


def test_encounter(fixture_fhir: dict) -> None:
    classes: Counter[str] = Counter()
    for encounter in fixture_fhir["Encounter"]:
        assert encounter["status"] in ("finished", "in-progress")
        assert encounter["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
        classes[encounter["class"]["code"]] += 1
        assert _codings(encounter["type"][0], "http://snomed.info/sct")
        assert encounter["subject"]["reference"].startswith("Patient/")
        assert encounter["participant"][0]["individual"]["reference"].startswith("Practitioner/")
        assert encounter["serviceProvider"]["reference"].startswith("Organization/")
        assert encounter["period"]["start"]
        assert (encounter["status"] == "finished") == ("end" in encounter["period"])
        if encounter["class"]["code"] in ("IMP", "ACUTE") and encounter["status"] == "finished":
            assert encounter["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] in ("home", "exp")
        if "reasonReference" in encounter:
            assert encounter["reasonCode"] and encounter["reasonReference"][0]["reference"].startswith("Condition/")
    assert set(classes) == {"AMB", "EMER", "IMP", "ACUTE"}  # wellness, ambulatory, emergency, inpatient, icu


def test_condition(fixture_fhir: dict) -> None:
    statuses: Counter[str] = Counter()
    for condition in fixture_fhir["Condition"]:
        status = condition["clinicalStatus"]["coding"][0]["code"]
        statuses[status] += 1
        assert condition["verificationStatus"]["coding"][0]["code"] == "confirmed"
        assert condition["category"][0]["coding"][0]["code"] == "encounter-diagnosis"
        assert _codings(condition["code"], "http://snomed.info/sct")
        assert condition["subject"]["reference"].startswith("Patient/")
        assert condition["onsetDateTime"] <= condition["recordedDate"]
        assert (status == "resolved") == ("abatementDateTime" in condition)
    assert statuses["active"] and statuses["resolved"]


@pytest.mark.parametrize("cohort", ["fixture_fhir", pytest.param("shipped_fhir", marks=pytest.mark.slow)])
def test_vital_signs_use_the_profile_loinc_and_ucum_pairs(cohort: str, request: pytest.FixtureRequest) -> None:
    observations = request.getfixturevalue(cohort)["Observation"]
    vitals = [o for o in observations if "category" in o and o["category"][0]["coding"][0]["code"] == "vital-signs"]
    codes: Counter[str] = Counter()
    for observation in vitals:
        code = _codings(observation["code"], "http://loinc.org")[0]
        codes[code] += 1
        assert observation["status"] == "final" and observation["effectiveDateTime"] and observation["encounter"]
        if code == "85354-9":
            components = {
                _codings(c["code"], "http://loinc.org")[0]: c["valueQuantity"] for c in observation["component"]
            }
            assert set(components) == {"8480-6", "8462-4"} and "valueQuantity" not in observation
            assert all(q["system"] == UCUM and q["code"] == "mm[Hg]" for q in components.values())
        else:
            quantity = observation["valueQuantity"]
            assert quantity["system"] == UCUM and quantity["code"] == quantity["unit"]
            if code in VITAL_SIGN_UNITS:
                assert quantity["code"] == VITAL_SIGN_UNITS[code], code
    assert codes["8302-2"] and codes["29463-7"] and codes["8310-5"]


@pytest.mark.slow
def test_blood_pressure_readings_become_panels(shipped_fhir: dict) -> None:
    codes = Counter(o["code"]["coding"][0]["code"] for o in shipped_fhir["Observation"])
    assert codes["85354-9"] > 100
    assert codes["8480-6"] == codes["8462-4"] == 0  # the shipped vital signs always measure both


def test_labs_have_ucum_units_reference_ranges_and_reports(fixture_fhir: dict) -> None:
    observations = fixture_fhir["Observation"]
    labs = [o for o in observations if "category" in o and o["category"][0]["coding"][0]["code"] == "laboratory"]
    assert labs
    for lab in labs:
        assert lab["valueQuantity"]["system"] == UCUM
    hba1c = [o for o in labs if o["code"]["coding"][0]["code"] == "4548-4"]
    flags = Counter(o["interpretation"][0]["coding"][0]["code"] for o in hba1c)
    assert flags["H"] and flags["N"]
    for o in hba1c:
        assert (o["valueQuantity"]["value"] >= o["referenceRange"][0]["high"]["value"]) == (
            o["interpretation"][0]["coding"][0]["code"] == "H"
        )
    reported = {r["reference"] for report in fixture_fhir["DiagnosticReport"] for r in report["result"]}
    assert reported == {f"Observation/{o['id']}" for o in labs}
    for report in fixture_fhir["DiagnosticReport"]:
        assert report["status"] == "final" and report["category"][0]["coding"][0]["code"] == "LAB"


def test_medication_request(fixture_fhir: dict) -> None:
    statuses: Counter[str] = Counter()
    for request in fixture_fhir["MedicationRequest"]:
        statuses[request["status"]] += 1
        assert request["intent"] == "order"
        assert _codings(request["medicationCodeableConcept"], "http://www.nlm.nih.gov/research/umls/rxnorm")
        assert request["subject"]["reference"].startswith("Patient/") and request["authoredOn"]
        assert request["requester"]["reference"].startswith("Practitioner/")
    assert statuses["active"] and statuses["stopped"]
    assert any("reasonReference" in r for r in fixture_fhir["MedicationRequest"])


def test_procedure_and_immunization(fixture_fhir: dict) -> None:
    assert fixture_fhir["Procedure"] and fixture_fhir["Immunization"]
    for procedure in fixture_fhir["Procedure"]:
        assert procedure["status"] == "completed" and _codings(procedure["code"], "http://snomed.info/sct")
        assert procedure["subject"]["reference"].startswith("Patient/") and procedure["performedDateTime"]
    for immunization in fixture_fhir["Immunization"]:
        assert immunization["status"] == "completed" and immunization["primarySource"] is True
        assert _codings(immunization["vaccineCode"], "http://hl7.org/fhir/sid/cvx")
        assert immunization["patient"]["reference"].startswith("Patient/") and immunization["occurrenceDateTime"]


def test_symptoms_are_coded_time_stamped_observations(fixture_fhir: dict) -> None:
    symptoms = [
        o for o in fixture_fhir["Observation"] if "category" in o and o["category"][0]["coding"][0]["code"] == "exam"
    ]
    assert symptoms
    for symptom in symptoms:
        assert _codings(symptom["code"], "http://snomed.info/sct") and symptom["effectiveDateTime"]


def test_every_unit_of_the_shipped_and_fixture_modules_is_ucum(shipped_library, fixture_library) -> None:
    for library in (shipped_library, fixture_library):
        reference = library.observation_reference
        units = {o.unit for m in library.modules for o in m.observables.values() if o.unit}
        assert units
        for unit in units:
            assert reference.ucum(unit), f"unit {unit!r} is not UCUM: add it to ucum_codes or ucum_aliases"
        assert all(reference.ucum(alias) for alias in reference.ucum_aliases)
        assert all(reference.ucum(limit.unit) for limit in reference.upper_limits.values())
