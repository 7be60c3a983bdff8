"""Home devices in the streams: continuous glucose monitoring (setting `cgm`, rules/streams.yaml `cgm`). Who
wears a CGM and when is read from the event table (an insulin course or a type 1 diabetes diagnosis, the
HbA1c readings, the severe hypoglycaemias); the samples of a wear window are the HbA1c-implied mean glucose
with meals and a slow wander, a trough at each severe hypoglycaemia, the sensor's error, its warm-ups, and
compression lows and signal losses. Pure numpy per window, from one generator the caller seeds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.export.streams.signals import (
    QUALITY,
    SECONDS_PER_DAY,
    Episode,
    StaySamples,
    apply_artefacts,
    finish,
    ou_path,
)
from simulator.model.streams import Abpm, Cgm, Setting, StreamRules

MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class Wear:
    """One CGM wear window of a patient (ms since 1970, UTC), with what shapes it: the HbA1c readings (times
    and %) and the severe hypoglycaemias inside it (onset times and trough glucose, mg/dL)."""

    patient: int
    number: int  # the patient's window number, in time order
    start_ms: int
    end_ms: int
    hba1c_ms: np.ndarray
    hba1c: np.ndarray
    hypo_ms: np.ndarray
    hypo_mg_dl: np.ndarray


def _ms(times: pd.Series) -> np.ndarray:
    return times.dt.as_unit("ms").astype("int64").to_numpy()


def cgm_windows(events: pd.DataFrame, end_ms: dict[int, int], cgm: Cgm, introduced_ms: int) -> list[Wear]:
    """The wear windows of every insulin-treated patient of the chunk (`end_ms`: each patient's end of record):
    the last `report_days` of the record and the `report_days` centred on each severe hypoglycaemia, cut to
    the time the patient is insulin-treated and to the device's introduction, merged where they overlap. A
    patient without an HbA1c has no mean glucose to follow and no window."""
    kind = events["kind"].astype(str).to_numpy()
    code = events["code"].astype(str).to_numpy()
    insulin = {c.code for c in cgm.insulin}
    diagnosed = {c.code for c in cgm.diagnosed}
    treated = ((kind == "medication_start") & np.isin(code, list(insulin))) | (
        (kind == "condition_diagnosis") & np.isin(code, list(diagnosed))
    )
    if not treated.any():
        return []
    since = events.loc[treated].groupby("patient", sort=True)["time"].min()
    hypo = cgm.hypoglycaemia
    onsets = events.loc[(kind == "condition_onset") & (code == hypo.condition.code), ["patient", "time"]]
    readings = events.loc[(kind == "observation") & (code == hypo.reading.code), ["patient", "time", "value"]]
    hba1c = events.loc[(kind == "observation") & (code == cgm.hba1c.code), ["patient", "time", "value"]]
    half, span = cgm.report_days * MS_PER_DAY / 2, cgm.report_days * MS_PER_DAY
    hba1c_of, onsets_of, readings_of = (
        dict(tuple(f.groupby("patient", sort=False))) for f in (hba1c, onsets, readings)
    )
    none = onsets.iloc[:0]
    windows = []
    for patient, first in zip(since.index, _ms(since), strict=True):
        patient = int(patient)
        mine = hba1c_of.get(patient)
        if mine is None:
            continue
        end = end_ms[patient]
        onset_ms = _ms(onsets_of.get(patient, none)["time"])
        wanted = [(end - span, end), *((t - half, t + half) for t in onset_ms)]
        earliest = max(first, introduced_ms)
        cut = sorted((max(a, earliest), min(b, end)) for a, b in wanted if min(b, end) > max(a, earliest))
        merged: list[list[int]] = []
        for a, b in cut:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        if not merged:
            continue
        caps = readings_of.get(patient, readings.iloc[:0])
        cap_ms, cap_value = _ms(caps["time"]), caps["value"].to_numpy(np.float64)
        trough = np.array([_trough(t, cap_ms, cap_value, hypo.default_mg_dl) for t in onset_ms])
        for number, (a, b) in enumerate(merged):
            inside = (onset_ms >= a) & (onset_ms < b)
            windows.append(
                Wear(
                    patient,
                    number,
                    int(a),
                    int(b),
                    _ms(mine["time"]),
                    mine["value"].to_numpy(np.float64),
                    onset_ms[inside],
                    trough[inside] if len(trough) else np.zeros(0),
                )
            )
    return windows


def _trough(onset_ms: int, cap_ms: np.ndarray, cap_value: np.ndarray, default: float) -> float:
    """The glucose of a hypoglycaemia: the first capillary reading within 6 hours after its onset (the
    emergency visit's), else the default."""
    after = (cap_ms >= onset_ms) & (cap_ms < onset_ms + 6 * 3_600_000)
    return float(cap_value[after][0]) if after.any() else float(default)


def _meals(t_s: np.ndarray, clock0_s: float, cgm: Cgm, rng: np.random.Generator) -> np.ndarray:
    """The summed glucose response to the day's meals on the grid, each meal jittered and sized, shaped
    t/peak x exp(1 - t/peak) (a peak `meal_peak_s` after the meal, back near the mean over 2-3 peaks)."""
    first_day = np.floor(clock0_s / SECONDS_PER_DAY)
    days = np.arange(first_day - 1, np.floor((clock0_s + t_s[-1]) / SECONDS_PER_DAY) + 1)
    at = (days[:, None] * SECONDS_PER_DAY + np.asarray(cgm.meal_hours)[None, :] * 3600.0).ravel() - clock0_s
    at = at + rng.uniform(-cgm.meal_jitter_s, cgm.meal_jitter_s, len(at))
    size = rng.lognormal(0.0, cgm.meal_size_sd, len(at))
    response = np.zeros(len(t_s))
    for when, height in zip(at, size, strict=True):
        since = (t_s - when) / cgm.meal_peak_s
        live = (since > 0) & (since < 12)
        response[live] += height * since[live] * np.exp(1.0 - since[live])
    return response


def _standard(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros(len(x))


def cgm_samples(
    rules: StreamRules, setting: Setting, wear: Wear, rng: np.random.Generator, utc_offset_s: float
) -> tuple[StaySamples, list[tuple[str, float, float]]]:
    """The readings of one wear window on the device's grid, and the hypoglycaemias it shows (kind, start,
    end: seconds from the window's start); meals and nights on the patient's local clock (`utc_offset_s`: the
    standard UTC offset of their time zone). Draws, in order: the meals, the slow wander, the sensor error, then
    the setting's artefacts."""
    names = tuple(setting.channels)
    cgm = rules.cgm
    assert cgm is not None  # a cgm setting needs the section (StreamRules checks it)
    duration_s = (wear.end_ms - wear.start_ms) / 1000.0
    step = cgm.interval_s
    t_s = np.arange(0.0, duration_s, step) if duration_s > 0 else np.zeros(1)
    n = len(t_s)
    clock0_s = (wear.start_ms / 1000.0 + utc_offset_s) % SECONDS_PER_DAY
    time_ms = wear.start_ms + t_s * 1000.0
    latest = np.searchsorted(wear.hba1c_ms, time_ms, side="right") - 1
    mean = cgm.eag_slope * wear.hba1c[np.clip(latest, 0, len(wear.hba1c) - 1)] + cgm.eag_intercept
    meals = _standard(_meals(t_s, clock0_s, cgm, rng))
    wander = ou_path(n, step, cgm.time_constant_s, rng)
    x = np.sqrt(cgm.meal_share) * meals + np.sqrt(1.0 - cgm.meal_share) * wander
    sigma = np.sqrt(np.log1p(cgm.cv**2))
    log_glucose = np.log(np.maximum(mean, 1.0)) + sigma * x - sigma**2 / 2.0
    hypo = cgm.hypoglycaemia
    shown = []
    for onset_ms, trough in zip(wear.hypo_ms, wear.hypo_mg_dl, strict=True):
        at = (onset_ms - wear.start_ms) / 1000.0
        weight = np.clip(np.minimum((t_s - (at - hypo.fall_s)) / hypo.fall_s, 1.0), 0.0, 1.0)
        recovery = np.clip((t_s - (at + hypo.hold_s)) / hypo.recover_s, 0.0, 1.0)
        weight = weight * (1.0 - recovery)
        log_glucose = (1.0 - weight) * log_glucose + weight * np.log(trough)
        shown.append(("severe_hypoglycaemia", at, at + hypo.hold_s))
    error = cgm.mard * np.sqrt(np.pi / 2.0) * ou_path(n, step, cgm.sensor_time_constant_s, rng)
    value = (np.exp(log_glucose) * (1.0 + error))[None, :]
    quality = np.zeros((1, n), dtype=np.int8)
    artefacts = rules.artefacts if setting.artefacts is None else setting.artefacts
    episodes = apply_artefacts(rules, artefacts, names, t_s, duration_s, value, quality, rng, clock0_s)
    rank = QUALITY.index("warm_up")
    for start in np.arange(0.0, duration_s, cgm.sensor_days * SECONDS_PER_DAY):  # each new sensor warms up
        end = min(start + cgm.warm_up_s, duration_s)
        lo, hi = np.searchsorted(t_s, [start, end])
        value[0, lo:hi] = np.nan
        q = quality[0, lo:hi]
        quality[0, lo:hi] = np.where((q == 0) | (q > rank), rank, q)
        episodes.append(Episode(names[0], "warm_up", float(start), float(end), int(hi - lo)))
    return StaySamples(t_s, names, finish(rules, names, value), quality, episodes), shown


@dataclass(frozen=True)
class Visit:
    """One ambulatory blood pressure recording: its patient, number, start and end (ms) and the office
    readings (systolic, diastolic, mm Hg) of the visit that fitted it."""

    patient: int
    number: int
    start_ms: int
    end_ms: int
    office: tuple[float, float]


def abpm_visits(events: pd.DataFrame, end_ms: dict[int, int], abpm: Abpm, codes: tuple[str, str]) -> list[Visit]:
    """A 24-hour recording from each visit of the abpm section's state (the hypertension confirmation) from
    its year on, starting at the visit's systolic reading, cut at the end of the record."""
    at_visit = (events["module"].astype(str) == abpm.module) & (events["state"].astype(str) == abpm.state)
    rows = events.loc[at_visit & (events["kind"].astype(str) == "observation")]
    systolic = rows[rows["code"].astype(str) == codes[0]]
    diastolic = rows[rows["code"].astype(str) == codes[1]].set_index(["patient", "time"])["value"]
    first_ms = int(pd.Timestamp(f"{abpm.from_year}-01-01", tz="UTC").value // 1_000_000)
    visits, numbers = [], {}
    for patient, time, value in zip(systolic["patient"], systolic["time"], systolic["value"], strict=True):
        start = int(time.value // 1_000_000)
        end = min(start + round(abpm.duration_s * 1000), end_ms[int(patient)])
        other = diastolic.get((patient, time))
        if start < first_ms or end <= start or other is None:
            continue
        number = numbers[int(patient)] = numbers.get(int(patient), -1) + 1
        visits.append(Visit(int(patient), number, start, end, (float(value), float(other))))
    return visits


def abpm_samples(
    rules: StreamRules, setting: Setting, visit: Visit, rng: np.random.Generator, utc_offset_s: float
) -> StaySamples:
    """The readings of one recording: each channel's day level (the office reading less the offset), lower by
    the recording's dip at night (on the patient's local clock: `utc_offset_s`, the standard UTC offset of their
    time zone), with independent reading-to-reading variation, then the setting's artefacts. Draws, in order:
    the dip, the variation channel by channel, the artefacts."""
    abpm = rules.abpm
    assert abpm is not None  # an abpm setting needs the section (StreamRules checks it)
    names = tuple(setting.channels)
    duration_s = (visit.end_ms - visit.start_ms) / 1000.0
    t_s = np.arange(0.0, duration_s, abpm.interval_s)
    clock0_s = (visit.start_ms / 1000.0 + utc_offset_s) % SECONDS_PER_DAY
    hour = ((clock0_s + t_s) % SECONDS_PER_DAY) / 3600.0
    start, end = abpm.night_hours
    night = (hour >= start) | (hour < end) if start > end else (hour >= start) & (hour < end)
    dip = rng.uniform(*abpm.dip)
    value = np.empty((len(names), len(t_s)))
    for i, name in enumerate(names):
        day = visit.office[i] - abpm.office_offset[i]
        level = np.where(night, day * (1.0 - dip), day)
        value[i] = level + rules.channels[name].variability.sd * rng.standard_normal(len(t_s))
    quality = np.zeros(value.shape, dtype=np.int8)
    artefacts = rules.artefacts if setting.artefacts is None else setting.artefacts
    episodes = apply_artefacts(rules, artefacts, names, t_s, duration_s, value, quality, rng, clock0_s)
    return StaySamples(t_s, names, finish(rules, names, value), quality, episodes)
