"""A population run's decedents: the patients who died in the window before the end date, as a real EHR
extract holds them. Their number and ages at death follow the NCHS 2023 life tables applied to the Census
pyramid; the living cohort is the same as without them; the output does not depend on the chunking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, table_hash

import simulator
from simulator.api import DEFAULT_DECEDENT_YEARS, decedent_years
from simulator.engine.run import RunConfig, Simulator
from simulator.errors import ConfigError
from simulator.fit.validation import living_cohort

WINDOW_YEARS = 10.0  # a long window: enough decedents in a small run for the statistics below


@pytest.fixture(scope="module")
def with_decedents() -> simulator.Population:
    return simulator.generate(patients=2000, seed=31, chunk_size=1000, decedents=WINDOW_YEARS)


def _nchs_deaths() -> pd.DataFrame:
    """Deaths in a year by single year of age and sex: the Census 2024 pyramid times the NCHS 2023 q(x)
    (the open 100+ group at the rate 1/e(100)), computed here from the rules' files, not by the simulator."""
    pyramid = pd.read_csv(REPO / "rules" / "population_2024.csv")
    rows = []
    for sex, column in (("M", "male"), ("F", "female")):
        table = pd.read_csv(REPO / "rules" / "life_tables" / f"{column}.csv")
        q = table["qx"].to_numpy(float).copy()
        q[-1] = 1.0 - np.exp(-1.0 / table["ex"].iloc[-1])
        rows.append(pd.DataFrame({"age": table["age"], "sex": sex, "deaths": pyramid[column].to_numpy(float) * q}))
    return pd.concat(rows, ignore_index=True)


def _ages_at_death(patients: pd.DataFrame) -> np.ndarray:
    return ((patients["death_time"] - patients["birth_time"]).dt.total_seconds() / (365.25 * 86400)).to_numpy()


def test_the_window_follows_history_by_default() -> None:
    assert decedent_years("population", None, None) == DEFAULT_DECEDENT_YEARS
    assert decedent_years("population", None, 5.0) == 5.0
    assert decedent_years("population", "none", 5.0) == 0.0
    assert decedent_years("population", "2.5", None) == 2.5
    assert decedent_years("lifetime", None, None) == 0.0
    with pytest.raises(ConfigError, match="lifetime"):
        RunConfig(mode="lifetime", decedent_years=1.0)
    with pytest.raises(ConfigError, match="number of years"):
        decedent_years("population", "a year", None)


def test_decedents_died_in_the_window_and_follow_the_living(with_decedents) -> None:
    patients = with_decedents.patients
    living, dead = patients[~patients["is_decedent"]], patients[patients["is_decedent"]]
    assert len(living) == 2000 and living["death_time"].isna().all()
    assert (dead["index"].to_numpy() == 2000 + np.arange(len(dead))).all() and patients["id"].is_unique
    end = pd.Timestamp("2024-07-01", tz="UTC")
    assert dead["death_time"].notna().all() and (dead["death_time"] <= end).all()
    assert (dead["death_time"] >= end - pd.Timedelta(days=365.25 * WINDOW_YEARS)).all()
    assert dead["death_cause_code"].notna().all()
    events = with_decedents.events
    last = events.groupby("patient")["time"].max()
    assert (last.reindex(dead["index"]).to_numpy() <= dead["death_time"].to_numpy()).all()
    counts = with_decedents.manifest["counts"]
    assert counts["patients"] == 2000 and counts["decedents"] == len(dead)
    assert sum(counts["decedent_deaths"].values()) == len(dead)


def test_decedent_count_age_and_sex_follow_nchs(with_decedents) -> None:
    """Decedents per living patient, their sex and age at death against the NCHS deaths of the pyramid."""
    nchs = _nchs_deaths()
    pyramid = pd.read_csv(REPO / "rules" / "population_2024.csv")
    expected_rate = WINDOW_YEARS * nchs["deaths"].sum() / (pyramid["male"].sum() + pyramid["female"].sum())
    dead = with_decedents.patients[with_decedents.patients["is_decedent"]]
    n = len(dead)
    expected = 2000 * expected_rate  # about 180
    assert abs(n - expected) < 4 * np.sqrt(expected) + 0.1 * expected, (n, expected)
    male = nchs.loc[nchs["sex"] == "M", "deaths"].sum() / nchs["deaths"].sum()
    assert abs((dead["sex"] == "M").mean() - male) < 4 * np.sqrt(male * (1 - male) / n)
    ages = _ages_at_death(dead)
    old = nchs.loc[nchs["age"] >= 65, "deaths"].sum() / nchs["deaths"].sum()  # about three in four
    assert abs((ages >= 65).mean() - old) < 4 * np.sqrt(old * (1 - old) / n) + 0.03
    mean_age = np.average(nchs["age"] + 0.5, weights=nchs["deaths"])
    sd_age = np.sqrt(np.average((nchs["age"] + 0.5 - mean_age) ** 2, weights=nchs["deaths"]))
    assert abs(ages.mean() - mean_age) < 4 * sd_age / np.sqrt(n) + 1.0, (ages.mean(), mean_age)


