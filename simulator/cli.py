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
from simulator.engine.run import REFERENCE_DATES, RunConfig
from simulator.errors import ConfigError
from simulator.model.loading import load_library
from simulator.model.parsing import LoadError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="ehrsim: synthetic EHR populations from calibrated disease modules.",
)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)  # "file.yaml:100:14" stays as written
out = Console(highlight=False, soft_wrap=True, emoji=False)

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
            label = {"simulate": "simulating", "load": "loading resources"}.get(stage, stage)
            columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
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


# The option of each setting of RunConfig, ExportConfig, LoadConfig and calibrate (a ConfigError names its setting).
OPTIONS = {
    "patients": "--patients",
    "seed": "--seed",
    "mode": "--mode",
    "reference_date": "--end-date",
    "chunk_size": "--chunk-size",
    "threads": "--threads",
    "modules_dir": "--modules",
    "rules_dir": "--rules",
    "out": "--out",
    "formats": "--format",
    "bundle_method": "--bundle-request",
    "base_url": "--base-url",
    "server": "--server",
    "concurrency": "--concurrency",
    "max_entries": "--max-entries",
    "token_env": "--token-env",
    "resume": "--resume",
    "history_years": "--history",
    "compress": "--compress",
    "dask": "--dask",
    "decedent_years": "--decedents",
    "messiness": "--messiness",
    "params": "--params",
    "targets": "--targets",
}


def _usage(exc: ConfigError) -> None:
    """An option that cannot be used: one line naming it, exit code 2 (a usage error, as typer's own)."""
    err.print(f"error: {OPTIONS.get(exc.field, exc.field)}: {exc.message}", markup=False)
    raise typer.Exit(2)


