"""The module file format: pydantic models for disease modules and rules files.

A module file is data. It is parsed as YAML, validated by these models (unknown keys are
errors), checked as a graph (``checks.py``) and compiled to arrays (``compiler.py``).
Nothing in a file is ever evaluated as code.

Times in files always carry a unit; rates are per year; ages are in years.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from simulator.days import DAYS_PER_YEAR

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
TimeUnit = Literal["minutes", "hours", "days", "weeks", "months", "years"]
DAYS_PER_UNIT: dict[str, float] = {
    "minutes": 1 / 1440,
    "hours": 1 / 24,
    "days": 1.0,
    "weeks": 7.0,
    "months": DAYS_PER_YEAR / 12,
    "years": DAYS_PER_YEAR,
}
CODE_SYSTEMS: dict[str, str] = {
    "SNOMED": "http://snomed.info/sct",
    "LOINC": "http://loinc.org",
    "RxNorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "ActCode": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
}
ENCOUNTER_CLASSES = ("wellness", "ambulatory", "emergency", "inpatient", "icu")
EncounterClass = Literal[ENCOUNTER_CLASSES]  # type: ignore[valid-type]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")  # Monday is day 0
Weekday = Literal[WEEKDAYS]  # type: ignore[valid-type]
ClockTime = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
OBSERVATION_CATEGORIES = ("vital-signs", "laboratory", "survey", "social-history", "exam")


class Frozen(BaseModel):
    """Base of every model of a data file: unknown keys are errors, loaded values never change, and every
    number is finite (NaN and infinities are refused wherever a number is read: the one place that says so;
    ranges are on the fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Strict(Frozen):
    """Base of module and rules files: also, values are not coerced across types (CSV-born models are
    Frozen only, since every CSV value is text)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


def _int_to_str(value: object) -> object:
    """YAML reads an unquoted SNOMED code as an int; a code is text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Code(Strict):
    """A coded concept: system short name, code, official display."""

    system: Literal["SNOMED", "LOINC", "RxNorm", "CVX", "ActCode", "CDCREC"]
    code: Annotated[str, BeforeValidator(_int_to_str), Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.\-]*$")]
    display: Annotated[str, Field(min_length=1)]


# --- distributions -------------------------------------------------------------------------------


class _Dist(Strict):
    unit: TimeUnit | None = None
    source: Name | None = None


class Exact(_Dist):
    distribution: Literal["exact"]
    value: float


class Uniform(_Dist):
    distribution: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high must be >= low (got low={self.low}, high={self.high})")
        return self


class Normal(_Dist):
    distribution: Literal["normal"]
    mean: float
    sd: Annotated[float, Field(ge=0)]


class Exponential(_Dist):
    distribution: Literal["exponential"]
    mean: Annotated[float, Field(gt=0)]


class LogNormal(_Dist):
    """Log-normal given by its median and the standard deviation of log(x)."""

    distribution: Literal["lognormal"]
    median: Annotated[float, Field(gt=0)]
    sigma: Annotated[float, Field(ge=0)]


class Gamma(_Dist):
    distribution: Literal["gamma"]
    shape: Annotated[float, Field(gt=0)]
    scale: Annotated[float, Field(gt=0)]


Distribution = Annotated[
    Exact | Uniform | Normal | Exponential | LogNormal | Gamma, Field(discriminator="distribution")
]


def _not_negative(dist: Exact | Uniform | Normal | Exponential | LogNormal | Gamma) -> object:
    """A time cannot be negative: its exact value, uniform low end and normal mean are at least 0."""
    for name in ("value", "low", "mean"):
        value = getattr(dist, name, None)
        if value is not None and value < 0:
            raise ValueError(f"a time cannot be negative ({name} {value:g})")
    return dist


Duration = Annotated[Distribution, AfterValidator(_not_negative)]


# --- guards --------------------------------------------------------------------------------------

Comparison = Literal["<", "<=", ">", ">=", "==", "!="]


class GuardAtom(Strict):
    """A leaf guard. `key` is the file key that names its kind (and `tag` the kind's name in errors);
    `refers` maps each field naming something defined elsewhere to its namespace (`attributes`,
    `conditions`, `medications`, `observables`, `states`, `race`, `ethnicity`), which the checks verify
    and calibration follows between modules. What a guard means is in simulator/engine/guards.py."""

    key: ClassVar[str]
    tag: ClassVar[str]
    refers: ClassVar[dict[str, str]] = {}

    def references(self) -> Iterator[tuple[str, str, tuple[str | int, ...]]]:
        """(namespace, name, path below the guard) of every name this guard reads."""
        for field, namespace in self.refers.items():
            value = getattr(self, field)
            if isinstance(value, list):
                for i, item in enumerate(value):
                    yield namespace, item, (field, i)
            else:
                yield namespace, value, (field,)


class AgeGuard(GuardAtom):
    key, tag = "age_years", "age"
    age_years: Comparison
    value: Annotated[float, Field(ge=0)]


class SexGuard(GuardAtom):
    key, tag = "sex", "sex"
    sex: Literal["M", "F"]


class RaceGuard(GuardAtom):
    key, tag, refers = "race", "race", {"race": "race"}
    race: list[Name] = Field(min_length=1)


class EthnicityGuard(GuardAtom):
    key, tag, refers = "ethnicity", "ethnicity", {"ethnicity": "ethnicity"}
    ethnicity: list[Name] = Field(min_length=1)


class AttributeGuard(GuardAtom):
    key, tag, refers = "attribute", "attribute", {"attribute": "attributes"}
    attribute: Name
    op: Comparison
    value: float


class ConditionGuard(GuardAtom):
    key, tag, refers = "condition", "condition", {"condition": "conditions"}
    condition: Name
    status: Literal["active", "diagnosed"] = "active"


class MedicationGuard(GuardAtom):
    key, tag, refers = "medication", "medication", {"medication": "medications"}
    medication: Name


class ObservationGuard(GuardAtom):
    """Latest value of an observable; false while the patient has none."""

    key, tag, refers = "observation", "observation", {"observation": "observables"}
    observation: Name
    op: Comparison
    value: float


class SinceGuard(GuardAtom):
    """Time since this module last entered `state`; false if it never did."""

    key, tag, refers = "since", "since", {"since": "states"}
    since: Name
    op: Comparison
    value: Annotated[float, Field(ge=0)]
    unit: TimeUnit


class CalendarGuard(GuardAtom):
    """True while the simulated date is before 1 January of `before_year`: a rate that changed in some
    calendar year (a secular trend). `not` gives on or after that date."""

    key, tag = "before_year", "calendar"
    before_year: Annotated[int, Field(ge=1800, le=2200)]


class MonthGuard(GuardAtom):
    """True while the simulated date (UTC) falls in one of the calendar months listed (1 January ... 12
    December): a season, e.g. the months when influenza vaccine is offered or a virus circulates."""

    key, tag = "month", "month"
    month: list[Annotated[int, Field(ge=1, le=12)]] = Field(min_length=1, max_length=12)

    @field_validator("month")
    @classmethod
    def _distinct(cls, months: list[int]) -> list[int]:
        if len(set(months)) != len(months):
            raise ValueError("a month is listed twice")
        return months


class GuardCombinator(Strict):
    """all / any / not over other guards: `parts()` are (path below this guard, guard) pairs."""

    key: ClassVar[str]
    tag: ClassVar[str]

    def parts(self) -> list[tuple[tuple[str | int, ...], Guard]]:
        value = getattr(self, next(iter(type(self).model_fields)))
        if isinstance(value, list):
            return [((self.key, i), item) for i, item in enumerate(value)]
        return [((self.key,), value)]


class AllGuard(GuardCombinator):
    key, tag = "all", "all"
    all: list[Guard] = Field(min_length=1)


class AnyGuard(GuardCombinator):
    key, tag = "any", "any"
    any: list[Guard] = Field(min_length=1)


class NotGuard(GuardCombinator):
    key, tag = "not", "not"
    not_: Guard = Field(alias="not")

    model_config = ConfigDict(populate_by_name=True)  # merged with Strict's


GUARD_ATOMS: tuple[type[GuardAtom], ...] = (
    AgeGuard,
    SexGuard,
    RaceGuard,
    EthnicityGuard,
    AttributeGuard,
    ConditionGuard,
    MedicationGuard,
    ObservationGuard,
    SinceGuard,
    CalendarGuard,
    MonthGuard,
)
GUARD_MODELS: tuple[type[GuardAtom | GuardCombinator], ...] = (*GUARD_ATOMS, AllGuard, AnyGuard, NotGuard)
GUARD_KEYS: dict[str, str] = {model.key: model.tag for model in GUARD_MODELS}
_GUARD_TAG_BY_CLASS: dict[type, str] = {model: model.tag for model in GUARD_MODELS}


def _guard_tag(value: object) -> str | None:
    """Pick the guard kind from the one key that names it, so errors speak of that kind only."""
    if isinstance(value, dict):
        for key, tag in GUARD_KEYS.items():
            if key in value:
                return tag
    elif isinstance(value, BaseModel):
        return _GUARD_TAG_BY_CLASS.get(type(value))
    return None


Guard = Annotated[
    Union[tuple(Annotated[model, Tag(model.tag)] for model in GUARD_MODELS)],  # noqa: UP007
    Discriminator(
        _guard_tag,
        custom_error_type="invalid_guard",
        custom_error_message="a guard needs one of the keys " + ", ".join(GUARD_KEYS),
    ),
]
AllGuard.model_rebuild()
AnyGuard.model_rebuild()
NotGuard.model_rebuild()


def guard_atoms(
    guard: BaseModel, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], GuardAtom]]:
    """(path, leaf guard) for every leaf of a guard tree, the path extending `path` through all/any/not."""
    if isinstance(guard, GuardAtom):
        yield path, guard
    elif isinstance(guard, GuardCombinator):
        for below, part in guard.parts():
            yield from guard_atoms(part, (*path, *below))


