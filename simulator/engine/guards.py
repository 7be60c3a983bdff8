"""Every guard kind in one table: its kernel instructions (read by the compiler) and its meaning (read by
the reference): whether it holds, and when an operand that changes with time crosses its threshold.

A new guard kind is its model in simulator/model/schema.py (GUARD_ATOMS: its key and the names it reads),
its entry here, and its branch in kernel.eval_guard (and in kernel.next_crossing when its operand changes
with time). The combinators all/any/not are the same for every kind.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from simulator.days import DAYS_PER_YEAR, days_since_epoch, to_date, year_start
from simulator.engine.codes import (
    G_AGE,
    G_ATTR,
    G_BEFORE,
    G_COND_ACTIVE,
    G_COND_DIAGNOSED,
    G_ETHNICITY,
    G_MED,
    G_MONTH,
    G_OBS,
    G_OR,
    G_RACE,
    G_SEX,
    G_SINCE,
    SEXES,
)
from simulator.model.schema import (
    DAYS_PER_UNIT,
    AgeGuard,
    AttributeGuard,
    CalendarGuard,
    ConditionGuard,
    EthnicityGuard,
    GuardAtom,
    MedicationGuard,
    MonthGuard,
    ObservationGuard,
    RaceGuard,
    SexGuard,
    SinceGuard,
)

Instruction = tuple[int, int, str, float]  # (opcode, integer operand, comparison, float operand)
COMPARE = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
INF = math.inf


class Indexes(Protocol):
    """What the compiler has numbered: the global index of every name a guard may read."""

    attributes: dict[str, int]
    conditions: dict[str, int]
    medications: dict[str, int]
    observables: dict[str, int]
    races: list[str]
    ethnicities: list[str]
    state_index: dict[tuple[str, str], int]


class Drifting(Protocol):
    level: float
    slope_per_year: float
    t0: float

    def at(self, t: float) -> float: ...


class Patient(Protocol):
    """What the reference knows of a patient at a moment."""

    birth_t: float
    sex: str
    race: str
    ethnicity: str
    attributes: dict[str, Drifting]
    active: set[str]
    diagnosed: set[str]
    taking: Container[str]  # running medication courses
    latest: dict[str, float]
    entered: dict[tuple[str, str], float]


@dataclass(frozen=True)
class GuardKind:
    """`instructions(guard, indexes, module)`: its postfix kernel program; `holds(guard, patient, module, t)`;
    `threshold(guard, patient, module, t)`: the next time (after t, or a fixed time) at which a time-varying
    operand crosses the guard's value (inf: never)."""

    instructions: Callable[[Any, Indexes, str], list[Instruction]]
    holds: Callable[[Any, Patient, str, float], bool]
    threshold: Callable[[Any, Patient, str, float], float] | None = None


def _any_of(op: int, names: list[str], pool: list[str]) -> list[Instruction]:
    return [*((op, pool.index(name), "==", 0.0) for name in names), (G_OR, len(names), "==", 0.0)]


def _latest_holds(g: ObservationGuard, p: Patient) -> bool:
    latest = p.latest[g.observation]
    return not math.isnan(latest) and COMPARE[g.op](latest, g.value)


def _since_holds(g: SinceGuard, p: Patient, module: str, t: float) -> bool:
    entered = p.entered.get((module, g.since))
    return entered is not None and COMPARE[g.op](t - entered, g.value * DAYS_PER_UNIT[g.unit])


def _since_threshold(g: SinceGuard, p: Patient, module: str, t: float) -> float:
    entered = p.entered.get((module, g.since))
    return INF if entered is None else entered + g.value * DAYS_PER_UNIT[g.unit]


def _attribute_threshold(g: AttributeGuard, p: Patient, module: str, t: float) -> float:
    a = p.attributes[g.attribute]
    return INF if a.slope_per_year == 0.0 else a.t0 + (g.value - a.level) / a.slope_per_year * DAYS_PER_YEAR


def _first_of_next_month(day: date) -> date:
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


def _month_flip(g: MonthGuard, t: float) -> float:
    """The first day of the first month after t's in which the guard's value differs from its value now."""
    day = to_date(t)
    inside = day.month in g.month
    for _ in range(12):
        day = _first_of_next_month(day)
        if (day.month in g.month) != inside:
            return days_since_epoch(day)
    return INF


GUARD_KINDS: dict[type[GuardAtom], GuardKind] = {
    AgeGuard: GuardKind(
        lambda g, ix, m: [(G_AGE, 0, g.age_years, g.value)],
        lambda g, p, m, t: COMPARE[g.age_years]((t - p.birth_t) / DAYS_PER_YEAR, g.value),
        lambda g, p, m, t: p.birth_t + g.value * DAYS_PER_YEAR,
    ),
    SexGuard: GuardKind(
        lambda g, ix, m: [(G_SEX, SEXES.index(g.sex), "==", 0.0)],
        lambda g, p, m, t: p.sex == g.sex,
    ),
    RaceGuard: GuardKind(
        lambda g, ix, m: _any_of(G_RACE, g.race, ix.races),
        lambda g, p, m, t: p.race in g.race,
    ),
    EthnicityGuard: GuardKind(
        lambda g, ix, m: _any_of(G_ETHNICITY, g.ethnicity, ix.ethnicities),
        lambda g, p, m, t: p.ethnicity in g.ethnicity,
    ),
    AttributeGuard: GuardKind(
        lambda g, ix, m: [(G_ATTR, ix.attributes[g.attribute], g.op, g.value)],
        lambda g, p, m, t: COMPARE[g.op](p.attributes[g.attribute].at(t), g.value),
        _attribute_threshold,
    ),
    ConditionGuard: GuardKind(
        lambda g, ix, m: [
            (G_COND_ACTIVE if g.status == "active" else G_COND_DIAGNOSED, ix.conditions[g.condition], "==", 0.0)
        ],
        lambda g, p, m, t: g.condition in (p.active if g.status == "active" else p.diagnosed),
    ),
    MedicationGuard: GuardKind(
        lambda g, ix, m: [(G_MED, ix.medications[g.medication], "==", 0.0)],
        lambda g, p, m, t: g.medication in p.taking,
    ),
    ObservationGuard: GuardKind(
        lambda g, ix, m: [(G_OBS, ix.observables[g.observation], g.op, g.value)],
        lambda g, p, m, t: _latest_holds(g, p),
    ),
    SinceGuard: GuardKind(
        lambda g, ix, m: [(G_SINCE, ix.state_index[(m, g.since)], g.op, g.value * DAYS_PER_UNIT[g.unit])],
        _since_holds,
        _since_threshold,
    ),
    CalendarGuard: GuardKind(
        lambda g, ix, m: [(G_BEFORE, 0, "==", year_start(g.before_year))],
        lambda g, p, m, t: t < year_start(g.before_year),
        lambda g, p, m, t: year_start(g.before_year),
    ),
    MonthGuard: GuardKind(
        lambda g, ix, m: [(G_MONTH, sum(1 << (month - 1) for month in g.month), "==", 0.0)],
        lambda g, p, m, t: to_date(t).month in g.month,
        lambda g, p, m, t: _month_flip(g, t),
    ),
}
