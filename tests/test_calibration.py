"""Calibration recovers known parameters from targets simulated with them, writes them as data that
load_library applies, and reports bad declarations with file:line."""

from __future__ import annotations

import csv
import errno
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, REPO

from simulator.engine.codes import K_DEATH
from simulator.engine.people import build_people_tables, reference_date_of
from simulator.engine.run import RunConfig, Simulator
from simulator.fit.calibration import (
    LOG_STEP,
    Free,
    Objective,
    assignments,
    column_groups,
    ensemble_for,
    fit,
    fit_groups,
    fits_outside_bounds,
    fitted_numbers,
    free_parameters,
    sparse_broyden,
    stale_fits,
    write_fitted,
)
from simulator.fit.cohort import Vocabulary, needs_of, simulate_cohort
from simulator.fit.statistics import compare
from simulator.model.fitted import Parameter
from simulator.model.library import Library
from simulator.model.loading import load_library
from simulator.model.parsing import LoadError
from simulator.model.targets import COLUMNS, load_targets

TRUE_RATES = (0.010, 0.030)  # tests/data/calibration/toy.yaml
CASE_FATALITY_BANDS = ["under_55", "55_64", "65_74", "75_84", "85_plus"]  # stroke.yaml, coronary_heart_disease.yaml
BANDS = ((18, 34), (35, 49), (50, 64), (65, 120))
DECLARATION = """\
module: toy
targets: ["toy_prevalence/*"]
parameters:
  young:
    paths: ["states.healthy.hazards[0].rate_per_year.male[0]", "states.healthy.hazards[0].rate_per_year.female[0]"]
    scale: [0.1, 10.0]
    targets: ["toy_prevalence/18-34", "toy_prevalence/35-49"]
  old:
    paths: ["states.healthy.hazards[0].rate_per_year.male[1]", "states.healthy.hazards[0].rate_per_year.female[1]"]
    scale: [0.1, 10.0]
    targets: ["toy_prevalence/50-64", "toy_prevalence/65-120"]
"""


OLD_SCALE = 'scale: [0.1, 10.0]\n    targets: ["toy_prevalence/50'  # the bounds of the parameter `old`


