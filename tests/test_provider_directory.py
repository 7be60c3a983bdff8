"""The provider directory (rules/providers.yaml -> simulator/export/directory.py): sized to the run at the
cited ratios, with valid synthetic NPIs and US Core profiles; each patient sees primary care physicians,
clinics and hospitals of their own city, and each encounter class names the right kind of practitioner
and location; the same seed and size give the same directory, whatever the chunk size."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from conftest import DATA, FIXTURE_LIBRARY, edited_rules_problems, read_ndjson

import simulator
from simulator.export.clinical_tables import build_tables
from simulator.export.context import ExportContext
from simulator.export.directory import (
    NPI_SYSTEM,
    NUCC,
    SHARED_TYPES,
    Directory,
    build_directory,
    city_sizes,
    is_valid_npi,
)
from simulator.model.library import Library

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
PROFILES = {
    "Organization": "us-core-organization",
    "Location": "us-core-location",
    "Practitioner": "us-core-practitioner",
    "PractitionerRole": "us-core-practitionerrole",
}


def _by_id(directory: Directory) -> dict[str, dict]:
    return {r["id"]: r for resources in directory.resources.values() for r in resources}


def _specialties(directory: Directory) -> dict[str, str]:
    """Practitioner id -> the NUCC code of their role."""
    return {
        role["practitioner"]["reference"].split("/")[1]: role["specialty"][0]["coding"][0]["code"]
        for role in directory.resources["PractitionerRole"]
    }


def _synthetic_patients(library: Library, n: int, born: str = "1960-01-01") -> pd.DataFrame:
    """`n` patients spread over the library's cities as the kernel spreads them (uniformly)."""
    cities = library.names.cities
    pick = np.random.default_rng(0).integers(0, len(cities), n)
    return pd.DataFrame(
        {
            "index": np.arange(n, dtype=np.int64),
            "city": [cities[k].city for k in pick],
            "state": [cities[k].state for k in pick],
            "zip": [cities[k].zip for k in pick],
            "birth_time": pd.Series(pd.Timestamp(born, tz="UTC"), index=range(n)),
            "death_time": pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]"),
        }
    )


# --- identifiers and shape --------------------------------------------------------------------------


def test_npi_check_digits_follow_cms_luhn_with_the_80840_prefix() -> None:
    assert is_valid_npi("1234567893")  # the CMS example: 9-digit identifier 123456789, check digit 3
    assert is_valid_npi("1558598797")
    assert not is_valid_npi("1234567894") and not is_valid_npi("123456789") and not is_valid_npi("12345678a3")


def test_a_few_thousand_patients_get_several_of_each_type_with_valid_synthetic_npis(
    shipped_library: Library,
) -> None:
    directory = build_directory(shipped_library, seed=4, n_patients=3000)
    assert list(directory.resources) == list(SHARED_TYPES)
    assert all(len(directory.resources[t]) > 1 for t in SHARED_TYPES)
    npis = []
    for resource_type in ("Organization", "Practitioner"):
        for resource in directory.resources[resource_type]:
            found = [i["value"] for i in resource["identifier"] if i.get("system") == NPI_SYSTEM]
            is_payer = resource["type"][0]["coding"][0]["code"] == "pay" if resource_type == "Organization" else False
            assert len(found) == (0 if is_payer else 1), resource["name"]
            npis += found
    assert all(is_valid_npi(npi) and npi.startswith("2") for npi in npis)  # 2: a first digit not issued yet
    assert len(set(npis)) == len(npis)
    for resource_type, resources in directory.resources.items():
        assert all(r["meta"]["profile"] == [US_CORE + PROFILES[resource_type]] for r in resources)


def test_payers_are_payer_organizations_of_the_directory(shipped_library: Library) -> None:
    directory = build_directory(shipped_library, seed=4, n_patients=1000)
    organizations = {o["id"]: o for o in directory.resources["Organization"]}
    assert set(directory.payers) == {"medicare", "medicaid", "private"}
    assert directory.payers["private"] == directory.private_payer_ids[0]
    assert len(directory.private_payer_ids) == len(shipped_library.providers.payers.private)
    for payer in {*directory.payers.values(), *directory.private_payer_ids}:
        coding = organizations[payer]["type"][0]["coding"][0]
        assert (coding["system"], coding["code"]) == ("http://terminology.hl7.org/CodeSystem/organization-type", "pay")


