"""Targets as data: the shipped table loads, and bad or missing targets give located, golden errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, REPO

from simulator.fit.cohort import ACTIVE, DIAGNOSED, EVER, EVER_DIAGNOSED, Cohort, Vocabulary
from simulator.fit.statistics import Z95, Comparison, compare
from simulator.model.parsing import LoadError
from simulator.model.targets import Measure, load_targets


def test_shipped_targets_load_with_sources_and_definitions() -> None:
    targets = load_targets(REPO / "rules" / "targets")
    assert len(targets.targets) > 200
    assert all(t.source for t in targets.targets)
    by_id = targets.by_id()
    total = by_id["diabetes_total/18-120/all/2017"]
    assert total.value == pytest.approx(0.147) and total.role == "primary" and total.basis == "crude"
    assert by_id["hypertension_130_80/18-120/all/2017"].basis == "age-adjusted"
    assert by_id["life_expectancy_at_birth/0-0/all/2023"].value == pytest.approx(78.42, abs=0.01)
    assert by_id["life_expectancy_at_age/65-65/all/2023"].value == pytest.approx(19.52, abs=0.01)  # NVSR 74(6)
    crude = {t.measure for t in targets.targets if t.basis == "crude"}
    assert crude <= set(targets.definitions.measures)


def test_bad_targets_are_reported_with_file_and_line() -> None:
    with pytest.raises(LoadError) as caught:
        load_targets(DATA / "targets_broken", "targets_broken")
    assert str(caught.value) + "\n" == (DATA / "targets_broken" / "expected").read_text()


def test_missing_target_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as caught:
        load_targets(tmp_path, "somewhere")
    assert str(caught.value) == (
        "somewhere/definitions.yaml:1:1: no such file\nsomewhere/targets.csv:1:1: no such file"
    )


def test_missing_column_is_reported(tmp_path: Path) -> None:
    (tmp_path / "definitions.yaml").write_text("measures: {}\n")
    (tmp_path / "targets.csv").write_text("id,measure,value\nx,y,1\n")
    with pytest.raises(LoadError, match=r"targets.csv:1:1: missing column\(s\): condition, statistic, age_lo"):
        load_targets(tmp_path, "t")


def test_unknown_definition_key_is_located(tmp_path: Path) -> None:
    (tmp_path / "definitions.yaml").write_text(
        "measures:\n  m:\n    statistic: prevalence\n    numerator: {conditions: [a], status: activ}\n"
    )
    (tmp_path / "targets.csv").write_text((DATA / "targets_broken" / "targets.csv").read_text().splitlines()[0] + "\n")
    with pytest.raises(LoadError, match=r"t/definitions.yaml:4:\d+: measures.m.numerator"):
        load_targets(tmp_path, "t")


def test_a_standard_population_must_be_whole_and_contiguous(tmp_path: Path) -> None:
    (tmp_path / "targets.csv").write_text((DATA / "targets_broken" / "targets.csv").read_text().splitlines()[0] + "\n")
    groups = "[{ages: [18, 39], weight: 0.5}, {ages: [41, 120], weight: 0.4}]"
    standards = f"standards:\n  s:\n    source: x\n    groups: {groups}\n"
    (tmp_path / "definitions.yaml").write_text("measures: {}\n" + standards)
    with pytest.raises(LoadError, match=r"t/definitions.yaml:4:5: standards.s: age groups must follow each other"):
        load_targets(tmp_path, "t")
    (tmp_path / "definitions.yaml").write_text(
        "measures: {}\nstandards:\n  s:\n    source: x\n    groups: [{ages: [18, 120], weight: 0.9}]\n"
    )
    with pytest.raises(LoadError, match=r"the weights must sum to 1 \(they sum to 0.900000\)"):
        load_targets(tmp_path, "t")


def test_shipped_standards_reproduce_the_published_age_adjusted_values() -> None:
    """Each age-adjusted row with a standard, recomputed from the same source's crude band values
    (rounded to 0.1 in the source, hence the 0.1-point tolerance): the weights are the source's."""
    targets = load_targets(REPO / "rules" / "targets")
    by_id = targets.by_id()
    adjusted = [t for t in targets.targets if t.standard]
    assert {t.id for t in adjusted} >= {f"hypertension_140_90/18-120/{s}/2015" for s in ("all", "M", "F")}
    checked = 0
    for row in adjusted:
        bands = [by_id.get(f"{row.measure.removesuffix('_age_adjusted')}/{lo}-{hi}/{row.sex}/{row.year[:4]}")
                 for lo, hi, _ in row.groups]  # fmt: skip
        if all(b is not None and b.basis == "crude" for b in bands):
            recomputed = sum(w * b.value for (_, _, w), b in zip(row.groups, bands, strict=True))  # type: ignore[union-attr]
            assert recomputed == pytest.approx(row.value, abs=0.001), row.id
            checked += 1
    assert checked >= 3  # 140/90 (2015), 130/80 (2017), obesity (2021), all ages


