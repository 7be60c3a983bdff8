"""Per-type clinical tables -> FHIR R4 (4.0.1) resources as JSON text, US Core shaped.

Resources are built a column at a time: every coded concept, category, unit and number is
serialised once (orjson, repr) and taken by its row's code; the pieces of a resource are Arrow
string columns joined element-wise by Arrow (ids, times and numbers need no escaping), so no
Python code runs per row. The JSON text of each resource is one line, ready for ndjson or for a
bundle entry. References are literal `Type/id` (ndjson) or `urn:uuid:id` (bundles). UCUM units and
lab reference ranges come from rules/observation_reference.yaml, through the `ExportContext`.

What becomes what:
- Patient: one per patient (US Core race, ethnicity and birth sex extensions, deceasedDateTime).
- Encounter: one per encounter (class from v3 ActCode, reason, discharge disposition of stays).
- Condition: one per diagnosed episode (onset, recordedDate = diagnosis, abatement). Episodes never
  diagnosed are in the conditions table only: the record does not know about them.
- Observation: one per observation event, except that a systolic and a diastolic blood pressure
  taken at the same time in the same encounter become one blood-pressure panel (85354-9); one per
  symptom (SNOMED CT finding, severity score); one cause of death per death (69453-9).
- DiagnosticReport: one per encounter and time with laboratory results, pointing to them.
- MedicationRequest: one per medication course; Procedure, Immunization: one per event.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from simulator.export.context import ExportContext
from simulator.export.ids import fhir_dates, fhir_datetime_text, fhir_datetimes, resource_ids, utc_ms
from simulator.model.reference_data import ObservationReference

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CDCREC = "urn:oid:2.16.840.1.113883.6.238"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
ID_SYSTEM = "https://ehrsim.example.org/"

# Resource types in the order a bundle lists them (what is referenced comes first).
RESOURCE_TYPES = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "DiagnosticReport",
    "MedicationRequest",
    "Procedure",
    "Immunization",
)
SHARED_TYPES = ("Organization", "Location", "Practitioner")

# v3 ActCode encounter class for each engine encounter class.
ENCOUNTER_CLASS = {
    "wellness": ("AMB", "ambulatory"),
    "ambulatory": ("AMB", "ambulatory"),
    "emergency": ("EMER", "emergency"),
    "inpatient": ("IMP", "inpatient encounter"),
    "icu": ("ACUTE", "inpatient acute"),
}
OBSERVATION_CATEGORY = {
    "vital-signs": "Vital Signs",
    "laboratory": "Laboratory",
    "survey": "Survey",
    "social-history": "Social History",
    "exam": "Exam",
}
SYSTOLIC, DIASTOLIC, BP_PANEL = "8480-6", "8462-4", "85354-9"

_NS = uuid.UUID("6f1d5a4e-8c0b-4c55-9b0e-6a3f0e1c7d21")  # ehrsim's namespace for shared resources


def _shared_id(name: str) -> str:
    return str(uuid.uuid5(_NS, name))


ORGANIZATION_ID = _shared_id("organization")
LOCATION_ID = _shared_id("location")
PRACTITIONER_ID = _shared_id("practitioner")
_ADDRESS = {"line": ["1 Example Street"], "city": "Springfield", "state": "IL", "postalCode": "62701", "country": "US"}


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


def _nonempty(values: np.ndarray | pa.Array) -> pa.Array:
    """Empty strings as nulls: '' and missing both mean 'no value'."""
    text = text_column(values)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, TEXT), text)


def _take(texts: list[str], codes: np.ndarray) -> pa.Array:
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
        return join(prefix, _nonempty(ids), '"}', skip_nulls=False)

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

    def sorted_json(self) -> pa.Array:
        """The text of every resource, in patient then row order."""
        if self.json.num_chunks == 1:
            return self.json.chunk(0)
        return self.json.take(pa.array(np.lexsort((self.order, self.patient)))).combine_chunks()


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _field(name: str, values: np.ndarray | pa.Array) -> pa.Array:
    """',"name":value' for each non-empty JSON value, null otherwise."""
    return join(f',"{name}":', _nonempty(values), skip_nulls=False)


def _time_field(name: str, times: pd.Series) -> pa.Array:
    return join(f',"{name}":"', fhir_datetime_text(times), '"', skip_nulls=False)


def _concepts(frame: pd.DataFrame, columns: tuple[str, str, str] = ("system", "code", "display")) -> pa.Array:
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
        texts.append(_dumps({"coding": [{"system": system, "code": code, "display": display}], "text": display}))
    return _take(texts, inverse)


def _numbers(values: np.ndarray) -> pa.Array:
    """Shortest round-trip decimal text of each float (JSON numbers), one repr per distinct value
    (told apart by their bits, so -0.0 stays '-0.0')."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    unique, inverse = np.unique(bits, return_inverse=True)
    return _take([repr(v) for v in unique.view(np.float64).tolist()], inverse)


