"""Per-type clinical tables -> FHIR R4 (4.0.1) resources as JSON text, shaped to US Core 6.1.0.

Resources are built a column at a time from the pieces in `fhir_text`. References are literal
`Type/id` (ndjson) or `urn:uuid:id` (bundles). UCUM units and
lab reference ranges come from rules/observation_reference.yaml, through the `ExportContext`.

What becomes what (each resource declares its US Core profile in `meta.profile`, from `us_core`):
- Patient: one per patient (US Core race, ethnicity and birth sex extensions, deceasedDateTime, the
  language spoken at home as `communication`, drawn from rules/languages.yaml).
- Encounter: one per encounter (class from v3 ActCode, reason; a hospital stay's segments and the emergency
  visit before it are partOf its admission, with admit source and discharge dispositions).
- Condition: one encounter diagnosis per diagnosed episode (onset, recordedDate = diagnosis, abatement),
  and for a chronic condition (`problem_list` in its module) a problem-list item as well. Episodes never
  diagnosed are in the conditions table only: the record does not know about them. Smoking findings stay
  encounter diagnoses (a tobacco cessation CarePlan addresses them); the US Core smoking status is the
  Observation below.
- Observation: one per observation event, except that a systolic and a diastolic blood pressure
  taken at the same time in the same encounter become one blood-pressure panel (85354-9); one per
  symptom (SNOMED CT finding, severity score); one cause of death per death (69453-9); a smoking status
  (72166-2) at every wellness visit from the age rules/smoking_status.yaml gives.
- DiagnosticReport: one per encounter, time and lab panel (rules/lab_panels.yaml), pointing to its
  results; a lab of no panel is reported alone, coded with its own LOINC code.
- MedicationRequest: one per medication course (category by where it is taken, dosage from
  rules/medication_dosing.yaml); Procedure, Immunization: one per event.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from simulator.days import DAYS_PER_YEAR
from simulator.export import us_core
from simulator.export.allergies import allergy_resources
from simulator.export.care_plans import care_resources
from simulator.export.context import ExportContext
from simulator.export.coverage import coverage_resources
from simulator.export.directory import Directory
from simulator.export.fhir_text import (
    CDCREC,
    ID_SYSTEM,
    LOINC,
    SNOMED,
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
    meta,
    meta_object,
    no_encounter,
    quantities,
    take,
    time_field,
)
from simulator.export.ids import (
    fhir_dates,
    fhir_datetime_text,
    fhir_datetimes,
    positions,
    resource_ids,
    uniforms,
    utc_ms,
)
from simulator.export.notes import document_resources
from simulator.export.provenance import provenance_resources
from simulator.model.library import Library
from simulator.model.medication_dosing import MedicationDosing
from simulator.model.record_rules import LabPanels, Languages, SmokingStatus
from simulator.model.reference_data import ObservationReference
from simulator.model.schema import CODE_SYSTEMS, Code

# Resource types in the order a bundle lists them (what is referenced comes first).
RESOURCE_TYPES = (
    "Patient",
    "Coverage",
    "AllergyIntolerance",
    "Encounter",
    "Condition",
    "Observation",
    "DiagnosticReport",
    "MedicationRequest",
    "Procedure",
    "Immunization",
    "CareTeam",
    "Goal",
    "CarePlan",
    "DocumentReference",
    "Provenance",  # last: it targets every other resource of the patient
)

# v3 ActCode encounter class for each engine encounter class.
ENCOUNTER_CLASS = {
    "wellness": ("AMB", "ambulatory"),
    "ambulatory": ("AMB", "ambulatory"),
    "emergency": ("EMER", "emergency"),
    "inpatient": ("IMP", "inpatient encounter"),
    "icu": ("ACUTE", "inpatient acute"),
}
# Displays of the admit-source and discharge-disposition codes the encounters table uses.
ADMIT_SOURCE = {"emd": "From accident/emergency department", "mp": "Medical Practitioner/physician referral"}
DISCHARGE_DISPOSITION = {"home": "Home", "exp": "Expired"}
# medicationrequest-category codes, in the order _medication_category numbers them.
MEDICATION_CATEGORY = {"inpatient": "Inpatient", "outpatient": "Outpatient", "community": "Community"}
_NOT_YET = np.iinfo(np.int64).max  # the time of an end the record has not reached
OBSERVATION_CATEGORY = {
    "vital-signs": "Vital Signs",
    "laboratory": "Laboratory",
    "survey": "Survey",
    "social-history": "Social History",
    "exam": "Exam",
}
CONDITION_CATEGORY = {"encounter-diagnosis": "Encounter Diagnosis", "problem-list-item": "Problem List Item"}
SYSTOLIC, DIASTOLIC, BP_PANEL = "8480-6", "8462-4", "85354-9"
BCP47 = "urn:ietf:bcp:47"


# --- patients --------------------------------------------------------------------------------------


def patients_resources(
    patients: pd.DataFrame,
    displays: Mapping[str, str],
    directory: Directory,
    communication: np.ndarray,
    refs: References,
) -> Resources:
    """Patient resources (one orjson dump per patient: they are few next to the events), with their
    primary care practitioner and clinic from the directory and their `communication` (a list, or None)."""
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
        communication.tolist(),
        strict=True,
    )
    profile = meta_object(us_core.PATIENT)
    for *person, spoken in rows:
        pid, index, sex, race, ethnicity, given, family, line, city, state, zip_code, born, died, gp, clinic = person
        race_ext = [{"url": "ombCategory", "valueCoding": {"system": CDCREC, "code": race, "display": displays[race]}}]
        resource = {
            "resourceType": "Patient",
            "id": pid,
            "meta": profile,
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
            **({"communication": spoken} if spoken else {}),
            "generalPractitioner": [{"reference": f"Practitioner/{gp}"}],
            "managingOrganization": {"reference": f"Organization/{clinic}"},
        }
        texts.append(dumps(resource) + refs.line_end)
    ids = patients["id"].to_numpy(dtype=object)
    order = np.full(len(patients), -1, np.int64)
    text = pa.chunked_array([pa.array(texts, TEXT)], TEXT)
    return Resources("Patient", ids, patients["index"].to_numpy(np.int64), order, text, no_encounter(len(ids)))


def communication(patients: pd.DataFrame, languages: Languages, seed: int) -> np.ndarray:
    """Each patient's `communication` (a list with the language spoken at home), or None for a language the
    rules do not list: drawn from the shares of the patient's ethnicity, a pure function of (seed, patient)."""
    u = uniforms(seed, patients["index"].to_numpy(), "Language", np.zeros(len(patients), np.int64))
    ethnicity = patients["ethnicity"].astype(str).to_numpy()
    unknown = sorted(set(ethnicity) - set(languages.shares))
    if unknown:
        raise ValueError(f"rules/languages.yaml gives no shares for ethnicity {', '.join(unknown)}")
    out = np.full(len(patients), None, dtype=object)
    for group, shares in languages.shares.items():
        rows = ethnicity == group
        choices = [
            [{"language": {"coding": [{"system": BCP47, "code": tag, "display": languages.languages[tag]}]}}]
            for tag in shares
        ]
        picked = np.searchsorted(np.cumsum(list(shares.values())), u[rows], side="right")
        out[rows] = np.array([*choices, None], dtype=object)[picked]
    return out


