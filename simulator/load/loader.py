"""Loading a written run into a FHIR server (`ehrsim load`).

The shared resources first, then the patients, each patient's resources together: every resource is PUT at
its stable id inside transactions (or batches, where the server's CapabilityStatement offers no
transactions) of at most `max_entries` entries, so a rerun never duplicates anything. A request that the
server refuses as a whole is sent again in halves, down to the entry at fault, whose OperationOutcome the
report keeps; when both halves pass, the size was the problem, and later requests are no larger. Patients
are sent by a pool of threads; a checkpoint in the run folder, written atomically, records the patients
loaded, so `resume` goes on where an interruption stopped. Afterwards the server's count of each type is
compared with the export's. Every loop is bounded: retries by number and wait, requests by time, halving
by the size of the request.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from simulator.errors import ConfigError
from simulator.files import write_atomic
from simulator.load.client import (
    FhirClient,
    Response,
    ServerError,
    check_server_url,
    interactions,
    is_loopback,
    outcome_text,
)
from simulator.load.source import BundleRun, NdjsonRun, PatientResources, Resource, open_run

CHECKPOINT = "load-checkpoint.json"
REPORT = "load-report.json"
MAX_LISTED_FAILURES = 1_000  # failures listed in the report (all are counted)
CHECKPOINT_EVERY_S = 2.0  # an interruption that leaves no time to write loses at most this much progress
SAMPLE_REQUESTS = 3  # requests a dry run describes
UNANSWERED_LIMIT = 3  # requests in a row without an answer (retries spent) that stop the load

Progress = Callable[[str, int, int], None]
"""Called as ("load", resources done, resources of the run) as patients are loaded (those a resumed load
skips count as done)."""
Notify = Callable[[str], None]


class _Stopped(Exception):
    """Raised in a sending thread once loading stops (interrupted, or `max_requests` reached)."""


@dataclass(frozen=True)
class LoadConfig:
    """What to load where: the run folder (`fhir/*.ndjson`, else `bundles/`), the server's base URL, the
    threads sending (`concurrency`), the most entries in one request (`max_entries`; 50 is the most updates a
    Medplum transaction may hold), whether to go on from the checkpoint (`resume`) or only say what would
    be sent (`dry_run`), and the environment variable holding a bearer token (`token_env`). `max_requests`
    stops loading after that many requests, as an interruption would (resumable)."""

    run_dir: Path
    server: str
    concurrency: int = 4
    max_entries: int = 50
    resume: bool = False
    dry_run: bool = False
    token_env: str | None = None
    retries: int = 5
    timeout_s: float = 120.0
    max_requests: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        try:
            object.__setattr__(self, "server", check_server_url(self.server))
        except ValueError as exc:
            raise ConfigError("server", str(exc)) from None
        bounds = {"concurrency": (1, 64), "max_entries": (1, 10_000), "retries": (0, 20)}
        for name, (low, high) in bounds.items():
            if not low <= getattr(self, name) <= high:
                raise ConfigError(name, f"must be {low} to {high} (got {getattr(self, name)})")
        if not 0 < self.timeout_s <= 3600:
            raise ConfigError("timeout_s", f"must be over 0 and at most 3600 s (got {self.timeout_s})")
        if self.max_requests is not None and self.max_requests < 1:
            raise ConfigError("max_requests", f"must be at least 1 (got {self.max_requests})")
        if self.token_env is not None and not os.environ.get(self.token_env):
            raise ConfigError("token_env", f"the environment variable {self.token_env} is not set")

    def token(self) -> str | None:
        return os.environ[self.token_env] if self.token_env else None


@dataclass
class Failure:
    resource: str  # Type/id
    status: int  # the HTTP status of its request or entry (0: no answer)
    outcome: str  # the server's OperationOutcome as text


@dataclass
class LoadReport:
    """What a load did: written as JSON to `RUN/load-report.json` (not by a dry run)."""

    server: str
    run_dir: str
    source: str  # "ndjson" or "bundles"
    bundle_type: str  # "transaction" or "batch"
    dry_run: bool
    resumed: bool
    started: str
    max_entries: int  # asked for
    entries_per_request: int  # the most the server took (max_entries, or less where it refused)
    requests: int = 0  # bundles sent, halves included
    retries: int = 0
    seconds: float = 0.0
    loaded: int = 0  # resources the server accepted
    failed: int = 0
    skipped: int = 0  # loaded before, by the load this one resumed
    interrupted: bool = False
    failures: list[Failure] = field(default_factory=list)  # the first MAX_LISTED_FAILURES
    counts: dict[str, dict[str, int | None]] = field(default_factory=dict)  # type -> exported, server
    sample_requests: list[str] = field(default_factory=list)  # a dry run: the first requests it would send

    def add(self, ok: int, failures: list[Failure]) -> None:
        self.loaded += ok
        self.failed += len(failures)
        self.failures += failures[: MAX_LISTED_FAILURES - len(self.failures)]

    @property
    def resources_per_s(self) -> float:
        return self.loaded / self.seconds if self.seconds else 0.0

    @property
    def missing_on_server(self) -> dict[str, tuple[int, int | None]]:
        """Types the server holds fewer of than the export (or does not count): exported, on the server."""
        return {
            t: (c["exported"], c["server"])  # type: ignore[misc]
            for t, c in self.counts.items()
            if c["server"] is None or c["server"] < c["exported"]  # type: ignore[operator]
        }

    def to_json(self) -> bytes:
        data = {**asdict(self), "resources_per_s": round(self.resources_per_s, 1)}
        return orjson.dumps(data, option=orjson.OPT_INDENT_2)

    def lines(self) -> list[str]:
        """The summary for a person."""
        mean = (self.loaded + self.failed) / self.requests if self.requests else 0.0
        requests = (
            f"{self.requests:,} {self.bundle_type} requests of up to {self.entries_per_request} entries "
            f"({mean:.1f} on average)"
        )
        if self.dry_run:
            lines = [
                f"dry run, nothing sent: {self.loaded:,} resources from {self.run_dir} ({self.source}) would go "
                f"to {self.server} in {requests}"
            ]
        else:
            lines = [
                f"loaded {self.loaded:,} resources from {self.run_dir} ({self.source}) into {self.server} in "
                f"{self.seconds:.1f} s ({self.resources_per_s:,.0f} resources/s): {requests}, {self.retries} retries"
            ]
        if self.skipped:
            lines.append(f"{self.skipped:,} resources loaded before, by the load this one resumed")
        if self.failed:
            lines.append(f"{self.failed:,} resources failed; the first: ")
            lines += [f"  {f.resource}: {f.status} {f.outcome}" for f in self.failures[:5]]
        if self.interrupted:
            lines.append("interrupted: rerun with --resume to go on where it stopped")
        if self.counts:
            missing = self.missing_on_server
            more = {t: c for t, c in self.counts.items() if (c["server"] or 0) > (c["exported"] or 0)}
            if not missing and not more:
                lines.append(f"the server's counts equal the export's ({len(self.counts)} types)")
            for t, (exported, server) in missing.items():
                lines.append(
                    f"{t}: {exported:,} exported, {'no count' if server is None else f'{server:,}'} on the server"
                )
            for t, c in more.items():
                lines.append(f"{t}: {c['exported']:,} exported, {c['server']:,} on the server (it held others before)")
        for request in self.sample_requests:
            lines.append(f"  {request}")
        return lines


@dataclass
class Checkpoint:
    """The patients loaded so far (every ordinal below `below`, and those in `done`), and whether the shared
    resources were; for one run, source and server (`key`)."""

    key: dict[str, str]
    shared_done: bool = False
    below: int = 0
    done: set[int] = field(default_factory=set)

    def add(self, ordinals: Iterable[int]) -> None:
        self.done.update(ordinals)
        while self.below in self.done:
            self.done.remove(self.below)
            self.below += 1

    def has(self, ordinal: int) -> bool:
        return ordinal < self.below or ordinal in self.done

    def save(self, path: Path) -> None:
        data = {"key": self.key, "shared_done": self.shared_done, "below": self.below, "done": sorted(self.done)}
        write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))

    @classmethod
    def read(cls, path: Path, key: dict[str, str]) -> Checkpoint:
        """The checkpoint at `path` (a new one if there is none); ConfigError if it is another load's."""
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls(key)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError("resume", f"{path}: unreadable ({exc}); load without --resume") from None
        if data.get("key") != key:
            raise ConfigError(
                "resume",
                f"{path} is the checkpoint of another load ({data.get('key')}); load without --resume to start over",
            )
        return cls(key, bool(data["shared_done"]), int(data["below"]), set(data["done"]))


