"""A simulated cohort reduced to what the targets count: per-patient condition status, latest readings,
medications at the reference date, and counted events, from kernel buffers or from event tables,
chunk by chunk."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from simulator.days import DAYS_PER_YEAR
from simulator.engine.codes import (
    EVENT_KINDS,
    K_DEATH,
    K_DIAGNOSIS,
    K_ENCOUNTER_END,
    K_ENCOUNTER_START,
    K_MED_START,
    K_MED_STOP,
    K_OBSERVATION,
    K_ONSET,
    K_RESOLVED,
)
from simulator.engine.kernel import Events
from simulator.engine.run import Simulator
from simulator.model.schema import CODE_SYSTEMS, ENCOUNTER_CLASSES, Code
from simulator.model.targets import (
    ConditionCriterion,
    Criterion,
    Definitions,
    EventCriterion,
    MedicationCriterion,
    ObservationCriterion,
)

if TYPE_CHECKING:
    from simulator.model.library import Library


HOSPITAL = (ENCOUNTER_CLASSES.index("inpatient"), ENCOUNTER_CLASSES.index("icu"))


def code_key(system: str, code: str) -> str:
    return f"{system}:{code}"


@dataclass(frozen=True)
class Vocabulary:
    """Code keys (SYSTEM:code) of the conditions, observables and medications a library declares."""

    conditions: dict[str, str]
    observables: dict[str, str]
    medications: dict[str, str]

    @classmethod
    def of(cls, library: Library) -> Vocabulary:
        tables: dict[str, dict[str, str]] = {"conditions": {}, "observables": {}, "medications": {}}
        for module in library.modules:
            for kind, table in tables.items():
                for name, concept in getattr(module, kind).items():
                    table[name] = code_key(concept.code.system, str(concept.code.code))
        return cls(**tables)

    def resolve(self, kind: str, names: list[str]) -> tuple[list[str], list[str]]:
        """(code keys found, names not loaded); a name may also be written SYSTEM:code."""
        table: dict[str, str] = getattr(self, kind)
        codes = set(table.values())
        found: list[str] = []
        absent: list[str] = []
        for name in names:
            key = table.get(name, name if name in codes else None)
            if key is None:
                absent.append(name)
            elif key not in found:
                found.append(key)
        return found, absent


def _walk(criterion: Criterion | None):
    if criterion is None:
        return
    yield criterion
    for child in getattr(criterion, "any", None) or getattr(criterion, "all", None) or []:
        yield from _walk(child)


@dataclass
class Needs:
    """The code keys a set of definitions reads, by kind."""

    conditions: set[str] = field(default_factory=set)
    observables: set[str] = field(default_factory=set)
    medications: set[str] = field(default_factory=set)
    events: dict[str, tuple[EventCriterion, frozenset[str]]] = field(default_factory=dict)  # by key: (what, codes)
    condition_keys: dict[str, str] = field(default_factory=dict)  # condition name -> code key (encounter reasons)


def needs_of(definitions: Definitions, vocabulary: Vocabulary) -> Needs:
    needs = Needs()
    for measure in definitions.measures.values():
        for c in (*_walk(measure.numerator), *_walk(measure.among)):
            if isinstance(c, ConditionCriterion):
                needs.conditions.update(vocabulary.resolve("conditions", c.conditions)[0])
            elif isinstance(c, ObservationCriterion):
                needs.observables.update(vocabulary.resolve("observables", [c.observation])[0])
            elif isinstance(c, MedicationCriterion):
                needs.medications.update(vocabulary.resolve("medications", c.medications)[0])
        if measure.measured:
            needs.observables.update(vocabulary.resolve("observables", [measure.measured])[0])
        for criterion in (measure.events, measure.among_events):
            if criterion:
                needs.events[criterion.key] = (
                    criterion,
                    frozenset(vocabulary.resolve("conditions", criterion.reasons)[0]),
                )
    needs.condition_keys = dict(vocabulary.conditions)
    for pair in definitions.labs:
        needs.observables.update(vocabulary.resolve("observables", [pair.observation])[0])
        needs.conditions.update(vocabulary.resolve("conditions", [pair.condition])[0])
    return needs


EVER, ACTIVE, DIAGNOSED, EVER_DIAGNOSED = 1, 2, 4, 8


@dataclass
class Cohort:
    """Per-patient state at the reference date `t_ref` (days since 1970-01-01).

    sex: 0 male, 1 female; death_t NaN when alive at the end of the record. conditions: status bits
    (EVER, ACTIVE, DIAGNOSED, EVER_DIAGNOSED); observations: latest value (NaN: never measured);
    medications: taken at t_ref. All keyed by SYSTEM:code. events: for each event criterion of the
    definitions (by key), the cohort row and the time of every event it counts, at any time.
    """

    t_ref: float
    birth_t: np.ndarray
    sex: np.ndarray
    death_t: np.ndarray
    conditions: dict[str, np.ndarray]
    observations: dict[str, np.ndarray]
    medications: dict[str, np.ndarray]
    events: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.birth_t)

    @property
    def age_years(self) -> np.ndarray:
        return (self.t_ref - self.birth_t) / DAYS_PER_YEAR

    @property
    def alive(self) -> np.ndarray:
        return ~(self.death_t <= self.t_ref)

    @classmethod
    def concat(cls, parts: list[Cohort]) -> Cohort:
        def cat(name: str) -> dict[str, np.ndarray]:
            return {k: np.concatenate([getattr(p, name)[k] for p in parts]) for k in getattr(parts[0], name)}

        return cls(
            parts[0].t_ref,
            np.concatenate([p.birth_t for p in parts]),
            np.concatenate([p.sex for p in parts]),
            np.concatenate([p.death_t for p in parts]),
            cat("conditions"),
            cat("observations"),
            cat("medications"),
            {k: _cat_events([p.events[k] for p in parts], [len(p) for p in parts]) for k in parts[0].events},
        )


def _cat_events(parts: list[tuple[np.ndarray, np.ndarray]], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-chunk (row, time) event arrays, shifting rows by the sizes of earlier chunks."""
    offsets = np.cumsum([0, *sizes[:-1]])
    rows = np.concatenate([rows + offset for (rows, _), offset in zip(parts, offsets, strict=True)])
    return rows, np.concatenate([t for _, t in parts])