# --- state actions -------------------------------------------------------------------------------


class SetAttribute(Strict):
    """Set an attribute to a value, add to it, or draw it; `per_year` makes it drift with time
    from now on (unset: `to`/`draw` stop any drift, `add` keeps the current drift).
    `response_half_life_days`: the attribute's effects on observables follow the change through a
    first-order lag with this half-life (the body's response: fever falling after antibiotics, pulse
    oximetry rising after oxygen); unset, at once. Guards read the new value at once."""

    attribute: Name
    to: float | None = None
    add: float | None = None
    draw: Distribution | None = None
    per_year: float | None = None
    response_half_life_days: Annotated[float, Field(gt=0)] | None = None
    source: Name | None = None

    @model_validator(mode="after")
    def _one_of(self) -> SetAttribute:
        given = [k for k in ("to", "add", "draw") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of to, add, draw (got {', '.join(given) or 'none'})")
        return self


class EncounterStart(Strict):
    """Start an encounter. With `duration` it closes itself; without, a later state ends it."""

    encounter_class: Literal["wellness", "ambulatory", "emergency", "inpatient", "icu"] = Field(alias="class")
    code: Code
    duration: Duration | None = None
    reason: Name | None = None

    model_config = ConfigDict(populate_by_name=True)  # merged with Strict's


SYMPTOM_SCALE_MAX = 10.0  # every symptom's severity is on one 0-10 scale (docs/module-format.md, Symptom)


class Symptom(Strict):
    """A finding and the severity drawn for it, on the one scale of every symptom: 0 (none) to 10 (the worst),
    as a 0-10 numeric rating scale; a uniform or exact severity lies on it, a value drawn from another
    distribution is clipped to it."""

    code: Code
    severity: Distribution
    source: Name

    @field_validator("severity")
    @classmethod
    def _on_the_scale(cls, severity: object) -> object:
        bounds = [getattr(severity, name) for name in ("value", "low", "high") if hasattr(severity, name)]
        if any(not 0 <= bound <= SYMPTOM_SCALE_MAX for bound in bounds):
            raise ValueError(f"a symptom's severity is on the 0-{SYMPTOM_SCALE_MAX:g} scale (got {bounds})")
        return severity


class Death(Strict):
    cause: Code


# --- transitions ---------------------------------------------------------------------------------


class Branch(Strict):
    to: Name
    probability: Annotated[float, Field(ge=0, le=1)]
    source: Name


class Case(Strict):
    when: Guard
    to: Name


class RateTable(Strict):
    """Rate per year, piecewise constant in age: band i starts at ages[i]; zero before ages[0]."""

    ages: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)
    male: list[Annotated[float, Field(ge=0)]]
    female: list[Annotated[float, Field(ge=0)]]

    @model_validator(mode="after")
    def _shape(self) -> RateTable:
        if any(b <= a for a, b in zip(self.ages, self.ages[1:], strict=False)):
            raise ValueError("ages must be strictly increasing")
        for sex in ("male", "female"):
            if len(getattr(self, sex)) != len(self.ages):
                raise ValueError(
                    f"{sex} must have one rate per age band ({len(self.ages)}), got {len(getattr(self, sex))}"
                )
        return self


