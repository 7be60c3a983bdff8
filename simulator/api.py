"""The Python API the CLI is thin over.

`run(RunConfig, ExportConfig)` generates a population (in memory, or streamed chunk by chunk to files);
`generate(...)` is the same with keyword arguments; `validate(...)` compares a cohort with the targets
and writes the report; `calibrate(...)` fits declared parameters and background mortality. Progress and
messages go to callbacks, so a notebook, a script and the CLI each show them their own way.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

# Imported here, before simulator/__init__.py binds the name `audit` to the function below: a later first
# import of the package would rebind simulator.audit to the package.
from simulator.audit.report import AuditReport, audit_run
from simulator.cluster import abort_parts, check_dask, run_parts
from simulator.collector import fewer_collections
from simulator.engine.people import reference_date_of
from simulator.engine.run import Mode, RunConfig, Simulator, kernel_needs_compiling, runtime
from simulator.errors import ConfigError
from simulator.export import DEFAULT_FORMATS, parse_formats
from simulator.export.bundles import Method
from simulator.export.compression import check_compression
from simulator.export.context import ExportContext
from simulator.export.size import SizeEstimate, estimate_size, human_bytes
from simulator.export.streams.writer import STREAM_FOLDER, StreamPlan, StreamWriter, check_interval, parse_streams
from simulator.export.writers import Export, OutputFolder, publish, run_folders
from simulator.fit.calibration import fit, fit_groups, write_fitted
from simulator.fit.mortality import fit_background_mortality, write_shares
from simulator.fit.report import write_report
from simulator.fit.validation import Validation, default_targets, validate_generated, validate_run
from simulator.load import LoadConfig, LoadReport, load_run
from simulator.model.library import Library, default_rules_dir
from simulator.model.loading import load_library
from simulator.model.messiness import load_messiness
from simulator.model.parsing import suggest
from simulator.scenario.output import (
    attach,
    check_scenario,
    joined,
    scenario_chunks,
    scenario_settings,
    summary,
    write_truth,
)
from simulator.tables.chunks import Chunk, chunks, count_chunk
from simulator.tables.population import Population
from simulator.version import __version__


def _manifest(sim: Simulator, counts: dict, timings: dict, files: dict) -> dict:
    config = {k: (str(v) if isinstance(v, Path | date) else v) for k, v in asdict(sim.config).items()}
    config["reference_date"] = str(_end_date(sim))
    return {
        "ehrsim_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": sim.config.seed,
        "config": config,
        "inputs_sha256": dict(sorted(sim.library.file_sha256.items())),
        "modules": [{"name": m.name, "version": m.version} for m in sim.library.modules],
        "counts": counts,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "files": files,
        "platform": runtime(),
    }


Progress = Callable[[str, int, int], None]
"""Called as (stage, done, total): ("build", 0, 1) before loading and compiling (a first run compiles the
kernel for minutes: `Notify` says so), then ("simulate", patients done, patients) after each chunk."""

Notify = Callable[[str], None]
"""Called with a message for the user before the work it announces: that the kernel compiles, how much
a large run will write, which earlier run in the output folder it replaces."""

# Numba JIT-compiles the kernel on a first run (and after the kernel's source changes), then loads it from
# its cache. Measured on the 2-core development machine (2026-12-07): a first 10-patient run 39 s with an empty
# NUMBA_CACHE_DIR (91 s before the kernel's helpers took the model by pointer, 405 s before they lost their
# CPython wrappers), 2.5 s from the cache.
COMPILE_NOTICE = (
    "compiling the simulation kernel: a first run takes under a minute (about 40 s on 2 cores); "
    "later runs reuse the compiled kernel"
)
ESTIMATE_FROM_PATIENTS = 2_000  # `run` estimates its size first from this size up (the pilot costs <= 5 %)
LARGE_BYTES = 10**9  # `run` says how much it will write before a run estimated above this
MAX_HISTORY_YEARS = 150  # `--history`: longer than any life (a lifetime run follows a cohort for 130 years)
# `--decedents` with a record of the whole life: a population run also holds the patients who died in the
# year before its end (a year of deaths, as an extract of a year's records holds; a stated default, not a
# published figure). With `--history YEARS` the window is the history's.
DEFAULT_DECEDENT_YEARS = 1.0


def decedent_years(mode: Mode, decedents: float | str | None, history_years: float | None) -> float:
    """The decedent window of a run (`RunConfig.decedent_years`) from what was asked: None, the default,
    the history window (`history_years`), else DEFAULT_DECEDENT_YEARS, in population mode (a lifetime run
    has none); "none" or 0, none; else a number of years."""
    if isinstance(decedents, str):
        text = decedents.strip().lower()
        if text == "none":
            return 0.0
        try:
            decedents = float(text)
        except ValueError:
            raise ConfigError("decedent_years", f"a number of years or 'none' (got {decedents!r})") from None
    if decedents is None:
        return 0.0 if mode == "lifetime" else (history_years or DEFAULT_DECEDENT_YEARS)
    return float(decedents)


def _ignore(*args: object) -> None:
    """The default of progress and messages: nothing shown."""


def _absolute_base_url(url: str) -> str:
    """`url` ending with '/' if it is an absolute http(s):// or file:// URL, else ConfigError."""
    parts = urlsplit(url)
    absolute = parts.netloc if parts.scheme in ("http", "https") else parts.path.startswith("/")
    if parts.scheme not in ("http", "https", "file") or not absolute or parts.query or parts.fragment:
        raise ConfigError(
            "base_url",
            f"must be an absolute http(s):// or file:/// URL of the folder the ndjson files are at (got {url!r})",
        )
    return url if url.endswith("/") else url + "/"


