"""Deterministic resource ids and FHIR date-times, computed a column at a time.

An id is a version-4-shaped UUID (formatted as patient ids are, by `simulator.tables.uuids`) from a
SplitMix64 hash of (seed, patient index, resource tag, key), where the key is the event's row within
its patient (or the encounter number). Rows within a patient do not depend on the chunk size, so
neither do the ids.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa

from simulator.tables.uuids import ascii_text, uuid_strings

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
# the two decimal digits of 0..99, as two ASCII bytes
_DECIMAL_PAIRS = np.frombuffer(b"".join(f"{b:02d}".encode() for b in range(100)), np.uint16)

# resource tags: one per kind of derived id, so two resources from one row never share an id
TAGS = {
    "Encounter": 1,
    "Condition": 2,
    "Observation": 3,
    "DiagnosticReport": 4,
    "MedicationRequest": 5,
    "Procedure": 6,
    "Immunization": 7,
    "Symptom": 8,
    "Death": 9,
    "ProblemListItem": 10,
    "SmokingStatus": 11,
    "Language": 12,  # a draw, not a resource: the language each patient speaks (see `uniforms`)
    "CareTeam": 20,
    "Goal": 21,
    "CarePlan": 22,
    "DocumentReference": 23,
    "Provenance": 24,
    "AllergyIntolerance": 30,
    "Allergy": 31,  # draws: which allergies each patient has, when recorded, verified, with what reaction
    "Coverage": 32,
    "Insurance": 33,  # draws: each patient's payer, insurer and member number
    "Messiness": 60,  # draws of the messy-data pass (simulator.export.messiness)
    "Duplicate": 61,  # the records it files twice
    "StreamDevice": 62,  # the monitor of a streamed stay (`--streams`)
    "StreamSegment": 63,  # an Observation holding a segment of a stream
    "Streams": 64,  # a seed: the generator of a streamed stay's samples
    # draws of the provider directory (simulator.export.directory)
    "directory/adult": 41,
    "directory/pediatrics": 42,
    "directory/hospital": 43,
    "directory/on_duty": 44,
    "directory/given": 45,
    "directory/family": 46,
    "directory/street": 47,
    "directory/suffix": 48,
    "directory/number": 49,
    "directory/phone": 50,
    "directory/npi": 51,
}


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, element-wise on uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash(seed: int, patient: np.ndarray, tag: str, key: np.ndarray) -> np.ndarray:
    """64 random bits per (patient index, key) for `tag`, a pure function of them and the seed."""
    with np.errstate(over="ignore"):
        base = _mix(np.uint64(seed) * _GAMMA + np.uint64(TAGS[tag]))
        z = _mix(base ^ (np.asarray(patient).astype(np.uint64) * _GAMMA))
        return _mix(z ^ (np.asarray(key).astype(np.uint64) + _GAMMA))


def resource_ids(seed: int, patient: np.ndarray, tag: str, key: np.ndarray) -> np.ndarray:
    """UUIDs for resources of type `tag`, one per (patient index, key), as an object array."""
    z = _hash(seed, patient, tag, key)
    with np.errstate(over="ignore"):
        return uuid_strings(z, _mix(z + _GAMMA))


def uniforms(seed: int, patient: np.ndarray, tag: str, key: np.ndarray) -> np.ndarray:
    """Uniform draws in [0, 1) for `tag`, one per (patient index, key): what the exporters draw after the
    kernel, the same whatever the chunk size."""
    return (_hash(seed, patient, tag, key) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def positions(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The position of each value among the distinct `keys` (-1 where absent), by one hash pass over both
    (the ids of a chunk are shared string objects whose hashes are cached, so this beats an index lookup)."""
    codes, _ = pd.factorize(np.concatenate([keys, values]))
    found = codes[len(keys) :]
    return np.where(found < len(keys), found, -1)


def utc_ms(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Timezone-aware timestamps -> datetime64[ms] (UTC), without going through Python objects."""
    return pd.DatetimeIndex(times).as_unit("ms").asi8.view("datetime64[ms]")


def fhir_datetime_text(times: pd.Series | pd.DatetimeIndex) -> pa.LargeStringArray:
    """UTC timestamps -> FHIR dateTime strings with milliseconds and 'Z' (null where missing), as
    an Arrow string array formatted a column at a time."""
    values = utc_ms(times)
    missing = np.isnat(values)
    values = np.where(missing, np.datetime64(0, "ms"), values)
    days = values.astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    years = days.astype("datetime64[Y]")
    ms = (values - days.astype("datetime64[ms]")).astype(np.int64)
    year = years.astype(np.int64) + 1970
    fields = [  # (first character, two-digit number)
        (0, year // 100),
        (2, year % 100),
        (5, (months - years.astype("datetime64[M]")).astype(np.int64) + 1),
        (8, (days - months.astype("datetime64[D]")).astype(np.int64) + 1),
        (11, ms // 3_600_000),
        (14, ms // 60_000 % 60),
        (17, ms // 1000 % 60),
        (21, ms % 100),
    ]
    chars = np.tile(np.frombuffer(b"0000-00-00T00:00:00.000Z", np.uint8), (len(values), 1))
    for start, number in fields:
        chars[:, start : start + 2] = _DECIMAL_PAIRS[number].view(np.uint8).reshape(-1, 2)
    chars[:, 20] = ord("0") + ms % 1000 // 100
    return ascii_text(chars, missing)


def fhir_datetimes(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC timestamps -> FHIR dateTime strings ('' where missing), as an object array."""
    return fhir_datetime_text(times).fill_null("").to_numpy(zero_copy_only=False).astype(object, copy=False)


def fhir_dates(times: pd.Series) -> np.ndarray:
    """UTC timestamps -> FHIR date strings (YYYY-MM-DD)."""
    return np.datetime_as_string(utc_ms(times).astype("datetime64[D]"), unit="D")


_OWN_PATIENT = re.compile(rb'^\{"resourceType":"Patient","id":"([^"]+)"')
_PATIENT_REFERENCE = re.compile(rb'"reference":"Patient/([^"]+)"')


def patient_of(line: bytes) -> str | None:
    """The id of the patient a written ndjson line belongs to, without parsing it: a Patient's own id, else
    the first Patient reference; None for a resource of no patient (the shared resources)."""
    match = _OWN_PATIENT.match(line) or _PATIENT_REFERENCE.search(line)
    return match.group(1).decode() if match else None