# --- clinical resources ----------------------------------------------------------------------------


def _of_encounter(frame: pd.DataFrame, encounters: pd.DataFrame, column: str) -> np.ndarray:
    """The `column` of each row's encounter (a provider id; None for a row outside any encounter)."""
    at = positions(encounters["id"].to_numpy(dtype=object), frame["encounter_id"].to_numpy(dtype=object))
    return np.append(encounters[column].to_numpy(dtype=object), None)[at]


def _performer(frame: pd.DataFrame, encounters: pd.DataFrame, refs: References) -> pa.Array:
    """',"performer":[{"actor":...}]' naming the practitioner of each row's encounter (null outside one)."""
    actor = refs.to("Practitioner", _of_encounter(frame, encounters, "practitioner_id"))
    return join(',"performer":[{"actor":', actor, "}]", skip_nulls=False)


def _hospitalization(encounters: pd.DataFrame) -> pa.Array:
    """'{"admitSource":...,"dischargeDisposition":...}' with the codes each encounter has (null if none),
    serialised once per pair of codes."""
    source = pd.Categorical(encounters["admit_source"], categories=list(ADMIT_SOURCE)).codes + 1
    disposition = pd.Categorical(encounters["discharge_disposition"], categories=list(DISCHARGE_DISPOSITION)).codes + 1
    texts = []
    for admit in [None, *ADMIT_SOURCE]:
        for discharge in [None, *DISCHARGE_DISPOSITION]:
            parts = []
            if admit:
                parts.append(f'"admitSource":{coding(TERMINOLOGY + "admit-source", admit, ADMIT_SOURCE[admit])}')
            if discharge:
                concept = coding(TERMINOLOGY + "discharge-disposition", discharge, DISCHARGE_DISPOSITION[discharge])
                parts.append(f'"dischargeDisposition":{concept}')
            texts.append("{" + ",".join(parts) + "}" if parts else "")
    return take(texts, source * (len(DISCHARGE_DISPOSITION) + 1) + disposition)


