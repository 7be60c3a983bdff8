"""`ehrsim generate` checks every option before any heavy work: one line naming the option (golden
transcript), exit code 2, no traceback, no output folder; and it says what will happen before it happens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba
import pytest
from conftest import DATA
from typer.testing import CliRunner

from simulator import api
from simulator.cli import app
from simulator.engine.run import RunConfig, Simulator

runner = CliRunner()
GOLDEN = DATA / "golden" / "generate_options.expected"

# Each is run as `ehrsim generate -n 5 -o out <args>` in an empty folder holding only the file `afile`.
BAD_OPTIONS = [
    "--threads 0",
    "--threads 5",
    "--reference-date 1800-01-01",
    "--reference-date 2101-01-01",
    "--reference-date 2024-13-01",
    "--reference-date yesterday",
    "--end-date 2101-01-01",
    "--history 0",
    "--history ten",
    "-n -1",
    "--chunk-size 0",
    "--seed -1",
    "--mode cohort",
    "--format xml",
    "--format ,",
    "--bundle-request GET",
    "--base-url fhir/",
    "--base-url ftp://example.org/fhir/",
    "--base-url https://example.org/fhir/?page=2",
    "--modules nowhere",
    "--rules nowhere",
    "-o afile/out",
    "--messiness tidy",
]


def test_every_bad_option_is_named_in_one_line_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 4)  # the same message on any machine
    (tmp_path / "afile").write_text("a user's file\n")

    def no_heavy_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the library was loaded before the options were checked")

    monkeypatch.setattr(Simulator, "build", no_heavy_work)
    transcript = []
    for args in BAD_OPTIONS:
        result = runner.invoke(app, ["generate", "-n", "5", "-o", "out", *args.split()])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), args
        assert result.stdout == "" and result.stderr.count("\n") == 1, (args, result.output)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"], args  # no output folder
        transcript.append(f"$ ehrsim generate -n 5 -o out {args}\n{result.stderr}")
    assert "".join(transcript) == GOLDEN.read_text()


def test_threads_accepts_one_to_the_cores() -> None:
    assert RunConfig(threads=1).threads == 1
    assert RunConfig(threads=numba.config.NUMBA_NUM_THREADS).threads == numba.config.NUMBA_NUM_THREADS


def test_the_reference_date_range_is_inclusive() -> None:
    from datetime import date

    assert RunConfig(reference_date=date(1900, 1, 1)).reference_date == date(1900, 1, 1)
    assert RunConfig(reference_date=date(2100, 12, 31)).reference_date == date(2100, 12, 31)


def test_the_first_run_says_once_that_the_kernel_compiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["generate", "-n", "5", "-o", str(tmp_path / "out")]
    monkeypatch.setattr(api, "kernel_needs_compiling", lambda: True)
    cold = runner.invoke(app, args)
    monkeypatch.setattr(api, "kernel_needs_compiling", lambda: False)
    warm = runner.invoke(app, args)
    assert cold.exit_code == 0 and warm.exit_code == 0, cold.output + warm.output
    assert cold.stderr.count("compiling the simulation kernel: a first run takes under a minute") == 1
    assert "compiling" not in warm.stderr
    for result in (cold, warm):  # messages on stderr, the one summary line on stdout
        assert result.stdout.count("\n") == 1 and result.stdout.startswith("5 patients, ")


@pytest.mark.slow
def test_a_cold_numba_cache_is_detected(tmp_path: Path) -> None:
    """Numba's cache of the kernel: missing in an empty NUMBA_CACHE_DIR, present once a run has built it."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"} | {"NUMBA_CACHE_DIR": str(tmp_path)}
    code = "from simulator.api import kernel_needs_compiling; print(kernel_needs_compiling())"
    cold = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert cold.stdout.strip() == "True"
    Simulator.build(RunConfig(patients=1))  # compiles, or loads the cache it finds
    assert not api.kernel_needs_compiling()


def test_help_says_what_happens_to_the_output_folder_and_how_big_a_run_is() -> None:
    result = runner.invoke(app, ["generate", "--help"], terminal_width=200, env={"COLUMNS": "200"})
    text = " ".join(result.stdout.split())
    for phrase in (
        "An earlier ehrsim run in OUT is replaced",
        "refused unless --overwrite",
        "never removed or replaced",
        ".fhir.partial/",
        "about 860 kB as ndjson",
        "--dry-run",
        "compiles the simulation kernel",
        "1900-01-01 to 2100-12-31",
        "--base-url",
    ):
        assert phrase in text, phrase
