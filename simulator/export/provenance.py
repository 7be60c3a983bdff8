"""Provenance of every resource of a patient's record -> US Core Provenance, built last, from the other
resources of the chunk, whatever their types.

Each resource is the target of exactly one Provenance:
- one per encounter, for the resources recorded in it: the Encounter itself and every resource whose
  encounter it is; author its practitioner on behalf of its organization, recorded at its end (its start
  while it is open);
- one per patient, for the rest (the Patient, conditions of the problem list, care plans, goals, care teams,
  ...): author the patient's clinic, recorded at the patient's last recorded time.

A resource's encounter is the one its builder recorded it in (`Resources.encounter`). R4 Provenance has no
patient element; R5's, as its cross-version extension, names the patient before anything else, so every
Provenance has the patient's reference first (which is how the loader and `ids.patient_of` tell whose a
resource is).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from simulator.export import us_core
from simulator.export.clinical_tables import last_recorded
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
)
from simulator.export.ids import fhir_datetime_text, positions, resource_ids, utc_ms

PATIENT_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Provenance.patient"
_AUTHOR = dumps(
    {"coding": [{"system": TERMINOLOGY + "provenance-participant-type", "code": "author", "display": "Author"}]}
)


def provenance_resources(
    patients: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    resources: Mapping[str, Resources],
    context: ExportContext,
    refs: References,
) -> Resources:
    """One Provenance per encounter and one per patient, targeting every resource of `resources`."""
    encounters = tables["encounters"]
    groups = list(resources.values())
    targets = [refs.to(group.resource_type, group.ids) for group in groups]
    owner_all = positions(encounters["id"].to_numpy(dtype=object), np.concatenate([g.encounter for g in groups]))
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
