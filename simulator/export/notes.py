"""Clinical notes -> US Core DocumentReference (category clinical-note), a short plain-text note per encounter
of the kinds that get one (rules/care_plans.yaml): every emergency visit and hospital stay segment (inpatient,
ICU), and every wellness visit from the adult age on (well-child visits get none: they are one and a half
times as many as all the other notes together).

A note is put together from the record of its encounter, in plain sentences: the reason for the visit (the
encounter's reason, else its type), the findings (vital signs and other measurements, reported symptoms), the
results (labs, those at or above their upper limit of normal marked high) and the plan (medications started,
procedures, immunizations). Its type is the LOINC document type of the encounter's class (a stay not yet ended
at the end of the record gets the admission's note type), its author the encounter's practitioner, its
custodian the encounter's organization, its date the encounter's end (or start while open).

Everything is built a column at a time: each kind of item becomes a phrase per row (Arrow string joins), the
phrases are joined per note (Arrow list joins), and all notes are base64-encoded in one pass.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from simulator.days import DAYS_PER_YEAR
from simulator.export import us_core
from simulator.export.context import ExportContext
from simulator.export.fhir_text import (
    ID_SYSTEM,
    LOINC,
    TEXT,
    References,
    Resources,
    build,
    dumps,
    join,
    meta,
    nonempty,
    take,
    text_bytes,
    text_offsets,
)
from simulator.export.ids import fhir_dates, fhir_datetime_text, positions, resource_ids, utc_ms
from simulator.export.readable import UNIT_TEXT, without_semantic_tag
from simulator.model.care_plans import CarePlans
from simulator.model.reference_data import ObservationReference

CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
CONTENT_TYPE = "text/plain; charset=utf-8"
# IHE format code of a document whose MIME type says all a reader needs (the code US Core's examples use)
FORMAT = (
    '{"system":"http://ihe.net/fhir/ValueSet/IHE.FormatCode.codesystem",'
    '"code":"urn:ihe:iti:xds:2017:mimeTypeSufficient","display":"mimeType Sufficient"}'
)
_ACUTE = ("emergency", "inpatient", "icu")
_STAYS = ("inpatient", "icu")


def _plain(column: pd.Series) -> pa.Array:
    """Each row's display without its semantic tag, one string per distinct display."""
    category = pd.Categorical(column)
    return take([without_semantic_tag(str(c)) for c in category.categories], category.codes)


def _unit_text(units: pd.Series) -> pa.Array:
    """' unit' as a note prints it (UCUM's print symbol where it differs from the code: mmHg, °C), one
    string per distinct unit; nothing for a unitless score."""
    category = pd.Categorical(units)
    printed = [UNIT_TEXT.get(str(u), str(u)) for u in category.categories]
    return take([f" {u}" if u else "" for u in printed], category.codes)


def _values(values: np.ndarray) -> pa.Array:
    """Numbers as a note writes them: shortest round-trip decimals, without a trailing '.0' ('not recorded'
    for a value a messy record left out)."""
    unique, inverse = np.unique(values, return_inverse=True)
    texts = [(text[:-2] if text.endswith(".0") else text) for text in map(repr, unique.tolist())]
    texts = ["not recorded" if text == "nan" else text for text in texts]
    return take(texts, inverse)


def _per_note(n_notes: int, note: np.ndarray, phrases: pa.Array, separator: str) -> pa.Array:
    """The phrases of each note joined by `separator`, in their order (null for a note with none)."""
    keep = note >= 0
    note, phrases = note[keep], phrases.filter(pa.array(keep))
    order = np.argsort(note, kind="stable")
    counts = np.bincount(note, minlength=n_notes)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]), pa.int32())
    lists = pa.ListArray.from_arrays(offsets, phrases.take(pa.array(order)))
    return nonempty(pc.binary_join(lists, pa.scalar(separator, TEXT)))


def note_rows(patients: pd.DataFrame, encounters: pd.DataFrame, rules: CarePlans, seed: int) -> pd.DataFrame:
    """The encounters that get a note, with the note's id, its kind (a key of the rules' note types) and the
    note's title (the type's display)."""
    klass = encounters["encounter_class"].astype(object).to_numpy()
    birth = utc_ms(patients.set_index("index")["birth_time"].reindex(encounters["patient"]))
    age_years = (utc_ms(encounters["start_time"]) - birth).astype(np.float64) / (DAYS_PER_YEAR * 86_400_000)
    chosen = np.isin(klass, _ACUTE) | ((klass == "wellness") & (age_years >= rules.adult_age))
    notes = encounters[chosen].reset_index(drop=True)
    kind = klass[chosen]
    kind = np.where(np.isin(kind, _STAYS) & notes["end_time"].isna().to_numpy(), "open_stay", kind)
    notes["kind"] = pd.Categorical(kind, categories=list(rules.note_types))
    notes["title"] = notes["kind"].map({k: t.display for k, t in rules.note_types.items()}).astype(object)
    ids = resource_ids(seed, notes["patient"].to_numpy(), "DocumentReference", notes["encounter"].to_numpy())
    notes["note_id"] = pd.Series(ids, dtype=object)
    return notes