def _write_targets(directory: Path, values: dict[tuple[int, int], float]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "definitions.yaml").write_text(
        "measures:\n  toy_prevalence:\n    statistic: prevalence\n"
        "    numerator: {conditions: [toy_condition], status: active}\n"
    )
    with (directory / "targets.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        for (lo, hi), value in values.items():
            row = dict.fromkeys(COLUMNS, "")
            row.update(id=f"toy_prevalence/{lo}-{hi}", measure="toy_prevalence", condition="toy", age_lo=lo,
                       age_hi=hi, statistic="prevalence", sex="all", value=value, unit="fraction", basis="crude",
                       role="primary", year="2024", source="simulated truth")  # fmt: skip
            writer.writerow(row)


@pytest.fixture()
def rules(tmp_path: Path) -> Path:
    """The shipped rules with a toy target table, without the shipped targets and declarations, and
    without the wellness visits and vital signs (the toy needs neither; the tests run faster)."""
    rules = tmp_path / "rules"
    skipped = shutil.ignore_patterns("targets", "wellness.yaml", "vital_signs.yaml")
    shutil.copytree(REPO / "rules", rules, ignore=skipped)
    _write_targets(rules / "targets", {band: 0.5 for band in BANDS})
    return rules


def _truth(rules: Path) -> dict[tuple[int, int], float]:
    """Prevalence by band in a cohort simulated with the true rates (another seed than the fit's)."""
    library = load_library([DATA / "calibration" / "toy.yaml"], rules)
    targets = load_targets(rules / "targets")
    vocabulary = Vocabulary.of(library)
    sim = Simulator.build(RunConfig(patients=6000, seed=99), library)
    cohort = simulate_cohort(sim, np.arange(6000), needs_of(targets.definitions, vocabulary), sim.reference_t)
    measure = targets.definitions.measures["toy_prevalence"]
    return {(t.age_lo, t.age_hi): compare(t, measure, cohort, vocabulary).simulated for t in targets.targets}


def _toy_to_fit(rules: Path, tmp_path: Path, rates: str, declaration: str) -> Path:
    """Targets simulated with the toy's true rates, the toy module with `rates` instead (its directory is
    returned) and `declaration`."""
    _write_targets(rules / "targets", _truth(rules))
    start = tmp_path / "modules"
    start.mkdir()
    text = (DATA / "calibration" / "toy.yaml").read_text()
    (start / "toy.yaml").write_text(text.replace("[0.010, 0.030]", rates))
    (rules / "targets" / "calibration").mkdir()
    (rules / "targets" / "calibration" / "toy.yaml").write_text(declaration)
    return start


def _write_fitted_file(rules: Path, values: dict[str, float], parameters: str = "{}") -> None:
    """A hand-written toy.fitted.yaml whose `values` (path: number) start on line 10."""
    (rules / "targets" / "calibration").mkdir(exist_ok=True)
    (rules / "targets" / "calibration" / "toy.fitted.yaml").write_text(
        "module: toy\nfitted: '2026-12-01'\npatients: 1\nseed: 1\nloss_before: 1\nloss_after: 0\n"
        f"targets: []\nparameters: {parameters}\nvalues:\n"
        + "".join(f"  {path}: {value}\n" for path, value in values.items())
    )


def test_calibration_recovers_known_rates(rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start = _toy_to_fit(rules, tmp_path, "[0.004, 0.075]", DECLARATION)
    library = load_library(start, rules)
    assert fit_groups(library, list(library.calibration)) == [["toy"]]
    targets = load_targets(rules / "targets")
    lines: list[str] = []
    result = fit(library, targets, library.calibration, ["toy"], patients=2500, seed=7, report=lines.append)
    assert result.loss_after < result.loss_before / 10
    assert lines[0].startswith("fitting 2 parameters of toy to 4 targets")
    assert lines[1].startswith("  simulating ") and "toy" in lines[1]
    assert "2 columns in 1 simultaneous difference groups" in lines[3]  # disjoint targets: stepped together
    fitted = result.values["toy"]
    young = fitted["states.healthy.hazards[0].rate_per_year.male[0]"]
    old = fitted["states.healthy.hazards[0].rate_per_year.male[1]"]
    assert young == pytest.approx(TRUE_RATES[0], rel=0.25)
    assert old == pytest.approx(TRUE_RATES[1], rel=0.25)

    def full_disk(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(Path, "write_bytes", full_disk)
        with pytest.raises(OSError, match="No space left") as caught:
            write_fitted(result, library, 2500, 7)
    assert caught.value.filename == str(rules / "targets" / "calibration" / "toy.fitted.yaml")
    assert sorted(p.name for p in (rules / "targets" / "calibration").iterdir()) == ["toy.yaml"]  # no partial
    written = write_fitted(result, library, 2500, 7)
    assert [p.name for p in written] == ["toy.fitted.yaml"]
    reloaded = load_library(start, rules).module("toy").states["healthy"].hazards[0].rate_per_year
    assert reloaded.male == pytest.approx([young, old]) and reloaded.female == pytest.approx([young, old])
    assert f"{rules.name}/targets/calibration/toy.fitted.yaml" in " ".join(load_library(start, rules).file_sha256)
    assert stale_fits(load_library(start, rules)) == []
    text = (start / "toy.yaml").read_text()
    (start / "toy.yaml").write_text(text + "# a comment added after the fit\n")
    assert stale_fits(load_library(start, rules)) == []  # comments are not data
    (start / "toy.yaml").write_text(text.replace("title:", "title: Edited", 1))
    assert stale_fits(load_library(start, rules)) == ["toy"]


def test_the_jacobian_is_differenced_inside_narrow_bounds(rules: Path, tmp_path: Path) -> None:
    """A parameter whose bounds are narrower than the log step is stepped by an eighth of their width, inward."""
    _write_targets(rules / "targets", {band: 0.3 for band in BANDS})
    (rules / "targets" / "calibration").mkdir()
    narrow = DECLARATION.replace("scale: [0.1, 10.0]", "scale: [0.97, 1.03]", 1)
    (rules / "targets" / "calibration" / "toy.yaml").write_text(narrow)
    library = load_library([DATA / "calibration" / "toy.yaml"], rules)
    lines: list[str] = []
    fit(library, load_targets(rules / "targets"), library.calibration, ["toy"], patients=500, seed=7,
        max_iterations=2, report=lines.append)  # fmt: skip
    evaluated = [float(line.split()[2]) for line in lines if line.split()[0].isdigit()]
    assert len(evaluated) >= 2 and evaluated[0] == pytest.approx(1.0)
    assert all(0.97 - 1e-9 <= value <= 1.03 + 1e-9 for value in evaluated), evaluated
    assert any(value != pytest.approx(1.0) for value in evaluated)  # the step was taken, not skipped


@pytest.mark.slow
def test_a_start_on_a_bound_still_takes_a_full_first_step(rules: Path, tmp_path: Path) -> None:
    """A parameter that starts on its bound moves half a difference step inside, and the first step after
    the Jacobian is about one difference step, not the 1e-5 of one that scipy sizes from a start on a bound
    (a step too small to change anyone in a fixed cohort, so a refit never moved)."""
    start = _toy_to_fit(rules, tmp_path, "[0.004, 0.030]", DECLARATION.replace("[0.1, 10.0]", "[1.0, 4.0]", 1))
    library = load_library(start, rules)
    lines: list[str] = []
    fit(library, load_targets(rules / "targets"), library.calibration, ["toy"], patients=2500, seed=7,
        max_iterations=3, report=lines.append)  # fmt: skip
    young = [float(line.split()[2]) for line in lines if line.split()[0].isdigit()]
    size = min(LOG_STEP, math.log(4.0) / 8)
    assert young[0] == pytest.approx(math.exp(size / 2), rel=1e-3)  # half a step inside the lower bound x1 (as printed)
    assert math.log(young[-1] / young[0]) > size / 2  # the step after the Jacobian: towards x2.5, not 1e-5


def test_a_refit_keeps_the_bounds_relative_to_the_module_file(rules: Path, tmp_path: Path) -> None:
    """A refit starts from the shipped fitted value, but its bounds multiply the module file's number:
    a fitted value outside them (here 0.5 x the file's 0.010 under bounds x0.8 to x1.25) is brought back
    inside, not taken as a new 1.0 that would let repeated fits drift out of the declared range."""
    _write_targets(rules / "targets", {band: 0.3 for band in BANDS})
    (rules / "targets" / "calibration").mkdir()
    narrow = DECLARATION.replace("scale: [0.1, 10.0]", "scale: [0.8, 1.25]", 1)
    (rules / "targets" / "calibration" / "toy.yaml").write_text(narrow)
    young = ["states.healthy.hazards[0].rate_per_year.male[0]", "states.healthy.hazards[0].rate_per_year.female[0]"]
    _write_fitted_file(rules, dict.fromkeys(young, 0.005))
    library = load_library([DATA / "calibration" / "toy.yaml"], rules)
    assert library.module("toy").states["healthy"].hazards[0].rate_per_year.male[0] == pytest.approx(0.005)
    assert fits_outside_bounds(library) == ["toy.young = 0.5, outside [0.8, 1.25]"]
    lines: list[str] = []
    result = fit(library, load_targets(rules / "targets"), library.calibration, ["toy"], patients=500, seed=7,
                 max_iterations=2, report=lines.append)  # fmt: skip
    evaluated = [float(line.split()[2]) for line in lines if line.split()[0].isdigit()]
    assert evaluated and all(0.8 - 1e-9 <= value <= 1.25 + 1e-9 for value in evaluated), evaluated
    for path in young:
        assert 0.008 - 1e-9 <= result.values["toy"][path] <= 0.0125 + 1e-9
    assert 0.8 - 1e-9 <= result.parameters["toy"]["young"] <= 1.25 + 1e-9  # a multiplier of the file's number


@pytest.mark.slow
def test_a_parameter_over_another_recovers_their_ratio(rules: Path, tmp_path: Path) -> None:
    """`over`: the older band's rate is fitted as a multiple of the younger band's (bounds from x1: it never
    falls below it), and the fit recovers the true ratio (x3) from a start of x1.5."""
    over = DECLARATION.replace(OLD_SCALE, 'over: young\n    scale: [1.0, 6.0]\n    targets: ["toy_prevalence/50')
    assert "over: young" in over
    library = load_library(_toy_to_fit(rules, tmp_path, "[0.006, 0.009]", over), rules)
    # young sets old's rates too, so it moves old's bands: the two are not differenced in one simulation
    assert set(library.calibration["toy"].moves["young"]) == {f"toy_prevalence/{lo}-{hi}" for lo, hi in BANDS}
    free = free_parameters(library, library.calibration, ["toy"])
    assert [round(math.exp(f.start), 6) for f in free] == [1.0, 1.5]  # old starts at 0.009 / 0.006
    numbers = {parts[-1]: value for _, parts, value in assignments(free, [math.log(2.0), math.log(3.0)])}
    assert numbers[0] == pytest.approx([0.012]) and numbers[1] == pytest.approx([0.036])  # 3 x the young's 0.012
    result = fit(library, load_targets(rules / "targets"), library.calibration, ["toy"], patients=2500, seed=7,
                 report=lambda line: None)  # fmt: skip
    young = result.values["toy"]["states.healthy.hazards[0].rate_per_year.male[0]"]
    old = result.values["toy"]["states.healthy.hazards[0].rate_per_year.male[1]"]
    assert result.parameters["toy"]["old"] == pytest.approx(old / young, rel=1e-4)
    assert young == pytest.approx(TRUE_RATES[0], rel=0.25)
    assert old / young == pytest.approx(TRUE_RATES[1] / TRUE_RATES[0], rel=0.25)


OTHER = '"states.healthy.hazards[0].rate_per_year.male[1]"'


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("male[0]", "male[9]"), "path 'states.healthy.hazards[0].rate_per_year.male[9]' does not exist"),
        (("states.healthy.hazards[0].rate", "states..x"), "malformed path 'states..x"),
        (('"toy_prevalence/*"', '"toy_prevalance/*"'), "pattern 'toy_prevalance/*' matches no target id"),
        (("scale: [0.1, 10.0]\n    targets", "scale: [0.1, 10.0]\n    value: [0.1, 0.9]\n    targets"), "exactly one"),
        (("scale: [0.1, 10.0]\n    targets", "scale: [3, 1]\n    targets"), "bounds must satisfy 0 < low < high"),
        (('"toy_prevalence/50-64", "toy_prevalence/65-120"', '"other/*"'), "match none of the declaration's targets"),
        (
            (OLD_SCALE, OLD_SCALE.replace("scale", "over: elderly\n    scale")),
            "'over' must name a parameter declared before 'old' (got 'elderly')",
        ),
        (
            (OLD_SCALE, OLD_SCALE.replace("scale: [0.1, 10.0]", "over: young\n    value: [0.1, 0.5]")),
            "'over' needs a scale parameter without complements",
        ),
        (
            ("scale: [0.1, 10.0]\n    targets", f"scale: [0.1, 10.0]\n    complement: [{OTHER}]\n    targets"),
            "one complement per path",
        ),
        (
            (
                "scale: [0.1, 10.0]\n    targets",
                f"scale: [0.1, 200.0]\n    complement: [{OTHER}, {OTHER}]\n    targets",
            ),
            "the upper bound takes the probability 0.01 above 1",
        ),
    ],
)
def test_bad_declarations_are_located(rules: Path, change: tuple[str, str], message: str) -> None:
    (rules / "targets" / "calibration").mkdir()
    (rules / "targets" / "calibration" / "toy.yaml").write_text(DECLARATION.replace(*change, 1))
    with pytest.raises(LoadError) as caught:
        load_library([DATA / "calibration" / "toy.yaml"], rules)
    assert "toy.yaml:" in str(caught.value) and message in str(caught.value)