class HazardRatio(Strict):
    when: Guard
    ratio: Annotated[float, Field(gt=0)]
    source: Name


class Hazard(Strict):
    """A competing time-to-event transition: rate per year by age band and sex, times hazard ratios."""

    to: Name
    rate_per_year: Annotated[float, Field(ge=0)] | RateTable
    hazard_ratios: list[HazardRatio] = Field(default_factory=list)
    source: Name


class State(Strict):
    """One node of a module's graph: what happens on entry, then how the module leaves it.

    Actions run in this order: encounter, set, onset, diagnose, resolve, start_medication,
    stop_medication, procedure, immunization, observe, symptom, end_encounter, death.
    Then the exit: `next`, `branches` or `cases` (optionally after a delay, or at the next wellness
    visit), or `hazards`; a state without exit says `terminal: true` (or dies).
    """

    description: str | None = None
    encounter: EncounterStart | None = None
    set: list[SetAttribute] = Field(default_factory=list)
    onset: list[Name] = Field(default_factory=list)
    diagnose: list[Name] = Field(default_factory=list)
    resolve: list[Name] = Field(default_factory=list)
    start_medication: list[Name] = Field(default_factory=list)
    stop_medication: list[Name] = Field(default_factory=list)
    procedure: list[Code] = Field(default_factory=list)
    immunization: list[Code] = Field(default_factory=list)
    observe: list[Name] = Field(default_factory=list)
    symptom: list[Symptom] = Field(default_factory=list)
    end_encounter: bool = False
    death: Death | None = None

    after: Duration | None = None
    wait_for: Literal["wellness"] | None = None
    next: Name | None = None
    branches: list[Branch] | None = None
    cases: list[Case] | None = None
    otherwise: Name | None = None
    hazards: list[Hazard] | None = None
    terminal: bool = False

    @model_validator(mode="after")
    def _exit_shape(self) -> State:
        exits = [k for k in ("next", "branches", "cases", "hazards") if getattr(self, k) is not None]
        if not exits and not self.terminal and self.death is None:
            raise ValueError("the state has no exit: give next, branches, cases or hazards, or mark it terminal: true")
        if exits and self.terminal:
            raise ValueError(f"a terminal state has no exit (got {', '.join(exits)})")
        if len(exits) > 1:
            raise ValueError(f"a state leaves by one of next, branches, cases, hazards (got {', '.join(exits)})")
        if self.otherwise is not None and self.cases is None:
            raise ValueError("otherwise is only allowed with cases")
        if self.after is not None and self.wait_for is not None:
            raise ValueError("use either after or wait_for, not both")
        if self.hazards is not None and (self.after is not None or self.wait_for is not None):
            raise ValueError("hazards already wait; after and wait_for cannot be combined with them")
        if (self.after is not None or self.wait_for is not None) and not exits:
            raise ValueError("after/wait_for needs an exit (next, branches or cases)")
        if self.after is not None and self.after.unit is None:
            raise ValueError("after: a delay needs a unit (minutes, hours, days, weeks, months, years)")
        if self.after is not None and self.after.source is None:
            raise ValueError("after: a delay needs a source")
        if self.death is not None and exits:
            raise ValueError("death is terminal: a state with death has no exit")
        if self.encounter is not None and self.encounter.duration is not None:
            if self.encounter.duration.unit is None:
                raise ValueError("encounter.duration needs a unit")
            if self.encounter.duration.source is None:
                raise ValueError("encounter.duration needs a source")
        return self

    @property
    def is_terminal(self) -> bool:
        return all(getattr(self, k) is None for k in ("next", "branches", "cases", "hazards"))

    def targets(self) -> list[str]:
        """Names of the states this state can move to."""
        out: list[str] = []
        if self.next is not None:
            out.append(self.next)
        for branch in self.branches or []:
            out.append(branch.to)
        for case in self.cases or []:
            out.append(case.to)
        if self.otherwise is not None:
            out.append(self.otherwise)
        for hazard in self.hazards or []:
            out.append(hazard.to)
        return out


