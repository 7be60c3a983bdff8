"""The Python API the CLI is thin over.

`run(RunConfig, ExportConfig)` generates a population (in memory, or streamed chunk by chunk to files);
`generate(...)` is the same with keyword arguments; `validate(...)` compares a cohort with the targets
and writes the report; `calibrate(...)` fits declared parameters and background mortality. Progress and
messages go to callbacks, so a notebook, a script and the CLI each show them their own way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from simulator.engine.people import reference_date_of
from simulator.engine.run import Mode, RunConfig, Simulator, runtime
from simulator.export import DEFAULT_FORMATS, parse_formats
from simulator.export.bundles import Method
from simulator.export.writers import Export, ExportContext, write_atomic
from simulator.fit.calibration import fit, fit_groups, write_fitted
from simulator.fit.mortality import fit_background_mortality, write_shares
from simulator.fit.report import write_report
from simulator.fit.validation import Validation, default_targets, validate_generated, validate_run
from simulator.model.library import Library
from simulator.model.loading import load_library
from simulator.model.parsing import suggest
from simulator.tables.chunks import Chunk, chunks
from simulator.tables.population import Population
from simulator.version import __version__


def _manifest(sim: Simulator, counts: dict, timings: dict, files: dict) -> dict:
    config = {k: (str(v) if isinstance(v, Path | date) else v) for k, v in asdict(sim.config).items()}
    config["reference_date"] = str(
        reference_date_of(sim.library) if sim.config.reference_date is None else sim.config.reference_date
    )
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


def _count(counts: dict, chunk: Chunk) -> None:
    counts["patients"] = counts.get("patients", 0) + len(chunk.patients)
    counts["deaths"] = counts.get("deaths", 0) + int(chunk.patients["death_time"].notna().sum())
    counts["events"] = counts.get("events", 0) + len(chunk.events)
    by_kind = counts.setdefault("events_by_kind", {})
    for kind, n in chunk.events["kind"].value_counts(sort=False).items():
        by_kind[str(kind)] = by_kind.get(str(kind), 0) + int(n)


Progress = Callable[[str, int, int], None]
"""Called as (stage, done, total): ("build", 0, 1) before loading and compiling (a first run also
JIT-compiles the kernel, which takes minutes), then ("simulate", patients done, patients) after each chunk."""


@dataclass(frozen=True)
class ExportConfig:
    """Where and how a run is written: `out/fhir/` (Bulk ndjson), `out/bundles/` (transaction bundles,
    entries as POST, or PUT with stable ids), `out/csv/`, `out/parquet/`, and `out/manifest.json`."""

    out: Path
    formats: tuple[str, ...] = DEFAULT_FORMATS
    bundle_method: Method = "POST"

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "formats", parse_formats(self.formats))
        if self.bundle_method not in ("POST", "PUT"):
            raise ValueError(f"bundle_method must be 'POST' or 'PUT' (got {self.bundle_method!r})")


def run(config: RunConfig, export: ExportConfig | None = None, progress: Progress | None = None) -> Population:
    """Simulate `config`; without `export` return the tables in memory, else stream every chunk to the
    files asked for (each under a temporary name, renamed when complete) and return a Population that
    reads its tables back from them."""
    report = progress or (lambda stage, done, total: None)
    report("build", 0, 1)
    sim = Simulator.build(config)
    counts: dict = {}
    started = time.perf_counter()
    done = 0
    if export is None:
        frames = []
        for chunk in chunks(sim):
            frames.append(chunk)
            _count(counts, chunk)
            done += len(chunk.patients)
            report("simulate", done, config.patients)
        timings = {**sim.timings, "simulate_s": time.perf_counter() - started}
        return Population(
            _manifest(sim, counts, timings, {}),
            _patients=pd.concat([f.patients for f in frames], ignore_index=True),
            _events=pd.concat([f.events for f in frames], ignore_index=True),
        )
    out = export.out
    out.mkdir(parents=True, exist_ok=True)
    request = f"ehrsim generate --patients {config.patients} --seed {config.seed} --mode {config.mode}"
    writer = Export(out, export.formats, ExportContext.from_library(sim.library), request, export.bundle_method)
    try:
        for chunk in chunks(sim):
            writer.write(chunk.patients, chunk.events)
            _count(counts, chunk)
            done += len(chunk.patients)
            report("simulate", done, config.patients)
        files = writer.finish()
    except BaseException:
        writer.abort()
        raise
    counts["resources_by_type"] = dict(sorted(writer.resource_counts.items()))
    counts["resources"] = sum(writer.resource_counts.values())
    timings = {**sim.timings, "simulate_and_write_s": time.perf_counter() - started}
    manifest = _manifest(sim, counts, timings, files)
    manifest["formats"] = list(export.formats)
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=False).encode())
    return Population(manifest, out=out)


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
    progress: Progress | None = None,
) -> Population:
    """Generate a synthetic population: `run` with keyword arguments.

    Without `out`, the tables are returned in memory. With `out`, the run is streamed to the `formats`
    asked for (default FHIR Bulk ndjson; any of "ndjson", "bundles", "csv", "parquet", as a sequence or
    comma-separated)."""
    config = RunConfig(
        patients=patients,
        seed=seed,
        mode=mode,
        reference_date=reference_date,
        chunk_size=chunk_size,
        threads=threads,
        modules_dir=Path(modules_dir) if modules_dir else None,
        rules_dir=Path(rules_dir) if rules_dir else None,
    )
    export = ExportConfig(Path(out or "."), parse_formats(formats), bundle_method)  # checked even in memory
    return run(config, export if out is not None else None, progress)


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
) -> list[Path]:
    """Fit the declared free parameters of the modules named (default: all) to the targets, group by group,
    writing <module>.fitted.yaml where the loss improves; then, unless only modules were named, the
    background mortality net of module deaths. Returns the files written (none with `dry_run`)."""
    asked = list(names or [])
    library = load_library()
    groups = calibration_groups(library, asked, alone)
    targets = default_targets(library)
    written: list[Path] = []
    for group in groups:
        result = fit(library, targets, library.calibration, group, patients, seed, max_iterations, report)
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