def test_a_scaled_probability_sets_each_complement_to_one_minus_its_own_branch() -> None:
    """A scale parameter with complements multiplies two-way choices of different sizes by one factor
    (e.g. the same share in both sexes); each other branch keeps the pair summing to 1."""
    parameter = Parameter(paths=["a", "b"], complement=["not_a", "not_b"], scale=(0.5, 2.0))
    free = Free("m", "p", parameter, (("a",), ("b",)), (("not_a",), ("not_b",)), ([0.1], [0.3]), (), 0.0)
    numbers = dict(free.numbers(math.log(1.5)))
    assert numbers[("a",)] == pytest.approx([0.15]) and numbers[("not_a",)] == pytest.approx([0.85])
    assert numbers[("b",)] == pytest.approx([0.45]) and numbers[("not_b",)] == pytest.approx([0.55])


def test_a_fitted_value_for_a_missing_path_is_an_error(rules: Path) -> None:
    _write_fitted_file(rules, {"states.healthy.hazards[3].rate_per_year": 0.1})
    with pytest.raises(LoadError, match=r"toy.fitted.yaml:10:\d+: values.*does not exist"):
        load_library([DATA / "calibration" / "toy.yaml"], rules)


def test_a_fitted_value_of_the_wrong_shape_is_an_error(rules: Path) -> None:
    _write_fitted_file(rules, {"states.healthy.hazards[0].rate_per_year.male": 0.1})
    with pytest.raises(LoadError, match=r"toy.fitted.yaml:10:\d+: values.*does not match the shape"):
        load_library([DATA / "calibration" / "toy.yaml"], rules)


