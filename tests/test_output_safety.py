"""`generate` never removes or replaces a file it did not write, never mixes two runs in one folder,
cleans what an interrupted run left, says what it will write before writing (`--dry-run`), and gives
the Bulk manifest absolute URLs."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest
from typer.testing import CliRunner, Result

import simulator
from simulator import api
from simulator.cli import app
from simulator.engine.run import RunConfig, Simulator
from simulator.errors import ConfigError
from simulator.export import size
from simulator.files import finish_directory, remove_files, start_directory

runner = CliRunner()


def _generate(out: Path, *args: str, patients: int = 20) -> Result:
    return runner.invoke(app, ["generate", "-n", str(patients), "-o", str(out), *args])


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) -> its SHA-256."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _users_folder(tmp_path: Path) -> Path:
    """A folder of a user's own files, one of them where a CSV run writes."""
    folder = tmp_path / "mydata"
    (folder / "csv").mkdir(parents=True)
    (folder / "csv" / "my_own_table.csv").write_text("a,b\n1,2\n")
    (folder / "notes.txt").write_text("mine\n")
    return folder


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_a_folder_that_holds_no_run_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    folder = _users_folder(tmp_path)
    before = _snapshot(folder)
    result = _generate(folder, "--format", "csv")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: --out: {folder} is not empty and holds no ehrsim run")
    assert "--overwrite" in result.stderr and "Traceback" not in result.output
    assert _snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == ["csv", "notes.txt"]


def test_overwrite_writes_beside_the_users_files_and_keeps_them(tmp_path: Path) -> None:
    folder = _users_folder(tmp_path)
    before = _snapshot(folder)
    result = _generate(folder, "--format", "csv", "--overwrite")
    assert result.exit_code == 0, result.output
    after = _snapshot(folder)
    assert {name: after[name] for name in before} == before
    assert set(after) == set(before) | set(_manifest(folder)["files"]) | {"manifest.json"}
    assert "keeps what no ehrsim run wrote in" in result.stderr and "csv/my_own_table.csv" in result.stderr


def test_seed_1_as_ndjson_and_csv_then_seed_2_as_parquet_leaves_only_the_seed_2_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _generate(out, "--seed", "1", "--format", "ndjson,csv", "-q").exit_code == 0
    first = _manifest(out)
    (out / "csv" / "my_own_table.csv").write_text("mine\n")  # a user's files beside and inside the run
    (out / "validation").mkdir()
    (out / "validation" / "report.md").write_text("report of seed 1\n")
    result = _generate(out, "--seed", "2", "--format", "parquet")
    assert result.exit_code == 0, result.output
    manifest = _manifest(out)
    files = set(_snapshot(out))
    assert manifest["seed"] == 2 and manifest["formats"] == ["parquet"]
    assert files == set(manifest["files"]) | {"manifest.json", "csv/my_own_table.csv", "validation/report.md"}
    assert all(name.startswith("parquet/") for name in manifest["files"])
    assert not (out / "fhir").exists() and sorted(p.name for p in (out / "csv").iterdir()) == ["my_own_table.csv"]
    assert (out / "csv" / "my_own_table.csv").read_text() == "mine\n"
    assert f"replaces the earlier run in {out}/ (seed 1, ndjson, csv: {len(first['files']) + 1} files" in result.stderr
    assert simulator.Population(manifest, out=out).patients["seed"].eq(2).all()


@pytest.mark.parametrize("earlier_run", [False, True], ids=["users_folder", "earlier_run"])
def test_a_file_the_run_would_replace_stops_it_before_it_starts(tmp_path: Path, earlier_run: bool) -> None:
    out = tmp_path / "out"
    if earlier_run:
        assert _generate(out, "--format", "ndjson", "-q").exit_code == 0
    (out / "csv").mkdir(parents=True)
    (out / "csv" / "patients.csv").write_text("my own patients\n")
    before = _snapshot(out)
    result = _generate(out, "--format", "csv", "--overwrite")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: --out: {out}/csv/patients.csv would be replaced by this run")
    assert _snapshot(out) == before and not list(out.glob(".*"))