def _quantities(values: np.ndarray, units: pd.Series | str, reference: ObservationReference) -> pa.Array:
    """valueQuantity JSON: the value with its UCUM unit (unit text only when not UCUM)."""
    unit = pd.Categorical(units if not isinstance(units, str) else np.full(len(values), units, dtype=object))
    tails = []
    for name in unit.categories.astype(str).tolist():
        code = reference.ucum(name)
        tails.append(
            f',"unit":{_dumps(code)},"system":"{UCUM}","code":{_dumps(code)}}}' if code else f',"unit":{_dumps(name)}}}'
        )
    return join('{"value":', _numbers(values), _take(tails, unit.codes))


def _build(
    resource_type: str,
    frame: pd.DataFrame,
    order: np.ndarray,
    parts: list[Piece],
    line_end: str,
) -> Resources:
    """Join the parts (columns of JSON pieces, or constant strings) into one JSON text per row."""
    ids = frame["id"].to_numpy(dtype=object)
    head = f'{{"resourceType":"{resource_type}","id":"'
    text = join(head, ids, *_merge_constants(['"', *parts, "}" + line_end])) if len(frame) else pa.array([], TEXT)
    patient = frame["patient"].to_numpy(np.int64)
    return Resources(resource_type, ids, patient, np.asarray(order, np.int64), pa.chunked_array([text], TEXT))


def _merge_constants(parts: list[Piece]) -> list[Piece]:
    """Adjacent constant strings joined into one, so each row joins fewer pieces."""
    merged: list[Piece] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return merged


# --- patients --------------------------------------------------------------------------------------


