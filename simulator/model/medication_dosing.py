"""How each medication is taken (rules/medication_dosing.yaml): the dose, schedule and route a MedicationRequest
states for an RxNorm product, each from its label or a guideline, with the UCUM dose units and SNOMED CT routes
they use."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from simulator.model.schema import Name, Strict
from simulator.model.sources import Sources, need_source

RxNormCode = Annotated[str, Field(pattern=r"^\d{1,8}$")]
SnomedCode = Annotated[str, Field(pattern=r"^\d{6,18}$")]
Text = Annotated[str, Field(min_length=1)]


class DosingRoute(Strict):
    """A SNOMED CT route of administration (a descendant of 284009009 |Route of administration value|)."""

    code: SnomedCode
    display: Text


class DoseAmount(Strict):
    """One administration: `value` of the UCUM `unit` (a unit of the product, such as {tablet}, or an amount
    per kilogram of body weight where the label doses by weight)."""

    value: Annotated[float, Field(gt=0)]
    unit: Text


class DosingSchedule(Strict):
    """FHIR Timing.repeat: `frequency` administrations every `period` (to `period_max`) `period_unit`."""

    frequency: Annotated[int, Field(ge=1)]
    period: Annotated[float, Field(gt=0)]
    period_max: Annotated[float, Field(gt=0)] | None = None
    period_unit: Literal["h", "d", "wk"]


class ProductDosing(Strict):
    """How one RxNorm product is taken: `text` is the sig a prescriber writes; `route` a key of the file's
    routes; `as_needed` for a reliever taken when symptoms need it; `source` a key of the file's sources."""

    product: Text  # the RxNorm display, for the reader of the file
    text: Text
    route: Name
    dose: DoseAmount
    schedule: DosingSchedule
    as_needed: bool = False
    source: Name


class MedicationDosing(Strict):
    """Dosing by RxNorm code. Fields are validated in this order, so each check reads the fields above it."""

    sources: Sources
    units_source: Name
    dose_units: list[Text] = Field(min_length=1)
    routes_source: Name
    routes: dict[Name, DosingRoute] = Field(min_length=1)
    dosing: dict[RxNormCode, ProductDosing]

    @field_validator("units_source", "routes_source")
    @classmethod
    def _cited(cls, source: str, info: ValidationInfo) -> str:
        need_source(source, info)
        return source

    @field_validator("dosing")
    @classmethod
    def _known_names(cls, dosing: dict[str, ProductDosing], info: ValidationInfo) -> dict[str, ProductDosing]:
        """Every entry's source, route and dose unit is declared above it."""
        declared = {
            "source": info.data.get("sources"),
            "route": info.data.get("routes"),
            "dose unit": info.data.get("dose_units"),
        }
        problems = []
        for code, entry in dosing.items():
            for what, value in (("source", entry.source), ("route", entry.route), ("dose unit", entry.dose.unit)):
                if declared[what] is not None and value not in declared[what]:
                    problems.append(f"{code}: {what} '{value}' is not declared")
            if entry.schedule.period_max is not None and entry.schedule.period_max < entry.schedule.period:
                problems.append(f"{code}: period_max is below period")
        if problems:
            raise ValueError("; ".join(problems))
        return dosing