# --- declarations --------------------------------------------------------------------------------


class AgeCurve(Strict):
    """A value by age and sex, linearly interpolated between the given ages, flat outside them."""

    ages: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)
    male: list[float]
    female: list[float]

    @model_validator(mode="after")
    def _shape(self) -> AgeCurve:
        if any(b <= a for a, b in zip(self.ages, self.ages[1:], strict=False)):
            raise ValueError("ages must be strictly increasing")
        for sex in ("male", "female"):
            if len(getattr(self, sex)) != len(self.ages):
                raise ValueError(f"{sex} must have one value per age ({len(self.ages)}), got {len(getattr(self, sex))}")
        return self


class Derived(Strict):
    """value = scale * product(latest(observable) ** power), e.g. BMI from weight and height; or value =
    sum(coefficient * latest(observable)), e.g. the Friedewald LDL cholesterol from total cholesterol, HDL
    and triglycerides. One of `product` and `sum`."""

    scale: float = 1.0
    product: dict[Name, float] | None = Field(default=None, min_length=1)
    sum: dict[Name, float] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> Derived:
        if (self.product is None) == (self.sum is None):
            raise ValueError("give exactly one of product and sum")
        if self.sum is not None and self.scale != 1.0:
            raise ValueError("scale goes with product; a sum's coefficients carry its scale")
        return self

    def terms(self) -> dict[str, float]:
        """The inputs with their power (product) or coefficient (sum)."""
        return self.product if self.product is not None else self.sum  # type: ignore[return-value]