def test_an_age_adjusted_row_weights_each_group_by_its_standard(tmp_path: Path) -> None:
    header = (DATA / "targets_broken" / "targets.csv").read_text().splitlines()[0]
    row = "toy/18-120/all,toy,toy,prevalence,18,120,all,30,percent (age-adjusted),age-adjusted,,,primary,2024,test,,s"
    (tmp_path / "targets.csv").write_text(f"{header}\n{row}\n")
    (tmp_path / "definitions.yaml").write_text(
        "measures:\n  toy: {statistic: prevalence, numerator: {conditions: [toy], status: active}}\n"
        "standards:\n  s:\n    source: x\n    groups: [{ages: [18, 39], weight: 0.5}, {ages: [40, 120], weight: 0.5}]\n"
    )
    targets = load_targets(tmp_path, "t")
    target = targets.targets[0]
    ages = np.repeat([30.0, 60.0, 10.0], [100, 300, 50])  # 100 young (10 ill), 300 older (150 ill), 50 children
    status = np.zeros(len(ages), np.int8)
    status[:10] = status[100:250] = status[400:] = ACTIVE
    cohort = Cohort(0.0, -ages * 365.25 - 1, np.zeros(len(ages), np.int8), np.full(len(ages), np.nan),
                    {"SNOMED:1": status}, {}, {})  # fmt: skip
    result = compare(target, targets.definitions.measures["toy"], cohort, Vocabulary({"toy": "SNOMED:1"}, {}, {}))
    assert result.status == "compared" and result.simulated == pytest.approx(0.5 * 0.1 + 0.5 * 0.5)  # crude: 0.4
    half = 1.959964 * np.sqrt(0.25 * 0.1 * 0.9 / 100 + 0.25 * 0.5 * 0.5 / 300)
    assert (result.lo, result.hi) == (pytest.approx(0.3 - half), pytest.approx(0.3 + half))
    assert (result.n, result.count) == (400, 160.0)
    assert result.passed  # 0.30 against a target of 30%
    share = compare(target, Measure(statistic="share"), cohort, Vocabulary({}, {}, {}))
    assert share.status == "unsupported" and "prevalence rows only" in share.note


def test_a_share_among_the_diagnosed_counts_only_them() -> None:
    targets = load_targets(REPO / "rules" / "targets")
    row = targets.by_id()["type2_share_of_diagnosed_diabetes/20-120/all/2016"]
    measure = targets.definitions.measures[row.measure]
    t1d, t2d = "SNOMED:46635009", "SNOMED:44054006"
    vocabulary = Vocabulary({"t1d": t1d, "t2d": t2d}, {}, {})
    n = 10  # all 40 years old; 4 with diagnosed t2d, 1 with diagnosed t1d, 1 undiagnosed t2d, 4 without
    status = {t2d: np.zeros(n, np.int8), t1d: np.zeros(n, np.int8)}
    status[t2d][:4] = EVER | ACTIVE | DIAGNOSED | EVER_DIAGNOSED
    status[t2d][5] = EVER | ACTIVE
    status[t1d][4] = EVER | ACTIVE | DIAGNOSED | EVER_DIAGNOSED
    cohort = Cohort(0.0, np.full(n, -40 * 365.25 - 10), np.zeros(n, np.int8), np.full(n, np.nan), status, {}, {})
    result = compare(row, measure, cohort, vocabulary)
    assert (result.n, result.count, result.simulated) == (5, 4.0, pytest.approx(0.8))


