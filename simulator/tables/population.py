"""A generated population as tables: in memory, or read back from a run's output folder."""

from __future__ import annotations

import io
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
    _truth: dict[str, pd.DataFrame] | None = None

    @cached_property
    def truth(self) -> dict[str, pd.DataFrame]:
        """A run's ground truth, table name -> DataFrame: a scenario's (simulator.scenario.run.truth_tables),
        the messy-data pass's corruptions, the streams' artefacts (OUT/truth/)."""
        if self._truth is not None:
            return self._truth
        folder = None if self.out is None else self.out / "truth"
        if folder is None or not folder.is_dir():
            raise FileNotFoundError("this run holds no ground truth (--scenario, --messiness or --streams write it)")
        return {path.stem: pd.read_parquet(path) for path in sorted(folder.glob("*.parquet"))}

    @cached_property
    def weights(self) -> pd.Series:
        """Each patient's importance weight against the unconditioned model (a scenario run's), by patient."""
        weights = self.truth["weights"]
        return pd.Series(weights["weight"].to_numpy(), index=weights["patient"].to_numpy(), name="weight")

    @cached_property
    def patients(self) -> pd.DataFrame:
        return self._patients if self._patients is not None else self._read("patients")

    @cached_property
    def events(self) -> pd.DataFrame:
        return self._events if self._events is not None else self._read("events")

    def _read(self, name: str) -> pd.DataFrame:
        """The table's file, or its parts in order (a run written by a Dask cluster: `simulator.cluster`;
        only the first CSV part has the header)."""
        assert self.out is not None
        if parts := _files(self.out / "parquet", name, ".parquet"):
            return pd.concat([pd.read_parquet(part) for part in parts], ignore_index=True)
        if parts := _files(self.out / "csv", name, ".csv"):
            return pd.read_csv(io.BytesIO(b"".join(part.read_bytes() for part in parts)))
        raise FileNotFoundError(
            f"{self.out} holds no {name} table: this run wrote only FHIR; generate with formats including 'parquet'"
        )


def _files(folder: Path, name: str, suffix: str) -> list[Path]:
    """`folder/<name><suffix>`, else its parts `<name>.<part><suffix>` in order."""
    whole = folder / f"{name}{suffix}"
    return [whole] if whole.exists() else sorted(folder.glob(f"{name}.[0-9]*{suffix}"))
