"""simulator/engine/compiler.py on two tiny modules: the state, action, branch, case, hazard, guard,
distribution and observable tables hold what each module says, at the indexes the kernel reads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from simulator.engine.codes import (
    A_DEATH,
    A_DIAGNOSE,
    A_ENC_START,
    A_MED_START,
    A_OBSERVE,
    A_ONSET,
    A_SET_ADD,
    A_SYMPTOM,
    COMPARISONS,
    D_EXACT,
    D_LOGNORMAL,
    D_UNIFORM,
    G_AGE,
    G_AND,
    G_ATTR,
    G_COND_DIAGNOSED,
    G_NOT,
    G_OBS,
    G_OR,
    G_SEX,
    SEXES,
    X_BRANCHES,
    X_CASES,
    X_HAZARDS,
    X_TERMINAL,
)
from simulator.engine.compiler import CompiledModel, Names, compile_library, module_stream
from simulator.model.loading import load_library
from simulator.model.schema import ENCOUNTER_CLASSES

TINY = """
name: tiny
title: Hazards, branches and cases, for the compiler's unit tests
sources: {a: "assumption: unit test values"}
attributes:
  score: {description: "A test score.", initial: 2}
conditions:
  dz: {code: {system: SNOMED, code: "44054006", display: Diabetes mellitus type 2 (disorder)}}
start: healthy
states:
  healthy:
    hazards:
      - to: sick
        rate_per_year: {ages: [0, 40], male: [0.01, 0.02], female: [0.015, 0.03]}
        hazard_ratios:
          - {when: {all: [{attribute: score, op: ">=", value: 3}, {not: {sex: F}}]}, ratio: 2.5, source: a}
        source: a
      - to: gone
        rate_per_year: {ages: [20], male: [0.001], female: [0.002]}
        source: a
  sick:
    onset: [dz]
    set: [{attribute: score, add: 1, source: a}]
    after: {distribution: lognormal, median: 3, sigma: 0.5, unit: weeks, source: a}
    branches:
      - {to: gone, probability: 0.25, source: a}
      - {to: triage, probability: 0.75, source: a}
  triage:
    cases:
      - when: {age_years: ">=", value: 65}
        to: gone
    otherwise: healthy
  gone:
    terminal: true
"""

CARE = """
name: care
title: An emergency visit, for the compiler's unit tests
sources: {a: "assumption: unit test values"}
conditions:
  flu: {code: {system: SNOMED, code: "6142004", display: Influenza (disorder)}}
medications:
  acetaminophen: {code: {system: RxNorm, code: "313782", display: Acetaminophen 325 MG Oral Tablet}}
observables:
  temperature:
    code: {system: LOINC, code: 8310-5, display: Body temperature}
    category: vital-signs
    unit: Cel
    mean: 38.6
    sd: {ages: [0, 50], male: [0.5, 0.7], female: [0.4, 0.6]}
    limits: [35, 42.5]
    source: a
start: er
states:
  er:
    encounter:
      class: emergency
      code: {system: SNOMED, code: "50849002", display: Emergency room admission (procedure)}
      duration: {distribution: exact, value: 6, unit: hours, source: a}
      reason: flu
    onset: [flu]
    diagnose: [flu]
    start_medication: [acetaminophen]
    observe: [temperature]
    symptom:
      - code: {system: SNOMED, code: "386661006", display: Fever (finding)}
        severity: {distribution: uniform, low: 1, high: 10}
        source: a
    cases:
      - when: {any: [{observation: temperature, op: ">=", value: 41}, {condition: flu, status: diagnosed}]}
        to: dead
    otherwise: home
  home:
    terminal: true
  dead:
    death: {cause: {system: SNOMED, code: "6142004", display: Influenza (disorder)}}
    terminal: true
