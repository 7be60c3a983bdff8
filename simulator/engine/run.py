"""The simulation: load -> compile -> kernel, for any set of patient indexes, with population-mode redraws.

Chunks are independent (every patient has their own random streams), so memory is bounded by the
chunk size and the output is the same whatever the chunk size or thread count.
"""

from __future__ import annotations

import mmap
import pickle
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal, NamedTuple

import numba
import numpy as np

from simulator.days import DAYS_PER_YEAR
from simulator.engine.blocks import copy_blocks
from simulator.engine.codes import K_DEATH
from simulator.engine.compiler import CompiledModel, Names, compile_library
from simulator.engine.kernel import Events, Lives, Outcome, new_scratch, simulate
from simulator.engine.people import (
    People,
    PeopleTables,
    build_people_tables,
    reference_date_of,
    sample,
    sample_decedents,
    with_new_identities,
)
from simulator.errors import ConfigError
from simulator.model.library import Library
from simulator.model.loading import load_library

Mode = Literal["population", "lifetime"]
LIFETIME_HORIZON_YEARS = 130.0
REDRAW_STRIDE = 1 << 40  # stream offset between a patient's successive draws (population mode)
MAX_REDRAWS = 50  # a patient still dead after this many draws stays in the output as drawn
# Stream families of the decedents of a population run (above every living patient's redraw streams,
# i + k * REDRAW_STRIDE for k <= MAX_REDRAWS, for up to 2**40 patients): background decedent k draws who
# they are and their history from DECEDENT_STREAMS + k; a decedent who lives a living patient's discarded
# history s draws a name and ids from IDENTITY_STREAMS + s.
DECEDENT_STREAMS = 1 << 56
IDENTITY_STREAMS = 1 << 60
MAX_DECEDENT_YEARS = 150.0
# Reference dates a run accepts. Simulated time is exact far beyond them, but the rules (life tables,
# demographics, codes, schedules) describe the present: far from it a run is well formed and meaningless
# (a reference date of 1800 dated immunizations 1792). A lifetime run of 2100 ends by 2230, inside the
# timestamps pandas writes (up to 2262).
REFERENCE_DATES = (date(1900, 1, 1), date(2100, 12, 31))


@dataclass(frozen=True)
class RunConfig:
    """What a run simulates. `population`: a cross-section alive at the reference date, each patient
    followed from birth to that date. `lifetime`: a birth cohort born in the year before the
    reference date, followed until death."""

    patients: int = 1000
    seed: int = 0
    mode: Mode = "population"
    reference_date: date | None = None  # default: the demographics file's
    chunk_size: int = 10_000
    threads: int | None = None  # default: numba's (all cores)
    modules_dir: Path | None = None
    rules_dir: Path | None = None
    decedent_years: float = 0.0  # population mode: also the patients who died in these years before the end

    def __post_init__(self) -> None:
        """Every setting is checked here, before anything loads or compiles (ConfigError names it)."""
        if self.patients < 0:
            raise ConfigError("patients", f"must be >= 0 (got {self.patients})")
        if not 0 <= self.seed < 2**63:
            raise ConfigError("seed", f"must be between 0 and 2**63 - 1 (got {self.seed})")
        if self.mode not in ("population", "lifetime"):
            raise ConfigError("mode", f"must be 'population' or 'lifetime' (got {self.mode!r})")
        first, last = REFERENCE_DATES
        if self.reference_date is not None and not first <= self.reference_date <= last:
            raise ConfigError("reference_date", f"must be between {first} and {last} (got {self.reference_date})")
        if not 0 <= self.decedent_years <= MAX_DECEDENT_YEARS:
            message = f"must be between 0 and {MAX_DECEDENT_YEARS:g} years (got {self.decedent_years})"
            raise ConfigError("decedent_years", message)
        if self.decedent_years and self.mode == "lifetime":
            raise ConfigError("decedent_years", "a lifetime run follows every patient to death: it has no decedents")
        if self.chunk_size < 1:
            raise ConfigError("chunk_size", f"must be >= 1 (got {self.chunk_size})")
        most = numba.config.NUMBA_NUM_THREADS  # the cores of this machine, unless NUMBA_NUM_THREADS says less
        if self.threads is not None and not 1 <= self.threads <= most:
            message = f"must be between 1 and {most}, the cores Numba may use here (got {self.threads})"
            raise ConfigError("threads", message)
        for field_name in ("modules_dir", "rules_dir"):
            directory = getattr(self, field_name)
            if directory is not None and not Path(directory).is_dir():
                raise ConfigError(field_name, f"{directory}: no such directory")


