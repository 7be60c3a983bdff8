"""Scenario files (simulator.scenario): checked like module files, conditioned cohorts whose weights re-weight
to the unconditioned population, ground truth, and the shipped examples checked against the written FHIR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, REPO, read_ndjson
from typer.testing import CliRunner

import simulator
from simulator.cli import app

BROKEN = sorted((DATA / "scenarios_broken").glob("*.yaml"))
EXAMPLES = REPO / "examples" / "scenarios"


@pytest.fixture
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # messages name files relative to the working directory


@pytest.mark.usefixtures("_in_repo")
@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_scenario_gives_golden_messages(path: Path) -> None:
    result = CliRunner().invoke(app, ["scenario", "check", str(path.relative_to(REPO))])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr == path.with_suffix(".expected").read_text()


@pytest.mark.usefixtures("_in_repo")
def test_generate_with_a_broken_scenario_fails_cleanly(tmp_path: Path) -> None:
    path = (DATA / "scenarios_broken" / "names.yaml").relative_to(REPO)
    result = CliRunner().invoke(app, ["generate", "--scenario", str(path), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 1
    assert "unknown module 'pneumonia_sepis'" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_pass_the_check(path: Path) -> None:
    result = CliRunner().invoke(app, ["scenario", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: ")


def test_scenario_schema_command() -> None:
    result = CliRunner().invoke(app, ["schema", "--scenario"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert {"patients", "who", "require", "force", "tilt", "streams", "messiness", "history"} <= set(
        schema["properties"]
    )
    assert schema["additionalProperties"] is False


# --- re-weighting: weighted estimates from a scenario cohort match the unconditioned population's -----------

PNEUMONIA_60S = """
patients: {n}
mode: lifetime
who: {{sex: [female]}}
require:
  - {{condition: pneumonia, window: {{age: {{min: 60, max: 70}}}}}}
tilt:
  - module: pneumonia_sepsis
    state: cap_susceptible
    to: cap_onset
    factor: 8
    window: {{age: {{min: 60, max: 70}}}}
"""
AF_60_80 = """
patients: {n}
mode: lifetime
require:
  - {{condition: atrial_fibrillation, window: {{age: {{min: 60, max: 80}}}}}}
tilt:
  - {{module: atrial_fibrillation, state: af_free, to: af_onset, factor: 6, window: {{age: {{min: 60, max: 80}}}}}}
"""


@pytest.fixture(scope="module")
def plain_lifetimes() -> simulator.Population:
    return simulator.generate(patients=6000, seed=11, mode="lifetime")


def _first_onset_age(pop: simulator.Population, condition: str, low: float, high: float) -> pd.Series:
    """Age at each patient's first onset of `condition` in [low, high) years (patients without one left out)."""
    events, patients = pop.events, pop.patients.set_index("patient")
    display = {"pneumonia": "Pneumonia", "atrial_fibrillation": "Atrial fibrillation"}[condition]
    onsets = events[(events["kind"] == "condition_onset") & events["display"].astype(str).str.startswith(display)]
    birth = pd.to_datetime(patients.loc[onsets["patient"], "birth_date"]).to_numpy()
    age = (onsets["time"].to_numpy() - birth) / np.timedelta64(1, "D") / 365.25
    ages = pd.Series(age, index=onsets["patient"].to_numpy())
    return ages[(ages >= low) & (ages < high)].groupby(level=0).min()


def test_weights_estimate_the_probability_of_a_scenario(tmp_path: Path, plain_lifetimes: simulator.Population) -> None:
    """P(female and a pneumonia onset at 60-69) from the plain cohort vs sum(weights) / histories simulated."""
    path = tmp_path / "pneumonia.yaml"
    path.write_text(PNEUMONIA_60S.format(n=400))
    pop = simulator.generate(scenario=path, seed=3)
    weights, made = pop.weights, pop.manifest["scenario"]
    estimate = weights.sum() / made["histories_simulated"]
    spread = weights.std() * np.sqrt(len(weights)) / made["histories_simulated"]  # of the weighted mean
    plain = plain_lifetimes.patients.set_index("patient")
    hit = _first_onset_age(plain_lifetimes, "pneumonia", 60, 70).index
    is_case = plain.index.isin(hit) & (plain["sex"] == "female").to_numpy()
    p = is_case.mean()
    plain_spread = np.sqrt(p * (1 - p) / len(plain))
    assert abs(estimate - p) < 3.5 * np.hypot(spread, plain_spread), (estimate, p, spread, plain_spread)
    assert 0.02 < p < 0.2  # the test has power: the event is neither certain nor unseen


def test_weights_estimate_the_mean_age_at_the_event(tmp_path: Path, plain_lifetimes: simulator.Population) -> None:
    """Mean age at a first AF onset at 60-79 (and the share of men) among those who have one: weighted
    scenario cohort vs the plain cohort."""
    path = tmp_path / "af.yaml"
    path.write_text(AF_60_80.format(n=400))
    pop = simulator.generate(scenario=path, seed=4)
    ages = _first_onset_age(pop, "atrial_fibrillation", 60, 80)
    w = pop.weights.loc[ages.index].to_numpy()
    assert len(ages) == 400
    weighted = np.average(ages.to_numpy(), weights=w)
    n_eff = w.sum() ** 2 / (w**2).sum()
    spread = np.sqrt(np.average((ages.to_numpy() - weighted) ** 2, weights=w) / n_eff)
    plain = _first_onset_age(plain_lifetimes, "atrial_fibrillation", 60, 80)
    plain_spread = plain.std() / np.sqrt(len(plain))
    assert len(plain) > 100
    assert abs(weighted - plain.mean()) < 3.5 * np.hypot(spread, plain_spread), (weighted, plain.mean())
    unweighted = ages.mean()
    assert abs(unweighted - weighted) < 10  # sanity: the same decades