"""


def _compile(text: str, tmp_path: Path, rules: Path) -> tuple[CompiledModel, Names]:
    path = tmp_path / "module.yaml"
    path.write_text(text)
    return compile_library(load_library([path], rules))


def _program(model: CompiledModel, guard: int) -> list[tuple[int, int, str, float]]:
    """Guard `guard` as (opcode, integer operand, comparison, float operand) instructions, in order."""
    rows = range(model.guard_start[guard], model.guard_start[guard] + model.guard_n[guard])
    return [
        (int(model.ginst_op[i]), int(model.ginst_i0[i]), COMPARISONS[model.ginst_cmp[i]], float(model.ginst_f0[i]))
        for i in rows
    ]


@pytest.fixture
def tiny(tmp_path: Path, bare_rules: Path) -> tuple[CompiledModel, Names]:
    return _compile(TINY, tmp_path, bare_rules)


@pytest.fixture
def care(tmp_path: Path, bare_rules: Path) -> tuple[CompiledModel, Names]:
    return _compile(CARE, tmp_path, bare_rules)


def test_states_are_numbered_in_file_order_with_their_exits(tiny) -> None:
    model, names = tiny
    assert names.states == ("tiny.healthy", "tiny.sick", "tiny.triage", "tiny.gone")
    assert model.module_start.tolist() == [0]
    assert model.module_stream.tolist() == [module_stream("tiny")]
    assert model.state_module.tolist() == [0, 0, 0, 0]
    assert model.state_exit.tolist() == [X_HAZARDS, X_BRANCHES, X_CASES, X_TERMINAL]
    assert model.state_next.tolist() == [-1, -1, 0, -1]  # triage's `otherwise: healthy`
    assert model.state_sub_n.tolist() == [2, 2, 1, 0]
    assert model.max_hazards == 2
    for array in model:
        if isinstance(array, np.ndarray):
            assert not array.flags.writeable  # the compiled model is immutable


def test_branches_and_the_delay_before_them(tiny) -> None:
    model, _ = tiny
    start, n = model.state_sub_start[1], model.state_sub_n[1]
    assert model.branch_prob[start : start + n].tolist() == [0.25, 0.75]
    assert model.branch_to[start : start + n].tolist() == [3, 2]  # gone, triage
    delay = model.state_delay[1]
    assert model.dist_kind[delay] == D_LOGNORMAL
    assert model.dist_a[delay] == pytest.approx(math.log(3))  # mu of a lognormal is the log of its median
    assert model.dist_b[delay] == 0.5
    assert model.dist_scale[delay] == 7.0  # weeks in days
    assert model.state_delay[[0, 2, 3]].tolist() == [-1, -1, -1]


def test_rate_tables_become_rows_over_the_states_merged_age_bands(tiny) -> None:
    """Both hazards of `healthy` get one rate per band of the union of their age edges (0, 20, 40);
    a table that starts at 20 has rate 0 before it."""
    model, _ = tiny
    bands = slice(model.state_band_start[0], model.state_band_start[0] + model.state_band_n[0])
    assert model.band_edge_years[bands].tolist() == [0.0, 20.0, 40.0]
    hazards = slice(model.state_sub_start[0], model.state_sub_start[0] + 2)
    assert model.hazard_to[hazards].tolist() == [1, 3]
    rows = {
        sex: [rates[start : start + 3].tolist() for start in model.hazard_rate_start[hazards]]
        for sex, rates in (("male", model.rate_male), ("female", model.rate_female))
    }
    assert rows == {
        "male": [[0.01, 0.01, 0.02], [0.0, 0.001, 0.001]],
        "female": [[0.015, 0.015, 0.03], [0.0, 0.002, 0.002]],
    }
    assert model.hazard_ratio_n[hazards].tolist() == [1, 0]
    assert model.ratio_value[model.hazard_ratio_start[0]] == 2.5


def test_a_nested_guard_compiles_to_a_postfix_program(tiny) -> None:
    """all(score >= 3, not sex F): the parts first, each combinator after its operands."""
    model, names = tiny
    ratio_guard = model.ratio_guard[model.hazard_ratio_start[0]]
    score = names.attributes.index("score")
    assert _program(model, ratio_guard) == [
        (G_ATTR, score, ">=", 3.0),
        (G_SEX, SEXES.index("F"), "==", 0.0),
        (G_NOT, 0, "==", 0.0),
        (G_AND, 2, "==", 0.0),
    ]
    case = model.state_sub_start[2]
    assert model.case_to[case] == 3
    assert _program(model, model.case_guard[case]) == [(G_AGE, 0, ">=", 65.0)]
    assert model.attr_readers.tolist() == [[True]]  # a change of score re-checks the one module's guards
    assert model.cond_readers.tolist() == [[False]]  # nothing reads dz


def test_a_change_wakes_only_the_modules_whose_guards_read_it(tmp_path: Path, bare_rules: Path) -> None:
    """Compiled together, tiny reads its attribute score and care its observable temperature and condition
    flu: each change re-checks the one module that reads it (the kernel's settle), nothing re-checks the
    other."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "tiny.yaml").write_text(TINY)
    (tmp_path / "b" / "care.yaml").write_text(CARE)
    model, names = compile_library(
        load_library([tmp_path / "a" / "tiny.yaml", tmp_path / "b" / "care.yaml"], bare_rules)
    )
    assert [names.states[model.module_start[m]].split(".")[0] for m in range(2)] == ["tiny", "care"]
    assert model.attr_readers[names.attributes.index("score")].tolist() == [True, False]
    assert model.obs_readers[names.observables.index("temperature")].tolist() == [False, True]
    assert model.cond_readers[names.conditions.index("flu")].tolist() == [False, True]
    assert model.cond_readers[names.conditions.index("dz")].tolist() == [False, False]


def test_actions_in_kernel_order_with_their_operands(tiny, care) -> None:
    """The entry actions of a state, in the order the kernel runs them (encounter, set, conditions,
    medications, observations, symptoms, death), each pointing at what it acts on."""
    model, names = tiny
    sick = slice(model.state_act_start[1], model.state_act_start[1] + model.state_act_n[1])
    assert model.act_kind[sick].tolist() == [A_SET_ADD, A_ONSET]
    assert model.act_value[sick][0] == 1.0 and math.isnan(model.act_drift_per_year[sick][0])
    assert model.attr_initial.tolist() == [2.0]

    model, names = care
    er = slice(model.state_act_start[0], model.state_act_start[0] + model.state_act_n[0])
    kinds = model.act_kind[er].tolist()
    assert kinds == [A_ENC_START, A_ONSET, A_DIAGNOSE, A_MED_START, A_OBSERVE, A_SYMPTOM]
    start, symptom = er.start, er.start + kinds.index(A_SYMPTOM)
    assert model.act_target[start] == ENCOUNTER_CLASSES.index("emergency")
    assert names.codes[model.act_code[start]].code == "50849002"
    assert names.conditions[model.act_reason[start]] == "flu"
    duration = model.act_duration[start]
    assert (model.dist_kind[duration], model.dist_a[duration]) == (D_EXACT, 6.0)
    assert model.dist_scale[duration] == pytest.approx(1 / 24)  # hours in days
    assert names.codes[model.act_target[symptom]].code == "386661006"
    severity = model.act_dist[symptom]
    assert (model.dist_kind[severity], model.dist_a[severity], model.dist_b[severity]) == (D_UNIFORM, 1.0, 10.0)
    dead = model.state_act_start[2]
    assert model.state_act_n[2] == 1 and model.act_kind[dead] == A_DEATH
    assert names.codes[model.act_target[dead]].code == "6142004"
    assert names.codes[model.death_code].code == "419620001"  # background death, from the rules' mortality.yaml
    assert [names.codes[c].code for c in (*model.cond_code, *model.med_code)] == ["6142004", "313782"]


def test_observables_curves_and_the_guards_that_read_them(care) -> None:
    model, names = care
    assert (names.observables, names.observable_units, names.observable_categories) == (
        ("temperature",),
        ("Cel",),
        ("vital-signs",),
    )
    assert names.codes[model.obs_code[0]].code == "8310-5"
    assert (model.obs_low[0], model.obs_high[0], model.obs_decimals[0]) == (35.0, 42.5, 1)
    mean, sd = model.obs_mean_start[0], model.obs_sd_start[0]
    assert model.curve_n[mean] == 1 and model.curve_male[model.curve_start[mean]] == 38.6  # a constant
    points = slice(model.curve_start[sd], model.curve_start[sd] + model.curve_n[sd])
    assert model.curve_age[points].tolist() == [0.0, 50.0]
    assert model.curve_male[points].tolist() == [0.5, 0.7]
    assert model.curve_female[points].tolist() == [0.4, 0.6]
    assert model.obs_derived_n.tolist() == [0]
    assert _program(model, model.case_guard[model.state_sub_start[0]]) == [
        (G_OBS, 0, ">=", 41.0),
        (G_COND_DIAGNOSED, 0, "==", 0.0),
        (G_OR, 2, "==", 0.0),
    ]
    assert (model.obs_readers.tolist(), model.cond_readers.tolist(), model.med_readers.tolist()) == (
        [[True]],
        [[True]],
        [[False]],
    )
