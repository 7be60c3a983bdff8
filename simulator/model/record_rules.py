"""Rules data the FHIR record is written with, each cited: how smoking status is recorded
(rules/smoking_status.yaml), which laboratory results are reported together as a panel
(rules/lab_panels.yaml) and the languages patients speak (rules/languages.yaml)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from simulator.model.reference_data import LoincCode
from simulator.model.schema import Code, Name, Strict
from simulator.model.sources import Sources, need_source

Share = Annotated[float, Field(ge=0, le=1)]


class SmokingStatus(Strict):
    """The smoking status observation (`code`, LOINC 72166-2) written at every wellness visit from
    `minimum_age_years` on. Modules record smoking as condition findings: the `findings` codes are the
    answers, and the one that began last before a visit is the status then; with none, `never`."""

    sources: Sources
    code: Code
    minimum_age_years: Annotated[float, Field(ge=0)]
    age_source: Name
    findings: list[Code] = Field(min_length=1)
    never: Code
    codes_source: Name

    @field_validator("age_source", "codes_source")
    @classmethod
    def _sources_cited(cls, source: str, info: ValidationInfo) -> str:
        need_source(source, info)
        return source

    @model_validator(mode="after")
    def _snomed_answers(self) -> SmokingStatus:
        if self.code.system != "LOINC" or any(c.system != "SNOMED" for c in (*self.findings, self.never)):
            raise ValueError("the observation code is LOINC and its answers are SNOMED")
        return self


class LabPanel(Strict):
    """A LOINC panel and the lab results (LOINC codes) reported in it when taken together."""

    code: Code
    members: list[LoincCode] = Field(min_length=1)
    source: Name


class LabPanels(Strict):
    """Laboratory panels: results of one encounter and time that belong to a panel are reported together
    (one DiagnosticReport coded with the panel); a result of no panel is reported on its own."""

    sources: Sources
    panels: list[LabPanel]

    @field_validator("panels")
    @classmethod
    def _one_panel_each(cls, panels: list[LabPanel], info: ValidationInfo) -> list[LabPanel]:
        seen: set[str] = set()
        for panel in panels:
            if panel.code.system != "LOINC":
                raise ValueError(f"panel {panel.code.code}: a panel is a LOINC code")
            need_source(panel.source, info)
            twice = seen & set(panel.members)
            if twice:
                raise ValueError(f"{', '.join(sorted(twice))}: a lab belongs to one panel at most")
            seen |= set(panel.members)
        return panels

    def panel_of(self) -> dict[str, int]:
        """LOINC code of a member -> the index of its panel."""
        return {member: i for i, panel in enumerate(self.panels) for member in panel.members}


class Languages(Strict):
    """The language each patient speaks at home, written as the US Core Patient `communication`: the
    `languages` (BCP-47 tag -> display) and, by ethnicity name (demographics.yaml), the share of the group
    speaking each; the rest of a group speaks a language not listed and gets no `communication`."""

    sources: Sources
    languages: dict[Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")], str] = Field(min_length=1)
    shares: dict[Name, dict[str, Share]] = Field(min_length=1)
    source: Name

    @field_validator("shares")
    @classmethod
    def _known_and_at_most_one(
        cls, shares: dict[str, dict[str, float]], info: ValidationInfo
    ) -> dict[str, dict[str, float]]:
        languages = info.data.get("languages") or {}
        for group, by_language in shares.items():
            unknown = sorted(set(by_language) - set(languages))
            if languages and unknown:
                raise ValueError(f"{group}: {', '.join(unknown)} not in languages")
            if sum(by_language.values()) > 1 + 1e-9:
                raise ValueError(f"{group}: shares sum to {sum(by_language.values()):.6f}, more than 1")
        return shares

    @field_validator("source")
    @classmethod
    def _source_cited(cls, source: str, info: ValidationInfo) -> str:
        need_source(source, info)
        return source


class CarriedProcedure(Strict):
    """A procedure a record keeps from before its history window (`--history`): every one of the code, or
    only the patient's `first` (the start of a recurring treatment, such as dialysis)."""

    code: Code
    first: bool = False
    reason: Annotated[str, Field(min_length=5)]
    source: Name


class HistoryRules(Strict):
    """What a record exported with `--history YEARS` carries from before its window besides active conditions,
    active medication courses and immunizations: the major `procedures`, and the latest reading of each of the
    `observations` codes when the window holds none."""

    sources: Sources
    procedures: list[CarriedProcedure]
    observations: list[LoincCode]
    observations_source: Name

    @field_validator("procedures")
    @classmethod
    def _procedures_cited(cls, procedures: list[CarriedProcedure], info: ValidationInfo) -> list[CarriedProcedure]:
        for procedure in procedures:
            need_source(procedure.source, info)
        return procedures

    @field_validator("observations_source")
    @classmethod
    def _source_cited(cls, source: str, info: ValidationInfo) -> str:
        need_source(source, info)
        return source