@dataclass(frozen=True)
class ExportConfig:
    """Where and how a run is written: `out/fhir/` (Bulk ndjson and its manifest, whose file URLs start with
    `base_url`, default the file:// URL of `out/fhir/`), `out/bundles/` (transaction bundles, entries as
    POST, or PUT with stable ids), `out/csv/`, `out/parquet/`, and `out/manifest.json` (the run manifest).
    What a run does with what `out` holds already: `simulator.export.writers.OutputFolder`; `overwrite`
    lets it write beside the files of a folder that holds no earlier run (none of them is removed or
    replaced). `history_years`: each record holds its last years and what a chart carries from before
    (`simulator.export.history`); None, the default, the whole life. `compress`: "gzip" or "zstd" writes
    the Bulk ndjson as `fhir/<Type>.ndjson.gz` or `.ndjson.zst` (`simulator.export.compression`).
    `messiness`: a messy-data profile, "typical", "hostile" or a profile file (`simulator.export.messiness`),
    whose changes `out/truth/corruptions.parquet` logs; None or "clean", the default: none.
    `streams`: the monitoring settings ("icu", "ward", "ed") whose stays get dense vital-sign streams, every
    `stream_interval_s` seconds (default rules/streams.yaml's), written to `out/streams/`, `out/truth/` and
    the Bulk ndjson (`simulator.export.streams`); none by default."""

    out: Path
    formats: tuple[str, ...] = DEFAULT_FORMATS
    bundle_method: Method = "POST"
    base_url: str | None = None
    overwrite: bool = False
    history_years: float | None = None
    compress: str | None = None
    messiness: str | None = None
    streams: tuple[str, ...] = ()
    stream_interval_s: float | None = None

    def __post_init__(self) -> None:
        if self.messiness is not None:
            object.__setattr__(self, "messiness", None if str(self.messiness) == "clean" else str(self.messiness))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "compress", check_compression(self.compress))
        object.__setattr__(self, "streams", parse_streams(self.streams))
        object.__setattr__(self, "stream_interval_s", check_interval(self.stream_interval_s))
        try:
            object.__setattr__(self, "formats", parse_formats(self.formats))
        except ValueError as exc:
            raise ConfigError("formats", str(exc)) from exc
        if self.bundle_method not in ("POST", "PUT"):
            raise ConfigError("bundle_method", f"must be POST or PUT (got {self.bundle_method!r})")
        if self.base_url is not None:
            object.__setattr__(self, "base_url", _absolute_base_url(self.base_url))
        if self.history_years is not None and not 0 < self.history_years <= MAX_HISTORY_YEARS:
            raise ConfigError(
                "history_years", f"must be more than 0 and at most {MAX_HISTORY_YEARS} years (got {self.history_years})"
            )


def _estimate(sim: Simulator, config: RunConfig, export: ExportConfig) -> SizeEstimate:
    context = _context(sim, export)
    return estimate_size(
        sim, export.out, export.formats, export.bundle_method, export.base_url, context, export.compress
    )


