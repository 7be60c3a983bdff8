"""A run spread over a Dask cluster: `ehrsim generate ... --dask local:2` (a LocalCluster of 2 worker
processes on this machine) or `--dask tcp://scheduler:8786` (a running cluster).

The population is split into parts of `chunk_size` patients. Each part is a task, a pure function of
(run config, export config, patient range): it simulates its patients and writes its own files into the
run's partial folders (`.fhir.partial/Patient.000.ndjson`, ...; `simulator.export.writers.Part`), first in
a folder of its own, moved beside the other parts when complete. A population run's decedents come after
its living: each living part returns the module deaths of the histories it discarded (`window_deaths`);
the client gathers them, plans the decedents as a one-process run does (`decedent_plan`) and submits one
task per `chunk_size` decedents, numbered after the living parts. A task that fails is run again (on
another worker if there is one) and writes the same bytes. The client then writes the Bulk manifest
(every part file, by type then part), the data dictionary and the run manifest (every part file with its
size and SHA-256) and puts the run in place as a one-process run does (`simulator.files`). Concatenated in
order, the parts of a type or table are byte for byte the one-process file of the same seed (compressed
parts: their decompressed bytes, each part its own gzip member or zstd frame; Parquet parts: the same
rows, each part a Parquet file of its own).

Workers need ehrsim installed (`pip install "ehrsim[dask]"`), the same modules and rules (a
--modules/--rules path must be valid on every worker), and the output folder at the same path (a shared
file system); writing to an object store through fsspec is not built.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from simulator.collector import fewer_collections
from simulator.engine.run import MAX_REDRAWS, RunConfig, Simulator
from simulator.errors import ConfigError
from simulator.export.bundles import Method
from simulator.export.context import ExportContext
from simulator.export.writers import (
    FOLDERS,
    Export,
    Part,
    Staging,
    bulk_base_url,
    bulk_manifest,
    write_data_dictionary,
    write_finished,
)
from simulator.files import abort_directory, partial_path, start_directory
from simulator.tables.chunks import DecedentPlan, chunk_tables, count_chunk, decedent_plan, decedent_tables

RETRIES = 2  # times a failed part is run again before the run fails


def check_dask(address: str | None) -> str | None:
    """`local:N` (N >= 1 worker processes here) or a scheduler address `tcp://host:port` (any scheme
    distributed knows: tls://, ...); ConfigError('dask', ...) for anything else or without dask installed."""
    if address is None:
        return None
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError("dask", 'needs Dask\'s distributed scheduler: pip install "ehrsim[dask]"') from None
    if address.startswith("local:"):
        workers = address.removeprefix("local:")
        if not workers.isdigit() or int(workers) < 1:
            raise ConfigError("dask", f"local:N with N >= 1 worker processes (got {address!r})")
    elif "://" not in address:
        raise ConfigError("dask", f"local:N or a scheduler address such as tcp://host:8786 (got {address!r})")
    return address


class ExportSettings(Protocol):
    """What a part reads of the run's export settings (`simulator.api.ExportConfig`)."""

    out: Path
    formats: tuple[str, ...]
    bundle_method: Method
    base_url: str | None
    compress: str | None


ContextOf = Callable[[Simulator, Any], ExportContext]  # the run's ExportContext (`simulator.api`'s)


@dataclass(frozen=True)
class PartTask:
    """Living patients [start, stop) of a run, or with `decedents` its decedents [start, stop), written as
    `part`; `context_of` makes the exporters' context on the worker."""

    config: RunConfig
    export: ExportSettings
    context_of: ContextOf
    part: Part
    start: int
    stop: int
    decedents: DecedentPlan | None = None


@dataclass(frozen=True)
class PartResult:
    files: dict[str, dict]  # run manifest entries of the part's files
    counts: dict
    resource_counts: dict[str, int]
    window_deaths: np.ndarray  # of a living part: the module deaths of its discarded histories (`chunk_tables`)


def part_digits(sim: Simulator) -> int:
    """Digits of the run's part numbers, fixed before any part is written so that the names sort in
    order: every living part, and as many decedent parts as the run could hold (each patient's every
    redraw a module death in the window, and the background decedents and stand-ins at most)."""
    config = sim.config
    parts = max(1, -(-config.patients // config.chunk_size))
    if config.decedent_years > 0:
        most = config.patients * MAX_REDRAWS + sum(sim.background_decedents(config.patients, 0))
        parts += -(-most // config.chunk_size)
    return max(3, len(str(parts - 1)))


def part_tasks(
    config: RunConfig,
    export: ExportSettings,
    context_of: ContextOf,
    digits: int,
    decedents: DecedentPlan | None = None,
    first: int = 0,
) -> list[PartTask]:
    """One task per chunk of `config.chunk_size` patients, numbered from `first`: the living (an empty
    run: one empty part) or, with `decedents`, the decedents."""
    total = config.patients if decedents is None else decedents.total
    starts = range(0, total, config.chunk_size) or (range(1) if decedents is None else range(0))
    return [
        PartTask(
            config,
            export,
            context_of,
            Part(f"{first + k:0{digits}d}", first + k == 0),
            start,
            min(start + config.chunk_size, total),
            decedents,
        )
        for k, start in enumerate(starts)
    ]


@functools.lru_cache(maxsize=2)
def _simulator(config: RunConfig) -> Simulator:
    """One Simulator per worker process and run (loading and compiling the library costs seconds)."""
    return Simulator.build(config)


@fewer_collections()
def write_part(task: PartTask) -> PartResult:
    """Simulate and write one part (a pure function of the task: run twice, the same files)."""
    sim = _simulator(task.config)
    export = task.export
    context = task.context_of(sim, export)
    base_url = export.base_url or bulk_base_url(export.out)
    writer = Export(export.out, export.formats, context, export.bundle_method, base_url, export.compress, task.part)
    counts: dict = {}
    window_deaths = []
    try:
        for start in range(task.start, task.stop, task.config.chunk_size) or [task.start]:
            stop = min(start + task.config.chunk_size, task.stop)
            if task.decedents is None:
                chunk = chunk_tables(sim, start, stop)
            else:
                chunk = decedent_tables(sim, task.decedents, start, stop)
            window_deaths.append(chunk.window_deaths)
            writer.write(chunk.patients, chunk.events)
            count_chunk(counts, chunk)
        files = writer.close()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return PartResult(files, counts, writer.resource_counts, np.concatenate(window_deaths))


def _add(total: dict, more: dict) -> None:
    """Add counts (nested one level: events_by_kind) in the order a one-process run meets them."""
    for key, value in more.items():
        if isinstance(value, dict):
            _add(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value


@contextlib.contextmanager
def _client(address: str) -> Iterator:
    """A client of a LocalCluster started for the run (closed after it), or of the scheduler at `address`."""
    from distributed import Client, LocalCluster

    if address.startswith("local:"):
        workers = int(address.removeprefix("local:"))
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
        )
        with cluster, Client(cluster, set_as_default=False) as client:
            yield client
    else:
        with Client(address, set_as_default=False) as client:
            yield client


def _results(client: Any, tasks: list[PartTask], run: str, report: Callable[[str, int, int], None]) -> list[PartResult]:
    """The results of `tasks` in order, run on `client`'s cluster (a task is retried `RETRIES` times),
    reporting the living patients done; `run` names this run's tasks apart from another run's on the
    same cluster."""
    from distributed import as_completed

    keys = [f"ehrsim-part-{task.part.name}-{run}" for task in tasks]
    futures = client.map(write_part, tasks, retries=RETRIES, key=keys)
    number = {future.key: k for k, future in enumerate(futures)}
    results: dict[int, PartResult] = {}
    done = 0
    for future in as_completed(futures, loop=client.loop):
        k = number[future.key]
        results[k] = future.result()
        if tasks[k].decedents is None:
            done += tasks[k].stop - tasks[k].start
            report("simulate", done, tasks[k].config.patients)
    return [results[k] for k in range(len(tasks))]


def run_parts(
    address: str,
    sim: Simulator,
    export: ExportSettings,
    context_of: ContextOf,
    request: str,
    counts: dict,
    report: Callable[[str, int, int], None],
) -> tuple[dict[str, dict], dict[str, int]]:
    """Write the run of `sim` in parts (`part_tasks`) on the cluster at `address`: the living, then, once
    their discarded histories are known, the decedents (`decedent_plan`, as a one-process run), numbered
    after them; then the Bulk manifest (recording `request`) and the data dictionary, all in the partial
    folders (the caller publishes or, on failure, removes them: `abort_parts`). Returns the run's files
    (run manifest entries) and resources by type; adds the run's counts to `counts`."""
    config = sim.config
    folders = [FOLDERS[f] for f in export.formats]
    for folder in folders:
        start_directory(export.out / folder)
    digits = part_digits(sim)
    run = uuid.uuid4().hex
    with _client(address) as client:
        living = part_tasks(config, export, context_of, digits)
        results = _results(client, living, run, report)
        if config.decedent_years > 0:
            plan = decedent_plan(sim, [result.window_deaths for result in results])
            decedents = part_tasks(config, export, context_of, digits, plan, len(living))
            results += _results(client, decedents, run, report)
    files: dict[str, dict] = {}
    resource_counts: dict[str, int] = {}
    for result in results:
        _add(counts, result.counts)
        _add(resource_counts, result.resource_counts)
        files.update(result.files)
    run_files: dict[str, dict] = {}
    for folder in folders:
        staging = Staging(export.out / folder, partial_path(export.out / folder))
        staging.files = {name: entry for name, entry in files.items() if name.startswith(folder + "/")}
        if folder == FOLDERS["ndjson"]:
            staging.files = dict(sorted(staging.files.items(), key=lambda item: _type_and_name(item[0])))
            data = bulk_manifest(request, export.base_url or bulk_base_url(export.out), staging.files)
            write_finished(staging, "manifest.json", data, "files", len(staging.files))
        elif folder == FOLDERS["csv"]:
            write_data_dictionary(staging)
        run_files.update(staging.files)
    return run_files, dict(sorted(resource_counts.items()))


def _type_and_name(name: str) -> tuple[str, str]:
    """`fhir/Patient.000.ndjson` -> ("Patient", "Patient.000.ndjson"): the Bulk manifest's order."""
    file = Path(name).name
    return file.split(".")[0], file


def abort_parts(out: Path, formats: tuple[str, ...]) -> None:
    """Remove the partial folders of a failed distributed run, with every part written in them."""
    for kind in formats:
        abort_directory(out / FOLDERS[kind])