def encounter_resources(encounters: pd.DataFrame, refs: References) -> Resources:
    """US Core Encounters; the segments of a hospital stay (and the emergency visit that led to it) are
    `partOf` its admission encounter, which says where the patient came from (`hospitalization.admitSource`);
    an encounter that ended with a discharge says where the patient went (`dischargeDisposition`)."""
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
    performer = {"system": TERMINOLOGY + "v3-ParticipationType", "code": "PPRF", "display": "primary performer"}
    participant = join(  # the practitioner takes part for the whole encounter
        f'[{{"type":[{{"coding":[{dumps(performer)}]}}],"period":',
        period,
        ',"individual":',
        refs.to("Practitioner", encounters["practitioner_id"].to_numpy()),
        "}]",
    )
    return build(
        "Encounter",
        encounters,
        encounters["row"].to_numpy(),
        [
            meta(us_core.ENCOUNTER),
            f',"identifier":[{{"system":"{ID_SYSTEM}encounter","value":"',
            encounters["id"].to_numpy(dtype=object),
            '"}],"status":',
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
            field("hospitalization", _hospitalization(encounters)),
            ',"location":[{"location":',
            refs.to("Location", encounters["location_id"].to_numpy()),
            '}],"serviceProvider":',
            refs.to("Organization", encounters["organization_id"].to_numpy()),
            field("partOf", refs.to("Encounter", encounters["part_of_encounter_id"].to_numpy(dtype=object))),
        ],
        refs.line_end,
        encounter=encounters["id"],
    )


def _code_keys(frame: pd.DataFrame) -> pd.Series:
    """'system|code' of each row (the rows' own code columns), to match codes read from the rules."""
    return frame["system"].astype(str) + "|" + frame["code"].astype(str)


def _keys(codes: list[Code]) -> set[str]:
    """'system|code' of codes read from the rules, as `_code_keys` writes a table's."""
    return {f"{CODE_SYSTEMS[c.system]}|{c.code}" for c in codes}


def _concept(code: Code) -> str:
    """CodeableConcept JSON of a code read from the rules (its display as the text, as `concepts` writes)."""
    coded = {"system": CODE_SYSTEMS[code.system], "code": code.code, "display": code.display}
    return dumps({"coding": [coded], "text": code.display})


# when the condition was first asserted: its diagnosis (US Core must-support extension)
ASSERTED_DATE = "http://hl7.org/fhir/StructureDefinition/condition-assertedDate"


def condition_resources(conditions: pd.DataFrame, library: Library, seed: int, refs: References) -> Resources:
    """Diagnosed condition episodes as encounter diagnoses, and the chronic ones (`problem_list` in their
    module's declaration) also as problem-list items, active until the episode resolves."""
    diagnosed = conditions[conditions["diagnosis_time"].notna()]
    chronic = [c.code for m in library.modules for c in m.conditions.values() if c.problem_list]
    problems = diagnosed[_code_keys(diagnosed).isin(_keys(chronic)).to_numpy()]
    ids = resource_ids(seed, problems["patient"].to_numpy(), "ProblemListItem", problems["row"].to_numpy())
    problems = problems.assign(id=pd.Series(ids, index=problems.index, dtype=object))
    return concat(
        "Condition",
        [_conditions(diagnosed, "encounter-diagnosis", refs), _conditions(problems, "problem-list-item", refs)],
    )


def _conditions(episodes: pd.DataFrame, category: str, refs: References) -> Resources:
    """Conditions of one category (condition-category code): an encounter diagnosis names its encounter."""
    resolved = episodes["resolution_time"].notna().to_numpy()
    clinical = TERMINOLOGY + "condition-clinical"
    encounter = refs.to("Encounter", episodes["diagnosis_encounter_id"].to_numpy())
    return build(
        "Condition",
        episodes,
        episodes["row"].to_numpy(),
        [
            meta(us_core.CONDITION[category]),
            f',"extension":[{{"url":"{ASSERTED_DATE}","valueDateTime":"',
            fhir_datetime_text(episodes["diagnosis_time"]),
            '"}],"clinicalStatus":',
            np.where(resolved, coding(clinical, "resolved", "Resolved"), coding(clinical, "active", "Active")).astype(
                object
            ),
            ',"verificationStatus":',
            coding(TERMINOLOGY + "condition-ver-status", "confirmed", "Confirmed"),
            ',"category":[',
            coding(TERMINOLOGY + "condition-category", category, CONDITION_CATEGORY[category]),
            '],"code":',
            concepts(episodes),
            ',"subject":',
            refs.to("Patient", episodes["patient_id"].to_numpy()),
            field("encounter", encounter) if category == "encounter-diagnosis" else "",
            time_field("onsetDateTime", episodes["onset_time"]),
            time_field("abatementDateTime", episodes["resolution_time"]),
            time_field("recordedDate", episodes["diagnosis_time"]),
        ],
        refs.line_end,
        encounter=episodes["diagnosis_encounter_id"] if category == "encounter-diagnosis" else None,
    )


