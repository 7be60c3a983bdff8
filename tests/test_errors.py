"""Bad input: each broken file gives its expected messages (golden files), exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA, REPO
from typer.testing import CliRunner

from simulator.cli import app

BROKEN = sorted((DATA / "broken").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # messages name files relative to the working directory


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_module_gives_golden_messages(path: Path) -> None:
    result = CliRunner().invoke(app, ["check", str(path.relative_to(REPO)), "--rules", "rules"])
    expected = path.with_suffix(".expected").read_text()
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr == expected


def test_corpus_covers_the_required_cases() -> None:
    names = {p.stem for p in BROKEN}
    required = {
        "wrong_type",
        "unknown_state",
        "probabilities",
        "missing_field",
        "yaml_syntax",
        "zero_time_cycle",
        "unknown_code_system",
        "unknown_code",
        "bad_numbers",
    }
    assert required <= names


def test_generate_with_a_broken_module_fails_cleanly_and_writes_nothing(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "bad.yaml").write_text((DATA / "broken" / "probabilities.yaml").read_text())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", "-n", "5", "--modules", str(modules), "--out", str(out), "-q"])
    assert result.exit_code == 1
    assert "branch probabilities must sum to 1 (got 1.3)" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_bad_arguments_fail_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", "-n", "-3", "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 2  # a usage error (tests/test_cli_options.py covers every option)
    assert result.stderr.strip() == "error: --patients: must be >= 0 (got -3)"
    result = CliRunner().invoke(app, ["graph", "type2_diabetis", "--out", str(tmp_path / "g.svg")])
    assert result.exit_code == 1
    assert "did you mean 'type2_diabetes'?" in result.stderr
