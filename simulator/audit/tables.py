"""The tables of a written run that the audit reads, a block of patients at a time: every rule is about one
patient's record, so a large run is audited in blocks with bounded memory."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.parquet as pq

from simulator.model.calendar import Calendar
from simulator.model.schema import Names
from simulator.teaching.record import RunRecord

# The columns the checks read, by table (rules name their time columns among these).
COLUMNS: dict[str, list[str]] = {
    "patients": ["index", "id", "birth_time", "sex", "state", "city", "death_time", "death_cause_code", "is_decedent"],
    "encounters": ["patient", "id", "start_time", "end_time", "encounter_class", "discharge_disposition"],
    "conditions": [
        "patient",
        "system",
        "code",
        "display",
        "onset_time",
        "diagnosis_time",
        "resolution_time",
        "diagnosis_encounter_id",
    ],
    "observations": [
        "patient",
        "time",
        "system",
        "code",
        "display",
        "value",
        "unit",
        "encounter_id",
        "module",
        "state",
        "issued_time",
    ],
    "medications": ["patient", "start_time", "stop_time", "system", "code", "display", "encounter_id"],
    "procedures": ["patient", "time", "system", "code", "display", "encounter_id"],
    "immunizations": ["patient", "time", "system", "code", "display", "encounter_id"],
    "symptoms": ["patient", "time", "reported_time", "system", "code", "display", "encounter_id"],
}
# Columns only some runs write (issued_time: a run with a messy-data profile; discharge_disposition: a run
# written since hospital stays carry one); read where the run has them.
OPTIONAL = {"issued_time", "discharge_disposition"}
BLOCK_PATIENTS = 2_000  # patients audited at once (Parquet; a CSV run is read whole): 2,000 lifetimes peak at 1.1 GB


@dataclass(frozen=True)
class AuditTables:
    """The tables of some patients of a run, by name (those of COLUMNS, with at least the columns a check
    reads), the calendar of introduction years (None: the introduction_year kind cannot check) and the
    IANA time zone of each city addresses are drawn in, by "City, ST" (rules/names.yaml); the library's
    `terminology`, display by (system URI, code) (None: the known_codes kind cannot check)."""

    tables: dict[str, pd.DataFrame]
    calendar: Calendar | None = None
    time_zones: dict[str, str] = field(default_factory=dict)
    terminology: dict[tuple[str, str], str] | None = None

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def patient_column(self, column: str, patient: pd.Series) -> pd.Series:
        """`patients[column]` of each row's patient (index aligned with `patient`)."""
        values = self.tables["patients"].set_index("index")[column]
        return pd.Series(values.reindex(patient.to_numpy()).array, index=patient.index, name=column)


def city_time_zones(names: Names) -> dict[str, str]:
    """The time zone of each city of the names' addresses, by "City, ST" (as the patients table writes them)."""
    return {f"{c.city}, {c.state}": c.time_zone for c in names.cities}


def _columns(run: RunRecord, name: str) -> list[str]:
    """The columns of COLUMNS[name] to read from the run: the optional ones only where the run wrote them."""
    optional = [c for c in COLUMNS[name] if c in OPTIONAL]
    if not optional:
        return COLUMNS[name]
    if run.folder.name == "parquet":
        written = set(pq.read_schema(run.folder / f"{name}.parquet").names)
    else:
        with open(run.folder / f"{name}.csv", encoding="utf-8", newline="") as handle:
            written = set(next(csv.reader(handle), []))  # the header, its names quoted as Arrow writes them
    return [c for c in COLUMNS[name] if c not in OPTIONAL or c in written]


def blocks(
    run: RunRecord,
    calendar: Calendar | None,
    time_zones: dict[str, str],
    block_patients: int = BLOCK_PATIENTS,
    terminology: dict[tuple[str, str], str] | None = None,
) -> Iterator[AuditTables]:
    """The run's tables, `block_patients` patients at a time (all at once from CSV, which reads whole)."""
    patients = run.table("patients")  # whole (a row a patient): a run written before decedents lacks is_decedent
    patients = patients[[c for c in COLUMNS["patients"] if c in patients]].sort_values("index", kind="stable")
    indexes = patients["index"].to_numpy()
    size = block_patients if run.folder.name == "parquet" else max(len(indexes), 1)
    for start in range(0, max(len(indexes), 1), size):
        wanted = indexes[start : start + size].tolist()
        tables = {"patients": patients.iloc[start : start + size].reset_index(drop=True)}
        for name in COLUMNS:
            if name != "patients":
                tables[name] = run.table(name, None if size >= len(indexes) else wanted, columns=_columns(run, name))
        yield AuditTables(tables, calendar, time_zones, terminology)