def _category(names: pd.Series) -> pa.Array:
    """The category JSON of each row, serialised once per category."""
    category = pd.Categorical(names)
    texts = [
        dumps([{"coding": [{"system": TERMINOLOGY + "observation-category", "code": name, "display": display}]}])
        for name, display in ((n, OBSERVATION_CATEGORY[n]) for n in category.categories.astype(str).tolist())
    ]
    return take(texts, category.codes)


def _profiles(frame: pd.DataFrame) -> pa.Array:
    """The meta.profile JSON of each Observation row, from its code and category (see `us_core`)."""
    code, category = pd.Categorical(frame["code"]), pd.Categorical(frame["category"])
    key = code.codes * len(category.categories) + category.codes
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return take([meta(us_core.observation_profile(str(code[i]), str(category[i]))) for i in first], inverse)


def _observation_codes(frame: pd.DataFrame) -> pa.Array:
    """The code of each Observation row, with the codings its profile adds (`us_core.EXTRA_CODINGS`)."""
    extended = np.zeros(len(frame), np.int64)  # 0: the plain concept; k: the k-th concept with extra codings
    texts = [""]
    for code, extra in us_core.EXTRA_CODINGS.items():
        rows = np.flatnonzero(((frame["system"] == LOINC) & (frame["code"] == code)).to_numpy())
        displays = frame["display"].iloc[rows].astype(str).to_numpy()
        # one concept per display: a messy record (`simulator.export.messiness`) may hold a mistyped one
        for display in pd.unique(displays).tolist():
            extended[rows[displays == display]] = len(texts)
            texts.append(
                dumps({"coding": [{"system": LOINC, "code": code, "display": display}, *extra], "text": display})
            )
    codes = concepts(frame)
    return pc.if_else(pa.array(extended > 0), take(texts, extended), codes) if len(texts) > 1 else codes


def _lab_interpretation(observations: pd.DataFrame, reference: ObservationReference) -> np.ndarray:
    """',"interpretation":...,"referenceRange":...' for labs with an upper limit of normal in the
    reference data; a value at or above it is High, below it Normal."""
    out = np.full(len(observations), "", dtype=object)
    is_lab = (observations["category"] == "laboratory").to_numpy()
    interpretation = TERMINOLOGY + "v3-ObservationInterpretation"
    high = f',"interpretation":[{coding(interpretation, "H", "High")}]'
    normal = f',"interpretation":[{coding(interpretation, "N", "Normal")}]'
    # a value in another unit than the limit's, or none (a messy record), gets no interpretation
    units = pd.Categorical(observations["unit"])
    ucum = np.array([reference.ucum(str(u)) for u in units.categories], dtype=object)[units.codes]
    has_value = ~np.isnan(observations["value"].to_numpy(np.float64))
    for loinc, upper in reference.upper_limits.items():
        rows = is_lab & (observations["code"] == loinc).to_numpy() & has_value & (ucum == reference.ucum(upper.unit))
        if not rows.any():
            continue
        ucum_code = reference.ucum(upper.unit)
        high_json = {"value": upper.limit, "unit": ucum_code, "system": UCUM, "code": ucum_code}
        reference_range = dumps([{"high": high_json, "text": upper.text}])
        flag = np.where(observations["value"].to_numpy()[rows] >= upper.limit, high, normal)
        out[rows] = flag + f',"referenceRange":{reference_range}'
    return out


def _observation_parts(frame: pd.DataFrame, refs: References, profile: Piece, code: Piece) -> list[Piece]:
    """The pieces every Observation starts with (after its id): profile, status, category, code, subject,
    encounter, times."""
    effective = fhir_datetime_text(frame["time"])
    return [
        profile,
        ',"status":"final","category":',
        _category(frame["category"]),
        ',"code":',
        code,
        ',"subject":',
        refs.to("Patient", frame["patient_id"].to_numpy()),
        field("encounter", refs.to("Encounter", frame["encounter_id"].to_numpy())),
        ',"effectiveDateTime":"',
        effective,
        '","issued":"',
        fhir_datetime_text(frame["issued_time"]) if "issued_time" in frame else effective,
        '"',
    ]


