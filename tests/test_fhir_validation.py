"""Every resource of the FHIR output validates against FHIR R4: fhir.resources (R4B pydantic
models; R4B matches R4 for these resources) and fhirkit (an R4 4.0.1 validator generated from the
official specification, reporting every problem with its path)."""

from __future__ import annotations

from pathlib import Path

import fhirkit
import orjson
import pytest
from conftest import read_bundles, read_ndjson
from fhir.resources.R4B import get_fhir_model_class

COHORTS = ["fixture_export", "history_export", pytest.param("shipped_export", marks=pytest.mark.slow)]


def _fhirkit_errors(items: list[bytes]) -> list[str]:
    return [f"{r.resource_type}/{r.id}: {i}" for r in fhirkit.parse_many(items) for i in r.issues]


@pytest.mark.slow
@pytest.mark.parametrize("cohort", COHORTS)
def test_every_ndjson_resource_validates_with_fhir_resources(cohort: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(cohort)
    resources = read_ndjson(out)
    assert {"Patient", "Encounter", "Observation", "Organization", "Practitioner", "Location"} <= set(resources)
    for resource_type, items in resources.items():
        model = get_fhir_model_class(resource_type)
        for item in items:
            model.model_validate(item)  # raises on the first invalid element


@pytest.mark.parametrize("cohort", COHORTS)
def test_every_ndjson_resource_validates_with_fhirkit(cohort: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(cohort)
    lines = [line for path in sorted((out / "fhir").glob("*.ndjson")) for line in path.read_bytes().splitlines()]
    assert len(lines) > 1000
    assert _fhirkit_errors(lines) == []


@pytest.mark.slow
@pytest.mark.parametrize("cohort", COHORTS)
def test_every_bundle_validates_with_fhirkit(cohort: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(cohort)
    bundles = sorted((out / "bundles").glob("*.json"))
    assert len(bundles) >= 40
    assert _fhirkit_errors([path.read_bytes() for path in bundles]) == []


@pytest.mark.slow
def test_bundles_validate_with_fhir_resources(fixture_export: Path, shipped_export: Path) -> None:
    """Whole bundles through the pydantic models: every tenth bundle of each cohort (slow: their
    resources are the ndjson resources above, with urn:uuid references, all validated there)."""
    model = get_fhir_model_class("Bundle")
    for out in (fixture_export, shipped_export):
        bundles = sorted((out / "bundles").glob("*.json"))
        assert len(bundles) >= 40, f"{out / 'bundles'}: {len(bundles)} bundles"
        for path in bundles[::10]:
            assert len(model.model_validate_json(path.read_bytes()).entry) >= 3  # the shared batch; Patient and more


def test_the_validators_reject_broken_resources(fixture_export: Path) -> None:
    """The checks above can fail: a missing required element, an unknown element, a date-time
    without timezone, an empty code. (Neither validator checks required value-set bindings such as
    Observation.status; tests/test_fhir_us_core.py checks those values.)"""
    observation = read_ndjson(fixture_export)["Observation"][0]
    broken = [
        {k: v for k, v in observation.items() if k != "code"},
        {**observation, "valueText": "x"},
        {**observation, "effectiveDateTime": "2020-01-01T10:00:00"},
        {**observation, "status": ""},
    ]
    for item in broken:
        assert _fhirkit_errors([orjson.dumps(item)])
        with pytest.raises(ValueError):
            get_fhir_model_class("Observation").model_validate(item)
    bundle = next(iter(read_bundles(fixture_export).values()))
    del bundle["type"]
    assert _fhirkit_errors([orjson.dumps(bundle)])