class BySex(Strict):
    """A number for each sex."""

    male: float
    female: float


class RaceFactor(Strict):
    """A factor an equation applies to patients of one race."""

    race: Name
    factor: Annotated[float, Field(gt=0)]


class GfrEquation(Strict):
    """A creatinine equation for GFR (mL/min/1.73 m2), reported under `code`: eGFR = scale x min(Scr/kappa,
    1)^alpha x max(Scr/kappa, 1)^exponent_above x age_factor^age x age^age_power (x female_factor if
    female, x the race factor), Scr in mg/dL, age in completed years. CKD-EPI has the exponential age term,
    MDRD (kappa 1, alpha = exponent_above) the power."""

    code: Annotated[str, BeforeValidator(_int_to_str), Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.\-]*$")]
    scale: Annotated[float, Field(gt=0)]
    kappa: BySex
    alpha: BySex
    exponent_above: float
    age_factor: Annotated[float, Field(gt=0)] = 1.0
    age_power: float = 0.0
    female_factor: Annotated[float, Field(gt=0)] = 1.0
    race_factor: RaceFactor | None = None
    source: Name

    def _base(self, age_years: float, female: bool, race: str) -> float:
        """Everything but the creatinine terms."""
        value = self.scale * self.age_factor**age_years * age_years**self.age_power
        value *= self.female_factor if female else 1.0
        if self.race_factor is not None and race == self.race_factor.race:
            value *= self.race_factor.factor
        return value

    def gfr(self, creatinine: float, age_years: float, female: bool, race: str) -> float:
        """The estimated GFR of a creatinine (mg/dL)."""
        ratio = creatinine / (self.kappa.female if female else self.kappa.male)
        alpha = self.alpha.female if female else self.alpha.male
        terms = min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** self.exponent_above
        return self._base(age_years, female, race) * terms

    def creatinine(self, gfr: float, age_years: float, female: bool, race: str) -> float:
        """The creatinine (mg/dL) this equation turns into `gfr`: the equation solved for Scr."""
        ratio = max(gfr, 0.0) / self._base(age_years, female, race)
        exponent = self.exponent_above if ratio <= 1.0 else (self.alpha.female if female else self.alpha.male)
        return (self.kappa.female if female else self.kappa.male) * ratio ** (1.0 / exponent)


