"""AllergyIntolerance and Coverage (rules/allergies.yaml, rules/coverage.yaml): the FHIR resources of 3,000
shipped patients hold each allergy, verification, reaction and payer at the shares the rules give for the
patients' age bands and sexes; their codes are the rules'; Medicare starts at 65; in a written run every
recordedDate is an encounter's start within the patient's life, references resolve and the resources are
valid R4."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from conftest import read_ndjson
from fhir.resources.R4B import get_fhir_model_class

import simulator
from simulator.export.allergies import allergy_resources
from simulator.export.clinical_tables import build_tables
from simulator.export.context import ExportContext
from simulator.export.coverage import KINDS, band_of, birthdays, coverage_resources, record_end
from simulator.export.fhir_text import References
from simulator.model.library import Library
from simulator.model.schema import CODE_SYSTEMS

SEED = 11  # the seed of shipped_population
# the event kinds the two builders read (encounters, and the record's end: diagnoses, resolutions, deaths)
RECORD_KINDS = [
    "encounter_start",
    "encounter_end",
    "condition_onset",
    "condition_diagnosis",
    "condition_resolved",
    "death",
]
SIGMAS = 4.0


def _parse(texts: Iterable[str]) -> list[dict]:
    return [orjson.loads(text) for text in texts]


def _id(reference: dict) -> str:
    return reference["reference"].split("/", 1)[1]


@pytest.fixture(scope="module")
def cohort(shipped_population: simulator.Population, shipped_library: Library) -> dict:
    """The allergies and coverages of the 3,000 shipped patients as FHIR JSON, and each patient's sex, age
    at the end of the record and whether they have an encounter, by patient id."""
    patients = shipped_population.patients
    events = shipped_population.events
    context = ExportContext.from_library(shipped_library, SEED, "test", len(patients))
    tables = build_tables(patients, events[events["kind"].isin(RECORD_KINDS).to_numpy()], context)
    refs = References(urn=False)
    allergies = allergy_resources(patients, tables, shipped_library.allergies, SEED, refs)
    coverage = coverage_resources(patients, tables, shipped_library.coverage, context.directory, SEED, refs)
    _, age = record_end(patients, tables)
    people = pd.DataFrame(
        {
            "female": (patients["sex"].astype(str) == "F").to_numpy(),
            "age": age,
            "seen": patients["index"].isin(tables["encounters"]["patient"]).to_numpy(),
            "birth": patients["birth_time"].to_numpy(),
        },
        index=patients["id"].to_numpy(),
    )
    return {
        "people": people,
        "allergies": _parse(allergies.json.to_pylist()),
        "coverage": _parse(coverage.json.to_pylist()),
        "directory": context.directory,
    }


def assert_count(what: str, observed: int, probabilities: np.ndarray) -> None:
    """`observed` successes of independent draws with these probabilities, within SIGMAS standard deviations."""
    expected = float(np.sum(probabilities))
    sd = float(np.sqrt(np.sum(probabilities * (1 - probabilities))))
    assert abs(observed - expected) <= SIGMAS * sd + 1, f"{what}: {observed} observed, {expected:.1f} ± {sd:.1f}"


def test_allergy_shares_follow_the_rules(cohort: dict, shipped_library: Library) -> None:
    """Per allergen: how many patients have it (by age band and sex), how many are confirmed, and how many
    have each reaction, against the rules' shares."""
    rules = shipped_library.allergies
    people = cohort["people"]
    by_code: dict[str, list[dict]] = {}
    for resource in cohort["allergies"]:
        by_code.setdefault(resource["code"]["coding"][0]["code"], []).append(resource)
    assert {a.code.code for a in rules.allergens.values()} == set(by_code)
    for name, allergen in rules.allergens.items():
        bands = allergen.bands
        band = band_of([b.min_age_years for b in bands], people["age"].to_numpy())
        male, female = (np.array([getattr(b, sex) for b in bands])[band] for sex in ("male", "female"))
        prevalence = np.where(people["female"], female, male) * people["seen"]
        found = by_code[allergen.code.code]
        assert_count(name, len(found), prevalence)
        assert len({_id(r["patient"]) for r in found}) == len(found), f"{name}: one allergy per patient"
        own = band_of([b.min_age_years for b in bands], people.loc[[_id(r["patient"]) for r in found], "age"])
        confirmed = sum(r["verificationStatus"]["coding"][0]["code"] == "confirmed" for r in found)
        assert_count(f"{name} confirmed", confirmed, np.array([b.confirmed_share for b in bands])[own])
        for manifestation in rules.manifestations.values():
            shares = [
                sum(
                    r.share
                    for r in rules.reaction_profiles[b.reactions].reactions
                    if rules.manifestations[r.manifestation] == manifestation
                )
                for b in bands
            ]
            with_it = sum(
                any(
                    c["code"] == manifestation.code
                    for x in r.get("reaction", [])
                    for m in x["manifestation"]
                    for c in m["coding"]
                )
                for r in found
            )
            assert_count(f"{name} {manifestation.display}", with_it, np.array(shares)[own])


