"""simulator/export/ids.py: resource ids are UUIDs fixed by (seed, patient, tag, row) alone, and FHIR
date-times are formatted a column at a time exactly as Python formats them one by one."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from simulator.export.ids import TAGS, fhir_dates, fhir_datetime_text, fhir_datetimes, resource_ids

PATIENTS = np.repeat(np.arange(50), 20)
ROWS = np.tile(np.arange(20), 50)


def test_ids_are_valid_version_4_uuid_text() -> None:
    for text in resource_ids(3, PATIENTS, "Observation", ROWS):
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case 8-4-4-4-12
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_ids_depend_on_seed_patient_tag_and_row_only() -> None:
    ids = resource_ids(3, PATIENTS, "Observation", ROWS)
    assert len(set(ids)) == len(ids)  # every (patient, row) its own id
    # the same (seed, patient, row) gives the same id whatever else is computed with it
    assert resource_ids(3, PATIENTS[::-1], "Observation", ROWS[::-1]).tolist() == ids[::-1].tolist()
    assert resource_ids(3, PATIENTS[123:124], "Observation", ROWS[123:124])[0] == ids[123]
    others = [resource_ids(4, PATIENTS, "Observation", ROWS)]
    others += [resource_ids(3, PATIENTS, tag, ROWS) for tag in TAGS if tag != "Observation"]
    every = np.concatenate([ids, *others])
    assert len(set(every)) == len(every)  # another seed or resource type never repeats an id


def test_unknown_tag_is_refused() -> None:
    with pytest.raises(KeyError):
        resource_ids(3, PATIENTS, "Patient", ROWS)


def test_fhir_datetimes_match_pythons_isoformat_with_milliseconds() -> None:
    times = pd.Series(
        pd.to_datetime(
            ["1905-03-07 00:00:00", "1999-12-31 23:59:59.999", "2024-02-29 08:05:03.040", "2024-07-01 12:00:00.5"],
            format="ISO8601",
            utc=True,
        )
    )
    expected = [t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z" for t in times]
    assert expected[1] == "1999-12-31T23:59:59.999Z"
    assert fhir_datetimes(times).tolist() == expected
    assert fhir_dates(times).tolist() == ["1905-03-07", "1999-12-31", "2024-02-29", "2024-07-01"]


def test_a_missing_time_is_null_text_and_an_empty_string() -> None:
    times = pd.Series(pd.to_datetime(["2020-05-17 10:30:00", None], utc=True))
    assert fhir_datetime_text(times).to_pylist() == ["2020-05-17T10:30:00.000Z", None]
    assert fhir_datetimes(times).tolist() == ["2020-05-17T10:30:00.000Z", ""]
