"""FHIR JSON text built a column at a time: the pieces every resource builder joins.

Every coded concept, category, unit and number is serialised once (orjson, repr) and taken by its row's
code; the pieces of a resource are Arrow string columns joined element-wise by Arrow (ids, times and
numbers need no escaping), so no Python code runs per row. The JSON text of each resource is one line,
ready for ndjson or for a bundle entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from simulator.export.ids import fhir_datetime_text
from simulator.model.reference_data import ObservationReference

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CDCREC = "urn:oid:2.16.840.1.113883.6.238"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
ID_SYSTEM = "https://ehrsim.example.org/"


TEXT = pa.large_string()  # 64-bit offsets: a chunk's Observation text can pass 2 GB
Piece = np.ndarray | pa.Array | str


def text_column(values: np.ndarray | pa.Array | pd.Series) -> pa.Array:
    """A column of strings as an Arrow large string array (None and NaN become null)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if values.type == TEXT else values.cast(TEXT)
    return pa.array(np.asarray(values, dtype=object), TEXT, from_pandas=True)


def join(*pieces: Piece, skip_nulls: bool = True) -> pa.Array:
    """Element-wise concatenation of string columns and constants. A null piece counts as empty
    (`skip_nulls`) or makes the whole row null (to build optional pieces)."""
    args = [pa.scalar(p, TEXT) if isinstance(p, str) else text_column(p) for p in pieces]
    if skip_nulls:
        return pc.binary_join_element_wise(*args, pa.scalar("", TEXT), null_handling="replace", null_replacement="")
    return pc.binary_join_element_wise(*args, pa.scalar("", TEXT))


def text_offsets(text: pa.Array) -> np.ndarray:
    """Where each row of a large string column starts in its bytes (and where the last ends)."""
    offsets = np.frombuffer(text.buffers()[1], np.int64)[text.offset : text.offset + len(text) + 1]
    return offsets - offsets[0]


def text_bytes(text: pa.Array) -> pa.Buffer:
    """The bytes of a large string column without nulls, all rows one after the other (no copy)."""
    start = int(np.frombuffer(text.buffers()[1], np.int64)[text.offset])
    return text.buffers()[2].slice(start, int(text_offsets(text)[-1]))


def nonempty(values: np.ndarray | pa.Array) -> pa.Array:
    """Empty strings as nulls: '' and missing both mean 'no value'."""
    text = text_column(values)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, TEXT), text)


def take(texts: list[str], codes: np.ndarray) -> pa.Array:
    """texts[code] for each row: each distinct piece is serialised once, rows take it by code."""
    return pa.array(texts, TEXT).take(pa.array(np.asarray(codes, np.int64)))


@dataclass(frozen=True)
class References:
    """How resources point at each other: `Type/id` (ndjson) or `urn:uuid:id` (bundles), except the
    `literal` types, always `Type/id` (the shared resources, which bundles leave to a bundle of their own);
    and what ends each resource's text (ndjson: a newline, so a type's text is its file's bytes)."""

    urn: bool
    line_end: str = ""
    literal: frozenset[str] = frozenset()

    def to(self, resource_type: str, ids: np.ndarray | pa.Array) -> pa.Array:
        """'{"reference":...}' JSON for each id (null where the id is missing)."""
        is_urn = self.urn and resource_type not in self.literal
        prefix = '{"reference":"urn:uuid:' if is_urn else f'{{"reference":"{resource_type}/'
        return join(prefix, nonempty(ids), '"}', skip_nulls=False)

    def one(self, resource_type: str, resource_id: str) -> str:
        return self.to(resource_type, np.array([resource_id], dtype=object))[0].as_py()


@dataclass
class Resources:
    """Resources of one type: the patient index and ordering key of each, and its JSON text. The
    rows come in one piece per builder, each in patient then row order; `sorted_json` puts them
    together in that order (bundles sort all types at once, so they need not)."""

    resource_type: str
    ids: np.ndarray  # str
    patient: np.ndarray  # int64
    order: np.ndarray  # int64: the event row within the patient, for a stable order
    json: pa.ChunkedArray  # large string, one resource per row (ended by `References.line_end`)
    encounter: np.ndarray  # object: the id of the encounter each resource was recorded in (None outside one)

    def sorted_json(self) -> pa.Array:
        """The text of every resource, in patient then row order."""
        if self.json.num_chunks == 1:
            return self.json.chunk(0)
        return self.json.take(pa.array(np.lexsort((self.order, self.patient)))).combine_chunks()

    def sorted_bytes(self) -> list[pa.Buffer]:
        """The bytes of `sorted_json` without copying the text (`Runs`)."""
        chunks = [chunk for chunk in self.json.chunks if len(chunk)]
        if len(chunks) <= 1:
            return [text_bytes(chunk) for chunk in chunks]
        return Runs(chunks, np.lexsort((self.order, self.patient))).pieces()