def _values(frame: pd.DataFrame, reference: ObservationReference) -> list[Piece]:
    """valueQuantity of each row, or dataAbsentReason where a messy record left the value out."""
    values = frame["value"].to_numpy(np.float64)
    quantity = quantities(values, frame["unit"], reference)
    absent = np.isnan(values)
    if not absent.any():
        return [',"valueQuantity":', quantity]
    reason = ',"dataAbsentReason":' + dumps(
        {"coding": [{"system": TERMINOLOGY + "data-absent-reason", "code": "unknown", "display": "Unknown"}]}
    )
    with_value = pc.binary_join_element_wise(pa.scalar(',"valueQuantity":', TEXT), quantity, pa.scalar("", TEXT))
    return [pc.if_else(pa.array(absent), pa.scalar(reason, TEXT), with_value)]


def observation_resources(
    patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame], context: ExportContext, refs: References
) -> Resources:
    """Measured observations (blood pressure pairs as panels), symptoms, causes of death and smoking status;
    units and lab reference ranges from the context's observation reference."""
    reference = context.observation_reference
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
        *_observation_parts(single, refs, _profiles(single), _observation_codes(single)),
        *_values(single, reference),
        _lab_interpretation(single, reference),
    ]
    measured = build(
        "Observation", single, single["row"].to_numpy(), parts, refs.line_end, encounter=single["encounter_id"]
    )
    panels = _blood_pressure_panels(pairs, refs, reference)
    symptoms = tables["symptoms"]  # as presented: at the encounter and time it was reported (never: not written)
    symptoms = symptoms[symptoms["reported_time"].notna()].assign(time=symptoms["reported_time"], category="exam")
    symptom = build(
        "Observation",
        symptoms,
        symptoms["row"].to_numpy(),
        [
            *_observation_parts(symptoms, refs, _profiles(symptoms), concepts(symptoms)),
            ',"valueQuantity":',
            quantities(symptoms["severity"].round(2).to_numpy(), "{score}", reference),
        ],
        refs.line_end,
        encounter=symptoms["encounter_id"],
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
        encounter=deaths["encounter_id"],
    )
    smoking = smoking_status_resources(patients, tables, context.library, context.seed, refs)
    return concat("Observation", [measured, panels, symptom, cause, smoking])


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
    return build(
        "Observation",
        pairs,
        pairs["row"].to_numpy(),
        [
            *_observation_parts(pairs, refs, meta(us_core.BLOOD_PRESSURE), panel),
            ',"component":[',
            component(SYSTOLIC, "Systolic blood pressure", pairs["value"].to_numpy()),
            ",",
            component(DIASTOLIC, "Diastolic blood pressure", pairs["value_diastolic"].to_numpy()),
            "]",
        ],
        refs.line_end,
        encounter=pairs["encounter_id"],
    )


def smoking_status_resources(
    patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame], library: Library, seed: int, refs: References
) -> Resources:
    """A US Core smoking status at every wellness visit of a patient old enough (rules/smoking_status.yaml):
    the finding that began last at or before the visit, else never smoked. None where no module records
    the findings (the library does not model smoking)."""
    rules = library.smoking_status
    findings = _keys(rules.findings)
    declared = _keys([c.code for m in library.modules for c in m.conditions.values()])
    encounters = tables["encounters"]
    models_smoking = bool(findings & declared)
    visits = encounters[(encounters["encounter_class"] == "wellness").to_numpy() & models_smoking]
    born = pd.Series(utc_ms(patients["birth_time"]), index=patients["index"].to_numpy())
    at = utc_ms(visits["start_time"])
    age_days = (at - born.reindex(visits["patient"].to_numpy()).to_numpy()) / np.timedelta64(1, "D")
    visits = visits[age_days >= rules.minimum_age_years * DAYS_PER_YEAR]
    answer = _smoking_answers(visits, tables["conditions"], rules)
    answers = [_concept(a) for a in (rules.never, *rules.findings)]
    ids = resource_ids(seed, visits["patient"].to_numpy(), "SmokingStatus", visits["row"].to_numpy())
    frame = pd.DataFrame(
        {
            "id": pd.Series(ids, dtype=object),
            "patient": visits["patient"].to_numpy(),
            "patient_id": visits["patient_id"].to_numpy(dtype=object),
            "encounter_id": visits["id"].to_numpy(dtype=object),
            "time": visits["start_time"].reset_index(drop=True),
            "category": "social-history",
        }
    )
    return build(
        "Observation",
        frame,
        visits["row"].to_numpy(),
        [
            *_observation_parts(frame, refs, meta(us_core.SMOKING_STATUS), _concept(rules.code)),
            ',"valueCodeableConcept":',
            take(answers, answer),
        ],
        refs.line_end,
        encounter=frame["encounter_id"],
    )


