"""US Core 6.1.0 Encounter and MedicationRequest: the segments of a hospital stay are `partOf` its admission,
which says where the patient came from; only a real discharge has a disposition (`exp` when the patient died);
every MedicationRequest has a category by where the course is taken and a cited dosage (UCUM dose, SNOMED CT
route, timing bounded by the course) from rules/medication_dosing.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from conftest import edited_rules_problems, read_ndjson

import simulator
from simulator.export.clinical_tables import TRANSFER_GAP, build_tables
from simulator.export.context import ExportContext
from simulator.export.fhir_resources import encounter_resources, medication_resources
from simulator.export.fhir_text import References
from simulator.model.library import Library
from simulator.model.loading import load_library

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
# SNOMED CT routes of administration, checked against the FHIR SNOMEDCTRouteCodes expansion
# (https://hl7.org/fhir/R4/valueset-route-codes.html): code -> display.
ROUTES = {
    "26643006": "Oral route",
    "447694001": "Respiratory tract route",
    "34206005": "Subcutaneous route",
    "47625008": "Intravenous route",
}
# UCUM dose units: counted annotations, and the mass and unit atoms with their per-kilogram forms.
UCUM_DOSE = {"{tablet}", "{capsule}", "{puff}", "{inhalation}", "g", "mg", "mg/kg", "[IU]", "[IU]/kg"}
STAY_CLASSES = ("IMP", "ACUTE")

# A module of every path through a hospital: an emergency visit sends the patient home, to the ward (10 minutes
# after it ends) or to the ICU, which ends in death or a transfer to the ward; or a planned one-day admission.
STAYS_MODULE = """
name: stays
title: Hospital stays (test)
sources:
  a: "assumption: test values"
conditions:
  flu: {code: {system: SNOMED, code: "6142004", display: Influenza (disorder)}}
medications:
  acetaminophen: {code: {system: RxNorm, code: "313782", display: Acetaminophen 325 MG Oral Tablet}}
  metformin:
    code: {system: RxNorm, code: "860975", display: 24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet}
start: well
states:
  well:
    after: {distribution: uniform, low: 20, high: 40, unit: years, source: a}
    branches:
      - {to: emergency, probability: 0.8, source: a}
      - {to: elective, probability: 0.2, source: a}
  emergency:
    encounter:
      class: emergency
      code: {system: SNOMED, code: "50849002", display: Emergency room admission (procedure)}
      reason: flu
    onset: [flu]
    diagnose: [flu]
    start_medication: [acetaminophen]
    after: {distribution: exact, value: 4, unit: hours, source: a}
    next: leave_emergency
  leave_emergency:
    end_encounter: true
    branches:
      - {to: icu, probability: 0.4, source: a}
      - {to: to_ward, probability: 0.3, source: a}
      - {to: recovering, probability: 0.3, source: a}
  to_ward:
    after: {distribution: exact, value: 10, unit: minutes, source: a}
    next: ward
  icu:
    encounter:
      class: icu
      code: {system: SNOMED, code: "305351004", display: Admission to intensive care unit (procedure)}
      reason: flu
    after: {distribution: exact, value: 2, unit: days, source: a}
    branches:
      - {to: icu_death, probability: 0.25, source: a}
      - {to: leave_icu, probability: 0.75, source: a}
  icu_death:
    death: {cause: {system: SNOMED, code: "6142004", display: Influenza (disorder)}}
  leave_icu:
    end_encounter: true
    next: ward
  ward:
    encounter:
      class: inpatient
      code: {system: SNOMED, code: "32485007", display: Hospital admission (procedure)}
      reason: flu
    after: {distribution: exact, value: 3, unit: days, source: a}
    next: discharge
  discharge:
    stop_medication: [acetaminophen]
    resolve: [flu]
    end_encounter: true
    terminal: true
  recovering:
    after: {distribution: exact, value: 5, unit: days, source: a}
    next: recovered
  recovered:
    resolve: [flu]
    stop_medication: [acetaminophen]
    terminal: true
  elective:
    encounter:
      class: inpatient
      code: {system: SNOMED, code: "32485007", display: Hospital admission (procedure)}
      duration: {distribution: exact, value: 1, unit: days, source: a}
    start_medication: [metformin]
    terminal: true
