"""Provenance of every resource of a patient's record -> US Core Provenance, built last, from the other
resources of the chunk, whatever their types.

Each resource is the target of exactly one Provenance:
- one per encounter, for the resources recorded in it: the Encounter itself and every resource whose
  encounter it is; author its practitioner on behalf of its organization, recorded at its end (its start
  while it is open);
- one per patient, for the rest (the Patient, conditions of the problem list, care plans, goals, care teams,
  ...): author the patient's clinic, recorded at the patient's last recorded time.

A resource's encounter is read from the clinical tables when the resource is a table row's (same patient,
row and id: the Encounter's own row, a Condition's diagnosis encounter, an event's encounter), else from its
text: its first `"encounter"` reference. R4 Provenance has no patient element; R5's, as its cross-version
extension, names the patient before anything else, so every Provenance has the patient's reference first
(which is how the loader and `ids.patient_of` tell whose a resource is).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from simulator.export import us_core
from simulator.export.care_plans import last_recorded
from simulator.export.context import ExportContext
from simulator.export.fhir_text import (
    TERMINOLOGY,
    TEXT,
    References,
    Resources,
    build,
    dumps,
    join,
    meta,
    text_column,
    text_offsets,
)
from simulator.export.ids import fhir_datetime_text, positions, resource_ids, utc_ms

PATIENT_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Provenance.patient"
_AUTHOR = dumps(
    {"coding": [{"system": TERMINOLOGY + "provenance-participant-type", "code": "author", "display": "Author"}]}
)
# the encounter a table's row was recorded in: the encounters' own id, a condition's diagnosis encounter,
# any other table's `encounter_id`
_ENCOUNTER_COLUMN = {"encounters": "id", "conditions": "diagnosis_encounter_id"}
_ENCOUNTER_REFERENCE = r'"encounter":\[?\{"reference":"(?:Encounter/|urn:uuid:)(?P<id>[^"]+)"'
_WINDOW = 100  # bytes from '"encounter":' that hold its reference


def _table_rows(tables: Mapping[str, pd.DataFrame]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key, id, encounter id) of the rows of the clinical tables, sorted by key = patient << 32 | row."""
    keys, ids, encounters = [], [], []
    for name, frame in tables.items():
        column = _ENCOUNTER_COLUMN.get(name, "encounter_id")
        if not {"id", "patient", "row", column} <= set(frame.columns):
            continue
        keys.append((frame["patient"].to_numpy(np.int64) << 32) | frame["row"].to_numpy(np.int64))
        ids.append(frame["id"].to_numpy(dtype=object))
        encounters.append(frame[column].to_numpy(dtype=object))
    key = np.concatenate(keys)
    order = np.argsort(key, kind="stable")
    return key[order], np.concatenate(ids)[order], np.concatenate(encounters)[order]


def _encounters_in_text(text: pa.ChunkedArray) -> np.ndarray:
    """The id of each resource's first encounter reference in its JSON text (None where it names none):
    found by a substring search, read by a regular expression from a short window after it."""
    text = text_column(text)
    if not len(text):
        return np.array([], dtype=object)
    found = pc.find_substring(text, '"encounter":').to_numpy(zero_copy_only=False)
    offsets = text_offsets(text) + np.frombuffer(text.buffers()[1], np.int64)[text.offset]
    start = offsets[:-1] + np.maximum(found, 0)
    bounds = np.column_stack([start, np.minimum(start + _WINDOW, offsets[1:])]).ravel()
    # the windows and the gaps between them as strings over the same bytes (no copy); every other one a window
    spans = pa.LargeStringArray.from_buffers(len(bounds) - 1, pa.py_buffer(bounds), text.buffers()[2])
    windows = spans.take(pa.array(np.arange(0, len(bounds) - 1, 2)))
    ids = pc.extract_regex(windows, _ENCOUNTER_REFERENCE).field("id").to_numpy(zero_copy_only=False)
    return np.where(found >= 0, ids, None).astype(object)


