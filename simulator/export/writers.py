"""Writing a run chunk by chunk: FHIR ndjson and bundles, CSV and Parquet tables, in `--out`.

Every output directory (`fhir/`, `bundles/`, `csv/`, `parquet/`) is written under a hidden partial name
(`.fhir.partial/`, see `simulator.files`) and put in place only when the whole run is done, so an
interrupted run leaves nothing that looks finished. Every file is counted and hashed (SHA-256) as it is
written (in a background thread, `simulator.export.background`, in order), for the run manifest
(`manifest.json`), which lists every file of the run: the next run into the same folder removes exactly
those (`OutputFolder`) and never a file that no ehrsim manifest lists.

A run spread over processes (`simulator.cluster`) writes each range of patients as a `Part`: its files
carry the part's number (`fhir/Patient.000.ndjson`, `csv/patients.000.csv`, `parquet/patients.000.parquet`)
and are written in a folder of their own inside the partial folder, moved beside the other parts when
the part is complete; concatenated in order, a type's or table's parts are the bytes of the one-process
file (Parquet parts: the same rows, each part a file of its own).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import csv

from simulator.errors import ConfigError
from simulator.export.background import Background
from simulator.export.bundles import SHARED_BUNDLE, Method, patient_bundles, shared_bundle
from simulator.export.clinical_tables import TABLES, build_tables
from simulator.export.compression import SUFFIXES, Compressor
from simulator.export.context import ExportContext
from simulator.export.directory import SHARED_TYPES, Directory
from simulator.export.fhir_resources import build_resources
from simulator.export.fhir_text import TEXT, References, text_bytes
from simulator.export.ids import fhir_datetime_text
from simulator.export.messiness import CORRUPTION_COLUMNS, corrupt
from simulator.files import (
    abort_directory,
    ensure_free,
    finish_directory,
    incoming,
    partial_path,
    remove_files,
    start_directory,
    write_atomic,
)

FOLDERS = {"ndjson": "fhir", "bundles": "bundles", "csv": "csv", "parquet": "parquet"}  # format -> folder
TRUTH = "truth"  # the ground truth of a run (`Export.truth_staging`)
SCENARIO_TRUTH_TABLES = ("weights", "states", "onsets", "forced", "attributes")  # simulator.scenario.output
RUN_MANIFEST = "manifest.json"
WRITTEN_TABLES = ("patients", "events", *TABLES)
# Every column of every table, described: written as csv/data_dictionary.csv beside the CSV tables
# (docs/data-dictionary.md is made from it too).
DATA_DICTIONARY = Path(__file__).with_name("data_dictionary.csv")


@dataclass
class _File:
    """An output file written in pieces, counted and hashed on the way; compressed (gzip or zstd) when
    `compress` says so (`simulator.export.compression`): the count is of what was written, the size and
    hash of the file's bytes. The pieces are compressed, written and hashed by the run's `background`
    thread, in order; `close` queues the end of the file, and the digest is the file's once the
    background is drained."""

    path: Path
    unit: str  # "rows" or "resources"
    background: Background
    compress: str | None = None
    count: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    def __post_init__(self) -> None:
        self.handle = open(self.path, "wb")  # noqa: SIM115 (closed in close() or abort())
        self.compressor = Compressor(self.compress) if self.compress else None

    def write(self, data: bytes | pa.Buffer | list[pa.Buffer], count: int) -> None:
        """Write `data` (or its pieces, one after the other), which holds `count` rows or resources."""
        pieces = data if isinstance(data, list) else [data]
        self.write_later(lambda: pieces, sum(map(len, pieces)), count)

    def write_later(self, make: Callable[[], list[bytes | pa.Buffer]], size: int, count: int) -> None:
        """Write the pieces `make` returns, made in the background thread too (CSV text, say); `size`:
        about the bytes they hold."""
        self.background.submit(lambda: self._put_pieces(make()), size)
        self.count += count

    def _put_pieces(self, pieces: list[bytes | pa.Buffer]) -> None:
        for piece in pieces:
            self._put(self.compressor.write(piece) if self.compressor else piece)

    def _put(self, data: bytes | pa.Buffer) -> None:
        self.handle.write(data)
        self.digest.update(data)

    def close(self) -> None:
        """Queue the end of the file (the compressor's last bytes) and its closing."""
        self.background.submit(self._finish, 0)

    def _finish(self) -> None:
        if self.compressor and not self.handle.closed:
            self._put(self.compressor.finish())
        self.handle.close()

    def abort(self) -> None:
        """Close the file at once (after the background thread has stopped)."""
        with contextlib.suppress(OSError):  # a full disk fails the flush too; the files go anyway
            self.handle.close()


@dataclass(frozen=True)
class Part:
    """A range of a run's patients written by one task of a distributed run: `name` goes into its file
    names ("000"); the `first` part also writes what a file starts with (the shared resources of the
    provider directory, the CSV header)."""

    name: str
    first: bool


@dataclass
class Staging:
    """One output directory, written under `.<name>.partial/` and put in place when the run is complete
    (`publish`); the files written in it, with their counts and checksums, for the run manifest. A `Part`
    writes in a folder of its own inside (`.<name>.partial/.000-<random>/`) and moves its files up when
    complete (`commit`), so a task that fails or runs twice leaves no part file half-written."""

    final: Path
    dir: Path
    part: Part | None = None
    files: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def start(cls, out: Path, name: str, part: Part | None = None) -> Staging:
        """A new partial directory for `out/name` (a part: a folder of its own in the existing one)."""
        final = out / name
        if part is None:
            return cls(final, start_directory(final))
        attempt = partial_path(final) / f".{part.name}-{uuid.uuid4().hex}"
        try:
            attempt.mkdir()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{partial_path(final)}: missing here; every worker of a distributed run must see the output "
                "folder of the client (a shared folder)"
            ) from None
        return cls(final, attempt, part)

    def name(self, stem: str, suffix: str) -> str:
        """A file's name: `Patient` `.ndjson` -> `Patient.ndjson`, in a part `Patient.000.ndjson`."""
        return f"{stem}.{self.part.name}{suffix}" if self.part else f"{stem}{suffix}"

    def record(self, name: str, unit: str, count: int, data_path: Path, sha256: str) -> None:
        entry = {unit: count, "bytes": data_path.stat().st_size, "sha256": sha256}
        self.files[f"{self.final.name}/{name}"] = entry

    def commit(self) -> None:
        """A part's files moved up beside the other parts' (the same name again: a task that ran twice)."""
        if self.part is not None:
            for entry in sorted(self.dir.iterdir()):
                os.replace(entry, self.dir.parent / entry.name)
            self.dir.rmdir()

    def abort(self) -> None:
        if self.part is None:
            abort_directory(self.final)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def bulk_manifest(request: str, base_url: str, files: dict[str, dict]) -> bytes:
    """The Bulk Data export manifest of the ndjson `files` (run manifest entries `fhir/<name>`): one
    `output` entry per file, by type then part (the spec allows several files of a type)."""
    names = sorted((name.split("/")[1] for name in files), key=lambda n: (n.split(".")[0], n))
    output = [
        {"type": n.split(".")[0], "url": base_url + n, "count": files[f"{FOLDERS['ndjson']}/{n}"]["resources"]}
        for n in names
    ]
    manifest = {
        "transactionTime": datetime.now(UTC).isoformat(timespec="seconds"),
        "request": request,
        "requiresAccessToken": False,
        "output": output,
        "error": [],
    }
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2)


