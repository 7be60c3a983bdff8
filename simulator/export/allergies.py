"""Reported allergies -> US Core AllergyIntolerance (rules/allergies.yaml), drawn after the kernel.

For each allergen, a patient with at least one encounter has the allergy on record with the share of their
sex and age band at the end of the record (`coverage.record_end`), a pure function of the seed, the patient
index and the rules; allergens are drawn independently. The allergy is recorded at the patient's first
encounter on or after a time drawn uniformly between birth and the patient's last encounter (so always in
life and in the record): recordedDate is that encounter's start, the encounter and its practitioner
(`recorder`) are named. clinicalStatus is active; verificationStatus confirmed or unconfirmed with the
band's confirmed share; the band's reaction profile gives the reaction recorded (its manifestation) and the
criticality. Allergies are few (a few per ten patients): every draw is a column, every distinct JSON piece
is serialised once and taken by its row's number.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from simulator.export import us_core
from simulator.export.coverage import band_of, record_end
from simulator.export.fhir_text import TERMINOLOGY, References, Resources, build, dumps, field, meta, take
from simulator.export.ids import fhir_datetime_text, resource_ids, uniforms, utc_ms
from simulator.model.allergies_coverage import Allergies
from simulator.model.schema import CODE_SYSTEMS, Code

CLINICAL = TERMINOLOGY + "allergyintolerance-clinical"
VERIFICATION = TERMINOLOGY + "allergyintolerance-verification"
# draws of the "Allergy" tag, by key: allergen number * _DRAWS + one of these
_DRAWS = 4
_HAS, _WHEN, _CONFIRMED, _REACTION = range(_DRAWS)


def _concept(code: Code, text: str) -> dict:
    return {"coding": [{"system": CODE_SYSTEMS[code.system], "code": code.code, "display": code.display}], "text": text}


def _outcomes(rules: Allergies) -> tuple[dict[str, int], list[str], list[str]]:
    """Every reaction outcome of every profile, numbered: the first number of each profile, and the
    criticality and reaction JSON of each outcome (a profile's reactions, then its no-reaction outcome)."""
    first, criticality, reaction = {}, [], []
    for name, profile in rules.reaction_profiles.items():
        first[name] = len(criticality)
        for r in profile.reactions:
            criticality.append(f',"criticality":"{r.criticality}"')
            manifestation = rules.manifestations[r.manifestation]
            reaction.append(
                f',"reaction":[{{"manifestation":[{dumps(_concept(manifestation, manifestation.display))}]}}]'
            )
        criticality.append(f',"criticality":"{profile.otherwise}"')
        reaction.append("")
    return first, criticality, reaction


def allergy_rows(
    patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame], rules: Allergies, seed: int
) -> pd.DataFrame:
    """One row per allergy on record, in patient then allergen order: patient, patient_id, allergen (its
    number in the rules), confirmed, outcome (a `_outcomes` number) and the recording encounter's id
    (encounter_id), start (recorded_time) and practitioner (practitioner_id)."""
    index = patients["index"].to_numpy(np.int64)
    birth = utc_ms(patients["birth_time"]).view(np.int64)
    _, age = record_end(patients, tables)
    female = (patients["sex"].astype(str) == "F").to_numpy()
    encounters = tables["encounters"]
    starts = pd.Series(utc_ms(encounters["start_time"]).view(np.int64), index=encounters["patient"].to_numpy())
    last = starts.groupby(level=0).max().reindex(index)
    seen = last.notna().to_numpy()
    last_ms = last.fillna(0).to_numpy(np.int64)
    first, _, _ = _outcomes(rules)
    found = []
    for number, allergen in enumerate(rules.allergens.values()):
        bands = allergen.bands
        band = band_of([b.min_age_years for b in bands], age)

        def draw(purpose: int, number: int = number) -> np.ndarray:
            return uniforms(seed, index, "Allergy", np.full(len(index), number * _DRAWS + purpose))

        prevalence = np.where(
            female, np.array([b.female for b in bands])[band], np.array([b.male for b in bands])[band]
        )
        has = seen & (draw(_HAS) < prevalence)
        confirmed = draw(_CONFIRMED) < np.array([b.confirmed_share for b in bands])[band]
        outcome = np.zeros(len(index), np.int64)
        reaction_draw = draw(_REACTION)
        for b, spec in enumerate(bands):
            profile = rules.reaction_profiles[spec.reactions]
            in_band = band == b
            cumulative = np.cumsum([r.share for r in profile.reactions])
            outcome[in_band] = first[spec.reactions] + np.searchsorted(cumulative, reaction_draw[in_band], side="right")
        when = birth + (draw(_WHEN) * (last_ms - birth)).astype(np.int64)
        found.append(
            pd.DataFrame(
                {
                    "patient": index[has],
                    "patient_id": patients["id"].to_numpy(dtype=object)[has],
                    "allergen": number,
                    "confirmed": confirmed[has],
                    "outcome": outcome[has],
                    "when": np.minimum(when, last_ms)[has],
                }
            )
        )
    rows = pd.concat(found, ignore_index=True)
    visits = pd.DataFrame(
        {
            "patient": encounters["patient"].to_numpy(np.int64),
            "when": starts.to_numpy(),
            "encounter_id": encounters["id"].to_numpy(dtype=object),
            "recorded_ms": starts.to_numpy(),
            "practitioner_id": encounters["practitioner_id"].to_numpy(dtype=object),
        }
    ).sort_values("when", kind="stable")
    recorded = pd.merge_asof(
        rows.sort_values("when", kind="stable"), visits, on="when", by="patient", direction="forward"
    )
    recorded = recorded.sort_values(["patient", "allergen"], kind="stable").reset_index(drop=True)
    recorded["recorded_time"] = pd.to_datetime(recorded.pop("recorded_ms"), unit="ms", utc=True)
    return recorded