def _context(sim: Simulator, export: ExportConfig) -> ExportContext:
    """What the exporters of the run take besides its tables (the record window of `--history` included)."""
    config = sim.config
    request = _request(config, export)
    end = _end_date(sim)
    messiness = load_messiness(export.messiness, sim.library.rules_dir)
    return ExportContext.from_library(
        sim.library, config.seed, request, config.patients, export.history_years, end, messiness
    )


def _end_date(sim: Simulator) -> date:
    """The day the simulated world ends (`--end-date`; default the demographics file's Census date)."""
    return reference_date_of(sim.library) if sim.config.reference_date is None else sim.config.reference_date


def _build(config: RunConfig, report: Progress, say: Notify, library: Library | None = None) -> Simulator:
    report("build", 0, 1)
    if kernel_needs_compiling():
        say(COMPILE_NOTICE)
    return Simulator.build(config, library)


def _request(config: RunConfig, export: ExportConfig) -> str:
    """The command the Bulk manifest records as its request."""
    request = f"ehrsim generate --patients {config.patients} --seed {config.seed} --mode {config.mode}"
    if export.history_years is not None:
        request += f" --history {export.history_years:g}"
    if config.decedent_years != decedent_years(config.mode, None, export.history_years):
        request += f" --decedents {config.decedent_years:g}" if config.decedent_years else " --decedents none"
    if export.messiness is not None:
        request += f" --messiness {export.messiness}"
    if export.streams:
        request += f" --streams {','.join(export.streams)}"
        if export.stream_interval_s is not None:
            request += f" --stream-interval {export.stream_interval_s:g}"
    return request


def _stream_plan(sim: Simulator, export: ExportConfig) -> StreamPlan:
    return StreamPlan.of(sim.library, export.streams, export.stream_interval_s, sim.people_tables)


def _stream_writer(sim: Simulator, export: ExportConfig) -> Callable | None:
    """What makes the run's stream writer beside the FHIR writer (None without `streams`)."""
    if not export.streams:
        return None
    plan = _stream_plan(sim, export)
    return lambda ndjson, truth, part: StreamWriter(export.out, plan, sim.config.seed, ndjson, truth, part)


def _folder_messages(folder: OutputFolder) -> list[str]:
    """What a run does with what its output folder holds."""
    messages = []
    if folder.leftovers:
        messages.append(f"removes the leftovers of an interrupted run in {folder.path}/: {', '.join(folder.leftovers)}")
    if folder.earlier is not None:
        files = folder.earlier["files"]
        size = human_bytes(sum(files[name]["bytes"] for name in folder.earlier_files if name in files))
        formats = ", ".join(folder.earlier.get("formats", []))
        messages.append(
            f"replaces the earlier run in {folder.path}/ (seed {folder.earlier.get('seed')}, {formats}: "
            f"{len(folder.earlier_files)} files, {size}), removed when this run is complete"
        )
    shown = [name for name in folder.kept if not name.startswith(".")]
    if shown:
        more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
        messages.append(f"keeps what no ehrsim run wrote in {folder.path}/: {', '.join(shown[:3])}{more}")
    return messages


@dataclass(frozen=True)
class Preview:
    """What `run(config, export)` would do, found without writing anything."""

    config: RunConfig
    export: ExportConfig
    folder: OutputFolder
    estimate: SizeEstimate

    def lines(self) -> list[str]:
        c, e = self.config, self.estimate
        head = f"{c.patients} patients ({c.mode}, seed {c.seed}) -> {self.export.out}/"
        sizes = [f"  {kind:8} about {human_bytes(n)}" for kind, n in e.bytes_by_format.items()]
        total = (
            f"  {'total':8} about {human_bytes(e.total)}, estimated from its first {e.pilot_patients} patients; "
            f"{human_bytes(e.free_bytes)} free there"
        )
        notes = [*_folder_messages(self.folder), *filter(None, [e.shortfall(self.export.out)])]
        return [head, *sizes, total, *(f"  {note}" for note in notes)]


def preview(
    config: RunConfig, export: ExportConfig, progress: Progress | None = None, notify: Notify | None = None
) -> Preview:
    """What `run(config, export)` would do, writing nothing: the output folder as it is (ConfigError where
    the run would be refused) and the size of the run, estimated from a pilot in a temporary folder."""
    folder = OutputFolder.inspect(export.out, export.formats, export.overwrite)
    sim = _build(config, progress or _ignore, notify or _ignore)
    return Preview(config, export, folder, _estimate(sim, config, export))


