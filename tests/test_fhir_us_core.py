"""US Core 6.1.0 shape: the profile every resource declares (`meta.profile`, from simulator/export/us_core.py),
the mandatory and must-support elements of Patient, Encounter, Condition (encounter diagnoses and problem-list
items), Observation (vital signs, labs, smoking status), DiagnosticReport (lab panels), MedicationRequest,
Procedure and Immunization, the fixed LOINC/UCUM pairs of the vital-signs profiles, and the Patient languages
against their census source."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from conftest import DATA, edited_rules_problems, read_ndjson

from simulator.days import DAYS_PER_YEAR
from simulator.export import us_core
from simulator.export.fhir_resources import communication
from simulator.model.library import Library
from simulator.model.schema import CODE_SYSTEMS

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
CAUSE_OF_DEATH = "69453-9"
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


def _profile(resource: dict) -> str | None:
    profiles = resource.get("meta", {}).get("profile", [])
    assert len(profiles) <= 1
    return profiles[0].removeprefix(US_CORE) if profiles else None


def _category(resource: dict) -> str:
    return resource["category"][0]["coding"][0]["code"]


def _resources(out: Path, resource_type: str, needle: bytes = b"") -> list[dict]:
    """The resources of one ndjson file whose line holds `needle` (parsing only those)."""
    lines = (out / "fhir" / f"{resource_type}.ndjson").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines if needle in line]


def _utc(values: pd.Series | list[str]) -> pd.Series:
    return pd.Series(pd.to_datetime(values, utc=True, format="ISO8601"))


# --- profiles ---------------------------------------------------------------------------------------------


def expected_profile(resource: dict, library: Library) -> str | None:
    """The US Core profile a resource must declare, from the us_core table."""
    kind = resource["resourceType"]
    if kind == "Condition":
        return us_core.CONDITION[_category(resource)]
    if kind == "Observation":
        code = resource["code"]["coding"][0]["code"]
        if code == CAUSE_OF_DEATH:
            return None
        if code == library.smoking_status.code.code:
            return us_core.SMOKING_STATUS
        return us_core.observation_profile(code, _category(resource))
    simple = {
        "Patient": us_core.PATIENT,
        "DiagnosticReport": us_core.DIAGNOSTIC_REPORT_LAB,
        "Procedure": us_core.PROCEDURE,
        "Immunization": us_core.IMMUNIZATION,
    }
    return simple[kind]


OWN_TYPES = ("Patient", "Condition", "Observation", "DiagnosticReport", "Procedure", "Immunization")


@pytest.mark.parametrize("cohort", ["fixture", pytest.param("shipped", marks=pytest.mark.slow)])
def test_every_resource_declares_its_us_core_profile(
    cohort: str, request: pytest.FixtureRequest, fixture_library: Library, shipped_library: Library
) -> None:
    resources = request.getfixturevalue(f"{cohort}_fhir")
    library = fixture_library if cohort == "fixture" else shipped_library
    seen: Counter[str | None] = Counter()
    for resource_type in OWN_TYPES:
        for resource in resources[resource_type]:
            profile = _profile(resource)
            assert profile == expected_profile(resource, library), (resource_type, resource["id"])
            seen[profile] += 1
    assert {
        us_core.PATIENT,
        "us-core-body-weight",
        "us-core-observation-lab",
        us_core.CONDITION["problem-list-item"],
    } <= set(seen)
    assert seen[None] == sum(1 for o in resources["Observation"] if o["code"]["coding"][0]["code"] == CAUSE_OF_DEATH)


def test_the_profile_table_names_us_core_6_1_profiles_only() -> None:
    """Every name is a US Core 6.1.0 profile (the vital-sign ones fix their LOINC code)."""
    us_core_6_1 = {
        "us-core-patient",
        "us-core-condition-encounter-diagnosis",
        "us-core-condition-problems-health-concerns",
        "us-core-diagnosticreport-lab",
        "us-core-procedure",
        "us-core-immunization",
        "us-core-smokingstatus",
        "us-core-blood-pressure",
        "us-core-heart-rate",
        "us-core-respiratory-rate",
        "us-core-body-temperature",
        "us-core-body-height",
        "us-core-body-weight",
        "us-core-bmi",
        "us-core-pulse-oximetry",
        "us-core-pediatric-bmi-for-age",
        "us-core-pediatric-weight-for-height",
        "us-core-head-circumference",
        "us-core-vital-signs",
        "us-core-observation-lab",
        "us-core-observation-clinical-result",
        "us-core-observation-screening-assessment",
        "us-core-simple-observation",
    }
    table = {
        us_core.PATIENT,
        *us_core.CONDITION.values(),
        us_core.DIAGNOSTIC_REPORT_LAB,
        us_core.PROCEDURE,
        us_core.IMMUNIZATION,
        us_core.SMOKING_STATUS,
        *us_core.OBSERVATION_BY_CODE.values(),
        *us_core.OBSERVATION_BY_CATEGORY.values(),
    }
    assert table <= us_core_6_1 and us_core.VERSION == "6.1.0"
    assert us_core.observation_profile("59408-5", "vital-signs") == "us-core-pulse-oximetry"
    assert us_core.observation_profile("59408-5", "laboratory") == "us-core-observation-lab"


# --- resources --------------------------------------------------------------------------------------------


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
        for spoken in patient.get("communication", []):
            (language,) = spoken["language"]["coding"]
            assert language["system"] == "urn:ietf:bcp:47" and language["code"] and language["display"]
    assert sum("communication" in p for p in fixture_fhir["Patient"]) > 0.9 * len(fixture_fhir["Patient"])
    deceased = [p for p in fixture_fhir["Patient"] if "deceasedDateTime" in p]
    causes = [o for o in fixture_fhir["Observation"] if o["code"]["coding"][0]["code"] == CAUSE_OF_DEATH]
    assert deceased and len(deceased) == len(causes)
    assert {c["subject"]["reference"] for c in causes} == {f"Patient/{p['id']}" for p in deceased}


def test_patient_languages_match_the_census_shares(shipped_library: Library) -> None:
    """20,000 patients with the shipped ethnicity shares speak English only, Spanish and Chinese at home in the
    national shares of the source (ACS 2019, rules/languages.yaml: of 308.8 million aged 5+, 241.0 million
    English only, 41.757 million Spanish, 3.495 million Chinese), and Hispanic patients Spanish at the Pew
    share (68%); the draw is a pure function of (seed, patient index)."""
    n = 20_000
    hispanic = {c.name: c.share for c in shipped_library.demographics.ethnicity}["hispanic"]
    index = np.arange(n)
    ethnicity = np.where(index < round(hispanic * n), "hispanic", "not_hispanic")
    patients = pd.DataFrame({"index": index, "ethnicity": ethnicity})
    spoken = communication(patients, shipped_library.languages, seed=7)
    tags = pd.Series([s[0]["language"]["coding"][0]["code"] if s else None for s in spoken])
    shares = tags.value_counts(normalize=True, dropna=False)
    for tag, source in {"en": 241.0 / 308.8, "es": 41.757 / 308.8, "zh": 3.495 / 308.8}.items():
        assert shares[tag] == pytest.approx(source, abs=4 * np.sqrt(source * (1 - source) / n)), tag
    spanish = (tags[ethnicity == "hispanic"] == "es").mean()
    assert spanish == pytest.approx(0.68, abs=4 * np.sqrt(0.68 * 0.32 / (hispanic * n)))
    again = communication(patients.iloc[::-1], shipped_library.languages, seed=7)[::-1]
    assert again.tolist() == spoken.tolist()  # each patient's own draw, whatever the rows around it


def test_encounter(fixture_fhir: dict) -> None:
    classes: Counter[str] = Counter()
    # a segment another one continues (partOf it) is not discharged: the stay goes on
    continued = {
        e["partOf"]["reference"].split("/")[1]
        for e in fixture_fhir["Encounter"]
        if "partOf" in e and e["class"]["code"] in ("IMP", "ACUTE")
    }
    for encounter in fixture_fhir["Encounter"]:
        assert encounter["status"] in ("finished", "in-progress")
        assert encounter["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
        classes[encounter["class"]["code"]] += 1
        assert _codings(encounter["type"][0], SNOMED)
        assert encounter["subject"]["reference"].startswith("Patient/")
        assert encounter["participant"][0]["individual"]["reference"].startswith("Practitioner/")
        assert encounter["serviceProvider"]["reference"].startswith("Organization/")
        assert encounter["period"]["start"]
        assert (encounter["status"] == "finished") == ("end" in encounter["period"])
        disposition = encounter.get("hospitalization", {}).get("dischargeDisposition")
        ended = encounter["status"] == "finished"
        if encounter["class"]["code"] in ("IMP", "ACUTE") and ended and encounter["id"] not in continued:
            assert disposition["coding"][0]["code"] in ("home", "exp")
        if "reasonReference" in encounter:
            assert encounter["reasonCode"] and encounter["reasonReference"][0]["reference"].startswith("Condition/")
    assert set(classes) == {"AMB", "EMER", "IMP", "ACUTE"}  # wellness, ambulatory, emergency, inpatient, icu


def test_condition(fixture_fhir: dict) -> None:
    statuses: Counter[tuple[str, str]] = Counter()
    for condition in fixture_fhir["Condition"]:
        status, category = condition["clinicalStatus"]["coding"][0]["code"], _category(condition)
        statuses[category, status] += 1
        assert condition["verificationStatus"]["coding"][0]["code"] == "confirmed"
        assert _codings(condition["code"], SNOMED)
        assert condition["subject"]["reference"].startswith("Patient/")
        assert condition["onsetDateTime"] <= condition["recordedDate"]
        assert (status == "resolved") == ("abatementDateTime" in condition)
        assert ("encounter" in condition) == (category == "encounter-diagnosis")
    assert statuses["encounter-diagnosis", "active"] and statuses["encounter-diagnosis", "resolved"]
    assert statuses["problem-list-item", "active"]


def _problem_list(conditions: list[dict]) -> list[dict]:
    """What `Condition?category=problem-list-item` finds."""
    return [
        c
        for c in conditions
        if any(coding["code"] == "problem-list-item" for k in c["category"] for coding in k["coding"])
    ]


@pytest.mark.parametrize("cohort", ["fixture", pytest.param("shipped", marks=pytest.mark.slow)])
def test_chronic_conditions_are_on_the_problem_list(
    cohort: str, request: pytest.FixtureRequest, fixture_library: Library, shipped_library: Library
) -> None:
    """Each diagnosed episode of a condition its module declares `problem_list: true` has one problem-list item
    (same patient, code, onset, recording and abatement) besides its encounter diagnosis; no other condition
    has one."""
    conditions = request.getfixturevalue(f"{cohort}_fhir")["Condition"]
    library = fixture_library if cohort == "fixture" else shipped_library
    chronic = {c.code.code for m in library.modules for c in m.conditions.values() if c.problem_list}

    def episode(c: dict) -> tuple:
        times = (c.get(k) for k in ("onsetDateTime", "recordedDate", "abatementDateTime"))
        return (c["subject"]["reference"], c["code"]["coding"][0]["code"], *times)

    problems = _problem_list(conditions)
    diagnoses = [c for c in conditions if _category(c) == "encounter-diagnosis"]
    assert problems and len(problems) + len(diagnoses) == len(conditions)
    expected = Counter(episode(c) for c in diagnoses if c["code"]["coding"][0]["code"] in chronic)
    assert Counter(episode(c) for c in problems) == expected
    assert any(c["code"]["coding"][0]["code"] not in chronic for c in diagnoses)  # acute ones stay off the list


@pytest.mark.parametrize("cohort", ["fixture_fhir", pytest.param("shipped_fhir", marks=pytest.mark.slow)])
def test_vital_signs_use_the_profile_loinc_and_ucum_pairs(cohort: str, request: pytest.FixtureRequest) -> None:
    observations = request.getfixturevalue(cohort)["Observation"]
    vitals = [o for o in observations if "category" in o and _category(o) == "vital-signs"]
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


def test_pulse_oximetry_carries_both_codes(teaching_run: Path) -> None:
    """The US Core pulse oximetry profile's code has 59408-5 (PulseOx) and 2708-6 (O2Sat) codings."""
    oximetry = _resources(teaching_run, "Observation", b'"59408-5"')
    assert oximetry
    for observation in oximetry:
        assert _codings(observation["code"], "http://loinc.org") == ["59408-5", "2708-6"]
        assert _profile(observation) == "us-core-pulse-oximetry" and observation["valueQuantity"]["code"] == "%"


