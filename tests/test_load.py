"""`ehrsim load` against Medplum's FHIR engine (tests/servers/medplum: @medplum/fhir-router 4.5.2 and its
in-memory repository behind node:http, validating every create and update), started on 127.0.0.1 by the
tests: a run loads with no failure and the server's counts equal the export's; a second load changes
nothing; an interrupted load resumes to the same end state; the bundles load POSTed one by one, as with
curl. Without node or the npm packages these tests skip, saying so; with CI=true they fail instead
(.ci/run installs both)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import REPO
from typer.testing import CliRunner

import simulator
from simulator.cli import app
from simulator.errors import ConfigError
from simulator.export.bundles import SHARED_BUNDLE
from simulator.load import CHECKPOINT, REPORT, LoadConfig, load_run
from simulator.load.client import ServerError
from simulator.load.loader import Checkpoint
from simulator.load.source import type_order

SERVER_DIR = REPO / "tests" / "servers" / "medplum"
START_TIMEOUT_S = 60


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        return "its npm packages are not installed"
    return None


@contextlib.contextmanager
def medplum(*args: str, token: str | None = None) -> Iterator[str]:
    """A fresh Medplum test server on 127.0.0.1 (its base URL), stopped afterwards."""
    missing = _missing()
    if missing:
        message = f"the Medplum test server cannot start: {missing} (`npm ci` in {SERVER_DIR}; .ci/run installs both)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI=true, so this fails instead of skipping")
        pytest.skip(message)
    env = {**os.environ, "MEDPLUM_TEST_TOKEN": token or ""}
    process = subprocess.Popen(
        ["node", "server.mjs", *args], cwd=SERVER_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        line = process.stdout.readline() if ready else b""  # type: ignore[union-attr]
        if not line:
            process.kill()
            pytest.fail(f"the Medplum test server did not start: {process.communicate()[1].decode()[-2000:]}")
        url = json.loads(line)["url"]
        assert url.startswith("http://127.0.0.1:")  # the tests talk to this machine only
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def written_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 patients of the shipped modules as ndjson and bundles."""
    out = tmp_path_factory.mktemp("load") / "run"
    simulator.generate(patients=50, seed=11, out=out, formats="ndjson,bundles")
    return out


def _copy(run: Path, tmp_path: Path, folders: tuple[str, ...] = ("fhir",)) -> Path:
    """The run's manifest and folders in a folder of the test's own (hard links: nothing is copied), so a
    load's checkpoint and report stay the test's."""
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(run / "manifest.json", copy)
    for folder in folders:
        shutil.copytree(run / folder, copy / folder, copy_function=os.link)
    return copy


def _exported(run: Path) -> dict[str, int]:
    return {item["type"]: item["count"] for item in json.loads((run / "fhir" / "manifest.json").read_text())["output"]}


def _server_counts(url: str, types: list[str]) -> dict[str, int]:
    return {t: httpx.get(f"{url}/{t}", params={"_summary": "count"}).json()["total"] for t in types}


def _versions(url: str, resource_type: str) -> dict[str, str]:
    bundle = httpx.get(f"{url}/{resource_type}", params={"_count": "1000"}, timeout=60).json()
    return {e["resource"]["id"]: e["resource"]["meta"]["versionId"] for e in bundle.get("entry", [])}


@pytest.mark.slow
def test_a_run_loads_whole_and_a_second_load_changes_nothing(written_run: Path, tmp_path: Path) -> None:
    run = _copy(written_run, tmp_path)
    exported = _exported(run)
    with medplum() as url:
        first = load_run(LoadConfig(run, url, concurrency=2))
        assert (first.failed, first.loaded, first.interrupted) == (0, sum(exported.values()), False)
        assert {t: c["server"] for t, c in first.counts.items()} == exported == _server_counts(url, list(exported))
        assert first.entries_per_request == 50 and first.requests < first.loaded / 40  # full transactions
        versions = {t: _versions(url, t) for t in ("Patient", "Encounter", "Organization")}
        assert len(versions["Patient"]) == exported["Patient"]
        second = load_run(LoadConfig(run, url, concurrency=2))
        assert (second.failed, second.loaded) == (0, first.loaded)
        assert _server_counts(url, list(exported)) == exported
        assert {t: _versions(url, t) for t in versions} == versions  # unchanged: no new version of anything
    report = json.loads((run / REPORT).read_text())
    assert report["loaded"] == first.loaded and report["failed"] == 0 and report["failures"] == []
    assert report["counts"]["Observation"] == {"exported": exported["Observation"], "server": exported["Observation"]}
    checkpoint = json.loads((run / CHECKPOINT).read_text())
    assert checkpoint["shared_done"] and checkpoint["below"] == exported["Patient"] and checkpoint["done"] == []


