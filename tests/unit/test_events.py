"""simulator/tables/events.py on a handmade kernel buffer: one row per event, named, typed and
categorical, each label filled only on the rows it belongs to."""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.engine.codes import EVENT_KINDS, K_DEATH, K_ENCOUNTER_END, K_ENCOUNTER_START, K_OBSERVATION
from simulator.engine.compiler import Names
from simulator.engine.kernel import Events
from simulator.model.schema import ENCOUNTER_CLASSES, Code
from simulator.tables.events import EVENT_COLUMNS, event_table, labelled

ER = ENCOUNTER_CLASSES.index("emergency")
NAMES = Names(
    modules=("flu",),
    states=("flu.er_visit", "flu.recovering"),
    state_names=("er_visit", "recovering"),
    attributes=(),
    conditions=("flu",),
    medications=(),
    observables=("temperature",),
    observable_units=("Cel",),
    observable_categories=("vital-signs",),
    codes=(
        Code(system="SNOMED", code="50849002", display="Emergency room admission (procedure)"),
        Code(system="LOINC", code="8310-5", display="Body temperature"),
        Code(system="SNOMED", code="419620001", display="Death (event)"),
    ),
    races=("white",),
    ethnicities=("not_hispanic",),
)
# patient 7: an emergency visit for flu with a temperature; patient 9: a background (life-table) death
EVENTS = Events(
    t=np.array([100.5, 100.625, 100.75, 20_000.0]),
    kind=np.array([K_ENCOUNTER_START, K_OBSERVATION, K_ENCOUNTER_END, K_DEATH], np.int8),
    code=np.array([0, 1, 0, 2], np.int32),
    value=np.array([np.nan, 38.9, np.nan, np.nan]),
    encounter=np.array([0, 0, 0, -1], np.int32),
    state=np.array([0, 0, 1, -1], np.int32),
    subject=np.array([ER, 0, ER, -1], np.int32),
    reason=np.array([0, -1, -1, -1], np.int32),
)
PATIENT = np.array([7, 7, 7, 9], np.int64)
LABELS = [c for c in EVENT_COLUMNS if c not in ("patient", "time", "value", "encounter")]  # categorical


def test_event_table_columns_and_dtypes() -> None:
    table = event_table(EVENTS, PATIENT, NAMES)
    assert tuple(table.columns) == EVENT_COLUMNS
    assert table["patient"].tolist() == [7, 7, 7, 9]
    assert isinstance(table["time"].dtype, pd.DatetimeTZDtype) and str(table["time"].dt.tz) == "UTC"
    assert table["time"].tolist() == [
        pd.Timestamp("1970-04-11 12:00", tz="UTC"),
        pd.Timestamp("1970-04-11 15:00", tz="UTC"),
        pd.Timestamp("1970-04-11 18:00", tz="UTC"),
        pd.Timestamp("2024-10-04", tz="UTC"),  # day 20,000 since the epoch
    ]
    assert table["value"].dtype == np.float64 and table["encounter"].tolist() == [0, 0, 0, -1]
    for column in LABELS:
        assert isinstance(table[column].dtype, pd.CategoricalDtype), column
    assert list(table["kind"].cat.categories) == list(EVENT_KINDS)  # every kind, seen or not


def test_event_table_labels_each_row_from_the_names() -> None:
    table = event_table(EVENTS, PATIENT, NAMES)
    rows = table[LABELS].astype(object)
    rows = rows.where(rows.notna(), None)
    assert rows.to_dict("records") == [
        {
            "kind": "encounter_start",
            "system": "http://snomed.info/sct",
            "code": "50849002",
            "display": "Emergency room admission (procedure)",
            "unit": None,
            "category": None,
            "encounter_class": "emergency",
            "reason": "flu",
            "module": "flu",
            "state": "er_visit",
        },
        {
            "kind": "observation",
            "system": "http://loinc.org",
            "code": "8310-5",
            "display": "Body temperature",
            "unit": "Cel",
            "category": "vital-signs",
            "encounter_class": None,  # the subject of an observation is its observable, not a class
            "reason": None,
            "module": "flu",
            "state": "er_visit",
        },
        {
            "kind": "encounter_end",
            "system": "http://snomed.info/sct",
            "code": "50849002",
            "display": "Emergency room admission (procedure)",
            "unit": None,
            "category": None,
            "encounter_class": "emergency",
            "reason": None,
            "module": "flu",
            "state": "recovering",
        },
        {
            "kind": "death",
            "system": "http://snomed.info/sct",
            "code": "419620001",
            "display": "Death (event)",
            "unit": None,
            "category": None,
            "encounter_class": None,
            "reason": None,
            "module": None,  # background death: no state emitted it
            "state": None,
        },
    ]
    assert table["value"].iloc[1] == 38.9 and table["value"].drop(index=1).isna().all()


def test_an_empty_buffer_gives_an_empty_table_with_the_same_columns() -> None:
    empty = Events(*(np.zeros(0, column.dtype) for column in EVENTS))
    table = event_table(empty, np.zeros(0, np.int64), NAMES)
    assert tuple(table.columns) == EVENT_COLUMNS and len(table) == 0
    assert list(table["kind"].cat.categories) == list(EVENT_KINDS)


def test_labelled_shares_a_category_between_ids_with_the_same_label() -> None:
    """Two codes can share a display: one category, both ids point to it; -1 is missing."""
    labels = labelled(np.array([2, 0, -1, 1]), ("Fever", "Cough", "Fever"))
    assert list(labels.categories) == ["Cough", "Fever"]
    assert labels.tolist()[:2] == ["Fever", "Fever"] and pd.isna(labels[2]) and labels[3] == "Cough"
    assert labelled(np.array([-1, -1]), ()).isna().all()  # nothing to name
