"""Per-type clinical tables -> FHIR R4 (4.0.1) resources as JSON text, US Core shaped.

Resources are built a column at a time from the pieces in `fhir_text`. References are literal
`Type/id` (ndjson) or `urn:uuid:id` (bundles). UCUM units and
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

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from simulator.export.context import ExportContext
from simulator.export.directory import Directory
from simulator.export.fhir_text import (
    CDCREC,
    ID_SYSTEM,
    LOINC,
    TERMINOLOGY,
    TEXT,
    UCUM,
    US_CORE,
    Piece,
    References,
    Resources,
    build,
    coding,
    concat,
    concepts,
    dumps,
    field,
    join,
    list_field,
    quantities,
    take,
    time_field,
)
from simulator.export.ids import fhir_dates, fhir_datetime_text, fhir_datetimes, resource_ids, utc_ms
from simulator.model.reference_data import ObservationReference

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


# --- patients --------------------------------------------------------------------------------------


def patients_resources(
    patients: pd.DataFrame, displays: Mapping[str, str], directory: Directory, refs: References
) -> Resources:
    """Patient resources (one orjson dump per patient: they are few next to the events), with their
    primary care practitioner and clinic from the directory."""
    providers = directory.patient_providers(patients)
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
        providers["general_practitioner_id"].tolist(),
        providers["clinic_id"].tolist(),
        strict=True,
    )
    for pid, index, sex, race, ethnicity, given, family, line, city, state, zip_code, born, died, gp, clinic in rows:
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
            "generalPractitioner": [{"reference": f"Practitioner/{gp}"}],
            "managingOrganization": {"reference": f"Organization/{clinic}"},
        }
        texts.append(dumps(resource) + refs.line_end)
    ids = patients["id"].to_numpy(dtype=object)
    order = np.full(len(patients), -1, np.int64)
    text = pa.chunked_array([pa.array(texts, TEXT)], TEXT)
    return Resources("Patient", ids, patients["index"].to_numpy(np.int64), order, text)


# --- clinical resources ----------------------------------------------------------------------------


def _of_encounter(frame: pd.DataFrame, encounters: pd.DataFrame, column: str) -> np.ndarray:
    """The `column` of each row's encounter (a provider id; None for a row outside any encounter)."""
    by_id = pd.Series(encounters[column].to_numpy(dtype=object), index=encounters["id"].to_numpy(dtype=object))
    return by_id.reindex(frame["encounter_id"].to_numpy(dtype=object)).to_numpy(dtype=object)


def _performer(frame: pd.DataFrame, encounters: pd.DataFrame, refs: References) -> pa.Array:
    """',"performer":[{"actor":...}]' naming the practitioner of each row's encounter (null outside one)."""
    actor = refs.to("Practitioner", _of_encounter(frame, encounters, "practitioner_id"))
    return join(',"performer":[{"actor":', actor, "}]", skip_nulls=False)


def encounter_resources(encounters: pd.DataFrame, deaths: pd.DataFrame, refs: References) -> Resources:
    klass = encounters["encounter_class"].astype(str)
    class_json = {
        name: dumps({"system": TERMINOLOGY + "v3-ActCode", "code": code, "display": display})
        for name, (code, display) in ENCOUNTER_CLASS.items()
    }
    ended = encounters["end_time"].notna().to_numpy()
    end = join(',"end":"', fhir_datetime_text(encounters["end_time"]), '"', skip_nulls=False)
    period = join('{"start":"', fhir_datetime_text(encounters["start_time"]), '"', end, "}")
    has_reason = encounters["reason_code"].notna().to_numpy()
    reason = np.full(len(encounters), "", dtype=object)
    if has_reason.any():
        reasons = concepts(encounters.loc[has_reason], ("reason_system", "reason_code", "reason_display"))
        reason[has_reason] = reasons.to_numpy(zero_copy_only=False)
    # stays (inpatient, ICU) that ended get a discharge disposition: expired if the patient died then
    stay = klass.isin(["inpatient", "icu"]).to_numpy() & ended
    death_at = pd.Series(utc_ms(deaths["time"]), index=deaths["patient"].to_numpy())
    died_at_end = utc_ms(encounters["end_time"]) == death_at.reindex(encounters["patient"]).to_numpy()
    system = TERMINOLOGY + "discharge-disposition"
    disposition = np.full(len(encounters), "", dtype=object)
    disposition[stay] = np.where(
        died_at_end[stay],
        '{"dischargeDisposition":' + coding(system, "exp", "Expired") + "}",
        '{"dischargeDisposition":' + coding(system, "home", "Home") + "}",
    )
    performer = {"system": TERMINOLOGY + "v3-ParticipationType", "code": "PPRF", "display": "primary performer"}
    participant = join(
        f'[{{"type":[{{"coding":[{dumps(performer)}]}}],"individual":',
        refs.to("Practitioner", encounters["practitioner_id"].to_numpy()),
        "}]",
    )
    return build(
        "Encounter",
        encounters,
        encounters["row"].to_numpy(),
        [
            ',"status":',
            np.where(ended, '"finished"', '"in-progress"').astype(object),
            ',"class":',
            klass.map(class_json).to_numpy(dtype=object),
            ',"type":[',
            concepts(encounters),
            '],"subject":',
            refs.to("Patient", encounters["patient_id"].to_numpy()),
            ',"participant":',
            participant,
            ',"period":',
            period,
            list_field("reasonCode", reason),
            list_field("reasonReference", refs.to("Condition", encounters["reason_condition_id"].to_numpy())),
            field("hospitalization", disposition),
            ',"location":[{"location":',
            refs.to("Location", encounters["location_id"].to_numpy()),
            '}],"serviceProvider":',
            refs.to("Organization", encounters["organization_id"].to_numpy()),
        ],
        refs.line_end,
    )