class Estimated(Strict):
    """A GFR computed from the latest `creatinine` reading by the equation of the code the era reports
    (rules/calendar.yaml: the observable's code, or the era's alternative); missing below
    `minimum_age_years`, where other equations apply."""

    creatinine: Name
    minimum_age_years: Annotated[float, Field(ge=0)]
    equations: list[GfrEquation] = Field(min_length=1)


class Inverted(Strict):
    """A creatinine that the equation of the `estimate` observable's own code turns into the value of
    `attribute` (the true GFR), plus the visit-to-visit `sd`."""

    estimate: Name
    attribute: Name


class Observable(Strict):
    """A measured quantity (lab, vital sign, score) and how its values are drawn.

    value = mean(age, sex) + sum(coefficient * attribute) + sd(age, sex) * (sqrt(p) * z_patient
    + sqrt(1 - p) * z_visit), clipped to limits and rounded; p is `persistence`, the share of the
    variance that belongs to the patient and stays with them for life. Attributes declare which
    observables they shift (`Attribute.affects`), so a disease module moves a vital sign defined in
    rules/ without the rules knowing about the module.

    Three optional keys make readings evolve over time (absent: the behaviour above, same draws):
    `correlation_days` turns z_visit into an Ornstein-Uhlenbeck process per patient (readings close
    in time are close, readings far apart independent), `measurement_sd` adds an independent
    measurement error to each reading, and `response_half_life_days` lets the attribute effects
    reach the reading through a first-order lag with that half-life (HbA1c follows glycaemia).
    """

    code: Code
    category: Literal["vital-signs", "laboratory", "survey", "social-history", "exam"]
    unit: Annotated[str, Field(min_length=1)]
    mean: float | AgeCurve | None = None
    sd: Annotated[float, Field(ge=0)] | AgeCurve = 0.0
    persistence: Annotated[float, Field(ge=0, le=1)] = 0.0
    derived: Derived | None = None
    limits: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    decimals: Annotated[int, Field(ge=0, le=6)] = 1
    correlation_days: Annotated[float, Field(gt=0)] | None = None
    measurement_sd: Annotated[float, Field(ge=0)] | None = None
    response_half_life_days: Annotated[float, Field(gt=0)] | None = None
    source: Name
    estimated: Estimated | None = None
    inverted: Inverted | None = None

    @model_validator(mode="after")
    def _mean_or_derived(self) -> Observable:
        given = [x for x in (self.mean, self.derived, self.estimated, self.inverted) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of mean, derived, estimated and inverted")
        if self.estimated is not None and self.code.code not in {e.code for e in self.estimated.equations}:
            raise ValueError(f"estimated needs an equation for the observable's own code {self.code.code}")
        dynamics = ("correlation_days", "measurement_sd", "response_half_life_days")
        computed = self.derived is not None or self.estimated is not None or self.inverted is not None
        if computed and any(getattr(self, key) is not None for key in dynamics):
            raise ValueError(f"a derived, estimated or inverted observable takes none of {', '.join(dynamics)}")
        if self.limits is not None and self.limits[1] < self.limits[0]:
            raise ValueError("limits must be [low, high] with low <= high")
        return self


class Attribute(Strict):
    """A per-patient number (flags are 0/1). `affects` adds coefficient * value to observables."""

    description: str
    initial: float = 0.0
    affects: dict[Name, float] = Field(default_factory=dict)
    source: Name | None = None


class Condition(Strict):
    """A condition a module starts, diagnoses and resolves; `problem_list`: a chronic problem, which the
    FHIR record also puts on the patient's problem list once diagnosed (acute illnesses and findings only
    get their encounter diagnosis)."""

    code: Code
    problem_list: bool = False


class Medication(Strict):
    code: Code


class DiseaseModule(Strict):
    """One module file: declarations, sources, and a state graph entered at `start`."""

    name: Name
    title: str
    version: Annotated[int, Field(ge=1)] = 1
    description: str = ""
    sources: dict[Name, Annotated[str, Field(min_length=5)]] = Field(default_factory=dict)
    attributes: dict[Name, Attribute] = Field(default_factory=dict)
    conditions: dict[Name, Condition] = Field(default_factory=dict)
    medications: dict[Name, Medication] = Field(default_factory=dict)
    observables: dict[Name, Observable] = Field(default_factory=dict)
    # Observables recorded at the start of every encounter of a class, whichever module starts it (triage and
    # admission vital signs); a module may declare them for observables of other modules.
    observe_at_start: dict[EncounterClass, list[Name]] = Field(default_factory=dict)
    # Hours between repeats of those observations while an encounter of the class stays open (ward rounds,
    # ICU charting); the modules' shortest interval holds.
    observe_every_hours: dict[EncounterClass, Annotated[float, Field(gt=0, le=24 * 7)]] = Field(default_factory=dict)
    # Observables measured once at the start of every encounter of a class, whichever module starts it, and not
    # repeated on its rounds (the admission labs of an emergency visit or a hospital stay).
    labs_at_start: dict[EncounterClass, list[Name]] = Field(default_factory=dict)
    start: Name | None = None
    states: dict[Name, State] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _start(self) -> DiseaseModule:
        if self.states and self.start is None:
            raise ValueError("a module with states needs start")
        if self.start is not None and not self.states:
            raise ValueError("start given but the module has no states")
        return self


# --- rules files ---------------------------------------------------------------------------------


class Category(Strict):
    name: Name
    code: Code
    share: Annotated[float, Field(ge=0, le=1)]


class Demographics(Strict):
    """Who the population is: age/sex pyramid, race and ethnicity shares, reference date."""

    reference_date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    population_csv: str
    race: list[Category] = Field(min_length=1)
    ethnicity: list[Category] = Field(min_length=1)
    sources: dict[Name, str]
    source: Name


class CauseOfDeath(Strict):
    """One underlying cause a background death may have, with its deaths by age band and sex."""

    code: Code
    icd10: Annotated[str, Field(min_length=3)]
    male: list[Annotated[int, Field(ge=0)]]
    female: list[Annotated[int, Field(ge=0)]]
    since: int | None = Field(None, ge=1900, le=2100)  # first year a death can have this cause (a new disease)


class DeathCauses(Strict):
    """Underlying causes of background deaths: deaths by cause, age band (from `age` until the next
    band) and sex; a background death's cause is drawn in proportion to its band's deaths."""

    age: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)
    causes: list[CauseOfDeath] = Field(min_length=1)
    source: str

    @model_validator(mode="after")
    def _shape(self) -> DeathCauses:
        if self.age[0] != 0 or any(b <= a for a, b in zip(self.age, self.age[1:], strict=False)):
            raise ValueError("age must start at 0 and increase strictly")
        n = len(self.age)
        if any(len(c.male) != n or len(c.female) != n for c in self.causes):
            raise ValueError("every cause needs male and female deaths for each age band")
        for sex in ("male", "female"):
            if any(sum(getattr(c, sex)[band] for c in self.causes) == 0 for band in range(n)):
                raise ValueError(f"every age band needs {sex} deaths")
        return self


