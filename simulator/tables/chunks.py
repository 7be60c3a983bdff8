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


@dataclass(frozen=True)
class DecedentPlan:
    """Who a run's decedents are, known once every living chunk is done: decedents 0.. live the sorted
    `module_deaths` (the living's discarded histories that died in the window), then come `background`
    background decedents, then `stand_ins` for the module deaths the window lacks."""

    module_deaths: np.ndarray
    background: int
    stand_ins: int

    @property
    def total(self) -> int:
        return len(self.module_deaths) + self.background + self.stand_ins


def decedent_plan(sim: Simulator, window_deaths: list[np.ndarray]) -> DecedentPlan:
    """The decedents of a run from its living chunks' `window_deaths` (in any order)."""
    module_deaths = np.sort(np.concatenate([np.empty(0, np.int64), *window_deaths]))
    background, stand_ins = sim.background_decedents(sim.config.patients, len(module_deaths))
    return DecedentPlan(module_deaths, background, stand_ins)


def decedent_tables(sim: Simulator, plan: DecedentPlan, start: int, stop: int) -> Chunk:
    """Decedents [start, stop) of a run (`Simulator.decedents`) as tables."""
    simulated = sim.decedents(sim.config.patients, plan.module_deaths, plan.background, start, stop)
    stand_ins = max(0, stop - max(start, len(plan.module_deaths) + plan.background))
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
    plan = decedent_plan(sim, window_deaths)
    for start in range(0, plan.total, size):
        yield decedent_tables(sim, plan, start, min(start + size, plan.total))