def test_labs_have_ucum_units_reference_ranges_and_reports(fixture_fhir: dict) -> None:
    observations = fixture_fhir["Observation"]
    labs = [o for o in observations if "category" in o and _category(o) == "laboratory"]
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


def test_lab_reports_group_their_panel(teaching_run: Path, shipped_library: Library) -> None:
    """Every lab result is in exactly one report of its encounter and time: a panel's results together under
    the panel's code (rules/lab_panels.yaml), any other result alone under its own code."""
    members = {m: p.code.code for p in shipped_library.lab_panels.panels for m in p.members}
    labs = {
        f"Observation/{o['id']}": o
        for o in _resources(teaching_run, "Observation", b'"laboratory"')
        if _category(o) == "laboratory"
    }
    reports = _resources(teaching_run, "DiagnosticReport")
    seen: Counter[str] = Counter()
    keys: Counter[tuple] = Counter()
    for report in reports:
        code = report["code"]["coding"][0]["code"]
        results = [labs[r["reference"]] for r in report["result"]]
        seen.update(r["reference"] for r in report["result"])
        lab_codes = [r["code"]["coding"][0]["code"] for r in results]
        if code in members.values():
            assert all(members.get(c) == code for c in lab_codes) and len(set(lab_codes)) == len(lab_codes)
        else:
            assert lab_codes == [code] and code not in members
        for result in results:
            assert result["encounter"] == report["encounter"] and result["subject"] == report["subject"]
            assert result["effectiveDateTime"] == report["effectiveDateTime"]
        keys[report["encounter"]["reference"], report["effectiveDateTime"], code] += 1
    assert set(seen) == set(labs) and max(seen.values()) == 1
    assert max(keys.values()) == 1  # one report per (encounter, time, panel or code)
    # the basic metabolic panel's 8 results, with the eGFR of its creatinine for adults from the era's first
    # eGFR (MDRD, August 2006; rules/calendar.yaml) on; without it before
    metabolic = [r for r in reports if r["code"]["coding"][0]["code"] == "51990-0"]
    since = Counter(len(r["result"]) for r in metabolic if r["effectiveDateTime"] >= "2006-08-01")
    assert since[9] > 0.8 * sum(since.values()) and set(since) <= {8, 9}
    assert all(len(r["result"]) == 8 for r in metabolic if r["effectiveDateTime"] < "2006-08-01")


