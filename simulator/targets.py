"""Real cohort statistics as data, and the same statistics computed on a simulated cohort.

rules/targets/targets.csv holds one published figure per row (with its source); definitions.yaml says
what each measure counts and how the simulated value is computed: crude, at the reference date, among
the living, on the row's own age band and sex. A cohort (kernel buffers or event tables) is first
reduced to a per-patient summary (condition status, latest reading, medications taken at the
reference date) for just the codes the definitions name, so chunks can be summarised one at a time.
"""

from __future__ import annotations

import csv
import json
import math
import operator
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import special

from simulator import kernel
from simulator.loading import LoadError, Problem, parse_yaml, suggest, validate
from simulator.schema import CODE_SYSTEMS, ENCOUNTER_CLASSES, Code

if TYPE_CHECKING:
    from simulator.library import Library

TARGETS_FILE = "targets.csv"
DEFINITIONS_FILE = "definitions.yaml"
COLUMNS = (
    "id",
    "measure",
    "condition",
    "statistic",
    "age_lo",
    "age_hi",
    "sex",
    "value",
    "unit",
    "basis",
    "ci_lo",
    "ci_hi",
    "role",
    "year",
    "source",
    "url",
)
OPEN_AGE = 120  # age_hi 120 means "and over"
RELATIVE_TOLERANCE = 0.10
Z95 = 1.959963984540054
RATE_GROUP = 5  # years: age groups of the lifetime cohort's event rates
HOSPITAL = (ENCOUNTER_CLASSES.index("inpatient"), ENCOUNTER_CLASSES.index("icu"))

# --- definitions -----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConditionCriterion(_Strict):
    conditions: list[str] = Field(min_length=1)
    status: Literal["active", "diagnosed", "undiagnosed", "ever", "ever_diagnosed"]


class ObservationCriterion(_Strict):
    observation: str
    op: Literal[">=", ">", "<=", "<"]
    value: float


class MedicationCriterion(_Strict):
    medications: list[str] = Field(min_length=1)


class AnyCriterion(_Strict):
    any: list[Criterion] = Field(min_length=1)


class AllCriterion(_Strict):
    all: list[Criterion] = Field(min_length=1)


Criterion = Annotated[
    ConditionCriterion | ObservationCriterion | MedicationCriterion | AnyCriterion | AllCriterion,
    Field(union_mode="left_to_right"),
]


class EventCriterion(_Strict):
    """Events a rate counts: `encounter` (a stay or visit of one of `classes` for one of the
    conditions `reasons`; hospital encounters joined by a transfer at the same instant are one
    stay), `death` (from one of the causes `reasons`) or `onset` (of one of the conditions)."""

    kind: Literal["encounter", "death", "onset"]
    reasons: list[str] = Field(min_length=1)  # condition names or SYSTEM:code
    classes: list[Literal[ENCOUNTER_CLASSES]] = []  # type: ignore[valid-type]

    @property
    def key(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)


class Measure(_Strict):
    counts: str = ""
    statistic: Literal["prevalence", "share", "rate", "event_share", "life_expectancy", "unsupported"]
    numerator: Criterion | None = None
    events: EventCriterion | None = None  # what a rate counts; an event_share's numerator
    among_events: EventCriterion | None = None  # an event_share's denominator
    measured: str | None = None  # prevalence among people with a reading of this observable
    among: Criterion | None = None  # prevalence among the people of the band who meet this (e.g. diagnosed)
    tolerance: float | None = None  # pass within this absolute difference (default: the relative tolerance)
    reason: str = ""


class LabPair(_Strict):
    observation: str
    condition: str


class StandardGroup(_Strict):
    ages: tuple[int, int]  # whole years, both ends included; OPEN_AGE means "and over"
    weight: float = Field(gt=0, le=1)


