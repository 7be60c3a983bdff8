"""Simulating a scenario: each patient drawn inside `who`, living a history under the scenario's tilts and
forced branches, kept if it holds what the scenario requires, else drawn again (a bounded, counted step).

Patient i's candidates are the streams i + k * REDRAW_STRIDE, k = 0, 1, ... (people and events alike): who
they are is drawn first, and a candidate outside `who` is passed over without simulating it; the first
candidate whose history satisfies the scenario is patient i. So everything still depends on (seed, i) alone.
Each kept patient's weight is exp(log likelihood ratio of the history) x the demographic share, and in
population mode over the chance that no module ends a life of that sex before that age at the end
(`Plan.log_survival`: a plain population run keeps only the lives that reach the end date, re-drawing the
others): the importance weight of the draw against the unconditioned model, so that over all the histories
simulated (`draws`, the rejected ones with weight 0) the mean weight estimates the scenario's probability
(population mode: the share of a plain run's patients it describes), and weighted means over the patients
estimate the population's figures among those the scenario describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.days import DAYS_PER_YEAR, to_datetime
from simulator.engine import codes
from simulator.engine.kernel import Events
from simulator.engine.people import People, sample
from simulator.engine.run import (
    DECEDENT_STREAMS,
    LIFETIME_HORIZON_YEARS,
    REDRAW_STRIDE,
    Simulated,
    Simulator,
    _starts,
    _subset,
    place_blocks,
)
from simulator.errors import ConfigError
from simulator.scenario.attributes import attribute_table
from simulator.scenario.plan import Plan, closing_events, window_ages

MAX_CANDIDATES = DECEDENT_STREAMS // REDRAW_STRIDE  # candidate streams of one patient (below the decedents')
MAX_BATCH = 64  # histories a patient tries in one round
ROUND_HISTORIES = 256  # histories a round simulates at least while patients wait (a round costs a kernel call)
MAX_WIDTH = 4096  # candidates a patient draws in one round (a narrow `who` takes several rounds)


class ScenarioError(RuntimeError):
    """A patient for whom no history in the allowed attempts satisfied the scenario."""


@dataclass
class ScenarioChunk:
    """Patients of a scenario run as the kernel made them, with how many histories each took."""

    simulated: Simulated
    counts: np.ndarray  # events of each patient
    attempts: np.ndarray  # histories simulated for each patient (1: the first was kept)
    passed_over: np.ndarray  # candidates drawn outside `who` before each patient (not simulated)
    t_end: np.ndarray


def simulate_scenario(sim: Simulator, plan: Plan, index: np.ndarray) -> ScenarioChunk:
    """Patients `index` of the scenario run (see the module docstring).

    The candidates are tried in rounds, each one kernel call: in each round every patient still without a
    history tries their next b candidates inside `who` at once (`_batch`: 1 while many patients wait, more as
    few are left) and keeps the first that satisfies the scenario; the histories simulated after it are
    dropped, uncounted. So the patients, their weights and `attempts` are those of trying one candidate at a
    time, whatever b is, in far fewer rounds than the slowest patient's attempts."""
    index = index.astype(np.int64)
    n = len(index)
    scenario = plan.scenario
    lifetime = scenario.mode == "lifetime"
    share = plan.demographic_share(sim.people_tables)
    k = np.zeros(n, np.int64)
    attempts = np.zeros(n, np.int64)
    passed_over = np.zeros(n, np.int64)
    done = np.zeros(n, bool)
    parts: list[tuple[Simulated, np.ndarray]] = []
    order: list[np.ndarray] = []
    kept = tried = 0
    while True:
        todo = np.flatnonzero(~done)
        if not len(todo):
            break
        stuck = todo[(attempts[todo] >= scenario.max_attempts) | (k[todo] >= MAX_CANDIDATES)]
        if len(stuck):
            i = stuck[0]
            raise ScenarioError(
                f"{plan.file}: patient {index[i]}: none of {attempts[i]} histories simulated (of {k[i]} candidates "
                f"drawn) satisfied the scenario (max_attempts: {scenario.max_attempts}); make it likelier with "
                "force or a larger tilt factor, or raise max_attempts"
            )
        b = _batch(len(todo), kept / tried if tried else 1.0)
        quota = np.minimum(b, scenario.max_attempts - attempts[todo])
        width = min(math.ceil(b / max(share, 1e-6) * 1.5) + 8, MAX_WIDTH)  # candidates drawn to find b in `who`
        position = k[todo][:, None] + np.arange(width)
        valid = position < MAX_CANDIDATES
        stream = index[todo][:, None] + position * REDRAW_STRIDE
        people = sample(sim.people_tables, sim.config.seed, stream[valid], lifetime)
        t_end = _t_end(sim, people, lifetime)
        inside = np.zeros(valid.shape, bool)
        inside[valid] = plan.in_who(people) & (lifetime | plan.in_who_age(people, t_end))
        take = inside & (np.cumsum(inside, axis=1) <= quota[:, None])
        full = take.sum(axis=1) == quota
        last = np.where(full, width - 1 - np.argmax(take[:, ::-1], axis=1), width - 1)  # scanned up to here
        flat = take[valid]
        people, t_end = _subset(people, flat), t_end[flat]
        ok = np.zeros(valid.shape, bool)
        if flat.any():
            # the buffer grows to the scenario's lives (longer than most): fewer kernel calls run again for room
            result, counts = sim._simulate_streams(people.index, people.index, learn_capacity=True, people=people)
            row = np.repeat(np.arange(len(t_end)), counts)
            satisfied = plan.satisfied(result.events, row, result.people, t_end)
            ok[take] = satisfied
            first = np.argmax(ok, axis=1)
            found = ok.any(axis=1)
            last = np.where(found, first, last)
            chosen = np.zeros(valid.shape, bool)
            chosen[np.flatnonzero(found), first[found]] = True
            if found.any():
                parts.append(_select(result, counts, chosen[take]))
                order.append(todo[found])
            done[todo[found]] = True
        scanned = np.arange(width) <= last[:, None]
        simulated = (take & scanned).sum(axis=1)
        attempts[todo] += simulated
        passed_over[todo] += (valid & ~inside & scanned).sum(axis=1)
        k[todo] += last + 1
        kept, tried = kept + int(ok.any(axis=1).sum()), tried + int(simulated.sum())
    simulated = _in_order(parts, np.concatenate(order) if order else np.empty(0, np.int64), index)
    t_end = _t_end(sim, simulated.people, lifetime)
    log_weight = simulated.log_weight + math.log(share) - plan.log_survival(simulated.people, t_end)
    simulated = simulated._replace(log_weight=log_weight)
    counts = np.bincount(np.searchsorted(index, simulated.patient), minlength=n) if n else np.zeros(0, np.int64)
    return ScenarioChunk(simulated, counts, attempts, passed_over, t_end)