def patients_resources(patients: pd.DataFrame, displays: Mapping[str, str], refs: References) -> Resources:
    """Patient resources (one orjson dump per patient: they are few next to the events)."""
    organization = orjson.loads(refs.one("Organization", ORGANIZATION_ID))
    omb_races = {"1002-5", "2028-9", "2054-5", "2076-8", "2106-3"}
    birth = fhir_dates(patients["birth_time"])
    death = fhir_datetimes(patients["death_time"])
    texts = []
    rows = zip(
        patients["id"].tolist(),
        patients["index"].tolist(),
        patients["sex"].astype(str).tolist(),
        patients["race_code"].astype(str).tolist(),
        patients["ethnicity_code"].astype(str).tolist(),
        patients["given_name"].tolist(),
        patients["family_name"].tolist(),
        patients["address"].tolist(),
        patients["city"].tolist(),
        patients["state"].tolist(),
        patients["zip"].tolist(),
        birth.tolist(),
        death.tolist(),
        strict=True,
    )
    for pid, index, sex, race, ethnicity, given, family, line, city, state, zip_code, born, died in rows:
        race_ext = [{"url": "ombCategory", "valueCoding": {"system": CDCREC, "code": race, "display": displays[race]}}]
        resource = {
            "resourceType": "Patient",
            "id": pid,
            "extension": [
                {
                    "url": US_CORE + "us-core-race",
                    "extension": [
                        *(race_ext if race in omb_races else []),
                        {"url": "text", "valueString": displays[race]},
                    ],
                },
                {
                    "url": US_CORE + "us-core-ethnicity",
                    "extension": [
                        {
                            "url": "ombCategory",
                            "valueCoding": {"system": CDCREC, "code": ethnicity, "display": displays[ethnicity]},
                        },
                        {"url": "text", "valueString": displays[ethnicity]},
                    ],
                },
                {"url": US_CORE + "us-core-birthsex", "valueCode": sex},
            ],
            "identifier": [
                {
                    "use": "usual",
                    "type": {
                        "coding": [
                            {"system": TERMINOLOGY + "v2-0203", "code": "MR", "display": "Medical record number"}
                        ],
                        "text": "Medical record number",
                    },
                    "system": ID_SYSTEM + "patient",
                    "value": pid,
                }
            ],
            "name": [{"use": "official", "family": family, "given": [given]}],
            # 555-0100 to 555-0199 are the numbers reserved for fiction
            "telecom": [{"system": "phone", "value": f"555-01{index % 100:02d}", "use": "home"}],
            "gender": "male" if sex == "M" else "female",
            "birthDate": born,
            **({"deceasedDateTime": died} if died else {}),
            "address": [
                {"use": "home", "line": [line], "city": city, "state": state, "postalCode": zip_code, "country": "US"}
            ],
            "managingOrganization": organization,
        }
        texts.append(_dumps(resource) + refs.line_end)
    ids = patients["id"].to_numpy(dtype=object)
    order = np.full(len(patients), -1, np.int64)
    text = pa.chunked_array([pa.array(texts, TEXT)], TEXT)
    return Resources("Patient", ids, patients["index"].to_numpy(np.int64), order, text)


# --- clinical resources ----------------------------------------------------------------------------


def _list_field(name: str, items: np.ndarray | pa.Array) -> pa.Array:
    """',"name":[item]' where the item is not empty, null otherwise."""
    return join(f',"{name}":[', _nonempty(items), "]", skip_nulls=False)


def _coding(system: str, code: str, display: str) -> str:
    return _dumps({"coding": [{"system": system, "code": code, "display": display}]})


_PRACTITIONER_PERFORMER = '[{"actor":%s}]'


def encounter_resources(encounters: pd.DataFrame, deaths: pd.DataFrame, refs: References) -> Resources:
    klass = encounters["encounter_class"].astype(str)
    class_json = {
        name: _dumps({"system": TERMINOLOGY + "v3-ActCode", "code": code, "display": display})
        for name, (code, display) in ENCOUNTER_CLASS.items()
    }
    ended = encounters["end_time"].notna().to_numpy()
    end = join(',"end":"', fhir_datetime_text(encounters["end_time"]), '"', skip_nulls=False)
    period = join('{"start":"', fhir_datetime_text(encounters["start_time"]), '"', end, "}")
    has_reason = encounters["reason_code"].notna().to_numpy()
    reason = np.full(len(encounters), "", dtype=object)
    if has_reason.any():
        concepts = _concepts(encounters.loc[has_reason], ("reason_system", "reason_code", "reason_display"))
        reason[has_reason] = concepts.to_numpy(zero_copy_only=False)
    # stays (inpatient, ICU) that ended get a discharge disposition: expired if the patient died then
    stay = klass.isin(["inpatient", "icu"]).to_numpy() & ended
    death_at = pd.Series(utc_ms(deaths["time"]), index=deaths["patient"].to_numpy())
    died_at_end = utc_ms(encounters["end_time"]) == death_at.reindex(encounters["patient"]).to_numpy()
    system = TERMINOLOGY + "discharge-disposition"
    disposition = np.full(len(encounters), "", dtype=object)
    disposition[stay] = np.where(
        died_at_end[stay],
        '{"dischargeDisposition":' + _coding(system, "exp", "Expired") + "}",
        '{"dischargeDisposition":' + _coding(system, "home", "Home") + "}",
    )
    performer = {"system": TERMINOLOGY + "v3-ParticipationType", "code": "PPRF", "display": "primary performer"}
    participant = (
        f'[{{"type":[{{"coding":[{_dumps(performer)}]}}],"individual":{refs.one("Practitioner", PRACTITIONER_ID)}}}]'
    )
    return _build(
        "Encounter",
        encounters,
        encounters["row"].to_numpy(),
        [
            ',"status":',
            np.where(ended, '"finished"', '"in-progress"').astype(object),
            ',"class":',
            klass.map(class_json).to_numpy(dtype=object),
            ',"type":[',
            _concepts(encounters),
            '],"subject":',
            refs.to("Patient", encounters["patient_id"].to_numpy()),
            ',"participant":',
            participant,
            ',"period":',
            period,
            _list_field("reasonCode", reason),
            _list_field("reasonReference", refs.to("Condition", encounters["reason_condition_id"].to_numpy())),
            _field("hospitalization", disposition),
            f',"location":[{{"location":{refs.one("Location", LOCATION_ID)}}}]',
            ',"serviceProvider":' + refs.one("Organization", ORGANIZATION_ID),
        ],
        refs.line_end,
    )


