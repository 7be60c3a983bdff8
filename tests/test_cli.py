"""The `ehrsim` command through typer's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.model.schema import DiseaseModule

runner = CliRunner()


def test_generate_writes_tables_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["generate", "--patients", "120", "--seed", "42", "--out", str(out), "-q", "--format", "ndjson,parquet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "120 patients" in result.stdout
    patients = pd.read_parquet(out / "parquet" / "patients.parquet")
    events = pd.read_parquet(out / "parquet" / "events.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    assert (~patients["is_decedent"]).sum() == 120 and patients["id"].is_unique
    assert manifest["seed"] == 42 and manifest["decedent_years"] == 1.0
    assert manifest["counts"]["patients"] == 120
    assert manifest["counts"].get("decedents", 0) == patients["is_decedent"].sum()
    assert manifest["counts"]["events"] == len(events)
    assert manifest["files"]["parquet/events.parquet"]["rows"] == len(events)
    assert len((out / "fhir" / "Patient.ndjson").read_text().splitlines()) == len(patients)
    assert manifest["files"]["fhir/Patient.ndjson"]["resources"] == len(patients)
    assert any(name.endswith("type2_diabetes.yaml") for name in manifest["inputs_sha256"])
    assert all(len(digest) == 64 for digest in manifest["inputs_sha256"].values())
    assert not list(out.glob(".*partial"))


@pytest.mark.slow
def test_python_module_entry_point_is_the_same_app(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "simulator", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "generate" in result.stdout


def test_check_passes_on_the_shipped_files() -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: ")


def test_modules_lists_every_module() -> None:
    result = runner.invoke(app, ["modules"], terminal_width=200)
    assert result.exit_code == 0
    for name in ("type2_diabetes", "hypertension", "wellness"):
        assert name in result.stdout


def test_graph_draws_an_svg(tmp_path: Path) -> None:
    out = tmp_path / "t2d.svg"
    result = runner.invoke(app, ["graph", "type2_diabetes", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "t2d_diagnosis" in text


def test_schema_is_current_and_valid_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schema"])
    shipped = Path(__file__).resolve().parent.parent / "simulator" / "module.schema.json"
    assert json.loads(result.stdout) == DiseaseModule.model_json_schema(by_alias=True)
    assert result.stdout == shipped.read_text(), "regenerate with: ehrsim schema --out simulator/module.schema.json"


def test_interrupted_run_leaves_no_finished_looking_file(tmp_path: Path, monkeypatch) -> None:
    import simulator
    from simulator.tables import chunks

    original = chunks.chunk_tables
    calls = []

    def failing_chunk(sim, start, stop):
        calls.append(start)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return original(sim, start, stop)

    monkeypatch.setattr(chunks, "chunk_tables", failing_chunk)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        simulator.generate(patients=60, seed=1, chunk_size=20, out=out, formats="ndjson,bundles,csv,parquet")
    assert len(calls) == 2
    assert not out.exists()  # the run created it and left nothing in it: removed


def test_a_full_disk_is_reported_without_a_traceback_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    import errno

    from simulator.export import writers

    def full(self, data, count):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers._File, "write", full)
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", "--patients", "30", "--seed", "1", "--out", str(out), "-q"])
    assert result.exit_code == 1
    assert f"error: {out}/: No space left on device (the run stopped; nothing was left half-written)" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


def test_an_empty_run_gives_empty_tables_of_the_right_shape(tmp_path: Path) -> None:
    import simulator

    in_memory = simulator.generate(patients=0, seed=1)
    written = simulator.generate(patients=0, seed=1, out=tmp_path / "out", formats="ndjson,bundles,csv,parquet")
    for population in (in_memory, written):
        assert len(population.patients) == 0 and len(population.events) == 0
        assert "id" in population.patients.columns and "kind" in population.events.columns
    assert written.manifest["counts"]["patients"] == 0
