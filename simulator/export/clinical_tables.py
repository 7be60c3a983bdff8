"""The event table of a chunk -> one table per kind of clinical fact, one row per fact.

- encounters: start, end, class, type code, reason (condition code and the Condition it points to), and
  the hospital stay each belongs to, with how it began (admit source) and ended (discharge disposition)
- conditions: one row per episode (onset -> resolution) with its diagnosis time and encounter
- observations, procedures, immunizations, symptoms, deaths: one row per event
- medications: one row per course (start -> stop)

Every row carries its FHIR resource `id` (see `ids`), the patient's `patient_id` and, where it
happened in one, its `encounter_id`, so the tables join with each other and with the FHIR output.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from simulator.export.context import ExportContext
from simulator.export.history import keep_history
from simulator.export.ids import resource_ids, utc_ms

# Which table each event kind of the kernel feeds (simulator.kernel.EVENT_KINDS); a kind missing
# here is an error, so a new kind cannot be dropped silently.
KIND_TABLES = {
    "encounter_start": "encounters",
    "encounter_end": "encounters",
    "condition_onset": "conditions",
    "condition_diagnosis": "conditions",
    "condition_resolved": "conditions",
    "medication_start": "medications",
    "medication_stop": "medications",
    "procedure": "procedures",
    "immunization": "immunizations",
    "observation": "observations",
    "symptom": "symptoms",
    "death": "deaths",
}
TABLES = (
    "encounters",
    "conditions",
    "observations",
    "medications",
    "procedures",
    "immunizations",
    "symptoms",
    "deaths",
)
_CODED = ["system", "code", "display"]
# Encounter classes of a hospital: an emergency visit and the segments of a stay (ward, ICU).
_ACUTE = ("emergency", "inpatient", "icu")
_STAY = ("inpatient", "icu")
# A stay segment that starts at most this long after the patient's previous acute encounter ended continues
# it: the modules admit a patient 0 to 10 minutes after the emergency visit ends (the admission decision)
# and move a patient from the ICU to the ward when the ICU segment ends.
TRANSFER_GAP = pd.Timedelta(hours=1)
# A symptom that begins outside an encounter is reported at the first encounter after it in which its module
# records something, at most this long after (an episode's visit comes days to weeks after its onset; a
# symptom never presented by then stays in the ground truth only).
SYMPTOM_REPORT_WITHIN = pd.Timedelta(days=90)


def build_tables(patients: pd.DataFrame, events: pd.DataFrame, context: ExportContext) -> dict[str, pd.DataFrame]:
    """Per-type tables of one chunk, with ids derived from the context's seed; the context's condition
    codes map condition names (the event table's `reason`) to their (system, code, display), to link
    encounters with the Condition they are for. With the context's `history` (`--history YEARS`), the
    tables of the last years of each record (`history.keep_history`), which every exporter reads."""
    unknown = set(events["kind"].cat.categories) - set(KIND_TABLES)
    if unknown:
        raise ValueError(f"no exporter for event kinds {sorted(unknown)}")
    seed = context.seed
    ev = _with_keys(patients, events, seed)
    kind = _kinds(ev)
    conditions = _conditions(ev[np.isin(kind, ["condition_onset", "condition_diagnosis", "condition_resolved"])], seed)
    deaths = ev[kind == "death"]
    unspecified = context.library.mortality.cause.code
    encounters = _encounters(ev, kind, seed, conditions, context.condition_codes, deaths, unspecified)
    encounters = encounters.join(context.directory.encounter_providers(encounters, patients))
    encounters = _hospital_stays(encounters, deaths)
    reasons = encounters.set_index("id")["reason_condition_id"]
    tables = {
        "encounters": encounters,
        "conditions": conditions,
        "observations": _rows(ev[kind == "observation"], seed, "Observation", ["value", "unit", "category"]),
        "medications": _medications(ev[np.isin(kind, ["medication_start", "medication_stop"])], seed, reasons),
        "procedures": _rows(ev[kind == "procedure"], seed, "Procedure", []),
        "immunizations": _rows(ev[kind == "immunization"], seed, "Immunization", []),
        "symptoms": _symptoms(ev, kind, seed),
        "deaths": _died_in(_rows(deaths, seed, "Death", []), encounters),
    }
    if context.history is not None:
        tables = keep_history(patients, tables, last_recorded(patients, tables), context.history)
    return tables


def _died_in(deaths: pd.DataFrame, encounters: pd.DataFrame) -> pd.DataFrame:
    """The deaths with the encounter each ended: the terminal stay the death event records, else the acute
    encounter that ended with the patient expired (discharge disposition `exp`); empty outside one."""
    expired = encounters[encounters["discharge_disposition"] == "exp"].drop_duplicates("patient")
    ended = deaths["patient"].map(expired.set_index("patient")["id"]).astype(object)
    return deaths.assign(encounter_id=deaths["encounter_id"].astype(object).fillna(ended))


def _symptoms(ev: pd.DataFrame, kind: np.ndarray, seed: int) -> pd.DataFrame:
    """One row per symptom: `time` is when it began (the ground truth), `reported_time` and `encounter_id`
    when and where the patient presented it. A symptom that began in an encounter is reported there; one
    that began outside any is reported at the first encounter in which its module records something at
    or after its onset, within SYMPTOM_REPORT_WITHIN and before the same module's next onset of the same
    symptom; one never presented has neither (a record holds only what was presented)."""
    table = _rows(ev[kind == "symptom"], seed, "Symptom", ["value"]).rename(columns={"value": "severity"})
    table["reported_time"] = table["time"].where(table["encounter_id"].notna())
    loose = table[table["encounter_id"].isna()]
    if loose.empty:
        return table
    # only the events of a patient and module with a symptom to present can present it: the rest are left
    # out before the sort and the match (most of a chunk's events are in an encounter)
    of_loose = np.isin(ev["patient"].to_numpy(), loose["patient"].unique()) & np.isin(
        ev["module"].cat.codes.to_numpy(), loose["module"].cat.codes.unique()
    )
    seen = ev[of_loose & ev["encounter_id"].notna().to_numpy() & ~np.isin(kind, ["symptom", "encounter_end"])]
    keys = ["patient", "module"]
    visits = pd.DataFrame(
        {
            "patient": seen["patient"],
            "module": seen["module"].astype(str),
            "seen_time": seen["time"],
            "seen_encounter": seen["encounter_id"],
        }
    ).sort_values("seen_time", kind="stable")
    onsets = pd.DataFrame(
        {"patient": loose["patient"], "module": loose["module"].astype(str), "time": loose["time"]}
    ).rename_axis("position")
    onsets = onsets.reset_index().sort_values(["time", "position"], kind="stable")
    found = pd.merge_asof(
        onsets,
        visits,
        left_on="time",
        right_on="seen_time",
        by=keys,
        direction="forward",
        tolerance=SYMPTOM_REPORT_WITHIN,
    ).set_index("position")
    every = table.assign(module=table["module"].astype(str))
    following = every.groupby([*keys, "code"], sort=False)["time"].shift(-1)  # the next onset of the same
    next_onset = following.reindex(found.index)
    before_next = next_onset.isna() | (found["seen_time"] < next_onset)
    reported = found[found["seen_time"].notna() & before_next.to_numpy()]
    table.loc[reported.index, "reported_time"] = reported["seen_time"].to_numpy()
    table.loc[reported.index, "encounter_id"] = reported["seen_encounter"].to_numpy()
    return table


def _kinds(ev: pd.DataFrame) -> np.ndarray:
    """Each event's kind as fixed-width numpy text, taken from the categories by code (not
    converted per row), so comparisons run in numpy."""
    kind = ev["kind"].cat
    return np.asarray(kind.categories, dtype=str)[kind.codes]


def _with_keys(patients: pd.DataFrame, events: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The events with `row` (position within the patient), `patient_id` and `encounter_id`."""
    patient = events["patient"].to_numpy()
    first = np.searchsorted(patient, patient, side="left")
    position = np.searchsorted(patients["index"].to_numpy(), patient)
    encounter = events["encounter"].to_numpy().astype(np.int64)
    has_encounter = encounter >= 0
    encounter_id = np.full(len(events), None, dtype=object)
    # one id per (patient, encounter), then taken by every event of that encounter
    keys, which = np.unique((patient[has_encounter] << 32) | encounter[has_encounter], return_inverse=True)
    encounter_id[has_encounter] = resource_ids(seed, keys >> 32, "Encounter", keys & 0xFFFFFFFF)[which]
    patient_ids = patients["id"].to_numpy(dtype=object)[position] if len(patients) else np.array([], dtype=object)
    return events.assign(
        row=np.arange(len(events)) - first,
        patient_id=pd.Series(patient_ids, index=events.index, dtype=object),
        encounter_id=pd.Series(encounter_id, index=events.index, dtype=object),
    )