def _smoking_answers(visits: pd.DataFrame, conditions: pd.DataFrame, rules: SmokingStatus) -> np.ndarray:
    """Each visit's answer: 0 (never smoked) or 1 + the index of the finding that began last at or before it."""
    index = {key: i + 1 for i, key in enumerate(f"{CODE_SYSTEMS[c.system]}|{c.code}" for c in rules.findings)}
    episodes = conditions[_code_keys(conditions).isin(index).to_numpy()]
    left = pd.DataFrame(
        {
            "at": utc_ms(visits["start_time"]),
            "patient": visits["patient"].to_numpy(),
            "position": np.arange(len(visits)),
        }
    ).sort_values("at", kind="stable")
    right = pd.DataFrame(
        {
            "at": utc_ms(episodes["onset_time"]),
            "patient": episodes["patient"].to_numpy(),
            "answer": _code_keys(episodes).map(index).to_numpy(np.int64),
        }
    ).sort_values("at", kind="stable")
    matched = pd.merge_asof(left, right, on="at", by="patient", direction="backward")
    answer = np.zeros(len(visits), np.int64)
    answer[matched["position"].to_numpy()] = matched["answer"].fillna(0).to_numpy(np.int64)
    return answer


def _groups(*keys: np.ndarray) -> np.ndarray:
    """A number for each distinct combination of the keys' values, in the order of first appearance (as
    `pd.factorize` numbers a MultiIndex, without making a tuple per row)."""
    group = np.zeros(len(keys[0]), np.int64)
    for key in keys:
        codes, distinct = pd.factorize(key, use_na_sentinel=False)  # a missing value is one of the values
        group, _ = pd.factorize(group * len(distinct) + codes)  # at most rows x distinct values: no overflow
    return group


def diagnostic_report_resources(
    observations: pd.DataFrame, encounters: pd.DataFrame, panels: LabPanels, seed: int, refs: References
) -> Resources:
    """One US Core laboratory DiagnosticReport per (encounter, time, panel) with lab results: the results of a
    panel (`panels`) together, coded with the panel; any other result alone, coded with its own code."""
    labs = observations[(observations["category"] == "laboratory").to_numpy()]
    lab_code = pd.Categorical(labs["code"])
    panel_of = {member: i for i, panel in enumerate(panels.panels) for member in panel.members}
    code_panel = np.array([panel_of.get(str(c), -1) for c in lab_code.categories], np.int64)
    panel = code_panel[lab_code.codes]
    # a panel's results share its key; a result of no panel is keyed by its own code
    report_key = np.where(panel >= 0, panel, len(panels.panels) + lab_code.codes)
    group = _groups(
        labs["patient"].to_numpy(),
        labs["encounter_id"].fillna("").to_numpy(),
        utc_ms(labs["time"]).view(np.int64),
        report_key,
    )
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order], prepend=-1, append=-2))
    members = refs.to("Observation", labs["id"].to_numpy(dtype=object)).take(pa.array(order))
    results = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(bounds, pa.int64()), members), pa.scalar(",", TEXT))
    starts = order[bounds[:-1]]
    columns = ["patient", "patient_id", "encounter_id", "time", "row", "system", "code", "display"]
    reports = labs.iloc[starts][columns].reset_index(drop=True)
    ids = resource_ids(seed, reports["patient"].to_numpy(), "DiagnosticReport", reports["row"].to_numpy())
    reports.insert(0, "id", pd.Series(ids, dtype=object))
    own_code = concepts(reports) if len(reports) else pa.array([], TEXT)
    panel_codes = [_concept(p.code) for p in panels.panels]
    report_panel = panel[starts]
    panel_code = take([*panel_codes, ""], np.where(report_panel >= 0, report_panel, len(panel_codes)))
    code = pc.if_else(pa.array(report_panel >= 0), panel_code, own_code)
    effective = fhir_datetime_text(reports["time"])
    return build(
        "DiagnosticReport",
        reports,
        reports["row"].to_numpy(),
        [
            meta(us_core.DIAGNOSTIC_REPORT_LAB),
            ',"status":"final","category":[',
            coding(TERMINOLOGY + "v2-0074", "LAB", "Laboratory"),
            '],"code":',
            code,
            ',"subject":',
            refs.to("Patient", reports["patient_id"].to_numpy()),
            field("encounter", refs.to("Encounter", reports["encounter_id"].to_numpy())),
            ',"effectiveDateTime":"',
            effective,
            '","issued":"',
            effective,
            '"',
            list_field("performer", refs.to("Organization", _of_encounter(reports, encounters, "organization_id"))),
            ',"result":[',
            results,
            "]",
        ],
        refs.line_end,
        encounter=reports["encounter_id"],
    )


