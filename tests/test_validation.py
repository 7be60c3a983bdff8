"""The validation report: its numbers agree with an independent computation from the event table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simulator
from simulator.fit.cohort import Vocabulary, cohort_from_kernel, cohort_from_tables, needs_of
from simulator.fit.report import write_report
from simulator.fit.validation import default_targets, validate_run
from simulator.model.library import Library
from simulator.tables.chunks import chunk_tables

REFERENCE = pd.Timestamp("2024-07-01", tz="UTC")
ANTIHYPERTENSIVES = {"314076", "979492", "310798", "197361"}  # lisinopril, losartan, HCTZ, amlodipine


def _living_band(patients: pd.DataFrame, lo: int, hi: int, sex: str | None = None) -> pd.Series:
    age = np.floor((REFERENCE - patients["birth_time"]).dt.total_seconds() / 86400 / 365.25)
    alive = patients["death_time"].isna() | (patients["death_time"] > REFERENCE)
    chosen = alive & (age >= lo) & (age <= hi)
    if sex:
        chosen &= patients["sex"].astype(str) == sex
    return patients.loc[chosen, "index"]


def _last_kind(events: pd.DataFrame, code: str, kinds: tuple[str, ...]) -> pd.Series:
    """The kind of each patient's last event of `code` among `kinds`."""
    rows = events[(events["code"].astype(str) == code) & events["kind"].astype(str).isin(kinds)]
    return rows.groupby("patient")["kind"].last().astype(str)


def _latest(events: pd.DataFrame, code: str) -> pd.Series:
    rows = events[(events["code"].astype(str) == code) & (events["kind"].astype(str) == "observation")]
    return rows.groupby("patient")["value"].last()


def independent_diabetes_total(patients: pd.DataFrame, events: pd.DataFrame, lo: int, hi: int) -> float:
    """Living people of the band with type 2 (44054006) or type 1 (46635009) diabetes active."""
    people = _living_band(patients, lo, hi)
    active: set[int] = set()
    for code in ("44054006", "46635009"):
        status = _last_kind(events, code, ("condition_onset", "condition_resolved"))
        active |= set(status[status == "condition_onset"].index)
    return float(people.isin(active).mean())


def _hypertensive(
    patients: pd.DataFrame, events: pd.DataFrame, lo: int, hi: int, sex: str | None
) -> tuple[pd.Series, set[int], set[int], set[int]]:
    """People of the band with a BP reading; those with hypertension (latest reading >= 130/80 or an
    antihypertensive taken); those taking one; those whose latest reading is below 130/80."""
    systolic, diastolic = _latest(events, "8480-6"), _latest(events, "8462-4")
    people = _living_band(patients, lo, hi, sex)
    people = people[people.isin(systolic.index)]
    taking = set()
    for code in ANTIHYPERTENSIVES:
        last = _last_kind(events, code, ("medication_start", "medication_stop"))
        taking |= set(last[last == "medication_start"].index)
    high = set(systolic[systolic >= 130].index) | set(diastolic[diastolic >= 80].index)
    below = set(systolic.index) - high
    return people, high | taking, taking, below


def independent_hypertension(patients: pd.DataFrame, events: pd.DataFrame, lo: int, hi: int, sex: str | None) -> float:
    people, hypertensive, _, _ = _hypertensive(patients, events, lo, hi, sex)
    return float(people.isin(hypertensive).mean())


def independent_cascade(patients: pd.DataFrame, events: pd.DataFrame) -> dict[str, float]:
    """Among adults with hypertension: the share ever diagnosed ("aware"), taking a drug ("treated"), and
    taking one with the latest reading below 130/80 ("controlled")."""
    people, hypertensive, taking, below = _hypertensive(patients, events, 18, 120, None)
    people = people[people.isin(hypertensive)]
    diagnosed = set(_last_kind(events, "38341003", ("condition_diagnosis",)).index)
    meets = {"aware": diagnosed, "treated": taking, "controlled": taking & below}
    return {step: float(people.isin(who).mean()) for step, who in meets.items()}


@pytest.fixture(scope="module")
def written_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    simulator.generate(patients=700, seed=31, out=out, formats="parquet")
    return out


