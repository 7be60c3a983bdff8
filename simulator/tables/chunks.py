"""A run's output one chunk at a time: the kernel's events and people as the patient and event tables."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.engine.codes import K_DEATH
from simulator.engine.run import Simulator
from simulator.tables.events import event_table
from simulator.tables.patients import patient_table


@dataclass
class Chunk:
    patients: pd.DataFrame
    events: pd.DataFrame


def chunk_tables(sim: Simulator, start: int, stop: int) -> Chunk:
    """Patients [start, stop) of a run as tables."""
    index = np.arange(start, stop, dtype=np.int64)
    events, patient, errors, people, _, _ = sim.simulate(index)
    if errors.any():
        bad = index[errors != 0]
        raise RuntimeError(
            f"the kernel flagged {len(bad)} patients (first index {bad[0]}, "
            f"error bits {int(errors[errors != 0][0])}); this is a bug in ehrsim or a module"
        )
    is_death = events.kind == K_DEATH
    death_t = np.full(len(index), np.nan)
    death_code = np.full(len(index), -1, np.int64)
    death_t[patient[is_death] - start] = events.t[is_death]
    death_code[patient[is_death] - start] = events.code[is_death]
    patients = patient_table(sim.library, people, death_t, death_code, sim.names.codes, sim.config.seed)
    return Chunk(patients, event_table(events, patient, sim.names))


def count_chunk(counts: dict, chunk: Chunk) -> None:
    """Add the chunk's patients, deaths, events and events by kind to a run's `counts` (the run manifest's)."""
    counts["patients"] = counts.get("patients", 0) + len(chunk.patients)
    counts["deaths"] = counts.get("deaths", 0) + int(chunk.patients["death_time"].notna().sum())
    counts["events"] = counts.get("events", 0) + len(chunk.events)
    by_kind = counts.setdefault("events_by_kind", {})
    for kind, n in chunk.events["kind"].value_counts(sort=False).items():
        by_kind[str(kind)] = by_kind.get(str(kind), 0) + int(n)


def chunks(sim: Simulator) -> Iterator[Chunk]:
    """The run's chunks in patient order; an empty run yields one empty chunk (the tables' shape)."""
    for start in range(0, sim.config.patients, sim.config.chunk_size) or [0]:
        yield chunk_tables(sim, start, min(start + sim.config.chunk_size, sim.config.patients))
