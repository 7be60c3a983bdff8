"""The provider directory's rules (rules/providers.yaml): national counts of physicians by kind and of
hospitals, each cited, which size a run's directory to its population; the practice size; the NUCC
taxonomy, organization and location type codes the directory is written with; and the payers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from simulator.model.schema import ClockTime, EncounterClass, Name, Strict, Weekday
from simulator.model.sources import Sources, uncited

Text = Annotated[str, Field(min_length=1)]


class NationalCount(Strict):
    """How many there were in the US in `year` (people, physicians or hospitals); `source` is a key of
    the file's sources."""

    count: Annotated[int, Field(gt=0)]
    year: Annotated[int, Field(ge=1990, le=2100)]
    source: Name


class Concept(Strict):
    code: Annotated[str, Field(pattern=r"^\S+$")]
    display: Text


class Taxonomy(Concept):
    """A NUCC Health Care Provider Taxonomy code: nine characters and a final X."""

    code: Annotated[str, Field(pattern=r"^[0-9A-Z]{9}X$")]


class Physicians(NationalCount):
    """A kind of physician: how many are active nationally, and their NUCC taxonomy."""

    taxonomy: Taxonomy


class PrimaryCare(Strict):
    """Adults see family or internal medicine physicians, children pediatricians."""

    family_medicine: Physicians
    internal_medicine: Physicians
    pediatrics: Physicians


class HospitalStaff(Strict):
    """Emergency physicians staff the emergency department, hospitalists the wards, intensivists the ICU."""

    emergency: Physicians
    hospitalist: Physicians
    intensivist: Physicians


class LocationType(Concept):
    """A v3 RoleCode location type and the name a location of that type is given."""

    name: Text


class LocationTypes(Strict):
    clinic: LocationType
    emergency: LocationType
    ward: LocationType
    icu: LocationType


class OrganizationTypes(Strict):
    provider: Concept
    payer: Concept


class Payers(Strict):
    """Payer organization names by coverage kind (several private insurers, the first the default)."""

    medicare: Text
    medicaid: Text
    private: list[Text] = Field(min_length=1)

    @field_validator("private")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("private payer names must be distinct")
        return names


class ClinicHours(Strict):
    """When clinics see patients: encounters of `encounter_classes` start on `weekdays` between `opens` and
    `closes` in the patient's local standard time, at a multiple of `slot_minutes` past `opens` when the
    engine has to book one (simulator/engine/clinic.py)."""

    encounter_classes: list[EncounterClass] = Field(min_length=1)
    weekdays: list[Weekday] = Field(min_length=1)
    opens: ClockTime
    closes: ClockTime
    slot_minutes: Annotated[int, Field(ge=1, le=240)]
    source: Name

    @model_validator(mode="after")
    def _slots(self) -> ClinicHours:
        if self.minutes(self.closes) <= self.minutes(self.opens):
            raise ValueError("closes must be after opens")
        return self

    @staticmethod
    def minutes(clock: str) -> int:
        """Minutes past midnight of an HH:MM time."""
        return int(clock[:2]) * 60 + int(clock[3:])


class HourBlock(Strict):
    """A part of the day, from `from` up to `to` (local standard time; `to` before `from` runs past
    midnight), holding `percent` of the encounters, spread evenly within it."""

    start: ClockTime = Field(alias="from")
    to: ClockTime
    percent: Annotated[float, Field(ge=0, le=100)]

    @model_validator(mode="after")
    def _length(self) -> HourBlock:
        if self.start == self.to:
            raise ValueError("from and to must differ")
        return self

    def span_minutes(self) -> tuple[int, int]:
        """(start, length) in minutes past midnight."""
        start = ClinicHours.minutes(self.start)
        return start, (ClinicHours.minutes(self.to) - start) % (24 * 60)


class EncounterHours(Strict):
    """When in the day encounters of `encounter_classes` start (`at: start`) or end (`at: end`): the share of
    them in each block of the day. The engine moves the state that starts (or ends) such an encounter
    forward to the next time of day drawn from these shares (docs/semantics.md, Encounters)."""

    encounter_classes: list[EncounterClass] = Field(min_length=1)
    at: Literal["start", "end"]
    blocks: list[HourBlock] = Field(min_length=1)
    source: Name

    @model_validator(mode="after")
    def _shares(self) -> EncounterHours:
        total = sum(block.percent for block in self.blocks)
        if abs(total - 100.0) > 0.01:
            raise ValueError(f"blocks' percent must sum to 100 (got {total:g})")
        covered = sorted(block.span_minutes() for block in self.blocks)
        minutes = sum(length for _, length in covered)
        if minutes > 24 * 60:
            raise ValueError("blocks overlap")
        return self


class Providers(Strict):
    """The directory's rules. Fields are validated in this order, so that each cited one can check its
    source against `sources`."""

    sources: Sources
    population: NationalCount
    primary_care: PrimaryCare
    adult_age_years: Annotated[int, Field(ge=1, le=30)]
    hospital_staff: HospitalStaff
    hospitals: NationalCount
    physicians_per_clinic: Annotated[float, Field(ge=1)]
    physicians_per_clinic_source: Name
    organization_types: OrganizationTypes
    location_types: LocationTypes
    payers: Payers
    clinic_hours: ClinicHours
    encounter_hours: list[EncounterHours] = Field(default_factory=list)

    @field_validator(
        "population",
        "primary_care",
        "hospital_staff",
        "hospitals",
        "physicians_per_clinic_source",
        "clinic_hours",
        "encounter_hours",
    )
    @classmethod
    def _cited(cls, value: object, info: ValidationInfo) -> object:
        counts = [value] if isinstance(value, NationalCount) else []
        if isinstance(value, PrimaryCare | HospitalStaff):
            counts = [getattr(value, name) for name in type(value).model_fields]
        cited = [c.source for c in counts] if not isinstance(value, str) else [value]
        if isinstance(value, ClinicHours):
            cited = [value.source]
        if isinstance(value, list):
            cited = [hours.source for hours in value]
        if problems := uncited(info, *sorted(set(cited))):
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _one_rule_each(self) -> Providers:
        seen = {("start", c) for c in self.clinic_hours.encounter_classes}
        for hours in self.encounter_hours:
            for encounter_class in hours.encounter_classes:
                if (hours.at, encounter_class) in seen:
                    raise ValueError(f"encounter_hours: {encounter_class} encounters' {hours.at} has two rules")
                seen.add((hours.at, encounter_class))
        return self

    def hours_of(self, encounter_class: str, at: str) -> EncounterHours | None:
        """The rule for when encounters of a class start or end (None: any time)."""
        return next((h for h in self.encounter_hours if h.at == at and encounter_class in h.encounter_classes), None)

    def people_per(self, count: NationalCount) -> float:
        """People per physician (or hospital) of a national count."""
        return self.population.count / count.count
