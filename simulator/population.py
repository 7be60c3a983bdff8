"""Who the patients are: reference tables from rules/ as arrays, and the patient table.

The draws themselves happen in the kernel layer (`kernel.sample_people`), from each patient's own
stream, so a patient is the same person whatever chunk they fall in.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from simulator import kernel
from simulator.compiler import days_since_epoch
from simulator.library import Library

NAME_LISTS = ("given_male", "given_female", "family", "street_number", "streets", "street_suffixes", "cities")
MAX_STREET_NUMBER = 9999


@dataclass(frozen=True)
class PeopleTables:
    """Everything `kernel.sample_people` needs, derived once from the rules."""

    reference_t: float
    age_sex_cdf: np.ndarray  # float64[2 * n_ages]
    race_cdf: np.ndarray
    ethnicity_cdf: np.ndarray
    cum_hazard: np.ndarray  # float64[2, n_ages + 1]
    tail_rate: np.ndarray  # float64[2]
    n_name_lists: np.ndarray  # int64[len(NAME_LISTS)]


def _cdf(shares: list[float]) -> np.ndarray:
    cdf = np.cumsum(np.asarray(shares, dtype=np.float64))
    return cdf / cdf[-1]


def annual_rates(qx: np.ndarray, ex_last: float) -> np.ndarray:
    """Hazard per year at each whole age from single-year death probabilities q(x); the open last
    interval (where the table gives q = 1) has the constant hazard 1/e(x)."""
    rates = -np.log1p(-np.clip(np.asarray(qx, dtype=np.float64), 0.0, 1.0 - 1e-12))
    rates[-1] = 1.0 / ex_last
    return rates


def life_table_hazard(qx: np.ndarray, ex_last: float, share: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Cumulative hazard H(age) at whole ages, and the hazard of the open last interval, from a
    life table (`annual_rates`); `share[x]` (default 1) scales the hazard of each year of age."""
    rates = annual_rates(qx, ex_last) * (1.0 if share is None else np.asarray(share, dtype=np.float64))
    cum = np.concatenate([[0.0], np.cumsum(rates[:-1])])
    return cum, float(rates[-1])


def fitted_background_share(library: Library) -> pd.DataFrame | None:
    """The rules' fitted background share as a table (age, male, female), or None when there is
    none or it was fitted for another set of modules than the library's."""
    fitted = library.background_share
    if fitted is None or sorted(fitted.modules) != sorted(m.name for m in library.modules):
        return None
    return pd.DataFrame(fitted.bands.model_dump())


def background_share_by_age(shares: pd.DataFrame, sex: str, n_ages: int) -> np.ndarray:
    """The background share of each single year of age 0..n_ages-1 from a table of age bands
    (columns age, male, female; each row holds from its age until the next row's)."""
    band = np.searchsorted(shares["age"].to_numpy(float), np.arange(n_ages), side="right") - 1
    return shares[sex].to_numpy(float)[np.clip(band, 0, None)]


def build_people_tables(
    library: Library, reference_date: date, background_share: pd.DataFrame | None = None
) -> PeopleTables:
    """`background_share` (age, male, female) replaces the rules' fitted share (calibration)."""
    rules = library.rules_dir
    demographics = library.demographics
    pyramid = pd.read_csv(rules / demographics.population_csv)
    counts = np.concatenate([pyramid["male"].to_numpy(float), pyramid["female"].to_numpy(float)])
    hazards, tails = [], []
    mortality = library.mortality
    shares = background_share if background_share is not None else fitted_background_share(library)
    for sex, csv in (("male", mortality.male_csv), ("female", mortality.female_csv)):
        table = pd.read_csv(rules / csv)
        share = None if shares is None else background_share_by_age(shares, sex, len(table))
        cum, tail = life_table_hazard(table["qx"].to_numpy(float), float(table["ex"].iloc[-1]), share)
        hazards.append(cum)
        tails.append(tail)
    names = library.names
    lengths = [
        len(names.given_male),
        len(names.given_female),
        len(names.family),
        MAX_STREET_NUMBER,
        len(names.streets),
        len(names.street_suffixes),
        len(names.cities),
    ]
    return PeopleTables(
        reference_t=days_since_epoch(reference_date),
        age_sex_cdf=_cdf(list(counts)),
        race_cdf=_cdf([r.share for r in demographics.race]),
        ethnicity_cdf=_cdf([e.share for e in demographics.ethnicity]),
        cum_hazard=np.vstack(hazards),
        tail_rate=np.asarray(tails),
        n_name_lists=np.asarray(lengths, dtype=np.int64),
    )