@pytest.mark.slow
def test_report_numbers_agree_with_the_event_table(written_run: Path) -> None:
    validation = validate_run(written_run, lifetime_patients=200)
    files = write_report(validation, written_run / "validation")
    assert [f.name for f in files] == ["report.json", "report.md", "report.html"]
    report = json.loads(files[0].read_text())
    by_id = {c["id"]: c for c in report["comparisons"]}
    population = simulator.Population(json.loads((written_run / "manifest.json").read_text()), out=written_run)
    patients, events = population.patients, population.events
    expected = {
        "diabetes_total/18-120/all/2017": independent_diabetes_total(patients, events, 18, 120),
        "diabetes_total/45-64/all/2017": independent_diabetes_total(patients, events, 45, 64),
        "hypertension_130_80/18-39/F/2021": independent_hypertension(patients, events, 18, 39, "F"),
        "hypertension_130_80/40-59/M/2021": independent_hypertension(patients, events, 40, 59, "M"),
        **{f"hypertension_{step}/18-120/all/2021": v for step, v in independent_cascade(patients, events).items()},
    }
    for target_id, value in expected.items():
        row = by_id[target_id]
        assert row["status"] == "compared"
        assert row["simulated"] == pytest.approx(value, abs=1e-6), target_id
        assert row["count"] / row["n"] == pytest.approx(value, abs=1e-6)
        assert row["simulated_ci"][0] <= value <= row["simulated_ci"][1]
        assert row["passed"] == (
            abs(value - row["target"]) <= 0.1 * row["target"]
            or row["simulated_ci"][0] <= row["target"] <= row["simulated_ci"][1]
        )
    # an age-adjusted row: each band's share weighted by the 2000 US standard population (adults 18+)
    standard = ((18, 39, 0.420263), (40, 59, 0.357202), (60, 120, 0.222535))
    adjusted = sum(w * independent_hypertension(patients, events, lo, hi, None) for lo, hi, w in standard)
    row = by_id["hypertension_130_80/18-120/all/2017"]
    assert row["status"] == "compared" and row["simulated"] == pytest.approx(adjusted, abs=1e-6)
    assert row["simulated_ci"][0] < adjusted < row["simulated_ci"][1]
    e0 = report["summary"]["life_expectancy_at_birth"]["simulated"]
    ages = (validation.lifetime.death_t - validation.lifetime.birth_t) / 365.25
    assert e0 == pytest.approx(float(np.mean(ages)), abs=1e-4)
    assert 40 < e0 < 100
    e0_row = by_id["life_expectancy_at_birth/0-0/all/2023"]
    assert e0_row["passed"] == (abs(e0 - e0_row["target"]) <= 0.5)  # an absolute tolerance, from definitions.yaml
    # remaining life expectancy at 65: years lived after 65 by the lifetime cohort's members alive at 65
    e65_row = by_id["life_expectancy_at_age/65-65/all/2023"]
    e65 = float(np.mean(ages[ages >= 65] - 65))
    assert e65_row["age"] == "65" and e65_row["n"] == int((ages >= 65).sum()) > 0
    assert e65_row["simulated"] == pytest.approx(e65, abs=1e-4)
    assert e65_row["passed"] == (abs(e65 - e65_row["target"]) <= 0.5)
    ex_rows = [c for c in report["comparisons"] if c["measure"] == "life_expectancy_at_age" and c["passed"] is not None]
    assert report["summary"]["life_expectancy_at_age"]["compared"] == len(ex_rows) == 18
    assert report["summary"]["life_expectancy_at_age"]["passed"] == sum(c["passed"] for c in ex_rows)
    decedents = json.loads((written_run / "manifest.json").read_text())["counts"].get("decedents", 0)
    assert report["invariants"]["patients_checked"] == 700 + decedents  # the invariants check the decedents too
    # the audit of the records, made from the events read back, is the one `ehrsim audit` makes of the tables
    written = simulator.audit(written_run)
    audit = report["audit"]
    assert audit["patients"] == 700 + decedents and report["summary"]["audit_violations"] == written.violations
    assert [(r["id"], r["checked"], r["violations"]) for r in audit["rules"]] == [
        (r.id, r.checked, r.violations) for r in written.rules
    ]
    assert sum(r["checked"] for r in audit["rules"]) > 0
    summary = report["summary"]  # the calibration targets are the declarations' (hypertension's among them)
    calibrated = [by_id[i] for i in validation.calibration_targets if by_id[i]["status"] == "compared"]
    assert "hypertension_130_80/40-59/M/2021" in validation.calibration_targets
    assert summary["calibration_targets"] == len(calibrated)
    assert summary["passed_calibration"] == sum(1 for c in calibrated if c["passed"])
    # each target alone is missed by an unbiased model at most 5% of the time (its pass band spans 1.96 SE or more)
    assert 0 < summary["calibration_misses_expected_without_bias"] <= 0.05 * len(calibrated)
    html = files[2].read_text()
    assert html.count("data:image/png;base64,") >= 4 and "Dataset card" in html
    assert "diabetes_total/18-120/all/2017" in files[1].read_text()
    assert "Clinical consistency audit" in html and "Clinical consistency audit" in files[1].read_text()
    assert all(f"<td>{r.id}</td>" in html for r in written.rules)


def test_kernel_and_table_summaries_agree(shipped_library: Library) -> None:
    library = shipped_library
    targets = default_targets(library)
    vocabulary = Vocabulary.of(library)
    needs = needs_of(targets.definitions, vocabulary)
    sim = simulator.Simulator.build(simulator.RunConfig(patients=600, seed=4), library)
    index = np.arange(600)
    run = sim.simulate(index)
    from_kernel = cohort_from_kernel(
        run.events, run.patient, index, run.people.birth_t, run.people.sex, sim.names.codes, sim.reference_t, needs,
        sim.names.conditions,
    )  # fmt: skip
    chunk = chunk_tables(sim, 0, 600)
    from_tables = cohort_from_tables(chunk.patients, chunk.events, sim.reference_t, needs)
    for name in ("conditions", "observations", "medications"):
        kernel_side, table_side = getattr(from_kernel, name), getattr(from_tables, name)
        assert kernel_side.keys() == table_side.keys()
        for key in kernel_side:
            np.testing.assert_allclose(kernel_side[key].astype(float), table_side[key].astype(float), atol=1e-9)
    np.testing.assert_allclose(from_kernel.birth_t, from_tables.birth_t, atol=1e-6)
    np.testing.assert_allclose(from_kernel.death_t, from_tables.death_t, atol=1e-6)
    assert from_kernel.events.keys() == from_tables.events.keys() and len(from_kernel.events) >= 2
    for key, (rows, t) in from_kernel.events.items():  # the counted encounters and deaths are the same events
        np.testing.assert_array_equal(rows, from_tables.events[key][0])
        np.testing.assert_allclose(t, from_tables.events[key][1], atol=1e-6)
    assert sum(len(rows) for rows, _ in from_kernel.events.values()) > 0


def test_a_run_without_tables_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        validate_run(tmp_path)


def test_validate_command_needs_a_run_or_a_size() -> None:
    from typer.testing import CliRunner

    from simulator.cli import app

    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 1 and "give either a run directory or --patients N" in result.output