class Simulated(NamedTuple):
    """What the kernel made of patients `index`: flat event buffers (patient order), the patient of
    each event, per-patient error bits, the drawn people, which states each patient entered
    (uint64[n, ceil(n_states / 64)], bit s of a row: global state s), the event stream each
    patient's history came from (int64[n]; the index itself unless redrawn in population mode), and the
    log likelihood ratio of each history against the unconditioned model (float64[n]; 0 without a scenario)."""

    events: Events
    patient: np.ndarray
    errors: np.ndarray
    people: People
    entered: np.ndarray
    stream: np.ndarray
    log_weight: np.ndarray

    def state_patients(self) -> np.ndarray:
        """Number of patients who entered each global state (int64[n_states])."""
        n_states = self.entered.shape[1] * 64
        bits = np.unpackbits(self.entered.view(np.uint8), axis=1, bitorder="little")[:, :n_states]
        return bits.sum(axis=0, dtype=np.int64)


@dataclass
class Simulator:
    """A loaded, compiled library ready to simulate any number of patients."""

    library: Library
    model: CompiledModel
    names: Names
    people_tables: PeopleTables
    config: RunConfig
    capacity: int = 1024  # events per patient in the first pass; grows with what patients need
    # a scenario's windows (simulator.scenario): float64[n, n_windows, 2] in years of age, from people and t_end
    windows: Callable[[People, np.ndarray], np.ndarray] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, config: RunConfig, library: Library | None = None) -> Simulator:
        if config.threads is not None:
            numba.set_num_threads(config.threads)
        started = time.perf_counter()
        library = library or load_library(config.modules_dir, config.rules_dir)
        loaded = time.perf_counter()
        model, names = compile_library(library)
        reference = config.reference_date or reference_date_of(library)
        tables = build_people_tables(library, reference)
        sim = cls(library, model, names, tables, config)
        compiled = time.perf_counter()
        sim.simulate(np.zeros(1, np.int64))  # JIT-compiles the kernel on a first run, else loads Numba's cache
        sim.timings["load_s"] = loaded - started
        sim.timings["compile_s"] = compiled - loaded
        sim.timings["kernel_warmup_s"] = time.perf_counter() - compiled
        return sim

    @property
    def reference_t(self) -> float:
        return self.people_tables.reference_t

    @property
    def window_start_t(self) -> float:
        """Start of the decedent window (inf: the run holds no decedents)."""
        years = self.config.decedent_years
        return self.reference_t - years * DAYS_PER_YEAR if years > 0 else np.inf

    def simulate(self, index: np.ndarray) -> Simulated:
        """Kernel only: the events and state entries of patients `index`, without tables.

        In population mode the cohort is the one alive at the reference date: a patient whom a
        disease module kills before it is not part of that cross-section, so patient i (same age,
        sex and identity) lives their history again from the next of their own event streams
        (i + k * REDRAW_STRIDE) until they survive. The age and sex pyramid then holds, and the
        output still depends on (seed, i) alone."""
        return self.simulate_living(index)[0]

    def simulate_living(self, index: np.ndarray) -> tuple[Simulated, np.ndarray]:
        """`simulate`, and the streams of the histories it discarded that ended in a death within the
        decedent window (int64, sorted: the module deaths of that window, which `decedents` lets other
        patients live)."""
        index = index.astype(np.int64)
        result, counts = self._simulate_streams(index, index, learn_capacity=True)
        if self.config.mode == "lifetime":
            return result, np.empty(0, np.int64)
        result, _, window = self._redraw_the_dead(result, counts, 0, self.window_start_t)
        return result, np.sort(window)

    def background_decedents(self, living: int, module_decedents: int) -> tuple[int, int]:
        """How many background decedents a run of `living` patients holds besides its `module_decedents`:
        the background deaths the life tables give the pyramid in the decedent window
        (`PeopleTables.background_deaths` a year), and stand-ins for the module deaths the window lacks
        against the life tables (their deaths less the background's, less `module_decedents`)."""
        tables, years = self.people_tables, self.config.decedent_years
        background = round(living * years * tables.background_deaths)
        expected_module = round(living * years * (tables.deaths - tables.background_deaths))
        return background, max(0, expected_module - module_decedents)

    def decedents(self, living: int, window_deaths: np.ndarray, background: int, start: int, stop: int) -> Simulated:
        """Decedents [start, stop) of a run of `living` patients, as patients living + j: first those who
        died of a module, who live the discarded histories `window_deaths` (sorted, of the whole run) of the
        living patients they were drawn as, under names and ids of their own; then the background
        decedents k (`sample_decedents`; from k = `background` on, the stand-ins, aged as module deaths),
        who die on their drawn day unless a module kills them sooner, in which case they live their next
        event stream (as the living are redrawn, nothing recorded)."""
        n_module = len(window_deaths)
        module = window_deaths[start:stop]
        parts = []
        if len(module):
            drawn_as = module % REDRAW_STRIDE
            people = sample(self.people_tables, self.config.seed, drawn_as, lifetime=False)
            people = with_new_identities(self.people_tables, self.config.seed, people, IDENTITY_STREAMS + module)
            parts.append(self._simulate_streams(drawn_as, module, people=people))
        k = np.arange(max(start, n_module), stop, dtype=np.int64) - n_module
        for stand_ins in (False, True):
            some = k[(k >= background) == stand_ins]
            if len(some):
                people = sample_decedents(
                    self.people_tables, self.config.seed, DECEDENT_STREAMS + some, self.config.decedent_years, stand_ins
                )
                result, counts = self._simulate_streams(people.index, people.index, people=people)
                result, counts, _ = self._redraw_the_dead(result, counts, 0, np.inf)
                parts.append((result, counts))
        return _relabel(parts, living + np.arange(start, stop, dtype=np.int64))

    def _redraw_the_dead(
        self, result: Simulated, counts: np.ndarray, attempt: int, window_start_t: float
    ) -> tuple[Simulated, np.ndarray, np.ndarray]:
        """`result` with every patient who died before their background death (a module's death) redrawn
        from their next stream, recursively (each level splices only the smaller set below it); and the
        streams of the discarded histories whose death came at or after `window_start_t`."""
        death_t = _death_times(result, counts)
        died = death_t < result.people.death_t
        if not died.any() or attempt == MAX_REDRAWS:
            return result, counts, np.empty(0, np.int64)
        window = result.stream[died & (death_t >= window_start_t)]
        again = _subset(result.people, died)
        stream = again.index + (attempt + 1) * REDRAW_STRIDE
        redo, redo_counts = self._simulate_streams(again.index, stream, people=again)
        redo, redo_counts, window_redo = self._redraw_the_dead(redo, redo_counts, attempt + 1, window_start_t)
        spliced, spliced_counts = _splice(result, counts, redo, redo_counts, died)
        return spliced, spliced_counts, np.concatenate([window, window_redo])

    def _simulate_streams(
        self, index: np.ndarray, stream: np.ndarray, learn_capacity: bool = False, people: People | None = None
    ) -> tuple[Simulated, np.ndarray]:
        """Patients `index` (drawn, unless `people` are given) living the histories of event streams `stream`
        (one per patient), and the number of events of each. With `learn_capacity` (whole chunks, not the
        few long lives redrawn in population mode) the first-pass buffer grows to what patients need."""
        lifetime = self.config.mode == "lifetime"
        if people is None:
            people = sample(self.people_tables, self.config.seed, index, lifetime)
        horizon = people.birth_t + LIFETIME_HORIZON_YEARS * DAYS_PER_YEAR
        t_end = horizon if lifetime else np.full(len(index), self.reference_t)
        capacity = np.full(len(index), self.capacity, np.int64)
        events, counts, errors, entered, log_weight = self._run(stream, people, t_end, capacity)
        over = counts > capacity
        if over.any():
            capacity2 = counts[over]
            events2, _, errors[over], entered[over], log_weight[over] = self._run(
                stream[over], _subset(people, over), t_end[over], capacity2
            )
            events = _merge(events, capacity, counts, events2, capacity2, over)
            if learn_capacity:
                self.capacity = int(min(4 * self.capacity, max(self.capacity, np.percentile(counts, 99.5) * 1.25)))
        else:
            events = _compact(events, capacity, counts)
        return Simulated(events, np.repeat(index, counts), errors, people, entered, stream, log_weight), counts

    def _run(
        self, stream: np.ndarray, people: People, t_end: np.ndarray, capacity: np.ndarray
    ) -> tuple[Events, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One kernel call: patient i lives event stream `stream[i]`, writing into its own region of
        `capacity[i]` rows."""
        n = len(stream)
        base = _starts(capacity)
        total = int(capacity.sum())
        events = Events(*(_small_pages_empty(total, dtype) for dtype in EVENT_DTYPES))
        outcome = Outcome(
            n_events=np.zeros(n, np.int64),
            error=np.zeros(n, np.int64),
            entered=np.zeros((n, (len(self.names.state_names) + 63) // 64), np.uint64),
            log_weight=np.zeros(n),
        )
        window = np.zeros((n, 0, 2)) if self.windows is None else self.windows(people, t_end)
        lives = Lives(stream.astype(np.int64), t_end, base, capacity.astype(np.int64), window)
        args = (self.model, self.config.seed, people, lives, events, outcome)
        tables = self.people_tables

        def run(patients: tuple[int, int]) -> None:
            with np.errstate(over="ignore"):  # SplitMix64 wraps on purpose (warns only without JIT)
                scratch = new_scratch(self.model, tables.cum_hazard, tables.tail_rate, window.shape[1])
                simulate(*args, scratch, *patients)

        threads = numba.get_num_threads()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, _ranges(n, threads)))
        return events, outcome.n_events, outcome.error, outcome.entered, outcome.log_weight


EVENT_DTYPES = (np.float64, np.int8, np.int32, np.float64, np.int32, np.int32, np.int32, np.int32)  # Events' columns


def _small_pages_empty(n: int, dtype: type) -> np.ndarray:
    """An uninitialised array in an anonymous map of ordinary 4 kB pages, provided as first written.

    NumPy asks Linux for transparent huge pages on arrays over 4 MB. For the kernel's event buffers, which
    give every patient room for a long life of which most write a third, the first write to a region made
    the system zero the 2 MB around it: memory never used, a quarter of a kernel call's time. For the
    compacted buffers, which are written whole, the huge pages cost the system's compaction of memory to
    find them (10% of a kernel call, 2026-12-07)."""
    size = max(n, 1) * np.dtype(dtype).itemsize
    memory = mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # Linux; elsewhere the system's default pages
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(memory, dtype, n)


RANGES_PER_THREAD = 8  # patients' lives differ in length: more, smaller ranges keep every thread busy to the end


def _ranges(n: int, threads: int) -> list[tuple[int, int]]:
    """Contiguous ranges of patients 0..n-1 the kernel's threads take in turn (the result does not depend
    on them: each patient draws from their own streams and writes their own rows)."""
    bounds = np.linspace(0, n, min(n, threads * RANGES_PER_THREAD) + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _splice(
    first: Simulated, counts: np.ndarray, second: Simulated, counts2: np.ndarray, mask: np.ndarray
) -> tuple[Simulated, np.ndarray]:
    """`first` with the histories of the patients of `mask` replaced by those of `second` (the
    same people, in the same order, living other event streams)."""
    merged_counts = counts.copy()
    merged_counts[mask] = counts2
    errors, entered, stream = first.errors.copy(), first.entered.copy(), first.stream.copy()
    log_weight = first.log_weight.copy()
    errors[mask], entered[mask], stream[mask] = second.errors, second.entered, second.stream
    log_weight[mask] = second.log_weight
    events = _merge(first.events, counts, merged_counts, second.events, counts2, mask)
    patient = np.repeat(first.people.index, merged_counts)
    return Simulated(events, patient, errors, first.people, entered, stream, log_weight), merged_counts


def _death_times(result: Simulated, counts: np.ndarray) -> np.ndarray:
    """The time of each patient's death in `result` (NaN: none)."""
    death_t = np.full(len(counts), np.nan)
    is_death = result.events.kind == K_DEATH
    death_t[np.repeat(np.arange(len(counts)), counts)[is_death]] = result.events.t[is_death]
    return death_t