@dataclass(frozen=True)
class People:
    """The drawn inputs of one chunk of patients."""

    index: np.ndarray  # int64
    birth_t: np.ndarray  # float64 days since 1970-01-01
    sex: np.ndarray  # int8: 0 male, 1 female
    race: np.ndarray  # int32
    ethnicity: np.ndarray  # int32
    death_t: np.ndarray  # float64: background death
    picks: np.ndarray  # int64[n, len(NAME_LISTS)]
    id_bits: np.ndarray  # uint64[n, 2]


def sample(tables: PeopleTables, seed: int, index: np.ndarray, lifetime: bool) -> People:
    n = index.shape[0]
    people = People(
        index=index.astype(np.int64),
        birth_t=np.empty(n),
        sex=np.empty(n, np.int8),
        race=np.empty(n, np.int32),
        ethnicity=np.empty(n, np.int32),
        death_t=np.empty(n),
        picks=np.empty((n, len(NAME_LISTS)), np.int64),
        id_bits=np.empty((n, 2), np.uint64),
    )
    with np.errstate(over="ignore"):  # SplitMix64 wraps on purpose (warns only without JIT)
        kernel.sample_people(
            seed,
            people.index,
            lifetime,
            tables.reference_t,
            tables.age_sex_cdf,
            tables.race_cdf,
            tables.ethnicity_cdf,
            tables.cum_hazard,
            tables.tail_rate,
            tables.n_name_lists,
            people.birth_t,
            people.sex,
            people.race,
            people.ethnicity,
            people.death_t,
            people.picks,
            people.id_bits,
        )
    return people


def patient_ids(id_bits: np.ndarray) -> list[str]:
    """Version-4-shaped UUIDs from the patients' own random bits: stable for (seed, index)."""
    return [str(uuid.UUID(int=(high << 64) | low, version=4)) for high, low in id_bits.tolist()]


def to_datetime(t_days: np.ndarray) -> pd.Series:
    """Float days since 1970-01-01 (UTC) -> timezone-aware timestamps, millisecond precision."""
    ms = np.where(np.isfinite(t_days), np.round(t_days * 86_400_000.0), np.nan)
    return pd.Series(pd.to_datetime(ms, unit="ms", utc=True))


def patient_table(
    library: Library, people: People, death_t: np.ndarray, death_code: np.ndarray, codes: tuple, seed: int
) -> pd.DataFrame:
    """One row per patient: identity, demographics, synthetic name and address, death."""
    names = library.names
    picks = people.picks
    male = people.sex == 0
    given = np.where(
        male,
        np.asarray(names.given_male, dtype=object)[picks[:, 0]],
        np.asarray(names.given_female, dtype=object)[picks[:, 1]],
    )
    cities = names.cities
    city_pick = picks[:, 6]
    races = library.demographics.race
    ethnicities = library.demographics.ethnicity
    street = (
        pd.Series(picks[:, 3] + 1).astype(str)
        + " "
        + pd.Series(np.asarray(names.streets, dtype=object)[picks[:, 4]])
        + " "
        + pd.Series(np.asarray(names.street_suffixes, dtype=object)[picks[:, 5]])
    )
    dead = np.isfinite(death_t)
    cause = np.where(dead, death_code, -1)
    return pd.DataFrame(
        {
            "id": patient_ids(people.id_bits),
            "index": people.index,
            "seed": np.full(len(people.index), seed, dtype=np.int64),
            "birth_time": to_datetime(people.birth_t),
            "sex": pd.Categorical.from_codes(people.sex, ["M", "F"]),
            "race": pd.Categorical.from_codes(people.race, [r.name for r in races]),
            "race_code": pd.Categorical.from_codes(people.race, [r.code.code for r in races]),
            "ethnicity": pd.Categorical.from_codes(people.ethnicity, [e.name for e in ethnicities]),
            "ethnicity_code": pd.Categorical.from_codes(people.ethnicity, [e.code.code for e in ethnicities]),
            "given_name": given,
            "family_name": np.asarray(names.family, dtype=object)[picks[:, 2]],
            "address": street.to_numpy(),
            "city": [cities[k].city for k in city_pick],
            "state": [cities[k].state for k in city_pick],
            "zip": [cities[k].zip for k in city_pick],
            "death_time": to_datetime(np.where(dead, death_t, np.nan)),
            "death_cause_code": [codes[k].code if k >= 0 else None for k in cause],
            "death_cause_display": [codes[k].display if k >= 0 else None for k in cause],
        }
    )


def reference_date_of(library: Library) -> date:
    return datetime.strptime(library.demographics.reference_date, "%Y-%m-%d").replace(tzinfo=UTC).date()
