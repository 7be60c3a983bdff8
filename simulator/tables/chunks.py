"""A run's output one chunk at a time: the kernel's events and people as the patient and event tables.

A population run with a decedent window (`RunConfig.decedent_years`) yields its living patients
0..patients-1 first, then its decedents patients..: they are known once every living chunk is done (the
module deaths among the histories the living discarded), so their order, like everything else, does not
depend on the chunk size."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from simulator.engine.codes import K_DEATH
from simulator.engine.run import Simulated, Simulator
from simulator.tables.events import event_table
from simulator.tables.patients import patient_table


@dataclass
class Chunk:
    patients: pd.DataFrame
    events: pd.DataFrame
    window_deaths: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # `Simulator.simulate_living`
    stand_ins: int = 0  # decedents of the chunk who stand in for module deaths the window lacks


def chunk_tables(sim: Simulator, start: int, stop: int) -> Chunk:
    """Living patients [start, stop) of a run as tables."""
    simulated, window_deaths = sim.simulate_living(np.arange(start, stop, dtype=np.int64))
    return Chunk(*_tables(sim, simulated, is_decedent=False), window_deaths)


def decedent_tables(sim: Simulator, window_deaths: np.ndarray, background: int, start: int, stop: int) -> Chunk:
    """Decedents [start, stop) of a run (`Simulator.decedents`) as tables."""
    simulated = sim.decedents(sim.config.patients, window_deaths, background, start, stop)
    stand_ins = max(0, stop - max(start, len(window_deaths) + background))
    return Chunk(*_tables(sim, simulated, is_decedent=True), stand_ins=stand_ins)


def _tables(sim: Simulator, simulated: Simulated, is_decedent: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    events, patient, errors, people = simulated.events, simulated.patient, simulated.errors, simulated.people
    if errors.any():
        bad = people.index[errors != 0]
        raise RuntimeError(
            f"the kernel flagged {len(bad)} patients (first index {bad[0]}, "
            f"error bits {int(errors[errors != 0][0])}); this is a bug in ehrsim or a module"
        )
    is_death = events.kind == K_DEATH
    row = np.searchsorted(people.index, patient[is_death])
    death_t = np.full(len(people.index), np.nan)
    death_code = np.full(len(people.index), -1, np.int64)
    death_t[row] = events.t[is_death]
    death_code[row] = events.code[is_death]
    patients = patient_table(sim.library, people, death_t, death_code, sim.names.codes, sim.config.seed, is_decedent)
    return patients, event_table(events, patient, sim.names)


def count_chunk(counts: dict, chunk: Chunk) -> None:
    """Add a chunk to a run's `counts` (the run manifest's): `patients` the living cohort, `decedents` those
    who died in the decedent window (`decedent_deaths` by module, or in the background; `decedent_stand_ins`
    of the latter stand in for module deaths the window lacks), `deaths` every death of the run, events and
    events by kind."""
    decedent = chunk.patients["is_decedent"].to_numpy(bool)
    counts["patients"] = counts.get("patients", 0) + int((~decedent).sum())
    if decedent.any():
        counts["decedents"] = counts.get("decedents", 0) + int(decedent.sum())
        deaths = chunk.events[chunk.events["kind"] == "death"]
        by = counts.setdefault("decedent_deaths", {"module": 0, "background": 0})
        background = int(deaths["module"].isna().sum())
        by["background"] += background
        by["module"] += len(deaths) - background
        counts["decedent_stand_ins"] = counts.get("decedent_stand_ins", 0) + chunk.stand_ins
    counts["deaths"] = counts.get("deaths", 0) + int(chunk.patients["death_time"].notna().sum())
    counts["events"] = counts.get("events", 0) + len(chunk.events)
    by_kind = counts.setdefault("events_by_kind", {})
    for kind, n in chunk.events["kind"].value_counts(sort=False).items():
        by_kind[str(kind)] = by_kind.get(str(kind), 0) + int(n)


def chunks(sim: Simulator) -> Iterator[Chunk]:
    """The run's chunks in patient order, the living then the decedents; an empty run yields one empty
    chunk (the tables' shape)."""
    size, living = sim.config.chunk_size, sim.config.patients
    window_deaths = []
    for start in range(0, living, size) or [0]:
        chunk = chunk_tables(sim, start, min(start + size, living))
        window_deaths.append(chunk.window_deaths)
        yield chunk
    if sim.config.decedent_years <= 0:
        return
    module_deaths = np.sort(np.concatenate(window_deaths))
    background, stand_ins = sim.background_decedents(living, len(module_deaths))
    total = len(module_deaths) + background + stand_ins
    for start in range(0, total, size):
        yield decedent_tables(sim, module_deaths, background, start, min(start + size, total))