def test_smoking_status_is_an_observation_at_wellness_visits(teaching_run: Path, shipped_library: Library) -> None:
    """From age 13 every wellness visit records one US Core smoking status (LOINC 72166-2), whose answer is the
    smoking finding of the conditions table that began last before the visit, else never smoked; the findings
    themselves stay encounter diagnoses only."""
    rules = shipped_library.smoking_status
    findings = {c.code for c in rules.findings}
    statuses = _resources(teaching_run, "Observation", f'"{rules.code.code}"'.encode())
    for status in statuses:
        assert _category(status) == "social-history" and status["status"] == "final"
        (answer,) = status["valueCodeableConcept"]["coding"]
        assert answer["system"] == SNOMED and answer["code"] in {*findings, rules.never.code}
    parquet = teaching_run / "parquet"
    encounters = pd.read_parquet(parquet / "encounters.parquet")
    patients = pd.read_parquet(parquet / "patients.parquet").set_index("id")
    conditions = pd.read_parquet(parquet / "conditions.parquet")
    wellness = encounters[encounters["encounter_class"] == "wellness"]
    born = patients["birth_time"].reindex(wellness["patient_id"]).to_numpy()
    age_years = (wellness["start_time"].to_numpy() - born) / pd.Timedelta(days=DAYS_PER_YEAR)
    visits = wellness[age_years >= rules.minimum_age_years].set_index("id")
    recorded = pd.DataFrame(
        {
            "encounter": [s["encounter"]["reference"].removeprefix("Encounter/") for s in statuses],
            "time": _utc([s["effectiveDateTime"] for s in statuses]),
            "answer": [s["valueCodeableConcept"]["coding"][0]["code"] for s in statuses],
        }
    )
    assert recorded["encounter"].is_unique and set(recorded["encounter"]) == set(visits.index)
    started = visits.loc[recorded["encounter"], "start_time"].dt.floor("ms")
    assert (recorded["time"].to_numpy() == started.to_numpy()).all()
    smoking = conditions[conditions["code"].astype(str).isin(findings)].assign(
        onset_time=lambda frame: frame["onset_time"].dt.floor("ms")
    )
    for encounter, time, answer in recorded.itertuples(index=False):
        began = smoking[(smoking["patient_id"] == visits.at[encounter, "patient_id"]) & (smoking["onset_time"] <= time)]
        expected = str(began.sort_values("onset_time")["code"].iloc[-1]) if len(began) else rules.never.code
        assert answer == expected, encounter
    answers = Counter(recorded["answer"])
    assert all(answers[code] for code in (*findings, rules.never.code))
    for finding in findings:  # recorded as findings at the visit, never on the problem list
        recorded_as = Counter(_category(c) for c in _resources(teaching_run, "Condition", f'"{finding}"'.encode()))
        assert set(recorded_as) == {"encounter-diagnosis"}


