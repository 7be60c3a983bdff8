"""FHIR resources of a chunk -> one transaction Bundle per patient (JSON text).

Entries have `urn:uuid:` fullUrls, and every reference points to an entry of the same bundle. The
shared Organization, Location and Practitioner travel in every bundle: with POST, as conditional
creates (`ifNoneExist` on their identifier), so loading many bundles creates them once; with PUT,
at their stable ids, like every other entry, so reloading a bundle never duplicates anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

import numpy as np
import orjson
import pyarrow as pa

from simulator.export.fhir_resources import RESOURCE_TYPES, TEXT, Resources, join, text_bytes, text_offsets

Method = Literal["POST", "PUT"]


def _request(method: Method, resource_type: str, resource_id: str, condition: str | None = None) -> dict:
    if method == "PUT":
        return {"method": "PUT", "url": f"{resource_type}/{resource_id}"}
    request = {"method": "POST", "url": resource_type}
    if condition:
        request["ifNoneExist"] = condition
    return request


def shared_entries(shared: Mapping[str, dict], method: Method) -> str:
    """The shared resources' entries, serialised once for every bundle."""
    entries = []
    for resource_type, resource in shared.items():
        identifier = resource["identifier"][0]
        condition = f"identifier={identifier['system']}|{identifier['value']}"
        entries.append(
            {
                "fullUrl": f"urn:uuid:{resource['id']}",
                "resource": resource,
                "request": _request(method, resource_type, resource["id"], condition),
            }
        )
    return orjson.dumps(entries).decode()[1:-1]


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
    resources: Mapping[str, Resources], shared: str, method: Method
) -> Iterator[tuple[str, int, tuple[bytes, memoryview, bytes]]]:
    """(patient id, number of entries, bundle JSON in three pieces: head, entries, tail) for each
    patient of the chunk, in patient order. Sorted by patient, the entries of a patient are one
    slice of the entries' bytes (a view, not a copy)."""
    ordered, patient = _sorted_entries(resources, method)
    data = memoryview(text_bytes(ordered))
    offsets = text_offsets(ordered)
    people = resources["Patient"]
    bounds = np.searchsorted(patient, people.patient, side="left").tolist() + [len(patient)]
    head = ('{"resourceType":"Bundle","type":"transaction","entry":[' + shared + ",").encode()
    n_shared = shared.count('"fullUrl"')
    for k, patient_id in enumerate(people.ids.tolist()):
        start, end = int(offsets[bounds[k]]), int(offsets[bounds[k + 1]]) - 1  # without the last comma
        yield patient_id, bounds[k + 1] - bounds[k] + n_shared, (head, data[start:end], b"]}")