def _write_toy_with_alias(directory: Path) -> None:
    """toy.yaml with a second hazard that reuses the first one's rates through a YAML alias (&rate, *rate)."""
    text = (DATA / "calibration" / "toy.yaml").read_text()
    text = text.replace("rate_per_year: {ages", "rate_per_year: &rate {ages")
    alias = "      - {to: onset, rate_per_year: *rate, source: assumed}\n"
    (directory / "toy.yaml").write_text(text.replace("        source: assumed\n", "        source: assumed\n" + alias))


def test_a_fitted_value_at_a_yaml_alias_changes_only_its_own_path(rules: Path, tmp_path: Path) -> None:
    """A module may reuse a node with a YAML anchor and alias (&rate, *rate); the parsed document is a
    tree, so a fitted number written at one use leaves the other at the module file's number, and that
    number (not the fitted one) is what the refit's bounds multiply. The shared node once made the last
    value written win at every alias and recorded the first one as the module's number."""
    _write_toy_with_alias(tmp_path)
    path = "states.healthy.hazards[0].rate_per_year.male[0]"
    _write_fitted_file(rules, {path: 0.02})
    library = load_library([tmp_path / "toy.yaml"], rules)
    hazards = library.module("toy").states["healthy"].hazards
    assert hazards[0].rate_per_year.male == pytest.approx([0.02, 0.030])
    assert hazards[1].rate_per_year.male == pytest.approx([0.010, 0.030])
    assert library.sourced_numbers["toy"] == {path: [0.010]}


