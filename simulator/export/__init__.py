"""Exporters: the event and patient tables -> per-type clinical tables (CSV, Parquet) and FHIR R4
(Bulk Data ndjson, per-patient transaction bundles).

One path: chunk -> `clinical_tables.build_tables` -> `fhir_resources.build_resources` -> writers.
Nothing here looks inside the kernel; everything works from the patient and event tables of
`simulator.tables`.
"""

from __future__ import annotations

FORMATS = ("ndjson", "bundles", "csv", "parquet")
DEFAULT_FORMATS = ("ndjson",)


def parse_formats(formats: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """'ndjson,csv' or a sequence -> the formats in canonical order; unknown names are an error."""
    if formats is None:
        return DEFAULT_FORMATS
    names = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    names = [n for n in names if n]
    unknown = sorted(set(names) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown output format {', '.join(unknown)} (choose from {', '.join(FORMATS)})")
    if not names:
        raise ValueError(f"no output format given (choose from {', '.join(FORMATS)})")
    return tuple(f for f in FORMATS if f in names)