def test_a_manifest_cannot_make_a_run_remove_other_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _generate(out, "-q").exit_code == 0
    outside = tmp_path / "outside.txt"
    outside.write_text("not ehrsim's\n")
    (out / "validation").mkdir()
    (out / "validation" / "report.md").write_text("mine\n")
    manifest = _manifest(out)
    entry = {"bytes": 1, "sha256": "0" * 64}
    for name in ("../outside.txt", str(outside), "fhir/../../outside.txt", "validation/report.md"):
        manifest["files"][name] = entry
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert _generate(out, "-q").exit_code == 0
    assert outside.read_text() == "not ehrsim's\n" and (out / "validation" / "report.md").read_text() == "mine\n"


def test_the_leftovers_of_an_interrupted_run_are_removed_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for leftover in (".fhir.partial", ".csv.partial", ".bundles.partial"):
        (out / leftover).mkdir(parents=True)
        (out / leftover / "Patient.ndjson").write_text("{}\n" * 1000)
    (out / ".manifest.json.partial").write_text("{")
    (out / "notes.txt").write_text("mine\n")  # beside the leftovers: the folder an interrupted run wrote to
    result = _generate(out, "--format", "parquet")
    assert result.exit_code == 0, result.output
    assert "removes the leftovers of an interrupted run" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.txt", "parquet"]