def test_a_declared_path_at_one_use_of_a_yaml_alias_is_an_error(rules: Path, tmp_path: Path) -> None:
    """Fitting one use of a reused node would leave its other uses at the module file's number (the
    fitted CKD progression hazard once applied to the first of its six uses only)."""
    _write_toy_with_alias(tmp_path)
    (rules / "targets" / "calibration").mkdir()
    (rules / "targets" / "calibration" / "toy.yaml").write_text(DECLARATION)
    with pytest.raises(LoadError) as caught:
        load_library([tmp_path / "toy.yaml"], rules)
    assert "toy.yaml:5:" in str(caught.value)
    assert "declare it at every use (missing: states.healthy.hazards[1].rate_per_year.male[0])" in str(caught.value)
    both = DECLARATION.replace(
        '["states.healthy.hazards[0].rate_per_year.male[0]", "states.healthy.hazards[0].rate_per_year.female[0]"]',
        '["states.healthy.hazards[0].rate_per_year.male[0]", "states.healthy.hazards[0].rate_per_year.female[0]",'
        ' "states.healthy.hazards[1].rate_per_year.male[0]", "states.healthy.hazards[1].rate_per_year.female[0]"]',
    )
    (rules / "targets" / "calibration" / "toy.yaml").write_text(both)
    with pytest.raises(LoadError) as caught:
        load_library([tmp_path / "toy.yaml"], rules)
    assert "parameters.young" not in str(caught.value) and "parameters.old.paths[0]" in str(caught.value)


def test_calibrate_command_names_an_undeclared_module() -> None:
    from typer.testing import CliRunner

    from simulator.cli import app

    result = CliRunner().invoke(app, ["calibrate", "hypertensoin"])
    assert result.exit_code == 1
    assert "no calibration declaration for module 'hypertensoin' (did you mean 'hypertension'?)" in result.output


@pytest.mark.slow
def test_calibrate_alone_fits_only_the_named_module() -> None:
    """type1_diabetes belongs to the cardiometabolic group; --alone fits its one parameter and no other."""
    from typer.testing import CliRunner

    from simulator.cli import app

    args = ["calibrate", "type1_diabetes", "--alone", "--dry-run", "-n", "300", "--max-iterations", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "fitting 1 parameters of type1_diabetes to 1 targets" in result.output
    assert "hypertension_130_80" not in result.output  # the group's other targets are not fitted
    assert "nothing written" in result.output
    refused = CliRunner().invoke(app, ["calibrate", "--alone"])
    assert refused.exit_code == 1
    assert "--alone fits the modules you name: name at least one" in refused.output


def test_parameters_that_share_no_target_are_differenced_together() -> None:
    rows = np.array(
        [  # targets x parameters: a and b share target 0; c moves only target 2; d shares target 1 with b
            [1, 1, 0, 0],
            [0, 1, 0, 1],
            [0, 0, 1, 0],
        ],
        bool,
    )
    groups = column_groups(rows)
    assert sorted(j for g in groups for j in g) == [0, 1, 2, 3]
    for group in groups:  # no two parameters of a group move the same target
        assert (rows[:, group].sum(axis=1) <= 1).all()
    assert len(groups) == 2


def test_the_broyden_update_fits_the_step_taken_and_keeps_undeclared_entries_zero() -> None:
    rows = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]], bool)
    truth = np.array([[2.0, -1.0, 0.0], [0.0, 0.5, 3.0], [0.0, 0.0, -2.0]])  # a linear model of the residuals
    jac = np.where(rows, 1.0, 0.0)  # a poor first estimate
    rng = np.random.default_rng(0)
    for _ in range(30):
        step = rng.normal(size=3)
        updated = sparse_broyden(jac, step, truth @ step, rows)
        np.testing.assert_allclose(updated @ step, truth @ step)  # the secant condition, row by row
        assert (updated[~rows] == 0).all()
        jac = updated
    np.testing.assert_allclose(jac, truth, atol=1e-6)  # steps in every direction recover a linear model
    assert (sparse_broyden(jac, np.zeros(3), np.ones(3), rows) == jac).all()  # no step, nothing learned


