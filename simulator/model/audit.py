"""The clinical consistency rules `ehrsim audit` checks a written run against (rules/audit.yaml).

Rules are data, kinds are code: each rule names a `kind` (the check, implemented once in
simulator/audit/checks.py) and gives that kind's parameters, a severity and the sources of its figures. Two
rules may share a kind with different parameters (duplicate drug classes and duplicate products)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

from simulator.model.reference_data import LoincCode
from simulator.model.schema import ClockTime, EncounterClass, Name, Strict, Weekday
from simulator.model.sources import Sources, uncited

Text = Annotated[str, Field(min_length=1)]
RxNormCode = Annotated[str, Field(pattern=r"^\d{1,8}$")]
AtcCode = Annotated[str, Field(pattern=r"^[A-Z]\d{2}[A-Z]{2}\d{2}$")]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(ge=0, le=1)]
# The written tables of a patient's events a rule may name (`ehrsim generate --format csv/parquet`), and
# their columns by name (docs/data-dictionary.md).
Table = Literal["encounters", "conditions", "observations", "medications", "procedures", "immunizations", "symptoms"]
CodedTable = Literal["observations", "medications", "procedures", "immunizations", "conditions"]
Column = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class AuditRule(Strict):
    """What every rule states: what it checks (`description`, one sentence for the reader of the report),
    `severity` (error: the record is wrong; warning: unusual but possible) and the keys of the file's sources
    behind its figures (none for a rule of pure logic, such as an encounter ending after it starts)."""

    description: Text
    severity: Literal["error", "warning"]
    sources: list[Name] = Field(default_factory=list)

    def named_columns(self) -> list[tuple[str, str]]:
        """The (table, column) pairs the rule names (the audit checks that it reads them)."""
        return []

    def drug_groups(self) -> list[DrugGroup]:
        """The drug groups the rule names (each cites its own source)."""
        return []


class IntroductionYearRule(AuditRule):
    """No coded event of `tables` before the year its code came into use (the library's calendar)."""

    kind: Literal["introduction_year"]
    tables: list[CodedTable] = Field(min_length=1)


class CkdEpiCoefficients(Strict):
    """eGFR = scale x min(Scr/kappa, 1)^alpha x max(Scr/kappa, 1)^exponent_above x age_factor^age x
    female_factor (if female), Scr in mg/dL, age in years; kappa and alpha by sex (M, F)."""

    scale: Positive
    kappa: dict[Literal["M", "F"], Positive]
    alpha: dict[Literal["M", "F"], float]
    exponent_above: float
    age_factor: Positive
    female_factor: Positive

    @model_validator(mode="after")
    def _both_sexes(self) -> CkdEpiCoefficients:
        if set(self.kappa) != {"M", "F"} or set(self.alpha) != {"M", "F"}:
            raise ValueError("kappa and alpha need a value for M and for F")
        return self


class DerivedEgfrRule(AuditRule):
    """An eGFR (`egfr`) of a patient aged `minimum_age_years` or more equals the CKD-EPI equation of the
    creatinine (`creatinine`) taken at the same time, within `tolerance` (mL/min/1.73 m2); an eGFR with no
    creatinine at the same time is a violation too (it is computed from one)."""

    kind: Literal["derived_egfr"]
    egfr: LoincCode
    creatinine: LoincCode
    minimum_age_years: NonNegative
    equation: CkdEpiCoefficients
    tolerance: NonNegative


class ReportingSteps(Strict):
    """The resolution each measure is reported to (half of it is the largest rounding error)."""

    bmi: Positive
    weight: Positive
    height: Positive


class DerivedBmiRule(AuditRule):
    """BMI (`bmi`, kg/m2) equals weight (`weight`, kg) / height (`height`, cm, as metres) squared taken at
    the same time, within the rounding of the three reported values (`steps`)."""

    kind: Literal["derived_bmi"]
    bmi: LoincCode
    weight: LoincCode
    height: LoincCode
    steps: ReportingSteps


class DerivedSumRule(AuditRule):
    """A calculated result (`result`) equals the sum of coefficient x reading of its `terms` (LOINC code ->
    coefficient) taken at the same time, within the rounding of the reported values (each to `step`), or
    `floor` where the sum falls below the lowest value reported (the Friedewald LDL cholesterol)."""

    kind: Literal["derived_sum"]
    result: LoincCode
    terms: dict[LoincCode, float] = Field(min_length=1)
    step: Positive
    floor: float


class AdultHeightRule(AuditRule):
    """From `from_age_years` on, consecutive heights differ by at most `tolerance_cm` (measurement error),
    plus `loss_cm_per_year` of the time between them for a loss (the height lost with age)."""

    kind: Literal["adult_height_stable"]
    height: LoincCode
    from_age_years: NonNegative
    tolerance_cm: NonNegative
    loss_cm_per_year: NonNegative


class GlycatedHemoglobinPaceRule(AuditRule):
    """Consecutive HbA1c results (`hba1c`, %) are at least `min_repeat_days` apart, and the second differs
    from the first by at most the share 1 - 0.5^(days / `half_time_days`) of the way to the farthest steady
    state in `steady_state_pct` (HbA1c follows a change of glycaemia with that half-time), plus
    `analytical_share` of the first value (measurement error)."""

    kind: Literal["hba1c_pace"]
    hba1c: LoincCode
    min_repeat_days: NonNegative
    half_time_days: Positive
    steady_state_pct: list[Positive] = Field(min_length=2, max_length=2)
    analytical_share: Share

    @field_validator("steady_state_pct")
    @classmethod
    def _ordered(cls, bounds: list[float]) -> list[float]:
        if bounds[0] >= bounds[1]:
            raise ValueError("steady_state_pct is [lowest, highest]")
        return bounds


class RequiredObservationsRule(AuditRule):
    """Every encounter of `encounter_classes` records at least one observation of each `required` group
    (name -> the LOINC codes that count for it)."""

    kind: Literal["required_observations"]
    encounter_classes: list[EncounterClass] = Field(min_length=1)
    required: dict[Name, list[LoincCode]] = Field(min_length=1)


class NothingAfterDeathRule(AuditRule):
    """For a dead patient, no time of `events` (table -> its time columns) after death, and no record of
    `open_records` (table -> its end column) left open (no end) or ending after death."""

    kind: Literal["nothing_after_death"]
    events: dict[Table, list[Column]] = Field(min_length=1)
    open_records: dict[Table, Column]

    def named_columns(self) -> list[tuple[str, str]]:
        return [(t, c) for t, cs in self.events.items() for c in cs] + list(self.open_records.items())


class DrugMember(Strict):
    """An RxNorm product of a drug group, with its display and its WHO ATC code."""

    display: Text
    atc: AtcCode


class DrugGroup(Strict):
    """Products of which a patient takes at most one at a time (a class, or classes not to be combined)."""

    description: Text
    members: dict[RxNormCode, DrugMember] = Field(min_length=1)
    source: Name


class OverlappingCoursesRule(AuditRule):
    """No two medication courses overlap that are both in one of `groups`, or (`same_product`) that are
    of the same product. A course without a stop lasts to the end of the record."""

    kind: Literal["overlapping_courses"]
    groups: dict[Name, DrugGroup] = Field(default_factory=dict)
    same_product: bool = False

    def drug_groups(self) -> list[DrugGroup]:
        return list(self.groups.values())

    @model_validator(mode="after")
    def _something_to_check(self) -> OverlappingCoursesRule:
        if not self.groups and not self.same_product:
            raise ValueError("give groups, or same_product: true")
        return self


class PriorCourseRule(AuditRule):
    """A course of a product of `courses` starts only while a course of `requires` has run for `min_days` or
    more: a step of a guideline's sequence (an add-on drug only after the first drug at its maximum dose)."""

    kind: Literal["prior_course"]
    courses: DrugGroup
    requires: DrugGroup
    min_days: NonNegative

    def drug_groups(self) -> list[DrugGroup]:
        return [self.courses, self.requires]


class CourseMonitoringRule(AuditRule):
    """While a course of a product of `courses` runs, readings of the LOINC code `observation` come at most
    `max_gap_days` apart: from its start (or the day the code came into use, the calendar) to the first
    reading, between readings, and from the last one to the course's stop (or the patient's last encounter,
    for a course still running): a drug that needs monitoring (warfarin and its INR)."""

    kind: Literal["course_monitoring"]
    courses: DrugGroup
    observation: Annotated[str, Field(min_length=1)]
    max_gap_days: Positive

    def drug_groups(self) -> list[DrugGroup]:
        return [self.courses]


class VisitHoursRule(AuditRule):
    """Encounters of `encounter_classes` start on `weekdays` between `opens` and `closes`, in the local time
    of the patient's address (the IANA zone of its city, rules/names.yaml)."""

    kind: Literal["visit_hours"]
    encounter_classes: list[EncounterClass] = Field(min_length=1)
    weekdays: list[Weekday] = Field(min_length=1)
    opens: ClockTime
    closes: ClockTime

    @model_validator(mode="after")
    def _opens_first(self) -> VisitHoursRule:
        if self.closes <= self.opens:
            raise ValueError("closes must be after opens")
        return self


class TimeOrderPair(Strict):
    """In each row of `table`, `before` is not later than `after` (rows missing either are not checked)."""

    table: Table
    before: Column
    after: Column


class TimeOrderRule(AuditRule):
    """Times of one record in their order: an encounter ends after it starts, a course stops after it starts."""

    kind: Literal["time_order"]
    pairs: list[TimeOrderPair] = Field(min_length=1)

    def named_columns(self) -> list[tuple[str, str]]:
        return [(p.table, c) for p in self.pairs for c in (p.before, p.after)]


class NotBeforeBirthRule(AuditRule):
    """No time of `columns` (table -> its time columns) before the patient's birth."""

    kind: Literal["not_before_birth"]
    columns: dict[Table, list[Column]] = Field(min_length=1)

    def named_columns(self) -> list[tuple[str, str]]:
        return [(t, c) for t, cs in self.columns.items() for c in cs]


class InEncounter(Strict):
    """The `time` column of `table` and the column holding the id of the encounter it happened in."""

    table: Table
    time: Column
    encounter: Column


class WithinEncounterRule(AuditRule):
    """An event that names its encounter happens between that encounter's start and end."""

    kind: Literal["within_encounter"]
    events: list[InEncounter] = Field(min_length=1)

    def named_columns(self) -> list[tuple[str, str]]:
        return [(e.table, c) for e in self.events for c in (e.time, e.encounter)]


class DeathInHospitalRule(AuditRule):
    """A patient who dies during an encounter of `encounter_classes` (started before death, not ended
    before it) dies at its end: the encounter ends at the death time, and says so (discharge disposition
    `disposition`, where the run writes dispositions)."""

    kind: Literal["death_in_hospital"]
    encounter_classes: list[EncounterClass] = Field(min_length=1)
    disposition: Text


class DecedentsRule(AuditRule):
    """A decedent (a patient a population run holds because they died in its decedent window, `is_decedent`)
    has a death time and a cause of death (Patient.deceasedDateTime)."""

    kind: Literal["decedents"]


class ObservationValuesRule(AuditRule):
    """Every observation has its value (a result written without one says only that it is missing)."""

    kind: Literal["value_present"]


class DuplicateRecordsRule(AuditRule):
    """No observation recorded twice by one step of a module: one patient, code, time, value, unit, module and
    state (two modules may take the same reading at one visit)."""

    kind: Literal["duplicate_records"]


class UnitConsistencyRule(AuditRule):
    """Each observation code is written in one unit: the unit most readings of the code have."""

    kind: Literal["unit_consistency"]


class PlausibleRange(Strict):
    """The values a living patient can have, in `unit`, from `low` to `high`; `source` cites them."""

    low: float
    high: float
    unit: str
    source: Name


class PlausibleValuesRule(AuditRule):
    """Readings of `ranges`' codes (in the range's unit) within the range."""

    kind: Literal["plausible_values"]
    ranges: dict[LoincCode, PlausibleRange] = Field(min_length=1)

    @field_validator("ranges")
    @classmethod
    def _cited(cls, ranges: dict[str, PlausibleRange], info: ValidationInfo) -> dict[str, PlausibleRange]:
        problems = [p for code, r in ranges.items() for p in uncited(info, r.source, where=f"ranges.{code}: ")]
        if problems:
            raise ValueError("; ".join(problems))
        return ranges


class TimelyEntryRule(AuditRule):
    """A result is issued within `max_days` of being taken (a run without issued times is not checked)."""

    kind: Literal["timely_entry"]
    max_days: Positive


class KnownCodesRule(AuditRule):
    """Codes of `tables` are codes of the library's terminology (rules/terminology.csv), with its display."""

    kind: Literal["known_codes"]
    tables: list[Literal["observations", "conditions"]] = Field(min_length=1)


KINDS: tuple[type[AuditRule], ...] = (
    IntroductionYearRule,
    DerivedEgfrRule,
    DerivedBmiRule,
    DerivedSumRule,
    AdultHeightRule,
    GlycatedHemoglobinPaceRule,
    RequiredObservationsRule,
    NothingAfterDeathRule,
    OverlappingCoursesRule,
    PriorCourseRule,
    CourseMonitoringRule,
    VisitHoursRule,
    TimeOrderRule,
    NotBeforeBirthRule,
    WithinEncounterRule,
    DeathInHospitalRule,
    DecedentsRule,
    ObservationValuesRule,
    DuplicateRecordsRule,
    UnitConsistencyRule,
    PlausibleValuesRule,
    TimelyEntryRule,
    KnownCodesRule,
)
KIND_NAMES = tuple(get_args(k.model_fields["kind"].annotation)[0] for k in KINDS)


def _kind_tag(rule: Any) -> str | None:
    """The union tag of a rule: its kind, as 'kind NAME' (not a key name, so error positions skip it)."""
    kind = rule.get("kind") if isinstance(rule, dict) else getattr(rule, "kind", None)
    return f"kind {kind}" if isinstance(kind, str) else None


Rule = Annotated[
    Union[tuple(Annotated[k, Tag(f"kind {name}")] for k, name in zip(KINDS, KIND_NAMES, strict=True))],  # noqa: UP007
    Discriminator(
        _kind_tag,
        custom_error_type="unknown_kind",
        custom_error_message=f"kind must be one of {', '.join(KIND_NAMES)}",
    ),
]


class AuditRules(Strict):
    """The rules `ehrsim audit` checks, by id (the name the report gives them), in the order it lists them."""

    sources: Sources
    rules: dict[Name, Rule] = Field(min_length=1)

    @field_validator("rules")
    @classmethod
    def _cited(cls, rules: dict[str, AuditRule], info: ValidationInfo) -> dict[str, AuditRule]:
        problems = [
            problem
            for rule_id, rule in rules.items()
            for problem in uncited(info, *rule.sources, *(g.source for g in rule.drug_groups()), where=f"{rule_id}: ")
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return rules