def write_finished(staging: Staging, name: str, data: bytes, unit: str, count: int) -> None:
    """A whole file written at the end of the run (a manifest), recorded."""
    path = staging.dir / name
    path.write_bytes(data)
    staging.record(name, unit, count, path, hashlib.sha256(data).hexdigest())


def write_data_dictionary(staging: Staging) -> None:
    """csv/data_dictionary.csv, beside the CSV tables."""
    data = DATA_DICTIONARY.read_bytes()
    write_finished(staging, DATA_DICTIONARY.name, data, "rows", len(data.splitlines()) - 1)


class NdjsonWriter:
    """FHIR Bulk Data output: one `<Type>.ndjson` per resource type (`.ndjson.gz` or `.ndjson.zst` with
    `compress`) and a Bulk export manifest (a part writes no manifest: the client of the run does)."""

    def __init__(
        self,
        out: Path,
        request: str,
        base_url: str,
        directory: Directory,
        background: Background,
        compress: str | None = None,
        part: Part | None = None,
    ):
        self.staging = Staging.start(out, "fhir", part)
        self.background = background
        self.request = request
        self.base_url = base_url
        self.compress = compress
        self.files: dict[str, _File] = {}
        try:
            for resource_type, resources in directory.resources.items() if part is None or part.first else ():
                self.append_text(resource_type, pa.array([orjson.dumps(r).decode() + "\n" for r in resources], TEXT))
        except BaseException:
            self.abort()
            raise

    def _append(self, resource_type: str, pieces: list[pa.Buffer], count: int) -> None:
        """One write per type and slice: the bytes of `count` resources, each ending with a newline."""
        if not count:
            return
        if resource_type not in self.files:
            suffix = ".ndjson" + (SUFFIXES[self.compress] if self.compress else "")
            path = self.staging.dir / self.staging.name(resource_type, suffix)
            self.files[resource_type] = _File(path, "resources", self.background, self.compress)
        self.files[resource_type].write(pieces, count)

    def append_text(self, resource_type: str, text: pa.Array) -> None:
        """Resources given as a text column (each row one resource ending with a newline), appended to the
        type's file (`fhir/<resource_type>.ndjson`)."""
        self._append(resource_type, [text_bytes(text)], len(text))

    def write(self, resources: dict) -> None:
        for resource_type, group in resources.items():
            self._append(resource_type, group.sorted_bytes(), len(group.ids))

    def close(self) -> dict[str, dict]:
        for file in self.files.values():
            file.close()
        self.background.drain()
        for _, file in sorted(self.files.items()):
            self.staging.record(file.path.name, "resources", file.count, file.path, file.digest.hexdigest())
        if self.staging.part is None:
            data = bulk_manifest(self.request, self.base_url, self.staging.files)
            write_finished(self.staging, "manifest.json", data, "files", len(self.staging.files))
        return self.staging.files

    def abort(self) -> None:
        """Remove what was written, once the background thread has stopped."""
        self.background.close()
        for file in self.files.values():
            file.abort()
        self.staging.abort()