def test_a_module_that_shifts_another_modules_observable_is_fitted_with_it(shipped_library: Library) -> None:
    library = shipped_library  # hypertension's BP excess shifts systolic_bp, declared in rules/vital_signs.yaml
    assert fit_groups(library, ["hypertension", "vital_signs", "asthma"]) == [
        ["hypertension", "vital_signs"],
        ["asthma"],
    ]


def test_a_fit_of_a_cut_library_keeps_the_background_mortality_fitted_with_every_module(
    shipped_library: Library,
) -> None:
    """The rules' background share is fitted for the whole library, and a library of other modules has none
    (the whole life table is then background). A fit simulates a cut of the library (`ensemble_for`), which
    must still take the shipped share: without it, people died of the life table on top of the modules, and
    diagnosed diabetes at 65+ (whose background hazard ratio is 1.67) read 1.8 points lower in the fit's
    cohort than in the validation of the same files (2026-12-07)."""
    library = shipped_library
    free = free_parameters(library, library.calibration, ["type2_diabetes"])
    ids = library.calibration["type2_diabetes"].target_ids
    objective = Objective(library, load_targets(library.rules_dir / "targets"), free, ids, patients=10, seed=1)
    cut = {m.name for m in objective.library.modules}
    assert cut < {m.name for m in library.modules}  # a cut, which has no share of its own
    whole = build_people_tables(library, reference_date_of(library))
    np.testing.assert_array_equal(objective.tables.cum_hazard, whole.cum_hazard)
    none = build_people_tables(objective.library, reference_date_of(library))
    assert (none.cum_hazard[:, 60] > 1.2 * whole.cum_hazard[:, 60]).all()  # the whole life table, had it no share


@pytest.mark.slow
def test_a_fit_simulates_the_modules_its_modules_can_see(shipped_library: Library) -> None:
    library = shipped_library
    cut = ensemble_for(library, ["asthma", "copd"])
    # copd reads asthma and smoking and waits for wellness visits, which record vital_signs' observables; its
    # emergency visits record laboratory's basic metabolic panel (drawn from copd's stream), whose creatinine
    # and glucose are ckd's and the diabetes modules' observables
    kept_by_copd = {m.name for m in cut.modules}
    assert {"asthma", "copd", "smoking", "wellness", "vital_signs", "laboratory", "ckd"} <= kept_by_copd
    assert "immunizations" not in kept_by_copd
    kept = {m.name for m in ensemble_for(library, ["type2_diabetes"]).modules}
    assert {"obesity", "vital_signs", "wellness", "type1_diabetes"} <= kept  # shift bmi, own it, record it; read
    # t2d reads urine_acr, which ckd records; ckd reads hypertension, whose guards read blood pressure,
    # which pneumonia_sepsis records in hospital: a reading there can change what hypertension does
    assert "pneumonia_sepsis" in kept
    assert "immunizations" not in kept

    # The kept modules draw exactly as in the whole library: in a birth cohort, every asthma and copd
    # event before a patient's earlier death of the two runs is the same.
    histories = []
    for lib in (library, cut):
        sim = Simulator.build(RunConfig(patients=400, seed=3, mode="lifetime"), lib)
        run = sim.simulate(np.arange(400))
        names = sim.names
        state = np.array([names.states[s].split(".")[0] if s >= 0 else "" for s in run.events.state])
        death = np.full(400, np.inf)
        dead = run.events.kind == K_DEATH
        death[run.patient[dead]] = run.events.t[dead]
        mine = np.isin(state, ["asthma", "copd"])
        histories.append((death, run.patient[mine], run.events.t[mine], state[mine], run.events.kind[mine]))
    first = np.minimum(histories[0][0], histories[1][0])
    rows = []
    for _, patient, t, module, kind in histories:
        before = t < first[patient]
        rows.append(sorted(zip(patient[before], t[before], module[before], kind[before], strict=True)))
    assert len(rows[0]) > 1000
    assert rows[0] == rows[1]