def _insert_ids(frame: pd.DataFrame, seed: int, tag: str, key: str) -> None:
    """The resource id of each row as the first column (object dtype: it is joined into JSON text)."""
    ids = resource_ids(seed, frame["patient"].to_numpy(), tag, frame[key].to_numpy())
    frame.insert(0, "id", pd.Series(ids, index=frame.index, dtype=object))


def _rows(ev: pd.DataFrame, seed: int, tag: str, extra: list[str]) -> pd.DataFrame:
    """One row per event, with its resource id."""
    out = ev[["patient", "patient_id", "row", "time", *_CODED, *extra, "encounter_id", "module", "state"]]
    out = out.reset_index(drop=True)
    _insert_ids(out, seed, tag, "row")
    return out


def _nth(ev: pd.DataFrame) -> np.ndarray:
    """How many events of the same (patient, code) precede each event of `ev`."""
    return ev.groupby([ev["patient"], ev["code"].cat.codes], sort=False).cumcount().to_numpy()


def _pair(starts: pd.DataFrame, ends: pd.DataFrame) -> pd.DataFrame:
    """Each start with its end: the k-th end of a (patient, code) closes its k-th start. Two modules
    may share a code with overlapping courses; first in, first out keeps every end after its start."""
    keys = ["patient", "code_index", "nth"]
    starts = starts.assign(code_index=starts["code"].cat.codes, nth=_nth(starts))
    ends = ends.assign(code_index=ends["code"].cat.codes, nth=_nth(ends)).drop(columns=["code"])
    return starts.merge(ends, on=keys, how="left").drop(columns=["code_index", "nth"])


