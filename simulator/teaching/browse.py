"""The cohort browser: `RUN/browse/index.html`, one page that opens from file:// with no server and no
network, and its data beside it.

- `data/index.js`: the patient list (name, sex, age, diagnosed conditions, encounter classes) and the
  code dictionary, loaded with the page;
- `data/patients/<index>.js`: one patient's timeline (encounters, conditions, medications, observations,
  procedures, immunizations, symptoms, death, each row with its FHIR id), loaded when the patient is opened;
- `data/fhir/<index>.js`: that patient's FHIR resources as the run wrote them (fhir/*.ndjson), for the
  first `fhir_patients` patients only, since they are about 0.5 MB a patient.

Data files are scripts that call `ehrsimData.index(...)`, `.patient(...)` and `.fhir(...)`: a browser
loads a script from file://, where it refuses to fetch a JSON file. The page renders only the rows of the
list in view and the marks of the time window shown, so 10,000 patients stay responsive."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from simulator.export.ids import patient_of
from simulator.files import abort_directory, partial_path, start_directory
from simulator.model.schema import ENCOUNTER_CLASSES
from simulator.teaching.record import RunRecord
from simulator.teaching.terms import row_term, unit_text
from simulator.version import __version__

PAGE = Path(__file__).with_name("templates") / "browse.html"
MARKER = "ehrsim-browse"  # in index.html: a folder with it is an earlier browser that a new one may replace
TABLE_COLUMNS = {  # what the page needs of each table (times become minutes since 1970)
    "encounters": [
        "patient",
        "start_time",
        "end_time",
        "encounter_class",
        "system",
        "code",
        "display",
        "reason_system",
        "reason_code",
        "reason_display",
        "id",
    ],
    "conditions": ["patient", "onset_time", "diagnosis_time", "resolution_time", "system", "code", "display", "id"],
    "medications": ["patient", "start_time", "stop_time", "system", "code", "display", "id"],
    "observations": ["patient", "time", "system", "code", "display", "value", "unit", "category", "encounter_id", "id"],
    "procedures": ["patient", "time", "system", "code", "display", "id"],
    "immunizations": ["patient", "time", "system", "code", "display", "id"],
    "symptoms": ["patient", "time", "system", "code", "display", "severity", "id"],
    "deaths": ["patient", "time", "system", "code", "display", "id"],
}


def minutes(times: pd.Series) -> list[int | None]:
    """Timestamps as whole minutes since 1970-01-01 UTC (None where missing)."""
    values = pd.DatetimeIndex(times).as_unit("ms").asi8 // 60_000
    missing = times.isna().to_numpy()
    return [None if gone else int(v) for v, gone in zip(values.tolist(), missing, strict=True)]


class Codes:
    """The code dictionary: each (system, code) once, with its display, plain term, unit and category."""

    def __init__(self) -> None:
        self.rows: list[list] = []
        self.index: dict[tuple[str, str], int] = {}

    def add(self, frame: pd.DataFrame, prefix: str = "") -> list[int]:
        """The dictionary index of each row's code (-1 where it has none)."""
        found = []
        keys = zip(frame[f"{prefix}system"].astype(object), frame[f"{prefix}code"].astype(object), strict=True)
        for position, (system, code) in enumerate(keys):
            if pd.isna(code):
                found.append(-1)
                continue
            key = (str(system), str(code))
            if key not in self.index:
                row = frame.iloc[position]
                unit = unit_text(row["unit"]) if "unit" in frame and not pd.isna(row["unit"]) else ""
                category = row["category"] if "category" in frame and not pd.isna(row["category"]) else ""
                text = row_term(row, prefix)
                self.index[key] = len(self.rows)
                self.rows.append([key[0], key[1], str(row[f"{prefix}display"]), text.text, str(unit), str(category)])
            found.append(self.index[key])
        return found


def _rows(frame: pd.DataFrame, columns: list[list]) -> list[list]:
    return [list(row) for row in zip(*columns, strict=True)] if len(frame) else []


