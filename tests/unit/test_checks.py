"""simulator/model/checks.py: each kind of cross-file and graph problem, made by one edit of a module
the checks accept, is reported alone and at file:line:col of what the edit broke."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO

from simulator.model.checks import TERMINOLOGY_FILE
from simulator.model.loading import load_library
from simulator.model.parsing import LoadError

VALID = """\
name: checked
title: A module the checks accept, and broken copies of it
sources: {a: "assumption: unit test values"}
conditions:
  dz: {code: {system: SNOMED, code: "44054006", display: Diabetes mellitus type 2 (disorder)}}
start: well
states:
  well:
    after: {distribution: exact, value: 1, unit: years, source: a}
    next: fork
  fork:
    branches:
      - {to: sick, probability: 0.4, source: a}
      - {to: done, probability: 0.6, source: a}
  sick:
    onset: [dz]
    cases:
      - when: {race: [white]}
        to: done
    otherwise: done
  done:
    terminal: true
"""

# (id, text replaced, replacement, where the problem is: the first occurrence of this in the broken
# text, the problem's path and message)
BROKEN = [
    ("unknown state", "otherwise: done", "otherwise: don", "don\n",
     "states.sick.otherwise: unknown state 'don' (did you mean 'done'?)"),
    ("unreachable state", "    terminal: true\n", "    terminal: true\n  orphan:\n    terminal: true\n", "orphan:",
     "states.orphan: state 'orphan' cannot be reached from start"),
    ("probabilities", "probability: 0.6", "probability: 0.5", "- {to: sick",
     "states.fork.branches: branch probabilities must sum to 1 (got 0.9)"),
    ("unknown code", '"44054006"', '"44054007"', '"44054007"',
     f"conditions.dz.code.code: SNOMED code '44054007' is not in rules/{TERMINOLOGY_FILE} (did you mean '44054006'?)"),
    ("wrong display", "display: Diabetes mellitus type 2 (disorder)", "display: Type 2 diabetes", "Type 2 diabetes",
     "conditions.dz.code.display: display should be 'Diabetes mellitus type 2 (disorder)' "
     f"(as in rules/{TERMINOLOGY_FILE})"),
    ("cycle without time", "otherwise: done", "otherwise: fork", "fork:\n",
     "states.fork: cycle without time passing: fork -> sick -> fork"),
    ("unknown condition", "onset: [dz]", "onset: [dx]", "dx]",
     "states.sick.onset[0]: unknown condition 'dx'"),
    ("unknown race in a guard", "race: [white]", "race: [whit]", "whit]",
     "states.sick.cases[0].when.race[0]: unknown race 'whit' (did you mean 'white'?)"),
    ("unknown source", "unit: years, source: a", "unit: years, source: b", "b}",
     "states.well.after.source: unknown source 'b'"),
    ("diagnosis outside an encounter", "onset: [dz]", "diagnose: [dz]", "diagnose:",
     "states.sick.diagnose: diagnose needs an encounter, but this state can be entered with none open "
     "(start one here or earlier without time passing, or wait_for: wellness)"),
]  # fmt: skip


@pytest.fixture(scope="module")
def coded_rules(bare_rules: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bare fixture rules with the shipped terminology table, so that codes are checked too."""
    rules = tmp_path_factory.mktemp("coded") / "rules"
    shutil.copytree(bare_rules, rules)
    shutil.copy(REPO / "rules" / TERMINOLOGY_FILE, rules / TERMINOLOGY_FILE)
    return rules


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # messages name files relative to the working directory


def _problems(rules: Path, **texts: str) -> list[str]:
    """The problems of a library of these modules (name -> text, written to name.yaml), as printed."""
    paths = []
    for name, text in texts.items():
        paths.append(Path(f"{name}.yaml"))
        paths[-1].write_text(text)
    try:
        load_library(paths, rules)
    except LoadError as exc:
        return [str(problem) for problem in exc.problems]
    return []


def _position(text: str, snippet: str) -> str:
    """line:column (1-based) of the first occurrence of `snippet` in `text`."""
    before = text[: text.index(snippet)]
    line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
    return f"{line}:{column}"


def test_the_valid_module_passes_every_check(coded_rules: Path) -> None:
    assert _problems(coded_rules, checked=VALID) == []


@pytest.mark.parametrize(("old", "new", "at", "message"), [case[1:] for case in BROKEN], ids=[c[0] for c in BROKEN])
def test_each_problem_is_reported_alone_at_its_position(
    coded_rules: Path, old: str, new: str, at: str, message: str
) -> None:
    assert VALID.count(old) == 1
    broken = VALID.replace(old, new)
    assert _problems(coded_rules, checked=broken) == [f"checked.yaml:{_position(broken, at)}: {message}"]


def test_a_name_declared_by_two_modules_is_reported_in_the_second(coded_rules: Path) -> None:
    other = VALID.replace("name: checked", "name: other")
    assert _problems(coded_rules, checked=VALID, other=other) == [
        f"other.yaml:{_position(other, 'dz:')}: conditions.dz: "
        "'dz' is already declared in module 'checked' (conditions)"
    ]


def test_every_problem_of_a_file_is_reported_at_once(coded_rules: Path) -> None:
    broken = VALID
    for _, old, new, _, _ in BROKEN[:3]:
        broken = broken.replace(old, new)
    problems = _problems(coded_rules, checked=broken)
    assert sorted(p.split(": ", 1)[1] for p in problems) == sorted(case[4] for case in BROKEN[:3])
