"""When each vaccine, drug, lab method and procedure the library emits came into use (rules/calendar.yaml):
the year (and month) from which a record could contain it, what that date is (FDA approval, ACIP
recommendation, publication...) and its cited source, and what a record contains before it (`before`: the
era's alternative, itself a dated entry, or nothing); the codes with no meaningful date (`timeless`) and
those not yet dated (`undated`), each with the reason. Encounter types and diagnoses are not dated."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from simulator.days import days_since_epoch
from simulator.model.schema import CODE_SYSTEMS, Name, Strict
from simulator.model.sources import uncited

System = Literal["cvx", "rxnorm", "loinc", "snomed"]
SYSTEM_NAMES: dict[str, str] = {"cvx": "CVX", "rxnorm": "RxNorm", "loinc": "LOINC", "snomed": "SNOMED"}
SYSTEM_URIS: dict[str, str] = {system: CODE_SYSTEMS[name] for system, name in SYSTEM_NAMES.items()}

CodeText = Annotated[str, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.\-]*$")]
Text = Annotated[str, Field(min_length=1)]
Year = Annotated[int, Field(ge=1800, le=2030)]
Month = Annotated[int, Field(ge=1, le=12)]
# FDA approval (drugs), FDA 510(k) clearance (lab tests), FDA licensure (vaccines), an ACIP or other public
# health recommendation, the publication of a method or equation, or its first clinical use.
What = Literal[
    "fda_approval",
    "fda_clearance",
    "fda_licensure",
    "acip_recommendation",
    "recommendation",
    "publication",
    "first_clinical_use",
]


class Source(Strict):
    """A citation: who published what when (`year` left out where the stored copy shows none), where it is,
    and what it says that dates the code."""

    publisher: Text
    title: Text
    year: Year | None = None
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    says: Annotated[str, Field(min_length=5)]


class AgeStep(Strict):
    """A later date for patients aged `from_years` up to `below_years` (open-ended without it): a vaccine
    first recommended for some ages and extended to others later."""

    from_years: Annotated[float, Field(ge=0)]
    below_years: Annotated[float, Field(gt=0)] | None = None
    year: Year
    month: Month | None = None
    what: What
    source: Name


class Predecessor(Strict):
    """The dated code a record contains before another code's date: the era's alternative."""

    system: System
    code: CodeText


class Introduced(Strict):
    """A dated code: nothing before `year` (and `month`) may contain it; `by_age` refines the date by age.
    `before` says what a record contains instead before that date: another dated code (which in turn says
    what comes before it) or `nothing` (the vaccine is not given, the course not started, the test not
    reported); the note says why."""

    system: System
    code: CodeText
    display: Text  # exactly as the modules write it
    year: Year
    month: Month | None = None
    what: What
    source: Name
    by_age: list[AgeStep] = Field(default_factory=list)
    before: Predecessor | Literal["nothing"]
    note: Text | None = None  # what the date does not say: an earlier product, a narrower first indication

    def on(self, age_years: float | None = None) -> date:
        """The first day a record of a patient of this age could contain the code."""
        for step in self.by_age:
            if age_years is not None and step.from_years <= age_years < (step.below_years or float("inf")):
                return date(step.year, step.month or 1, 1)
        return date(self.year, self.month or 1, 1)

    def age_steps(self) -> list[tuple[float, date]]:
        """The date as a step function of age: (from age, date) pieces, increasing from age 0, each holding
        until the next."""
        edges = sorted({0.0, *(s.from_years for s in self.by_age), *(s.below_years or 0.0 for s in self.by_age)})
        return [(edge, self.on(edge)) for edge in edges]


class Listed(Strict):
    """A code that is not dated, and why."""

    system: System
    code: CodeText
    display: Text
    why: Annotated[str, Field(min_length=5)]


class Calendar(Strict):
    """Introduction dates by code. Fields are validated in this order, so each check reads the fields above."""

    sources: dict[Name, Source] = Field(min_length=1)
    introduced: list[Introduced]
    timeless: list[Listed]  # existed for the whole simulated era (vital signs, body weight...)
    undated: list[Listed]  # has a date that is not yet sourced

    @field_validator("introduced")
    @classmethod
    def _cited_and_ordered(cls, entries: list[Introduced], info: ValidationInfo) -> list[Introduced]:
        problems = _twice(entries)
        for e in entries:
            problems += uncited(info, e.source, *(step.source for step in e.by_age), where=f"{e.system} {e.code}: ")
            for step in e.by_age:
                if (step.year, step.month or 1) < (e.year, e.month or 1):
                    problems.append(f"{e.system} {e.code}: by_age year {step.year} is before the code's year")
                if step.below_years is not None and step.below_years <= step.from_years:
                    problems.append(f"{e.system} {e.code}: by_age below_years must exceed from_years")
        if problems:
            raise ValueError("; ".join(problems))
        return entries

    @field_validator("introduced")
    @classmethod
    def _predecessors_dated_and_earlier(cls, entries: list[Introduced]) -> list[Introduced]:
        dated = {(e.system, e.code): e for e in entries}
        problems = []
        for e in entries:
            if e.before == "nothing":
                continue
            earlier = dated.get((e.before.system, e.before.code))
            if earlier is None:
                problems.append(f"{e.system} {e.code}: before {e.before.system} {e.before.code} is not a dated entry")
            elif earlier.on() >= e.on():
                problems.append(f"{e.system} {e.code}: before {e.before.system} {e.before.code} is not dated earlier")
        if problems:
            raise ValueError("; ".join(problems))
        return entries

    @field_validator("timeless", "undated")
    @classmethod
    def _listed_once(cls, listed: list[Listed], info: ValidationInfo) -> list[Listed]:
        above = ("introduced", "timeless") if info.field_name == "undated" else ("introduced",)
        problems = _twice([*(e for name in above for e in info.data.get(name, [])), *listed])
        if problems:
            raise ValueError("; ".join(problems))
        return listed

    @cached_property
    def _by_code(self) -> dict[tuple[str, str], Introduced]:
        return {(SYSTEM_URIS[e.system], e.code): e for e in self.introduced}

    def entry(self, system_uri: str, code: str) -> Introduced | None:
        """The code's dated entry (None: timeless, undated or not listed)."""
        return self._by_code.get((system_uri, code))

    def introduced_on(self, system_uri: str, code: str, age_years: float | None = None) -> date | None:
        """The first day a record (of a patient of this age) could contain the code; None if not dated."""
        entry = self.entry(system_uri, code)
        return None if entry is None else entry.on(age_years)

    def eras(self, system_uri: str, code: str) -> list[Introduced]:
        """The code's entry and its predecessors, newest first (empty if not dated)."""
        chain = []
        entry = self.entry(system_uri, code)
        while entry is not None:
            chain.append(entry)
            before = entry.before
            entry = None if before == "nothing" else self._by_code[(SYSTEM_URIS[before.system], before.code)]
        return chain

    def in_use(self, system_uri: str, code: str, t_days: float, age_years: float) -> Introduced | None:
        """The entry of what a record made `t_days` after 1970-01-01, of a patient of this age, contains for a
        dated `code`: its own entry or the era's alternative; None: nothing."""
        for entry in self.eras(system_uri, code):
            if t_days >= days_since_epoch(entry.on(age_years)):
                return entry
        return None

    def year_of(self, system_uri: str, code: str, age_years: float | None = None) -> int | None:
        """The year from which a record (of a patient of this age) could contain the code; None if not dated
        (timeless, undated or not listed). `system_uri` is a CODE_SYSTEMS value, e.g. http://hl7.org/fhir/sid/cvx."""
        day = self.introduced_on(system_uri, code, age_years)
        return None if day is None else day.year


def _twice(entries: Sequence[Introduced | Listed]) -> list[str]:
    """A message for each code listed more than once (whichever list it is in)."""
    seen: set[tuple[str, str]] = set()
    problems = []
    for e in entries:
        if (e.system, e.code) in seen:
            problems.append(f"{e.system} {e.code}: listed twice")
        seen.add((e.system, e.code))
    return problems