@fewer_collections()
def run(
    config: RunConfig,
    export: ExportConfig | None = None,
    progress: Progress | None = None,
    notify: Notify | None = None,
    dask: str | None = None,
    scenario: str | Path | None = None,
) -> Population:
    """Simulate `config`; without `export` return the tables in memory, else stream every chunk to the
    files asked for (each under a temporary name, put in place when the run is complete) and return a
    Population that reads its tables back from them. The output folder is checked and created before
    anything loads or compiles; an earlier run in it is replaced, files it did not write are kept
    (`OutputFolder`); a failed or interrupted run leaves the folder as it was. `dask` ("local:N" or a
    scheduler address) writes the run in parts on a Dask cluster (`simulator.cluster`). `scenario`: a scenario
    file (docs/scenarios.md) whose patients the run holds, with their weights and ground truth (`truth/`)."""
    if check_dask(dask) and export is None:
        raise ConfigError("dask", "a run on a Dask cluster is written to files: give an output folder (out)")
    if dask is not None and export is not None and export.messiness is not None:
        raise ConfigError("messiness", "a messy-data profile is not yet applied by a run on a Dask cluster")
    if export is not None and export.streams and dask is not None:
        raise ConfigError("streams", "monitoring streams are not written by a run on a Dask cluster yet")
    if scenario is not None and dask is not None:
        raise ConfigError("dask", "a scenario run is written by one process: leave out dask")
    report = progress or _ignore
    say = notify or _ignore
    counts: dict = {}
    plan, library = check_scenario(scenario, config.modules_dir, config.rules_dir) if scenario else (None, None)
    if plan is not None and config.mode != plan.scenario.mode:
        raise ConfigError("mode", f"the scenario is a {plan.scenario.mode} run (got {config.mode})")
    if plan is not None and config.decedent_years:
        raise ConfigError("decedent_years", "a scenario run holds its patients only: give none")
    truth: dict[str, list[pd.DataFrame]] = {}

    def done() -> int:  # patients simulated: a scenario's decedents are among its patients, a plain run's extra
        return counts["patients"] + (counts.get("decedents", 0) if plan is not None else 0)

    def source(sim: Simulator) -> Iterator[Chunk]:
        if plan is None:
            return chunks(sim)
        attach(sim, plan)
        return scenario_chunks(sim, plan, truth)

    def with_scenario(manifest: dict, sim: Simulator) -> dict[str, pd.DataFrame] | None:
        if plan is None:
            return None
        frames = joined(truth)
        manifest["scenario"] = summary(plan, sim, frames)
        return frames

    if export is None:
        sim = _build(config, report, say, library)
        started = time.perf_counter()
        frames = []
        for chunk in source(sim):
            frames.append(chunk)
            count_chunk(counts, chunk)
            report("simulate", done(), config.patients)
        timings = {**sim.timings, "simulate_s": time.perf_counter() - started}
        manifest = _manifest(sim, counts, timings, {})
        return Population(
            manifest,
            _patients=pd.concat([f.patients for f in frames], ignore_index=True),
            _events=pd.concat([f.events for f in frames], ignore_index=True),
            _truth=with_scenario(manifest, sim),
        )
    load_messiness(export.messiness, config.rules_dir or default_rules_dir())  # a bad profile stops the run here
    folder = OutputFolder.inspect(export.out, export.formats, export.overwrite)
    folder.prepare()
    for message in _folder_messages(folder):
        say(message)
    writer: Export | None = None
    try:
        sim = _build(config, report, say, library)
        if config.patients >= ESTIMATE_FROM_PATIENTS and plan is None:
            estimate = _estimate(sim, config, export)
            if estimate.total > LARGE_BYTES:
                say(f"this run will write {estimate.describe()}; {human_bytes(estimate.free_bytes)} free there")
            if warning := estimate.shortfall(export.out):
                say(warning)
        started = time.perf_counter()
        if dask is None:
            context = _context(sim, export)
            streams = _stream_writer(sim, export)
            writer = Export(
                export.out,
                export.formats,
                context,
                export.bundle_method,
                export.base_url,
                export.compress,
                None,
                streams,
            )
            for chunk in source(sim):
                writer.write(chunk.patients, chunk.events)
                count_chunk(counts, chunk)
                report("simulate", done(), config.patients)
            files, resource_counts = writer.close(), writer.resource_counts
        else:
            request = _request(config, export)
            files, resource_counts = run_parts(dask, sim, export, _context, request, counts, report)
        counts["resources_by_type"] = dict(sorted(resource_counts.items()))
        counts["resources"] = sum(resource_counts.values())
        timings = {**sim.timings, "simulate_and_write_s": time.perf_counter() - started}
        manifest = _manifest(sim, counts, timings, files)
        if (truth_frames := with_scenario(manifest, sim)) is not None and writer is not None:
            files.update(write_truth(writer.truth_staging(), truth_frames, export.formats))
        manifest["formats"] = list(export.formats)
        manifest["history_years"] = export.history_years
        manifest["decedent_years"] = config.decedent_years
        manifest["compress"] = export.compress
        manifest["dask"] = dask
        if export.messiness is not None:
            manifest["messiness"] = export.messiness
        folders = run_folders(export.out, export.formats, writer is not None and writer.truth_folder is not None)
        if export.streams:
            manifest["streams"] = {"settings": list(export.streams), "interval_s": _stream_plan(sim, export).interval_s}
            folders.append(export.out / STREAM_FOLDER)
        data = json.dumps(manifest, indent=2, sort_keys=False).encode()
        publish(export.out, folders, data, folder.earlier_files)
    except BaseException:
        if writer is not None:
            writer.abort()
        elif dask is not None:
            abort_parts(export.out, export.formats)
        folder.discard()
        raise
    return Population(manifest, out=export.out)