class Runs:
    """Rows of several text columns taken in the order `rows` (positions in the columns one after the
    other), as slices of the columns' bytes instead of a copy: each slice a run of rows that follow each
    other in one column (builders make their rows in patient then row order, so the runs are few, about
    one per column and patient). `cuts`: positions in `rows` where a run starts whatever the rows."""

    def __init__(self, chunks: list[pa.Array], rows: np.ndarray, cuts: np.ndarray | None = None):
        chunk_of = np.repeat(np.arange(len(chunks)), [len(chunk) for chunk in chunks])[rows]
        offsets = [text_offsets(chunk) for chunk in chunks]
        starts = np.concatenate([o[:-1] for o in offsets])[rows]
        ends = np.concatenate([o[1:] for o in offsets])[rows]
        is_first = np.ones(len(rows), bool)
        is_first[1:] = (np.diff(rows) != 1) | (np.diff(chunk_of) != 0)
        if cuts is not None:
            is_first[cuts[cuts < len(rows)]] = True
        self.first = np.flatnonzero(is_first)  # the position in `rows` where each run starts
        last = np.append(self.first[1:], len(rows)) - 1
        self.chunk, self.start, self.end = chunk_of[self.first], starts[self.first], ends[last]
        self.data = [text_bytes(chunk) for chunk in chunks]

    def pieces(self, runs: slice = slice(None), trim_last: int = 0) -> list[pa.Buffer]:
        """The bytes of `runs` (all by default), one slice each; the last one `trim_last` bytes shorter."""
        ends = self.end[runs].tolist()
        if ends and trim_last:
            ends[-1] -= trim_last
        spans = zip(self.chunk[runs].tolist(), self.start[runs].tolist(), ends, strict=True)
        return [self.data[k].slice(start, end - start) for k, start, end in spans]


def meta(profile: str) -> str:
    """',"meta":{"profile":[...]}' declaring a US Core profile by its name (e.g. 'us-core-patient'); it goes
    right after the id."""
    return f',"meta":{dumps(meta_object(profile))}'


def meta_object(profile: str) -> dict:
    """The `meta` of a resource built as a dict (see `meta`)."""
    return {"profile": [US_CORE + profile]}


def dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def field(name: str, values: np.ndarray | pa.Array) -> pa.Array:
    """',"name":value' for each non-empty JSON value, null otherwise."""
    return join(f',"{name}":', nonempty(values), skip_nulls=False)


def time_field(name: str, times: pd.Series) -> pa.Array:
    return join(f',"{name}":"', fhir_datetime_text(times), '"', skip_nulls=False)


def concepts(frame: pd.DataFrame, columns: tuple[str, str, str] = ("system", "code", "display")) -> pa.Array:
    """CodeableConcept JSON for each row's (system, code, display), serialised once per concept
    (rows are told apart by their categorical codes, never compared as strings)."""
    parts = [pd.Categorical(frame[c]) for c in columns]
    key = np.zeros(len(frame), np.int64)
    for part in parts:
        key = key * (len(part.categories) + 1) + part.codes
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    texts = []
    for row in first.tolist():
        system, code, display = (str(part[row]) for part in parts)
        texts.append(dumps({"coding": [{"system": system, "code": code, "display": display}], "text": display}))
    return take(texts, inverse)


def numbers(values: np.ndarray) -> pa.Array:
    """Shortest round-trip decimal text of each float (JSON numbers), one repr per distinct value
    (told apart by their bits, so -0.0 stays '-0.0')."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    unique, inverse = np.unique(bits, return_inverse=True)
    return take([repr(v) for v in unique.view(np.float64).tolist()], inverse)


def quantities(values: np.ndarray, units: pd.Series | str, reference: ObservationReference) -> pa.Array:
    """valueQuantity JSON: the value with its UCUM unit (unit text only when not UCUM)."""
    unit = pd.Categorical(units if not isinstance(units, str) else np.full(len(values), units, dtype=object))
    tails = []
    for name in unit.categories.astype(str).tolist():
        code = reference.ucum(name)
        tails.append(
            f',"unit":{dumps(code)},"system":"{UCUM}","code":{dumps(code)}}}' if code else f',"unit":{dumps(name)}}}'
        )
    return join('{"value":', numbers(values), take(tails, unit.codes))


def build(
    resource_type: str,
    frame: pd.DataFrame,
    order: np.ndarray,
    parts: list[Piece],
    line_end: str,
    encounter: np.ndarray | pd.Series | None = None,
) -> Resources:
    """Join the parts (columns of JSON pieces, or constant strings) into one JSON text per row; `encounter`:
    the encounter each row's resource was recorded in, where its text names one."""
    ids = frame["id"].to_numpy(dtype=object)
    head = f'{{"resourceType":"{resource_type}","id":"'
    text = join(head, ids, *merge_constants(['"', *parts, "}" + line_end])) if len(frame) else pa.array([], TEXT)
    patient = frame["patient"].to_numpy(np.int64)
    recorded_in = no_encounter(len(frame)) if encounter is None else np.asarray(encounter, dtype=object)
    chunked = pa.chunked_array([text], TEXT)
    return Resources(resource_type, ids, patient, np.asarray(order, np.int64), chunked, recorded_in)


def no_encounter(n: int) -> np.ndarray:
    """The `Resources.encounter` of resources recorded in no encounter."""
    return np.full(n, None, dtype=object)


def merge_constants(parts: list[Piece]) -> list[Piece]:
    """Adjacent constant strings joined into one, so each row joins fewer pieces."""
    merged: list[Piece] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return merged


def list_field(name: str, items: np.ndarray | pa.Array) -> pa.Array:
    """',"name":[item]' where the item is not empty, null otherwise."""
    return join(f',"{name}":[', nonempty(items), "]", skip_nulls=False)


def coding(system: str, code: str, display: str) -> str:
    return dumps({"coding": [{"system": system, "code": code, "display": display}]})


def concat(resource_type: str, parts: list[Resources]) -> Resources:
    """Resources of one type from several builders (one piece each, sorted only when written)."""
    ids = np.concatenate([p.ids for p in parts])
    patient = np.concatenate([p.patient for p in parts])
    order = np.concatenate([p.order for p in parts])
    text = pa.chunked_array([chunk for p in parts for chunk in p.json.chunks], TEXT)
    return Resources(resource_type, ids, patient, order, text, np.concatenate([p.encounter for p in parts]))