@pytest.mark.slow
def test_a_killed_run_is_cleaned_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "simulator", "generate", "-n", "1000", "--chunk-size", "50", "-q", "-o", str(out)]
    process = subprocess.Popen([*command, "--format", "ndjson,csv"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out / ".fhir.partial" / "Patient.ndjson").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / ".fhir.partial").is_dir() and not (out / "manifest.json").exists()
    result = subprocess.run([*command[:5], "40", *command[6:], "--format", "csv"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["csv", "manifest.json"]


@pytest.mark.slow
def test_an_interrupted_run_leaves_the_earlier_run_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from simulator.tables import chunks

    out = tmp_path / "out"
    simulator.generate(patients=30, seed=1, out=out, formats="ndjson,csv")
    (out / "notes.txt").write_text("mine\n")
    before = _snapshot(out)
    original = chunks.chunk_tables

    def interrupted(sim: Simulator, start: int, stop: int) -> chunks.Chunk:
        if start > 0:
            raise KeyboardInterrupt
        return original(sim, start, stop)

    monkeypatch.setattr(chunks, "chunk_tables", interrupted)
    with pytest.raises(KeyboardInterrupt):
        simulator.generate(patients=30, seed=2, chunk_size=10, out=out, formats="bundles,parquet")
    assert _snapshot(out) == before


def test_the_bulk_manifest_urls_are_absolute(tmp_path: Path) -> None:
    default, served = tmp_path / "default", tmp_path / "served"
    simulator.generate(patients=10, seed=3, out=default)
    simulator.generate(patients=10, seed=3, out=served, base_url="https://example.org/export/7")
    outputs = {
        folder: json.loads((folder / "fhir" / "manifest.json").read_text())["output"] for folder in (default, served)
    }
    assert len(outputs[default]) > 5
    for entry in outputs[default]:
        url = urlsplit(entry["url"])
        path = Path(url2pathname(url.path))
        assert url.scheme == "file" and path == (default / "fhir" / f"{entry['type']}.ndjson").resolve()
        assert path.is_file()
    assert [e["url"] for e in outputs[served]] == [
        f"https://example.org/export/7/{e['type']}.ndjson" for e in outputs[default]
    ]
    data = {folder: _snapshot(folder) for folder in (default, served)}
    for files in data.values():
        del files["manifest.json"], files["fhir/manifest.json"]
    assert data[default] == data[served]  # the URLs change the Bulk manifest only


@pytest.mark.slow
def test_a_dry_run_writes_nothing_and_says_what_a_run_would_write(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    result = _generate(fresh, "--format", "ndjson,parquet", "--dry-run", "-q")
    assert result.exit_code == 0, result.output
    assert not fresh.exists()
    lines = result.stdout.splitlines()
    assert lines[0] == f"dry run, nothing written: 20 patients (population, seed 0) -> {fresh}/"
    assert lines[1].split()[:2] == ["ndjson", "about"] and lines[2].split()[:2] == ["parquet", "about"]
    assert "estimated from its first 20 patients" in lines[3] and "free there" in lines[3]

    earlier = tmp_path / "earlier"
    assert _generate(earlier, "-q").exit_code == 0
    before = _snapshot(earlier)
    result = _generate(earlier, "--format", "csv", "--dry-run", "-q")
    assert result.exit_code == 0, result.output
    assert f"replaces the earlier run in {earlier}/ (seed 0, ndjson:" in result.stdout
    assert _snapshot(earlier) == before

    users = _users_folder(tmp_path)
    assert _generate(users, "--dry-run").exit_code == 2  # refused as the run would be


@pytest.mark.slow
def test_the_size_estimate_scales_a_pilot_of_the_first_patients(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = RunConfig(patients=60, seed=4, decedent_years=0.0)  # no decedents: no records beyond the pilot's
    export = api.ExportConfig(tmp_path / "out", ("ndjson", "csv", "parquet"))
    whole = api.preview(config, export).estimate  # a pilot of every patient: the run's own bytes
    written = simulator.generate(
        patients=60, seed=4, out=tmp_path / "written", formats="ndjson,csv,parquet", decedents="none"
    )
    for kind, folder in (("ndjson", "fhir"), ("csv", "csv"), ("parquet", "parquet")):
        actual = sum(f["bytes"] for name, f in written.manifest["files"].items() if name.startswith(folder + "/"))
        assert whole.bytes_by_format[kind] == pytest.approx(actual, rel=0.001), kind  # but the Bulk manifest's URLs
    monkeypatch.setattr(size, "PILOT_PATIENTS", 20)
    scaled = api.preview(config, export).estimate
    assert scaled.pilot_patients == 20 and not (tmp_path / "out").exists()
    assert scaled.total == pytest.approx(whole.total, rel=0.6)  # per-patient bytes vary (CV 0.67)


@pytest.mark.slow
def test_the_size_estimate_before_a_large_run_never_changes_its_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run = {"patients": 30, "seed": 8, "chunk_size": 12, "formats": "ndjson,bundles,csv,parquet"}
    simulator.generate(out=tmp_path / "plain", **run)
    monkeypatch.setattr(api, "ESTIMATE_FROM_PATIENTS", 1)
    monkeypatch.setattr(api, "LARGE_BYTES", 0)
    monkeypatch.setattr(size, "PILOT_PATIENTS", 7)
    messages: list[str] = []
    simulator.generate(out=tmp_path / "estimated", notify=messages.append, **run)
    assert any(m.startswith("this run will write about") and "first 7 patients" in m for m in messages), messages
    plain, estimated = _snapshot(tmp_path / "plain"), _snapshot(tmp_path / "estimated")
    for data in (plain, estimated):
        del data["manifest.json"], data["fhir/manifest.json"]
    assert plain == estimated


def test_a_refused_folder_is_a_config_error_of_the_python_api(tmp_path: Path) -> None:
    folder = _users_folder(tmp_path)
    with pytest.raises(ConfigError, match="is not empty and holds no ehrsim run") as caught:
        simulator.generate(patients=5, out=folder)
    assert caught.value.field == "out"


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (457_563, "458 kB"), (4.6e9, "4.6 GB")]
)
def test_sizes_are_written_in_si_units(n: float, text: str) -> None:
    assert api.human_bytes(n) == text


def test_a_large_run_on_a_small_disk_is_warned_about() -> None:
    estimate = api.SizeEstimate({"ndjson": 4_600_000_000}, 100, 1_000_000_000)
    assert estimate.shortfall(Path("out")) == (
        "warning: 1.0 GB free on the disk of out/, less than the 4.6 GB of this run: it will stop when full"
    )
    assert api.SizeEstimate({"ndjson": 10}, 10, 11).shortfall(Path("out")) is None


def test_a_finished_folder_goes_in_beside_what_is_there_and_never_over_it(tmp_path: Path) -> None:
    final = tmp_path / "csv"
    final.mkdir()
    (final / "mine.csv").write_text("mine")
    (start_directory(final) / "patients.csv").write_text("new")
    finish_directory(final)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["csv", "mine.csv", "patients.csv"]
    partial = start_directory(final)
    (partial / "a.csv").write_text("new")
    (partial / "mine.csv").write_text("new")
    with pytest.raises(FileExistsError, match="mine.csv"):
        finish_directory(final)
    assert (final / "mine.csv").read_text() == "mine" and not (final / "a.csv").exists()


def test_removing_a_runs_files_removes_them_and_the_folders_they_empty_only(tmp_path: Path) -> None:
    for name in ("fhir/A.ndjson", "fhir/B.ndjson", "csv/x.csv", "csv/mine.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    remove_files(tmp_path, ["fhir/A.ndjson", "fhir/B.ndjson", "csv/x.csv", "fhir/gone.ndjson"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["csv", "csv/mine.csv"]