class _Limit:
    """Entries per request: at most the configured number, lowered for good when the server refuses a size."""

    def __init__(self, n: int):
        self.n = n
        self.lock = threading.Lock()

    def lower(self, n: int) -> None:
        with self.lock:
            self.n = min(self.n, n)


class _DryClient:
    """Takes every request and sends nothing (a dry run)."""

    n_requests = 0
    n_retries = 0

    def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        return Response(200, b"")

    def close(self) -> None:
        pass


def _bundle(resources: list[Resource], server: str, bundle_type: str) -> bytes:
    """A transaction or batch that PUTs each resource at its id."""
    parts = [b'{"resourceType":"Bundle","type":"', bundle_type.encode(), b'","entry":[']
    for k, resource in enumerate(resources):
        url = resource.reference.encode()
        parts += [b"," if k else b"", b'{"fullUrl":"', server.encode(), b"/", url, b'","resource":', resource.json]
        parts += [b',"request":{"method":"PUT","url":"', url, b'"}}']
    parts.append(b"]}")
    return b"".join(parts)


def _units(patients: Iterator[PatientResources], max_entries: int) -> Iterator[list[PatientResources]]:
    """Patients in groups sent by one thread: as many as fit in one request, or one larger patient."""
    unit: list[PatientResources] = []
    size = 0
    for patient in patients:
        if unit and size + len(patient.resources) > max_entries:
            yield unit
            unit, size = [], 0
        unit.append(patient)
        size += len(patient.resources)
    if unit:
        yield unit


