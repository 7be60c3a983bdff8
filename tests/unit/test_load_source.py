"""The loader's reading of a run's Bulk ndjson: counts by resource type, whatever the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator.load.source import NdjsonRun


def _write(folder: Path, name: str, resources: list[dict]) -> None:
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in resources))


@pytest.mark.parametrize("with_manifest", [True, False])
def test_a_type_written_in_two_files_is_counted_once_by_type(tmp_path: Path, with_manifest: bool) -> None:
    """The streams' Observations (`Observation.streams.ndjson`) are Observations: the server's count of the
    type is compared with both files' lines together."""
    fhir = tmp_path / "fhir"
    fhir.mkdir()
    subject = {"reference": "Patient/p1"}
    _write(fhir, "Patient.ndjson", [{"resourceType": "Patient", "id": "p1"}])
    _write(
        fhir, "Observation.ndjson", [{"resourceType": "Observation", "id": f"o{i}", "subject": subject} for i in (1, 2)]
    )
    _write(fhir, "Observation.streams.ndjson", [{"resourceType": "Observation", "id": "s1", "subject": subject}])
    if with_manifest:
        output = [
            {"type": "Patient", "count": 1},
            {"type": "Observation", "count": 2},
            {"type": "Observation", "count": 1},
        ]
        (fhir / "manifest.json").write_text(json.dumps({"output": output}))
    assert NdjsonRun(tmp_path).expected == {"Observation": 3, "Patient": 1}
