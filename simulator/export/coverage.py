"""Health insurance -> US Core Coverage (rules/coverage.yaml), drawn after the kernel.

Patients have no income attribute: each patient's primary payer (Medicare, Medicaid, private) or none is
drawn by age alone, from the shares of the patient's age band at the end of the record (the latest time in
it: `clinical_tables.last_recorded`), a pure function of the seed, the patient index and the rules. An insured
patient gets one Coverage: status active, the payer type (Source of Payment Typology), a member number
(`identifier` and `subscriberId`), the patient as beneficiary and subscriber (`relationship` self), the
period from the birthday that opens the band (the 65th for Medicare at 65 and over, birth for children) to
death, the payer Organization of the provider directory (a private patient's insurer drawn among the
directory's private insurers) and the plan as `class`. An uninsured patient gets no Coverage.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from simulator.days import DAYS_PER_YEAR
from simulator.export import us_core
from simulator.export.clinical_tables import last_recorded
from simulator.export.directory import Directory
from simulator.export.fhir_text import ID_SYSTEM, TERMINOLOGY, References, Resources, build, dumps, join, meta, take
from simulator.export.ids import fhir_dates, fhir_datetime_text, resource_ids, uniforms, utc_ms
from simulator.model.allergies_coverage import CoverageKind, CoverageRules

KINDS: tuple[str, ...] = CoverageKind.__args__  # type: ignore[attr-defined]
_MS_PER_YEAR = DAYS_PER_YEAR * 86_400_000
_MEMBER_DIGITS = 10
# draws of the "Insurance" tag, by key
_PAYER, _INSURER, _MEMBER = 0, 1, 2


def record_end(patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """Each patient's last recorded time (epoch ms) and age then (years): the time the record describes."""
    end = last_recorded(patients, tables).to_numpy().astype(np.int64)
    birth = utc_ms(patients["birth_time"]).view(np.int64)
    return end, (end - birth) / _MS_PER_YEAR


def band_of(min_ages: list[float], age_years: np.ndarray) -> np.ndarray:
    """The age band of each age: the last band whose lower age it has reached."""
    return np.maximum(np.searchsorted(np.asarray(min_ages), age_years, side="right") - 1, 0)


def birthdays(birth: pd.Series, years: np.ndarray) -> np.ndarray:
    """The `years`-th birthday of each birth time (datetime64[ms]; 29 February's is 1 March in other years)."""
    born = utc_ms(birth)
    month = born.astype("datetime64[M]")
    into_month = born - month.astype("datetime64[ms]")
    return (month + (np.round(years * 12).astype(np.int64)).astype("timedelta64[M]")).astype(
        "datetime64[ms]"
    ) + into_month


def coverage_rows(
    patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame], rules: CoverageRules, directory: Directory, seed: int
) -> pd.DataFrame:
    """One row per insured patient: patient, patient_id, kind (a KINDS position), payer (Organization id),
    member number and period start (date text) and end (death time)."""
    index = patients["index"].to_numpy(np.int64)
    _, age = record_end(patients, tables)
    band = band_of([b.min_age_years for b in rules.bands], age)
    cumulative = np.cumsum([[b.uninsured, *b.payer_shares()] for b in rules.bands], axis=1)
    drawn = (uniforms(seed, index, "Insurance", np.full(len(index), _PAYER))[:, None] >= cumulative[band]).sum(axis=1)
    kind = np.minimum(drawn, len(KINDS)) - 1  # -1: uninsured (a draw past a sum rounded below 1: the last kind)
    insured = kind >= 0
    private = np.array(directory.private_payer_ids, dtype=object)
    pick = (uniforms(seed, index, "Insurance", np.full(len(index), _INSURER)) * len(private)).astype(np.int64)
    payer = np.array([directory.payers[k] for k in KINDS], dtype=object)[np.maximum(kind, 0)]
    payer = np.where(kind == KINDS.index("private"), private[pick], payer)
    member = (uniforms(seed, index, "Insurance", np.full(len(index), _MEMBER)) * 10.0**_MEMBER_DIGITS).astype(np.int64)
    band_start = np.array([b.min_age_years for b in rules.bands])[band]
    start = pd.Series(birthdays(patients["birth_time"], band_start))
    return pd.DataFrame(
        {
            "patient": index,
            "patient_id": patients["id"].to_numpy(dtype=object),
            "kind": kind,
            "payer": payer,
            "member": pd.Series(member + 10**_MEMBER_DIGITS).astype(str).str[1:].to_numpy(dtype=object),  # zero-padded
            "start": fhir_dates(start),
            "end_time": patients["death_time"].reset_index(drop=True),
        }
    )[insured].reset_index(drop=True)


def coverage_resources(
    patients: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    rules: CoverageRules,
    directory: Directory,
    seed: int,
    refs: References,
) -> Resources:
    rows = coverage_rows(patients, tables, rules, directory, seed)
    rows.insert(0, "id", resource_ids(seed, rows["patient"].to_numpy(), "Coverage", np.zeros(len(rows), np.int64)))
    types, plans = [], []
    for kind in KINDS:
        payer = rules.payers[kind]  # type: ignore[index]
        coding = {"system": rules.type_system, "code": payer.type.code, "display": payer.type.display}
        types.append(dumps({"coding": [coding], "text": payer.type.display}))
        plan_type = {"coding": [{"system": TERMINOLOGY + "coverage-class", "code": "plan", "display": "Plan"}]}
        plans.append(dumps([{"type": plan_type, "value": payer.plan.value, "name": payer.plan.name}]))
    member_type = {"coding": [{"system": TERMINOLOGY + "v2-0203", "code": "MB", "display": "Member Number"}]}
    relationship = {
        "coding": [{"system": TERMINOLOGY + "subscriber-relationship", "code": "self", "display": "Self"}],
        "text": "Self",
    }
    member = rows["member"].to_numpy(dtype=object)
    kind = rows["kind"].to_numpy()
    end = join(',"end":"', fhir_datetime_text(rows["end_time"]), '"', skip_nulls=False)
    patient = refs.to("Patient", rows["patient_id"].to_numpy())
    return build(
        "Coverage",
        rows,
        np.full(len(rows), -1, np.int64),
        [
            meta(us_core.COVERAGE),
            f',"identifier":[{{"type":{dumps(member_type)},"system":"{ID_SYSTEM}coverage-member","value":"',
            member,
            '"}],"status":"active","type":',
            take(types, kind),
            ',"subscriber":',
            patient,
            ',"subscriberId":"',
            member,
            '","beneficiary":',
            patient,
            f',"relationship":{dumps(relationship)},"period":{{"start":"',
            rows["start"].to_numpy(dtype=object),
            '"',
            end,
            '},"payor":[',
            refs.to("Organization", rows["payer"].to_numpy()),
            '],"class":',
            take(plans, kind),
        ],
        refs.line_end,
    )