def generate(
    patients: int = 1000,
    seed: int = 0,
    *,
    out: str | Path | None = None,
    mode: Mode = "population",
    reference_date: date | None = None,
    chunk_size: int = 10_000,
    threads: int | None = None,
    modules_dir: str | Path | None = None,
    rules_dir: str | Path | None = None,
    formats: str | tuple[str, ...] | list[str] | None = None,
    bundle_method: Method = "POST",
    base_url: str | None = None,
    overwrite: bool = False,
    history_years: float | None = None,
    compress: str | None = None,
    dask: str | None = None,
    decedents: float | str | None = None,
    messiness: str | Path | None = None,
    streams: str | tuple[str, ...] | list[str] | None = None,
    stream_interval: float | None = None,
    progress: Progress | None = None,
    notify: Notify | None = None,
    scenario: str | Path | None = None,
) -> Population:
    """Generate a synthetic population: `run` with keyword arguments.

    Without `out`, the tables are returned in memory. With `out`, the run is streamed to the `formats`
    asked for (default FHIR Bulk ndjson; any of "ndjson", "bundles", "csv", "parquet", as a sequence or
    comma-separated); an earlier run in `out` is replaced and nothing else there is touched (see
    `ExportConfig` for `base_url`, `overwrite` and `history_years`, the years of history each written
    record holds; default the whole life; `compress`, "gzip" or "zstd", for the Bulk ndjson; `dask`,
    "local:N" or a scheduler address, to write the run in parts on a Dask cluster). `decedents`: years before
    the end whose deaths a population run also holds, flagged `is_decedent` in the patient table, or "none"
    (default: the `history_years` window, else DEFAULT_DECEDENT_YEARS; see `decedent_years`). `messiness`:
    "clean" (the default), "typical", "hostile" or a profile file: the written record gets the profile's
    errors, each logged in `out/truth/corruptions` (`simulator.export.messiness`; needs `out`). `streams`
    ("icu,ward,ed") and `stream_interval` (seconds): dense monitoring streams, written with `out` only.
    `scenario`: a scenario file (docs/scenarios.md): its patients and mode replace `patients` and `mode`, its
    history, streams and messiness stand where those options are not given (its streams and messiness only
    for a written run: in memory they are left out, with a warning), it has no decedents, and the
    Population has `truth` and `weights`."""
    if scenario is not None:
        settings = scenario_settings(scenario)
        patients, mode, decedents = settings.patients, settings.mode, "none"
        history_years = settings.history.years if history_years is None else history_years
        file_streams = tuple(settings.streams.settings) if streams is None else ()
        file_messiness = settings.messiness if messiness is None and settings.messiness != "clean" else None
        if out is None and (file_streams or file_messiness):
            named = {"streams": ",".join(file_streams), "messiness": file_messiness}
            left_out = " and ".join(f"{key}: {value}" for key, value in named.items() if value)
            message = f"{scenario}: {left_out} apply to a written run (give out): left out in memory"
            warnings.warn(message, stacklevel=2)
        elif out is not None:
            streams = file_streams or streams
            messiness = file_messiness or messiness
        stream_interval = settings.streams.interval_seconds if stream_interval is None else stream_interval
    # the export settings are checked even for a run that stays in memory (first: the decedent window
    # follows the history's)
    export = ExportConfig(
        Path(out or "."),
        formats or DEFAULT_FORMATS,
        bundle_method,
        base_url,
        overwrite,
        history_years,
        compress,
        None if messiness is None else str(messiness),
        parse_streams(streams),
        stream_interval,
    )
    if out is None and export.messiness is not None:
        raise ConfigError("messiness", "a messy-data profile applies to a written record: give an output folder (out)")
    if export.streams and out is None:
        raise ConfigError("streams", "monitoring streams are written to files: give an output folder (out)")
    config = RunConfig(
        patients=patients,
        seed=seed,
        mode=mode,
        reference_date=reference_date,
        chunk_size=chunk_size,
        threads=threads,
        modules_dir=Path(modules_dir) if modules_dir else None,
        rules_dir=Path(rules_dir) if rules_dir else None,
        decedent_years=decedent_years(mode, decedents, history_years),
    )
    return run(config, export if out is not None else None, progress, notify, dask, scenario)


