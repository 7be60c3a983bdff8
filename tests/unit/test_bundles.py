"""simulator/export/bundles.py on a tiny run (six lifetimes of the fixture library): a batch that PUTs the
shared resources at their ids, then one transaction per patient whose entries are addressed by urn:uuid
and point only at each other or at a shared resource, as POST or as PUT at their stable ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest

from simulator.engine.run import RunConfig, Simulator
from simulator.export.bundles import Method, patient_bundles, shared_bundle
from simulator.export.clinical_tables import build_tables
from simulator.export.context import ExportContext
from simulator.export.directory import SHARED_TYPES
from simulator.export.fhir_resources import RESOURCE_TYPES, build_resources
from simulator.export.writers import BUNDLE_REFERENCES
from simulator.model.library import Library
from simulator.tables.chunks import chunk_tables

N = 6


@pytest.fixture(scope="module")
def tiny_run(fixture_library: Library) -> tuple:
    """(patients, events, context) of six lifetimes of the fixture library."""
    sim = Simulator.build(RunConfig(patients=N, seed=2, mode="lifetime"), fixture_library)
    chunk = chunk_tables(sim, 0, N)
    return (
        chunk.patients,
        chunk.events,
        ExportContext.from_library(fixture_library, seed=2, request="test", patients=len(chunk.patients)),
    )


@pytest.fixture(scope="module")
def shared(tiny_run: tuple) -> dict:
    return orjson.loads(shared_bundle(tiny_run[2].directory.resources))


def _bundles(tiny_run: tuple, method: Method) -> list[tuple[str, int, dict]]:
    """(patient id, entry count given, parsed bundle) of each patient, in order."""
    patients, events, context = tiny_run
    resources = build_resources(patients, build_tables(patients, events, context), context, BUNDLE_REFERENCES)
    return [
        (patient_id, n, orjson.loads(b"".join(bytes(piece) for piece in pieces)))
        for patient_id, n, pieces in patient_bundles(resources, method)
    ]


def _references(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        if "reference" in value:
            yield value["reference"]
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _put_at_its_id(entry: dict) -> bool:
    resource = entry["resource"]
    return entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}


def test_the_shared_batch_puts_each_shared_resource_at_its_id(shared: dict) -> None:
    assert (shared["resourceType"], shared["type"]) == ("Bundle", "batch")
    entries = shared["entry"]
    types = [e["resource"]["resourceType"] for e in entries]
    assert sorted(set(types), key=types.index) == list(SHARED_TYPES)  # each type, in the order they load in
    assert types == sorted(types, key=SHARED_TYPES.index)
    for entry in entries:
        assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}" and _put_at_its_id(entry)
    urls = {entry["request"]["url"] for entry in entries}
    assert set(_references(entries)) <= urls  # literal, to entries of the batch


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_one_transaction_per_patient_pointing_only_inside_or_at_shared(
    tiny_run: tuple, shared: dict, method: Method
) -> None:
    bundles = _bundles(tiny_run, method)
    assert [patient_id for patient_id, _, _ in bundles] == tiny_run[0]["id"].tolist()
    shared_urls = {entry["request"]["url"] for entry in shared["entry"]}
    n_inside = n_shared = 0
    for patient_id, n_entries, bundle in bundles:
        assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "transaction")
        entries = bundle["entry"]
        assert len(entries) == n_entries
        full_urls = [entry["fullUrl"] for entry in entries]
        assert len(set(full_urls)) == len(full_urls)
        for entry in entries:
            resource_id = entry["resource"]["id"]
            assert entry["fullUrl"] == f"urn:uuid:{resource_id}" and str(uuid.UUID(resource_id)) == resource_id
        references = list(_references(entries))
        assert set(references) <= set(full_urls) | shared_urls  # nothing dangles
        n_inside += sum(r in full_urls for r in references)
        n_shared += sum(r in shared_urls for r in references)
        types = [entry["resource"]["resourceType"] for entry in entries]
        assert types[0] == "Patient" and full_urls[0] == f"urn:uuid:{patient_id}"
        rank = [RESOURCE_TYPES.index(t) for t in types]  # the shared types are not among them
        assert rank == sorted(rank)  # the patient's resources, type by type
    assert n_inside > 100 and n_shared > 10


def test_post_lets_the_server_assign_ids_and_put_keeps_the_same_resources_at_theirs(tiny_run: tuple) -> None:
    post, put = _bundles(tiny_run, "POST"), _bundles(tiny_run, "PUT")
    for (_, _, posted), (_, _, put_bundle) in zip(post, put, strict=True):
        for entry in posted["entry"]:
            assert entry["request"] == {"method": "POST", "url": entry["resource"]["resourceType"]}
        assert all(_put_at_its_id(entry) for entry in put_bundle["entry"])
        assert [e["resource"] for e in put_bundle["entry"]] == [e["resource"] for e in posted["entry"]]


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_each_bundle_is_the_patients_resources_in_type_then_row_order_byte_for_byte(
    tiny_run: tuple, method: Method
) -> None:
    """The bundles taken as slices of the builders' text are, byte for byte, the entries made one by one."""
    patients, events, context = tiny_run
    resources = build_resources(patients, build_tables(patients, events, context), context, BUNDLE_REFERENCES)
    entries: dict[int, list[tuple[int, int, int, str]]] = {}  # rank, order, position (ties: as built), entry
    for rank, resource_type in enumerate(RESOURCE_TYPES):
        group = resources[resource_type]
        texts = [text for chunk in group.json.chunks for text in chunk.to_pylist()]
        for resource_id, patient, order, text in zip(group.ids, group.patient, group.order, texts, strict=True):
            url = f"{resource_type}/{resource_id}" if method == "PUT" else resource_type
            request = f'{{"method":"{method}","url":"{url}"}}'
            entry = f'{{"fullUrl":"urn:uuid:{resource_id}","resource":{text},"request":{request}}}'
            rows = entries.setdefault(int(patient), [])
            rows.append((rank, int(order), len(rows), entry))
    written = list(patient_bundles(resources, method))
    assert [patient_id for patient_id, _, _ in written] == resources["Patient"].ids.tolist()
    for patient, (_, n, pieces) in zip(resources["Patient"].patient.tolist(), written, strict=True):
        mine = sorted(entries[patient])
        expected = '{"resourceType":"Bundle","type":"transaction","entry":[' + ",".join(e for *_, e in mine) + "]}"
        assert n == len(mine) and b"".join(bytes(piece) for piece in pieces) == expected.encode()