def condition_resources(conditions: pd.DataFrame, refs: References) -> Resources:
    """Diagnosed condition episodes."""
    diagnosed = conditions[conditions["diagnosis_time"].notna()]
    resolved = diagnosed["resolution_time"].notna().to_numpy()
    clinical = TERMINOLOGY + "condition-clinical"
    category = _coding(TERMINOLOGY + "condition-category", "encounter-diagnosis", "Encounter Diagnosis")
    return _build(
        "Condition",
        diagnosed,
        diagnosed["row"].to_numpy(),
        [
            ',"clinicalStatus":',
            np.where(resolved, _coding(clinical, "resolved", "Resolved"), _coding(clinical, "active", "Active")).astype(
                object
            ),
            ',"verificationStatus":',
            _coding(TERMINOLOGY + "condition-ver-status", "confirmed", "Confirmed"),
            f',"category":[{category}],"code":',
            _concepts(diagnosed),
            ',"subject":',
            refs.to("Patient", diagnosed["patient_id"].to_numpy()),
            _field("encounter", refs.to("Encounter", diagnosed["diagnosis_encounter_id"].to_numpy())),
            _time_field("onsetDateTime", diagnosed["onset_time"]),
            _time_field("abatementDateTime", diagnosed["resolution_time"]),
            _time_field("recordedDate", diagnosed["diagnosis_time"]),
        ],
        refs.line_end,
    )


def _category(names: pd.Series) -> pa.Array:
    """The category JSON of each row, serialised once per category."""
    category = pd.Categorical(names)
    texts = [
        _dumps([{"coding": [{"system": TERMINOLOGY + "observation-category", "code": name, "display": display}]}])
        for name, display in ((n, OBSERVATION_CATEGORY[n]) for n in category.categories.astype(str).tolist())
    ]
    return _take(texts, category.codes)


def _lab_interpretation(observations: pd.DataFrame, reference: ObservationReference) -> np.ndarray:
    """',"interpretation":...,"referenceRange":...' for labs with an upper limit of normal in the
    reference data; a value at or above it is High, below it Normal."""
    out = np.full(len(observations), "", dtype=object)
    is_lab = (observations["category"] == "laboratory").to_numpy()
    interpretation = TERMINOLOGY + "v3-ObservationInterpretation"
    high = f',"interpretation":[{_coding(interpretation, "H", "High")}]'
    normal = f',"interpretation":[{_coding(interpretation, "N", "Normal")}]'
    for loinc, upper in reference.upper_limits.items():
        rows = is_lab & (observations["code"] == loinc).to_numpy()
        if not rows.any():
            continue
        ucum_code = reference.ucum(upper.unit)
        high_json = {"value": upper.limit, "unit": ucum_code, "system": UCUM, "code": ucum_code}
        reference_range = _dumps([{"high": high_json, "text": upper.text}])
        flag = np.where(observations["value"].to_numpy()[rows] >= upper.limit, high, normal)
        out[rows] = flag + f',"referenceRange":{reference_range}'
    return out


