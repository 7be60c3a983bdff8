"""Statistical checks with tolerances (never seed-exact counts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, NO_MODULES

import simulator
from simulator.engine.people import build_people_tables, reference_date_of, sample
from simulator.model.loading import load_library


def _people(n: int, lifetime: bool):
    library = load_library(NO_MODULES)
    tables = build_people_tables(library, reference_date_of(library))
    return library, tables, sample(tables, seed=21, index=np.arange(n), lifetime=lifetime)


def test_age_sex_pyramid_matches_census() -> None:
    library, tables, people = _people(200_000, lifetime=False)
    ages = (tables.reference_t - people.birth_t) / 365.25
    census = pd.read_csv(library.rules_dir / library.demographics.population_csv)
    total = census[["male", "female"]].to_numpy().sum()
    for sex, column in ((0, "male"), (1, "female")):
        for lo in range(0, 100, 5):
            expected = census.loc[(census["age"] >= lo) & (census["age"] < lo + 5), column].sum() / total
            observed = np.mean((people.sex == sex) & (ages >= lo) & (ages < lo + 5))
            tolerance = 4 * np.sqrt(expected * (1 - expected) / len(ages))
            assert abs(observed - expected) < tolerance, (column, lo, observed, expected)


def test_race_and_ethnicity_shares_match_the_rules() -> None:
    library, _, people = _people(100_000, lifetime=False)
    for drawn, categories in (
        (people.race, library.demographics.race),
        (people.ethnicity, library.demographics.ethnicity),
    ):
        for k, category in enumerate(categories):
            tolerance = 4 * np.sqrt(category.share * (1 - category.share) / len(drawn)) + 1e-9
            assert abs(np.mean(drawn == k) - category.share) < tolerance, category.name


def test_life_expectancy_at_birth_matches_the_life_table() -> None:
    library, _, people = _people(200_000, lifetime=True)
    death_age = (people.death_t - people.birth_t) / 365.25
    e0 = pd.read_csv(library.rules_dir / library.mortality.total_csv)["ex"].iloc[0]
    assert abs(e0 - 78.4) < 0.05  # the 2023 table the issue names
    assert abs(death_age.mean() - e0) < 0.5
    for sex, csv in ((0, library.mortality.male_csv), (1, library.mortality.female_csv)):
        ex = pd.read_csv(library.rules_dir / csv)["ex"].iloc[0]
        assert abs(death_age[people.sex == sex].mean() - ex) < 0.5
    table = pd.read_csv(library.rules_dir / library.mortality.total_csv).set_index("age")["ex"]
    for x in (40, 65, 80):  # remaining life expectancy e(x) of those alive at x
        assert abs((death_age[death_age >= x] - x).mean() - table[x]) < 0.5, x


def test_kernel_records_background_death_when_drawn() -> None:
    population = simulator.generate(patients=300, seed=5, mode="lifetime", modules_dir=DATA / "statistics")
    library = load_library(DATA / "statistics")
    tables = build_people_tables(library, reference_date_of(library))
    drawn = sample(tables, seed=5, index=np.arange(300), lifetime=True)
    recorded = (population.patients["death_time"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds() / 86400
    assert np.allclose(recorded.to_numpy(), drawn.death_t, atol=1e-7)  # millisecond timestamps


@pytest.mark.slow
def test_hazard_gives_expected_cumulative_incidence_with_hazard_ratio_and_age_bands() -> None:
    population = simulator.generate(patients=20_000, seed=8, modules_dir=DATA / "statistics")
    patients, events = population.patients, population.events
    reference = pd.Timestamp(population.manifest["config"]["reference_date"], tz="UTC")
    age = ((reference - patients["birth_time"]).dt.total_seconds() / 86400 / 365.25).to_numpy()
    male = (patients["sex"] == "M").to_numpy()

    def had(display: str) -> np.ndarray:
        ids = events.loc[(events["kind"] == "condition_onset") & (events["display"] == display), "patient"]
        return patients["index"].isin(ids).to_numpy()

    exposed = had("Smoker (finding)")
    assert abs(exposed.mean() - 0.5) < 4 * np.sqrt(0.25 / len(exposed))
    outcome = had("Myocardial infarction (disorder)")
    for group, ratio in ((exposed, 3.0), (~exposed, 1.0)):
        p = 1 - np.exp(-0.01 * ratio * age[group])
        assert abs(outcome[group].sum() - p.sum()) < 4 * np.sqrt((p * (1 - p)).sum())
    rate = np.where(male, 0.05, 0.03)
    p = 1 - np.exp(-rate * np.clip(age - 20, 0, 20))
    banded = had("Asthma (disorder)")
    assert not banded[age < 20].any()
    assert abs(banded.sum() - p.sum()) < 4 * np.sqrt((p * (1 - p)).sum())