def _batch(waiting: int, rate: float) -> int:
    """Candidates each of `waiting` patients tries in the next round, the chunk having kept `rate` of its
    histories so far: one while the round is large enough to keep the kernel busy (every history after a
    patient's first kept one is wasted), then enough for a round of about ROUND_HISTORIES, at most the
    1 / rate a patient is expected to need twice over, and MAX_BATCH."""
    if waiting >= ROUND_HISTORIES:
        return 1
    return max(1, min(MAX_BATCH, math.ceil(ROUND_HISTORIES / waiting), math.ceil(2 / max(rate, 1 / MAX_BATCH))))


def _t_end(sim: Simulator, people: People, lifetime: bool) -> np.ndarray:
    if lifetime:
        return people.birth_t + LIFETIME_HORIZON_YEARS * DAYS_PER_YEAR
    return np.full(len(people.index), sim.reference_t)


def _select(result: Simulated, counts: np.ndarray, keep: np.ndarray) -> tuple[Simulated, np.ndarray]:
    """The patients `keep` of `result`, and their event counts."""
    lengths = counts[keep]
    events = place_blocks([(result.events, _starts(counts)[keep], lengths, _starts(lengths))], int(lengths.sum()))
    kept = Simulated(
        events,
        np.repeat(result.people.index[keep], lengths),
        result.errors[keep],
        _subset(result.people, keep),
        result.entered[keep],
        result.stream[keep],
        result.log_weight[keep],
    )
    return kept, lengths