class BackgroundHazardRatio(Strict):
    """A hazard ratio on background death for patients with a diagnosed condition: from its diagnosis
    until it resolves (ratios of several diagnosed conditions multiply)."""

    conditions: list[Name] = Field(min_length=1)  # module condition names; names no loaded module declares are skipped
    hazard_ratio: float = Field(gt=0)
    source: str = Field(min_length=1)


class Deterioration(Strict):
    """How the readings of a terminal stay deteriorate toward death: each named observable's reading is
    shifted by its `shifts` value times the weight 1 - (hours before death) / `window_hours` (0 earlier), a
    shift that grows linearly from the window's start to its full size at death. Names no loaded module
    declares are skipped."""

    window_hours: float = Field(gt=0)
    shifts: dict[Name, float] = Field(min_length=1)
    source: str = Field(min_length=1)


class DeathInHospital(Strict):
    """Deaths in hospital: a death with no encounter open (a background death, or a module death outside a
    stay) happens in hospital with probability `share`, at the end of a terminal stay (an inpatient
    `encounter` admitted `stay` before death, no earlier than the patient's last recorded event), whose
    readings `deteriorate` as death nears."""

    share: float = Field(ge=0, le=1)
    stay: Duration
    encounter: Code
    deteriorate: Deterioration | None = None
    source: str = Field(min_length=1)