class Standard(_Strict):
    """A standard population for direct age adjustment: the share of each age group in it."""

    source: str = Field(min_length=1)
    groups: list[StandardGroup] = Field(min_length=1)

    @model_validator(mode="after")
    def _contiguous_and_whole(self) -> Standard:
        for before, after in zip(self.groups, self.groups[1:], strict=False):
            if after.ages[0] != before.ages[1] + 1:
                raise ValueError(f"age groups must follow each other ({before.ages[1]} then {after.ages[0]})")
        total = sum(g.weight for g in self.groups)
        if abs(total - 1) > 1e-4:
            raise ValueError(f"the weights must sum to 1 (they sum to {total:.6f})")
        return self

    @property
    def ages(self) -> tuple[int, int]:
        return self.groups[0].ages[0], self.groups[-1].ages[1]


class Definitions(_Strict):
    measures: dict[str, Measure]
    standards: dict[str, Standard] = {}
    labs: list[LabPair] = []


# --- target rows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One published figure; `value`, `ci_lo`, `ci_hi` are fractions for prevalence and share rows."""

    id: str
    measure: str
    condition: str
    statistic: str
    age_lo: int
    age_hi: int
    sex: Literal["M", "F", "all"]
    value: float
    unit: str
    basis: Literal["crude", "age-adjusted"]
    ci_lo: float | None
    ci_hi: float | None
    role: Literal["primary", "secondary"]
    year: str
    source: str
    url: str
    line: int
    standard: str = ""  # an age-adjusted row's standard population (definitions.yaml `standards`)
    groups: tuple[tuple[int, int, float], ...] = ()  # that standard's (age_lo, age_hi, weight)

    @property
    def band(self) -> str:
        """'40-59', '65+', or '65' for one exact age (life expectancy at an age)."""
        if self.age_lo == self.age_hi:
            return str(self.age_lo)
        hi = "+" if self.age_hi >= OPEN_AGE else f"-{self.age_hi}"
        return f"{self.age_lo}{hi}"


@dataclass(frozen=True)
class TargetSet:
    targets: tuple[Target, ...]
    definitions: Definitions
    file: str

    def by_id(self) -> dict[str, Target]:
        return {t.id: t for t in self.targets}


_PER = re.compile(r"per ([\d,]+)")


def _scale(unit: str) -> float:
    """Percent -> fraction; 'per 1,000 ... per year' -> per person-year; else as given."""
    text = unit.strip().lower()
    if text.startswith("percent"):
        return 0.01
    per = _PER.match(text)
    return 1.0 / float(per.group(1).replace(",", "")) if per else 1.0


def _number(text: str, name: str, problems: list[Problem], where: tuple[str, int]) -> float | None:
    try:
        value = float(text)
    except ValueError:
        problems.append(Problem(where[0], where[1], 1, name, f"must be a number (got {text!r})"))
        return None
    if not math.isfinite(value):
        problems.append(Problem(where[0], where[1], 1, name, f"must be finite (got {text!r})"))
        return None
    return value


def _row(raw: dict[str, str], file: str, line: int, problems: list[Problem]) -> Target | None:
    """One CSV row -> Target, or None with its problems appended (every problem of the row)."""
    before = len(problems)
    where = (file, line)
    values: dict[str, float | None] = {}
    for name in ("value", "age_lo", "age_hi"):
        values[name] = _number(raw[name], name, problems, where) if raw[name].strip() else None
    if values["value"] is None and not raw["value"].strip():
        problems.append(Problem(file, line, 1, "value", "required value is missing"))
    for name in ("ci_lo", "ci_hi"):
        values[name] = _number(raw[name], name, problems, where) if raw[name].strip() else None
    choices = {"sex": ("M", "F", "all"), "basis": ("crude", "age-adjusted"), "role": ("primary", "secondary")}
    if raw.get("standard", "").strip() and raw["basis"] == "crude":
        problems.append(Problem(file, line, 1, "standard", "only an age-adjusted row names a standard population"))
    for name, valid in choices.items():
        if raw[name] not in valid:
            message = f"must be one of {', '.join(valid)} (got {raw[name]!r}){suggest(raw[name], list(valid))}"
            problems.append(Problem(file, line, 1, name, message))
    for name in ("id", "measure", "source"):
        if not raw[name].strip():
            problems.append(Problem(file, line, 1, name, "required value is missing"))
    lo, hi = values["age_lo"], values["age_hi"]
    if lo is not None and hi is not None and lo > hi:
        problems.append(Problem(file, line, 1, "age_lo", f"age_lo {lo:g} is above age_hi {hi:g}"))
    if len(problems) > before:
        return None
    scale = _scale(raw["unit"])
    value = values["value"] * scale  # type: ignore[operator]
    ci_lo = values["ci_lo"] * scale if values["ci_lo"] is not None else None
    ci_hi = values["ci_hi"] * scale if values["ci_hi"] is not None else None
    if ci_lo is not None and ci_hi is not None and not ci_lo <= value <= ci_hi:
        problems.append(Problem(file, line, 1, "ci_lo", "the interval [ci_lo, ci_hi] must contain value"))
        return None
    return Target(
        id=raw["id"],
        measure=raw["measure"],
        condition=raw["condition"],
        statistic=raw["statistic"],
        age_lo=int(lo) if lo is not None else 0,
        age_hi=int(hi) if hi is not None else OPEN_AGE,
        sex=raw["sex"],  # type: ignore[arg-type]
        value=value,
        unit=raw["unit"],
        basis=raw["basis"],  # type: ignore[arg-type]
        ci_lo=ci_lo,
        ci_hi=ci_hi,
        role=raw["role"],  # type: ignore[arg-type]
        year=raw["year"],
        source=raw["source"],
        url=raw["url"],
        line=line,
        standard=raw.get("standard", "").strip(),
    )


