"""Who the patients are: reference tables from rules/ as arrays (population pyramid, race and ethnicity
shares, life-table hazards, names), and `sample_people`, which draws each patient from their own stream
so that a patient is the same person whatever chunk they fall in."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime
from typing import NamedTuple

import numpy as np
import pandas as pd
from numba import njit, prange

from simulator.days import DAYS_PER_YEAR, days_since_epoch
from simulator.engine.rng import STREAM_PEOPLE, exponential, next_u64, stream_state, uniform
from simulator.model.library import Library

NAME_LISTS = ("given_male", "given_female", "family", "street_number", "streets", "street_suffixes", "cities")
MAX_STREET_NUMBER = 9999


class PeopleTables(NamedTuple):
    """Everything `sample_people` needs, derived once from the rules."""

    reference_t: float
    age_sex_cdf: np.ndarray  # float64[2 * n_ages]
    race_cdf: np.ndarray
    ethnicity_cdf: np.ndarray
    cum_hazard: np.ndarray  # float64[2, n_ages + 1]
    tail_rate: np.ndarray  # float64[2]
    n_name_lists: np.ndarray  # int64[len(NAME_LISTS)]
    city_utc_offset_days: np.ndarray  # float64[n_cities]: standard UTC offset of each city's time zone, in days
    death_cdf: np.ndarray  # float64[2 * n_ages]: cumulative shares of background deaths in a year over (sex, age)
    module_death_cdf: np.ndarray  # the same of the deaths the life tables leave to the modules (all - background)
    background_deaths: float  # background deaths in a year per person of the pyramid
    deaths: float  # life-table deaths (background and module) in a year per person of the pyramid


class People(NamedTuple):
    """Who the patients of one chunk are: what `sample_people` drew for each (arrays of one row a patient)."""

    index: np.ndarray  # int64
    birth_t: np.ndarray  # float64 days since 1970-01-01
    sex: np.ndarray  # int8: 0 male, 1 female
    race: np.ndarray  # int32
    ethnicity: np.ndarray  # int32
    death_t: np.ndarray  # float64: background death
    picks: np.ndarray  # int64[n, len(NAME_LISTS)]
    id_bits: np.ndarray  # uint64[n, 2]
    utc_offset_days: np.ndarray  # float64: standard UTC offset of the patient's city's time zone (local = UTC + it)


@njit(cache=True, _nrt=False)
def inverse_cumulative(cum_hazard: np.ndarray, tail_rate: float, target: float) -> float:
    """Age (years) at which the cumulative hazard reaches target; cum_hazard[k] is H(k), linear
    within each year, constant rate tail_rate past the last age."""
    last = cum_hazard.shape[0] - 1
    if target >= cum_hazard[last]:
        return last + (target - cum_hazard[last]) / tail_rate
    lo = 0
    while cum_hazard[lo + 1] < target:
        lo += 1
    span = cum_hazard[lo + 1] - cum_hazard[lo]
    return lo + ((target - cum_hazard[lo]) / span if span > 0 else 0.0)


@njit(cache=True, _nrt=False)
def cumulative_at(cum_hazard: np.ndarray, tail_rate: float, age: float) -> float:
    last = cum_hazard.shape[0] - 1
    if age >= last:
        return cum_hazard[last] + (age - last) * tail_rate
    k = int(age)
    return cum_hazard[k] + (age - k) * (cum_hazard[k + 1] - cum_hazard[k])


@njit(cache=True, _nrt=False)
def _pick(cdf: np.ndarray, u: float) -> int:
    k = 0
    while k < cdf.shape[0] - 1 and cdf[k] <= u:
        k += 1
    return k


@njit(cache=True, parallel=True)
def sample_people(seed: int, lifetime: bool, tables: PeopleTables, people: People) -> None:
    """Draw who each patient `people.index` is from their own people stream, into the other arrays of `people`.

    age_sex_cdf: cumulative shares over (sex, single year of age): male ages 0..A, then female.
    Population mode: the age at `reference_t` follows the pyramid and background death is drawn
    conditional on being alive then. Lifetime mode: born in the year before `reference_t`, sexes
    as at age 0, background death from birth. cum_hazard: float64[2, A+2], H at whole ages per
    sex; tail_rate[2]: hazard past the table. picks[i, k] chooses from name list k.
    """
    for i in prange(people.index.shape[0]):
        # one call per person: Numba's parallel loop drops writes made through a tuple's arrays in its own body
        _sample_person(seed, lifetime, tables, people, i)


@njit(cache=True)
def _sample_person(seed: int, lifetime: bool, tables: PeopleTables, people: People, i: int) -> None:
    cdf, hazard, tail = tables.age_sex_cdf, tables.cum_hazard, tables.tail_rate
    n_ages = cdf.shape[0] // 2
    rng = np.zeros(1, np.uint64)
    rng[0] = stream_state(seed, people.index[i], STREAM_PEOPLE)
    cell = _pick(cdf, uniform(rng))
    within = uniform(rng)
    s = 0 if cell < n_ages else 1
    if lifetime:
        age = within
        newborn_male = cdf[0] / (cdf[0] + cdf[n_ages] - cdf[n_ages - 1])
        s = 0 if uniform(rng) < newborn_male else 1
    else:
        age = (cell % n_ages) + within
        uniform(rng)
    people.sex[i] = s
    people.birth_t[i] = tables.reference_t - age * DAYS_PER_YEAR
    people.race[i] = _pick(tables.race_cdf, uniform(rng))
    people.ethnicity[i] = _pick(tables.ethnicity_cdf, uniform(rng))
    start = 0.0 if lifetime else age
    target = cumulative_at(hazard[s], tail[s], start) + exponential(rng)
    people.death_t[i] = people.birth_t[i] + inverse_cumulative(hazard[s], tail[s], target) * DAYS_PER_YEAR
    _draw_identity(rng, tables, people, i)


@njit(cache=True)
def _draw_identity(rng: np.ndarray, tables: PeopleTables, people: People, i: int) -> None:
    """The name and address picks and the id bits of patient i, the last draws of their people stream."""
    for k in range(tables.n_name_lists.shape[0]):
        people.picks[i, k] = int(uniform(rng) * tables.n_name_lists[k])
    people.id_bits[i, 0] = next_u64(rng)
    people.id_bits[i, 1] = next_u64(rng)


@njit(cache=True, parallel=True)
def sample_background_decedents(
    seed: int, window_days: float, cdf: np.ndarray, tables: PeopleTables, people: People
) -> None:
    """Draw each decedent `people.index` (their people stream) who dies a background death in the
    `window_days` before `reference_t`: sex and age at death from `cdf` (over the cells of `death_cdf`;
    uniform within the year of age), the day of death uniform in the window, race, ethnicity and identity
    as `sample_people` does."""
    for i in prange(people.index.shape[0]):
        _sample_background_decedent(seed, window_days, cdf, tables, people, i)


@njit(cache=True)
def _sample_background_decedent(
    seed: int, window_days: float, cdf: np.ndarray, tables: PeopleTables, people: People, i: int
) -> None:
    n_ages = cdf.shape[0] // 2
    rng = np.zeros(1, np.uint64)
    rng[0] = stream_state(seed, people.index[i], STREAM_PEOPLE)
    cell = _pick(cdf, uniform(rng))
    age = (cell % n_ages) + uniform(rng)
    people.sex[i] = 0 if cell < n_ages else 1
    people.death_t[i] = tables.reference_t - window_days * uniform(rng)
    people.birth_t[i] = people.death_t[i] - age * DAYS_PER_YEAR
    people.race[i] = _pick(tables.race_cdf, uniform(rng))
    people.ethnicity[i] = _pick(tables.ethnicity_cdf, uniform(rng))
    _draw_identity(rng, tables, people, i)


@njit(cache=True, parallel=True)
def redraw_identities(seed: int, streams: np.ndarray, tables: PeopleTables, people: People) -> None:
    """New name, address and id bits for each patient i, from the people stream `streams[i]` (a decedent who
    lives the history of another patient's discarded event stream is not that patient)."""
    for i in prange(people.index.shape[0]):
        _redraw_identity(seed, streams, tables, people, i)


@njit(cache=True)
def _redraw_identity(seed: int, streams: np.ndarray, tables: PeopleTables, people: People, i: int) -> None:
    rng = np.zeros(1, np.uint64)
    rng[0] = stream_state(seed, streams[i], STREAM_PEOPLE)
    _draw_identity(rng, tables, people, i)


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


def standard_utc_offset_days(time_zone: str, year: int) -> float:
    """A zone's standard UTC offset in `year`, in days: the smaller of its January and July offsets (daylight
    saving time moves a clock forward, in either hemisphere)."""
    zone = zoneinfo.ZoneInfo(time_zone)
    offsets = [datetime(year, month, 15, 12, tzinfo=UTC).astimezone(zone).utcoffset() for month in (1, 7)]
    return min(offset.total_seconds() for offset in offsets if offset is not None) / 86400.0


def _life_tables(
    library: Library, background_share: pd.DataFrame | None
) -> list[tuple[str, np.ndarray, float, np.ndarray | None]]:
    """(sex, qx, e(x) of the open last age, background share by year of age or None) for male then female:
    the life tables and `background_share` (age, male, female), else the rules' fitted share."""
    mortality = library.mortality
    shares = background_share if background_share is not None else fitted_background_share(library)
    out = []
    for sex, csv in (("male", mortality.male_csv), ("female", mortality.female_csv)):
        table = pd.read_csv(library.rules_dir / csv)
        share = None if shares is None else background_share_by_age(shares, sex, len(table))
        out.append((sex, table["qx"].to_numpy(float), float(table["ex"].iloc[-1]), share))
    return out


def background_hazard(library: Library, background_share: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The background hazard by sex (rows male, female): cumulative at whole ages, and past the table;
    the life tables scaled by `background_share` (age, male, female), else by the rules' fitted share."""
    return _background_hazard(_life_tables(library, background_share))


def module_hazard(library: Library) -> tuple[np.ndarray, np.ndarray]:
    """The hazard of death the life tables leave to the modules, by sex (rows male, female), as
    `background_hazard` gives it: the life tables less the background (1 - the rules' fitted share); zero
    without a fitted share. The modules' deaths were fitted to it (`ehrsim calibrate mortality`), so exp(-H(age))
    is the chance that no module has ended a life by that age."""
    tables = _life_tables(library, None)
    return _background_hazard(
        [(sex, qx, ex_last, np.zeros(len(qx)) if share is None else 1.0 - share) for sex, qx, ex_last, share in tables]
    )


def _background_hazard(tables: list[tuple[str, np.ndarray, float, np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray]:
    hazards, tails = zip(*(life_table_hazard(qx, ex_last, share) for _, qx, ex_last, share in tables), strict=True)
    return np.vstack(hazards), np.array(tails)


def build_people_tables(
    library: Library, reference_date: date, background_share: pd.DataFrame | None = None
) -> PeopleTables:
    """`background_share` (age, male, female) replaces the rules' fitted share (calibration)."""
    rules = library.rules_dir
    demographics = library.demographics
    pyramid = pd.read_csv(rules / demographics.population_csv)
    counts = np.concatenate([pyramid["male"].to_numpy(float), pyramid["female"].to_numpy(float)])
    tables = _life_tables(library, background_share)
    cum_hazard, tail_rate = _background_hazard(tables)
    deaths, background = [], []
    for sex, qx, ex_last, share in tables:
        alive = _by_age(pyramid[sex].to_numpy(float), len(qx))
        rates = annual_rates(qx, ex_last)
        deaths.append(alive * -np.expm1(-rates))
        background.append(alive * -np.expm1(-rates * (1.0 if share is None else share)))
    death_cdf = _cdf(list(np.concatenate(background)))
    # the deaths the life tables leave to the modules: none without a fitted background share (no stand-ins)
    module_deaths = np.concatenate(deaths) - np.concatenate(background)
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
        cum_hazard=cum_hazard,
        tail_rate=tail_rate,
        n_name_lists=np.asarray(lengths, dtype=np.int64),
        city_utc_offset_days=np.asarray(
            [standard_utc_offset_days(c.time_zone, reference_date.year) for c in names.cities], dtype=np.float64
        ),
        death_cdf=death_cdf,
        module_death_cdf=_cdf(list(module_deaths)) if module_deaths.sum() > 0 else death_cdf,
        background_deaths=float(np.sum(background) / counts.sum()),
        deaths=float(np.sum(deaths) / counts.sum()),
    )


def _by_age(alive: np.ndarray, n_ages: int) -> np.ndarray:
    """The pyramid's counts at ages 0..n_ages-1 of a life table (its last age holds everyone older)."""
    out = np.zeros(n_ages)
    out[: min(n_ages, len(alive))] = alive[:n_ages]
    out[-1] += alive[n_ages:].sum()
    return out


def sample(tables: PeopleTables, seed: int, index: np.ndarray, lifetime: bool) -> People:
    people = _empty(index)
    with np.errstate(over="ignore"):  # SplitMix64 wraps on purpose (warns only without JIT)
        sample_people(seed, lifetime, tables, people)
    return _with_time_zones(tables, people)


def sample_decedents(
    tables: PeopleTables, seed: int, index: np.ndarray, window_years: float, stand_ins: bool = False
) -> People:
    """Background decedents `index` (their people streams): `sample_background_decedents`, aged and sexed
    as the background deaths, or with `stand_ins` as the deaths the life tables leave to the modules."""
    people = _empty(index)
    cdf = tables.module_death_cdf if stand_ins else tables.death_cdf
    with np.errstate(over="ignore"):
        sample_background_decedents(seed, window_years * DAYS_PER_YEAR, cdf, tables, people)
    return _with_time_zones(tables, people)


def with_new_identities(tables: PeopleTables, seed: int, people: People, streams: np.ndarray) -> People:
    """`people` with new names, street addresses and ids drawn from the people streams `streams`, in the same
    cities (a city's time zone sets the hours of a patient's visits, so it is part of their history)."""
    renamed = People(*(column.copy() for column in people))
    with np.errstate(over="ignore"):
        redraw_identities(seed, streams.astype(np.int64), tables, renamed)
    city = NAME_LISTS.index("cities")
    renamed.picks[:, city] = people.picks[:, city]
    return renamed


def _with_time_zones(tables: PeopleTables, people: People) -> People:
    people.utc_offset_days[:] = tables.city_utc_offset_days[people.picks[:, NAME_LISTS.index("cities")]]
    return people


def _empty(index: np.ndarray) -> People:
    n = index.shape[0]
    return People(
        index=index.astype(np.int64),
        birth_t=np.empty(n),
        sex=np.empty(n, np.int8),
        race=np.empty(n, np.int32),
        ethnicity=np.empty(n, np.int32),
        death_t=np.empty(n),
        picks=np.empty((n, len(NAME_LISTS)), np.int64),
        id_bits=np.empty((n, 2), np.uint64),
        utc_offset_days=np.empty(n),
    )


def reference_date_of(library: Library) -> date:
    return datetime.strptime(library.demographics.reference_date, "%Y-%m-%d").replace(tzinfo=UTC).date()