def test_decedents_die_of_modules_and_in_the_background_as_the_fitted_share_splits(with_decedents) -> None:
    """Module deaths (with the stand-ins for those the window lacks) against the share the life tables leave
    to the modules; the stand-ins are a minority of them."""
    sim = Simulator.build(RunConfig(patients=1, decedent_years=WINDOW_YEARS))
    tables = sim.people_tables
    module_share = 1 - tables.background_deaths / tables.deaths
    counts = with_decedents.manifest["counts"]
    by, stand_ins = counts["decedent_deaths"], counts["decedent_stand_ins"]
    n = by["module"] + by["background"]
    assert by["module"] > stand_ins
    spread = 4 * np.sqrt(module_share * (1 - module_share) / n)
    assert abs((by["module"] + stand_ins) / n - module_share) < spread + 0.05


def test_the_living_cohort_is_the_run_without_decedents() -> None:
    without = simulator.generate(patients=300, seed=32, decedents="none")
    assert not without.patients["is_decedent"].any()
    with_them = simulator.generate(patients=300, seed=32, decedents=WINDOW_YEARS)
    assert with_them.patients["is_decedent"].sum() > 0
    living = living_cohort(with_them.patients)
    events = with_them.events[with_them.events["patient"] < 300].reset_index(drop=True)
    assert table_hash(living, events) == table_hash(without.patients, without.events)


@pytest.mark.slow
def test_decedents_do_not_depend_on_the_chunk_size() -> None:
    def hashed(chunk_size: int) -> str:
        population = simulator.generate(patients=300, seed=33, chunk_size=chunk_size, decedents=WINDOW_YEARS)
        return table_hash(population.patients, population.events)

    assert hashed(37) == hashed(300)


def test_a_written_run_validates_its_living_cohort_only(tmp_path) -> None:
    out = tmp_path / "out"
    written = simulator.generate(patients=200, seed=34, out=out, formats="parquet", decedents=WINDOW_YEARS)
    assert written.patients["is_decedent"].sum() > 0
    result, _ = simulator.validate(out, lifetime_patients=0, report_dir=tmp_path / "report")
    assert len(result.cohort) == 200 and result.cohort.alive.all()
    report = simulator.audit(out)
    assert report.violations == 0


def test_decedents_are_written_as_deceased_fhir_patients(shipped_export) -> None:
    """The shipped export holds decedents (its FHIR is checked against R4, US Core and the references by
    the FHIR tests); each is a Patient with deceasedDateTime at the death in the tables."""
    from conftest import read_ndjson

    patients = pd.read_parquet(shipped_export / "parquet" / "patients.parquet")
    dead = patients[patients["is_decedent"]]
    assert len(dead) > 0
    written = {p["id"]: p for p in read_ndjson(shipped_export)["Patient"]}
    for row in dead.itertuples():
        deceased = pd.Timestamp(written[row.id]["deceasedDateTime"])
        assert abs(deceased - row.death_time) < pd.Timedelta(seconds=1)


def test_the_audit_flags_a_decedent_without_a_death(shipped_library) -> None:
    from simulator.audit.checks import CHECKS
    from simulator.audit.tables import AuditTables

    born = pd.to_datetime(["1940-01-01", "1950-01-01", "1960-01-01"], utc=True)
    patients = pd.DataFrame(
        {
            "index": [0, 1, 2],
            "birth_time": born,
            "death_time": pd.to_datetime([None, "2024-01-01", None], utc=True),
            "death_cause_code": [None, "22298006", None],
            "is_decedent": [False, True, True],
        }
    )
    rule = shipped_library.audit.rules["decedents"]
    found = CHECKS[rule.kind](AuditTables({"patients": patients}), rule)
    assert found.checked == 2 and found.violations["patient"].tolist() == [2]
    older = CHECKS[rule.kind](AuditTables({"patients": patients.drop(columns="is_decedent")}), rule)
    assert older.checked == 0 and older.violations.empty
