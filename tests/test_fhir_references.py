"""Reference integrity and hygiene of the FHIR output: every reference resolves, none is a search,
no id repeats, no empty values, a timezone on every date-time."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import read_bundles, read_ndjson

from simulator.export.bundles import SHARED_BUNDLE

COHORTS = ["fixture_export", "history_export", pytest.param("shipped_export", marks=pytest.mark.slow)]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
DATETIME_KEYS = re.compile(r"(DateTime|^issued$|^recordedDate$|^authoredOn$|^start$|^end$)")


def _walk(value: object, key: str = "") -> Iterator[tuple[str, object]]:
    """(key, value) of every element, depth first."""
    yield key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, key)


def _references(resource: dict) -> list[str]:
    return [v["reference"] for _, v in _walk(resource) if isinstance(v, dict) and "reference" in v]


@pytest.mark.parametrize("cohort", COHORTS)
def test_every_ndjson_reference_is_a_literal_reference_to_a_resource_in_the_output(
    cohort: str, request: pytest.FixtureRequest
) -> None:
    resources = read_ndjson(request.getfixturevalue(cohort))
    ids = Counter((t, r["id"]) for t, items in resources.items() for r in items)
    assert max(ids.values()) == 1, "duplicate ids"
    references = [ref for items in resources.values() for r in items for ref in _references(r)]
    assert len(references) > 1000
    for reference in references:
        assert re.fullmatch(rf"[A-Z][A-Za-z]+/{UUID}", reference), reference
        resource_type, resource_id = reference.split("/")
        assert (resource_type, resource_id) in ids, f"dangling reference {reference}"
    for items in resources.values():
        for r in items:
            assert r["resourceType"] in resources and re.fullmatch(UUID, r["id"])


@pytest.mark.slow
@pytest.mark.parametrize("cohort", COHORTS)
def test_every_bundle_reference_resolves_to_an_entry_of_the_bundle(cohort: str, request: pytest.FixtureRequest) -> None:
    """... or to a shared resource, which the shared bundle (first by name) PUTs at its id."""
    bundles = read_bundles(request.getfixturevalue(cohort))
    shared = bundles.pop(Path(SHARED_BUNDLE).stem)
    assert sorted([Path(SHARED_BUNDLE).stem, *bundles])[0] == Path(SHARED_BUNDLE).stem
    shared_urls = {entry["request"]["url"] for entry in shared["entry"]}
    patients = read_ndjson(request.getfixturevalue(cohort))["Patient"]
    assert sorted(bundles) == sorted(p["id"] for p in patients)
    seen: Counter[str] = Counter()
    for patient_id, bundle in bundles.items():
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        full_urls = [entry["fullUrl"] for entry in bundle["entry"]]
        assert len(set(full_urls)) == len(full_urls)
        assert f"urn:uuid:{patient_id}" in full_urls
        for entry in bundle["entry"]:
            assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
            assert entry["request"]["method"] == "POST" and entry["request"]["url"] == entry["resource"]["resourceType"]
            for reference in _references(entry["resource"]):
                assert reference in full_urls or reference in shared_urls, f"{patient_id}: unresolved {reference}"
            seen[entry["fullUrl"]] += 1
    assert max(seen.values()) == 1, "a resource is in two bundles"


@pytest.mark.parametrize("cohort", COHORTS)
def test_no_search_references_and_no_urn_references_in_ndjson(cohort: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(cohort)
    for path in (out / "fhir").glob("*.ndjson"):
        text = path.read_text()
        assert "urn:uuid" not in text
        assert not re.search(r'"reference":"[^"]*\?', text)
    for path in (out / "bundles").glob("*.json"):
        assert not re.search(r'"reference":"[^"]*\?', path.read_text())


@pytest.mark.parametrize("cohort", COHORTS)
def test_no_empty_values_and_a_timezone_on_every_datetime(cohort: str, request: pytest.FixtureRequest) -> None:
    resources = read_ndjson(request.getfixturevalue(cohort))
    n_datetimes = 0
    for items in resources.values():
        for resource in items:
            for key, value in _walk(resource):
                assert value not in ("", [], {}, None), f"{resource['resourceType']}.{key} is empty"
                if isinstance(value, str) and DATETIME_KEYS.search(key) and "T" in value:
                    n_datetimes += 1
                    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value), value
    assert n_datetimes > 1000