def _with_standard(target: Target, standards: dict[str, Standard], file: str, problems: list[Problem]) -> Target | None:
    """The row with its standard's age groups, or None with a problem when the standard is unknown or
    does not span the row's ages."""
    if not target.standard:
        return target
    standard = standards.get(target.standard)
    if standard is None:
        hint = suggest(target.standard, set(standards))
        message = f"standard '{target.standard}' is not among the standards of {DEFINITIONS_FILE}{hint}"
        problems.append(Problem(file, target.line, 1, "standard", message))
        return None
    if standard.ages != (target.age_lo, target.age_hi):
        spans = "-".join(map(str, standard.ages))
        message = f"standard '{target.standard}' covers ages {spans}, the row {target.age_lo}-{target.age_hi}"
        problems.append(Problem(file, target.line, 1, "standard", message))
        return None
    groups = tuple((g.ages[0], g.ages[1], g.weight) for g in standard.groups)
    return replace(target, groups=groups)


def load_targets(directory: Path, display: str | None = None) -> TargetSet:
    """Read targets.csv and definitions.yaml of `directory`; raise LoadError with every problem."""
    shown = display or str(directory)
    csv_path, yaml_path = directory / TARGETS_FILE, directory / DEFINITIONS_FILE
    csv_name, yaml_name = f"{shown}/{TARGETS_FILE}", f"{shown}/{DEFINITIONS_FILE}"
    missing = [Problem(n, 1, 1, "", "no such file") for p, n in ((csv_path, csv_name), (yaml_path, yaml_name))]
    missing = [m for m, p in zip(missing, (csv_path, yaml_path), strict=True) if not p.is_file()]
    if missing:
        raise LoadError(missing)
    definitions = validate(parse_yaml(yaml_path, yaml_name), Definitions)
    problems: list[Problem] = []
    targets: list[Target] = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        absent = [c for c in COLUMNS if c not in header]
        if absent:
            raise LoadError([Problem(csv_name, 1, 1, "", f"missing column(s): {', '.join(absent)}")])
        seen: dict[str, int] = {}
        for raw in reader:
            line = reader.line_num
            if None in raw or any(raw[c] is None for c in COLUMNS):
                problems.append(Problem(csv_name, line, 1, "", f"expected {len(header)} fields"))
                continue
            target = _row(raw, csv_name, line, problems)
            if target is not None:
                target = _with_standard(target, definitions.standards, csv_name, problems)
            if target is None:
                continue
            if target.id in seen:
                problems.append(Problem(csv_name, line, 1, "id", f"duplicate id (first on line {seen[target.id]})"))
            elif (target.basis == "crude" or target.standard) and target.measure not in definitions.measures:
                hint = suggest(target.measure, set(definitions.measures))
                message = f"measure '{target.measure}' has no definition in {DEFINITIONS_FILE}{hint}"
                problems.append(Problem(csv_name, line, 1, "measure", message))
            else:
                seen[target.id] = line
                targets.append(target)
    if problems:
        raise LoadError(problems)
    return TargetSet(tuple(targets), definitions, csv_name)


