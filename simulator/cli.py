"""The `ehrsim` command: a thin layer over the library API."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.status import Status

from simulator.api import human_bytes
from simulator.engine.run import REFERENCE_DATES, ConfigError, RunConfig
from simulator.model.loading import load_library
from simulator.model.parsing import LoadError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="ehrsim: synthetic EHR populations from calibrated disease modules.",
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

ModulesOption = Annotated[
    Path | None, typer.Option("--modules", help="Directory of module files (default: the shipped modules).")
]
RulesOption = Annotated[
    Path | None, typer.Option("--rules", help="Directory of rules files (default: the shipped rules).")
]


class RichProgress:
    """Shows a run's progress on stderr: a spinner while the library loads and the kernel compiles, then a bar."""

    def __init__(self) -> None:
        self.status: Status | None = None
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "build":
            self.status = err.status("loading the modules and the simulation kernel")
            self.status.start()
            return
        if self.status is not None:
            self.status.stop()
            self.status = None
        if self.bar is None:
            columns = (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            self.bar = Progress(*columns, console=err)
            self.task = self.bar.add_task("patients", total=total)
            self.bar.start()
        self.bar.update(self.task, completed=done)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
        if self.bar is not None:
            self.bar.stop()


def _fail(exc: Exception) -> None:
    """Report an input problem without a traceback and exit non-zero."""
    if isinstance(exc, LoadError):
        for problem in exc.problems:
            err.print(str(problem), markup=False)
        err.print(f"{len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''} found", markup=False)
    else:
        err.print(f"error: {exc}", markup=False)
    raise typer.Exit(1)


def _fail_writing(exc: OSError, where: str) -> None:
    """Report a file that could not be written (a full disk, an unwritable directory), without a traceback."""
    place = exc.filename or where
    _fail(OSError(f"{place}: {exc.strerror or exc} (the run stopped; nothing was left half-written)"))


# The option of each setting of RunConfig and ExportConfig (a ConfigError names its setting).
OPTIONS = {
    "patients": "--patients",
    "seed": "--seed",
    "mode": "--mode",
    "reference_date": "--reference-date",
    "chunk_size": "--chunk-size",
    "threads": "--threads",
    "modules_dir": "--modules",
    "rules_dir": "--rules",
    "out": "--out",
    "formats": "--format",
    "bundle_method": "--bundle-request",
    "base_url": "--base-url",
}


def _usage(exc: ConfigError) -> None:
    """An option that cannot be used: one line naming it, exit code 2 (a usage error, as typer's own)."""
    err.print(f"error: {OPTIONS.get(exc.field, exc.field)}: {exc.message}", markup=False)
    raise typer.Exit(2)


def _date(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError("reference_date", f"not a date YYYY-MM-DD (got {text!r})") from None


# Paragraphs of one line each: typer keeps the line breaks within every paragraph but the first.
# Bytes per patient: `ehrsim generate --patients 500 --seed 0 --format ndjson,bundles,csv,parquet` with the
# shipped modules (population mode), each folder's bytes / 500 (457,563, 527,036, 282,926 and 42,538).
GENERATE_HELP = "\n\n".join(
    [
        "Generate a population: OUT/fhir/ (FHIR Bulk ndjson and its manifest), OUT/bundles/, OUT/csv/, "
        "OUT/parquet/ as asked, and OUT/manifest.json, which lists every file of the run.",
        "An earlier ehrsim run in OUT is replaced: exactly the files its manifest.json lists are removed when the "
        "new run is complete (a failed run leaves it as it was), so runs never mix. A folder that is not empty and "
        "holds no ehrsim run is refused unless --overwrite. A file that no ehrsim manifest lists is never removed "
        "or replaced: a run that would write a file of the same name stops before it starts. The hidden "
        ".fhir.partial/ (and the like) folders of an interrupted run are removed.",
        "Size per patient: about 460 kB as ndjson, 530 kB as bundles, 280 kB as csv, 43 kB as parquet (shipped "
        "modules): 10,000 patients as ndjson are about 4.6 GB. --dry-run estimates a run's size from its first 100 "
        "patients and writes nothing; a run of 2,000 patients or more says its estimate before it writes, when "
        "over 1 GB.",
        "The first run compiles the simulation kernel (1-3 minutes); later runs reuse it. Progress and messages "
        "go to stderr, the summary line to stdout.",
    ]
)


@app.command(help=GENERATE_HELP)
def generate(
    patients: Annotated[int, typer.Option("--patients", "-n", help="Number of patients.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed and inputs give the same output.")] = 0,
    output: Annotated[Path, typer.Option("--out", "-o", help="Output folder (see above).")] = Path("out"),
    mode: Annotated[
        str, typer.Option(help="population (alive at the reference date) or lifetime (birth cohort).")
    ] = "population",
    reference_date: Annotated[
        str | None,
        typer.Option(
            help=f"YYYY-MM-DD, {REFERENCE_DATES[0]} to {REFERENCE_DATES[1]} (default: the demographics file's)."
        ),
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="Patients simulated per chunk (bounds memory).")] = 10_000,
    threads: Annotated[int | None, typer.Option(help="Threads, 1 to the number of cores (default: all).")] = None,
    modules: ModulesOption = None,
    rules: RulesOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no messages; errors only.")] = False,
    formats: Annotated[
        str, typer.Option("--format", "-f", help="Comma-separated outputs: ndjson, bundles, csv, parquet.")
    ] = "ndjson",
    bundle_request: Annotated[
        str, typer.Option(help="Bundle entries as POST (server ids) or PUT (stable ids: reloading never duplicates).")
    ] = "POST",
    base_url: Annotated[
        str | None,
        typer.Option(
            help="Absolute URL the fhir/ files will be at, for the Bulk manifest's file URLs "
            "(default: the file:// URL of OUT/fhir/)."
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Write into a folder that is not empty and holds no ehrsim run, beside its files "
            "(none of them is removed or replaced).",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be written and its estimated size; write nothing.")
    ] = False,
) -> None:
    """Generate a population into OUT (the help text is GENERATE_HELP)."""
    from simulator.api import ExportConfig, preview, run

    progress = None if quiet else RichProgress()
    notify = None if quiet else _notice
    try:
        config = RunConfig(
            patients=patients,
            seed=seed,
            mode=mode,  # type: ignore[arg-type]
            reference_date=_date(reference_date),
            chunk_size=chunk_size,
            threads=threads,
            modules_dir=modules,
            rules_dir=rules,
        )
        export = ExportConfig(output, formats, bundle_request.upper(), base_url, overwrite)  # type: ignore[arg-type]
        if dry_run:
            plan = preview(config, export, progress, notify)
        else:
            population = run(config, export, progress, notify)
    except ConfigError as exc:
        _usage(exc)
        return
    except (LoadError, ValueError) as exc:
        _fail(exc)
        return
    except OSError as exc:  # a full disk, an unwritable --out, an unreadable table: partial output is removed
        _fail_writing(exc, f"{output}/")
        return
    finally:
        if progress is not None:
            progress.close()
    if dry_run:
        out.print("dry run, nothing written: " + "\n".join(plan.lines()), markup=False)
        return
    counts = population.manifest["counts"]
    timings = population.manifest["timings_s"]
    seconds = timings.get("simulate_and_write_s", 0.0)
    rate = counts.get("patients", 0) / seconds if seconds else 0.0
    size = human_bytes(sum(f["bytes"] for f in population.manifest["files"].values()))
    out.print(
        f"{counts.get('patients', 0)} patients, {counts.get('events', 0)} events, "
        f"{counts.get('resources', 0)} FHIR resources, {counts.get('deaths', 0)} deaths "
        f"in {seconds:.1f} s ({rate:,.0f} patients/s) -> {output}/ ({size})",
        markup=False,
    )


def _notice(message: str) -> None:
    """A message for the user, on stderr with the progress."""
    err.print(message, markup=False)


@app.command()
def check(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Module files or directories (default: the shipped modules).")
    ] = None,
    rules: RulesOption = None,
) -> None:
    """Validate module and rules files; report every problem as file:line:col: path: message."""
    try:
        library = load_library(_module_source(paths), rules)
    except LoadError as exc:
        _fail(exc)
        return
    n_states = sum(len(m.states) for m in library.modules)
    out.print(f"ok: {len(library.modules)} modules, {n_states} states, {len(library.file_sha256)} files checked")


def _module_source(paths: list[Path] | None) -> list[Path] | None:
    """Module files named on the command line (directories expand to their .yaml files)."""
    if not paths:
        return None
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    return files


@app.command("modules")
def list_modules(modules: ModulesOption = None, rules: RulesOption = None) -> None:
    """List the modules with their states and what they emit."""
    try:
        library = load_library(modules, rules)
    except LoadError as exc:
        _fail(exc)
        return
    for module in library.modules:
        out.print(f"{module.name}  {module.title}  ({len(module.states)} states)  {library.document(module.name).file}")
        for kind in ("conditions", "medications", "observables", "attributes"):
            names = ", ".join(getattr(module, kind))
            if names:
                out.print(f"  {kind + ':':13}{names}")


@app.command()
def graph(
    name: Annotated[str, typer.Argument(help="Module name.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="Image file: .svg, .png or .pdf.")] = Path("module.svg"),
    modules: ModulesOption = None,
    rules: RulesOption = None,
) -> None:
    """Draw a module's state graph."""
    from simulator.model.drawing import draw_module
    from simulator.model.parsing import suggest

    try:
        library = load_library(modules, rules)
        names = [m.name for m in library.modules]
        if name not in names:
            raise ValueError(f"no module named '{name}'{suggest(name, names)}")
        draw_module(library.module(name), output)
    except (LoadError, ValueError) as exc:
        _fail(exc)
        return
    out.print(f"wrote {output}")


@app.command()
def schema(output: Annotated[Path | None, typer.Option("--out", "-o", help="File (default: stdout).")] = None) -> None:
    """Print the JSON Schema of module files (for editors)."""
    from simulator.model.schema import DiseaseModule

    text = json.dumps(DiseaseModule.model_json_schema(by_alias=True), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


@app.command()
def validate(
    run: Annotated[Path | None, typer.Argument(help="Output directory of `ehrsim generate` to validate.")] = None,
    patients: Annotated[
        int | None, typer.Option("--patients", "-n", help="Generate this many patients in memory instead.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated cohorts.")] = 0,
    lifetime_patients: Annotated[
        int, typer.Option(help="Size of the lifetime cohort for life expectancy (0: none).")
    ] = 20_000,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report directory (default: RUN/validation or validation/).")
    ] = None,
) -> None:
    """Compare a cohort with rules/targets; write report.html, report.md and report.json."""
    from simulator.api import validate as run_validate
    from simulator.fit.report import life_expectancy_lines, summary

    try:
        result, files = run_validate(
            run, patients=patients, seed=seed, lifetime_patients=lifetime_patients, report_dir=output
        )
    except (LoadError, FileNotFoundError, ValueError) as exc:
        _fail(exc)
        return
    except OSError as exc:
        _fail_writing(exc, f"{output or 'validation'}/")
        return
    s = summary(result)
    failed = len(s["failed_primary"])
    out.print(f"{s['passed_primary']} of {s['compared_primary']} primary targets pass; {failed} fail")
    expected = s["calibration_misses_expected_without_bias"]
    out.print(
        f"calibration targets: {s['passed_calibration']} of {s['calibration_targets']} pass"
        f" (a model without bias would miss {expected:.1f} at this cohort size, by sampling alone)"
    )
    for line in life_expectancy_lines(s):
        out.print(line)
    out.print(f"invariant violations: {s['invariant_violations']}; wrote {', '.join(str(f) for f in files)}")


@app.command()
def calibrate(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Modules to fit, or 'mortality' for the background mortality net of module deaths "
            "(default: every module with a declaration, then mortality)."
        ),
    ] = None,
    patients: Annotated[int, typer.Option("--patients", "-n", help="Patients simulated per evaluation.")] = 4_000,
    seed: Annotated[int, typer.Option(help="Seed of the fixed cohort (common random numbers).")] = 20_240_701,
    max_iterations: Annotated[
        int,
        typer.Option(
            help="Evaluations the optimizer may ask for per group, the start included (2: one step). "
            "The first Jacobian costs one more simulation per difference group; later steps update it "
            "from the step taken (Broyden), at no extra simulation."
        ),
    ] = 8,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Fit and print, write nothing.")] = False,
    alone: Annotated[
        bool,
        typer.Option(
            "--alone",
            help="Fit only the named modules' parameters, holding the rest of their dependency group at its "
            "fitted values; without it a named module is fitted with its group.",
        ),
    ] = False,
) -> None:
    """Fit the declared free parameters to the targets; write <module>.fitted.yaml when the loss improves.
    Then fit the background mortality so that all-cause mortality stays that of the life tables."""
    from simulator.api import calibrate as run_calibrate

    try:
        run_calibrate(
            names,
            patients=patients,
            seed=seed,
            max_iterations=max_iterations,
            dry_run=dry_run,
            alone=alone,
            report=out.print,
        )
    except (LoadError, ValueError) as exc:
        _fail(exc)
    except OSError as exc:
        _fail_writing(exc, "rules/targets/calibration/")


def main() -> None:
    app()