def _ms(times: pd.Series) -> np.ndarray:
    """Epoch milliseconds of each time; _NOT_YET where missing (an end not reached in the record)."""
    values = utc_ms(times)
    return np.where(np.isnat(values), _NOT_YET, values.view(np.int64))


def _medication_category(medications: pd.DataFrame, encounters: pd.DataFrame, deaths: pd.DataFrame) -> np.ndarray:
    """Where each course is taken, as a position in MEDICATION_CATEGORY, by the definitions of the
    medicationrequest-category codes: `inpatient` when it is ordered during a hospital stay (a stay segment,
    or the emergency visit that led to the admission) and over by the stay's end, `outpatient` when it is
    ordered at an office or emergency visit and over by the visit's end (given there), `community`
    otherwise: taken at home, like a prescription from a visit or a course begun in hospital that goes on
    after discharge. A course still open when the patient died ended then."""
    in_stay = (encounters["admit_source"].notna() | encounters["part_of_encounter_id"].notna()).to_numpy()
    setting_end = _ms(encounters["end_time"])
    stays = encounters[in_stay]  # few: group only them
    stay = stays["part_of_encounter_id"].fillna(stays["id"]).to_numpy(dtype=object)
    setting_end[in_stay] = pd.Series(setting_end[in_stay]).groupby(stay).transform("max").to_numpy()
    position = pd.Index(encounters["id"].to_numpy(dtype=object)).get_indexer(medications["encounter_id"])
    known = position >= 0
    ordered_in_stay = known & in_stay[position]
    ends = np.where(known, setting_end[position], -1)
    death = pd.Series(_ms(deaths["time"]), index=deaths["patient"].to_numpy())
    died = death.reindex(medications["patient"].to_numpy(), fill_value=_NOT_YET).to_numpy()
    course_end = np.where(medications["stop_time"].notna().to_numpy(), _ms(medications["stop_time"]), died)
    return np.where(course_end <= ends, np.where(ordered_in_stay, 0, 1), 2)


def _number(value: float) -> int | float:
    """A whole number as an int, so JSON says 1, not 1.0."""
    return int(value) if float(value).is_integer() else value


def _dosage(medications: pd.DataFrame, dosing: MedicationDosing) -> pa.Array:
    """',"dosageInstruction":[...]' of each course from its product's entry in `dosing` (null for a product
    without one), serialised once per product; the schedule is bounded by the course (timing.repeat.boundsPeriod:
    its start and, once stopped, its stop)."""
    product = pd.Categorical(medications["code"].astype(str))
    ordered = {"system": TERMINOLOGY + "dose-rate-type", "code": "ordered", "display": "Ordered"}
    heads: list[str | None] = []
    tails: list[str | None] = []
    for code in product.categories.tolist():
        entry = dosing.dosing.get(code)
        if entry is None:
            heads.append(None)
            tails.append(None)
            continue
        schedule = entry.schedule
        repeat = {
            "frequency": schedule.frequency,
            "period": _number(schedule.period),
            **({"periodMax": _number(schedule.period_max)} if schedule.period_max is not None else {}),
            "periodUnit": schedule.period_unit,
        }
        route = dosing.routes[entry.route]
        unit = entry.dose.unit
        rest = {
            **({"asNeededBoolean": True} if entry.as_needed else {}),
            "route": {"coding": [{"system": SNOMED, "code": route.code, "display": route.display}]},
            "doseAndRate": [
                {
                    "type": {"coding": [ordered]},
                    "doseQuantity": {"value": _number(entry.dose.value), "unit": unit, "system": UCUM, "code": unit},
                }
            ],
        }
        # each course's boundsPeriod goes between the two: dumps(...)[1:] continues an open object and closes it
        heads.append(',"dosageInstruction":[{"text":' + dumps(entry.text) + ',"timing":{"repeat":{"boundsPeriod":')
        tails.append("," + dumps(repeat)[1:] + "}," + dumps(rest)[1:] + "]")
    stop = join(',"end":"', fhir_datetime_text(medications["stop_time"]), '"', skip_nulls=False)
    bounds = join('{"start":"', fhir_datetime_text(medications["start_time"]), '"', stop, "}")
    return join(take(heads, product.codes), bounds, take(tails, product.codes), skip_nulls=False)


