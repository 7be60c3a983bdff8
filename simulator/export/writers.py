"""Writing a run chunk by chunk: FHIR ndjson and bundles, CSV and Parquet tables.

Every output directory (`fhir/`, `bundles/`, `csv/`, `parquet/`) is written under a hidden staging
name (`.fhir.partial/`) and renamed only when the whole run is done, so an interrupted run leaves
nothing that looks finished. Every file is counted and hashed (SHA-256) as it is written, for the
run manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import csv

from simulator.export.bundles import Method, patient_bundles, shared_entries
from simulator.export.clinical_tables import TABLES, build_tables
from simulator.export.fhir_resources import TEXT, References, build_resources, shared_resources, text_bytes
from simulator.export.ids import fhir_datetime_text
from simulator.model.library import Library
from simulator.model.schema import CODE_SYSTEMS


@dataclass(frozen=True)
class ExportContext:
    """What the exporters need from the library: condition codes (for encounter reasons) and the
    displays of the CDC race and ethnicity codes."""

    condition_codes: dict[str, tuple[str, str, str]]
    displays: dict[str, str]

    @classmethod
    def from_library(cls, library: Library) -> ExportContext:
        conditions = {
            name: (CODE_SYSTEMS[c.code.system], c.code.code, c.code.display)
            for module in library.modules
            for name, c in module.conditions.items()
        }
        categories = [*library.demographics.race, *library.demographics.ethnicity]
        return cls(conditions, {c.code.code: c.code.display for c in categories})


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file under a hidden temporary name, then rename it."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


@dataclass
class _File:
    """An output file written in pieces, counted and hashed on the way."""

    path: Path
    unit: str  # "rows" or "resources"
    count: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    def __post_init__(self) -> None:
        self.handle = open(self.path, "wb")  # noqa: SIM115 (closed in close())

    def write(self, data: bytes | pa.Buffer, count: int) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.count += count

    def close(self) -> None:
        self.handle.close()


class Staging:
    """One output directory, written under `.<name>.partial/` and renamed when complete."""

    def __init__(self, out: Path, name: str):
        self.final = out / name
        self.dir = out / f".{name}.partial"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.files: dict[str, dict] = {}

    def record(self, name: str, unit: str, count: int, data_path: Path, sha256: str) -> None:
        entry = {unit: count, "bytes": data_path.stat().st_size, "sha256": sha256}
        self.files[f"{self.final.name}/{name}"] = entry

    def finish(self) -> None:
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.final, old)
            os.replace(self.dir, self.final)
            shutil.rmtree(old)
        else:
            os.replace(self.dir, self.final)

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class NdjsonWriter:
    """FHIR Bulk Data output: one `<Type>.ndjson` per resource type and a Bulk export manifest."""

    def __init__(self, out: Path, request: str):
        self.staging = Staging(out, "fhir")
        self.request = request
        self.files: dict[str, _File] = {}
        try:
            for resource in shared_resources(References(urn=False)).values():
                self._append(resource["resourceType"], pa.array([orjson.dumps(resource).decode() + "\n"], TEXT))
        except BaseException:
            self.abort()
            raise

    def _append(self, resource_type: str, text: pa.Array) -> None:
        """One write per type and chunk: the bytes of the text column (each row ends with a newline)."""
        if not len(text):
            return
        if resource_type not in self.files:
            self.files[resource_type] = _File(self.staging.dir / f"{resource_type}.ndjson", "resources")
        self.files[resource_type].write(text_bytes(text), len(text))

    def write(self, resources: dict) -> None:
        for resource_type, group in resources.items():
            self._append(resource_type, group.sorted_json())

    def finish(self) -> dict[str, dict]:
        output = []
        for resource_type, file in sorted(self.files.items()):
            file.close()
            self.staging.record(file.path.name, "resources", file.count, file.path, file.digest.hexdigest())
            output.append({"type": resource_type, "url": file.path.name, "count": file.count})
        manifest = {
            "transactionTime": datetime.now(UTC).isoformat(timespec="seconds"),
            "request": self.request,
            "requiresAccessToken": False,
            "output": output,
            "error": [],
        }
        path = self.staging.dir / "manifest.json"
        data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
        path.write_bytes(data)
        self.staging.record(path.name, "files", len(output), path, hashlib.sha256(data).hexdigest())
        self.staging.finish()
        return self.staging.files

    def abort(self) -> None:
        for file in self.files.values():
            with contextlib.suppress(OSError):  # a full disk fails the flush too; the files go anyway
                file.close()
        self.staging.abort()


class BundleWriter:
    """One transaction Bundle per patient: `bundles/<patient id>.json`."""

    def __init__(self, out: Path, method: Method):
        self.staging = Staging(out, "bundles")
        self.method = method
        self.shared = shared_entries(shared_resources(References(urn=True)), method)

    def write(self, resources: dict) -> None:
        for patient_id, n_entries, pieces in patient_bundles(resources, self.shared, self.method):
            path = self.staging.dir / f"{patient_id}.json"
            digest = hashlib.sha256()
            with open(path, "wb") as handle:
                for piece in pieces:
                    handle.write(piece)
                    digest.update(piece)
            self.staging.record(path.name, "resources", n_entries, path, digest.hexdigest())

    def finish(self) -> dict[str, dict]:
        self.staging.finish()
        return self.staging.files

    def abort(self) -> None:
        self.staging.abort()


def _arrow_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns as pandas strings, so a chunk where a column is all missing keeps its type."""
    objects = [c for c in frame.columns if frame[c].dtype == object]
    return frame.astype(dict.fromkeys(objects, "string")) if objects else frame