"""


@dataclass(frozen=True)
class Stays:
    tables: dict[str, pd.DataFrame]
    encounters: dict[str, dict]  # by id
    requests: list[dict]


@pytest.fixture(scope="module")
def stays(tmp_path_factory: pytest.TempPathFactory, bare_rules: Path) -> Stays:
    """200 lifetimes of the stays module: its tables and the Encounter and MedicationRequest resources."""
    modules = tmp_path_factory.mktemp("stays")
    (modules / "stays.yaml").write_text(STAYS_MODULE)
    library = load_library(modules, bare_rules)
    population = simulator.generate(patients=200, seed=1, mode="lifetime", modules_dir=modules, rules_dir=bare_rules)
    context = ExportContext.from_library(library, 1, "test", 200)
    tables = build_tables(population.patients, population.events, context)
    refs = References(urn=False, line_end="\n")
    encounters = encounter_resources(tables["encounters"], refs).sorted_json().to_pylist()
    providers = context.directory.patient_providers(population.patients).set_index(population.patients["index"])
    requests = medication_resources(
        tables["medications"], tables["encounters"], tables["deaths"], library.medication_dosing, refs, providers
    ).sorted_json()
    by_id = {e["id"]: e for e in map(orjson.loads, encounters)}
    return Stays(tables, by_id, [orjson.loads(r) for r in requests.to_pylist()])


def _code(concept: dict | None) -> str | None:
    return concept["coding"][0]["code"] if concept else None


def _hospitalization(encounter: dict, key: str) -> str | None:
    return _code(encounter.get("hospitalization", {}).get(key))


def _next_segment(encounters: pd.DataFrame) -> pd.Series:
    """The id of the stay segment (inpatient or ICU) of the same patient that starts within TRANSFER_GAP after
    each encounter ended (None if none)."""
    segments = encounters[encounters["encounter_class"].isin(["inpatient", "icu"])]
    ended = encounters[encounters["end_time"].notna()].sort_values("end_time")
    matched = pd.merge_asof(
        ended[["id", "patient", "end_time"]],
        segments[["id", "patient", "start_time"]].rename(columns={"id": "next_id"}).sort_values("start_time"),
        left_on="end_time",
        right_on="start_time",
        by="patient",
        direction="forward",
        tolerance=TRANSFER_GAP,
    )
    return matched.set_index("id")["next_id"].reindex(encounters["id"])


def test_stay_segments_are_part_of_their_admission(stays: Stays) -> None:
    """Every ICU or ward segment that follows another is partOf an existing admission encounter of the same
    patient, which started before it and says where the patient came from; admissions are partOf nothing."""
    table = stays.tables["encounters"]
    follows = set(_next_segment(table).dropna())
    transfers = 0
    for encounter in stays.encounters.values():
        if encounter["class"]["code"] not in STAY_CLASSES:
            continue
        if encounter["id"] in follows and _hospitalization(encounter, "admitSource") is None:
            transfers += 1
            admission = stays.encounters[encounter["partOf"]["reference"].removeprefix("Encounter/")]
            assert admission["class"]["code"] in STAY_CLASSES and "partOf" not in admission
            assert _hospitalization(admission, "admitSource") == "emd"
            assert admission["subject"] == encounter["subject"]
            assert admission["period"]["start"] < encounter["period"]["start"]
        else:
            assert "partOf" not in encounter and _hospitalization(encounter, "admitSource") in ("emd", "mp")
    assert transfers > 20  # ICU -> ward: about 0.8 x 0.4 x 0.75 of 200 patients


def test_no_encounter_that_goes_on_into_a_segment_is_discharged(stays: Stays) -> None:
    """An emergency visit followed by an admission and an ICU segment followed by a ward one carry no
    discharge disposition; every other ended acute encounter does (home, or exp at death)."""
    table = stays.tables["encounters"]
    next_segment = _next_segment(table)
    followed = 0
    for encounter_id, next_id in next_segment.items():
        encounter = stays.encounters[encounter_id]
        disposition = _hospitalization(encounter, "dischargeDisposition")
        if isinstance(next_id, str):
            followed += 1
            assert disposition is None, encounter_id
        elif encounter["class"]["code"] in ("EMER", *STAY_CLASSES) and encounter["status"] == "finished":
            assert disposition in ("home", "exp"), encounter_id
        else:
            assert disposition is None
    assert followed > 50


def test_an_emergency_visit_that_led_to_an_admission_is_part_of_it(stays: Stays) -> None:
    table = stays.tables["encounters"].set_index("id")
    next_segment = _next_segment(stays.tables["encounters"])
    admitted = 0
    for encounter in stays.encounters.values():
        if encounter["class"]["code"] != "EMER":
            continue
        admission = next_segment[encounter["id"]]
        if isinstance(admission, str):
            admitted += 1
            assert encounter["partOf"]["reference"] == f"Encounter/{admission}"
            assert _hospitalization(stays.encounters[admission], "admitSource") == "emd"
            assert table.loc[encounter["id"], "part_of_encounter_id"] == admission
        else:
            assert "partOf" not in encounter and _hospitalization(encounter, "dischargeDisposition") == "home"
    assert admitted > 50
    planned = [e for e in stays.encounters.values() if _hospitalization(e, "admitSource") == "mp"]
    assert planned and all(e["class"]["code"] == "IMP" and "partOf" not in e for e in planned)


def test_a_stay_that_ended_in_death_is_expired(stays: Stays) -> None:
    deaths = stays.tables["deaths"].set_index("patient_id")["time"]
    table = stays.tables["encounters"]
    died = table["end_time"].to_numpy() == deaths.reindex(table["patient_id"]).to_numpy()
    expired = {e["id"] for e in stays.encounters.values() if _hospitalization(e, "dischargeDisposition") == "exp"}
    assert expired == set(table.loc[died, "id"])
    assert len(expired) > 5 and all(stays.encounters[i]["class"]["code"] in ("EMER", *STAY_CLASSES) for i in expired)


def test_the_category_says_where_the_course_is_taken(stays: Stays) -> None:
    """inpatient: ordered during a stay (an ICU or ward segment, or the emergency visit that led to it) and
    over by the stay's end (or the patient's death in it); community: taken at home after a visit or after
    discharge."""
    table = stays.tables["encounters"]
    stay_of = table["part_of_encounter_id"].fillna(table["id"])
    in_stay = (table["admit_source"].notna() | table["part_of_encounter_id"].notna()).to_numpy()
    stay_end = table["end_time"].groupby(stay_of).transform("max").where(in_stay, table["end_time"])
    setting = pd.DataFrame({"in_stay": in_stay, "end": stay_end.to_numpy()}, index=table["id"])
    deaths = stays.tables["deaths"].set_index("patient_id")["time"]
    seen = set()
    for request in stays.requests:
        encounter_id = request["encounter"]["reference"].removeprefix("Encounter/")
        bounds = request["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]
        patient_id = request["subject"]["reference"].removeprefix("Patient/")
        end = pd.Timestamp(bounds["end"]) if "end" in bounds else deaths.get(patient_id, pd.NaT)
        over = pd.notna(end) and end <= setting.loc[encounter_id, "end"]
        expected = "inpatient" if over and setting.loc[encounter_id, "in_stay"] else "community"
        category = _code(request["category"][0])
        assert category == expected, request["id"]
        encounter_class = stays.encounters[encounter_id]["class"]["code"]
        seen.add((category, encounter_class))
        if category == "inpatient":
            assert encounter_class in STAY_CLASSES or "partOf" in stays.encounters[encounter_id]
    assert {("inpatient", "EMER"), ("community", "EMER"), ("community", "IMP")} <= seen


# --- the written output --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_fhir(fixture_export: Path) -> dict[str, list[dict]]:
    return read_ndjson(fixture_export)


def test_profiles_identifiers_and_links_of_the_written_encounters(fixture_fhir: dict) -> None:
    encounters = fixture_fhir["Encounter"]
    ids = {e["id"] for e in encounters}
    for encounter in encounters:
        assert encounter["meta"]["profile"] == [US_CORE + "us-core-encounter"]
        assert encounter["identifier"] == [{"system": "https://ehrsim.example.org/encounter", "value": encounter["id"]}]
        if "partOf" in encounter:
            assert encounter["partOf"]["reference"].removeprefix("Encounter/") in ids
        hospitalization = encounter.get("hospitalization", {})
        if "admitSource" in hospitalization:
            assert hospitalization["admitSource"]["coding"][0]["system"] == TERMINOLOGY + "admit-source"
        if "dischargeDisposition" in hospitalization:
            assert (
                hospitalization["dischargeDisposition"]["coding"][0]["system"] == TERMINOLOGY + "discharge-disposition"
            )
    assert any("partOf" in e for e in encounters)  # the fixture's emergency visits lead to ICU stays


def _check_request(request: dict, library: Library) -> None:
    assert request["meta"]["profile"] == [US_CORE + "us-core-medicationrequest"]
    assert request["intent"] == "order" and request["reportedBoolean"] is False
    category = request["category"][0]["coding"][0]
    assert category["system"] == TERMINOLOGY + "medicationrequest-category"
    assert category["code"] in ("inpatient", "outpatient", "community")
    if "encounter" in request:
        assert request["requester"]["reference"].startswith("Practitioner/")
    rxnorm = request["medicationCodeableConcept"]["coding"][0]["code"]
    entry = library.medication_dosing.dosing[rxnorm]
    [dosage] = request["dosageInstruction"]
    assert dosage["text"] == entry.text
    repeat = dosage["timing"]["repeat"]
    assert repeat["boundsPeriod"]["start"] == request["authoredOn"]
    assert ("end" in repeat["boundsPeriod"]) == (request["status"] == "stopped")
    assert repeat["frequency"] >= 1 and repeat["period"] > 0 and repeat["periodUnit"] in ("h", "d", "wk")
    [route] = dosage["route"]["coding"]
    assert route["system"] == SNOMED and ROUTES[route["code"]] == route["display"]
    [dose] = dosage["doseAndRate"]
    quantity = dose["doseQuantity"]
    assert quantity["system"] == UCUM and quantity["code"] in UCUM_DOSE and quantity["value"] > 0
    assert dosage.get("asNeededBoolean", False) == entry.as_needed


def test_every_written_medication_request_has_a_category_and_a_dosage(fixture_fhir: dict, fixture_library) -> None:
    requests = fixture_fhir["MedicationRequest"]
    assert len(requests) > 100
    for request in requests:
        _check_request(request, fixture_library)
    relievers = [r for r in requests if r["dosageInstruction"][0].get("asNeededBoolean")]
    assert relievers  # acetaminophen as needed


def test_every_shipped_medication_request_has_a_dosage(shipped_export: Path, shipped_library) -> None:
    requests = read_ndjson(shipped_export)["MedicationRequest"]
    assert len(requests) > 20
    for request in requests:
        _check_request(request, shipped_library)


# --- rules/medication_dosing.yaml ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["shipped_library", "fixture_library"])
def test_every_medication_of_the_modules_has_a_cited_dosing_entry(which: str, request: pytest.FixtureRequest) -> None:
    library: Library = request.getfixturevalue(which)
    dosing = library.medication_dosing
    used = {m.code.code: m.code.display for module in library.modules for m in module.medications.values()}
    assert used and set(used) <= set(dosing.dosing), f"no dosing for {sorted(set(used) - set(dosing.dosing))}"
    for code, display in used.items():
        entry = dosing.dosing[code]
        assert entry.product == display and entry.source in dosing.sources
        assert (
            entry.dose.unit in UCUM_DOSE
            and ROUTES[dosing.routes[entry.route].code] == dosing.routes[entry.route].display
        )


def test_the_albuterol_reliever_is_as_needed_and_inhaled(shipped_library) -> None:
    albuterol = shipped_library.medication_dosing.dosing["2123111"]
    routes = shipped_library.medication_dosing.routes
    assert albuterol.as_needed and routes[albuterol.route].code == "447694001"
    assert albuterol.dose.unit == "{puff}" and albuterol.schedule.period_max is not None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    source: label_lantus", "    source: label_lantis", "285018: source 'label_lantis' is not declared"),
        ("    route: oral\n", "    route: mouth\n", "route 'mouth' is not declared"),
        ('unit: "[IU]"}', 'unit: "[iU]"}', "dose unit '[iU]' is not declared"),
    ],
)
def test_a_bad_dosing_file_is_reported_with_its_line(
    tmp_path: Path, bare_rules: Path, old: str, new: str, message: str
) -> None:
    [problem] = edited_rules_problems(tmp_path, bare_rules, {"medication_dosing.yaml": (old, new)}, [])
    assert problem.file.endswith("medication_dosing.yaml") and problem.line > 1
    assert message in problem.message, str(problem)


def test_encounter_columns_are_consistent(stays: Stays) -> None:
    """The table's stay columns: a part-of id names an admission of the same patient; only admissions have an
    admit source; dispositions only on emergency, inpatient and ICU encounters."""
    table = stays.tables["encounters"].set_index("id")
    part_of = table["part_of_encounter_id"].dropna()
    assert table.loc[part_of.to_numpy(), "admit_source"].notna().all()
    assert (table.loc[part_of.to_numpy(), "patient"].to_numpy() == table.loc[part_of.index, "patient"].to_numpy()).all()
    assert table.loc[table["admit_source"].notna(), "encounter_class"].isin(["inpatient", "icu"]).all()
    acute = table["encounter_class"].isin(["emergency", "inpatient", "icu"])
    assert table.loc[~acute, "discharge_disposition"].isna().all()
    assert np.isin(table["discharge_disposition"].dropna(), ["home", "exp"]).all()