def _observation_parts(frame: pd.DataFrame, refs: References) -> list[Piece]:
    """The pieces every Observation starts with (after its id): status, category, code, subject,
    encounter, times."""
    effective = fhir_datetime_text(frame["time"])
    return [
        ',"status":"final","category":',
        _category(frame["category"]),
        ',"code":',
        _concepts(frame),
        ',"subject":',
        refs.to("Patient", frame["patient_id"].to_numpy()),
        _field("encounter", refs.to("Encounter", frame["encounter_id"].to_numpy())),
        ',"effectiveDateTime":"',
        effective,
        '","issued":"',
        effective,
        '"',
    ]


def observation_resources(
    tables: Mapping[str, pd.DataFrame], refs: References, reference: ObservationReference
) -> Resources:
    """Measured observations (blood pressure pairs as panels), symptoms and causes of death; units and
    lab reference ranges from `reference`."""
    observations = tables["observations"]
    code = observations["code"]
    keys = ["patient", "encounter_id", "time"]
    numbered = observations.assign(position=np.arange(len(observations)))
    systolic, diastolic = numbered[(code == SYSTOLIC).to_numpy()], numbered[(code == DIASTOLIC).to_numpy()]
    pairs = systolic.assign(k=systolic.groupby(keys, sort=False).cumcount()).merge(
        diastolic.assign(k=diastolic.groupby(keys, sort=False).cumcount())[[*keys, "k", "position", "value"]],
        on=[*keys, "k"],
        suffixes=("", "_diastolic"),
    )
    paired = np.zeros(len(observations), bool)
    paired[pairs["position"].to_numpy()] = True
    paired[pairs["position_diastolic"].to_numpy()] = True
    single = observations[~paired]
    parts = [
        *_observation_parts(single, refs),
        ',"valueQuantity":',
        _quantities(single["value"].to_numpy(), single["unit"], reference),
        _lab_interpretation(single, reference),
    ]
    measured = _build("Observation", single, single["row"].to_numpy(), parts, refs.line_end)
    panels = _blood_pressure_panels(pairs, refs, reference)
    symptoms = tables["symptoms"].assign(category="exam")
    symptom = _build(
        "Observation",
        symptoms,
        symptoms["row"].to_numpy(),
        [
            *_observation_parts(symptoms, refs),
            ',"valueQuantity":',
            _quantities(symptoms["severity"].round(2).to_numpy(), "{score}", reference),
        ],
        refs.line_end,
    )
    deaths = tables["deaths"][tables["deaths"]["code"].notna()]
    cause = _build(
        "Observation",
        deaths,
        deaths["row"].to_numpy(),
        [
            ',"status":"final","code":',
            _dumps(
                {
                    "coding": [
                        {
                            "system": LOINC,
                            "code": "69453-9",
                            "display": "Cause of death [US Standard Certificate of Death]",
                        }
                    ],
                    "text": "Cause of death",
                }
            ),
            ',"subject":',
            refs.to("Patient", deaths["patient_id"].to_numpy()),
            _field("encounter", refs.to("Encounter", deaths["encounter_id"].to_numpy())),
            _time_field("effectiveDateTime", deaths["time"]),
            ',"valueCodeableConcept":',
            _concepts(deaths),
        ],
        refs.line_end,
    )
    return _concat("Observation", [measured, panels, symptom, cause])


def _blood_pressure_panels(pairs: pd.DataFrame, refs: References, reference: ObservationReference) -> Resources:
    """US Core blood pressure: one panel (85354-9) with systolic and diastolic components."""

    def component(code: str, display: str, values: np.ndarray) -> np.ndarray:
        concept = _dumps({"coding": [{"system": LOINC, "code": code, "display": display}], "text": display})
        return join(f'{{"code":{concept},"valueQuantity":', _quantities(values, "mm[Hg]", reference), "}")

    panel = _dumps(
        {
            "coding": [
                {"system": LOINC, "code": BP_PANEL, "display": "Blood pressure panel with all children optional"}
            ],
            "text": "Blood pressure",
        }
    )
    parts = _observation_parts(pairs, refs)
    parts[3] = panel  # the code
    return _build(
        "Observation",
        pairs,
        pairs["row"].to_numpy(),
        [
            *parts,
            ',"component":[',
            component(SYSTOLIC, "Systolic blood pressure", pairs["value"].to_numpy()),
            ",",
            component(DIASTOLIC, "Diastolic blood pressure", pairs["value_diastolic"].to_numpy()),
            "]",
        ],
        refs.line_end,
    )