def arrow_tables(tables: dict[str, pd.DataFrame]) -> dict[str, pa.Table]:
    """The tables as Arrow tables, converted once for both CSV and Parquet."""
    return {name: pa.Table.from_pandas(_arrow_ready(frame), preserve_index=False) for name, frame in tables.items()}


def _csv_bytes(table: pa.Table, header: bool) -> bytes:
    """CSV text of a table through Arrow's writer (several times faster than pandas'): times as
    ISO 8601 text with milliseconds and 'Z' ('' where missing), categories as their text."""
    for i, column in enumerate(table.columns):
        if pa.types.is_timestamp(column.type):
            text = fhir_datetime_text(pd.DatetimeIndex(column.to_numpy(), tz="UTC")).fill_null("")
            table = table.set_column(i, table.field(i).name, text)
        elif pa.types.is_dictionary(column.type):
            table = table.set_column(i, table.field(i).name, column.cast(pa.string()))
    sink = pa.BufferOutputStream()
    csv.write_csv(table, sink, csv.WriteOptions(include_header=header, quoting_style="needed"))
    return sink.getvalue().to_pybytes()


class TableWriter:
    """patients, events and the per-type tables as CSV (`csv/<table>.csv`) or Parquet."""

    def __init__(self, out: Path, kind: str):
        self.staging = Staging(out, kind)
        self.kind = kind
        self.csv: dict[str, _File] = {}
        self.parquet: dict[str, pq.ParquetWriter] = {}
        self.rows: dict[str, int] = {}

    def write(self, tables: dict[str, pa.Table]) -> None:
        for name, table in tables.items():
            if self.kind == "csv":
                first = name not in self.csv
                if first:
                    self.csv[name] = _File(self.staging.dir / f"{name}.csv", "rows")
                self.csv[name].write(_csv_bytes(table, header=first), len(table))
            else:
                if name not in self.parquet:
                    self.parquet[name] = pq.ParquetWriter(self.staging.dir / f"{name}.parquet", table.schema)
                else:
                    table = table.cast(self.parquet[name].schema)
                self.parquet[name].write_table(table)
            self.rows[name] = self.rows.get(name, 0) + len(table)

    def finish(self) -> dict[str, dict]:
        for file in self.csv.values():
            file.close()
            self.staging.record(file.path.name, "rows", file.count, file.path, file.digest.hexdigest())
        for name, writer in self.parquet.items():
            writer.close()
            path = self.staging.dir / f"{name}.parquet"
            self.staging.record(path.name, "rows", self.rows[name], path, _sha256(path))
        self.staging.finish()
        return self.staging.files

    def abort(self) -> None:
        for file in self.csv.values():
            with contextlib.suppress(OSError):
                file.close()
        for writer in self.parquet.values():
            with contextlib.suppress(OSError):
                writer.close()
        self.staging.abort()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Patients whose FHIR resources are built at once: the columns of text of a few hundred patients
