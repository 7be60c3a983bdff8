"""Same seed, same bytes (whatever the chunk size); an interrupted export leaves nothing that looks
finished; PUT bundles address every entry by its stable id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import EXPORT_RUN, FIXTURE_LIBRARY, read_bundles, read_ndjson

import simulator
from simulator.export import writers
from simulator.export.fhir_resources import _groups
from simulator.export.writers import BundleWriter


def _data_files(out: Path) -> dict[str, bytes]:
    """Every output file but the manifests (they hold the creation time)."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "manifest.json" and p.suffix != ".parquet"
    }


@pytest.mark.slow
def test_same_seed_gives_the_same_bytes_whatever_the_chunk_size(fixture_export: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    simulator.generate(out=again, chunk_size=200, **EXPORT_RUN)
    first, second = _data_files(fixture_export), _data_files(again)
    assert len(first) > 150 and first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first), [n for n in first if first[n] != second[n]][:5]
    for table in ("events", "encounters", "observations"):
        a = pd.read_parquet(fixture_export / "parquet" / f"{table}.parquet")
        b = pd.read_parquet(again / "parquet" / f"{table}.parquet")
        pd.testing.assert_frame_equal(a, b)


def test_fhir_slices_of_the_tables_built_once_give_the_same_bytes(
    fixture_export: Path, tmp_path: Path, monkeypatch
) -> None:
    """A run that writes tables and FHIR builds a chunk's clinical tables once and takes each FHIR slice's rows
    of them: with slices of 16 patients in chunks of 64, the same files as one slice per chunk."""
    monkeypatch.setattr(writers, "FHIR_SLICE", 16)
    sliced = tmp_path / "sliced"
    simulator.generate(out=sliced, chunk_size=64, **{**EXPORT_RUN, "formats": "ndjson,csv"})
    first, second = _data_files(fixture_export), _data_files(sliced)
    assert second.keys() and second.keys() <= first.keys()
    assert [name for name in second if first[name] != second[name]] == []


def test_groups_number_key_combinations_as_factorize_numbers_a_multiindex() -> None:
    rng = np.random.default_rng(0)
    keys = [
        rng.integers(0, 3, 200),
        rng.choice(np.array(["a", "b", None], dtype=object), 200),
        rng.choice(np.array([1.5, np.nan]), 200),
    ]
    expected, _ = pd.factorize(pd.MultiIndex.from_arrays(keys))
    assert (_groups(*keys) == expected).all()


@pytest.mark.slow
def test_a_different_seed_gives_different_ids(fixture_export: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    simulator.generate(patients=20, seed=EXPORT_RUN["seed"] + 1, out=other, **FIXTURE_LIBRARY)
    ids = {r["id"] for items in read_ndjson(other).values() for r in items if r["resourceType"] != "Organization"}
    before = {r["id"] for items in read_ndjson(fixture_export).values() for r in items}
    assert ids - before and not ids & before  # the provider directory is the seed's too (payers aside)


@pytest.mark.slow
def test_interrupted_export_leaves_no_finished_looking_file(tmp_path: Path, monkeypatch) -> None:
    original = BundleWriter.write
    calls = []

    def failing_write(self, resources) -> None:  # noqa: ANN001
        calls.append(1)
        if len(calls) > 1:
            raise OSError("disk full")
        original(self, resources)

    monkeypatch.setattr(BundleWriter, "write", failing_write)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        simulator.generate(patients=40, seed=1, chunk_size=20, out=out, formats="ndjson,bundles,csv,parquet")
    assert len(calls) == 2
    assert not out.exists()  # the run created it and left nothing in it: removed


def test_a_rerun_into_the_same_directory_replaces_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    simulator.generate(patients=12, seed=1, out=out, formats="bundles")
    simulator.generate(patients=5, seed=2, out=out, formats="bundles")
    assert len(list((out / "bundles").glob("*.json"))) == 5 + 1  # and the shared resources' bundle
    assert sorted(p.name for p in out.iterdir()) == ["bundles", "manifest.json"]


@pytest.mark.slow
def test_put_bundles_address_every_entry_by_its_stable_id(tmp_path: Path) -> None:
    out = tmp_path / "out"
    simulator.generate(patients=10, seed=3, out=out, formats="bundles", bundle_method="PUT")
    for bundle in read_bundles(out).values():
        for entry in bundle["entry"]:
            resource = entry["resource"]
            assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