def diagnostic_report_resources(observations: pd.DataFrame, seed: int, refs: References) -> Resources:
    """One laboratory DiagnosticReport per (encounter, time) with lab results."""
    labs = observations[observations["category"].to_numpy(dtype=object) == "laboratory"]
    group, _ = pd.factorize(
        pd.MultiIndex.from_arrays(
            [labs["patient"], labs["encounter_id"].fillna(""), utc_ms(labs["time"]).view(np.int64)]
        )
    )
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order], prepend=-1, append=-2)).tolist()
    results = refs.to("Observation", labs["id"].to_numpy(dtype=object)).take(pa.array(order)).to_pylist()
    starts = order[bounds[:-1]] if len(labs) else np.array([], np.int64)
    reports = labs.iloc[starts][["patient", "patient_id", "encounter_id", "time", "row"]].reset_index(drop=True)
    reports["result"] = pd.Series(
        [",".join(results[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)], dtype=object
    )
    ids = resource_ids(seed, reports["patient"].to_numpy(), "DiagnosticReport", reports["row"].to_numpy())
    reports.insert(0, "id", pd.Series(ids, dtype=object))
    effective = fhir_datetime_text(reports["time"])
    return _build(
        "DiagnosticReport",
        reports,
        reports["row"].to_numpy(),
        [
            ',"status":"final","category":[',
            _coding(TERMINOLOGY + "v2-0074", "LAB", "Laboratory"),
            '],"code":',
            _dumps(
                {
                    "coding": [{"system": LOINC, "code": "11502-2", "display": "Laboratory report"}],
                    "text": "Laboratory report",
                }
            ),
            ',"subject":',
            refs.to("Patient", reports["patient_id"].to_numpy()),
            ',"encounter":',
            refs.to("Encounter", reports["encounter_id"].to_numpy()),
            ',"effectiveDateTime":"',
            effective,
            '","issued":"',
            effective,
            '","performer":[',
            refs.one("Organization", ORGANIZATION_ID),
            '],"result":[',
            reports["result"].to_numpy(dtype=object),
            "]",
        ],
        refs.line_end,
    )


def medication_resources(medications: pd.DataFrame, refs: References) -> Resources:
    stopped = medications["stop_time"].notna().to_numpy()
    start = fhir_datetime_text(medications["start_time"])
    stop = join(',"end":"', fhir_datetime_text(medications["stop_time"]), '"', skip_nulls=False)
    validity = join('{"validityPeriod":{"start":"', start, '"', stop, "}}")
    return _build(
        "MedicationRequest",
        medications,
        medications["row"].to_numpy(),
        [
            ',"status":',
            np.where(stopped, '"stopped"', '"active"').astype(object),
            ',"intent":"order","medicationCodeableConcept":',
            _concepts(medications),
            ',"subject":',
            refs.to("Patient", medications["patient_id"].to_numpy()),
            _field("encounter", refs.to("Encounter", medications["encounter_id"].to_numpy())),
            ',"authoredOn":"',
            start,
            '","requester":',
            refs.one("Practitioner", PRACTITIONER_ID),
            _list_field("reasonReference", refs.to("Condition", medications["reason_condition_id"].to_numpy())),
            ',"dispenseRequest":',
            validity,
        ],
        refs.line_end,
    )


def procedure_resources(procedures: pd.DataFrame, refs: References) -> Resources:
    return _build(
        "Procedure",
        procedures,
        procedures["row"].to_numpy(),
        [
            ',"status":"completed","code":',
            _concepts(procedures),
            ',"subject":',
            refs.to("Patient", procedures["patient_id"].to_numpy()),
            _field("encounter", refs.to("Encounter", procedures["encounter_id"].to_numpy())),
            _time_field("performedDateTime", procedures["time"]),
            ',"performer":' + _PRACTITIONER_PERFORMER % refs.one("Practitioner", PRACTITIONER_ID),
            ',"location":' + refs.one("Location", LOCATION_ID),
        ],
        refs.line_end,
    )


def immunization_resources(immunizations: pd.DataFrame, refs: References) -> Resources:
    return _build(
        "Immunization",
        immunizations,
        immunizations["row"].to_numpy(),
        [
            ',"status":"completed","vaccineCode":',
            _concepts(immunizations),
            ',"patient":',
            refs.to("Patient", immunizations["patient_id"].to_numpy()),
            _field("encounter", refs.to("Encounter", immunizations["encounter_id"].to_numpy())),
            _time_field("occurrenceDateTime", immunizations["time"]),
            ',"primarySource":true,"location":' + refs.one("Location", LOCATION_ID),
            ',"performer":' + _PRACTITIONER_PERFORMER % refs.one("Practitioner", PRACTITIONER_ID),
        ],
        refs.line_end,
    )


def _concat(resource_type: str, parts: list[Resources]) -> Resources:
    """Resources of one type from several builders (one piece each, sorted only when written)."""
    ids = np.concatenate([p.ids for p in parts])
    patient = np.concatenate([p.patient for p in parts])
    order = np.concatenate([p.order for p in parts])
    text = pa.chunked_array([chunk for p in parts for chunk in p.json.chunks], TEXT)
    return Resources(resource_type, ids, patient, order, text)


def build_resources(
    patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame], context: ExportContext, refs: References
) -> dict[str, Resources]:
    """Every resource of one chunk, by resource type (each in patient then row order)."""
    return {
        "Patient": patients_resources(patients, context.displays, refs),
        "Encounter": encounter_resources(tables["encounters"], tables["deaths"], refs),
        "Condition": condition_resources(tables["conditions"], refs),
        "Observation": observation_resources(tables, refs, context.observation_reference),
        "DiagnosticReport": diagnostic_report_resources(tables["observations"], context.seed, refs),
        "MedicationRequest": medication_resources(tables["medications"], refs),
        "Procedure": procedure_resources(tables["procedures"], refs),
        "Immunization": immunization_resources(tables["immunizations"], refs),
    }