# stay small (faster, less memory) and the output is the same whatever the slice, as ids and
# order depend only on the patient and the row within the patient.
FHIR_SLICE = 500


def _patient_slices(
    patients: pd.DataFrame, events: pd.DataFrame, size: int
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """The chunk's patients (and their events, sorted by patient) `size` at a time, in order;
    one empty slice for an empty chunk."""
    starts = np.searchsorted(events["patient"].to_numpy(), patients["index"].to_numpy()[::size]).tolist()
    bounds = [*starts, len(events)] if len(patients) else [0, len(events)]
    for k in range(len(bounds) - 1):
        yield (
            patients.iloc[k * size : (k + 1) * size].reset_index(drop=True),
            events.iloc[bounds[k] : bounds[k + 1]].reset_index(drop=True),
        )


class Export:
    """All requested outputs of a run, fed chunk by chunk."""

    def __init__(
        self, out: Path, formats: tuple[str, ...], context: ExportContext, request: str, method: Method = "POST"
    ):
        self.context = context
        self.ndjson: NdjsonWriter | None = None
        self.bundles: BundleWriter | None = None
        self.tables: list[TableWriter] = []
        self.writers: list[NdjsonWriter | BundleWriter | TableWriter] = []
        try:  # a writer that cannot start (full disk, unwritable --out) removes those already started
            if "ndjson" in formats:
                self.ndjson = NdjsonWriter(out, request)
                self.writers.append(self.ndjson)
            if "bundles" in formats:
                self.bundles = BundleWriter(out, method)
                self.writers.append(self.bundles)
            for kind in ("csv", "parquet"):
                if kind in formats:
                    self.tables.append(TableWriter(out, kind))
                    self.writers.append(self.tables[-1])
        except BaseException:
            self.abort()
            raise
        self.resource_counts: dict[str, int] = {}

    def write(self, patients: pd.DataFrame, events: pd.DataFrame) -> None:
        """Tables of the whole chunk (CSV, Parquet); FHIR resources a slice of patients at a time."""
        if self.tables:
            tables = build_tables(patients, events, self.context.condition_codes)
            arrow = arrow_tables({"patients": patients, "events": events, **{name: tables[name] for name in TABLES}})
            for writer in self.tables:
                writer.write(arrow)
            del tables, arrow  # each output's intermediates are freed before the next is built
        if self.ndjson or self.bundles:
            for some_patients, their_events in _patient_slices(patients, events, FHIR_SLICE):
                self._write_fhir(some_patients, their_events)

    def _write_fhir(self, patients: pd.DataFrame, events: pd.DataFrame) -> None:
        tables = build_tables(patients, events, self.context.condition_codes)
        if self.ndjson:
            resources = build_resources(patients, tables, self.context.displays, References(urn=False, line_end="\n"))
            self.ndjson.write(resources)
            self._count(resources)
            del resources
        if self.bundles:
            resources = build_resources(patients, tables, self.context.displays, References(urn=True))
            self.bundles.write(resources)
            if not self.ndjson:
                self._count(resources)

    def _count(self, resources: dict) -> None:
        for resource_type, group in resources.items():
            self.resource_counts[resource_type] = self.resource_counts.get(resource_type, 0) + len(group.json)

    def finish(self) -> dict[str, dict]:
        files: dict[str, dict] = {}
        for writer in self.writers:
            files.update(writer.finish())
        return files

    def abort(self) -> None:
        for writer in self.writers:
            writer.abort()