def medication_resources(
    medications: pd.DataFrame,
    encounters: pd.DataFrame,
    deaths: pd.DataFrame,
    dosing: MedicationDosing,
    refs: References,
    providers: pd.DataFrame,
) -> Resources:
    """US Core MedicationRequests, one per course: ordered by the practitioner of its encounter (a course
    carried from before a `--history` window has none in the record: the patient's general practitioner, of
    `providers` by patient index, who keeps the medication list), with the category of where it is taken and
    the dosage of its product (`dosing`) over the course."""
    requester = _of_encounter(medications, encounters, "practitioner_id")
    no_encounter = pd.isna(requester)
    general = providers["general_practitioner_id"].reindex(medications["patient"].to_numpy()).to_numpy(dtype=object)
    requester = np.where(no_encounter, general, requester)
    stopped = medications["stop_time"].notna().to_numpy()
    categories = [
        f',"category":[{coding(TERMINOLOGY + "medicationrequest-category", code, display)}]'
        for code, display in MEDICATION_CATEGORY.items()
    ]
    return build(
        "MedicationRequest",
        medications,
        medications["row"].to_numpy(),
        [
            meta(us_core.MEDICATION_REQUEST),
            ',"status":',
            np.where(stopped, '"stopped"', '"active"').astype(object),
            ',"intent":"order"',
            take(categories, _medication_category(medications, encounters, deaths)),
            ',"reportedBoolean":false,"medicationCodeableConcept":',
            concepts(medications),
            ',"subject":',
            refs.to("Patient", medications["patient_id"].to_numpy()),
            field("encounter", refs.to("Encounter", medications["encounter_id"].to_numpy())),
            time_field("authoredOn", medications["start_time"]),
            field("requester", refs.to("Practitioner", requester)),
            list_field("reasonReference", refs.to("Condition", medications["reason_condition_id"].to_numpy())),
            _dosage(medications, dosing),
        ],
        refs.line_end,
        encounter=medications["encounter_id"],
    )


def _performed(
    resource_type: str, frame: pd.DataFrame, encounters: pd.DataFrame, refs: References, names: tuple[str, ...]
) -> Resources:
    """Procedures or immunizations: one completed act per row, done by the practitioner at the location of its
    encounter. `names`: its US Core profile, and the resource type's names for its code, patient and time."""
    profile, code, patient, time = names
    extra = ',"primarySource":true' if resource_type == "Immunization" else ""
    return build(
        resource_type,
        frame,
        frame["row"].to_numpy(),
        [
            meta(profile),
            f',"status":"completed"{extra},"{code}":',
            concepts(frame),
            f',"{patient}":',
            refs.to("Patient", frame["patient_id"].to_numpy()),
            field("encounter", refs.to("Encounter", frame["encounter_id"].to_numpy())),
            time_field(time, frame["time"]),
            _performer(frame, encounters, refs),
            field("location", refs.to("Location", _of_encounter(frame, encounters, "location_id"))),
        ],
        refs.line_end,
        encounter=frame["encounter_id"],
    )


def procedure_resources(procedures: pd.DataFrame, encounters: pd.DataFrame, refs: References) -> Resources:
    return _performed(
        "Procedure", procedures, encounters, refs, (us_core.PROCEDURE, "code", "subject", "performedDateTime")
    )


def immunization_resources(immunizations: pd.DataFrame, encounters: pd.DataFrame, refs: References) -> Resources:
    return _performed(
        "Immunization",
        immunizations,
        encounters,
        refs,
        (us_core.IMMUNIZATION, "vaccineCode", "patient", "occurrenceDateTime"),
    )


def build_resources(
    patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame], context: ExportContext, refs: References
) -> dict[str, Resources]:
    """Every resource of one chunk, by resource type (each in patient then row order)."""
    encounters = tables["encounters"]
    resources = {
        "Patient": patients_resources(
            patients,
            context.displays,
            context.directory,
            communication(patients, context.library.languages, context.seed),
            refs,
        ),
        "Coverage": coverage_resources(
            patients, tables, context.library.coverage, context.directory, context.seed, refs
        ),
        "AllergyIntolerance": allergy_resources(patients, tables, context.library.allergies, context.seed, refs),
        "Encounter": encounter_resources(tables["encounters"], refs),
        "Condition": condition_resources(tables["conditions"], context.library, context.seed, refs),
        "Observation": observation_resources(patients, tables, context, refs),
        "DiagnosticReport": diagnostic_report_resources(
            tables["observations"], encounters, context.library.lab_panels, context.seed, refs
        ),
        "MedicationRequest": medication_resources(
            tables["medications"],
            encounters,
            tables["deaths"],
            context.library.medication_dosing,
            refs,
            context.directory.patient_providers(patients).set_index(patients["index"].to_numpy()),
        ),
        "Procedure": procedure_resources(tables["procedures"], encounters, refs),
        "Immunization": immunization_resources(tables["immunizations"], encounters, refs),
    }
    resources |= care_resources(patients, tables, context, refs)
    resources["DocumentReference"] = document_resources(patients, tables, context, refs)
    resources["Provenance"] = provenance_resources(patients, tables, resources, context, refs)
    return resources
