"""What the exporters are handed: the seed and run settings travel in the ExportContext, not in a column of
the patient table; units and reference ranges come from rules/observation_reference.yaml, checked with
file:line errors; patient and resource ids share one UUID formatter."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURE_LIBRARY

import simulator
from simulator.export.clinical_tables import build_tables
from simulator.export.context import ExportContext
from simulator.model.loading import load_library
from simulator.model.parsing import LoadError
from simulator.tables.uuids import uuid_strings


def test_the_uuid_formatter_writes_what_the_standard_library_writes() -> None:
    bits = np.random.default_rng(0).integers(0, 2**64, size=(1000, 2), dtype=np.uint64)
    bits[:3] = [[0, 0], [2**64 - 1, 2**64 - 1], [0x0123456789ABCDEF, 0xFEDCBA9876543210]]
    expected = [str(uuid.UUID(int=(high << 64) | low, version=4)) for high, low in bits.tolist()]
    assert uuid_strings(bits[:, 0], bits[:, 1]).tolist() == expected
    assert uuid_strings(bits[:0, 0], bits[:0, 1]).tolist() == []


def test_the_exporters_take_the_seed_from_the_context(tmp_path: Path) -> None:
    """The written tables are rebuilt from the patient table without its `seed` column: same ids with the
    run's seed in the context, other ids with another seed."""
    out = tmp_path / "out"
    population = simulator.generate(patients=30, seed=3, out=out, formats="parquet", **FIXTURE_LIBRARY)
    patients = population.patients.drop(columns="seed")
    library = load_library(FIXTURE_LIBRARY["modules_dir"], FIXTURE_LIBRARY["rules_dir"])
    written = pd.read_parquet(out / "parquet" / "encounters.parquet")
    assert len(written) > 30
    for seed, same in ((3, True), (4, False)):
        tables = build_tables(
            patients, population.events, ExportContext.from_library(library, seed, "test", len(patients))
        )
        assert (tables["encounters"]["id"].tolist() == written["id"].tolist()) is same


def test_the_request_of_the_context_is_the_bulk_manifest_request(tmp_path: Path) -> None:
    simulator.generate(patients=5, seed=2, out=tmp_path, **FIXTURE_LIBRARY)
    manifest = pd.read_json(tmp_path / "fhir" / "manifest.json", typ="series")
    assert manifest["request"] == "ehrsim generate --patients 5 --seed 2 --mode population"


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (
            "  mmHg: mm[Hg]",
            "  mmHg: mm[Hgg]",
            "ucum_aliases: aliases to codes missing from ucum_codes: mmHg -> mm[Hgg]",
        ),
        ("    source: kdigo2012", "    source: kdigo2013", "upper_limits: 9318-7: source 'kdigo2013' is not a key"),
        ('    unit: "%"', "    unit: percent", "upper_limits: 4548-4: unit 'percent' is neither in ucum_codes"),
        ('  "1558-6":', '  "glucose":', "upper_limits.glucose: String should match pattern"),
    ],
)
def test_a_bad_reference_file_is_reported_with_its_line(tmp_path: Path, old: str, new: str, where: str) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(FIXTURE_LIBRARY["rules_dir"], rules)
    path = rules / "observation_reference.yaml"
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    with pytest.raises(LoadError) as caught:
        load_library(FIXTURE_LIBRARY["modules_dir"], rules)
    [problem] = caught.value.problems
    assert problem.file.endswith("observation_reference.yaml") and problem.line > 1
    assert f"{problem.path}: {problem.message}".startswith(where), str(problem)
