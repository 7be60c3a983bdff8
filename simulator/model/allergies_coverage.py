"""Rules data the exporters draw allergies and health insurance with, after the kernel, each figure cited:
reported allergies by allergen, age band and sex (rules/allergies.yaml) and the payer of each patient's
health insurance by age band (rules/coverage.yaml)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from simulator.model.schema import Code, Name, Strict
from simulator.model.sources import Sources, need_source

Share = Annotated[float, Field(ge=0, le=1)]
Age = Annotated[float, Field(ge=0)]
Criticality = Literal["low", "high", "unable-to-assess"]
CoverageKind = Literal["medicare", "medicaid", "private"]  # the payer kinds of the provider directory
_SUM_TOLERANCE = 1e-6


def _bands_start_at_birth(min_ages: list[float], where: str = "") -> None:
    if not min_ages or min_ages[0] != 0 or any(b <= a for a, b in zip(min_ages, min_ages[1:], strict=False)):
        raise ValueError(f"{where}age bands must start at 0 and increase (got {min_ages})")


# --- allergies -------------------------------------------------------------------------------------------


class Reaction(Strict):
    """A reaction the allergy is recorded with: its manifestation (a key of `manifestations`), the share of
    the allergen's patients it is recorded for, and the allergy's criticality then."""

    manifestation: Name
    share: Share
    criticality: Criticality


class ReactionProfile(Strict):
    """The reactions recorded with an allergy, one at most per allergy (shares of the allergy's patients);
    the rest get no reaction and the criticality `otherwise`."""

    reactions: list[Reaction]
    otherwise: Criticality
    source: Name

    @field_validator("reactions")
    @classmethod
    def _at_most_one(cls, reactions: list[Reaction]) -> list[Reaction]:
        total = sum(r.share for r in reactions)
        if total > 1 + _SUM_TOLERANCE:
            raise ValueError(f"reaction shares sum to {total:.6f}, more than 1")
        return reactions


class AllergyBand(Strict):
    """From `min_age_years` (age at the end of the record) to the next band: the share of males and of
    females with the allergy on record (`source`), the share of those recorded as confirmed (the rest
    unconfirmed) and the reaction profile (a key of `reaction_profiles`)."""

    min_age_years: Age
    male: Share
    female: Share
    source: Name
    confirmed_share: Share
    confirmed_source: Name
    reactions: Name


class Allergen(Strict):
    """An allergen (`code`: a SNOMED CT substance or an RxNorm ingredient) and its allergies: category,
    type and, by age band, prevalence, verification and reactions."""

    code: Code
    text: Annotated[str, Field(min_length=1)]
    category: Literal["food", "medication", "environment", "biologic"]
    type: Literal["allergy", "intolerance"]
    bands: list[AllergyBand] = Field(min_length=1)

    @field_validator("code")
    @classmethod
    def _substance(cls, code: Code) -> Code:
        if code.system not in ("SNOMED", "RxNorm"):
            raise ValueError(f"an allergen is a SNOMED CT substance or an RxNorm ingredient (got {code.system})")
        return code

    @field_validator("bands")
    @classmethod
    def _ordered(cls, bands: list[AllergyBand]) -> list[AllergyBand]:
        _bands_start_at_birth([b.min_age_years for b in bands])
        return bands


class Allergies(Strict):
    """Reported allergies (US Core AllergyIntolerance): reaction manifestations (SNOMED CT) by name, reaction
    profiles by name and the allergens by name. Fields are validated in this order, so each check can read
    the fields above it."""

    sources: Sources
    codes_source: Name
    manifestations: dict[Name, Code] = Field(min_length=1)
    reaction_profiles: dict[Name, ReactionProfile] = Field(min_length=1)
    allergens: dict[Name, Allergen] = Field(min_length=1)

    @field_validator("codes_source")
    @classmethod
    def _codes_cited(cls, source: str, info: ValidationInfo) -> str:
        need_source(source, info)
        return source

    @field_validator("manifestations")
    @classmethod
    def _snomed(cls, manifestations: dict[str, Code]) -> dict[str, Code]:
        for name, code in manifestations.items():
            if code.system != "SNOMED":
                raise ValueError(f"{name}: a manifestation is a SNOMED CT clinical finding")
        return manifestations

    @field_validator("reaction_profiles")
    @classmethod
    def _profiles_known(cls, profiles: dict[str, ReactionProfile], info: ValidationInfo) -> dict:
        manifestations = info.data.get("manifestations") or {}
        for name, profile in profiles.items():
            need_source(profile.source, info, f"{name}: ")
            unknown = sorted({r.manifestation for r in profile.reactions} - set(manifestations))
            if manifestations and unknown:
                raise ValueError(f"{name}: manifestations {', '.join(unknown)} are not in manifestations")
        return profiles

    @field_validator("allergens")
    @classmethod
    def _allergens_known(cls, allergens: dict[str, Allergen], info: ValidationInfo) -> dict[str, Allergen]:
        profiles = info.data.get("reaction_profiles")
        for name, allergen in allergens.items():
            for band in allergen.bands:
                need_source(band.source, info, f"{name}: ")
                need_source(band.confirmed_source, info, f"{name}: ")
                if profiles is not None and band.reactions not in profiles:
                    raise ValueError(f"{name}: reaction profile '{band.reactions}' is not in reaction_profiles")
        return allergens


# --- coverage --------------------------------------------------------------------------------------------


class Coding(Strict):
    code: Annotated[str, Field(min_length=1)]
    display: Annotated[str, Field(min_length=1)]


class PlanClass(Strict):
    """A Coverage class (group or plan): its value (an identifier) and name."""

    value: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]


class Payer(Strict):
    """What a Coverage of a payer kind says: its type (a code of `type_system`) and plan."""

    type: Coding
    plan: PlanClass


class CoverageBand(Strict):
    """From `min_age_years` (age at the end of the record) to the next band: the share of people uninsured
    and the share covered by each payer kind (one primary payer each); they sum to 1."""

    min_age_years: Age
    uninsured: Share
    shares: dict[CoverageKind, Share]
    source: Name

    @field_validator("shares")
    @classmethod
    def _all_kinds(cls, shares: dict[str, float]) -> dict[str, float]:
        missing = sorted(set(CoverageKind.__args__) - set(shares))  # type: ignore[attr-defined]
        if missing:
            raise ValueError(f"no share for {', '.join(missing)}")
        return shares

    def payer_shares(self) -> list[float]:
        """The shares of the payer kinds, in CoverageKind order."""
        return [self.shares[kind] for kind in CoverageKind.__args__]  # type: ignore[attr-defined]


class CoverageRules(Strict):
    """Health insurance (US Core Coverage): who has which payer, by age band, and what each payer kind's
    Coverage says. Fields are validated in this order, so each check can read the fields above it."""

    sources: Sources
    type_system: Annotated[str, Field(pattern=r"^https?://\S+$")]
    codes_source: Name
    payers: dict[CoverageKind, Payer]
    bands: list[CoverageBand] = Field(min_length=1)

    @field_validator("codes_source")
    @classmethod
    def _codes_cited(cls, source: str, info: ValidationInfo) -> str:
        need_source(source, info)
        return source

    @field_validator("payers")
    @classmethod
    def _every_kind(cls, payers: dict[str, Payer]) -> dict[str, Payer]:
        missing = sorted(set(CoverageKind.__args__) - set(payers))  # type: ignore[attr-defined]
        if missing:
            raise ValueError(f"no payer for {', '.join(missing)}")
        return payers

    @field_validator("bands")
    @classmethod
    def _bands_sum_to_one(cls, bands: list[CoverageBand], info: ValidationInfo) -> list[CoverageBand]:
        _bands_start_at_birth([b.min_age_years for b in bands])
        for i, band in enumerate(bands):
            need_source(band.source, info, f"bands[{i}]: ")
            total = band.uninsured + sum(band.shares.values())
            if abs(total - 1) > _SUM_TOLERANCE:
                raise ValueError(f"bands[{i}]: uninsured and payer shares sum to {total:.6f}, not 1")
        return bands