def allergy_resources(
    patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame], rules: Allergies, seed: int, refs: References
) -> Resources:
    rows = allergy_rows(patients, tables, rules, seed)
    allergen = rows["allergen"].to_numpy()
    rows.insert(0, "id", resource_ids(seed, rows["patient"].to_numpy(), "AllergyIntolerance", allergen))
    _, criticality, reaction = _outcomes(rules)
    substances = [f',"type":"{a.type}","category":["{a.category}"]' for a in rules.allergens.values()]
    codes = [dumps(_concept(a.code, a.text)) for a in rules.allergens.values()]
    statuses = [
        dumps({"coding": [{"system": VERIFICATION, "code": code, "display": code.capitalize()}]})
        for code in ("unconfirmed", "confirmed")
    ]
    clinical = dumps({"coding": [{"system": CLINICAL, "code": "active", "display": "Active"}]})
    outcome = rows["outcome"].to_numpy()
    return build(
        "AllergyIntolerance",
        rows,
        allergen - len(rules.allergens),  # before the patient's event rows, in allergen order
        [
            meta(us_core.ALLERGY_INTOLERANCE),
            f',"clinicalStatus":{clinical},"verificationStatus":',
            take(statuses, rows["confirmed"].to_numpy().astype(np.int64)),
            take(substances, allergen),
            take(criticality, outcome),
            ',"code":',
            take(codes, allergen),
            ',"patient":',
            refs.to("Patient", rows["patient_id"].to_numpy()),
            ',"encounter":',
            refs.to("Encounter", rows["encounter_id"].to_numpy()),
            ',"recordedDate":"',
            fhir_datetime_text(rows["recorded_time"]),
            '"',
            field("recorder", refs.to("Practitioner", rows["practitioner_id"].to_numpy())),
            take(reaction, outcome),
        ],
        refs.line_end,
        encounter=rows["encounter_id"],
    )