@pytest.mark.slow
def test_an_interrupted_load_resumes_to_the_same_end_state(written_run: Path, tmp_path: Path) -> None:
    run = _copy(written_run, tmp_path)
    exported = _exported(run)
    whole = load_run(LoadConfig(run, "http://127.0.0.1:9", dry_run=True)).requests
    with medplum() as url:
        stopped = load_run(LoadConfig(run, url, concurrency=3, max_requests=whole // 2))
        assert stopped.interrupted and stopped.counts == {} and stopped.failed == 0
        assert stopped.requests == whole // 2
        checkpoint = json.loads((run / CHECKPOINT).read_text())
        assert checkpoint["shared_done"] and 0 < checkpoint["below"] < exported["Patient"]
        on_server = _server_counts(url, list(exported))
        assert sum(on_server.values()) < sum(exported.values())
        resumed = load_run(LoadConfig(run, url, concurrency=3, resume=True))
        assert resumed.failed == 0 and not resumed.interrupted
        assert resumed.skipped > 0 and resumed.loaded + resumed.skipped == sum(exported.values())
        assert resumed.requests < whole
        assert _server_counts(url, list(exported)) == exported
        patients = [json.loads(line)["id"] for line in (run / "fhir" / "Patient.ndjson").read_text().splitlines()]
        assert sorted(_versions(url, "Patient")) == sorted(patients)
    # a checkpoint is for its own server: resuming elsewhere is refused
    with medplum() as other, pytest.raises(ConfigError, match="another load"):
        load_run(LoadConfig(run, other, resume=True))


@pytest.mark.slow
def test_the_bundles_load_posted_one_by_one_as_with_curl(written_run: Path) -> None:
    """The shared bundle first (its name sorts first), then each patient's transaction: all accepted, none
    holding a conditional create or a shared resource, and the server holds what the ndjson holds."""
    paths = sorted((written_run / "bundles").glob("*.json"))
    exported = _exported(written_run)
    assert paths[0].name == SHARED_BUNDLE and len(paths) == 1 + exported["Patient"]  # the 50, their decedents too
    with medplum() as url, httpx.Client(headers={"Content-Type": "application/fhir+json"}, timeout=60) as http:
        for path in paths:
            response = http.post(url, content=path.read_bytes())
            assert response.status_code == 200, f"{path.name}: {response.text[:500]}"
            statuses = {entry["response"]["status"][:3] for entry in response.json()["entry"]}
            assert statuses == ({"200", "201"} & statuses) and statuses, path.name
        assert _server_counts(url, list(exported)) == exported


@pytest.mark.slow
def test_the_loader_reads_bundles_when_the_run_has_no_ndjson(written_run: Path, tmp_path: Path) -> None:
    run = _copy(written_run, tmp_path, ("bundles",))
    exported = _exported(written_run)
    with medplum() as url:
        report = load_run(LoadConfig(run, url, concurrency=2))
        assert (report.source, report.failed, report.loaded) == ("bundles", 0, sum(exported.values()))
        assert {t: c["server"] for t, c in report.counts.items()} == exported
        # at the exported ids, urn:uuid references made literal
        lines = (written_run / "fhir" / "Encounter.ndjson").read_bytes().splitlines()[::100]
        for encounter in map(orjson.loads, lines):
            stored = httpx.get(f"{url}/Encounter/{encounter['id']}").json()
            # the server adds its version and time to meta; the profile stays as exported
            assert stored.pop("meta")["profile"] == encounter.pop("meta")["profile"]
            assert stored == encounter


@pytest.mark.slow
def test_a_refused_resource_is_reported_with_the_servers_outcome_and_the_rest_loads(
    written_run: Path, tmp_path: Path
) -> None:
    run = _copy(written_run, tmp_path)
    observations = run / "fhir" / "Observation.ndjson"
    lines = observations.read_bytes().splitlines(keepends=True)
    broken = orjson.loads(lines[100])
    del broken["code"]  # required: Medplum's validator refuses it
    observations.unlink()  # a file of its own, not a link to the module's run
    observations.write_bytes(b"".join([*lines[:100], orjson.dumps(broken) + b"\n", *lines[101:]]))
    exported = _exported(run)
    with medplum() as url:
        result = CliRunner().invoke(app, ["load", str(run), "--server", url, "--concurrency", "2", "-q"])
    assert result.exit_code == 1, result.output
    assert f"Observation/{broken['id']}: 400" in result.stdout and "Observation.code" in result.stdout
    report = json.loads((run / REPORT).read_text())
    assert report["failed"] == 1 and report["loaded"] == sum(exported.values()) - 1
    [failure] = report["failures"]
    assert failure["resource"] == f"Observation/{broken['id']}" and "Missing required property" in failure["outcome"]
    n_observations = exported["Observation"]
    assert report["counts"]["Observation"] == {"exported": n_observations, "server": n_observations - 1}
    checkpoint = json.loads((run / CHECKPOINT).read_text())
    assert checkpoint["below"] + len(checkpoint["done"]) == exported["Patient"] - 1  # that patient stays to do


@pytest.mark.slow
def test_retries_a_busy_server_learns_its_transaction_limit_and_sends_the_token(
    written_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 7th request answered 429; 80 entries asked for, where Medplum takes at most 50 updates in a
    transaction; a bearer token required."""
    run = _copy(written_run, tmp_path)
    exported = _exported(run)
    monkeypatch.setenv("EHRSIM_TEST_TOKEN", "s3cret")
    with medplum("--busy-every", "7", token="s3cret") as url:
        report = load_run(LoadConfig(run, url, concurrency=2, max_entries=80, token_env="EHRSIM_TEST_TOKEN"))
        assert (report.failed, report.loaded) == (0, sum(exported.values()))
        assert report.retries >= report.requests // 7 > 0
        assert report.entries_per_request == 40  # the halves of 80 passed: the size was refused
        assert {t: c["server"] for t, c in report.counts.items()} == exported
        monkeypatch.setenv("EHRSIM_TEST_TOKEN", "wrong")
        with pytest.raises(ServerError, match="401"):
            load_run(LoadConfig(run, url, token_env="EHRSIM_TEST_TOKEN"))


def test_a_dry_run_sends_nothing_and_writes_nothing(written_run: Path, tmp_path: Path) -> None:
    run = _copy(written_run, tmp_path)
    before = sorted(p.name for p in run.iterdir())
    result = CliRunner().invoke(app, ["load", str(run), "--server", "http://127.0.0.1:9/fhir", "--dry-run", "-q"])
    assert result.exit_code == 0, result.output
    assert "dry run, nothing sent" in result.stdout and "POST http://127.0.0.1:9/fhir transaction" in result.stdout
    assert f"{sum(_exported(run).values()):,} resources" in result.stdout
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "ftp://example.org/fhir"], "--server: not an absolute http(s)://"),
        (["--server", "http://127.0.0.1:9", "--concurrency", "0"], "--concurrency: must be 1 to 64"),
        (["--server", "http://127.0.0.1:9", "--token-env", "EHRSIM_NO_SUCH_VARIABLE"], "is not set"),
    ],
)
def test_bad_options_are_named(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["load", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output


def test_a_server_that_does_not_answer_stops_the_load(written_run: Path, tmp_path: Path) -> None:
    run = _copy(written_run, tmp_path)
    with pytest.raises(ServerError, match="no answer from http://127.0.0.1:9/"):
        load_run(LoadConfig(run, "http://127.0.0.1:9", retries=0))


def test_a_folder_without_a_run_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["load", str(tmp_path), "--server", "http://127.0.0.1:9", "--dry-run"])
    assert result.exit_code == 1 and "neither fhir/*.ndjson nor bundles/*.json" in result.output


@pytest.mark.parametrize(
    ("name", "message"),
    [("Patient.ndjson.gz", "compressed ndjson (--compress)"), ("Patient.000.ndjson", "written in parts (--dask)")],
)
def test_compressed_or_parted_ndjson_is_refused_saying_what_to_do(name: str, message: str, tmp_path: Path) -> None:
    """The loader reads one plain ndjson file per type (docs/performance.md)."""
    (tmp_path / "fhir").mkdir()
    (tmp_path / "fhir" / name).write_bytes(b"")
    result = CliRunner().invoke(app, ["load", str(tmp_path), "--server", "http://127.0.0.1:9", "--dry-run"])
    assert result.exit_code == 1 and message in result.output


def test_types_come_after_the_types_they_reference_and_cycles_stay_together() -> None:
    references = {
        "Patient": {"Organization"},
        "Encounter": {"Patient", "Condition", "Location"},
        "Condition": {"Patient", "Encounter"},
        "Observation": {"Patient", "Encounter"},
        "DiagnosticReport": {"Patient", "Encounter", "Observation"},
    }
    assert type_order(references) == ["Patient", "Condition", "Encounter", "Observation", "DiagnosticReport"]


def test_the_checkpoint_keeps_the_patients_loaded_in_any_order(tmp_path: Path) -> None:
    checkpoint = Checkpoint({"server": "s", "run": "r", "source": "ndjson"})
    checkpoint.add([1, 2, 5])
    assert (checkpoint.below, checkpoint.done) == (0, {1, 2, 5})
    checkpoint.add([0])
    assert (checkpoint.below, checkpoint.done) == (3, {5})
    assert [n for n in range(7) if checkpoint.has(n)] == [0, 1, 2, 5]
    checkpoint.save(tmp_path / CHECKPOINT)
    assert Checkpoint.read(tmp_path / CHECKPOINT, checkpoint.key) == checkpoint
    with pytest.raises(ConfigError, match="another load"):
        Checkpoint.read(tmp_path / CHECKPOINT, {**checkpoint.key, "server": "t"})
