"""Messy-data profiles (`--messiness clean|typical|hostile|FILE`): how often the messy-data pass
(`simulator.export.messiness`) corrupts each kind of record, and the variants it draws from.

A profile (rules/messiness/typical.yaml, hostile.yaml, or a user's file) gives a rate per kind of corruption,
each with its published source or, where none exists, the assumption behind it. The variants a corruption
picks from (unit conversions, sibling codes, the codes a decimal shift hits) are terminology, not rates: they
live once in the library's rules/messiness/variants.yaml, with their sources."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from simulator.errors import ConfigError
from simulator.model.parsing import load
from simulator.model.reference_data import LoincCode
from simulator.model.schema import Name, Strict
from simulator.model.sources import Sources, need_source

Share = Annotated[float, Field(ge=0, le=1)]
Text = Annotated[str, Field(min_length=5)]
Positive = Annotated[float, Field(gt=0)]
Decimals = Annotated[int, Field(ge=0, le=6)]
CodeText = Annotated[str, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.\-]{0,31}$")]

PROFILES = ("clean", "typical", "hostile")  # named profiles; clean is no pass at all
MESSINESS_DIR = "messiness"  # under the library's rules directory
VARIANTS_FILE = "variants.yaml"


class KindRate(Strict):
    """The share of eligible records a corruption hits, with its `source` (a key of the profile's sources) or,
    where no published rate exists, the `assumption` behind the figure."""

    rate: Share
    source: Name | None = None
    assumption: Text | None = None

    @model_validator(mode="after")
    def _grounded(self) -> KindRate:
        if (self.source is None) == (self.assumption is None):
            raise ValueError("give either a source (a key of sources) or the assumption behind the rate")
        return self


class DaysRange(KindRate):
    """A rate with the range (uniform) of the delay or shift it draws, in days."""

    days: list[Positive] = Field(min_length=2, max_length=2)

    @field_validator("days")
    @classmethod
    def _ordered(cls, days: list[float]) -> list[float]:
        if days[0] > days[1]:
            raise ValueError(f"the range must go from low to high (got {list(days)})")
        return days


class MessinessProfile(Strict):
    """The rate of each corruption (see docs/messiness.md for what each does):

    - missing: an observation's value left out (the resource says why: dataAbsentReason)
    - duplicate: an observation recorded twice (a second resource with its own id)
    - unit_variant: a value written in another unit of the variants' conversions (converted right)
    - late_entry: a result issued days after it was taken (Observation.issued)
    - typo: a typing error in a display text (observation and condition)
    - miscoding: a sibling code of the variants in place of the right one (observation and condition)
    - out_of_range: a value keyed with its decimal point shifted (the variants' codes)
    - timestamp_shift: an observation dated days off its true time"""

    description: Text
    sources: Sources = Field(default_factory=dict)
    missing: KindRate
    duplicate: KindRate
    unit_variant: KindRate
    late_entry: DaysRange
    typo: KindRate
    miscoding: KindRate
    out_of_range: KindRate
    timestamp_shift: DaysRange

    @field_validator(
        "missing",
        "duplicate",
        "unit_variant",
        "late_entry",
        "typo",
        "miscoding",
        "out_of_range",
        "timestamp_shift",
    )
    @classmethod
    def _cited(cls, kind: KindRate, info: ValidationInfo) -> KindRate:
        if kind.source is not None:
            need_source(kind.source, info)
        return kind


CORRUPTION_KINDS = tuple(name for name in MessinessProfile.model_fields if name not in ("description", "sources"))


class UnitConversion(Strict):
    """A unit variant of a LOINC code: `to_unit` = value x `factor` + `offset` from the unit the library
    writes (`from_unit`), rounded to `decimals`; `source` cites the factor."""

    from_unit: str
    to_unit: str
    factor: Positive
    offset: float = 0.0
    decimals: Decimals
    source: Name


class SiblingCode(Strict):
    """A code a coder may pick in place of `code`: a real code of the same system with its exact display."""

    code: CodeText
    display: Text
    source: Name


class DecimalShift(Strict):
    """The codes whose values a decimal shift hits (x `factor`), in the unit the library writes them."""

    factor: Positive
    codes: list[LoincCode] = Field(min_length=1)


class Variants(Strict):
    """What corruptions pick from: unit conversions by LOINC code, sibling codes by system and code (LOINC,
    SNOMED), and the decimal shift of out-of-range entries."""

    sources: Sources
    unit_conversions: dict[LoincCode, UnitConversion]
    siblings: dict[Literal["LOINC", "SNOMED"], dict[CodeText, SiblingCode]]
    decimal_shift: DecimalShift

    @field_validator("unit_conversions", "siblings")
    @classmethod
    def _cited(cls, entries: dict, info: ValidationInfo) -> dict:
        nested = [e for v in entries.values() for e in (v.values() if isinstance(v, dict) else [v])]
        for entry in nested:
            need_source(entry.source, info)
        return entries


class Messiness(Strict):
    """A profile to apply, by `name` (typical, hostile, or the file's path), with the library's variants."""

    name: str
    profile: MessinessProfile
    variants: Variants


def profile_path(messiness: str | Path, rules_dir: Path) -> Path | None:
    """The profile file of `messiness` (a name of PROFILES or a path); None for clean. ConfigError for a name
    that is neither a profile nor an existing file."""
    text = str(messiness)
    if text == "clean":
        return None
    if text in PROFILES:
        return rules_dir / MESSINESS_DIR / f"{text}.yaml"
    path = Path(text)
    if not path.is_file():
        raise ConfigError("messiness", f"clean, typical, hostile or a profile file (no file {text!r})")
    return path


def load_messiness(messiness: str | Path | None, rules_dir: Path) -> Messiness | None:
    """The profile and variants to apply, or None for clean (or no option). LoadError (file:line:col) for a
    profile or variants file that is not valid."""
    path = profile_path(messiness, rules_dir) if messiness is not None else None
    if path is None:
        return None
    profile = load(path, MessinessProfile)
    variants = load(rules_dir / MESSINESS_DIR / VARIANTS_FILE, Variants)
    return Messiness(name=str(messiness), profile=profile, variants=variants)
