"""`ehrsim check FILE` checks a file in its library: the names other modules define resolve, the file takes
the place of the library's module of the same name, and a problem the file causes in another module is
reported as the library's. `--alone` checks the file without the library and says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import DATA, REPO
from typer.testing import CliRunner

from simulator.cli import app
from simulator.model.loading import IN_LIBRARY, check_in_library

SHIPPED_MODULE_FILES = sorted((REPO / "modules").glob("*.yaml")) + [
    REPO / "rules" / name
    for name in ("vital_signs.yaml", "wellness.yaml", "immunizations.yaml", "influenza_vaccination.yaml")
]
NOT_RESOLVED = "note: checked alone: names that other modules define were not resolved\n"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # messages name files relative to the working directory


def _check(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["check", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED_MODULE_FILES, ids=lambda p: p.name)
def test_every_shipped_module_file_checked_by_name_passes(path: Path) -> None:
    """Before, 10 of the 14 shipped modules failed when named alone: the names other modules declare were unknown."""
    code, stdout, stderr = _check(str(path.relative_to(REPO)))
    assert (code, stderr) == (0, "")
    assert stdout.startswith("ok: 1 named, in the library; ")


def test_a_real_unknown_name_still_fails_with_its_located_message(tmp_path: Path) -> None:
    copd = tmp_path / "copd.yaml"
    copd.write_text(
        (REPO / "modules" / "copd.yaml")
        .read_text()
        .replace("observe: [fvc, fev1_fvc, fev1]", "observe: [fvc, fev1_fvc, fev2]", 1)
    )
    code, _, stderr = _check(str(copd))
    assert code == 1
    assert stderr == (
        f"{copd}:200:30: states.copd_diagnostic_spirometry.observe[2]: "
        "unknown observable 'fev2' (did you mean 'fev1'?)\n1 problem found\n"
    )


def test_a_file_takes_the_place_of_the_module_of_the_same_name(tmp_path: Path) -> None:
    """A changed copy of a shipped module is checked instead of it (else: 'module name is also used by')."""
    changed = tmp_path / "my_copd.yaml"
    changed.write_text((REPO / "modules" / "copd.yaml").read_text().replace("\ntitle: ", "\ntitle: Changed ", 1))
    library = check_in_library([changed])
    assert library.module("copd").title.startswith("Changed ")
    assert library.document("copd").file == str(changed)
    assert len(library.modules) == len(check_in_library([]).modules)  # replaced, not added

    broken = tmp_path / "broken_copd.yaml"
    broken.write_text(changed.read_text().replace("probability: 0.5", "probability: 0.6", 1))
    code, _, stderr = _check(str(broken))
    assert code == 1
    assert all(line.startswith(f"{broken}:") for line in stderr.splitlines()[:-1])
    assert "branch probabilities must sum to 1" in stderr


def test_a_new_module_joins_the_library_and_uses_its_names(tmp_path: Path) -> None:
    module = tmp_path / "smoking_clinic.yaml"
    module.write_text(
        "name: smoking_clinic\ntitle: Uses smoking's attribute and the asthma module's spirometry\n"
        'sources: {a: "assumption: test"}\nstart: s0\nstates:\n'
        "  s0:\n    cases:\n      - {when: {attribute: ever_smoker, op: '>=', value: 1}, to: s1}\n    otherwise: s1\n"
        "  s1:\n    terminal: true\n"
    )
    code, stdout, stderr = _check(str(module))
    assert (code, stderr) == (0, "")
    assert stdout.startswith("ok: 1 named, in the library; ")


def test_a_problem_the_file_causes_in_another_module_is_the_librarys(tmp_path: Path) -> None:
    """Renaming smoking's `ever_smoker` breaks the modules that read it: reported there, marked as the library's."""
    smoking = tmp_path / "smoking.yaml"
    smoking.write_text((REPO / "modules" / "smoking.yaml").read_text().replace("ever_smoker", "ever_smoked"))
    code, _, stderr = _check(str(smoking))
    lines = stderr.splitlines()
    assert code == 1 and lines[-1] == f"{len(lines) - 1} problems found"
    assert lines[0].startswith("modules/copd.yaml:") and "unknown attribute 'ever_smoker'" in lines[0]
    assert all(line.endswith(IN_LIBRARY) for line in lines[:-1])


def test_alone_says_that_names_were_not_resolved() -> None:
    code, _, stderr = _check("--alone", "modules/copd.yaml")
    assert code == 1
    assert stderr.startswith(NOT_RESOLVED)
    assert (
        "modules/copd.yaml:200:30: states.copd_diagnostic_spirometry.observe[2]: unknown observable 'fev1'\n" in stderr
    )
    code, stdout, stderr = _check("--alone", "modules/smoking.yaml")
    assert (code, stderr) == (0, NOT_RESOLVED)
    assert stdout.startswith("ok: 1 named, alone; ")


def test_the_library_can_be_another_modules_directory(tmp_path: Path) -> None:
    """--modules DIR is the library: the fixture's flu module, changed, replaces the fixture's own."""
    flu = tmp_path / "flu.yaml"
    flu.write_text((DATA / "fixture" / "modules" / "flu.yaml").read_text().replace("ratio: 0.4", "ratio: -0.4"))
    fixture = ["--modules", str(DATA / "fixture" / "modules"), "--rules", str(DATA / "fixture" / "rules")]
    code, _, stderr = _check(str(flu), *fixture)
    assert code == 1
    assert stderr == (
        f"{flu}:28:80: states.susceptible.hazards[0].hazard_ratios[0].ratio: "
        "Input should be greater than 0 (got -0.4)\n1 problem found\n"
    )
    shutil.copy(DATA / "fixture" / "modules" / "flu.yaml", flu)
    assert _check(str(flu), *fixture)[0] == 0
    assert _check(*fixture)[0] == 0  # no file: the whole library


def test_a_problem_on_line_100_is_printed_as_written(tmp_path: Path) -> None:
    """`:100:` is a rich emoji code: the CLI's consoles must print messages as written (emoji=False)."""
    module = tmp_path / "long.yaml"
    module.write_text((DATA / "fixture" / "modules" / "flu.yaml").read_text() + "#\n" * 8 + "extra: 1\n")
    code, _, stderr = _check(str(module), "--alone")
    assert code == 1
    assert f"{module}:100:1: extra: unknown key 'extra'\n" in stderr
