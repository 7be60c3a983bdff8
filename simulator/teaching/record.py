"""A written run read back: its manifest, the library it was made with, and its tables (Parquet, or CSV
typed by the data dictionary), whole or for some patients only."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path

import pandas as pd

from simulator.export.clinical_tables import TABLES
from simulator.export.writers import DATA_DICTIONARY
from simulator.model.library import Library
from simulator.model.loading import load_library

# The tables a run writes with `--format csv` or `parquet`, in the order the data dictionary lists them.
WRITTEN = ("patients", "events", *TABLES)


def data_dictionary() -> pd.DataFrame:
    """Every column of every table: table, column, type (integer, number, text, category, datetime),
    description. The one source of csv/data_dictionary.csv, docs/data-dictionary.md and CSV reading."""
    return pd.read_csv(DATA_DICTIONARY, dtype=str, keep_default_na=False)


def _csv_types(table: str) -> tuple[dict[str, str], list[str]]:
    """The pandas dtypes of a CSV table's columns and its datetime columns, from the data dictionary."""
    columns = data_dictionary().query("table == @table")
    dtypes = {"integer": "int64", "number": "float64", "text": "string", "category": "category", "boolean": "bool"}
    types = {c: dtypes[t] for c, t in zip(columns["column"], columns["type"], strict=True) if t != "datetime"}
    return types, columns.loc[columns["type"] == "datetime", "column"].tolist()


@dataclass
class RunRecord:
    """The output folder of `ehrsim generate`: `manifest.json` and the tables of `parquet/` (or `csv/`)."""

    path: Path
    manifest: dict
    folder: Path

    @classmethod
    def open(cls, path: str | Path) -> RunRecord:
        """The run in `path`; FileNotFoundError naming what is missing (no manifest, no tables)."""
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{path} holds no manifest.json: is it the --out folder of ehrsim generate?")
        for kind in ("parquet", "csv"):
            if (path / kind / f"patients.{kind}").is_file():
                return cls(path, json.loads(manifest_path.read_text()), path / kind)
        raise FileNotFoundError(
            f"{path} holds no tables: generate the run with --format including parquet (or csv), "
            "e.g. ehrsim generate --format ndjson,parquet"
        )

    @cached_property
    def library(self) -> Library:
        """The modules and rules the run was made with (as its manifest records them)."""
        config = self.manifest.get("config", {})
        modules, rules = config.get("modules_dir"), config.get("rules_dir")
        return load_library(Path(modules) if modules else None, Path(rules) if rules else None)

    @property
    def reference_time(self) -> pd.Timestamp:
        """The end of the record of everyone alive: the run's reference date."""
        return pd.Timestamp(date.fromisoformat(self.manifest["config"]["reference_date"]), tz="UTC")

    @property
    def fhir_folder(self) -> Path | None:
        """`fhir/` when the run wrote FHIR Bulk ndjson."""
        folder = self.path / "fhir"
        return folder if (folder / "Patient.ndjson").is_file() else None

    def table(self, name: str, patients: Sequence[int] | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """A table, whole or only the rows of `patients` (patient indexes)."""
        key = "index" if name == "patients" else "patient"
        if self.folder.name == "parquet":
            wanted = None if patients is None else [(key, "in", [int(p) for p in patients])]
            return pd.read_parquet(self.folder / f"{name}.parquet", columns=columns, filters=wanted)
        types, times = _csv_types(name)
        frame = pd.read_csv(
            self.folder / f"{name}.csv",
            dtype={c: t for c, t in types.items() if columns is None or c in columns},
            usecols=columns,
            keep_default_na=False,
            na_values=[""],
        )
        for column in times:
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame if patients is None else frame[frame[key].isin(patients)].reset_index(drop=True)