# Bundles address a patient's resources by urn:uuid, and the shared resources, which the shared bundle puts in
# place first, by literal `Type/id`.
BUNDLE_REFERENCES = References(urn=True, literal=frozenset(SHARED_TYPES))


class BundleWriter:
    """The shared resources' batch (`bundles/00000000-0000-0000-shared.json`), then one transaction Bundle
    per patient (`bundles/<patient id>.json`), whose names sort in the order they load in."""

    def __init__(
        self, out: Path, method: Method, directory: Directory, background: Background, part: Part | None = None
    ):
        self.staging = Staging.start(out, "bundles", part)
        self.method = method
        self.background = background
        try:
            n_shared = sum(len(resources) for resources in directory.resources.values())
            if part is None or part.first:
                self._write(SHARED_BUNDLE, n_shared, (shared_bundle(directory.resources),))
        except BaseException:
            self.abort()
            raise

    def write(self, resources: dict) -> None:
        """The slice's bundles, written in the background thread (one job: the files of a slice are small)."""
        bundles = list(patient_bundles(resources, self.method))
        size = sum(len(piece) for _, _, pieces in bundles for piece in pieces)
        self.background.submit(lambda: self._write_all(bundles), size)

    def _write_all(self, bundles: list[tuple[str, int, tuple[bytes | memoryview, ...]]]) -> None:
        for patient_id, n_entries, pieces in bundles:
            self._write(f"{patient_id}.json", n_entries, pieces)

    def _write(self, name: str, n_entries: int, pieces: tuple[bytes | memoryview, ...]) -> None:
        path = self.staging.dir / name
        digest = hashlib.sha256()
        with open(path, "wb") as handle:
            for piece in pieces:
                handle.write(piece)
                digest.update(piece)
        self.staging.record(path.name, "resources", n_entries, path, digest.hexdigest())

    def close(self) -> dict[str, dict]:
        self.background.drain()
        return self.staging.files

    def abort(self) -> None:
        self.background.close()
        self.staging.abort()