def test_references_inside_the_directory_resolve_and_roles_are_complete(shipped_library: Library) -> None:
    directory = build_directory(shipped_library, seed=4, n_patients=3000)
    by_id = _by_id(directory)
    for location in directory.resources["Location"]:
        assert by_id[location["managingOrganization"]["reference"].split("/")[1]]["resourceType"] == "Organization"
        assert location["status"] == "active" and location["telecom"] and location["address"]["postalCode"]
    for role in directory.resources["PractitionerRole"]:
        for name, resource_type in (("practitioner", "Practitioner"), ("organization", "Organization")):
            reference = role[name]["reference"]
            assert reference.startswith(f"{resource_type}/") and reference.split("/")[1] in by_id
        assert all(loc["reference"].split("/")[1] in by_id for loc in role["location"])
        assert role["code"][0]["coding"][0]["system"] == NUCC and role["specialty"] and role["telecom"]


# --- sizing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_patients", [300_000, 1_000_000, 3_000_000])
def test_the_directory_grows_with_the_run_at_the_cited_ratios(fixture_library: Library, n_patients: int) -> None:
    """One city (the fixture's): each kind of physician and the hospitals number N / (people per one), to
    the nearest whole one."""
    rules = fixture_library.providers
    directory = build_directory(fixture_library, seed=1, n_patients=n_patients)
    counts = Counter(_specialties(directory).values())
    kinds = {**vars(rules.primary_care), **vars(rules.hospital_staff)}
    for kind, physicians in kinds.items():
        assert abs(counts[physicians.taxonomy.code] - n_patients / rules.people_per(physicians)) <= 0.5, kind
    hospitals = [o for o in directory.resources["Organization"] if o["name"].endswith("Hospital")]
    assert abs(len(hospitals) - max(1, n_patients / rules.people_per(rules.hospitals))) <= 0.5
    primary_care = sum(counts[p.taxonomy.code] for p in vars(rules.primary_care).values())
    clinics = [loc for loc in directory.resources["Location"] if loc["type"][0]["coding"][0]["code"] == "OF"]
    assert abs(len(clinics) - primary_care / rules.physicians_per_clinic) <= 0.5


def test_every_city_has_at_least_one_of_everything_and_the_total_follows_the_ratio(
    shipped_library: Library,
) -> None:
    rules = shipped_library.providers
    n_cities = len(shipped_library.names.cities)
    small = city_sizes(rules, 10)
    assert all(n >= 1 for n in small.values()) and small["clinic"] == small["hospital"] == 1
    n_patients = 2_000_000
    counts = Counter(_specialties(build_directory(shipped_library, seed=1, n_patients=n_patients)).values())
    family = rules.primary_care.family_medicine
    assert abs(counts[family.taxonomy.code] - n_patients / rules.people_per(family)) <= 0.5 * n_cities


def test_patients_are_spread_evenly_over_the_primary_care_physicians_of_their_city(
    shipped_library: Library,
) -> None:
    """Which physician and hospital a patient has is a uniform draw among those of the patient's city."""
    n = 200_000
    directory = build_directory(shipped_library, seed=2, n_patients=n)
    patients = _synthetic_patients(shipped_library, n)
    providers = directory.patient_providers(patients)
    by_id = _by_id(directory)
    city_of_org = {o["id"]: o["address"][0]["city"] for o in directory.resources["Organization"] if "address" in o}
    assert (providers["clinic_id"].map(city_of_org) == patients["city"]).all()
    assert (providers["hospital_id"].map(city_of_org) == patients["city"]).all()
    assert {by_id[p]["resourceType"] for p in providers["general_practitioner_id"].unique()} == {"Practitioner"}
    houston = providers[patients["city"] == "Houston"]["general_practitioner_id"].value_counts()
    assert len(houston) > 1
    expected = houston.sum() / len(houston)
    assert (abs(houston - expected) < 5 * np.sqrt(expected)).all()  # multinomial counts, 5 sigma


# --- who sees whom ----------------------------------------------------------------------------------


def test_each_encounter_class_names_the_right_kind_of_practitioner_and_location(
    fixture_library: Library, fixture_population: simulator.Population
) -> None:
    patients, events = fixture_population.patients, fixture_population.events
    context = ExportContext.from_library(fixture_library, 8, "test", len(patients))
    encounters = build_tables(patients, events, context)["encounters"]
    directory = context.directory
    by_id = _by_id(directory)
    specialty = _specialties(directory)
    rules = fixture_library.providers
    staff = {"emergency": "emergency", "inpatient": "hospitalist", "icu": "intensivist"}
    units = {"emergency": "ER", "inpatient": "HU", "icu": "ICU"}
    birth = patients.set_index("index")["birth_time"].reindex(encounters["patient"]).to_numpy()
    child = encounters["start_time"].to_numpy() < (pd.Series(birth) + pd.DateOffset(years=rules.adult_age_years))
    klass = encounters["encounter_class"].astype(str)
    assert set(klass) == {"wellness", "ambulatory", "emergency", "inpatient", "icu"}
    for row, encounter_class, is_child in zip(encounters.itertuples(), klass, child, strict=True):
        code = specialty[row.practitioner_id]
        location = by_id[row.location_id]
        assert location["managingOrganization"]["reference"] == f"Organization/{row.organization_id}"
        location_type = location["type"][0]["coding"][0]["code"]
        if encounter_class in staff:
            assert code == getattr(rules.hospital_staff, staff[encounter_class]).taxonomy.code
            assert location_type == units[encounter_class]
        else:
            pediatrics = rules.primary_care.pediatrics.taxonomy.code
            assert (code == pediatrics) == is_child and location_type == "OF"
    hospital_orgs = encounters[klass.isin(list(staff)).to_numpy()].groupby("patient")["organization_id"].nunique()
    assert (hospital_orgs == 1).all()  # a patient's hospital is theirs for life