def _in_order(parts: list[tuple[Simulated, np.ndarray]], position: np.ndarray, index: np.ndarray) -> Simulated:
    """The kept patients of every round, put back in patient order and numbered `index`: `position` holds
    each kept patient's place (0..n-1, every place once), round after round."""
    if not parts:
        raise ConfigError("patients", "a scenario run needs at least one patient")
    n = len(position)
    found = np.concatenate([c for _, c in parts])  # events of each kept patient, in the order found
    counts = np.zeros(n, np.int64)
    counts[position] = found
    out_starts = _starts(counts)
    blocks, done = [], 0
    for result, lengths in parts:
        places = position[done : done + len(lengths)]
        blocks.append((result.events, _starts(lengths), lengths, out_starts[places]))
        done += len(lengths)

    def in_place(values: list[np.ndarray]) -> np.ndarray:  # one row a kept patient, rounds joined
        joined = np.concatenate(values)
        out = np.empty_like(joined)
        out[position] = joined
        return out

    people = People(*(in_place(list(column)) for column in zip(*(r.people for r, _ in parts), strict=True)))
    return Simulated(
        place_blocks(blocks, int(counts.sum())),
        np.repeat(index, counts),
        in_place([r.errors for r, _ in parts]),
        people._replace(index=index),
        in_place([r.entered for r, _ in parts]),
        in_place([r.stream for r, _ in parts]),
        in_place([r.log_weight for r, _ in parts]),
    )


# --- ground truth ----------------------------------------------------------------------------------


def truth_tables(sim: Simulator, plan: Plan, chunk: ScenarioChunk) -> dict[str, pd.DataFrame]:
    """What really happened to the chunk's patients, apart from what their record shows: `weights` (each
    patient's weight, its log, the histories simulated and the stream kept), `states` (every state that
    recorded something, with when: the path through each module), `onsets` (each true onset, and the
    diagnosis of it that followed, if any), `forced` (the entries into a forced branch's target inside its
    window), and with `hidden_attributes`, `attributes` (the values modules set: simulator.scenario.attributes)."""
    result, names = chunk.simulated, sim.names
    events, patient = result.events, result.patient
    weights = pd.DataFrame(
        {
            "patient": result.people.index,
            "weight": np.exp(result.log_weight),
            "log_weight": result.log_weight,
            "attempts": chunk.attempts,
            "passed_over": chunk.passed_over,
            "stream": result.stream,
        }
    )
    state_modules = np.array([s.split(".", 1)[0] for s in names.states], dtype=object)
    state_names = np.array(names.state_names, dtype=object)
    row = _rows(chunk)
    opened = (events.state >= 0) & ~closing_events(events, row, len(chunk.counts))
    path = _entries(events, patient, opened)
    states = pd.DataFrame(
        {
            "patient": path["patient"].to_numpy(),
            "time": to_datetime(path["t"].to_numpy()),
            "module": state_modules[path["state_id"].to_numpy()],
            "state": state_names[path["state_id"].to_numpy()],
        }
    )
    tables = {
        "weights": weights,
        "states": states,
        "onsets": _onsets(events, patient, names),
        "forced": _forced(plan, chunk, row, opened),
    }
    if plan.scenario.hidden_attributes:
        tables["attributes"] = _attributes(sim, plan, chunk)
    return tables


def _rows(chunk: ScenarioChunk) -> np.ndarray:
    """The row in `chunk.simulated.people` of each event's patient."""
    return np.repeat(np.arange(len(chunk.counts)), chunk.counts)