def _names(text: str | None) -> list[str] | None:
    """A comma-separated list option as its items (None when not given)."""
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def _date(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError("reference_date", f"not a date YYYY-MM-DD (got {text!r})") from None


def _history_years(text: str) -> float | None:
    """`--history`: a number of years, or `all` (the whole life: None)."""
    if text.strip().lower() == "all":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError("history_years", f"a number of years or 'all' (got {text!r})") from None


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
        "Size per patient: about 860 kB as ndjson, 960 kB as bundles, 360 kB as csv, 49 kB as parquet (shipped "
        "modules, 1,000 patients, seed 42): 10,000 patients as ndjson are about 8.7 GB. --dry-run estimates a run's "
        "size from its first 100 patients and writes nothing; a run of 2,000 patients or more says its estimate "
        "before it writes, when over 1 GB. Records are whole lives; --history 10 writes about a third as much "
        "(315 kB against 861 kB a patient as ndjson, its 10 years of decedents included).",
        "The first run compiles the simulation kernel (under a minute); later runs reuse it. Progress and messages "
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
            "--end-date",
            "--reference-date",
            help=f"{REFERENCE_DATES[0]} to {REFERENCE_DATES[1]} (YYYY-MM-DD): the day the simulated world ends, "
            "the record end of everyone alive; population mode's cohort is alive then, with the Census age-sex "
            "pyramid of the demographics file, and lifetime mode's is born in the year before (default: the "
            "demographics file's Census date, 2024-07-01, fixed so a run is reproducible; recorded in "
            "manifest.json as config.reference_date). --reference-date is its former name.",
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
    history: Annotated[
        str,
        typer.Option(
            "--history",
            metavar="YEARS|all",
            help="Years of history each written record holds before its end (death, else --end-date), with what "
            "a chart carries from before: conditions and medications still active then, every immunization, "
            "major procedures (rules/history.yaml), the latest height and weight. all (the default): the whole "
            "life. Synthea's default is 10. The events table stays the whole simulation.",
        ),
    ] = "all",
    decedents: Annotated[
        str | None,
        typer.Option(
            "--decedents",
            metavar="YEARS|none",
            help="Population mode: the run also holds the patients who died in these years before --end-date, "
            "as a real extract does, flagged is_decedent in the patient table (their number and ages at death "
            "follow the NCHS life tables; docs/semantics.md). Default: the --history window, else 1 year. "
            "none: the living cohort only. Validation uses the living cohort only.",
        ),
    ] = None,
    messiness: Annotated[
        str,
        typer.Option(
            metavar="PROFILE",
            help="clean, typical, hostile or a profile file. Messy data: the written record (FHIR, CSV, Parquet "
            "alike) gets the errors of a real EHR extract (missing values, duplicates, unit variants, late "
            "entries, typos, miscoding, out-of-range values, shifted times) at the rates of the profile "
            "(rules/messiness/typical.yaml, hostile.yaml, or a profile file), each change logged in "
            "OUT/truth/corruptions.parquet (and .csv). clean (the default): none. See docs/messiness.md.",
        ),
    ] = "clean",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be written and its estimated size; write nothing.")
    ] = False,
    compress: Annotated[
        str | None,
        typer.Option(
            metavar="gzip|zstd",
            help="Write the Bulk ndjson compressed: fhir/<Type>.ndjson.gz (gzip) or .ndjson.zst (zstd, needs "
            'pip install "ehrsim[zstd]"); the same seed gives the same bytes.',
        ),
    ] = None,
    streams: Annotated[
        str | None,
        typer.Option(
            metavar="icu,ward,ed,cgm,abpm",
            help="Dense monitoring streams for every stay of these settings: heart rate, respiratory rate, SpO2, "
            "blood pressures and temperature through the charted vital signs, with physiological variability, "
            "sensor noise, artefacts and dropouts (rules/streams.yaml); cgm: the 5-minute glucose of insulin-treated "
            "patients' home CGMs; abpm: 24-hour ambulatory blood pressure at hypertension confirmation. "
            "Written to OUT/streams/, OUT/truth/stream_artefacts.parquet, OUT/truth/stream_events.parquet and, "
            "with ndjson, fhir/Device.ndjson and "
            "fhir/Observation.streams.ndjson (valueSampledData). See docs/streams.md.",
        ),
    ] = None,
    stream_interval: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="Sampling interval of --streams, 1 to 3600 seconds (default 60)."),
    ] = None,
    scenario: Annotated[
        Path | None,
        typer.Option(
            "--scenario",
            help="A scenario file (docs/scenarios.md): its patients, each with the course it asks for, their "
            "weights and ground truth in OUT/truth/; its patients, mode and history replace --patients, --mode "
            "and --history, and it has no decedents.",
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            metavar="local:N|URL",
            help='Spread the run over a Dask cluster (pip install "ehrsim[dask]"): local:N starts N worker '
            "processes here; an address uses a running scheduler. Every --chunk-size patients are a part, "
            "written by a worker as its own files (fhir/Patient.000.ndjson, ...) that, concatenated in order, "
            "are the one-process files. Workers must see OUT at the same path. See docs/performance.md.",
        ),
    ] = None,
) -> None:
    """Generate a population into OUT (the help text is GENERATE_HELP)."""
    from simulator.api import ExportConfig, decedent_years, preview, run
    from simulator.export.streams.writer import parse_streams
    from simulator.scenario.output import scenario_settings
    from simulator.scenario.run import ScenarioError

    progress = None if quiet else RichProgress()
    notify = None if quiet else _notice
    try:
        if scenario is not None:
            settings = scenario_settings(scenario)
            patients, mode, decedents = settings.patients, settings.mode, "none"
            history = history if settings.history.years is None else f"{settings.history.years:g}"
            streams = streams if streams is not None else (",".join(settings.streams.settings) or None)
            stream_interval = settings.streams.interval_seconds if stream_interval is None else stream_interval
            messiness = settings.messiness if messiness == "clean" else messiness
        export = ExportConfig(
            output,
            formats,
            bundle_request.upper(),  # type: ignore[arg-type]
            base_url,
            overwrite,
            _history_years(history),
            compress and compress.lower(),
            messiness,
            parse_streams(streams),
            stream_interval,
        )
        config = RunConfig(
            patients=patients,
            seed=seed,
            mode=mode,  # type: ignore[arg-type]
            reference_date=_date(reference_date),
            chunk_size=chunk_size,
            threads=threads,
            modules_dir=modules,
            rules_dir=rules,
            decedent_years=decedent_years(mode, decedents, export.history_years),  # type: ignore[arg-type]
        )
        if dry_run:
            plan = preview(config, export, progress, notify)
        else:
            population = run(config, export, progress, notify, dask, scenario)
    except ConfigError as exc:
        _usage(exc)
        return
    except (LoadError, ValueError, ScenarioError) as exc:
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
        f"{counts.get('resources', 0)} FHIR resources, {counts.get('decedents', 0)} decedents, "
        f"{counts.get('deaths', 0)} deaths "
        f"in {seconds:.1f} s ({rate:,.0f} patients/s) -> {output}/ ({size})",
        markup=False,
    )
    if (made := population.manifest.get("scenario")) is not None:
        out.print(
            f"scenario: {made['histories_simulated']} histories simulated for {made['patients']} patients "
            f"({made['rejected']} rejected); weights and ground truth in {output}/truth/",
            markup=False,
        )


