"""The reference data observations are written with (rules/observation_reference.yaml): the UCUM codes
of units, the aliases of unit spellings that are not UCUM codes, and lab reference ranges, each cited."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from simulator.model.schema import Name, Strict
from simulator.model.sources import Sources, need_source

LoincCode = Annotated[str, Field(pattern=r"^\d{1,7}-\d$")]
UcumCode = Annotated[str, Field(pattern=r"^\S+$")]


class UpperLimit(Strict):
    """A lab's upper limit of normal, exclusive (a value at or above it is high), in `unit`; `text` is what
    the FHIR reference range says; `source` is a key of the file's sources."""

    limit: float
    unit: str
    text: Annotated[str, Field(min_length=1)]
    source: Name


class ObservationReference(Strict):
    """UCUM codes and aliases (`ucum` turns a module's unit into its code) and lab upper limits by LOINC
    code. Fields are validated in this order, so each check can read the fields above it."""

    sources: Sources
    ucum_source: Name
    ucum_codes: list[UcumCode] = Field(min_length=1)
    ucum_aliases: dict[str, UcumCode]
    upper_limits: dict[LoincCode, UpperLimit]

    @field_validator("ucum_source")
    @classmethod
    def _cited(cls, source: str, info: ValidationInfo) -> str:
        need_source(source, info)
        return source

    @field_validator("ucum_aliases")
    @classmethod
    def _aliases_are_codes(cls, aliases: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        codes = info.data.get("ucum_codes")
        unknown = [f"{alias} -> {code}" for alias, code in aliases.items() if codes is not None and code not in codes]
        if unknown:
            raise ValueError(f"aliases to codes missing from ucum_codes: {', '.join(unknown)}")
        return aliases

    @field_validator("upper_limits")
    @classmethod
    def _limits_are_ucum_and_cited(cls, limits: dict[str, UpperLimit], info: ValidationInfo) -> dict[str, UpperLimit]:
        codes, aliases = info.data.get("ucum_codes"), info.data.get("ucum_aliases")
        for loinc, limit in limits.items():
            if codes is not None and aliases is not None and aliases.get(limit.unit, limit.unit) not in codes:
                raise ValueError(f"{loinc}: unit '{limit.unit}' is neither in ucum_codes nor in ucum_aliases")
            need_source(limit.source, info, f"{loinc}: ")
        return limits

    def ucum(self, unit: str) -> str | None:
        """The UCUM code of a module's unit string; None if it is neither a known code nor an alias."""
        code = self.ucum_aliases.get(unit, unit)
        return code if code in self.ucum_codes else None
