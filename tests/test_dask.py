"""`--dask`: a run written in parts by the workers of a Dask cluster is, part files concatenated in order,
byte for byte the one-process run of the same seed; a part is a pure function of its task (run again after
a failure, the same files); the client lists every part in both manifests."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import EXPORT_RUN, FIXTURE_LIBRARY
from typer.testing import CliRunner

import simulator
from simulator import cluster
from simulator.api import ExportConfig, _context
from simulator.cli import app
from simulator.engine.run import RunConfig
from simulator.files import partial_path, start_directory

pytest.importorskip("distributed")


def _concatenated(folder: Path, suffix: str) -> dict[str, bytes]:
    """The files of `folder` by name, parts (`X.000.ndjson`, `X.001.ndjson`) concatenated in order as `X.ndjson`."""
    whole: dict[str, bytes] = {}
    for path in sorted(folder.glob(f"*{suffix}")):
        stem, *part = path.name.removesuffix(suffix).split(".")
        whole[stem + suffix] = whole.get(stem + suffix, b"") + path.read_bytes()
    return whole


@pytest.fixture(scope="module")
def dask_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture export's run (every format) on a LocalCluster of 2 worker processes, in parts of 50 patients."""
    out = tmp_path_factory.mktemp("dask") / "out"
    simulator.generate(out=out, chunk_size=50, dask="local:2", **EXPORT_RUN)
    return out


@pytest.mark.slow
def test_the_parts_concatenated_are_the_one_process_run(fixture_export: Path, dask_export: Path) -> None:
    assert sorted(p.name for p in (dask_export / "fhir").glob("Patient.*")) == [
        f"Patient.00{k}.ndjson" for k in range(3)
    ]
    for folder, suffix in (("fhir", ".ndjson"), ("csv", ".csv")):
        one, parts = _concatenated(fixture_export / folder, suffix), _concatenated(dask_export / folder, suffix)
        assert len(one) > 10 and one.keys() == parts.keys()
        assert [name for name in one if one[name] != parts[name]] == []
    bundles = {p.name: p.read_bytes() for p in (fixture_export / "bundles").iterdir()}
    assert bundles == {p.name: p.read_bytes() for p in (dask_export / "bundles").iterdir()}
    for table in ("patients", "events", "observations"):
        parts = sorted((dask_export / "parquet").glob(f"{table}.*.parquet"))
        together = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        pd.testing.assert_frame_equal(pd.read_parquet(fixture_export / "parquet" / f"{table}.parquet"), together)


@pytest.mark.slow
def test_the_client_lists_every_part_with_its_size_and_checksum(fixture_export: Path, dask_export: Path) -> None:
    manifest = json.loads((dask_export / "manifest.json").read_text())
    one = json.loads((fixture_export / "manifest.json").read_text())
    written = {p.relative_to(dask_export).as_posix() for p in dask_export.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == written - {"manifest.json"}
    for name, entry in manifest["files"].items():
        data = (dask_export / name).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    for key in ("patients", "deaths", "events", "events_by_kind", "resources_by_type", "resources"):
        assert manifest["counts"][key] == one["counts"][key]
    bulk = json.loads((dask_export / "fhir" / "manifest.json").read_text())
    counts: dict[str, int] = {}
    for output in bulk["output"]:
        counts[output["type"]] = counts.get(output["type"], 0) + output["count"]
    one_bulk = json.loads((fixture_export / "fhir" / "manifest.json").read_text())
    assert counts == {output["type"]: output["count"] for output in one_bulk["output"]}
    assert manifest["dask"] == "local:2"
    assert len(simulator.Population(manifest, out=dask_export).patients) == EXPORT_RUN["patients"]


# a population run with a 30-year decedent window: 6 living parts of 20 patients, then its decedents' parts
DECEDENT_RUN = {
    **{"patients": 120, "seed": 7, "chunk_size": 20, "decedents": 30, "formats": "ndjson,csv"},
    **FIXTURE_LIBRARY,
}


@pytest.mark.slow
def test_the_decedents_are_parts_numbered_after_the_living(tmp_path: Path) -> None:
    simulator.generate(out=tmp_path / "one", **DECEDENT_RUN)
    simulator.generate(out=tmp_path / "parts", dask="local:2", **DECEDENT_RUN)
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())["counts"]
    manifest = json.loads((tmp_path / "parts" / "manifest.json").read_text())
    assert one["decedents"] > DECEDENT_RUN["chunk_size"]  # more than one decedent part
    parts = -(-one["decedents"] // DECEDENT_RUN["chunk_size"]) + 6
    assert sorted(p.name for p in (tmp_path / "parts" / "fhir").glob("Patient.*")) == [
        f"Patient.{k:03d}.ndjson" for k in range(parts)
    ]
    for folder, suffix in (("fhir", ".ndjson"), ("csv", ".csv")):
        whole = _concatenated(tmp_path / "one" / folder, suffix)
        assert whole == _concatenated(tmp_path / "parts" / folder, suffix)
    for key in ("patients", "decedents", "decedent_deaths", "decedent_stand_ins", "deaths", "events_by_kind"):
        assert manifest["counts"][key] == one[key]
    assert manifest["counts"]["resources_by_type"] == one["resources_by_type"]
    patients = simulator.Population(manifest, out=tmp_path / "parts").patients
    assert patients["is_decedent"].sum() == one["decedents"]


def _tasks(out: Path, compress: str | None = None) -> list[cluster.PartTask]:
    run = {k: v for k, v in EXPORT_RUN.items() if k != "formats"}
    config = RunConfig(chunk_size=50, **run)
    export = ExportConfig(out, ("ndjson", "csv"), compress=compress)
    for folder in ("fhir", "csv"):
        start_directory(out / folder)
    return cluster.part_tasks(config, export, _context, 3)


def test_a_failed_part_leaves_nothing_and_its_rerun_writes_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = _tasks(tmp_path / "out")[1]
    first = cluster.write_part(task)
    fhir = partial_path(tmp_path / "out" / "fhir")
    written = {p.name: p.read_bytes() for p in fhir.iterdir()}

    def lost(*args: object) -> None:
        raise RuntimeError("worker lost")

    monkeypatch.setattr(cluster, "chunk_tables", lost)
    with pytest.raises(RuntimeError, match="worker lost"):
        cluster.write_part(task)
    assert {p.name for p in fhir.iterdir()} == set(written)  # the failed attempt's folder is gone
    monkeypatch.undo()
    again = cluster.write_part(task)
    assert again.files == first.files and {p.name: p.read_bytes() for p in fhir.iterdir()} == written


def test_gzip_parts_decompress_to_the_one_process_bytes(fixture_export: Path, tmp_path: Path) -> None:
    """Each compressed part is a gzip member of its own: concatenated, a gzip file of the plain bytes."""
    for task in _tasks(tmp_path / "out", "gzip"):
        cluster.write_part(task)
    fhir = partial_path(tmp_path / "out" / "fhir")
    parts = _concatenated(fhir, ".ndjson.gz")
    one = _concatenated(fixture_export / "fhir", ".ndjson")
    assert {name.removesuffix(".gz") for name in parts} == set(one)
    assert all(gzip.decompress(parts[name + ".gz"]) == one[name] for name in one)


@pytest.mark.parametrize(
    ("option", "message"),
    [("local:0", "local:N with N >= 1"), ("localhost", "local:N or a scheduler address")],
)
def test_a_bad_dask_address_is_named(option: str, message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", "-n", "5", "--out", str(tmp_path / "o"), "--dask", option])
    assert result.exit_code == 2 and f"--dask: {message}" in result.output
    assert not (tmp_path / "o").exists()