def _notice(message: str) -> None:
    """A message for the user, on stderr with the progress."""
    err.print(message, markup=False)


@app.command()
def check(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Module files (a directory: its .yaml files), checked in the library, each in place of the "
            "library's module of the same name (default: the whole library)."
        ),
    ] = None,
    modules: ModulesOption = None,
    rules: RulesOption = None,
    alone: Annotated[
        bool, typer.Option("--alone", help="Check the files without the library's other modules.")
    ] = False,
) -> None:
    """Validate module and rules files; report every problem as file:line:col: path: message."""
    from simulator.model.loading import check_in_library

    files = _module_source(paths)
    if files is not None and alone:
        err.print("note: checked alone: names that other modules define were not resolved", markup=False)
    try:
        if files is None:
            library = load_library(modules, rules)
        else:
            library = load_library(files, rules) if alone else check_in_library(files, modules, rules)
    except LoadError as exc:
        _fail(exc)
        return
    n_states = sum(len(m.states) for m in library.modules)
    named = "" if files is None else f"{len(files)} named, {'alone' if alone else 'in the library'}; "
    out.print(f"ok: {named}{len(library.modules)} modules, {n_states} states, {len(library.file_sha256)} files checked")


scenario_app = typer.Typer(help="Scenario files: cohorts conditioned on what happens to each patient.")
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("check")
def scenario_check(
    path: Annotated[Path, typer.Argument(help="A scenario file (docs/scenarios.md).")],
    modules: ModulesOption = None,
    rules: RulesOption = None,
) -> None:
    """Check a scenario file against the library; report every problem as file:line:col: path: message."""
    from simulator.scenario.output import check_scenario, scenario_summary

    try:
        plan, library = check_scenario(path, modules, rules)
    except (LoadError, OSError) as exc:
        _fail(exc)
        return
    out.print(f"ok: {scenario_summary(plan, library)}", markup=False)


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
def schema(
    output: Annotated[Path | None, typer.Option("--out", "-o", help="File (default: stdout).")] = None,
    scenario: Annotated[bool, typer.Option("--scenario", help="The schema of scenario files instead.")] = False,
) -> None:
    """Print the JSON Schema of module files, or of scenario files (for editors)."""
    from simulator.model.schema import DiseaseModule
    from simulator.scenario.schema import Scenario

    model = Scenario if scenario else DiseaseModule
    text = json.dumps(model.model_json_schema(by_alias=True), indent=2) + "\n"
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
    audited = f"; audit violations: {s['audit_violations']:,}" if s["audit_violations"] is not None else ""
    out.print(f"invariant violations: {s['invariant_violations']}{audited}; wrote {', '.join(str(f) for f in files)}")


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
    lifetime_patients: Annotated[
        int | None,
        typer.Option(
            "--lifetime-patients",
            help="Lives of the birth cohort followed to death that event-rate, event-share and life-expectancy "
            "targets are read from, simulated at each evaluation (default: --patients).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Fit and print, write nothing.")] = False,
    alone: Annotated[
        bool,
        typer.Option(
            "--alone",
            help="Fit only the named modules' parameters, holding the rest of their dependency group at its "
            "fitted values; without it a named module is fitted with its group.",
        ),
    ] = False,
    params: Annotated[
        str | None,
        typer.Option(
            "--params",
            metavar="NAME[,NAME...]",
            help="Fit only these declared parameters of the named modules (NAME or MODULE.NAME), holding every "
            "other one at its current (fitted or module file) value; the fitted file records which moved. "
            "Implies --alone.",
        ),
    ] = None,
    targets: Annotated[
        str | None,
        typer.Option(
            "--targets",
            metavar="PATTERN[,PATTERN...]",
            help="Fit to only the declared targets whose ids match these shell-style patterns, e.g. "
            "'stroke_history/*'. Implies --alone.",
        ),
    ] = None,
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
            lifetime_patients=lifetime_patients,
            params=_names(params),
            targets=_names(targets),
        )
    except ConfigError as exc:
        _usage(exc)
    except (LoadError, ValueError) as exc:
        _fail(exc)
    except OSError as exc:
        _fail_writing(exc, "rules/targets/calibration/")