def test_a_death_rate_target_is_fitted_on_a_lifetime_cohort(rules: Path, tmp_path: Path) -> None:
    """Event rates per person-year (here deaths of the toy condition) are read from a birth cohort followed
    to death, simulated at every evaluation with the same lives; a fit to them recovers the death hazard."""
    dying = (
        (DATA / "calibration" / "toy.yaml")
        .read_text()
        .replace(
            "    terminal: true",
            "    hazards:\n      - {to: toy_death, rate_per_year: 0.05, source: assumed}\n"
            "  toy_death:\n    death:\n"
            "      cause: {system: SNOMED, code: 38341003,\n"
            '              display: "Hypertensive disorder, systemic arterial (disorder)"}',
        )
    )
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "toy.yaml").write_text(dying)
    (rules / "targets" / "definitions.yaml").write_text(
        "measures:\n  toy_death_rate:\n    statistic: rate\n    events: {kind: death, reasons: [toy_condition]}\n"
    )
    truth = load_library(modules, rules)
    with (rules / "targets" / "targets.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        for lo, hi in ((40, 64), (65, 120)):
            row = dict.fromkeys(COLUMNS, "")
            row.update(id=f"toy_death_rate/{lo}-{hi}", measure="toy_death_rate", condition="toy", age_lo=lo,
                       age_hi=hi, statistic="rate", sex="all", value=1.0, unit="per_py", basis="crude",
                       role="primary", year="2024", source="simulated truth")  # fmt: skip
            writer.writerow(row)
    targets = load_targets(rules / "targets")
    vocabulary = Vocabulary.of(truth)
    needs = needs_of(targets.definitions, vocabulary)
    lives = Simulator.build(RunConfig(patients=4000, seed=99, mode="lifetime"), truth)
    sim = Simulator.build(RunConfig(patients=3000, seed=99), truth)
    population = simulate_cohort(sim, np.arange(3000), needs, sim.reference_t)
    lifetime = simulate_cohort(lives, np.arange(4000), needs, math.inf)
    measure = targets.definitions.measures["toy_death_rate"]
    rates = [compare(t, measure, population, vocabulary, lifetime).simulated for t in targets.targets]
    assert all(0 < r < 1 for r in rates), rates
    text = (rules / "targets" / "targets.csv").read_text()
    for rate in rates:
        text = text.replace(",1.0,per_py", f",{rate},per_py", 1)
    (rules / "targets" / "targets.csv").write_text(text)
    (modules / "toy.yaml").write_text(dying.replace("rate_per_year: 0.05", "rate_per_year: 0.02"))
    (rules / "targets" / "calibration").mkdir()
    (rules / "targets" / "calibration" / "toy.yaml").write_text(
        'module: toy\ntargets: ["toy_death_rate/*"]\nparameters:\n  dying:\n'
        '    paths: ["states.onset.hazards[0].rate_per_year"]\n    scale: [0.1, 10.0]\n'
    )
    library = load_library(modules, rules)
    lines: list[str] = []
    result = fit(library, load_targets(rules / "targets"), library.calibration, ["toy"], patients=3000, seed=7,
                 report=lines.append, lifetime_patients=4000)  # fmt: skip
    assert lines[0].endswith("3,000 patients and 4,000 lives")
    assert result.loss_after < result.loss_before / 10
    assert result.values["toy"]["states.onset.hazards[0].rate_per_year"] == pytest.approx(0.05, rel=0.25)


YOUNG_PATHS = ["states.healthy.hazards[0].rate_per_year.male[0]", "states.healthy.hazards[0].rate_per_year.female[0]"]
OLD_PATHS = ["states.healthy.hazards[0].rate_per_year.male[1]", "states.healthy.hazards[0].rate_per_year.female[1]"]


def _toy_declared(rules: Path, declaration: str = DECLARATION) -> Path:
    """Flat toy targets (0.3 in every band) and `declaration`; returns the toy module file."""
    _write_targets(rules / "targets", {band: 0.3 for band in BANDS})
    (rules / "targets" / "calibration").mkdir(exist_ok=True)
    (rules / "targets" / "calibration" / "toy.yaml").write_text(declaration)
    return DATA / "calibration" / "toy.yaml"


def test_a_subset_fit_moves_only_the_named_parameters(rules: Path) -> None:
    """`params`: young is fitted, old is held at its shipped fitted value (0.02, not the module file's 0.030),
    which the new fitted file keeps as it was, and the file records that only young moved."""
    toy = _toy_declared(rules)
    _write_fitted_file(rules, dict.fromkeys(OLD_PATHS, 0.02), parameters="{old: 0.666667}")
    library = load_library([toy], rules)
    lines: list[str] = []
    result = fit(library, load_targets(rules / "targets"), library.calibration, ["toy"], patients=500, seed=7,
                 max_iterations=3, report=lines.append, params=["young"])  # fmt: skip
    assert lines[0].startswith("fitting 1 parameters (1 held) of toy to 4 targets")
    evaluated = [float(line.split()[2]) for line in lines if line.split()[0].isdigit()]
    assert all(len(line.split()) == 3 for line in lines if line.split()[0].isdigit())  # young's column only
    assert any(value != pytest.approx(1.0) for value in evaluated)  # young was stepped
    assert result.moved == {"toy": ["young"]}
    assert result.parameters["toy"]["old"] == 0.666667
    assert [result.values["toy"][path] for path in OLD_PATHS] == [0.02, 0.02]
    assert result.values["toy"][YOUNG_PATHS[0]] != pytest.approx(0.010)  # the prevalence 0.3 needs more onset
    write_fitted(result, library, 500, 7)
    written = (rules / "targets" / "calibration" / "toy.fitted.yaml").read_text()
    assert "moved:\n- young\n" in written
    reloaded = load_library([toy], rules).module("toy").states["healthy"].hazards[0].rate_per_year
    assert reloaded.male[1] == reloaded.female[1] == 0.02
    assert reloaded.male[0] == pytest.approx(result.values["toy"][YOUNG_PATHS[0]])


def test_a_held_parameter_without_a_fit_is_left_to_the_module_file(rules: Path) -> None:
    """A held parameter that no fitted file sets writes nothing (the module file's numbers stay in force),
    unless it is declared `over` a moving one: then its numbers follow that one's."""
    library = load_library([_toy_declared(rules)], rules)
    free = free_parameters(library, library.calibration, ["toy"])
    x = [math.log(2.0), 0.0]
    values, parameters = fitted_numbers(library, free, np.array([True, False]), np.array(x))
    assert set(values["toy"]) == set(YOUNG_PATHS) and parameters["toy"] == {"young": 2.0}
    over = DECLARATION.replace(OLD_SCALE, 'over: young\n    scale: [1.0, 6.0]\n    targets: ["toy_prevalence/50')
    library = load_library([_toy_declared(rules, over)], rules)
    free = free_parameters(library, library.calibration, ["toy"])
    values, parameters = fitted_numbers(
        library, free, np.array([True, False]), np.array([math.log(2.0), free[1].start])
    )
    assert values["toy"][OLD_PATHS[0]] == pytest.approx(0.06)  # 3 x young's 0.020, the ratio held
    assert parameters["toy"] == {"young": 2.0, "old": 3.0}


BAD_SUBSETS = [
    "toy --params yuong",
    "toy --params ,",
    "--params young",
    "toy --targets toy_prevalance/*",
    "toy --params old --targets toy_prevalence/18-34",
]


def test_a_bad_subset_is_one_line_naming_the_option(rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown parameters (the closest suggested, the declared ones listed), no module named, a pattern that
    matches no declared target, a parameter that moves none of the chosen targets: one line, exit 2, no
    traceback, no simulation (golden transcript)."""
    from typer.testing import CliRunner

    import simulator.api
    from simulator.cli import app

    toy = _toy_declared(rules)
    monkeypatch.setattr(simulator.api, "load_library", lambda: load_library([toy], rules))
    transcript = []
    for args in BAD_SUBSETS:
        result = CliRunner().invoke(app, ["calibrate", *args.split()])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and result.stdout == "", (args, result.output)
        transcript.append(f"$ ehrsim calibrate {args}\n{result.stderr}")
    assert "".join(transcript) == (DATA / "golden" / "calibrate_params.expected").read_text()


def test_calibrate_params_and_targets_from_the_command_line(rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--params` and `--targets` reach the fit (which fits only the named module, as --alone)."""
    from typer.testing import CliRunner

    import simulator.api
    from simulator.cli import app

    toy = _toy_declared(rules)
    monkeypatch.setattr(simulator.api, "load_library", lambda: load_library([toy], rules))
    args = "calibrate toy --params young --targets toy_prevalence/18-34,toy_prevalence/35-49 --dry-run -n 300"
    result = CliRunner().invoke(app, [*args.split(), "--max-iterations", "2"])
    assert result.exit_code == 0, result.output
    assert "fitting 1 parameters (1 held) of toy to 2 targets, 300 patients" in result.output
    assert "toy_prevalence/50-64" not in result.output and "nothing written" in result.output


@pytest.mark.parametrize(
    ("module", "kinds"),
    [("stroke", ["ischaemic_outcome", "haemorrhagic_outcome"]), ("coronary_heart_disease", ["mi_outcome"])],
)
def test_in_hospital_case_fatality_rises_with_age(shipped_library: Library, module: str, kinds: list[str]) -> None:
    """Stroke and infarction case fatality is given by age band (fitted to the NCHS death rates by age); the
    shipped values rise from the youngest band to the oldest (nis_stroke_age, assumption_inhospital_death)."""
    states = shipped_library.module(module).states
    for kind in kinds:
        fatality = [states[f"{kind}_{band}"].branches[0].probability for band in CASE_FATALITY_BANDS]  # type: ignore[index]
        assert fatality == sorted(fatality), (kind, fatality)
        assert fatality[-1] > 2 * fatality[0], (kind, fatality)