def _relabel(parts: list[tuple[Simulated, np.ndarray]], index: np.ndarray) -> Simulated:
    """The patients of `parts` (results and their event counts), one after the other, as patients `index`."""
    results = [r for r, _ in parts]
    counts = np.concatenate([c for _, c in parts])

    def joined(columns: tuple) -> tuple:
        return tuple(np.concatenate(column) for column in zip(*columns, strict=True))

    people = People(*joined(tuple(r.people for r in results)))
    return Simulated(
        Events(*joined(tuple(r.events for r in results))),
        np.repeat(index, counts),
        np.concatenate([r.errors for r in results]),
        people._replace(index=index),
        np.concatenate([r.entered for r in results]),
        np.concatenate([r.stream for r in results]),
        np.concatenate([r.log_weight for r in results]),
    )


def _subset(people: People, mask: np.ndarray) -> People:
    return People(*(column[mask] for column in people))


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Offset of each block in a buffer of consecutive blocks of these lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.cumsum(lengths) - lengths


Block = tuple[Events, np.ndarray, np.ndarray, np.ndarray]  # events, starts, lengths, out_starts


def place_blocks(blocks: list[Block], total: int) -> Events:
    """Events of `total` rows made of blocks: for each (events, starts, lengths, out_starts), the rows
    starts[i]:starts[i] + lengths[i] of events at out_starts[i] (compiled copies, no gather by row index)."""
    columns = [_small_pages_empty(total, column.dtype) for column in blocks[0][0]]
    for events, starts, lengths, out_starts in blocks:
        for column, out in zip(events, columns, strict=True):
            copy_blocks(column, starts, lengths, out, out_starts)
    return Events(*columns)


