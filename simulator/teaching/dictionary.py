"""docs/data-dictionary.md, made from the data dictionary (simulator/export/data_dictionary.csv, which
every CSV run also writes as csv/data_dictionary.csv): one source for both, and a test keeps the doc equal
to what this module makes of it.

python -m simulator.teaching.dictionary docs/data-dictionary.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from simulator.teaching.record import WRITTEN, data_dictionary

TYPES = {
    "integer": "whole number",
    "number": "decimal number; empty where missing",
    "text": "text; empty where missing (read codes and ids as text)",
    "category": "text from a fixed set of values",
    "boolean": "true or false (`True`/`False` in CSV)",
    "datetime": "UTC time: ISO 8601 with milliseconds and Z in CSV (`2016-12-08T10:24:35.509Z`), "
    "a timezone-aware timestamp in Parquet; empty where missing",
}
ROWS = {
    "patients": "one row per patient",
    "events": "one row per event: the whole timeline, in patient then time order",
    "encounters": "one row per encounter",
    "conditions": "one row per condition episode (onset to resolution), diagnosed or not",
    "observations": "one row per reading",
    "medications": "one row per medication course (start to stop)",
    "procedures": "one row per procedure",
    "immunizations": "one row per vaccine given",
    "symptoms": "one row per symptom",
    "deaths": "one row per death",
}

# The ground truth a scenario run writes beside the record (truth/<table>.parquet, .csv with csv), apart from the
# CSV tables above: the tables that hold what the FHIR record never shows directly (docs/scenarios.md has all)
TRUTH = {
    "attributes": (
        "one row per value a hidden attribute took: its initial value at birth, then each value a module state "
        "set (scenario runs; the others of truth/ are in [scenarios.md](scenarios.md#ground-truth))",
        [
            ("patient", "integer", "The patient's index (patients.index)"),
            ("time", "datetime", "When the value was set (the patient's birth for the initial value)"),
            ("module", "text", "The module whose state set it (for the initial value, the module declaring it)"),
            ("state", "text", "The module state that set it; empty for the initial value"),
            ("attribute", "text", "The attribute (a latent value such as blood-pressure excess, GFR or HbA1c excess)"),
            ("value", "number", "Its value from then on, in the unit of the module's description"),
            ("per_year", "number", "Its drift from then on, in those units a year (0: constant)"),
        ],
    ),
}


def markdown() -> str:
    """The text of docs/data-dictionary.md."""
    columns = data_dictionary()
    lines = [
        "# Data dictionary",
        "",
        "Every column of every table `ehrsim generate` writes with `--format csv` (`csv/<table>.csv`) or "
        "`--format parquet` (`parquet/<table>.parquet`). A CSV run writes this dictionary beside its tables as "
        "`csv/data_dictionary.csv` (columns `table`, `column`, `type`, `description`), for spreadsheets and "
        "pandas. The tables join on `patient` (the patient's index) or `patient_id`, and on `encounter_id`; "
        "the `id` of a row is the id of its FHIR resource in `fhir/`. How the tables are made: "
        "[fhir.md](fhir.md#tables); what to do with them in class: [teaching.md](teaching.md).",
        "",
        "This page is made from that file (`simulator/export/data_dictionary.csv`):",
        "",
        "```bash",
        "python -m simulator.teaching.dictionary docs/data-dictionary.md",
        "```",
        "",
        "Types:",
        "",
        *(f"- `{name}`: {text}" for name, text in TYPES.items()),
        "",
    ]
    for table in WRITTEN:
        rows = columns[columns["table"] == table]
        lines += [
            f"## {table}",
            "",
            f"{ROWS[table].capitalize()}.",
            "",
            "| column | type | description |",
            "|---|---|---|",
        ]
        lines += [
            f"| `{c}` | {t} | {d.replace('|', '/')} |"
            for c, t, d in zip(rows["column"], rows["type"], rows["description"], strict=True)
        ]
        lines.append("")
    for table, (rows_are, described) in TRUTH.items():
        lines += [
            f"## truth/{table}",
            "",
            f"{rows_are.capitalize()}.",
            "",
            "| column | type | description |",
            "|---|---|---|",
            *(f"| `{c}` | {t} | {d} |" for c, t, d in described),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else Path("docs/data-dictionary.md")
    path.write_text(markdown())
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