# --- determinism and ground truth -----------------------------------------------------------------------


def test_same_seed_same_bytes_whatever_the_chunks(tmp_path: Path) -> None:
    path = EXAMPLES / "dka_teen.yaml"
    one = simulator.generate(scenario=path, seed=5, out=tmp_path / "a", formats="ndjson,parquet")
    two = simulator.generate(scenario=path, seed=5, out=tmp_path / "b", formats="ndjson,parquet", chunk_size=7)
    for name, entry in one.manifest["files"].items():
        assert two.manifest["files"][name]["sha256"] == entry["sha256"], name
    assert any(name.startswith("truth/") for name in one.manifest["files"])


def test_truth_tables(tmp_path: Path) -> None:
    pop = simulator.generate(scenario=EXAMPLES / "dka_teen.yaml", seed=6, out=tmp_path / "o", formats="parquet,csv")
    truth = pop.truth
    assert set(truth) == {"weights", "states", "onsets", "forced"}
    assert (tmp_path / "o" / "truth" / "weights.csv").exists()
    weights = truth["weights"]
    assert len(weights) == 50 and (weights["weight"] > 0).all() and (weights["attempts"] >= 1).all()
    onsets = truth["onsets"]
    t1d = onsets[onsets["condition"] == "t1d"]
    assert set(t1d["patient"]) == set(range(50))
    assert (t1d["diagnosis_time"] >= t1d["onset_time"]).all()  # the true onset comes first
    forced = truth["forced"]
    assert set(forced["patient"]) <= set(range(50)) and (forced["to"] == "t1d_dka_emergency").all()
    states = truth["states"]
    assert {"t1d_onset", "t1d_dka_emergency"} <= set(states["state"])


# --- the examples, each patient checked against the written FHIR -----------------------------------------


def _age_years(resources: dict[str, list[dict]], patient_id: str, when: str) -> float:
    patient = next(p for p in resources["Patient"] if p["id"] == patient_id)
    birth = pd.Timestamp(patient["birthDate"])
    return (pd.Timestamp(when).tz_localize(None) - birth) / pd.Timedelta(days=365.25)


def _by_patient(resources: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in resources:
        out.setdefault(r["subject"]["reference"].split("/", 1)[1], []).append(r)
    return out


def _has_code(resource: dict, words: str) -> bool:
    return any(words.lower() in c.get("display", "").lower() for c in resource["code"]["coding"])


END = pd.Timestamp("2024-07-01")


def _last_year(when: str) -> bool:
    return END - pd.Timedelta(days=365.25) <= pd.Timestamp(when).tz_localize(None) < END


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sepsis_icu", "dka_teen", "af_stroke", "copd_exacerbation"])
def test_example_every_patient_satisfies_it_in_the_fhir(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    pop = simulator.generate(scenario=EXAMPLES / f"{name}.yaml", seed=1, out=out)
    resources = read_ndjson(out)
    patients = resources["Patient"]
    assert len(patients) == 50 == len(pop.weights)
    conditions = _by_patient(resources["Condition"])
    encounters = _by_patient(resources["Encounter"])
    for patient in patients:
        pid = patient["id"]
        own_conditions, own_encounters = conditions.get(pid, []), encounters.get(pid, [])
        assert "deceasedDateTime" not in patient
        end_age = _age_years(resources, pid, str(END))
        if name == "sepsis_icu":
            assert end_age >= 65
            assert any(_has_code(c, "sepsis") and _last_year(c["onsetDateTime"]) for c in own_conditions)
            assert any(e["class"]["code"] == "ICU" and _last_year(e["period"]["start"]) for e in own_encounters), pid
        elif name == "dka_teen":
            dka = [c for c in own_conditions if _has_code(c, "ketoacidosis")]
            assert any(10 <= _age_years(resources, pid, c["onsetDateTime"]) < 18 for c in dka), pid
            assert any(_has_code(c, "type 1") for c in own_conditions)
        elif name == "af_stroke":
            af = [c["onsetDateTime"] for c in own_conditions if _has_code(c, "atrial fibrillation")]
            strokes = [c["onsetDateTime"] for c in own_conditions if _has_code(c, "cerebrovascular accident")]
            assert af and strokes and max(strokes) > min(af), pid
            assert end_age >= 60
        else:
            assert any(_has_code(c, "chronic obstructive") for c in own_conditions)
            admitted = [
                e
                for e in own_encounters
                if e["class"]["code"] == "IMP"
                and _last_year(e["period"]["start"])
                and any("obstructive" in str(r) for r in e.get("reasonCode", []) + e.get("reasonReference", []))
            ]
            assert admitted or any(
                e["class"]["code"] == "IMP" and _last_year(e["period"]["start"]) for e in own_encounters
            ), pid