def test_coverage_shares_follow_the_rules(cohort: dict, shipped_library: Library) -> None:
    """Each payer kind, and no Coverage for the uninsured, at the shares of the patients' age bands; a kind
    of no share in a band (Medicare under 19) never appears there."""
    rules = shipped_library.coverage
    people = cohort["people"]
    band = band_of([b.min_age_years for b in rules.bands], people["age"].to_numpy())
    code_kind = {rules.payers[k].type.code: k for k in KINDS}  # type: ignore[index]
    kind = pd.Series(
        {_id(c["beneficiary"]): code_kind[c["type"]["coding"][0]["code"]] for c in cohort["coverage"]}
    ).reindex(people.index)
    assert len(kind.dropna()) == len(cohort["coverage"]), "one Coverage per patient at most"
    assert_count("uninsured", int(kind.isna().sum()), np.array([b.uninsured for b in rules.bands])[band])
    for k in KINDS:
        shares = np.array([b.shares[k] for b in rules.bands])[band]  # type: ignore[index]
        assert_count(k, int((kind == k).sum()), shares)
        assert not ((kind == k).to_numpy() & (shares == 0)).any(), f"{k} where the rules give it no share"


def test_medicare_at_65_starts_on_the_65th_birthday(cohort: dict, shipped_library: Library) -> None:
    """Of the covered patients 65 and over, the rules' share have Medicare (the rest an insurer without
    Medicare), each from their 65th birthday; the payer is the directory's Organization of the kind."""
    rules = shipped_library.coverage
    people = cohort["people"]
    directory = cohort["directory"]
    older = rules.bands[-1]
    assert older.min_age_years == 65 and older.shares["medicare"] > 0.9
    covered = [c for c in cohort["coverage"] if people.at[_id(c["beneficiary"]), "age"] >= 65]
    assert len(covered) > 300
    medicare = [c for c in covered if c["type"]["coding"][0]["code"] == rules.payers["medicare"].type.code]
    share = older.shares["medicare"] / (1 - older.uninsured)
    assert_count("Medicare at 65 and over", len(medicare), np.full(len(covered), share))
    birth = pd.Series(people.loc[[_id(c["beneficiary"]) for c in medicare], "birth"].to_numpy())
    assert [c["period"]["start"] for c in medicare] == list(
        pd.Series(birthdays(birth, np.full(len(birth), 65.0))).dt.strftime("%Y-%m-%d")
    )
    assert {_id(c["payor"][0]) for c in medicare} == {directory.payers["medicare"]}
    private = {_id(c["payor"][0]) for c in cohort["coverage"] if c["type"]["coding"][0]["code"] == "5"}
    assert private <= set(directory.private_payer_ids) and len(private) > 1


def test_codes_are_the_rules_codes_with_their_displays(cohort: dict, shipped_library: Library) -> None:
    allergies, coverage = shipped_library.allergies, shipped_library.coverage
    substances = {(CODE_SYSTEMS[a.code.system], a.code.code, a.code.display) for a in allergies.allergens.values()}
    manifestations = {(CODE_SYSTEMS[c.system], c.code, c.display) for c in allergies.manifestations.values()}
    for resource in cohort["allergies"]:
        assert {(c["system"], c["code"], c["display"]) for c in resource["code"]["coding"]} <= substances
        for reaction in resource.get("reaction", []):
            for concept in reaction["manifestation"]:
                assert {(c["system"], c["code"], c["display"]) for c in concept["coding"]} <= manifestations
    types = {(coverage.type_system, p.type.code, p.type.display) for p in coverage.payers.values()}
    for resource in cohort["coverage"]:
        assert {(c["system"], c["code"], c["display"]) for c in resource["type"]["coding"]} <= types


def test_written_allergies_and_coverages_are_valid_and_within_life(fixture_export: Path) -> None:
    """In a written lifetime run: each allergy is recorded at the start of one of the patient's encounters,
    between birth and death; each coverage runs from birth or a birthday to death; the resources they
    reference are in the output; every one validates against R4 (fhir.resources)."""
    resources = read_ndjson(fixture_export)
    patients = {p["id"]: p for p in resources["Patient"]}
    encounters = {e["id"]: e for e in resources["Encounter"]}
    practitioners = {p["id"] for p in resources["Practitioner"]}
    organizations = {o["id"] for o in resources["Organization"]}
    allergies, coverages = resources["AllergyIntolerance"], resources["Coverage"]
    assert len(allergies) > 10 and len(coverages) > 100
    for allergy in allergies:
        patient = patients[_id(allergy["patient"])]
        encounter = encounters[_id(allergy["encounter"])]
        assert _id(encounter["subject"]) == patient["id"]
        assert allergy["recordedDate"] == encounter["period"]["start"]
        assert _id(allergy["recorder"]) in practitioners
        assert patient["birthDate"] <= allergy["recordedDate"][:10]
        assert allergy["recordedDate"] <= patient.get("deceasedDateTime", "9999")
    for coverage in coverages:
        patient = patients[_id(coverage["beneficiary"])]
        assert (
            _id(coverage["subscriber"]) == patient["id"]
            and coverage["subscriberId"] == coverage["identifier"][0]["value"]
        )
        assert patient["birthDate"] <= coverage["period"]["start"] <= patient.get("deceasedDateTime", "9999")
        assert coverage["period"].get("end") == patient.get("deceasedDateTime")
        assert _id(coverage["payor"][0]) in organizations
    for resource_type, items in (("AllergyIntolerance", allergies), ("Coverage", coverages)):
        model = get_fhir_model_class(resource_type)
        for item in items:
            model.model_validate(item)