def condition_resources(conditions: pd.DataFrame, refs: References) -> Resources:
    """Diagnosed condition episodes."""
    diagnosed = conditions[conditions["diagnosis_time"].notna()]
    resolved = diagnosed["resolution_time"].notna().to_numpy()
    clinical = TERMINOLOGY + "condition-clinical"
    category = coding(TERMINOLOGY + "condition-category", "encounter-diagnosis", "Encounter Diagnosis")
    return build(
        "Condition",
        diagnosed,
        diagnosed["row"].to_numpy(),
        [
            ',"clinicalStatus":',
            np.where(resolved, coding(clinical, "resolved", "Resolved"), coding(clinical, "active", "Active")).astype(
                object
            ),
            ',"verificationStatus":',
            coding(TERMINOLOGY + "condition-ver-status", "confirmed", "Confirmed"),
            f',"category":[{category}],"code":',
            concepts(diagnosed),
            ',"subject":',
            refs.to("Patient", diagnosed["patient_id"].to_numpy()),
            field("encounter", refs.to("Encounter", diagnosed["diagnosis_encounter_id"].to_numpy())),
            time_field("onsetDateTime", diagnosed["onset_time"]),
            time_field("abatementDateTime", diagnosed["resolution_time"]),
            time_field("recordedDate", diagnosed["diagnosis_time"]),
        ],
        refs.line_end,
    )


def _category(names: pd.Series) -> pa.Array:
    """The category JSON of each row, serialised once per category."""
    category = pd.Categorical(names)
    texts = [
        dumps([{"coding": [{"system": TERMINOLOGY + "observation-category", "code": name, "display": display}]}])
        for name, display in ((n, OBSERVATION_CATEGORY[n]) for n in category.categories.astype(str).tolist())
    ]
    return take(texts, category.codes)