def _arrow_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns as pandas strings, so a chunk where a column is all missing keeps its type."""
    objects = [c for c in frame.columns if frame[c].dtype == object]
    return frame.astype(dict.fromkeys(objects, "string")) if objects else frame


def arrow_tables(tables: dict[str, pd.DataFrame]) -> dict[str, pa.Table]:
    """The tables as Arrow tables, converted once for both CSV and Parquet."""
    return {name: pa.Table.from_pandas(_arrow_ready(frame), preserve_index=False) for name, frame in tables.items()}


def _csv_pieces(table: pa.Table, header: bool) -> list[bytes]:
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
    return [sink.getvalue()]


class TableWriter:
    """patients, events and the per-type tables as CSV (`csv/<table>.csv`) or Parquet. A part's CSV files
    have the header only in the first part."""

    def __init__(self, out: Path, kind: str, background: Background, part: Part | None = None):
        self.staging = Staging.start(out, kind, part)
        self.background = background
        self.header = part is None or part.first
        self.kind = kind
        self.csv: dict[str, _File] = {}
        self.parquet: dict[str, pq.ParquetWriter] = {}
        self.rows: dict[str, int] = {}

    def write(self, tables: dict[str, pa.Table]) -> None:
        for name, table in tables.items():
            if self.kind == "csv":
                first = name not in self.csv
                if first:
                    path = self.staging.dir / self.staging.name(name, ".csv")
                    self.csv[name] = _File(path, "rows", self.background)
                header = first and self.header
                make = partial(_csv_pieces, table, header)
                self.csv[name].write_later(make, table.nbytes, len(table))
            else:
                if name not in self.parquet:
                    path = self.staging.dir / self.staging.name(name, ".parquet")
                    self.parquet[name] = pq.ParquetWriter(path, table.schema)
                else:
                    table = table.cast(self.parquet[name].schema)
                self.background.submit(partial(self.parquet[name].write_table, table), table.nbytes)
            self.rows[name] = self.rows.get(name, 0) + len(table)

    def close(self) -> dict[str, dict]:
        for file in self.csv.values():
            file.close()
        self.background.drain()  # the CSV files' ends and the Parquet row groups written
        for file in self.csv.values():
            self.staging.record(file.path.name, "rows", file.count, file.path, file.digest.hexdigest())
        if self.kind == "csv" and self.staging.part is None:
            write_data_dictionary(self.staging)
        for name, writer in self.parquet.items():
            writer.close()
            path = self.staging.dir / self.staging.name(name, ".parquet")
            self.staging.record(path.name, "rows", self.rows[name], path, _sha256(path))
        return self.staging.files

    def abort(self) -> None:
        """Remove what was written, once the background thread has stopped."""
        self.background.close()
        for file in self.csv.values():
            file.abort()
        for writer in self.parquet.values():
            with contextlib.suppress(OSError):
                writer.close()
        self.staging.abort()


CORRUPTIONS_SCHEMA = pa.schema(
    [("patient", pa.int64()), *((name, pa.string()) for name in CORRUPTION_COLUMNS if name != "patient")]
)


class TruthWriter:
    """`truth/corruptions.parquet` (and `.csv` when the run writes CSV): every change of the messy-data pass,
    chunk by chunk (`simulator.export.messiness`), in the run's truth folder (`staging`, which `Export` owns:
    the streams' truth tables go there too)."""

    def __init__(self, staging: Staging, with_csv: bool, background: Background):
        self.staging = staging
        self.background = background
        path = self.staging.dir / self.staging.name("corruptions", ".parquet")
        self.parquet = pq.ParquetWriter(path, CORRUPTIONS_SCHEMA)
        csv_path = self.staging.dir / self.staging.name("corruptions", ".csv")
        self.csv = _File(csv_path, "rows", background) if with_csv else None
        self.header = staging.part is None or staging.part.first
        self.rows = 0
        self.written = False

    def write(self, corruptions: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(corruptions, schema=CORRUPTIONS_SCHEMA, preserve_index=False)
        self.background.submit(partial(self.parquet.write_table, table), table.nbytes)
        if self.csv is not None:
            make = partial(_csv_pieces, table, self.header and not self.written)
            self.csv.write_later(make, table.nbytes, len(table))
        self.rows += len(table)
        self.written = True

    def close(self) -> dict[str, dict]:
        if self.csv is not None:
            self.csv.close()
        self.background.drain()  # the row groups and the CSV file's end written
        self.parquet.close()
        path = self.staging.dir / self.staging.name("corruptions", ".parquet")
        self.staging.record(path.name, "rows", self.rows, path, _sha256(path))
        if self.csv is not None:
            self.staging.record(self.csv.path.name, "rows", self.csv.count, self.csv.path, self.csv.digest.hexdigest())
        return self.staging.files

    def abort(self) -> None:
        """Remove what was written, once the background thread has stopped."""
        self.background.close()
        with contextlib.suppress(OSError):
            self.parquet.close()
        if self.csv is not None:
            self.csv.abort()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bulk_base_url(out: Path) -> str:
    """The default base of the Bulk manifest's `url`s (the spec asks for absolute URLs): the file:// URL
    of `out/fhir/`."""
    return (out.resolve() / FOLDERS["ndjson"]).as_uri() + "/"


# What a run writes in each output folder: a file of such a name that no ehrsim manifest lists stops a run
# before it starts, as the run would replace it.
WRITES = {
    "fhir": ("*.ndjson", *(f"*.ndjson{suffix}" for suffix in SUFFIXES.values()), "manifest.json"),
    "bundles": ("*.json",),
    "csv": (*(f"{table}{part}.csv" for table in WRITTEN_TABLES for part in ("", ".*")), DATA_DICTIONARY.name),
    "parquet": tuple(f"{table}{part}.parquet" for table in WRITTEN_TABLES for part in ("", ".*")),
    # the optional outputs: dense monitoring streams (`--streams`), and the ground truth of the messy-data pass
    # (corruptions), the streams (stream_artefacts, stream_events) and a scenario (SCENARIO_TRUTH_TABLES)
    "streams": ("streams.parquet", "streams.*.parquet"),
    TRUTH: tuple(
        f"{name}{part}.{suffix}"
        for name in ("corruptions", "stream_artefacts", "stream_events", *SCENARIO_TRUTH_TABLES)
        for part in ("", ".*")
        for suffix in ("parquet", "csv")
    ),
}
EXTRA_FOLDERS = ("streams", TRUTH)  # written by some runs whatever their formats
OUTPUT_FOLDERS = (*FOLDERS.values(), *EXTRA_FOLDERS)  # every folder a run writes
# The hidden names a run writes under until it is done: what an interrupted run leaves, ours by name.
LEFTOVERS = frozenset(partial_path(Path(name)).name for name in (*OUTPUT_FOLDERS, RUN_MANIFEST))


def run_folders(out: Path, formats: tuple[str, ...], truth: bool) -> list[Path]:
    """The output folders of a run of `formats` (and truth/ if it wrote ground truth)."""
    return [out / FOLDERS[f] for f in formats] + ([out / TRUTH] if truth else [])


@dataclass
class OutputFolder:
    """What `--out` holds before a run writes there, and what the run does with it:

    - missing or empty: created, and the run written there;
    - an earlier ehrsim run (its `manifest.json`): the files that manifest lists are removed (with the
      folders they leave empty) when the new run is complete, so runs never mix and a failed run leaves
      the earlier one as it was;
    - anything else that is not empty: refused, as it may be the wrong folder, unless `overwrite`: the run
      is then written beside what is there.
    In every case a file that no ehrsim manifest lists is kept: never removed, never replaced (a run that
    would write a file of that name is refused before it starts). Hidden leftovers of an interrupted run
    (`.fhir.partial/`, ...) are ours by name and removed."""

    path: Path
    earlier: dict | None  # the earlier run's manifest
    earlier_files: tuple[str, ...]  # its files still there (relative to `path`), its manifest last: what a run replaces
    kept: tuple[str, ...]  # what no manifest lists: top-level entries, and files in the output folders
    leftovers: tuple[str, ...]
    created: Path | None = None  # the outermost folder `prepare` created

    @classmethod
    def inspect(cls, out: Path, formats: tuple[str, ...], overwrite: bool = False) -> OutputFolder:
        """Look at `out`, changing nothing; ConfigError('out', ...) when the run must not write there."""
        existing = next(folder for folder in (out, *out.parents) if os.path.lexists(folder))  # '.' or '/' at last
        if not existing.is_dir():
            raise ConfigError("out", f"{existing} exists and is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError("out", f"{existing}: cannot write there (permission denied)")
        try:
            entries = sorted(out.iterdir()) if existing == out else []
        except OSError as exc:
            raise ConfigError("out", f"{out}: cannot read it ({exc.strerror or exc})") from exc
        earlier = _run_manifest(out / RUN_MANIFEST)
        listed = {name for name in earlier["files"] if _is_output_file(name)} if earlier else set()
        kept: list[str] = []
        for entry in entries:
            if entry.name in LEFTOVERS or (earlier and entry.name == RUN_MANIFEST):
                continue
            if entry.name in OUTPUT_FOLDERS and entry.is_dir() and not entry.is_symlink():
                names = (f"{entry.name}/{file.name}" for file in sorted(entry.iterdir()))
                kept.extend(name for name in names if name not in listed)
            else:
                kept.append(entry.name + ("/" if entry.is_dir() else ""))
        leftovers = tuple(entry.name for entry in entries if entry.name in LEFTOVERS)
        if not (earlier or leftovers or overwrite) and any(not name.startswith(".") for name in kept):
            raise ConfigError(
                "out",
                f"{out} is not empty and holds no ehrsim run (no manifest.json of ehrsim): choose a new or empty "
                "folder, or add --overwrite to write beside what is there (nothing of it is removed or replaced)",
            )
        clashes = [name for name in kept if _clashes(name, formats)]
        if clashes:
            more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
            raise ConfigError(
                "out",
                f"{out / clashes[0].rstrip('/')}{more} would be replaced by this run and no ehrsim manifest lists it: "
                "ehrsim never replaces a file it did not write; move it away or choose another folder",
            )
        present = sorted(name for name in listed if (out / name).is_file() and not (out / name).parent.is_symlink())
        return cls(out, earlier, (*present, *([RUN_MANIFEST] if earlier else [])), tuple(kept), leftovers)

    def prepare(self) -> None:
        """Create the folder, check that a file can be written in it, and remove the leftovers of an
        interrupted run; ConfigError('out', ...) saying why not."""
        missing = [folder for folder in (self.path, *self.path.parents) if not os.path.lexists(folder)]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.created = missing[-1] if missing else None
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as exc:
            self.discard()
            reason = exc.strerror or str(exc)
            raise ConfigError("out", f"{exc.filename or self.path}: cannot write there ({reason})") from exc
        for name in self.leftovers:
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove the folders `prepare` created, if the run left them empty."""
        if self.created is None:
            return
        for folder in (self.path, *self.path.parents):
            with contextlib.suppress(OSError):  # not empty: kept
                folder.rmdir()
            if folder == self.created:
                break


def _run_manifest(path: Path) -> dict | None:
    """The run manifest at `path` if it is one that ehrsim wrote, else None."""
    try:
        manifest = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    is_ours = isinstance(manifest, dict) and "ehrsim_version" in manifest and isinstance(manifest.get("files"), dict)
    return manifest if is_ours else None


def _is_output_file(name: str) -> bool:
    """Whether a path of a run manifest's `files` is one a run writes, `<output folder>/<file>`: whatever
    a manifest says, nothing else (`../x`, an absolute or a deeper path) is ever removed."""
    parts = PurePosixPath(name).parts
    return len(parts) == 2 and parts[0] in OUTPUT_FOLDERS and parts[1] not in (".", "..") and "\\" not in name


def _clashes(name: str, formats: tuple[str, ...]) -> bool:
    """Whether a kept entry of the folder has a name that a run of these formats writes."""
    folders = {FOLDERS[f] for f in formats} | set(EXTRA_FOLDERS)
    top, _, file = name.rstrip("/").partition("/")
    if not file:
        return top == RUN_MANIFEST or top in folders
    return top in folders and any(fnmatch.fnmatchcase(file, pattern) for pattern in WRITES[top])


# Patients whose FHIR resources are built at once: the columns of text of a few hundred patients
# stay small (faster, less memory) and the output is the same whatever the slice, as ids and
# order depend only on the patient and the row within the patient.
FHIR_SLICE = 500


def _table_slices(
    patients: pd.DataFrame, tables: dict[str, pd.DataFrame], size: int
) -> Iterator[tuple[pd.DataFrame, dict[str, pd.DataFrame]]]:
    """The chunk's patients `size` at a time, in order, each with its rows of the chunk's tables (its events, or
    its clinical tables: those `build_tables` makes of those patients alone, as a table's rows are in patient
    order and each patient's depend on that patient only); one empty slice for an empty chunk."""
    where = pd.Index(patients["index"].to_numpy())
    bounds = {}
    for name, table in tables.items():
        slice_of = where.get_indexer(table["patient"].to_numpy()) // size
        if len(slice_of) and (slice_of.min() < 0 or np.any(np.diff(slice_of) < 0)):
            raise ValueError(f"the {name} table is not in the order of the chunk's patients")
        bounds[name] = np.searchsorted(slice_of, np.arange(max(1, -(-len(patients) // size)) + 1))
    for k in range(len(bounds[next(iter(bounds))]) - 1):
        yield (
            patients.iloc[k * size : (k + 1) * size].reset_index(drop=True),
            {
                name: table.iloc[bounds[name][k] : bounds[name][k + 1]].reset_index(drop=True)
                for name, table in tables.items()
            },
        )


class ChunkWriter(Protocol):
    """An optional output fed beside the formats' writers (`simulator.export.streams.writer.StreamWriter`)."""

    def write(self, patients: pd.DataFrame, events: pd.DataFrame) -> None: ...
    def close(self) -> dict[str, dict]: ...
    def abort(self) -> None: ...
    def folders(self) -> list[Path]: ...


class Export:
    """All requested outputs of a run, fed chunk by chunk, then closed (every file counted and hashed, all
    still under their partial names) and published (put in place with the run manifest). A `part` of a
    distributed run is closed and committed, and the client publishes the run."""

    def __init__(
        self,
        out: Path,
        formats: tuple[str, ...],
        context: ExportContext,
        method: Method = "POST",
        base_url: str | None = None,
        compress: str | None = None,
        part: Part | None = None,
        streams: Callable[[NdjsonWriter | None, Staging, Part | None], ChunkWriter] | None = None,
    ):
        self.out = out
        self.context = context
        self.background = Background()
        self.ndjson: NdjsonWriter | None = None
        self.bundles: BundleWriter | None = None
        self.tables: list[TableWriter] = []
        self.truth: TruthWriter | None = None
        self.writers: list[NdjsonWriter | BundleWriter | TableWriter | TruthWriter] = []
        self.extra: list[ChunkWriter] = []  # fed and closed before the FHIR writer, which lists their files
        self.part = part
        self.truth_folder: Staging | None = None  # truth/ once a writer asks for it (`truth_staging`)
        try:  # a writer that cannot start (full disk, unwritable --out) removes those already started
            if "ndjson" in formats:
                url = base_url or bulk_base_url(out)
                self.ndjson = NdjsonWriter(
                    out, context.request, url, context.directory, self.background, compress, part
                )
                self.writers.append(self.ndjson)
            if "bundles" in formats:
                self.bundles = BundleWriter(out, method, context.directory, self.background, part)
                self.writers.append(self.bundles)
            for kind in ("csv", "parquet"):
                if kind in formats:
                    self.tables.append(TableWriter(out, kind, self.background, part))
                    self.writers.append(self.tables[-1])
            if context.messiness is not None:
                self.truth = TruthWriter(self.truth_staging(), "csv" in formats, self.background)
                self.writers.append(self.truth)
            if streams is not None:
                self.extra.append(streams(self.ndjson, self.truth_staging(), part))
        except BaseException:
            self.abort()
            raise
        self.resource_counts: dict[str, int] = {}

    def truth_staging(self) -> Staging:
        """The run's truth/ folder, one for all the ground-truth tables (the messy-data log, the streams'
        artefacts, a scenario's truth), started when first asked for."""
        if self.truth_folder is None:
            self.truth_folder = Staging.start(self.out, TRUTH, self.part)
        return self.truth_folder

    def write(self, patients: pd.DataFrame, events: pd.DataFrame) -> None:
        """Tables of the whole chunk (CSV, Parquet); FHIR resources a slice of patients at a time, from the
        same clinical tables when the run writes both (built once), else from each slice's own."""
        tables = None
        if self.tables:
            tables = self._tables(patients, events)
            arrow = arrow_tables({"patients": patients, "events": events, **{name: tables[name] for name in TABLES}})
            for writer in self.tables:
                writer.write(arrow)
            del arrow  # each output's intermediates are freed before the next is built
        if self.ndjson or self.bundles:
            sliced = {"events": events} if tables is None else tables
            for some_patients, theirs in _table_slices(patients, sliced, FHIR_SLICE):
                self._write_fhir(
                    some_patients, self._tables(some_patients, theirs["events"]) if tables is None else theirs
                )
        del tables
        for writer in self.extra:
            writer.write(patients, events)

    def _tables(self, patients: pd.DataFrame, events: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """The clinical tables of some patients, with the messy-data profile's errors if the run has one (their
        log written to truth/, once for each patient: the tables are built once for each)."""
        tables = build_tables(patients, events, self.context)
        if self.context.messiness is None:
            return tables
        tables, corruptions = corrupt(tables, self.context.messiness, self.context.seed)
        if self.truth is not None:
            self.truth.write(corruptions)
        return tables

    def _write_fhir(self, patients: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> None:
        if self.ndjson:
            resources = build_resources(patients, tables, self.context, References(urn=False, line_end="\n"))
            self.ndjson.write(resources)
            self._count(resources)
            del resources
        if self.bundles:
            resources = build_resources(patients, tables, self.context, BUNDLE_REFERENCES)
            self.bundles.write(resources)
            if not self.ndjson:
                self._count(resources)

    def _count(self, resources: dict) -> None:
        for resource_type, group in resources.items():
            self.resource_counts[resource_type] = self.resource_counts.get(resource_type, 0) + len(group.json)

    def close(self) -> dict[str, dict]:
        """Close every file: the run's files (`fhir/Patient.ndjson`, ...) with their counts, sizes and SHA-256."""
        files: dict[str, dict] = {}
        for writer in [*self.extra, *self.writers]:
            files.update(writer.close())
        self.background.close()
        return files

    def publish(self, manifest: bytes, replaces: tuple[str, ...] = ()) -> None:
        """Put the run in place beside what `out` holds: remove the files of the earlier run it `replaces`
        (paths relative to `out`), write the run manifest, move every output folder's files in. Any other
        file is never replaced: a taken name raises FileExistsError before anything changes. At every
        moment the manifest in place lists every file of a run that is there (an interruption leaves it
        listing files that are missing, which the next run skips)."""
        folders = [writer.staging.final for writer in self.writers] + [f for w in self.extra for f in w.folders()]
        if self.truth_folder is not None:
            folders.append(self.truth_folder.final)
        publish(self.out, list(dict.fromkeys(folders)), manifest, replaces)

    def commit(self) -> None:
        """A part's files in place beside the other parts' (after `close`)."""
        for writer in self.writers:
            writer.staging.commit()

    def abort(self) -> None:
        self.background.close()
        for writer in [*self.extra, *self.writers]:
            writer.abort()
        if self.truth_folder is not None:
            self.truth_folder.abort()


def publish(out: Path, folders: list[Path], manifest: bytes, replaces: tuple[str, ...] = ()) -> None:
    """Put the completed partial `folders` in place in `out` with the run manifest (`Export.publish`)."""
    earlier = {out / name for name in replaces}
    targets = [out / RUN_MANIFEST, *(path for folder in folders for path in incoming(folder))]
    ensure_free(path for path in targets if path not in earlier)
    remove_files(out, [name for name in replaces if name != RUN_MANIFEST])
    write_atomic(out / RUN_MANIFEST, manifest)
    for folder in folders:
        finish_directory(folder)
