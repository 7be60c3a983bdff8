"""Background mortality net of the deaths the disease modules produce (a cause-deleted life table).

The NCHS life tables count deaths from every cause. Modules that kill (heart disease, stroke, COPD,
sepsis, kidney failure, ...) add their own deaths, so background deaths at the full life-table
rate would count those causes twice and the cohort would die years too early. The fit simulates a
birth cohort, measures the modules' death rate per age band and sex, and scales the background
hazard to the share of life-table mortality that is left:

    share = (life-table deaths - module deaths in band) / (life-table deaths at the background hazard ratios)

where the life-table deaths are those the table expects from the band's person-years, and the last term
counts each person-year lived with a diagnosed condition that has a background hazard ratio
(rules/mortality.yaml hazard_ratios) that many times; without ratios it is 1 - module deaths / expected.
Floored at MIN_SHARE. Each pass measures the modules' deaths in the cohort the previous share
produced (the modules' death rates hardly depend on it, so two passes settle it).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from ruamel.yaml import YAML

from simulator.days import DAYS_PER_YEAR
from simulator.engine.codes import K_DEATH, K_DIAGNOSIS
from simulator.engine.people import annual_rates, build_people_tables, reference_date_of
from simulator.engine.run import RunConfig, Simulator
from simulator.files import write_all
from simulator.model.library import Library

BANDS = (0, 1, *range(5, 101, 5))  # band starts, years; the last band is 100 and over
MIN_SHARE = 0.05  # background deaths never fall below 5% of the life table's
SEXES = ("male", "female")


@dataclass(frozen=True)
class CohortDeaths:
    """Deaths of a simulated birth cohort: person-years and deaths by single year of age (0..100+)
    and sex, split into background and module deaths; and life expectancy at birth by sex and all."""

    person_years: np.ndarray  # float64[2, 101]
    ratio_person_years: np.ndarray  # float64[2, 101]: person-years weighted by the background hazard ratio
    module_deaths: np.ndarray  # float64[2, 101]
    background_deaths: np.ndarray  # float64[2, 101]
    life_expectancy: dict[str, float]


@dataclass(frozen=True)
class MortalityFit:
    shares: pd.DataFrame  # age (band start), male, female
    before: CohortDeaths
    after: CohortDeaths
    lives: int
    seed: int
    seconds: float


def cohort_deaths(sim: Simulator, patients: int, chunk_size: int = 5_000) -> CohortDeaths:
    """Simulate `patients` of a lifetime-mode simulator (kernel only) and count their deaths."""
    n_ages = 101
    person_years = np.zeros((2, n_ages))
    ratio_person_years = np.zeros((2, n_ages))
    deaths = np.zeros((2, 2, n_ages))  # [module?, sex, age]
    code_ratio = np.ones(len(sim.names.codes))
    code_ratio[sim.model.cond_code] = sim.model.cond_bg_hr
    ages_at_death: list[np.ndarray] = []
    sexes: list[np.ndarray] = []
    for start in range(0, patients, chunk_size):
        run = sim.simulate(np.arange(start, min(start + chunk_size, patients), dtype=np.int64))
        is_death = run.events.kind == K_DEATH
        row = run.patient[is_death] - start
        age = (run.events.t[is_death] - run.people.birth_t[row]) / DAYS_PER_YEAR
        sex = run.people.sex[row].astype(np.int64)
        by_module = (run.events.state[is_death] >= 0).astype(np.int64)
        np.add.at(deaths, (by_module, sex, np.minimum(age.astype(np.int64), n_ages - 1)), 1.0)
        lived = _lived(age, n_ages)
        for s in (0, 1):
            person_years[s] += lived[sex == s].sum(axis=0)
            ratio_person_years[s] += lived[sex == s].sum(axis=0)
        # a diagnosis with a background hazard ratio r: the years lived after it count r times (the modules
        # give a patient one such diagnosis, never resolved)
        death_age = np.full(len(run.people.birth_t), np.nan)  # the counts above cover the dead only
        death_age[row] = age
        is_ratio = (run.events.kind == K_DIAGNOSIS) & (code_ratio[run.events.code] != 1.0)
        is_ratio[is_ratio] = np.isfinite(death_age[run.patient[is_ratio] - start])
        ratio_row = run.patient[is_ratio] - start
        since = (run.events.t[is_ratio] - run.people.birth_t[ratio_row]) / DAYS_PER_YEAR
        extra = (_lived(death_age[ratio_row], n_ages) - _lived(since, n_ages)) * (
            code_ratio[run.events.code[is_ratio]] - 1.0
        )[:, None]
        for s in (0, 1):
            ratio_person_years[s] += extra[run.people.sex[ratio_row] == s].sum(axis=0)
        ages_at_death.append(age)
        sexes.append(sex)
    age, sex = np.concatenate(ages_at_death), np.concatenate(sexes)
    expectancy = {"all": float(age.mean())} | {name: float(age[sex == s].mean()) for s, name in enumerate(SEXES)}
    return CohortDeaths(person_years, ratio_person_years, deaths[1], deaths[0], expectancy)


def _lived(age: np.ndarray, n_ages: int) -> np.ndarray:
    """Years lived in each single year of age 0..n_ages-1 (the last open) by people who reach `age` (rows)."""
    lived = np.clip(age[:, None] - np.arange(n_ages)[None, :], 0.0, 1.0)
    lived[:, -1] = np.maximum(age - (n_ages - 1), 0.0)  # the open interval 100+
    return lived


def life_table_rates(library: Library) -> np.ndarray:
    """All-cause hazard per year by sex and single year of age 0..100 (100: the open interval)."""
    rates = []
    for csv in (library.mortality.male_csv, library.mortality.female_csv):
        table = pd.read_csv(library.rules_dir / csv)
        rates.append(annual_rates(table["qx"].to_numpy(float), float(table["ex"].iloc[-1])))
    return np.vstack(rates)


def background_shares(deaths: CohortDeaths, rates: np.ndarray) -> pd.DataFrame:
    """The share of life-table mortality left to background deaths, by age band and sex."""
    edges = [*BANDS, rates.shape[1]]
    columns = {"age": list(BANDS)}
    for s, name in enumerate(SEXES):
        values = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            expected = float((deaths.person_years[s, lo:hi] * rates[s, lo:hi]).sum())
            weighted = float((deaths.ratio_person_years[s, lo:hi] * rates[s, lo:hi]).sum())
            modelled = float(deaths.module_deaths[s, lo:hi].sum())
            values.append(1.0 if expected <= 0 else min(1.0, max(MIN_SHARE, (expected - modelled) / weighted)))
        columns[name] = np.round(values, 4).tolist()
    return pd.DataFrame(columns)


def fit_background_mortality(
    library: Library,
    patients: int = 20_000,
    seed: int = 20_240_701,
    passes: int = 2,
    report: Callable[[str], None] = lambda line: None,
) -> MortalityFit:
    """Fit the background share by age band and sex on a birth cohort of `patients` (fixed seed)."""
    started = time.perf_counter()
    sim = Simulator.build(RunConfig(patients=patients, seed=seed, mode="lifetime"), library)
    reference = reference_date_of(library)
    rates = life_table_rates(library)
    shares = pd.DataFrame({"age": list(BANDS), "male": 1.0, "female": 1.0})
    sim.people_tables = build_people_tables(library, reference, shares)
    before = deaths = cohort_deaths(sim, patients)
    report(f"full life-table background: life expectancy {deaths.life_expectancy['all']:.2f} years")
    for i in range(passes):
        shares = background_shares(deaths, rates)
        sim.people_tables = build_people_tables(library, reference, shares)
        deaths = cohort_deaths(sim, patients)
        report(f"pass {i + 1}: life expectancy {deaths.life_expectancy['all']:.2f} years")
    return MortalityFit(shares, before, deaths, patients, seed, time.perf_counter() - started)


def write_shares(fit: MortalityFit, library: Library, path: Path) -> None:
    """Write the fitted share with what it was fitted for (whole or not at all)."""
    document = {
        "fitted": date.today().isoformat(),
        "lives": fit.lives,
        "seed": fit.seed,
        "life_expectancy": {
            "before": round(fit.before.life_expectancy["all"], 2),
            "after": round(fit.after.life_expectancy["all"], 2),
        },
        "modules": sorted(m.name for m in library.modules),
        "bands": {column: fit.shares[column].tolist() for column in ("age", "male", "female")},
    }
    header = (
        "# Background mortality share by age band and sex: written by `ehrsim calibrate mortality`\n"
        "# (see rules/mortality.yaml). Not a published figure: (the deaths the life table expects from a\n"
        "# simulated birth cohort's person-years - module deaths) / the deaths it expects at the background\n"
        "# hazard ratios, floored at 0.05. It applies only to a library with exactly these modules;\n"
        "# refit it when a module's mortality changes.\n"
    )
    text = io.StringIO()
    text.write(header)
    YAML().dump(document, text)
    write_all({path: text.getvalue()})