def _table_rows(name: str, frame: pd.DataFrame, codes: Codes) -> list[list]:
    """A table as the page's rows (see browse.html, `TABLES`)."""
    ids = frame["id"].astype(object).tolist()
    code = _factorized_codes(frame, codes)
    if name == "encounters":
        klass = [ENCOUNTER_CLASSES.index(str(c)) for c in frame["encounter_class"]]
        reason = _factorized_codes(frame, codes, "reason_")
        columns = [minutes(frame["start_time"]), minutes(frame["end_time"]), klass, code, reason, ids]
    elif name == "conditions":
        columns = [
            minutes(frame["onset_time"]),
            minutes(frame["diagnosis_time"]),
            minutes(frame["resolution_time"]),
            code,
            ids,
        ]
    elif name == "medications":
        columns = [minutes(frame["start_time"]), minutes(frame["stop_time"]), code, ids]
    elif name in ("observations", "symptoms"):
        value = frame["value" if name == "observations" else "severity"].round(3).tolist()
        columns = [minutes(frame["time"]), code, value, ids]
        if name == "observations":
            columns.append(frame["encounter_id"].astype(object).where(frame["encounter_id"].notna(), None).tolist())
    else:
        columns = [minutes(frame["time"]), code, ids]
    return _rows(frame, columns)


def _factorized_codes(frame: pd.DataFrame, codes: Codes, prefix: str = "") -> list[int]:
    """Dictionary indexes of a column of codes, looked up once per distinct code (not per row)."""
    if frame.empty:
        return []
    keys = [frame[f"{prefix}system"], frame[f"{prefix}code"]]
    group = frame.groupby(keys, sort=False, observed=True, dropna=False).ngroup().to_numpy()
    _, firsts = np.unique(group, return_index=True)
    mapped = np.array(codes.add(frame.iloc[firsts], prefix), dtype=np.int64)
    return mapped[group].tolist()


def _slices(patient: np.ndarray, indexes: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, stop) of each patient's rows in a table sorted by patient."""
    starts = np.searchsorted(patient, indexes, side="left")
    stops = np.searchsorted(patient, indexes, side="right")
    yield from zip(starts.tolist(), stops.tolist(), strict=True)


def _fhir_lines(folder: Path, wanted: dict[str, int]) -> dict[int, list[bytes]]:
    """The FHIR resources (ndjson lines) of the patients in `wanted` (patient id -> index), by index. Each
    file is read until it has passed the last wanted patient, where its resources come in patient order."""
    found: dict[int, list[bytes]] = {index: [] for index in wanted.values()}
    last = max(wanted.values(), default=-1)
    for path in sorted(folder.glob("*.ndjson")):
        ordered, highest = True, -1
        with path.open("rb") as handle:
            for line in handle:
                patient = patient_of(line)
                if patient is None:
                    continue
                index = wanted.get(patient)
                if index is not None:
                    found[index].append(line.rstrip(b"\n"))
                    ordered = ordered and index >= highest
                    highest = max(highest, index)
                elif highest == last and ordered:
                    break  # past the last wanted patient of a file in patient order
    return found


def _ages(patients: pd.DataFrame, reference: pd.Timestamp) -> list[float]:
    end = patients["death_time"].fillna(reference)
    return ((end - patients["birth_time"]).dt.total_seconds() / 86_400 / 365.25).round(1).tolist()


def write_browser(run_dir: str | Path, out: str | Path | None = None, fhir_patients: int = 100) -> Path:
    """Write the browser of the run in `run_dir` to `out` (default RUN/browse/) and return its index.html.
    An earlier browser there is replaced; a folder that is not one is refused (FileExistsError)."""
    run = RunRecord.open(run_dir)
    final = Path(out) if out is not None else run.path / "browse"
    if final.exists() and MARKER not in _head(final / "index.html"):
        raise FileExistsError(f"{final} exists and is not an ehrsim browser: choose another --out")
    staging = start_directory(final)
    try:
        _write(run, staging, fhir_patients)
        _replace(final)
    except BaseException:
        abort_directory(final)
        raise
    return final / "index.html"


def _head(path: Path) -> str:
    return path.read_text(errors="replace")[:500] if path.is_file() else ""


