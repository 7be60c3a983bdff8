"""A record of the last years (`--history YEARS`): the clinical tables cut to a window before each record's
end, with what a real chart carries from before it.

Each patient's record ends at death, else at the end of the simulated world (`world_end`, or the record's
last entry if later: a lifetime run's survivors). The window is the `years` before that end. Kept:

- every row of the window: encounters that had not ended before it starts (a hospital stay is kept whole
  when any of its segments is: its segments point to its admission), observations, symptoms, procedures;
- from before it, as a chart carries them: conditions not resolved before the window and medication courses
  not stopped before it (with their original dates), every immunization, the procedures of
  rules/history.yaml (all, or a patient's first of a code), the latest reading of each of its observation
  codes when the window holds none of that code; deaths.

Encounters before the window go, even those a carried row was recorded in: a carried row keeps its dates and
loses its encounter (and any Condition reference to an episode that is not kept), so nothing references a
row the record does not hold. A pure function of the tables, so every exporter and `ehrsim audit` see the
same record; ids are those of the full record (a windowed record is a subset of it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.days import DAYS_PER_YEAR
from simulator.export.ids import utc_ms
from simulator.model.record_rules import HistoryRules


@dataclass(frozen=True)
class RecordWindow:
    """`--history YEARS`: the `years` each record keeps, the end of the simulated world (the record end of
    the living) and what a record carries from before its window (rules/history.yaml)."""

    years: float
    world_end: np.datetime64
    rules: HistoryRules


# Columns that hold the id of an encounter or of a condition episode, by table.
ENCOUNTER_REFERENCES = ("encounter_id", "onset_encounter_id", "diagnosis_encounter_id", "part_of_encounter_id")
CONDITION_REFERENCES = ("reason_condition_id",)
_MS_PER_YEAR = DAYS_PER_YEAR * 86_400_000


def record_ends(patients: pd.DataFrame, latest: pd.Series, world_end: np.datetime64) -> pd.Series:
    """Each patient's record end (datetime64[ms], indexed by patient index): death, else the later of
    `world_end` and the record's `latest` entry (`clinical_tables.last_recorded`)."""
    death = utc_ms(patients["death_time"])
    latest = latest.to_numpy().astype("datetime64[ms]")
    alive = np.maximum(latest, np.datetime64(world_end, "ms"))
    return pd.Series(np.where(np.isnat(death), alive, death), index=patients["index"].to_numpy())


def window_starts(patients: pd.DataFrame, latest: pd.Series, world_end: np.datetime64, years: float) -> pd.Series:
    """Each patient's window start: `years` before the record end (datetime64[ms], by patient index)."""
    ends = record_ends(patients, latest, world_end)
    return ends - np.timedelta64(round(years * _MS_PER_YEAR), "ms")


def keep_history(
    patients: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    latest: pd.Series,
    window: RecordWindow,
) -> dict[str, pd.DataFrame]:
    """The tables of the last `window.years` of each record, with what it carries from before (module
    docstring); `latest`: each record's last entry (`clinical_tables.last_recorded`)."""
    rules = window.rules
    starts = window_starts(patients, latest, window.world_end, window.years)

    def start_of(frame: pd.DataFrame) -> np.ndarray:
        return starts.reindex(frame["patient"].to_numpy()).to_numpy().astype("datetime64[ms]")

    def not_before(frame: pd.DataFrame, column: str) -> np.ndarray:
        """Rows whose `column` is missing (still open) or not before the window."""
        times = utc_ms(frame[column])
        return np.isnat(times) | (times >= start_of(frame))

    kept = {
        "encounters": _encounters(tables["encounters"], not_before(tables["encounters"], "end_time")),
        "conditions": not_before(tables["conditions"], "resolution_time"),
        "medications": not_before(tables["medications"], "stop_time"),
        "immunizations": np.ones(len(tables["immunizations"]), bool),
        "procedures": not_before(tables["procedures"], "time") | _carried_procedures(tables["procedures"], rules),
        "observations": _observations(tables["observations"], not_before(tables["observations"], "time"), rules),
        "symptoms": not_before(tables["symptoms"], "time"),
        "deaths": np.ones(len(tables["deaths"]), bool),
    }
    out = {name: tables[name][kept[name]].reset_index(drop=True) for name in kept}
    return _without_dangling(out)


def _encounters(encounters: pd.DataFrame, in_window: np.ndarray) -> np.ndarray:
    """Encounters of the window, with every segment of a hospital stay any of whose segments is in it."""
    ids = encounters["id"].to_numpy(dtype=object)
    part_of = encounters["part_of_encounter_id"].to_numpy(dtype=object)
    stay = np.where(pd.isna(part_of), ids, part_of)  # an emergency visit points to its admission: also kept
    stays = pd.Index(stay[in_window]).unique()
    return in_window | (stays.get_indexer(stay) >= 0) | (stays.get_indexer(ids) >= 0)


def _carried_procedures(procedures: pd.DataFrame, rules: HistoryRules) -> np.ndarray:
    """The procedures of the rules: every one of a code, or the patient's first of a `first` code."""
    codes = procedures["code"].astype(object).to_numpy()
    every = [p.code.code for p in rules.procedures if not p.first]
    first = [p.code.code for p in rules.procedures if p.first]
    is_first = ~procedures.duplicated(["patient", "system", "code"]).to_numpy()
    return np.isin(codes, every) | (np.isin(codes, first) & is_first)


def _observations(observations: pd.DataFrame, in_window: np.ndarray, rules: HistoryRules) -> np.ndarray:
    """The window's observations, and the latest before it of each carried code the window lacks."""
    rows = np.flatnonzero(observations["code"].astype(object).isin(rules.observations).to_numpy())
    carried = pd.DataFrame(
        {
            "patient": observations["patient"].to_numpy()[rows],
            "code": observations["code"].cat.codes.to_numpy()[rows],
            "in_window": in_window[rows],
        }
    )
    window_has = carried.groupby(["patient", "code"], sort=False)["in_window"].transform("any").to_numpy()
    before = carried[~window_has]
    # rows are in time order within a patient: the last of each (patient, code) is the latest reading
    latest = before.drop_duplicates(["patient", "code"], keep="last").index.to_numpy()
    kept = in_window.copy()
    kept[rows[latest]] = True
    return kept


def _without_dangling(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables with every reference to an encounter or episode that is not kept emptied (None)."""
    targets = {
        ENCOUNTER_REFERENCES: pd.Index(tables["encounters"]["id"].to_numpy(dtype=object)),
        CONDITION_REFERENCES: pd.Index(tables["conditions"]["id"].to_numpy(dtype=object)),
    }
    for frame in tables.values():
        for columns, ids in targets.items():
            for column in columns:
                if column in frame:
                    values = frame[column].to_numpy(dtype=object)
                    gone = ~pd.isna(values) & (ids.get_indexer(values) < 0)
                    if gone.any():
                        frame[column] = pd.Series(np.where(gone, None, values), index=frame.index, dtype=object)
    return tables
