"""A generated population as tables: in memory, or read back from a run's output folder."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd


@dataclass
class Population:
    """A generated population: `patients` and `events` DataFrames and the run manifest.

    When the run was written to disk, the tables are read back on first use from
    `out/parquet/` (or `out/csv/` when only CSV was written); a run written only as FHIR has no
    tables to read, and asking for them says so."""

    manifest: dict
    out: Path | None = None
    _patients: pd.DataFrame | None = None
    _events: pd.DataFrame | None = None

    @cached_property
    def patients(self) -> pd.DataFrame:
        return self._patients if self._patients is not None else self._read("patients")

    @cached_property
    def events(self) -> pd.DataFrame:
        return self._events if self._events is not None else self._read("events")

    def _read(self, name: str) -> pd.DataFrame:
        assert self.out is not None
        if (self.out / "parquet" / f"{name}.parquet").exists():
            return pd.read_parquet(self.out / "parquet" / f"{name}.parquet")
        if (self.out / "csv" / f"{name}.csv").exists():
            return pd.read_csv(self.out / "csv" / f"{name}.csv")
        raise FileNotFoundError(
            f"{self.out} holds no {name} table: this run wrote only FHIR; generate with formats including 'parquet'"
        )