def _attributes(sim: Simulator, plan: Plan, chunk: ScenarioChunk) -> pd.DataFrame:
    result = chunk.simulated
    windows = plan.window_ages(result.people, chunk.t_end) if plan.windows else None
    times = np.split(result.events.t, np.cumsum(chunk.counts)[:-1]) if len(chunk.counts) else []
    return attribute_table(
        sim.library, sim.config.seed, result.people, result.stream, chunk.t_end, plan.conditioning, windows, times
    )


def _entries(events: Events, patient: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """When the states of the events `mask` were entered (patient, t, state_id), in event order, as their
    events show: the first event of each encounter a state recorded into (its later rounds belong to that
    entry), else each time it recorded something outside an encounter. `mask` leaves out the events that
    close what a state opened (`closing_events`)."""
    rows = np.flatnonzero(mask)
    who, t, state, encounter = patient[rows], events.t[rows], events.state[rows], events.encounter[rows]
    inside = encounter >= 0
    key = pd.DataFrame({"patient": who, "state": state, "encounter": encounter, "t": np.where(inside, 0.0, t)})
    first = ~key.duplicated().to_numpy()
    return pd.DataFrame({"patient": who[first], "t": t[first], "state_id": state[first]})


def _onsets(events: object, patient: np.ndarray, names: object) -> pd.DataFrame:
    onset = events.kind == codes.K_ONSET  # type: ignore[attr-defined]
    diagnosis = events.kind == codes.K_DIAGNOSIS  # type: ignore[attr-defined]
    frame = pd.DataFrame(
        {"patient": patient[onset], "condition_id": events.subject[onset], "onset_t": events.t[onset]}  # type: ignore[attr-defined]
    )
    diagnosed = pd.DataFrame(
        {"patient": patient[diagnosis], "condition_id": events.subject[diagnosis], "diagnosis_t": events.t[diagnosis]}  # type: ignore[attr-defined]
    )
    merged = frame.merge(diagnosed, on=["patient", "condition_id"], how="left")
    merged = merged[~(merged["diagnosis_t"] < merged["onset_t"])]
    first = merged.sort_values(["patient", "onset_t", "diagnosis_t"]).drop_duplicates(
        ["patient", "condition_id", "onset_t"]
    )
    return pd.DataFrame(
        {
            "patient": first["patient"].to_numpy(),
            "condition": np.array(names.conditions, dtype=object)[first["condition_id"].to_numpy()],  # type: ignore[attr-defined]
            "onset_time": to_datetime(first["onset_t"].to_numpy()),
            "diagnosis_time": to_datetime(first["diagnosis_t"].to_numpy()),
        }
    )


def _forced(plan: Plan, chunk: ScenarioChunk, row: np.ndarray, opened: np.ndarray) -> pd.DataFrame:
    """Entries into each forced branch's target inside its window (`row`: each event's patient row; `opened`:
    the events that show a state entered)."""
    result = chunk.simulated
    events, names = result.events, plan.names
    age = (events.t - result.people.birth_t[row]) / DAYS_PER_YEAR
    frames = []
    for entry in plan.scenario.force:
        target = names.states.index(f"{entry.module}.{entry.to}")
        window = window_ages(entry.window, result.people.birth_t, chunk.t_end)
        hit = opened & (events.state == target) & (age >= window[row, 0]) & (age < window[row, 1])
        frame = _entries(events, result.patient, hit)[["patient", "t"]]
        frames.append(frame.assign(module=entry.module, state=entry.state, to=entry.to))
    forced = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["patient", "t", "module", "state", "to"])
    )
    forced = forced.sort_values(["patient", "t"], kind="stable")
    return pd.DataFrame(
        {
            "patient": forced["patient"].to_numpy(np.int64),
            "time": to_datetime(forced["t"].to_numpy(float)),
            "module": forced["module"].to_numpy(object),
            "state": forced["state"].to_numpy(object),
            "to": forced["to"].to_numpy(object),
        }
    )