def validate(
    run_dir: str | Path | None = None,
    *,
    patients: int | None = None,
    seed: int = 0,
    lifetime_patients: int = 20_000,
    report_dir: str | Path | None = None,
) -> tuple[Validation, list[Path]]:
    """Compare a cohort with rules/targets and write report.html, report.md and report.json.

    The cohort is a written run (`run_dir`, report in RUN/validation by default) or `patients` generated
    in memory (report in ./validation by default); give one of the two."""
    if (run_dir is None) == (patients is None):
        raise ValueError("give either a run directory or --patients N")
    if run_dir is not None:
        result = validate_run(Path(run_dir), lifetime_patients)
        directory = Path(report_dir) if report_dir else Path(run_dir) / "validation"
    else:
        result = validate_generated(patients, seed, min(lifetime_patients, patients))  # type: ignore[arg-type]
        directory = Path(report_dir) if report_dir else Path("validation")
    return result, write_report(result, directory)


def calibration_groups(library: Library, names: list[str], alone: bool) -> list[list[str]]:
    """The groups of modules to fit for the names asked (none: every declared module; 'mortality' is not a
    module), each with the modules it depends on unless `alone`."""
    declared = list(library.calibration)
    modules = [name for name in names if name != "mortality"]
    for name in modules:
        if name not in declared:
            raise ValueError(f"no calibration declaration for module '{name}'{suggest(name, declared)}")
    if (not names or "mortality" in names) and not library.mortality.background_share:
        raise ValueError("mortality.yaml declares no background_share file to write the fitted shares to")
    if alone and not modules:
        raise ValueError("--alone fits the modules you name: name at least one")
    if alone:
        return [[name for name in declared if name in modules]]
    groups = [] if names and not modules else fit_groups(library, declared)
    return [g for g in groups if not modules or set(g) & set(modules)]


def calibrate(
    names: list[str] | None = None,
    *,
    patients: int = 4_000,
    seed: int = 20_240_701,
    max_iterations: int = 8,
    dry_run: bool = False,
    alone: bool = False,
    report: Callable[[str], None] = print,
    lifetime_patients: int | None = None,
    params: list[str] | None = None,
    targets: list[str] | None = None,
) -> list[Path]:
    """Fit the declared free parameters of the modules named (default: all) to the targets, group by group,
    writing <module>.fitted.yaml where the loss improves; then, unless only modules were named, the
    background mortality net of module deaths. Returns the files written (none with `dry_run`).
    `params`: fit only these declared parameters of the modules named (`name` or `module.name`), every other
    one held at its current value; `targets`: patterns of the named modules' declared target ids that the fit
    answers to (default: all of them). Either implies `alone`."""
    asked = list(names or [])
    for field, given in (("params", params), ("targets", targets)):
        if given is not None and not given:
            raise ConfigError(field, "name at least one")
    if (params or targets) and not [name for name in asked if name != "mortality"]:
        raise ConfigError("params" if params else "targets", "name the module to fit (ehrsim calibrate MODULE ...)")
    library = load_library()
    groups = calibration_groups(library, asked, alone or bool(params) or bool(targets))
    fitted_targets = default_targets(library)
    written: list[Path] = []
    for group in groups:
        result = fit(
            library, fitted_targets, library.calibration, group, patients, seed, max_iterations, report,
            lifetime_patients=lifetime_patients, params=params, target_patterns=targets,
        )  # fmt: skip
        report(f"{'target':44} {'target':>8} {'before':>8} {'after':>8}")
        for before, after in zip(result.before, result.after, strict=True):
            t = before.target
            report(f"{t.id:44} {t.value:8.4f} {before.simulated:8.4f} {after.simulated:8.4f}")
        report(
            f"loss {result.loss_before:.2f} -> {result.loss_after:.2f}; {result.evaluations} evaluations "
            f"in {result.seconds:.0f} s"
        )
        if dry_run or result.loss_after >= result.loss_before:
            report("nothing written" + ("" if dry_run else ": the fit did not improve the loss"))
            continue
        for path in write_fitted(result, library, patients, seed):
            written.append(path)
            report(f"wrote {path}")
        library = load_library()  # the next group is fitted in the ensemble with these values
    if asked and "mortality" not in asked:
        return written
    return written + _calibrate_mortality(patients * 5, seed, dry_run, report)


