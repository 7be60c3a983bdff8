"""The README's commands stay true: CI runs its test command, and the examples (the scripts, the module of
docs/module-format.md) run."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO

import simulator


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci_lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    test_command = ci_lines[-1]
    assert "pytest" in test_command
    assert any(test_command in block for block in _readme_commands()), test_command


def test_readme_generate_command_uses_the_real_cli() -> None:
    blocks = "\n".join(_readme_commands())
    assert "ehrsim generate --patients" in blocks


@pytest.mark.slow
def test_patient_timeline_example_prints_a_diagnosed_case() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "patient_timeline.py"), "--patients", "1500", "--seed", "3"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "condition diagnosis" in result.stdout
    assert "type2_diabetes" in result.stdout
    assert "patient id" in result.stdout.splitlines()[0]


@pytest.mark.slow
def test_patient_timeline_example_has_a_case_for_every_module(
    shipped_population, shipped_lifetime, shipped_library
) -> None:
    """Each module's example (the script with --module NAME) finds and prints a case in a cohort: the 3,000
    living patients, or for a module as rare as haemodialysis (about 0.1% of the living) the 1,000 lifetimes."""
    sys.path.insert(0, str(REPO / "examples"))
    from patient_timeline import case_for_module, describe

    observables = {name: o for m in shipped_library.modules for name, o in m.observables.items()}
    for module in shipped_library.modules:
        if not module.states:  # declarations only (vital_signs): nothing of its own happens
            continue
        # a module whose results are all taken at other modules' encounters (blood_count's panel at their
        # start) has its case in the patients with those results
        taken = {observables[name].code.code for names in module.labs_at_start.values() for name in names}
        for population in (shipped_population, shipped_lifetime):
            events = population.events
            patient = case_for_module(events, module.name)
            if patient is None and taken:
                hits = events[events["code"].isin(taken)]
                patient = None if hits.empty else int(hits["patient"].iloc[0])
            if patient is not None:
                break
        assert patient is not None, f"no patient has an event of module {module.name}"
        text = describe(population, patient)
        assert "patient id" in text.splitlines()[0]
        own = events[events["patient"] == patient]
        assert (own["module"] == module.name).any() or own["code"].isin(taken).any()


def test_module_format_example_loads_and_runs(tmp_path) -> None:
    """The complete module of docs/module-format.md loads on its own and its patients use it."""
    from simulator.model.loading import load_library

    doc = (REPO / "docs" / "module-format.md").read_text()
    example = re.search(r"```yaml\n(name: example.*?)```", doc, flags=re.S).group(1)
    (tmp_path / "example.yaml").write_text(example)
    library = load_library(tmp_path)
    assert [m.name for m in library.modules if m.name == "example"] == ["example"]
    population = simulator.generate(patients=300, seed=1, modules_dir=tmp_path)
    assert (population.events["module"] == "example").any()