def shared_resources(refs: References) -> dict[str, dict]:
    """The Organization, Location and Practitioner every encounter points to."""
    organization = {
        "resourceType": "Organization",
        "id": ORGANIZATION_ID,
        "identifier": [{"system": ID_SYSTEM + "organization", "value": "ehrsim-clinic"}],
        "active": True,
        "type": [
            {
                "coding": [
                    {"system": TERMINOLOGY + "organization-type", "code": "prov", "display": "Healthcare Provider"}
                ]
            }
        ],
        "name": "ehrsim Synthetic Clinic",
        "telecom": [{"system": "phone", "value": "555-0100", "use": "work"}],
        "address": [_ADDRESS],
    }
    location = {
        "resourceType": "Location",
        "id": LOCATION_ID,
        "identifier": [{"system": ID_SYSTEM + "location", "value": "ehrsim-clinic-main"}],
        "status": "active",
        "name": "ehrsim Synthetic Clinic, main site",
        "address": _ADDRESS,
        "managingOrganization": orjson.loads(refs.one("Organization", ORGANIZATION_ID)),
    }
    practitioner = {
        "resourceType": "Practitioner",
        "id": PRACTITIONER_ID,
        "identifier": [{"system": ID_SYSTEM + "practitioner", "value": "ehrsim-clinician-1"}],
        "active": True,
        "name": [{"use": "official", "family": "Clinician", "given": ["Synthetic"], "prefix": ["Dr."]}],
    }
    return {"Organization": organization, "Location": location, "Practitioner": practitioner}