def _calibrate_mortality(patients: int, seed: int, dry_run: bool, report: Callable[[str], None]) -> list[Path]:
    library = load_library()  # with the module fits just written
    mortality = fit_background_mortality(library, patients, seed, report=report)
    report(mortality.shares.to_string(index=False))
    before, after = mortality.before.life_expectancy["all"], mortality.after.life_expectancy["all"]
    seconds = mortality.seconds
    report(f"life expectancy at birth {before:.2f} -> {after:.2f} years in {seconds:.0f} s ({patients} lives)")
    if dry_run:
        report("nothing written")
        return []
    path = library.rules_dir / library.mortality.background_share  # type: ignore[operator]
    write_shares(mortality, library, path)
    report(f"wrote {path}")
    return [path]


def load(
    run_dir: str | Path,
    server: str,
    *,
    concurrency: int = 4,
    max_entries: int = 50,
    resume: bool = False,
    dry_run: bool = False,
    token_env: str | None = None,
    progress: Progress | None = None,
    notify: Notify | None = None,
) -> LoadReport:
    """Load a written run (its `fhir/*.ndjson`, else `bundles/`) into the FHIR server at `server`: the shared
    resources, then the patients, PUT at their stable ids in transactions of at most `max_entries` entries
    by `concurrency` threads; resumable from RUN/load-checkpoint.json (`resume`); the report, also written
    to RUN/load-report.json (not by a `dry_run`, which sends nothing). See `simulator.load`."""
    config = LoadConfig(Path(run_dir), server, concurrency, max_entries, resume, dry_run, token_env)
    return load_run(config, progress, notify)


def cases(
    run_dir: str | Path,
    *,
    out: str | Path = "cases",
    patients: int = 20,
    conditions: list[str] | None = None,
    seed: int = 0,
    history_years: float | None = None,
    detail: str = "brief",
) -> list[Path]:
    """Write teaching cases of a written run: OUT/<patient id>.html and .md (with their charts as SVG), then
    OUT/index.html, index.md and answers.json. `conditions`: names of conditions (t2d, copd,
    myocardial_infarction) or modules (type2_diabetes); default a mix of common ones. See
    `simulator.teaching.cases`."""
    from simulator.teaching.cases import CaseOptions, write_cases

    options = CaseOptions(history_years, detail)  # type: ignore[arg-type]
    return write_cases(run_dir, out, patients, conditions, seed, options)


def browse(run_dir: str | Path, *, out: str | Path | None = None, fhir_patients: int = 100) -> Path:
    """Write the cohort browser of a written run (default RUN/browse/index.html, one page that opens from
    file://), with the FHIR JSON of its first `fhir_patients` patients. See `simulator.teaching.browse`."""
    from simulator.teaching.browse import write_browser

    return write_browser(run_dir, out, fhir_patients)


def audit(run_dir: str | Path, *, examples: int = 3) -> AuditReport:
    """Check every record of a written run against the clinical consistency rules of the library it was made
    with (rules/audit.yaml): per rule, the records checked, the violations, their rate and `examples` of them
    (from different patients). Writes nothing. See `simulator.audit.report`."""
    return audit_run(run_dir, examples)