def _replace(final: Path) -> None:
    """Put the finished partial folder in place of `final` (an earlier browser, removed once replaced)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(partial_path(final), final)
    shutil.rmtree(old, ignore_errors=True)


def _write(run: RunRecord, folder: Path, fhir_patients: int) -> None:
    patients = run.table("patients").sort_values("index", kind="stable").reset_index(drop=True)
    indexes = patients["index"].to_numpy()
    codes = Codes()
    tables = {}
    for name, columns in TABLE_COLUMNS.items():
        frame = run.table(name, columns=columns)
        frame = frame.sort_values("patient", kind="stable").reset_index(drop=True)
        tables[name] = (frame["patient"].to_numpy(), _table_rows(name, frame, codes))
    (folder / "data" / "patients").mkdir(parents=True)
    bounds = {name: list(_slices(patient, indexes)) for name, (patient, _) in tables.items()}
    for position, index in enumerate(indexes.tolist()):
        record = {}
        for name, (_, rows) in tables.items():
            a, b = bounds[name][position]
            record[name] = rows[a:b]
        text = b"ehrsimData.patient(" + str(index).encode() + b"," + orjson.dumps(record) + b");\n"
        (folder / "data" / "patients" / f"{index}.js").write_bytes(text)
    with_fhir = _write_fhir(run, folder, patients, fhir_patients)
    conditions = _diagnosed(run, patients, codes)
    classes = _classes(tables["encounters"], indexes)
    index_data = {
        "run": {
            "version": run.manifest.get("ehrsim_version", __version__),
            "seed": run.manifest.get("seed"),
            "mode": run.manifest.get("config", {}).get("mode"),
            "reference_date": str(run.reference_time.date()),
            "patients": len(patients),
            "fhir_patients": len(with_fhir),
        },
        "classes": list(ENCOUNTER_CLASSES),
        "codes": codes.rows,
        "columns": [
            "id",
            "index",
            "name",
            "sex",
            "birth",
            "death",
            "age",
            "conditions",
            "classes",
            "encounters",
            "fhir",
        ],
        "patients": [
            [
                pid,
                int(index),
                f"{given} {family}",
                str(sex),
                birth,
                death,
                age,
                conditions[i],
                classes[i][0],
                classes[i][1],
                int(index) in with_fhir,
            ]
            for i, (pid, index, given, family, sex, birth, death, age) in enumerate(
                zip(
                    patients["id"].astype(str),
                    indexes.tolist(),
                    patients["given_name"].astype(str),
                    patients["family_name"].astype(str),
                    patients["sex"].astype(str),
                    minutes(patients["birth_time"]),
                    minutes(patients["death_time"]),
                    _ages(patients, run.reference_time),
                    strict=True,
                )
            )
        ],
    }
    (folder / "data" / "index.js").write_bytes(b"ehrsimData.index(" + orjson.dumps(index_data) + b");\n")
    (folder / "index.html").write_text(PAGE.read_text())


def _diagnosed(run: RunRecord, patients: pd.DataFrame, codes: Codes) -> list[list[int]]:
    """Each patient's diagnosed conditions, as code dictionary indexes, each once: those still active at the
    end of the record first (in the order of their diagnosis), then those resolved."""
    columns = ["patient", "system", "code", "display", "diagnosis_time", "resolution_time"]
    c = run.table("conditions", columns=columns)
    c = c[c["diagnosis_time"].notna()].assign(resolved=lambda f: f["resolution_time"].notna())
    c = c.sort_values(["patient", "resolved", "diagnosis_time"], kind="stable")
    c = c.drop_duplicates(["patient", "code"]).reset_index(drop=True)
    c["dictionary"] = _factorized_codes(c, codes)
    found = c.groupby("patient")["dictionary"].agg(list)
    return [found.get(int(i), []) for i in patients["index"]]


def _classes(encounters: tuple[np.ndarray, list[list]], indexes: np.ndarray) -> list[tuple[int, int]]:
    """Each patient's encounter classes (a bit mask over ENCOUNTER_CLASSES) and number of encounters."""
    patient, rows = encounters
    out = []
    for a, b in _slices(patient, indexes):
        mask = 0
        for row in rows[a:b]:
            mask |= 1 << row[2]
        out.append((mask, b - a))
    return out


def _write_fhir(run: RunRecord, folder: Path, patients: pd.DataFrame, n: int) -> set[int]:
    """data/fhir/<index>.js for the first `n` patients, when the run wrote FHIR ndjson; their indexes."""
    if run.fhir_folder is None or n <= 0:
        return set()
    first = patients.head(n)
    wanted = dict(zip(first["id"].astype(str), first["index"].astype(int), strict=True))
    (folder / "data" / "fhir").mkdir()
    for index, lines in _fhir_lines(run.fhir_folder, wanted).items():
        text = b"ehrsimData.fhir(" + str(index).encode() + b",[" + b",".join(lines) + b"]);\n"
        (folder / "data" / "fhir" / f"{index}.js").write_bytes(text)
    return set(wanted.values())
