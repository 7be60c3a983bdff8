"""The scenario file format: who the patients are, what must happen to them and when, and how the run
reaches it (forced branches, tilted hazards), as pydantic models (unknown keys are errors).

A scenario file is data, read like a module file (simulator.model.yaml_reader: every error located as
file:line:col); the names it uses (modules, states, conditions, observables, races) are checked against
the library in `simulator.scenario.plan`. Ages are in years.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from simulator.model.schema import EncounterClass, Frozen, Name

Sex = Literal["male", "female"]


class AgeRange(Frozen):
    """Years of age, [min, max): min inclusive, max exclusive."""

    min: float = Field(0.0, ge=0, le=130)
    max: float = Field(130.0, gt=0, le=130)

    @model_validator(mode="after")
    def _ordered(self) -> AgeRange:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min:g}) must be below max ({self.max:g})")
        return self


class Window(Frozen):
    """When something must happen: in the last `years_before_end` years of the record and/or at an age in
    `age`; both given, inside both. Neither: any time of the life."""

    years_before_end: float | None = Field(None, gt=0, le=130)
    age: AgeRange | None = None


class Conditions(Frozen):
    """Conditions a patient must have had an onset of, or must never have had, by the end of the record."""

    required: list[Name] = []
    excluded: list[Name] = []


class Who(Frozen):
    """Who the patients are: drawn inside these ranges (the rest of the pyramid is never drawn)."""

    sex: list[Sex] | None = Field(None, min_length=1)
    age_at_end: AgeRange | None = None
    race: list[Name] | None = Field(None, min_length=1)
    ethnicity: list[Name] | None = Field(None, min_length=1)
    conditions: Conditions = Conditions()


class Requirement(Frozen):
    """One thing that must happen, as the record shows it, at least `at_least` times inside `window`: a state
    of a module entered (one of its events: a state that records nothing cannot be asked for), a condition's
    onset, an encounter of a class, or an observation above or below a value."""

    module: Name | None = None
    state: Name | None = None
    condition: Name | None = None
    encounter_class: EncounterClass | None = None
    observation: Name | None = None
    above: float | None = None
    below: float | None = None
    at_least: int = Field(1, ge=1, le=1000)
    window: Window = Window()

    @model_validator(mode="after")
    def _one_kind(self) -> Requirement:
        kinds = [k for k in ("state", "condition", "encounter_class", "observation") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of state (with module), condition, encounter_class, observation")
        if (self.state is None) != (self.module is None):
            raise ValueError("state and module go together")
        if (self.observation is None) != (self.above is None and self.below is None) or (
            self.above is not None and self.below is not None
        ):
            raise ValueError("an observation takes one of above or below (and only an observation takes them)")
        return self


class Forced(Frozen):
    """A branch taken whenever the module passes through `state` inside `window` (weight: its probability)."""

    module: Name
    state: Name
    to: Name
    window: Window = Window()


class Tilt(Frozen):
    """A hazard of `state` (the one leading `to`) multiplied by `factor` inside `window`; outside it, and for
    every other hazard, the model as it is. Without a window it is a parameter override of the module (the
    weights still answer to the unconditioned model). No factor: the one that makes the hazard's expected
    count over the window AUTO_EVENTS for the patients of `who` (simulator.scenario.plan.auto_factor)."""

    module: Name
    state: Name
    to: Name
    factor: float | None = Field(None, gt=0, le=1e6)
    window: Window = Window()


class Streams(Frozen):
    """Dense monitoring streams of the scenario's stays (docs/streams.md): the settings of rules/streams.yaml
    (a list, or "icu,ward" as one text) and the sampling interval; the generate options take their place
    when given."""

    settings: list[Name] = []
    interval_seconds: float | None = Field(None, ge=1, le=3600)


class History(Frozen):
    """The history each written record holds (years before the end; none: the whole life)."""

    years: float | None = Field(None, gt=0, le=130)


class Scenario(Frozen):
    """A scenario: `patients` patients, each drawn as `who` says, each with everything in `require` (in
    that order in time when `in_order`), reached with the `force` and `tilt` changes, whose likelihood
    ratio against the unconditioned model is each patient's weight."""

    patients: int = Field(ge=1, le=10_000_000)
    mode: Literal["population", "lifetime"] = "population"
    who: Who = Who()
    require: list[Requirement] = Field(min_length=1)
    in_order: bool = False
    force: list[Forced] = []
    tilt: list[Tilt] = []
    max_attempts: int = Field(200, ge=1, le=100_000)
    # population mode: a history that ends in a death in the last decedent_years years of the record is kept
    # too (is_decedent), as a real extract holds the patients who died in its window; 0: the living only
    decedent_years: float = Field(0.0, ge=0, le=130)
    streams: Streams = Streams()
    messiness: str = "clean"
    history: History = History()
    # truth/attributes: each kept history lived again by the reference twin with every attribute logged (about
    # 0.5 s a patient: off unless asked)
    hidden_attributes: bool = False