def note_texts(notes: pd.DataFrame, tables: Mapping[str, pd.DataFrame], reference: ObservationReference) -> pa.Array:
    """The text of each note (one row per note)."""
    n = len(notes)
    encounter_ids = notes["id"].to_numpy(dtype=object)

    def note_of(frame: pd.DataFrame) -> np.ndarray:
        return positions(encounter_ids, frame["encounter_id"].to_numpy(dtype=object))

    observations = tables["observations"]
    where = note_of(observations)
    rows = np.flatnonzero(where >= 0)
    where, observations = where[rows], observations.iloc[rows]
    values = observations["value"].to_numpy()
    is_lab = (observations["category"] == "laboratory").to_numpy()
    measured = join(_plain(observations["display"]), " ", _values(values), _unit_text(observations["unit"]))
    code = observations["code"].astype("category")
    limits = pd.Series({c: u.limit for c, u in reference.upper_limits.items()}, dtype=np.float64)
    upper = limits.reindex(code.cat.categories.astype(str)).to_numpy()[code.cat.codes.to_numpy()]
    high = is_lab & (values >= upper)  # NaN (no limit) compares False
    flagged = join(measured, take(["", " (high)"], high.astype(np.int64)))
    findings = _per_note(n, np.where(is_lab, -1, where), measured, "; ")
    results = _per_note(n, np.where(is_lab, where, -1), flagged, "; ")
    symptoms = tables["symptoms"]
    symptom = join(_plain(symptoms["display"]), " (severity ", _values(symptoms["severity"].round(1).to_numpy()), ")")
    reported = _per_note(n, note_of(symptoms), symptom, ", ")
    plan = join(  # each part ends with '; ', trimmed from the last (a row with no part is null)
        *(
            join(
                prefix,
                _per_note(n, note_of(tables[name]), _plain(tables[name]["display"]), ", "),
                "; ",
                skip_nulls=False,
            )
            for prefix, name in (
                ("started ", "medications"),
                ("procedures: ", "procedures"),
                ("immunizations: ", "immunizations"),
            )
        )
    )
    reason = notes["reason_display"].where(notes["reason_display"].notna(), notes["display"].astype(object))
    return join(
        notes["title"].to_numpy(dtype=object),
        ", ",
        fhir_dates(notes["start_time"]).astype(object),
        ". Reason for visit: ",
        _plain(reason.astype(object)),
        ".",
        join(" Findings: ", findings, ".", skip_nulls=False),
        join(" Reported symptoms: ", reported, ".", skip_nulls=False),
        join(" Results: ", results, ".", skip_nulls=False),
        join(" Plan: ", nonempty(pc.utf8_rtrim(plan, characters="; ")), ".", skip_nulls=False),
        "\n",
    )


def base64_rows(text: pa.Array) -> pa.Array:
    """Each row's UTF-8 bytes in base64, all rows in one pass: each row is padded with NUL bytes to a multiple
    of three bytes (so the rows' encodings follow each other), all are encoded at once, and the characters
    that encode the padding are set to '='."""
    missing = -np.diff(text_offsets(text)) % 3  # 0, 1 or 2 padding bytes per row
    padded = join(text, take(["", "\0", "\0\0"], missing))
    encoded = np.frombuffer(binascii.b2a_base64(text_bytes(padded), newline=False), np.uint8).copy()
    offsets = text_offsets(padded) // 3 * 4
    for k in (1, 2):
        encoded[offsets[1:][missing >= k] - k] = ord("=")
    return pa.LargeStringArray.from_buffers(len(text), pa.py_buffer(offsets), pa.py_buffer(encoded))


def document_resources(
    patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame], context: ExportContext, refs: References
) -> Resources:
    """One DocumentReference per encounter that gets a note, the note inline as base64 plain text."""
    notes = note_rows(patients, tables["encounters"], context.library.care_plans, context.seed)
    data = base64_rows(note_texts(notes, tables, context.observation_reference))
    start = fhir_datetime_text(notes["start_time"])
    end = fhir_datetime_text(notes["end_time"])
    date = pc.coalesce(end, start)
    category = dumps([{"coding": [{"system": CATEGORY, "code": "clinical-note", "display": "Clinical Note"}]}])
    types = [
        dumps({"coding": [{"system": LOINC, "code": t.code, "display": t.display}], "text": t.display})
        for t in context.library.care_plans.note_types.values()
    ]
    frame = pd.DataFrame({"id": notes["note_id"], "patient": notes["patient"]})
    return build(
        "DocumentReference",
        frame,
        notes["row"].to_numpy(),
        [
            meta(us_core.DOCUMENT_REFERENCE),
            f',"identifier":[{{"system":"{ID_SYSTEM}document","value":"',
            notes["note_id"].to_numpy(dtype=object),
            '"}],"status":"current","type":',
            take(types, notes["kind"].cat.codes.to_numpy()),
            f',"category":{category},"subject":',
            refs.to("Patient", notes["patient_id"].to_numpy(dtype=object)),
            ',"date":"',
            date,
            '","author":[',
            refs.to("Practitioner", notes["practitioner_id"].to_numpy(dtype=object)),
            '],"custodian":',
            refs.to("Organization", notes["organization_id"].to_numpy(dtype=object)),
            ',"context":{"encounter":[',
            refs.to("Encounter", notes["id"].to_numpy(dtype=object)),
            '],"period":{"start":"',
            start,
            '"',
            join(',"end":"', end, '"', skip_nulls=False),
            f'}}}},"content":[{{"attachment":{{"contentType":"{CONTENT_TYPE}","data":"',
            data,
            f'"}},"format":{FORMAT}}}]',
        ],
        refs.line_end,
        encounter=notes["id"],
    )
