"""The patient table: one row per patient, demographics, identifiers and death."""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.days import to_datetime
from simulator.engine.people import People
from simulator.model.library import Library
from simulator.tables.uuids import uuid_strings


def patient_table(
    library: Library,
    people: People,
    death_t: np.ndarray,
    death_code: np.ndarray,
    codes: tuple,
    seed: int,
    is_decedent: bool = False,
) -> pd.DataFrame:
    """One row per patient: identity, demographics, synthetic name and address, death, and whether the
    patient is one of the run's decedents (died within its decedent window) rather than of its living
    cohort."""
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
            "id": uuid_strings(people.id_bits[:, 0], people.id_bits[:, 1]),  # the patient's own bits
            "index": people.index,
            "seed": np.full(len(people.index), seed, dtype=np.int64),  # a record for readers of the tables
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
            "is_decedent": np.full(len(people.index), is_decedent),
        }
    )
