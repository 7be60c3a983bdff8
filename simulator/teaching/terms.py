"""Plain words for codes and units, as a clinician writes them: "type 2 diabetes" for SNOMED 44054006
"Diabetes mellitus type 2 (disorder)", "metformin 500 mg extended-release" for RxNorm 860975.

terms.csv holds them: system, code, term, the article the term takes in running text, style `status` for
findings a patient is recorded as ("a current smoker") or `unspecific` for a code that names no cause
("Death (event)"), and `shown_with`, the LOINC codes of the routine
readings a condition is seen in (BMI for obesity), told with its diagnosis. A code it lacks (a module of
one's own) falls back to its display without the semantic tag."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from simulator.export.readable import UNIT_TEXT, without_semantic_tag
from simulator.model.schema import CODE_SYSTEMS

TERMS_FILE = Path(__file__).with_name("terms.csv")
SYSTEM_NAMES = {url: name for name, url in CODE_SYSTEMS.items()}  # table system URI -> short name


@dataclass(frozen=True)
class Term:
    """How a code reads: `text` as a label ("ECG"), `phrase` in a sentence ("an ECG")."""

    text: str
    article: str = ""
    is_status: bool = False
    shown_with: tuple[str, ...] = ()
    is_unspecific: bool = False

    @property
    def phrase(self) -> str:
        return f"{self.article} {self.text}" if self.article else self.text


@cache
def _terms() -> dict[tuple[str, str], Term]:
    with TERMS_FILE.open(newline="") as handle:
        return {
            (row["system"], row["code"]): Term(
                row["term"],
                row["article"],
                row["style"] == "status",
                tuple(row["shown_with"].split()),
                row["style"] == "unspecific",
            )
            for row in csv.DictReader(handle)
        }


def term(system: str, code: str, display: str = "") -> Term:
    """The plain term of a code (`system` as a URI or a short name); unknown codes read as their display
    without its semantic tag, first letter lowercased unless it starts an abbreviation."""
    found = _terms().get((SYSTEM_NAMES.get(system, system), str(code)))
    if found is not None:
        return found
    text = without_semantic_tag(display) or str(code)
    if len(text) > 1 and not text[1].isupper():
        text = text[0].lower() + text[1:]
    return Term(text)


def row_term(row: Mapping[str, object], prefix: str = "") -> Term:
    """The term of a table row's code (`prefix`: 'reason_' for an encounter's reason)."""
    return term(str(row[f"{prefix}system"]), str(row[f"{prefix}code"]), str(row[f"{prefix}display"]))


def known_codes() -> set[tuple[str, str]]:
    """(system short name, code) of every code terms.csv has a term for."""
    return set(_terms())


def number(value: float) -> str:
    """A measured value with the digits that matter: 7.1, 66, 1139, 0.05, 12.2."""
    if not math.isfinite(value):
        return ""
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")


def with_unit(numbers: str, unit: str | None) -> str:
    """'7.1%', '152 mmHg', '37.2 °C', '88/min': numbers already written, then the unit."""
    text = UNIT_TEXT.get(unit or "", unit or "")
    if not text:
        return numbers
    return f"{numbers}{text}" if text in ("%", "/min") else f"{numbers} {text}"


def quantity(value: float, unit: str | None) -> str:
    return with_unit(number(value), unit)


def unit_text(unit: str | None) -> str:
    return UNIT_TEXT.get(unit or "", unit or "")