LOAD_HELP = "\n\n".join(
    [
        "Load a run written by `ehrsim generate` into a FHIR R4 server: its fhir/*.ndjson (else its bundles/), the "
        "shared resources first, then each patient's resources together, every one PUT at its stable id inside "
        "transactions of at most --max-entries entries, so a rerun never duplicates anything.",
        "A request the server refuses as a whole is sent again in halves, down to the resource at fault; when both "
        "halves pass, later requests are no larger. Busy (429, 5xx) and unreachable servers are retried with "
        "backoff, a few times. RUN/load-checkpoint.json records the patients loaded: --resume goes on from it after "
        "an interruption. Afterwards the server's count of each resource type is compared with the export's.",
        "A summary goes to stdout, the progress to stderr, the full report (failures with the server's "
        "OperationOutcome) to RUN/load-report.json. The exit code is 1 when a resource failed or the server holds "
        "fewer of a type than the export.",
    ]
)


@app.command(help=LOAD_HELP)
def load(
    run: Annotated[Path, typer.Argument(help="Output folder of `ehrsim generate` (with fhir/ or bundles/).")],
    server: Annotated[str, typer.Option(help="Base URL of the FHIR R4 server, e.g. http://localhost:8080/fhir.")],
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once, 1 to 64.")] = 4,
    resume: Annotated[
        bool, typer.Option("--resume", help="Go on from RUN/load-checkpoint.json, skipping the patients loaded.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be sent; send nothing (no network), write nothing.")
    ] = False,
    max_entries: Annotated[
        int, typer.Option(help="Most entries in one transaction (50: the most updates Medplum takes in one).")
    ] = 50,
    token_env: Annotated[
        str | None, typer.Option(help="Environment variable holding a bearer token for the server.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no messages; errors only.")] = False,
) -> None:
    """Load a run into a FHIR server (the help text is LOAD_HELP)."""
    from simulator.api import load as run_load
    from simulator.load import RunReadError
    from simulator.load.client import ServerError

    progress = None if quiet else RichProgress()
    try:
        report = run_load(
            run,
            server,
            concurrency=concurrency,
            max_entries=max_entries,
            resume=resume,
            dry_run=dry_run,
            token_env=token_env,
            progress=progress,
            notify=None if quiet else _notice,
        )
    except ConfigError as exc:
        _usage(exc)
    except RunReadError as exc:
        _fail(exc)
        return
    except ServerError as exc:
        _fail(ValueError(f"{exc} (the patients loaded so far are in {run}/load-checkpoint.json: --resume goes on)"))
        return
    except KeyboardInterrupt:
        err.print(f"interrupted: rerun with --resume to go on where it stopped ({run}/load-checkpoint.json)")
        raise typer.Exit(130) from None
    except OSError as exc:
        _fail_writing(exc, f"{run}/")
        return
    finally:
        if progress is not None:
            progress.close()
    out.print("\n".join(report.lines()), markup=False)
    if report.failed or report.missing_on_server:
        raise typer.Exit(1)


