"""Care plans for chronic conditions (rules/care_plans.yaml): which diagnosed conditions get a care plan, the
goals of each plan with the guideline each target comes from, and the codes the care team's members and the
clinical notes are written with."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from simulator.model.schema import Code, Name, Strict
from simulator.model.sources import Sources, need_source

Text = Annotated[str, Field(min_length=1)]
Comparator = Literal["<", "<=", ">=", ">"]


class OlderAdults(Strict):
    """A less stringent target `value` from `age` years at the plan's start, as the guideline in `source`
    individualises it."""

    age: Annotated[float, Field(gt=0, le=120)]
    value: float
    source: Name


class GoalTarget(Strict):
    """One measurable target of a goal: the LOINC `measure` (`label` is how the goal's text names it) and
    exactly one of: a bound (`comparator` `value` in UCUM `unit`), a bound relative to the patient's latest
    measure before the plan (`comparator` `baseline_fraction` of it), or a coded state (`concept`).
    `due_months`: when the target should be met, from the plan's start (where the guideline says)."""

    measure: Code
    label: Text
    comparator: Comparator | None = None
    value: float | None = None
    unit: str | None = None
    baseline_fraction: Annotated[float, Field(gt=0, lt=2)] | None = None
    concept: Code | None = None
    older_adults: OlderAdults | None = None
    due_months: Annotated[float, Field(gt=0, le=120)] | None = None
    source: Name

    @model_validator(mode="after")
    def _one_kind(self) -> GoalTarget:
        kinds = [self.value is not None, self.baseline_fraction is not None, self.concept is not None]
        if sum(kinds) != 1:
            raise ValueError("give exactly one of value, baseline_fraction and concept")
        if self.measure.system != "LOINC":
            raise ValueError(f"measure must be a LOINC code (got {self.measure.system})")
        if self.concept is None and self.comparator is None:
            raise ValueError("a value or a baseline_fraction needs a comparator")
        if self.value is not None and not self.unit:
            raise ValueError("a value needs its UCUM unit")
        if self.older_adults is not None and self.value is None:
            raise ValueError("older_adults replaces a value: give one")
        return self


class Goal(Strict):
    """A goal of a care plan: what it is for (`description`) and its targets."""

    description: Text
    targets: list[GoalTarget] = Field(min_length=1)


class CarePlanRule(Strict):
    """A care plan for each diagnosed episode of any of `conditions` (SNOMED CT), with its goals, from the
    diagnosis or from `min_age` years of age if the patient is younger then (the age its guidelines cover)."""

    title: Text
    conditions: list[Code] = Field(min_length=1)
    min_age: Annotated[float, Field(ge=0, le=120)] = 0.0
    goals: list[Goal] = Field(min_length=1, max_length=16)

    @field_validator("conditions")
    @classmethod
    def _snomed(cls, conditions: list[Code]) -> list[Code]:
        other = [f"{c.system} {c.code}" for c in conditions if c.system != "SNOMED"]
        if other:
            raise ValueError(f"conditions must be SNOMED CT codes (got {', '.join(other)})")
        return conditions


class NoteType(Strict):
    """The LOINC document type of an encounter class's clinical note (US Core DocumentReference type)."""

    code: Annotated[str, Field(pattern=r"^\d{1,7}-\d$")]
    display: Text


class CarePlans(Strict):
    """The care plan rules by name, the care team role codes, and the note types by encounter class. Fields
    are validated in this order, so each check can read the fields above it."""

    sources: Sources
    plans: dict[Name, CarePlanRule]
    care_team_roles: dict[Literal["patient", "primary_care_provider"], Code]
    roles_source: Name
    note_types: dict[Literal["wellness", "emergency", "inpatient", "icu", "open_stay"], NoteType]
    note_types_source: Name
    adult_age: Annotated[float, Field(ge=0, le=120)]  # wellness visits from this age get a note

    @field_validator("plans")
    @classmethod
    def _cited_and_distinct(cls, plans: dict[str, CarePlanRule], info: ValidationInfo) -> dict[str, CarePlanRule]:
        seen: dict[str, str] = {}
        for name, plan in plans.items():
            for goal in plan.goals:
                for target in goal.targets:
                    need_source(target.source, info, f"{name}: ")
                    if target.older_adults is not None:
                        need_source(target.older_adults.source, info, f"{name}: ")
            for condition in plan.conditions:
                if condition.code in seen:
                    raise ValueError(
                        f"{name}: condition {condition.code} already has the plan '{seen[condition.code]}'"
                    )
                seen[condition.code] = name
        return plans

    @field_validator("roles_source", "note_types_source")
    @classmethod
    def _cited(cls, source: str, info: ValidationInfo) -> str:
        need_source(source, info)
        return source

    def plan_of(self) -> dict[str, str]:
        """SNOMED CT condition code -> the name of its plan."""
        return {c.code: name for name, plan in self.plans.items() for c in plan.conditions}