def _lab_interpretation(observations: pd.DataFrame, reference: ObservationReference) -> np.ndarray:
    """',"interpretation":...,"referenceRange":...' for labs with an upper limit of normal in the
    reference data; a value at or above it is High, below it Normal."""
    out = np.full(len(observations), "", dtype=object)
    is_lab = (observations["category"] == "laboratory").to_numpy()
    interpretation = TERMINOLOGY + "v3-ObservationInterpretation"
    high = f',"interpretation":[{coding(interpretation, "H", "High")}]'
    normal = f',"interpretation":[{coding(interpretation, "N", "Normal")}]'
    for loinc, upper in reference.upper_limits.items():
        rows = is_lab & (observations["code"] == loinc).to_numpy()
        if not rows.any():
            continue
        ucum_code = reference.ucum(upper.unit)
        high_json = {"value": upper.limit, "unit": ucum_code, "system": UCUM, "code": ucum_code}
        reference_range = dumps([{"high": high_json, "text": upper.text}])
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
        concepts(frame),
        ',"subject":',
        refs.to("Patient", frame["patient_id"].to_numpy()),
        field("encounter", refs.to("Encounter", frame["encounter_id"].to_numpy())),
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
        quantities(single["value"].to_numpy(), single["unit"], reference),
        _lab_interpretation(single, reference),
    ]
    measured = build("Observation", single, single["row"].to_numpy(), parts, refs.line_end)
    panels = _blood_pressure_panels(pairs, refs, reference)
    symptoms = tables["symptoms"].assign(category="exam")
    symptom = build(
        "Observation",
        symptoms,
        symptoms["row"].to_numpy(),
        [
            *_observation_parts(symptoms, refs),
            ',"valueQuantity":',
            quantities(symptoms["severity"].round(2).to_numpy(), "{score}", reference),
        ],
        refs.line_end,
    )
    deaths = tables["deaths"][tables["deaths"]["code"].notna()]
    cause = build(
        "Observation",
        deaths,
        deaths["row"].to_numpy(),
        [
            ',"status":"final","code":',
            dumps(
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
            field("encounter", refs.to("Encounter", deaths["encounter_id"].to_numpy())),
            time_field("effectiveDateTime", deaths["time"]),
            ',"valueCodeableConcept":',
            concepts(deaths),
        ],
        refs.line_end,
    )
    return concat("Observation", [measured, panels, symptom, cause])


def _blood_pressure_panels(pairs: pd.DataFrame, refs: References, reference: ObservationReference) -> Resources:
    """US Core blood pressure: one panel (85354-9) with systolic and diastolic components."""

    def component(code: str, display: str, values: np.ndarray) -> np.ndarray:
        concept = dumps({"coding": [{"system": LOINC, "code": code, "display": display}], "text": display})
        return join(f'{{"code":{concept},"valueQuantity":', quantities(values, "mm[Hg]", reference), "}")

    panel = dumps(
        {
            "coding": [
                {"system": LOINC, "code": BP_PANEL, "display": "Blood pressure panel with all children optional"}
            ],
            "text": "Blood pressure",
        }
    )
    parts = _observation_parts(pairs, refs)
    parts[3] = panel  # the code
    return build(
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


def diagnostic_report_resources(
    observations: pd.DataFrame, encounters: pd.DataFrame, seed: int, refs: References
) -> Resources:
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
    return build(
        "DiagnosticReport",
        reports,
        reports["row"].to_numpy(),
        [
            ',"status":"final","category":[',
            coding(TERMINOLOGY + "v2-0074", "LAB", "Laboratory"),
            '],"code":',
            dumps(
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
            '"',
            list_field("performer", refs.to("Organization", _of_encounter(reports, encounters, "organization_id"))),
            ',"result":[',
            reports["result"].to_numpy(dtype=object),
            "]",
        ],
        refs.line_end,
    )


def medication_resources(medications: pd.DataFrame, encounters: pd.DataFrame, refs: References) -> Resources:
    stopped = medications["stop_time"].notna().to_numpy()
    start = fhir_datetime_text(medications["start_time"])
    stop = join(',"end":"', fhir_datetime_text(medications["stop_time"]), '"', skip_nulls=False)
    validity = join('{"validityPeriod":{"start":"', start, '"', stop, "}}")
    return build(
        "MedicationRequest",
        medications,
        medications["row"].to_numpy(),
        [
            ',"status":',
            np.where(stopped, '"stopped"', '"active"').astype(object),
            ',"intent":"order","medicationCodeableConcept":',
            concepts(medications),
            ',"subject":',
            refs.to("Patient", medications["patient_id"].to_numpy()),
            field("encounter", refs.to("Encounter", medications["encounter_id"].to_numpy())),
            ',"authoredOn":"',
            start,
            '"',
            field("requester", refs.to("Practitioner", _of_encounter(medications, encounters, "practitioner_id"))),
            list_field("reasonReference", refs.to("Condition", medications["reason_condition_id"].to_numpy())),
            ',"dispenseRequest":',
            validity,
        ],
        refs.line_end,
    )


def procedure_resources(procedures: pd.DataFrame, encounters: pd.DataFrame, refs: References) -> Resources:
    return build(
        "Procedure",
        procedures,
        procedures["row"].to_numpy(),
        [
            ',"status":"completed","code":',
            concepts(procedures),
            ',"subject":',
            refs.to("Patient", procedures["patient_id"].to_numpy()),
            field("encounter", refs.to("Encounter", procedures["encounter_id"].to_numpy())),
            time_field("performedDateTime", procedures["time"]),
            _performer(procedures, encounters, refs),
            field("location", refs.to("Location", _of_encounter(procedures, encounters, "location_id"))),
        ],
        refs.line_end,
    )


def immunization_resources(immunizations: pd.DataFrame, encounters: pd.DataFrame, refs: References) -> Resources:
    return build(
        "Immunization",
        immunizations,
        immunizations["row"].to_numpy(),
        [
            ',"status":"completed","vaccineCode":',
            concepts(immunizations),
            ',"patient":',
            refs.to("Patient", immunizations["patient_id"].to_numpy()),
            field("encounter", refs.to("Encounter", immunizations["encounter_id"].to_numpy())),
            time_field("occurrenceDateTime", immunizations["time"]),
            ',"primarySource":true',
            field("location", refs.to("Location", _of_encounter(immunizations, encounters, "location_id"))),
            _performer(immunizations, encounters, refs),
        ],
        refs.line_end,
    )


def build_resources(
    patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame], context: ExportContext, refs: References
) -> dict[str, Resources]:
    """Every resource of one chunk, by resource type (each in patient then row order)."""
    encounters = tables["encounters"]
    return {
        "Patient": patients_resources(patients, context.displays, context.directory, refs),
        "Encounter": encounter_resources(tables["encounters"], tables["deaths"], refs),
        "Condition": condition_resources(tables["conditions"], refs),
        "Observation": observation_resources(tables, refs, context.observation_reference),
        "DiagnosticReport": diagnostic_report_resources(tables["observations"], encounters, context.seed, refs),
        "MedicationRequest": medication_resources(tables["medications"], encounters, refs),
        "Procedure": procedure_resources(tables["procedures"], encounters, refs),
        "Immunization": immunization_resources(tables["immunizations"], encounters, refs),
    }