def _encounter_of(resources: Resources, table: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The id of the encounter each resource was recorded in (None outside any): its table row's where it
    is one, else the encounter its text names."""
    key, ids, encounters = table
    out = np.full(len(resources.ids), None, dtype=object)
    own = (resources.patient.astype(np.int64) << 32) | resources.order.astype(np.int64)
    at = np.minimum(np.searchsorted(key, own), max(len(key) - 1, 0))
    matched = np.zeros(len(own), bool)
    if len(key):
        matched = (resources.order >= 0) & (key[at] == own) & (ids[at] == resources.ids)
        out[matched] = encounters[at[matched]]
    start = 0
    for chunk in resources.json.chunks:  # the other rows, a chunk at a time (a chunked take would copy all)
        rest = np.flatnonzero(~matched[start : start + len(chunk)])
        if len(rest) == len(chunk):
            out[start : start + len(chunk)] = _encounters_in_text(chunk)
        elif len(rest):
            out[start + rest] = _encounters_in_text(chunk.take(pa.array(rest)))
        start += len(chunk)
    return out


def provenance_resources(
    patients: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    resources: Mapping[str, Resources],
    context: ExportContext,
    refs: References,
) -> Resources:
    """One Provenance per encounter and one per patient, targeting every resource of `resources`."""
    encounters = tables["encounters"]
    table = _table_rows(tables)
    groups = list(resources.values())
    targets = [refs.to(group.resource_type, group.ids) for group in groups]
    owner_all = positions(
        encounters["id"].to_numpy(dtype=object), np.concatenate([_encounter_of(group, table) for group in groups])
    )
    patient_all = np.concatenate([group.patient.astype(np.int64) for group in groups])
    rank = np.concatenate([np.full(len(group.ids), position) for position, group in enumerate(groups)])
    order = np.concatenate([group.order.astype(np.int64) for group in groups])
    sort = np.lexsort((order, rank, owner_all, patient_all))
    owner_all, patient_all = owner_all[sort], patient_all[sort]
    first = np.flatnonzero(np.diff(np.stack([patient_all, owner_all]), prepend=-2, axis=1).any(axis=0))
    bounds = np.append(first, len(sort))
    text = pa.chunked_array(targets, TEXT).take(pa.array(sort)).combine_chunks()
    lists = pa.ListArray.from_arrays(pa.array(bounds, pa.int32()), text)
    owners = pd.DataFrame({"patient": patient_all[first], "encounter": owner_all[first]})
    return _provenances(owners, pc.binary_join(lists, pa.scalar(",", TEXT)), patients, tables, context, refs)


def _provenances(
    groups: pd.DataFrame,
    targets: pa.Array,
    patients: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    context: ExportContext,
    refs: References,
) -> Resources:
    """The Provenance of each group of `targets` (the references, joined): an encounter's, or the patient's
    where `encounter` is -1."""
    encounters = tables["encounters"]
    owner = groups["encounter"].to_numpy()
    of_patient = owner < 0

    row = np.where(of_patient, -1, np.append(encounters["row"].to_numpy(np.int64), -1)[owner])
    ids = resource_ids(context.seed, groups["patient"].to_numpy(), "Provenance", row + 1)
    groups.insert(0, "id", pd.Series(ids, dtype=object))
    people = patients.set_index("index")
    providers = context.directory.patient_providers(patients).set_index(patients["index"].to_numpy())
    ended = pd.Series(encounters["end_time"]).fillna(encounters["start_time"])
    times = np.append(utc_ms(ended), np.datetime64("NaT", "ms"))[owner]
    times = np.where(of_patient, last_recorded(patients, tables).reindex(groups["patient"]).to_numpy(), times)
    clinic = providers["clinic_id"].reindex(groups["patient"]).to_numpy(dtype=object)
    practitioner = np.append(encounters["practitioner_id"].to_numpy(dtype=object), None)[owner]
    organization = np.append(encounters["organization_id"].to_numpy(dtype=object), None)[owner]
    by_encounter = join(
        f'{{"type":{_AUTHOR},"who":',
        refs.to("Practitioner", practitioner),
        ',"onBehalfOf":',
        refs.to("Organization", organization),
        "}",
        skip_nulls=False,
    )
    by_clinic = join(f'{{"type":{_AUTHOR},"who":', refs.to("Organization", clinic), "}")
    return build(
        "Provenance",
        groups,
        row,
        [
            meta(us_core.PROVENANCE),
            f',"extension":[{{"url":"{PATIENT_EXTENSION}","valueReference":',
            refs.to("Patient", people["id"].reindex(groups["patient"]).to_numpy(dtype=object)),
            '}],"target":[',
            targets,
            '],"recorded":"',
            fhir_datetime_text(pd.to_datetime(times.astype("datetime64[ms]"), utc=True)),
            '","agent":[',
            pc.if_else(pa.array(of_patient), by_clinic, by_encounter),
            "]",
        ],
        refs.line_end,
    )