def _compact(events: Events, capacity: np.ndarray, counts: np.ndarray) -> Events:
    """Each patient's first counts[i] rows of their region of capacity[i] rows, patient after patient."""
    return place_blocks([(events, _starts(capacity), counts, _starts(counts))], int(counts.sum()))


def _merge(
    first: Events,
    capacity: np.ndarray,
    counts: np.ndarray,
    second: Events,
    capacity2: np.ndarray,
    over: np.ndarray,
) -> Events:
    """Patients that overflowed take their rows from the rerun, the others from the first pass
    (copied straight into the output, without copying either buffer whole)."""
    out_base = _starts(counts)
    kept = ~over
    blocks = [
        (first, _starts(capacity)[kept], counts[kept], out_base[kept]),
        (second, _starts(capacity2), counts[over], out_base[over]),
    ]
    return place_blocks(blocks, int(counts.sum()))


def runtime() -> dict:
    """What the manifest records of the machine that ran the kernel."""
    return {"python": platform.python_version(), "numba": numba.__version__, "threads": numba.get_num_threads()}


def kernel_needs_compiling() -> bool:
    """Whether the next run compiles the kernel rather than load Numba's cache of it: Numba's cache index
    of the kernel's entry point is missing or for another version of its source (or Numba's). False where
    Numba has no such cache (NUMBA_DISABLE_JIT) or its internals differ from those read here."""
    try:
        return not simulate._cache._cache_file._load_index()  # type: ignore[attr-defined]
    except (AttributeError, OSError, EOFError, pickle.UnpicklingError):
        return False