def _conditions(ev: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One row per condition episode: onset, diagnosis (time, encounter) and resolution. A diagnosis
    belongs to the latest onset of its code before it."""
    kind = _kinds(ev)
    columns = ["patient", "patient_id", "row", "time", *_CODED, "encounter_id", "module"]
    onsets = ev[kind == "condition_onset"][columns].rename(
        columns={"time": "onset_time", "encounter_id": "onset_encounter_id"}
    )
    resolutions = ev[kind == "condition_resolved"][["patient", "code", "time"]]
    out = _pair(onsets, resolutions.rename(columns={"time": "resolution_time"}))
    episode = (
        pd.Series(kind == "condition_onset")
        .groupby([ev["patient"].to_numpy(), ev["code"].cat.codes.to_numpy()])
        .cumsum()
        - 1
    ).to_numpy()
    is_diagnosis = kind == "condition_diagnosis"
    diagnoses = pd.DataFrame(
        {
            "patient": ev["patient"].to_numpy()[is_diagnosis],
            "code_index": ev["code"].cat.codes.to_numpy()[is_diagnosis],
            "episode": episode[is_diagnosis],
            "diagnosis_time": ev["time"].array[is_diagnosis],
            "diagnosis_encounter_id": ev["encounter_id"].to_numpy(dtype=object)[is_diagnosis],
        }
    ).drop_duplicates(["patient", "code_index", "episode"])
    out = out.assign(code_index=out["code"].cat.codes, episode=_nth(out))
    out = out.merge(diagnoses, on=["patient", "code_index", "episode"], how="left").drop(
        columns=["code_index", "episode"]
    )
    out = out.reset_index(drop=True)
    _insert_ids(out, seed, "Condition", "row")
    return out


def _encounters(
    ev: pd.DataFrame,
    kind: np.ndarray,
    seed: int,
    conditions: pd.DataFrame,
    condition_codes: Mapping[str, tuple[str, str, str]],
    deaths: pd.DataFrame,
    unspecified_cause: str,
) -> pd.DataFrame:
    """One row per encounter: start, end (missing while open), class, type, reason: the module's, and for
    a terminal stay (the encounter a death event records, rules/mortality.yaml in_hospital) the cause of the
    death, unless that is the unspecified cause (`mortality.cause`, Death (event))."""
    starts = ev[kind == "encounter_start"]
    ends = ev[kind == "encounter_end"][["patient", "encounter", "time"]].rename(columns={"time": "end_time"})
    out = starts[
        ["patient", "patient_id", "encounter", "row", "time", "encounter_class", *_CODED, "reason", "module", "state"]
    ].rename(columns={"time": "start_time"})
    out = out.merge(ends, on=["patient", "encounter"], how="left").reset_index(drop=True)
    _insert_ids(out, seed, "Encounter", "encounter")
    reason = out["reason"].astype(object)
    for position, column in enumerate(("reason_system", "reason_code", "reason_display")):
        labels = {name: code[position] for name, code in condition_codes.items()}
        out[column] = pd.Series(reason.map(labels).to_numpy(dtype=object), dtype=object)
    specified = deaths[(deaths["encounter"] >= 0) & (deaths["code"].astype(object) != unspecified_cause)]
    cause = specified.set_index(["patient", "encounter"])[_CODED].astype(object)
    cause = cause.reindex(pd.MultiIndex.from_frame(out[["patient", "encounter"]]))
    terminal = out["reason_code"].isna().to_numpy() & cause["code"].notna().to_numpy()
    for column in _CODED:
        out.loc[terminal, f"reason_{column}"] = cause[column].to_numpy(dtype=object)[terminal]
    out["reason_condition_id"] = pd.Series(_reason_conditions(out, conditions), dtype=object)
    return out


def _hospital_stays(encounters: pd.DataFrame, deaths: pd.DataFrame) -> pd.DataFrame:
    """The encounters with the hospital stay each belongs to and how acute encounters began and ended.

    A stay segment (inpatient or ICU) continues the patient's previous acute encounter when it starts before
    that one ended or within TRANSFER_GAP of its end: after an emergency visit it is an admission from the
    emergency department, after another segment a transfer within the hospital. The stay is its first
    segment (the admission encounter): the emergency visit that led to it and every later segment point to
    it (`part_of_encounter_id`). The admission's `admit_source` is `emd` from the emergency department or for
    a terminal stay (no module: a dying patient comes in as an emergency, mortality.in_hospital), else `mp`
    (a planned admission: a physician's referral). `discharge_disposition` (acute encounters that
    ended): `exp` when the patient died as it ended, none when it continues into a segment (a transfer or an
    admission is not a discharge), else `home`. Codes of http://terminology.hl7.org/CodeSystem/admit-source
    and discharge-disposition."""
    n = len(encounters)
    klass = encounters["encounter_class"].astype(object).to_numpy()
    patient = encounters["patient"].to_numpy()
    start, end = utc_ms(encounters["start_time"]), utc_ms(encounters["end_time"])
    # each acute encounter's previous acute encounter of the same patient (rows are in time order)
    acute = np.flatnonzero(np.isin(klass, _ACUTE))
    previous = np.full(n, -1, np.int64)
    previous[acute[1:]] = acute[:-1]
    has_previous = previous >= 0
    has_previous[has_previous] = patient[previous[has_previous]] == patient[has_previous]
    before = previous[has_previous]
    near = np.isnat(end[before]) | (end[before] >= start[has_previous] - TRANSFER_GAP.to_timedelta64())
    continues = np.zeros(n, bool)  # continues the previous acute encounter
    continues[np.flatnonzero(has_previous)[near]] = True
    continues &= np.isin(klass, _STAY)
    from_emergency = continues & (klass[np.maximum(previous, 0)] == "emergency")
    transfer = continues & ~from_emergency
    stay = np.arange(n)  # each row's stay: follow transfers back to the admission
    stay[transfer] = previous[transfer]
    while (stay[stay] != stay).any():
        stay = stay[stay]
    ids = encounters["id"].to_numpy(dtype=object)
    part_of = np.full(n, None, dtype=object)
    part_of[transfer] = ids[stay[transfer]]
    part_of[previous[from_emergency]] = ids[from_emergency]
    admission = np.isin(klass, _STAY) & ~transfer
    emergency = from_emergency | encounters["module"].isna().to_numpy()
    admit_source = np.where(admission, np.where(emergency, "emd", "mp"), None).astype(object)
    death_at = pd.Series(utc_ms(deaths["time"]), index=deaths["patient"].to_numpy())
    died = end == death_at.reindex(patient).to_numpy()
    followed = np.zeros(n, bool)
    followed[previous[continues]] = True
    discharged = np.isin(klass, _ACUTE) & ~np.isnat(end) & ~followed
    disposition = np.where(discharged, np.where(died, "exp", "home"), None).astype(object)
    return encounters.assign(
        part_of_encounter_id=pd.Series(part_of, index=encounters.index, dtype=object),
        admit_source=pd.Series(admit_source, index=encounters.index, dtype=object),
        discharge_disposition=pd.Series(disposition, index=encounters.index, dtype=object),
    )


def _reason_conditions(encounters: pd.DataFrame, conditions: pd.DataFrame) -> np.ndarray:
    """The Condition each encounter is for: the patient's episode of the reason's code that was
    diagnosed at or before the encounter started and not resolved before it (None if none)."""
    result = np.full(len(encounters), None, dtype=object)
    wanted = encounters["reason_code"].notna().to_numpy()
    diagnosed = conditions[conditions["diagnosis_time"].notna()]
    if not wanted.any() or diagnosed.empty:
        return result
    left = pd.DataFrame(
        {
            "at": utc_ms(encounters.loc[wanted, "start_time"]),
            "patient": encounters.loc[wanted, "patient"].to_numpy(),
            "code": encounters.loc[wanted, "reason_code"].to_numpy(dtype=object),
            "position": np.flatnonzero(wanted),
        }
    ).sort_values("at", kind="stable")
    right = pd.DataFrame(
        {
            "at": utc_ms(diagnosed["diagnosis_time"]),
            "patient": diagnosed["patient"].to_numpy(),
            "code": diagnosed["code"].to_numpy(dtype=object),
            "condition_id": diagnosed["id"].to_numpy(dtype=object),
            "resolution_time": utc_ms(diagnosed["resolution_time"]),
        }
    ).sort_values("at", kind="stable")
    matched = pd.merge_asof(left, right, on="at", by=["patient", "code"], direction="backward")
    still_active = matched["resolution_time"].isna() | (matched["resolution_time"] >= matched["at"])
    found = matched["condition_id"].notna() & still_active
    result[matched.loc[found, "position"].to_numpy()] = matched.loc[found, "condition_id"].to_numpy()
    return result


def _medications(ev: pd.DataFrame, seed: int, encounter_reasons: pd.Series) -> pd.DataFrame:
    """One row per medication course: start (encounter, reason) and stop."""
    kind = _kinds(ev)
    columns = ["patient", "patient_id", "row", "time", *_CODED, "encounter_id", "module"]
    starts = ev[kind == "medication_start"][columns].rename(columns={"time": "start_time"})
    stops = ev[kind == "medication_stop"][["patient", "code", "time"]].rename(columns={"time": "stop_time"})
    out = _pair(starts, stops).reset_index(drop=True)
    _insert_ids(out, seed, "MedicationRequest", "row")
    reasons = encounter_reasons.reindex(out["encounter_id"]).to_numpy(dtype=object)
    out["reason_condition_id"] = pd.Series(np.where(pd.isna(reasons), None, reasons), dtype=object)
    return out


def last_recorded(patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.Series:
    """The latest time in each patient's record (encounters, diagnoses, resolutions, death), else the
    birth, indexed by patient index."""
    frames = [
        (tables["encounters"], ("start_time", "end_time")),
        (tables["conditions"], ("diagnosis_time", "resolution_time")),
        (tables["deaths"], ("time",)),
    ]
    times = [pd.Series(utc_ms(patients["birth_time"]), index=patients["index"].to_numpy())]
    for frame, columns in frames:
        for column in columns:
            times.append(pd.Series(utc_ms(frame[column]), index=frame["patient"].to_numpy()))
    latest = pd.concat(times).dropna().groupby(level=0).max()
    return latest.reindex(patients["index"].to_numpy())