def test_patient_general_practitioner_is_a_pediatrician_for_children(shipped_library: Library) -> None:
    directory = build_directory(shipped_library, seed=3, n_patients=5000)
    specialty = _specialties(directory)
    pediatrics = shipped_library.providers.primary_care.pediatrics.taxonomy.code
    for born, is_child in (("2015-03-01", True), ("1950-03-01", False)):
        gp = directory.patient_providers(_synthetic_patients(shipped_library, 500, born))["general_practitioner_id"]
        assert all((specialty[p] == pediatrics) == is_child for p in gp)


def test_primary_care_turns_adult_on_the_18th_birthday(fixture_library: Library) -> None:
    """Born on 29 February 2000 at 10:00: a pediatrician until 1 March 2018, 10:00 (no 29 February that year)."""
    directory = build_directory(fixture_library, seed=3, n_patients=100)
    patients = _synthetic_patients(fixture_library, 1, born="2000-02-29T10:00:00")
    times = ["2018-02-28T23:00:00", "2018-03-01T09:59:59.999", "2018-03-01T10:00:00", "2030-01-01T00:00:00"]
    encounters = pd.DataFrame(
        {
            "patient": np.zeros(len(times), np.int64),
            "encounter": np.arange(len(times)),
            "encounter_class": "wellness",
            "start_time": pd.to_datetime(times, utc=True, format="ISO8601"),
        }
    )
    specialty = _specialties(directory)
    seen = [specialty[p] for p in directory.encounter_providers(encounters, patients)["practitioner_id"]]
    pediatrics = fixture_library.providers.primary_care.pediatrics.taxonomy.code
    assert [code == pediatrics for code in seen] == [True, True, False, False]


# --- determinism ------------------------------------------------------------------------------------


def test_same_seed_same_directory_another_seed_another(shipped_library: Library) -> None:
    def text(seed: int) -> bytes:
        return orjson.dumps(build_directory(shipped_library, seed=seed, n_patients=5000).resources)

    assert text(7) == text(7)
    assert text(7) != text(8)


def test_the_directory_and_the_references_to_it_do_not_depend_on_the_chunk_size(tmp_path: Path) -> None:
    files = [f"{t}.ndjson" for t in (*SHARED_TYPES, "Patient", "Encounter")]
    written = []
    for chunk_size in (16, 1000):
        out = tmp_path / f"chunks_{chunk_size}"
        simulator.generate(patients=60, seed=9, chunk_size=chunk_size, out=out, formats="ndjson", **FIXTURE_LIBRARY)
        written.append({name: (out / "fhir" / name).read_bytes() for name in files})
    assert written[0] == written[1]


def test_every_reference_of_a_run_to_the_directory_resolves(fixture_export: Path) -> None:
    resources = read_ndjson(fixture_export)
    shared = {f"{t}/{r['id']}" for t in SHARED_TYPES for r in resources[t]}
    found = 0
    for resource_type, items in resources.items():
        text = b"\n".join(orjson.dumps(r) for r in items).decode()
        for shared_type in SHARED_TYPES:
            for reference in set(_references(text, shared_type)):
                assert reference in shared, f"{resource_type}: {reference}"
                found += 1
    assert found > 10


def _references(text: str, resource_type: str) -> list[str]:
    marker = f'"reference":"{resource_type}/'
    return [resource_type + "/" + part.split('"', 1)[0] for part in text.split(marker)[1:]]


# --- rules ------------------------------------------------------------------------------------------


def test_an_uncited_figure_is_reported_at_its_line(tmp_path: Path) -> None:
    edits = {"providers.yaml": ("source: wachter_goldman_2016", "source: nowhere")}
    (problem,) = edited_rules_problems(tmp_path, DATA / "fixture" / "rules", edits, FIXTURE_LIBRARY["modules_dir"])
    assert problem.file.endswith("providers.yaml") and problem.line > 1 and "nowhere" in problem.message
