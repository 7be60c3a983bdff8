"""How codes and units read for people, in the clinical notes and the teaching texts: a SNOMED CT display
without its semantic tag, and UCUM units as they are printed."""

from __future__ import annotations

import re

# UCUM units as they are printed (UCUM 2.1, the `printSymbol` of each unit); a unit not listed is printed
# as it is, and a `{score}` annotation as nothing.
UNIT_TEXT = {
    "Cel": "°C",
    "mm[Hg]": "mmHg",
    "kg/m2": "kg/m²",
    "10*3/uL": "×10³/µL",
    "mL/min/{1.73_m2}": "mL/min/1.73 m²",
    "{score}": "",
}
_SEMANTIC_TAG = re.compile(r"\s*\((disorder|finding|procedure|regime/therapy|event|situation|observable entity)\)$")


def without_semantic_tag(display: str) -> str:
    """'Pneumonia (disorder)' -> 'Pneumonia'."""
    return _SEMANTIC_TAG.sub("", display)