class Mortality(Strict):
    """Background mortality: single-year life tables by sex (columns age, qx).

    The life tables count deaths from every cause, the modelled ones included. `background_share`
    (a BackgroundShare file) scales the life-table hazard down to the deaths the disease modules do
    not produce themselves; `ehrsim calibrate mortality` measures and writes it, so that all-cause
    mortality stays that of the life tables. A background death's cause is drawn from `causes` (by age
    band and sex), else it is `cause`. `hazard_ratios` multiply the background hazard of patients with a
    diagnosed condition (the excess mortality no module carries). `in_hospital` gives a share of the deaths
    outside any encounter a terminal hospital stay."""

    male_csv: str
    female_csv: str
    total_csv: str
    background_share: str | None = None
    cause: Code
    causes: DeathCauses | None = None
    hazard_ratios: list[BackgroundHazardRatio] = []
    in_hospital: DeathInHospital | None = None
    source: str


class ShareBands(Strict):
    age: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)
    male: list[Annotated[float, Field(gt=0, le=1)]]
    female: list[Annotated[float, Field(gt=0, le=1)]]

    @model_validator(mode="after")
    def _shape(self) -> ShareBands:
        if self.age[0] != 0 or any(b <= a for a, b in zip(self.age, self.age[1:], strict=False)):
            raise ValueError("age must start at 0 and increase strictly")
        if not len(self.male) == len(self.female) == len(self.age):
            raise ValueError("male and female need one share per age band")
        return self


class BackgroundShare(Strict):
    """The share of life-table mortality left to background deaths, by age band (from `age` until
    the next band) and sex, fitted for one set of modules: a library with other modules uses the
    full life table."""

    fitted: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    lives: Annotated[int, Field(ge=1)]
    seed: int
    life_expectancy: dict[Literal["before", "after"], float]
    modules: list[Name] = Field(min_length=1)
    bands: ShareBands


def _time_zone(name: str) -> str:
    """An IANA time zone name that this Python's zoneinfo knows."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # unknown, malformed, a folder of zones
        raise ValueError(f"not an IANA time zone: {name}") from None
    return name


TimeZone = Annotated[str, AfterValidator(_time_zone)]


class City(Strict):
    """A city addresses are drawn in, with the IANA time zone of its local clock (the engine's clinic hours
    and the audit's visit_hours rule read it)."""

    city: str
    state: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    zip: Annotated[str, Field(pattern=r"^\d{5}$")]
    time_zone: TimeZone


class Names(Strict):
    """Lists that synthetic names and addresses are drawn from (uniformly)."""

    given_male: list[str] = Field(min_length=1)
    given_female: list[str] = Field(min_length=1)
    family: list[str] = Field(min_length=1)
    streets: list[str] = Field(min_length=1)
    street_suffixes: list[str] = Field(min_length=1)
    cities: list[City] = Field(min_length=1)
    sources: dict[Name, str]
