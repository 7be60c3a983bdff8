"""Clinical invariants every generated cohort must satisfy, checked on the tables.

Each check returns human-readable violations (empty when the cohort is sound); tests assert on
them for every cohort they generate, and the validation report lists them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.model.schema import CODE_SYSTEMS


def _first(frame: pd.DataFrame, what: str, limit: int = 3) -> list[str]:
    if frame.empty:
        return []
    rows = frame.head(limit).to_dict("records")
    return [f"{what}: {len(frame)} rows, e.g. {rows}"]


def events_ordered(events: pd.DataFrame) -> list[str]:
    """Patients appear in blocks in ascending order; times never go back within a patient."""
    patient = events["patient"].to_numpy()
    t = events["time"].to_numpy()
    same = patient[1:] == patient[:-1]
    bad_time = np.flatnonzero(same & (t[1:] < t[:-1]))
    bad_patient = np.flatnonzero(patient[1:] < patient[:-1])
    out = _first(events.iloc[bad_time + 1], "event earlier than the one before it")
    return out + _first(events.iloc[bad_patient + 1], "patients out of order")


def nothing_after_death(patients: pd.DataFrame, events: pd.DataFrame) -> list[str]:
    deaths = patients.loc[patients["death_time"].notna(), ["index", "death_time"]]
    merged = events.merge(deaths, left_on="patient", right_on="index", how="inner")
    late = merged[merged["time"] > merged["death_time"]]
    death_rows = events[events["kind"] == "death"]
    out = _first(late, "event after death")
    counts = death_rows.groupby("patient", observed=True).size()
    out += _first(counts[counts > 1].reset_index(), "more than one death")
    recorded = set(deaths["index"])
    out += _first(death_rows[~death_rows["patient"].isin(recorded)], "death event without death in the patient table")
    missing = recorded - set(death_rows["patient"])
    if missing:
        out.append(f"patients with a death time but no death event: {sorted(missing)[:5]}")
    return out


def encounter_spans(events: pd.DataFrame) -> pd.DataFrame:
    """One row per encounter: patient, encounter, start, end (NaT while still open)."""
    enc = events[events["kind"].isin(["encounter_start", "encounter_end"])]
    starts = enc[enc["kind"] == "encounter_start"][["patient", "encounter", "time"]].rename(columns={"time": "start"})
    ends = enc[enc["kind"] == "encounter_end"][["patient", "encounter", "time"]].rename(columns={"time": "end"})
    return starts.merge(ends, on=["patient", "encounter"], how="outer", indicator=True)


def encounters_end(patients: pd.DataFrame, spans: pd.DataFrame) -> list[str]:
    """Every encounter that starts ends after it starts, except one still open at the end of a
    living patient's record; no encounter ends twice or without starting (`spans`: encounter_spans)."""
    out = _first(spans[spans["_merge"] == "right_only"], "encounter end without start")
    dup = spans.groupby(["patient", "encounter"]).size()
    out += _first(dup[dup > 1].reset_index(), "encounter started or ended twice")
    both = spans[spans["_merge"] == "both"]
    out += _first(both[both["end"] < both["start"]], "encounter ends before it starts")
    open_ = spans[spans["_merge"] == "left_only"]
    dead = set(patients.loc[patients["death_time"].notna(), "index"])
    out += _first(open_[open_["patient"].isin(dead)], "encounter left open by a patient who died")
    return out


def observations_in_encounters(events: pd.DataFrame, spans: pd.DataFrame) -> list[str]:
    """Observations, diagnoses, prescriptions, procedures and immunizations happen during an encounter."""
    bound = events[
        events["kind"].isin(["observation", "condition_diagnosis", "medication_start", "procedure", "immunization"])
    ]
    out = _first(bound[bound["encounter"] < 0], "encounter-bound event outside any encounter")
    merged = bound[bound["encounter"] >= 0].merge(spans, on=["patient", "encounter"], how="left")
    outside = merged[(merged["time"] < merged["start"]) | (merged["end"].notna() & (merged["time"] > merged["end"]))]
    return out + _first(outside[["patient", "kind", "time", "start", "end"]], "event outside its encounter's span")


def _alternates(events: pd.DataFrame, first: str, second: str, what: str) -> list[str]:
    """Per patient and code, `first` and `second` alternate starting with `first`."""
    keys = ["patient", "code"]
    rows = events[events["kind"].isin([first, second])][[*keys, "kind"]]
    if rows.empty:
        return []
    sign = np.where(rows["kind"].to_numpy() == first, 1, -1)
    level = pd.Series(sign, index=rows.index).groupby([rows[k] for k in keys], observed=True).cumsum()
    bad = rows[(level < 0) | (level > 1)]
    return _first(bad, what)


def medications_started_before_stopped(events: pd.DataFrame) -> list[str]:
    """A patient's courses of one product start and stop in turn, whichever module orders or stops them
    (the engine never starts a product that is already taken)."""
    return _alternates(events, "medication_start", "medication_stop", "medication stopped without being started")


def diagnosis_after_onset(events: pd.DataFrame) -> list[str]:
    """A diagnosis follows an onset of the same condition (and onset/resolution alternate)."""
    out = _alternates(events, "condition_onset", "condition_resolved", "condition resolved while not active")
    cond = events[events["kind"].isin(["condition_onset", "condition_diagnosis", "condition_resolved"])]
    cond = cond[["patient", "code", "kind", "time"]]
    onset_time = cond["time"].where(cond["kind"] == "condition_onset")
    last_onset = onset_time.groupby([cond["patient"], cond["code"]], observed=True).ffill()
    diagnosed = cond["kind"] == "condition_diagnosis"
    bad = cond[diagnosed & (last_onset.isna() | (cond["time"] < last_onset))]
    return out + _first(bad, "diagnosis without an earlier onset")


def codes_valid(events: pd.DataFrame) -> list[str]:
    systems = set(CODE_SYSTEMS.values())
    bad_system = events[~events["system"].isin(systems)]
    empty = events[(events["code"].astype(str) == "") | (events["display"].astype(str) == "")]
    no_unit = events[(events["kind"] == "observation") & events["unit"].isna()]
    out = _first(bad_system, "unknown code system") + _first(empty, "empty code or display")
    return out + _first(no_unit, "observation without unit")


def check_invariants(patients: pd.DataFrame, events: pd.DataFrame) -> dict[str, list[str]]:
    """Every invariant by name with its violations (all empty for a sound cohort)."""
    spans = encounter_spans(events)
    return {
        "events_ordered": events_ordered(events),
        "nothing_after_death": nothing_after_death(patients, events),
        "encounters_end": encounters_end(patients, spans),
        "observations_in_encounters": observations_in_encounters(events, spans),
        "medications_started_before_stopped": medications_started_before_stopped(events),
        "diagnosis_after_onset": diagnosis_after_onset(events),
        "codes_valid": codes_valid(events),
    }