def counted_events(
    needs: Needs, pos: np.ndarray, t: np.ndarray, kind: np.ndarray, code_key: np.ndarray,
    reason_key: np.ndarray, encounter_class: np.ndarray,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """(row, time) of the events each criterion counts; one array per event column (code and reason as
    code keys, encounter_class as the ENCOUNTER_CLASSES index, -1 when none)."""
    out = {}
    for key, (criterion, codes) in needs.events.items():
        wanted = np.array(sorted(codes), dtype=object)
        if criterion.kind == "encounter":
            hit = (kind == K_ENCOUNTER_START) & np.isin(reason_key, wanted)
            if criterion.classes:
                hit &= np.isin(encounter_class, [ENCOUNTER_CLASSES.index(c) for c in criterion.classes])
            ended = (kind == K_ENCOUNTER_END) & np.isin(encounter_class, HOSPITAL)
            starts = np.flatnonzero(hit & np.isin(encounter_class, HOSPITAL))
            hit[starts[_same_events(pos[starts], t[starts], pos[ended], t[ended])]] = False  # transfers
        else:
            wanted_kind = {"death": K_DEATH, "onset": K_ONSET, "diagnosis": K_DIAGNOSIS}[criterion.kind]
            hit = (kind == wanted_kind) & np.isin(code_key, wanted)
        out[key] = (pos[hit], t[hit])
    return out


def _same_events(rows: np.ndarray, t: np.ndarray, other_rows: np.ndarray, other_t: np.ndarray) -> np.ndarray:
    """Whether each (row, time) is also one of the other (row, time) pairs (the same member, same instant)."""
    others = set(zip(other_rows.tolist(), other_t.tolist(), strict=True))
    return np.array([pair in others for pair in zip(rows.tolist(), t.tolist(), strict=True)], bool)


def _last_row(n: int, pos: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each patient, the largest row number among `rows` (their positions `pos`), -1 if none."""
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, pos, rows)
    return last


def _summarise(
    n: int,
    pos: np.ndarray,
    t: np.ndarray,
    kind: np.ndarray,
    value: np.ndarray,
    rows_of: dict[str, np.ndarray],
    t_ref: float,
    needs: Needs,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Status at t_ref from events in patient and time order; rows_of[key] are the rows of that code."""
    conditions, observations, medications = {}, {}, {}

    def last(key: str, k: int) -> np.ndarray:
        rows = rows_of.get(key, np.zeros(0, np.int64))
        rows = rows[(kind[rows] == k) & (t[rows] <= t_ref)]
        return _last_row(n, pos[rows], rows)

    for key in needs.conditions:
        onset, diagnosis, resolved = (last(key, k) for k in (K_ONSET, K_DIAGNOSIS, K_RESOLVED))
        active = onset > resolved
        status = np.where(onset >= 0, EVER, 0) | np.where(active, ACTIVE, 0)
        status |= np.where(active & (diagnosis > onset), DIAGNOSED, 0) | np.where(diagnosis >= 0, EVER_DIAGNOSED, 0)
        conditions[key] = status.astype(np.int8)
    for key in needs.observables:
        latest = last(key, K_OBSERVATION)
        observations[key] = np.where(latest >= 0, value[np.maximum(latest, 0)], np.nan)
    for key in needs.medications:
        medications[key] = last(key, K_MED_START) > last(key, K_MED_STOP)
    return conditions, observations, medications


def _rows_by_key(keys: np.ndarray, wanted: set[str]) -> dict[str, np.ndarray]:
    return {key: np.flatnonzero(keys == key) for key in wanted}


def cohort_from_kernel(
    events: Events, patient: np.ndarray, index: np.ndarray, birth_t: np.ndarray, sex: np.ndarray,
    codes: tuple[Code, ...], t_ref: float, needs: Needs, conditions: tuple[str, ...] = (),
) -> Cohort:  # fmt: skip
    """Summary of kernel output (`Simulator.simulate`): `index` ascending, `patient` the index of each
    event; `conditions` the condition names by index (for encounter reasons)."""
    n = len(index)
    pos = np.searchsorted(index, patient)
    table_keys = np.array([code_key(c.system, str(c.code)) for c in codes] + [""], dtype=object)
    wanted = needs.conditions | needs.observables | needs.medications
    code_ids = {key: np.flatnonzero(table_keys == key) for key in wanted}
    rows_of = {key: np.flatnonzero(np.isin(events.code, ids)) for key, ids in code_ids.items()}
    is_death = events.kind == K_DEATH
    death_t = np.full(n, np.nan)
    death_t[pos[is_death]] = events.t[is_death]
    kind = events.kind.astype(np.int64)
    parts = _summarise(n, pos, events.t, kind, events.value, rows_of, t_ref, needs)
    counted = {}
    if needs.events:
        reason_keys = np.array([needs.condition_keys.get(name, "") for name in conditions] + [""], dtype=object)
        is_encounter = (kind == K_ENCOUNTER_START) | (kind == K_ENCOUNTER_END)
        counted = counted_events(
            needs, pos, events.t, kind, table_keys[events.code], reason_keys[events.reason],
            np.where(is_encounter, events.subject, -1),
        )  # fmt: skip
    return Cohort(t_ref, birth_t.astype(float), sex.astype(np.int8), death_t, *parts, counted)


def _kind_ids(kinds: pd.Series) -> np.ndarray:
    """Event kind names -> kernel kind numbers (through the categories, not row by row)."""
    categorical = kinds.astype("category")
    lookup = np.array([EVENT_KINDS.index(str(c)) for c in categorical.cat.categories] + [-1], np.int64)
    return lookup[categorical.cat.codes.to_numpy()]


def _days(times: pd.Series) -> np.ndarray:
    """Timestamps (UTC) -> float days since 1970-01-01, NaN where missing."""
    return ((times - pd.Timestamp(0, tz="UTC")).dt.total_seconds() / 86_400.0).to_numpy(dtype=float)


def cohort_from_tables(patients: pd.DataFrame, events: pd.DataFrame, t_ref: float, needs: Needs) -> Cohort:
    """Summary of the patient and event tables of a run (in memory or read back from Parquet)."""
    order = np.argsort(patients["index"].to_numpy(), kind="stable")
    patients = patients.iloc[order]
    index = patients["index"].to_numpy()
    pos = np.searchsorted(index, events["patient"].to_numpy())
    kind = _kind_ids(events["kind"])
    wanted = needs.conditions | needs.observables | needs.medications
    rows_of = {}
    for key in wanted:
        system, code = key.split(":", 1)
        is_code = (events["system"] == CODE_SYSTEMS[system]) & (events["code"] == code)
        rows_of[key] = np.flatnonzero(is_code.to_numpy())
    t = _days(events["time"])
    value = events["value"].to_numpy(dtype=float)
    sex = (patients["sex"].astype(str) == "F").to_numpy().astype(np.int8)
    parts = _summarise(len(index), pos, t, kind, value, rows_of, t_ref, needs)
    counted = {}
    if needs.events:
        systems = {label: name for name, label in CODE_SYSTEMS.items()}
        code_key = (events["system"].astype(str).map(systems).fillna("") + ":" + events["code"].astype(str)).to_numpy()
        reason = events["reason"].astype(object).map(needs.condition_keys).fillna("").to_numpy()
        classes = {c: i for i, c in enumerate(ENCOUNTER_CLASSES)}
        encounter_class = events["encounter_class"].astype(object).map(classes).fillna(-1).to_numpy(np.int64)
        counted = counted_events(needs, pos, t, kind, code_key, reason, encounter_class)
    return Cohort(t_ref, _days(patients["birth_time"]), sex, _days(patients["death_time"]), *parts, counted)


def simulate_cohort(sim: Simulator, index: np.ndarray, needs: Needs, t_ref: float, chunk_size: int = 10_000) -> Cohort:
    """Kernel only: the summary of patients `index` (ascending), simulated chunk by chunk."""
    parts = []
    for start in range(0, len(index), chunk_size):
        chunk = index[start : start + chunk_size]
        run = sim.simulate(chunk)
        birth_t, sex = run.people.birth_t, run.people.sex
        parts.append(
            cohort_from_kernel(
                run.events, run.patient, chunk, birth_t, sex, sim.names.codes, t_ref, needs, sim.names.conditions
            )
        )
    return Cohort.concat(parts)
