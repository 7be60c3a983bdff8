"""The target file format: rules/targets/targets.csv (one published figure per row, with its source) and
definitions.yaml (what each measure counts), loaded and checked with file:line errors."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from simulator.model.parsing import LoadError, Problem, parse_yaml, suggest, validate
from simulator.model.schema import ENCOUNTER_CLASSES, Frozen

if TYPE_CHECKING:
    pass


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


class ConditionCriterion(Frozen):
    conditions: list[str] = Field(min_length=1)
    status: Literal["active", "diagnosed", "undiagnosed", "ever", "ever_diagnosed"]


class ObservationCriterion(Frozen):
    observation: str
    op: Literal[">=", ">", "<=", "<"]
    value: float


class MedicationCriterion(Frozen):
    medications: list[str] = Field(min_length=1)


class AnyCriterion(Frozen):
    any: list[Criterion] = Field(min_length=1)


class AllCriterion(Frozen):
    all: list[Criterion] = Field(min_length=1)


Criterion = Annotated[
    ConditionCriterion | ObservationCriterion | MedicationCriterion | AnyCriterion | AllCriterion,
    Field(union_mode="left_to_right"),
]


class EventCriterion(Frozen):
    """Events a rate counts: `encounter` (a stay or visit of one of `classes` for one of the
    conditions `reasons`; hospital encounters joined by a transfer at the same instant are one
    stay), `death` (from one of the causes `reasons`), `onset` or `diagnosis` (of one of the conditions)."""

    kind: Literal["encounter", "death", "onset", "diagnosis"]
    reasons: list[str] = Field(min_length=1)  # condition names or SYSTEM:code
    classes: list[Literal[ENCOUNTER_CLASSES]] = []  # type: ignore[valid-type]

    @property
    def key(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)


class Measure(Frozen):
    label: str = ""  # a short readable name for the report ("Current asthma"); default: the measure's name
    counts: str = ""
    statistic: Literal["prevalence", "share", "rate", "event_share", "life_expectancy", "unsupported"]
    numerator: Criterion | None = None
    events: EventCriterion | None = None  # what a rate counts; an event_share's numerator
    among_events: EventCriterion | None = None  # an event_share's denominator
    measured: str | None = None  # prevalence among people with a reading of this observable
    among: Criterion | None = None  # prevalence among the people of the band who meet this (e.g. diagnosed)
    tolerance: float | None = None  # pass within this absolute difference (default: the relative tolerance)
    reason: str = ""


class LabPair(Frozen):
    observation: str
    condition: str


class StandardGroup(Frozen):
    ages: tuple[int, int]  # whole years, both ends included; OPEN_AGE means "and over"
    weight: float = Field(gt=0, le=1)


class Standard(Frozen):
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


class Definitions(Frozen):
    measures: dict[str, Measure]
    standards: dict[str, Standard] = {}
    labs: list[LabPair] = []
    sections: dict[str, list[str]] = {}  # report section title -> the targets.csv `condition` values it shows


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