# --- resolving names against a library -----------------------------------------------------------------


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


# --- per-patient summary of a cohort -------------------------------------------------------------------

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
        return (self.t_ref - self.birth_t) / 365.25

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
            hit = (kind == kernel.K_ENCOUNTER_START) & np.isin(reason_key, wanted)
            if criterion.classes:
                hit &= np.isin(encounter_class, [ENCOUNTER_CLASSES.index(c) for c in criterion.classes])
            ended = (kind == kernel.K_ENCOUNTER_END) & np.isin(encounter_class, HOSPITAL)
            starts = np.flatnonzero(hit & np.isin(encounter_class, HOSPITAL))
            hit[starts[_same_events(pos[starts], t[starts], pos[ended], t[ended])]] = False  # transfers
        else:
            wanted_kind = kernel.K_DEATH if criterion.kind == "death" else kernel.K_ONSET
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
        onset, diagnosis, resolved = (last(key, k) for k in (kernel.K_ONSET, kernel.K_DIAGNOSIS, kernel.K_RESOLVED))
        active = onset > resolved
        status = np.where(onset >= 0, EVER, 0) | np.where(active, ACTIVE, 0)
        status |= np.where(active & (diagnosis > onset), DIAGNOSED, 0) | np.where(diagnosis >= 0, EVER_DIAGNOSED, 0)
        conditions[key] = status.astype(np.int8)
    for key in needs.observables:
        latest = last(key, kernel.K_OBSERVATION)
        observations[key] = np.where(latest >= 0, value[np.maximum(latest, 0)], np.nan)
    for key in needs.medications:
        medications[key] = last(key, kernel.K_MED_START) > last(key, kernel.K_MED_STOP)
    return conditions, observations, medications


def _rows_by_key(keys: np.ndarray, wanted: set[str]) -> dict[str, np.ndarray]:
    return {key: np.flatnonzero(keys == key) for key in wanted}


