"""Kernel event buffers -> the columnar event table (pandas), with names and codes attached."""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.days import to_datetime
from simulator.engine.codes import EVENT_KINDS, K_ENCOUNTER_END, K_ENCOUNTER_START, K_OBSERVATION
from simulator.engine.compiler import Names
from simulator.engine.kernel import Events
from simulator.model.schema import CODE_SYSTEMS, ENCOUNTER_CLASSES

EVENT_COLUMNS = (
    "patient",
    "time",
    "kind",
    "system",
    "code",
    "display",
    "value",
    "unit",
    "category",
    "encounter",
    "encounter_class",
    "reason",
    "module",
    "state",
)


def labelled(index: np.ndarray, labels: list[str] | tuple[str, ...]) -> pd.Categorical:
    """A categorical from integer ids (-1: missing) and the label of each id (labels may repeat)."""
    unique, inverse = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    codes = np.where(index >= 0, inverse[np.maximum(index, 0)], -1) if len(labels) else np.full(len(index), -1)
    return pd.Categorical.from_codes(codes, unique.tolist())


def event_table(events: Events, patient: np.ndarray, names: Names) -> pd.DataFrame:
    """One row per event, in patient then emission order (which is time order within a patient).

    `encounter` is the patient's encounter number; `encounter_class` is filled on encounter rows;
    `unit` and `category` on observations; `reason` is the condition an encounter is for.
    """
    kind = events.kind.astype(np.int64)
    code = events.code.astype(np.int64)
    state = events.state.astype(np.int64)
    subject = events.subject.astype(np.int64)
    observable = np.where(kind == K_OBSERVATION, subject, -1)
    is_encounter = (kind == K_ENCOUNTER_START) | (kind == K_ENCOUNTER_END)
    state_module = [s.split(".", 1)[0] for s in names.states]
    return pd.DataFrame(
        {
            "patient": patient,
            "time": to_datetime(events.t),
            "kind": pd.Categorical.from_codes(kind, EVENT_KINDS),
            "system": labelled(code, [CODE_SYSTEMS[c.system] for c in names.codes]),
            "code": labelled(code, [c.code for c in names.codes]),
            "display": labelled(code, [c.display for c in names.codes]),
            "value": events.value,
            "unit": labelled(observable, names.observable_units),
            "category": labelled(observable, names.observable_categories),
            "encounter": events.encounter,
            "encounter_class": labelled(np.where(is_encounter, subject, -1), ENCOUNTER_CLASSES),
            "reason": labelled(events.reason.astype(np.int64), names.conditions),
            "module": labelled(state, state_module),
            "state": labelled(state, names.state_names),
        }
    )
