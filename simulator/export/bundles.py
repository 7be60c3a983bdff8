"""FHIR resources of a chunk -> bundles (JSON text) that a server accepts POSTed one by one, in the order of
their file names: first `00000000-0000-0000-shared.json`, a batch that PUTs the shared resources
(Organization, Location, Practitioner) at their stable ids; then one transaction per patient.

A patient's transaction holds the patient's resources only. Its entries have `urn:uuid:` fullUrls and
point at each other by them, and at the shared resources by literal `Type/id` references, which the
shared bundle has put in place: so no patient transaction carries a conditional create or the same
shared resource as another (servers refuse large transactions with conditional creates, and concurrent
ones that write the same resource). Entries are POST (the server assigns ids), or PUT at their stable ids,
so that reloading a bundle never duplicates anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

import numpy as np
import orjson
import pyarrow as pa

from simulator.export.fhir_resources import RESOURCE_TYPES
from simulator.export.fhir_text import Resources, Runs, join

Method = Literal["POST", "PUT"]

# The shared bundle's name sorts before every patient's (`<uuid>.json`, whose third group starts with the
# version digit, never 0), byte by byte and in locales that ignore the hyphens alike.
SHARED_BUNDLE = "00000000-0000-0000-shared.json"


def shared_bundle(shared: Mapping[str, list[dict]]) -> bytes:
    """The shared resources (with literal references) as a batch of PUTs at their stable ids: a batch,
    not a transaction, so that no limit on a transaction's updates applies, in dependency order."""
    entries = [
        {
            "fullUrl": f"urn:uuid:{resource['id']}",
            "resource": resource,
            "request": {"method": "PUT", "url": f"{resource_type}/{resource['id']}"},
        }
        for resource_type, resources in shared.items()
        for resource in resources
    ]
    return orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries})


def _sorted_entries(
    resources: Mapping[str, Resources], method: Method
) -> tuple[list[pa.Array], np.ndarray, np.ndarray]:
    """Every entry's text followed by a comma, in columns (one per type and builder), the order that puts
    them in patient, resource type and row order, and the patient index of each in that order."""
    entries, patient, rank, order = [], [], [], []
    for position, resource_type in enumerate(RESOURCE_TYPES):
        group = resources[resource_type]
        start = 0
        for text in group.json.chunks:
            ids = group.ids[start : start + len(text)]
            start += len(text)
            if not len(text):
                continue
            if method == "PUT":
                request = join(f'{{"method":"PUT","url":"{resource_type}/', ids, '"}')
            else:
                request = f'{{"method":"POST","url":"{resource_type}"}}'
            entries.append(join('{"fullUrl":"urn:uuid:', ids, '","resource":', text, ',"request":', request, "},"))
        patient.append(group.patient)
        rank.append(np.full(len(group.json), position))
        order.append(group.order)
    patient_all = np.concatenate(patient)
    sort = np.lexsort((np.concatenate(order), np.concatenate(rank), patient_all))
    return entries, sort, patient_all[sort]


def patient_bundles(
    resources: Mapping[str, Resources], method: Method
) -> Iterator[tuple[str, int, tuple[bytes | pa.Buffer, ...]]]:
    """(patient id, number of entries, bundle JSON in pieces: head, the entries, tail) for each patient
    of the chunk, in patient order. The entries are slices of the entries' text (`Runs`: no copy), cut
    where each patient's begin; the last one of a patient without its comma."""
    people = resources["Patient"]
    if not len(people.ids):
        return
    entries, sort, patient = _sorted_entries(resources, method)
    bounds = np.searchsorted(patient, people.patient, side="left")
    runs = Runs(entries, sort, bounds)
    first_run = np.searchsorted(runs.first, bounds).tolist() + [len(runs.first)]
    counts = np.diff(np.append(bounds, len(patient))).tolist()
    head = b'{"resourceType":"Bundle","type":"transaction","entry":['
    for k, patient_id in enumerate(people.ids.tolist()):
        pieces = runs.pieces(slice(first_run[k], first_run[k + 1]), trim_last=1) if counts[k] else []
        yield patient_id, counts[k], (head, *pieces, b"]}")