class Loader:
    """One load of `config` (see the module's docstring); `run` does it and returns the report."""

    def __init__(self, config: LoadConfig, progress: Progress, notify: Notify):
        self.config = config
        self.progress = progress
        self.notify = notify
        self.limit = _Limit(config.max_entries)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.n_sent = 0
        self.sample: list[str] = []
        self.client: FhirClient | _DryClient = _DryClient()
        self.bundle_type = "transaction"
        self.interrupted = False  # a unit left unfinished
        self.n_unanswered = 0  # requests in a row that got no answer, retries spent

    def _open_client(self) -> None:
        config = self.config
        if config.dry_run:
            return
        token = config.token()
        if token and config.server.startswith("http://") and not is_loopback(config.server):
            self.notify(f"warning: the bearer token goes in clear text to {config.server} (plain http)")
        self.client = FhirClient(
            config.server, token, connections=config.concurrency, timeout_s=config.timeout_s, retries=config.retries
        )
        statement = self.client.capabilities()
        offered = interactions(statement)
        if not statement:
            self.notify(f"no CapabilityStatement at {config.server}/metadata: sending transactions")
        elif "transaction" not in offered and "batch" in offered:
            self.bundle_type = "batch"
            self.notify("the server offers batches, not transactions: sending batches")
        elif offered and "transaction" not in offered:
            raise ConfigError("server", "its CapabilityStatement offers neither transactions nor batches")
        version = statement.get("fhirVersion")
        if version and not str(version).startswith("4.0"):
            self.notify(f"warning: the server speaks FHIR {version}; the run is FHIR R4 (4.0.1)")

    def _entry_results(self, piece: list[Resource], response: Response) -> tuple[int, list[Failure]]:
        """What the server answered for each entry (a batch may take some and refuse others)."""
        entries = response.json().get("entry")
        if not isinstance(entries, list) or len(entries) != len(piece):
            return len(piece), []
        failures = []
        for resource, entry in zip(piece, entries, strict=True):
            answer = (entry.get("response") or {}) if isinstance(entry, dict) else {}
            status = str(answer.get("status", "200")).split(" ")[0]
            if not status.startswith("2"):
                code = int(status) if status.isdigit() else 0
                failures.append(Failure(resource.reference, code, outcome_text(answer.get("outcome"), status)))
        return len(piece) - len(failures), failures

    def _send_piece(self, piece: list[Resource]) -> tuple[int, list[Failure]]:
        """One request; where the server refuses it as a whole, its two halves (down to single entries)."""
        body = _bundle(piece, self.config.server, self.bundle_type)
        with self.lock:
            if self.stop.is_set():
                raise _Stopped
            self.n_sent += 1
            if self.config.max_requests and self.n_sent >= self.config.max_requests:
                self.stop.set()
            if self.config.dry_run and len(self.sample) < SAMPLE_REQUESTS:
                urls = ", ".join(f"PUT {r.reference}" for r in piece[:3])
                more = f", ... ({len(piece)} entries)" if len(piece) > 3 else ""
                self.sample.append(f"POST {self.config.server} {self.bundle_type}, {len(body):,} bytes: {urls}{more}")
        response = self.client.request("POST", "", body)
        with self.lock:
            self.n_unanswered = self.n_unanswered + 1 if response.status == 0 else 0
            if self.n_unanswered >= UNANSWERED_LIMIT:
                raise ServerError(f"{self.config.server} stopped answering: {response.body.decode(errors='replace')}")
        if response.ok:
            return self._entry_results(piece, response)
        if len(piece) > 1 and 400 <= response.status < 500:
            half = len(piece) // 2
            first, second = self._send_piece(piece[:half]), self._send_piece(piece[half:])
            if not first[1] and not second[1]:
                self.limit.lower(half)  # every entry passed: the size was refused
            return first[0] + second[0], first[1] + second[1]
        text = outcome_text(response.json(), response.body[:300].decode(errors="replace"))
        return 0, [Failure(r.reference, response.status, text) for r in piece]

    def _send(self, resources: list[Resource]) -> tuple[int, list[Failure]]:
        """The resources in order, in requests of the current size."""
        ok, failures, start = 0, [], 0
        while start < len(resources):
            piece = resources[start : start + self.limit.n]
            n_ok, piece_failures = self._send_piece(piece)
            ok += n_ok
            failures += piece_failures
            start += len(piece)
        return ok, failures

    def _send_unit(self, unit: list[PatientResources]) -> tuple[int, list[Failure]]:
        return self._send([r for patient in unit for r in patient.resources])

    def run(self) -> LoadReport:
        config = self.config
        source = open_run(config.run_dir)
        key = {"server": config.server, "run": source.identity, "source": source.kind}
        checkpoint_path = config.run_dir / CHECKPOINT
        checkpoint = Checkpoint.read(checkpoint_path, key) if config.resume else Checkpoint(key)
        try:
            self._open_client()
            report = self._load(source, checkpoint, checkpoint_path)
            if not (config.dry_run or report.interrupted):
                self.notify("reading back the server's counts")
                report.counts = {
                    t: {"exported": n, "server": self.client.count(t)}  # type: ignore[union-attr]
                    for t, n in source.expected.items()
                }
        finally:
            self.client.close()
        if not config.dry_run:
            write_atomic(config.run_dir / REPORT, report.to_json())
        return report

    def _load(self, source: NdjsonRun | BundleRun, checkpoint: Checkpoint, checkpoint_path: Path) -> LoadReport:
        """The shared resources, then the patients the checkpoint does not have; the checkpoint saved every
        few seconds and at the end, however loading ends."""
        config = self.config
        report = LoadReport(
            server=config.server,
            run_dir=str(config.run_dir),
            source=source.kind,
            bundle_type=self.bundle_type,
            dry_run=config.dry_run,
            resumed=config.resume,
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            max_entries=config.max_entries,
            entries_per_request=config.max_entries,
        )
        total = sum(source.expected.values())
        started = saved_at = time.perf_counter()

        def save(force: bool = False) -> None:
            nonlocal saved_at
            if not config.dry_run and (force or time.perf_counter() - saved_at >= CHECKPOINT_EVERY_S):
                checkpoint.save(checkpoint_path)
                saved_at = time.perf_counter()

        def advance(pending: dict[Future, list[PatientResources]], block: bool = True) -> None:
            self._collect(pending, report, checkpoint, block)
            save()
            self.progress("load", report.loaded + report.failed + report.skipped + source.n_skipped, total)

        try:
            shared = source.shared()
            if checkpoint.shared_done:
                report.skipped = len(shared)
            else:
                report.add(*self._send(shared))
                checkpoint.shared_done = not report.failed
            with ThreadPoolExecutor(config.concurrency, thread_name_prefix="ehrsim-load") as pool:
                pending: dict[Future, list[PatientResources]] = {}
                try:
                    for unit in _units(source.patients(checkpoint.has), config.max_entries):
                        if self.stop.is_set():
                            raise _Stopped
                        pending[pool.submit(self._send_unit, unit)] = unit
                        while len(pending) >= 2 * config.concurrency:
                            advance(pending)
                    while pending:
                        advance(pending)
                finally:
                    self.stop.set()  # threads still sending stop before their next request
                    pool.shutdown(wait=True, cancel_futures=True)
                    advance(pending, block=False)
        except _Stopped:
            report.interrupted = True
        finally:
            report.skipped += source.n_skipped
            report.interrupted |= self.interrupted
            report.seconds = round(time.perf_counter() - started, 3)
            report.requests = self.n_sent
            report.retries = self.client.n_retries
            report.entries_per_request = self.limit.n
            report.sample_requests = self.sample
            save(force=True)
        return report

    def _collect(
        self, pending: dict[Future, list[PatientResources]], report: LoadReport, checkpoint: Checkpoint, block: bool
    ) -> None:
        """Take in the units that are done (waiting for one if `block`): count them, and check off the
        patients of each unit the server took whole."""
        done = wait(pending, return_when=FIRST_COMPLETED).done if block else [f for f in pending if f.done()]
        for future in done:
            unit = pending.pop(future)
            if future.cancelled() or isinstance(future.exception(), _Stopped):
                self.interrupted = True
                continue
            ok, failures = future.result()  # a ServerError stops the load here
            report.add(ok, failures)
            if not failures:
                checkpoint.add(p.ordinal for p in unit)


def load_run(config: LoadConfig, progress: Progress | None = None, notify: Notify | None = None) -> LoadReport:
    """Load the run `config.run_dir` into `config.server` (see `Loader`); the report, also written to
    RUN/load-report.json unless a dry run."""
    return Loader(config, progress or (lambda *_: None), notify or (lambda _: None)).run()