def test_a_rate_weights_the_lifetime_rates_by_the_living_band() -> None:
    targets = load_targets(REPO / "rules" / "targets")
    row = targets.by_id()["cap_hospitalization_incidence/65-79/all/2015"]
    measure = targets.definitions.measures[row.measure]
    assert measure.events is not None
    vocabulary = Vocabulary({"pneumonia": "SNOMED:233604007", "sepsis": "SNOMED:91302008"}, {}, {})
    year = 365.25
    members = 1000  # lifetime cohort: men who all die at 80, each admitted once at 70.5 -> 0.2 a year at 70-74
    lifetime = Cohort(
        np.inf, np.zeros(members), np.zeros(members, np.int8), np.full(members, 80 * year), {}, {}, {},
        {measure.events.key: (np.arange(members), np.full(members, 70.5 * year))},
    )  # fmt: skip
    ages = np.repeat([72.0, 66.0], 500)  # living band: half at 72 (rate 0.2), half at 66 (rate 0)
    living = Cohort(0.0, -ages * year - 1, np.zeros(members, np.int8), np.full(members, np.nan), {}, {}, {})
    result = compare(row, measure, living, vocabulary, lifetime)
    assert result.status == "compared" and result.simulated == pytest.approx(0.1)
    assert result.lo < 0.1 < result.hi and result.count == members
    assert row.value == pytest.approx(6.3 / 1000)  # "per 1,000 adults per year" -> per person-year


def test_an_event_share_counts_the_same_events() -> None:
    targets = load_targets(REPO / "rules" / "targets")
    row = targets.by_id()["cap_hospitalized_icu_share/18-120/all/2015"]
    measure = targets.definitions.measures[row.measure]
    assert measure.events is not None and measure.among_events is not None
    vocabulary = Vocabulary({"pneumonia": "SNOMED:233604007", "sepsis": "SNOMED:91302008"}, {}, {})
    year = 365.25
    stays = np.arange(10), np.full(10, 70 * year)  # ten adult stays, three of them in intensive care; a child's ICU
    icu = np.array([0, 3, 7, 10]), np.array([70 * year] * 3 + [5 * year])
    stays = np.append(stays[0], 10), np.append(stays[1], 5 * year)
    events = {measure.among_events.key: stays, measure.events.key: icu}
    lifetime = Cohort(np.inf, np.zeros(11), np.zeros(11, np.int8), np.full(11, 80 * year), {}, {}, {}, events)
    result = compare(row, measure, lifetime, vocabulary, lifetime)
    assert (result.n, result.count, result.simulated) == (10, 3.0, pytest.approx(0.3))


def test_the_chance_of_missing_is_that_of_a_model_without_bias() -> None:
    targets = load_targets(REPO / "rules" / "targets")
    row = targets.by_id()["diabetes_total/18-120/all/2017"]  # 14.7%, no published interval
    se = 0.1 * row.value / Z95  # the 10% tolerance is exactly the 95% interval's half-width
    tight = Comparison(row, "compared", row.value, row.value - Z95 * se, row.value + Z95 * se, 1000, 147.0)
    assert tight.chance_of_missing == pytest.approx(0.05, abs=1e-4)
    small = Comparison(row, "compared", row.value, row.value - Z95 * se / 2, row.value + Z95 * se / 2, 4000, 588.0)
    assert small.chance_of_missing == pytest.approx(math.erfc(2 * Z95 / math.sqrt(2)))  # 10% is 3.92 SE
    assert Comparison(row, "not covered").chance_of_missing != Comparison(row, "not covered").chance_of_missing  # nan
    e0 = targets.by_id()["life_expectancy_at_birth/0-0/all/2023"]  # an absolute tolerance of 0.5 years
    life = Comparison(e0, "compared", 78.4, 78.4 - Z95 * 0.25, 78.4 + Z95 * 0.25, 500, 0.0, tolerance=0.5)
    assert life.chance_of_missing == pytest.approx(0.0455, abs=1e-3)  # two standard errors either side