def test_no_smoking_status_without_a_smoking_module(fixture_fhir: dict) -> None:
    """The fixture library models no smoking: its record does not claim that anyone never smoked."""
    assert not [o for o in fixture_fhir["Observation"] if o["code"]["coding"][0]["code"] == "72166-2"]


def test_medication_request(fixture_fhir: dict) -> None:
    statuses: Counter[str] = Counter()
    for request in fixture_fhir["MedicationRequest"]:
        statuses[request["status"]] += 1
        assert request["intent"] == "order"
        assert _codings(request["medicationCodeableConcept"], "http://www.nlm.nih.gov/research/umls/rxnorm")
        assert request["subject"]["reference"].startswith("Patient/") and request["authoredOn"]
        assert request["requester"]["reference"].startswith("Practitioner/")
    # every lifetime of the fixture run ends in death, which stops every course (nothing is active after death)
    assert statuses["stopped"] and not statuses["active"]
    assert any("reasonReference" in r for r in fixture_fhir["MedicationRequest"])


def test_procedure_and_immunization(fixture_fhir: dict) -> None:
    assert fixture_fhir["Procedure"] and fixture_fhir["Immunization"]
    for procedure in fixture_fhir["Procedure"]:
        assert procedure["status"] == "completed" and _codings(procedure["code"], SNOMED)
        assert procedure["subject"]["reference"].startswith("Patient/") and procedure["performedDateTime"]
    for immunization in fixture_fhir["Immunization"]:
        assert immunization["status"] == "completed" and immunization["primarySource"] is True
        assert _codings(immunization["vaccineCode"], "http://hl7.org/fhir/sid/cvx")
        assert immunization["patient"]["reference"].startswith("Patient/") and immunization["occurrenceDateTime"]