@app.command("cases")
def cases_command(
    run: Annotated[Path, typer.Argument(help="Output folder of `ehrsim generate`, with parquet or csv tables.")],
    patients: Annotated[int, typer.Option("--patients", "-n", help="Number of cases.")] = 20,
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder of the case files.")] = Path("cases"),
    condition: Annotated[
        list[str] | None,
        typer.Option(
            "--condition",
            "-c",
            help="A condition (t2d, copd, myocardial_infarction) or module (type2_diabetes) the patients had "
            "diagnosed; repeat it for several (default: a mix of common conditions).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draw of patients.")] = 0,
    history_years: Annotated[
        float | None, typer.Option(help="Years of history told before the index event (default: from birth).")
    ] = None,
    detail: Annotated[
        str, typer.Option(help="brief (the moments that change the story, the rest summed up) or full (every visit).")
    ] = "brief",
) -> None:
    """Write teaching cases: a summary, the history in sentences, the course, charts and questions answered
    from the ground truth, as OUT/<patient id>.html and .md, with OUT/index.html and answers.json."""
    import time

    from simulator.api import cases

    started = time.perf_counter()
    try:
        written = cases(
            run,
            out=output,
            patients=patients,
            conditions=condition,
            seed=seed,
            history_years=history_years,
            detail=detail,
        )
    except (LoadError, FileNotFoundError, ValueError) as exc:
        _fail(exc)
        return
    except OSError as exc:
        _fail_writing(exc, f"{output}/")
        return
    n = sum(1 for path in written if path.suffix == ".md" and path.name != "index.md")
    seconds = time.perf_counter() - started
    out.print(f"wrote {n} cases to {output}/ in {seconds:.1f} s: open {output / 'index.html'}", markup=False)


@app.command("browse")
def browse_command(
    run: Annotated[Path, typer.Argument(help="Output folder of `ehrsim generate`, with parquet or csv tables.")],
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder of the page (default: RUN/browse).")
    ] = None,
    fhir_patients: Annotated[
        int,
        typer.Option(help="Patients whose FHIR JSON the page shows (the first ones; about 0.5 MB each)."),
    ] = 100,
) -> None:
    """Write the cohort browser: one page (RUN/browse/index.html) that opens from file:// with no server,
    with a searchable patient list, timelines, lab and vital-sign charts and the FHIR JSON of a resource."""
    import time

    from simulator.api import browse

    started = time.perf_counter()
    try:
        page = browse(run, out=output, fhir_patients=fhir_patients)
    except (LoadError, FileNotFoundError, FileExistsError, ValueError) as exc:
        _fail(exc)
        return
    except OSError as exc:
        _fail_writing(exc, f"{output or run / 'browse'}/")
        return
    out.print(f"wrote {page} in {time.perf_counter() - started:.1f} s: open it in a browser", markup=False)


@app.command("audit")
def audit_command(
    run: Annotated[Path, typer.Argument(help="Output folder of `ehrsim generate`, with parquet or csv tables.")],
    examples: Annotated[
        int, typer.Option("--examples", min=0, help="Examples kept per rule (each from another patient).")
    ] = 3,
    json_file: Annotated[Path | None, typer.Option("--json", help="Also write the report to this JSON file.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any rule is violated.")] = False,
) -> None:
    """Check every record of a run against the clinical consistency rules (rules/audit.yaml) and print the
    violations by rule, with examples. Exits 0 when the audit ran, violations or not (1 with --strict).
    Writes nothing into the run."""
    from rich.table import Table
    from rich.text import Text

    from simulator.api import audit

    try:
        report = audit(run, examples=examples)
    except (LoadError, FileNotFoundError, ValueError) as exc:
        _fail(exc)
        return
    rows = [
        (
            r.id,
            f"{r.checked:,}",
            f"{r.violations:,}",
            "-" if r.rate is None else f"{r.rate:.2%}",
            f"{r.examples[0]['what']}: {r.examples[0]['detail']}" if r.examples else "",
        )
        for r in report.rules
    ]
    table = Table(title=f"audit of {report.run}")
    for i, name in enumerate(("rule", "checked", "violations", "rate")):
        width = max(len(name), *(len(row[i]) for row in rows))
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True, min_width=width)
    table.add_column("example")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row[:-1]), Text(row[-1], no_wrap=True, overflow="ellipsis"))
    out.print(table)
    for r in report.rules:
        if r.examples:
            out.print(f"{r.id}:", markup=False)
            for e in r.examples:
                out.print(f"  {e['patient_id']} {e['time'][:16]} {e['what']}: {e['detail']}", markup=False)
    broken = sum(1 for r in report.rules if r.violations)
    out.print(
        f"{report.violations:,} violations of {broken} of {len(report.rules)} rules in {report.patients:,} patients"
        f" ({report.seconds:.1f} s)",
        markup=False,
    )
    if json_file is not None:
        try:
            out.print(f"wrote {report.write_json(json_file)}", markup=False)
        except OSError as exc:
            _fail_writing(exc, str(json_file))
    if strict and report.violations:
        raise typer.Exit(1)


def main() -> None:
    app()
