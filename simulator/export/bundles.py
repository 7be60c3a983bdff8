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
from simulator.export.fhir_text import TEXT, Resources, join, text_bytes, text_offsets

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


def _sorted_entries(resources: Mapping[str, Resources], method: Method) -> tuple[pa.Array, np.ndarray]:
    """Every entry's text followed by a comma, in patient, resource type and row order, and the
    patient index of each."""
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
    return pa.chunked_array(entries, TEXT).take(pa.array(sort)).combine_chunks(), patient_all[sort]


def patient_bundles(
    resources: Mapping[str, Resources], method: Method
) -> Iterator[tuple[str, int, tuple[bytes, memoryview, bytes]]]:
    """(patient id, number of entries, bundle JSON in three pieces: head, entries, tail) for each
    patient of the chunk, in patient order. Sorted by patient, the entries of a patient are one
    slice of the entries' bytes (a view, not a copy)."""
    ordered, patient = _sorted_entries(resources, method)
    data = memoryview(text_bytes(ordered))
    offsets = text_offsets(ordered)
    people = resources["Patient"]
    bounds = np.searchsorted(patient, people.patient, side="left").tolist() + [len(patient)]
    head = b'{"resourceType":"Bundle","type":"transaction","entry":['
    for k, patient_id in enumerate(people.ids.tolist()):
        start, end = int(offsets[bounds[k]]), int(offsets[bounds[k + 1]]) - 1  # without the last comma
        yield patient_id, bounds[k + 1] - bounds[k], (head, data[start:end], b"]}")