def test_symptoms_are_coded_time_stamped_observations(fixture_fhir: dict) -> None:
    symptoms = [o for o in fixture_fhir["Observation"] if "category" in o and _category(o) == "exam"]
    assert symptoms
    for symptom in symptoms:
        assert _codings(symptom["code"], SNOMED) and symptom["effectiveDateTime"]


def test_every_unit_of_the_shipped_and_fixture_modules_is_ucum(shipped_library, fixture_library) -> None:
    for library in (shipped_library, fixture_library):
        reference = library.observation_reference
        units = {o.unit for m in library.modules for o in m.observables.values() if o.unit}
        assert units
        for unit in units:
            assert reference.ucum(unit), f"unit {unit!r} is not UCUM: add it to ucum_codes or ucum_aliases"
        assert all(reference.ucum(alias) for alias in reference.ucum_aliases)
        assert all(reference.ucum(limit.unit) for limit in reference.upper_limits.values())


def test_lab_panels_list_labs_the_library_measures(shipped_library: Library) -> None:
    """Only panels whose members the shipped modules produce (as laboratory observables, or the era's
    alternatives rules/calendar.yaml names for them)."""
    codes = [o.code for m in shipped_library.modules for o in m.observables.values() if o.category == "laboratory"]
    eras = [e.code for c in codes for e in shipped_library.calendar.eras(CODE_SYSTEMS[c.system], c.code)]
    labs = {c.code for c in codes} | set(eras)
    for panel in shipped_library.lab_panels.panels:
        assert set(panel.members) <= labs, panel.code.code


def test_record_rules_mistakes_are_reported_with_their_place(tmp_path: Path) -> None:
    """A lab in two panels, shares of an undeclared language or over 1, an unknown source: each a located
    problem at load time."""
    edits = {
        "lab_panels.yaml": ('"98979-8"', '"6690-2"'),
        "languages.yaml": ("hispanic: {en: 0.32, es: 0.68}", "hispanic: {en: 0.42, es: 0.68, xx: 0.1}"),
        "smoking_status.yaml": ("age_source: cms_meaningful_use_smoking", "age_source: cms_mu"),
    }
    found = edited_rules_problems(tmp_path, DATA / "fixture" / "rules", edits, DATA / "fixture" / "modules")
    problems = {(Path(p.file).name, p.message) for p in found}
    assert problems == {
        ("lab_panels.yaml", "6690-2: a lab belongs to one panel at most"),
        ("languages.yaml", "hispanic: xx not in languages"),
        ("smoking_status.yaml", "source 'cms_mu' is not a key of sources"),
    }
    assert all(p.line > 1 for p in found)