def cohort_from_kernel(
    events: kernel.Events, patient: np.ndarray, index: np.ndarray, birth_t: np.ndarray, sex: np.ndarray,
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
    is_death = events.kind == kernel.K_DEATH
    death_t = np.full(n, np.nan)
    death_t[pos[is_death]] = events.t[is_death]
    kind = events.kind.astype(np.int64)
    parts = _summarise(n, pos, events.t, kind, events.value, rows_of, t_ref, needs)
    counted = {}
    if needs.events:
        reason_keys = np.array([needs.condition_keys.get(name, "") for name in conditions] + [""], dtype=object)
        is_encounter = (kind == kernel.K_ENCOUNTER_START) | (kind == kernel.K_ENCOUNTER_END)
        counted = counted_events(
            needs, pos, events.t, kind, table_keys[events.code], reason_keys[events.reason],
            np.where(is_encounter, events.aux, -1),
        )  # fmt: skip
    return Cohort(t_ref, birth_t.astype(float), sex.astype(np.int8), death_t, *parts, counted)


def _kind_ids(kinds: pd.Series) -> np.ndarray:
    """Event kind names -> kernel kind numbers (through the categories, not row by row)."""
    categorical = kinds.astype("category")
    lookup = np.array([kernel.EVENT_KINDS.index(str(c)) for c in categorical.cat.categories] + [-1], np.int64)
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


# --- statistics ------------------------------------------------------------------------------------------

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_STATUS_BITS = {
    "active": ACTIVE,
    "diagnosed": DIAGNOSED,
    "ever": EVER,
    "ever_diagnosed": EVER_DIAGNOSED,
}


def meets(criterion: Criterion, cohort: Cohort, vocabulary: Vocabulary, absent: set[str]) -> np.ndarray | None:
    """Whether each patient meets the criterion; None when none of its names is loaded (names
    not loaded are added to `absent`)."""
    n = len(cohort)
    if isinstance(criterion, AnyCriterion | AllCriterion):
        members = criterion.any if isinstance(criterion, AnyCriterion) else criterion.all
        children = [meets(c, cohort, vocabulary, absent) for c in members]
        present = [c for c in children if c is not None]
        if not present:
            return None
        combine = np.logical_or if isinstance(criterion, AnyCriterion) else np.logical_and
        return combine.reduce(present)
    if isinstance(criterion, ConditionCriterion):
        keys, missing = vocabulary.resolve("conditions", criterion.conditions)
        absent.update(missing)
        if not keys:
            return None
        status = np.bitwise_or.reduce([cohort.conditions[k] for k in keys])
        if criterion.status == "undiagnosed":
            return np.logical_or.reduce([(cohort.conditions[k] & (ACTIVE | DIAGNOSED)) == ACTIVE for k in keys])
        return (status & _STATUS_BITS[criterion.status]) != 0
    if isinstance(criterion, ObservationCriterion):
        keys, missing = vocabulary.resolve("observables", [criterion.observation])
        absent.update(missing)
        if not keys:
            return None
        with np.errstate(invalid="ignore"):
            return _OPS[criterion.op](cohort.observations[keys[0]], criterion.value)
    keys, missing = vocabulary.resolve("medications", criterion.medications)
    absent.update(missing)
    return np.logical_or.reduce([cohort.medications[k] for k in keys]) if keys else np.zeros(n, bool)


@dataclass
class Comparison:
    """A target next to its simulated value; `passed` None when not compared."""

    target: Target
    status: Literal["compared", "not covered", "unsupported", "age-adjusted", "no lifetime cohort"]
    simulated: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    n: int = 0
    count: float = 0.0
    note: str = ""
    tolerance: float | None = None  # absolute; None: RELATIVE_TOLERANCE or the intervals

    @property
    def difference(self) -> float:
        return self.simulated - self.target.value

    @property
    def standard_error(self) -> float:
        return (self.hi - self.lo) / (2 * Z95)

    @property
    def passed(self) -> bool | None:
        if self.status != "compared" or not math.isfinite(self.simulated):
            return None
        t = self.target
        if self.tolerance is not None:
            return bool(abs(self.difference) <= self.tolerance)
        inside_sim = self.lo <= t.value <= self.hi
        inside_target = t.ci_lo is not None and t.ci_hi is not None and t.ci_lo <= self.simulated <= t.ci_hi
        return bool(abs(self.difference) <= RELATIVE_TOLERANCE * abs(t.value) or inside_sim or inside_target)

    @property
    def chance_of_missing(self) -> float:
        """The probability that a model without bias fails this target by sampling alone: its simulated
        value drawn around the target with this comparison's standard error, against the pass test."""
        se = self.standard_error
        if self.passed is None or not se > 0:
            return math.nan
        t = self.target
        if self.tolerance is not None:
            below = above = self.tolerance
        else:
            below = above = max(RELATIVE_TOLERANCE * abs(t.value), Z95 * se)
            if t.ci_lo is not None and t.ci_hi is not None:
                below, above = max(below, t.value - t.ci_lo), max(above, t.ci_hi - t.value)
        return float(special.ndtr(-below / se) + special.ndtr(-above / se))


def wilson(k: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return min(centre - half, p), max(centre + half, p)  # contains p also when rounding says otherwise


def in_band(age_years: np.ndarray, sex: np.ndarray, target: Target) -> np.ndarray:
    """Whether each age (whole years) and sex falls in the target's band."""
    age = np.floor(age_years)
    mask = (age >= target.age_lo) & (age <= target.age_hi if target.age_hi < OPEN_AGE else True)
    if target.sex != "all":
        mask &= sex == "MF".index(target.sex)
    return mask


def band_mask(cohort: Cohort, target: Target) -> np.ndarray:
    return in_band(cohort.age_years, cohort.sex, target)


def compare(
    target: Target, measure: Measure, cohort: Cohort, vocabulary: Vocabulary, lifetime: Cohort | None = None
) -> Comparison:
    """The simulated statistic of one target, computed the way the target counts."""
    if target.basis != "crude" and not target.standard:
        return Comparison(target, "age-adjusted", note="age-adjusted with no standard population named: not compared")
    if measure.statistic == "unsupported":
        return Comparison(target, "unsupported", note=measure.reason)
    if target.standard:
        return age_adjusted(target, measure, cohort, vocabulary)
    if measure.statistic == "life_expectancy":
        if lifetime is None:
            return Comparison(target, "no lifetime cohort")
        chosen = np.ones(len(lifetime), bool) if target.sex == "all" else lifetime.sex == "MF".index(target.sex)
        ages = (lifetime.death_t[chosen] - lifetime.birth_t[chosen]) / 365.25
        alive = int(np.isnan(ages).sum())
        ages = ages[~np.isnan(ages)]
        ages = ages[ages >= target.age_lo] - target.age_lo  # years lived after x by those alive at x
        if len(ages) == 0:
            note = f"no member of the lifetime cohort reached {target.age_lo}"
            return Comparison(target, "compared", math.nan, note=note)
        mean, half = float(ages.mean()), Z95 * float(ages.std(ddof=1) if len(ages) > 1 else 0) / math.sqrt(len(ages))
        note = f"{alive} members still alive at the horizon were left out" if alive else ""
        total = float(ages.sum())
        return Comparison(target, "compared", mean, mean - half, mean + half, len(ages), total, note, measure.tolerance)
    if measure.statistic in ("rate", "event_share"):
        if lifetime is None:
            return Comparison(target, "no lifetime cohort")
        if measure.statistic == "event_share":
            return event_share(target, measure, lifetime, vocabulary)
        return rate(target, measure, cohort, lifetime, vocabulary)
    living = cohort.alive
    if measure.statistic == "share":
        band = band_mask(cohort, target) & living
        n, k = int(living.sum()), float(band.sum())
        return Comparison(target, "compared", k / n if n else math.nan, *wilson(k, n), n, k)
    masks = prevalence_masks(measure, cohort, vocabulary)
    if isinstance(masks, str):
        return Comparison(target, "not covered", note=masks)
    hit, counted, note = masks
    band = band_mask(cohort, target) & living & counted
    n, k = int(band.sum()), float((hit & band).sum())
    return Comparison(target, "compared", k / n if n else math.nan, *wilson(k, n), n, k, note)


def prevalence_masks(
    measure: Measure, cohort: Cohort, vocabulary: Vocabulary
) -> tuple[np.ndarray, np.ndarray, str] | str:
    """(who meets the numerator, who is counted: meets `among` and has a reading of `measured`, note)
    over the whole cohort, or why the measure is not covered."""
    absent: set[str] = set()
    hit = meets(measure.numerator, cohort, vocabulary, absent) if measure.numerator else None
    counted = np.ones(len(cohort), bool)
    if measure.among is not None:
        counted &= meets(measure.among, cohort, vocabulary, absent)
    note = f"not in the loaded modules: {', '.join(sorted(absent))}" if absent else ""
    if hit is None:
        return note
    if measure.measured:
        keys, _ = vocabulary.resolve("observables", [measure.measured])
        if not keys:
            return f"observable '{measure.measured}' is not loaded"
        counted &= ~np.isnan(cohort.observations[keys[0]])
    return hit, counted, note


def age_adjusted(target: Target, measure: Measure, cohort: Cohort, vocabulary: Vocabulary) -> Comparison:
    """Direct age adjustment: the prevalence of each of the standard's age groups, weighted by the
    group's share of the standard population; the interval from the groups' binomial variances."""
    if measure.statistic != "prevalence":
        return Comparison(target, "unsupported", note="age adjustment is defined for prevalence rows only")
    masks = prevalence_masks(measure, cohort, vocabulary)
    if isinstance(masks, str):
        return Comparison(target, "not covered", note=masks)
    hit, counted, note = masks
    counted = counted & cohort.alive
    value = variance = count = 0.0
    people = 0
    for lo, hi, weight in target.groups:
        group = band_mask(cohort, replace(target, age_lo=lo, age_hi=hi)) & counted
        n, k = int(group.sum()), float((hit & group).sum())
        if n == 0:
            return Comparison(target, "compared", math.nan, note=f"no one counted at ages {lo}-{hi}")
        p = k / n
        value += weight * p
        variance += weight**2 * p * (1 - p) / n
        count, people = count + k, people + n
    half = Z95 * math.sqrt(variance)
    note = "; ".join(filter(None, [f"age-adjusted to {target.standard}", note]))
    return Comparison(target, "compared", value, max(value - half, 0.0), min(value + half, 1.0), people, count, note)


def _by_age_group(sex: np.ndarray, age: np.ndarray, n_groups: int) -> np.ndarray:
    """Counts by sex and RATE_GROUP-year age group (the last group open-ended)."""
    counts = np.zeros((2, n_groups))
    group = np.minimum(age // RATE_GROUP, n_groups - 1).astype(np.int64)
    np.add.at(counts, (sex.astype(np.int64), group), 1.0)
    return counts


def rate(target: Target, measure: Measure, cohort: Cohort, lifetime: Cohort, vocabulary: Vocabulary) -> Comparison:
    """Events per person-year in the band: the lifetime cohort's rates by age group and sex (events
    over person-years lived there), weighted by the living cohort's people of each age and sex in
    the band, i.e. the crude rate of the living population if it had the simulated rates."""
    assert measure.events is not None
    keys, missing = vocabulary.resolve("conditions", measure.events.reasons)
    if not keys:
        return Comparison(target, "not covered", note=f"not in the loaded modules: {', '.join(missing)}")
    rows, t = lifetime.events[measure.events.key]
    followed = np.isfinite(lifetime.death_t[rows])  # members alive at the horizon give no person-years
    rows, t = rows[followed], t[followed]
    n_groups = OPEN_AGE // RATE_GROUP + 1
    lived = (lifetime.death_t - lifetime.birth_t) / 365.25
    starts = np.arange(n_groups) * RATE_GROUP
    person_years = np.zeros((2, n_groups))
    for s in (0, 1):
        years = lived[np.isfinite(lived) & (lifetime.sex == s)]
        person_years[s] = np.clip(years[:, None] - starts[None, :], 0, RATE_GROUP).sum(axis=0)
    events = _by_age_group(lifetime.sex[rows], (t - lifetime.birth_t[rows]) / 365.25, n_groups)
    band = band_mask(cohort, target) & cohort.alive
    weights = _by_age_group(cohort.sex[band], np.floor(cohort.age_years[band]), n_groups)
    weights /= max(weights.sum(), 1.0)
    if (person_years[weights > 0] <= 0).any():
        return Comparison(target, "compared", math.nan, note="the lifetime cohort has no person-years at some ages")
    safe = np.where(person_years > 0, person_years, 1.0)
    value = float((weights * events / safe).sum())
    half = Z95 * math.sqrt(float((weights**2 * events / safe**2).sum()))  # Poisson event counts
    count = float(events[weights > 0].sum())
    note = f"{int(count)} events in the lifetime cohort at these ages" + (
        f"; not loaded: {', '.join(missing)}" if missing else ""
    )
    return Comparison(target, "compared", value, max(value - half, 0.0), value + half, int(band.sum()), count, note)


def event_share(target: Target, measure: Measure, lifetime: Cohort, vocabulary: Vocabulary) -> Comparison:
    """Share of the lifetime cohort's `among_events` at the band's ages that are also `events` (the
    same event: same member and time)."""
    assert measure.events is not None and measure.among_events is not None
    keys, missing = vocabulary.resolve("conditions", measure.among_events.reasons)
    if not keys:
        return Comparison(target, "not covered", note=f"not in the loaded modules: {', '.join(missing)}")
    rows, t = lifetime.events[measure.among_events.key]
    whole = in_band((t - lifetime.birth_t[rows]) / 365.25, lifetime.sex[rows], target)
    hit = _same_events(rows, t, *lifetime.events[measure.events.key]) & whole
    n, k = int(whole.sum()), float(hit.sum())
    return Comparison(
        target, "compared", k / n if n else math.nan, *wilson(k, n), n, k, "events of the lifetime cohort"
    )


def compare_all(
    targets: TargetSet, cohort: Cohort, vocabulary: Vocabulary, lifetime: Cohort | None = None
) -> list[Comparison]:
    unsupported = Measure(statistic="unsupported")
    measures = targets.definitions.measures
    return [compare(t, measures.get(t.measure, unsupported), cohort, vocabulary, lifetime) for t in targets.targets]
