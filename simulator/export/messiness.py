"""The messy-data pass (`--messiness typical|hostile|FILE`): a copy of a chunk's clinical tables with the
errors of a real EHR extract, and the log of every change (`truth/corruptions`).

It runs on the tables every exporter reads (`build_tables`), so FHIR, CSV and Parquet hold the same messy
record. Every draw is a hash of (seed, patient, record row, kind) under the run's own tag (`ids.uniforms`
"Messiness"), so a patient's corruptions do not depend on the chunk, the FHIR slice or the thread, and the
simulation's own draws are untouched. Without a profile (clean) the pass does not run at all.

Each eligible record gets at most one corruption of its value, code, text or time: one uniform per record is
laid over consecutive intervals, one per kind it is eligible for, each as wide as the kind's rate, so every
kind hits its rate of the records it can hit. Any record may also be duplicated (a draw of its own).
Blood pressure components are left alone: they are written as one panel of two (`observation_resources`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.export.ids import resource_ids, uniforms
from simulator.model.messiness import CORRUPTION_KINDS, KindRate, Messiness
from simulator.model.schema import CODE_SYSTEMS

CORRUPTION_COLUMNS = [
    "patient",
    "patient_id",
    "resource_type",
    "resource_id",
    "table",
    "field",
    "kind",
    "original",
    "new",
]
# Blood pressure components, paired into one panel Observation by the FHIR exporter: never corrupted alone.
BLOOD_PRESSURE = ("8480-6", "8462-4")
# Value, code, text and time corruptions, in the order their intervals are laid (duplicate is drawn apart).
OBSERVATION_KINDS = ("missing", "unit_variant", "out_of_range", "miscoding", "typo", "late_entry", "timestamp_shift")
CONDITION_KINDS = ("miscoding", "typo")
DAY_MS = 86_400_000


def _draws(seed: int, patient: np.ndarray, row: np.ndarray, slot: int) -> np.ndarray:
    """A uniform per record for draw `slot` (0: which kind; then one per kind's own choices)."""
    key = (np.asarray(row).astype(np.uint64) << np.uint64(6)) | np.uint64(slot)
    return uniforms(seed, patient, "Messiness", key)


def _slot(kind: str) -> int:
    """The draw slot of a kind's own choices (where a typo falls, how late an entry is)."""
    return 1 + CORRUPTION_KINDS.index(kind)


def _choose(u: np.ndarray, eligible: dict[str, np.ndarray], rates: dict[str, KindRate]) -> dict[str, np.ndarray]:
    """The records each kind hits: intervals of width rate, laid one after another over the kinds each
    record is eligible for (in the order of `eligible`)."""
    start = np.zeros(len(u))
    hits = {}
    for kind, ok in eligible.items():
        width = np.where(ok, rates[kind].rate, 0.0)
        hits[kind] = ok & (u >= start) & (u < start + width)
        start = start + width
    return hits


def typo(text: str, u: float, v: float) -> str:
    """A typing error in `text`: two neighbouring letters swapped, a letter doubled or one dropped (`u`
    picks where, never the first letter; `v` which)."""
    if len(text) < 4:
        return text
    i = 1 + int(u * (len(text) - 2))  # 1 to len - 2: a letter with one after it
    if v < 1 / 3 and text[i] != text[i + 1]:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if v < 2 / 3:
        return text[: i + 1] + text[i] + text[i + 1 :]
    return text[:i] + text[i + 1 :]


class _Log:
    """The changes made, a kind and a field at a time."""

    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []

    def add(
        self,
        frame: pd.DataFrame,
        hit: np.ndarray,
        kind: str,
        field: str,
        original: np.ndarray,
        new: np.ndarray,
        table: str,
    ) -> None:
        """The rows of `frame` that `hit` selects: `field` went from `original` to `new` (whole columns)."""
        if not hit.any():
            return
        rows = frame[hit]
        self.parts.append(
            pd.DataFrame(
                {
                    "patient": rows["patient"].to_numpy(np.int64),
                    "patient_id": rows["patient_id"].to_numpy(dtype=object),
                    "resource_type": "Condition" if table == "conditions" else "Observation",
                    "resource_id": rows["id"].to_numpy(dtype=object),
                    "table": table,
                    "field": field,
                    "kind": kind,
                    "original": _text(np.asarray(original)[hit]),
                    "new": _text(np.asarray(new)[hit]),
                    "_row": rows["row"].to_numpy(np.int64),
                }
            )
        )

    def frame(self) -> pd.DataFrame:
        """Every change, in patient and record order (columns CORRUPTION_COLUMNS)."""
        if not self.parts:
            empty = pd.DataFrame({c: pd.Series(dtype=object) for c in CORRUPTION_COLUMNS})
            return empty.astype({"patient": np.int64})
        log = pd.concat(self.parts, ignore_index=True).sort_values(["patient", "_row", "kind"], kind="stable")
        return log.drop(columns="_row").reset_index(drop=True)


def _text(values: np.ndarray) -> np.ndarray:
    """Values as the log writes them: numbers in their shortest form, times in ISO 8601 UTC, '' for none."""
    if np.issubdtype(values.dtype, np.datetime64):
        text = np.datetime_as_string(values.astype("datetime64[ms]"), unit="ms")
        return np.where(np.isnat(values), "", np.char.add(text, "Z")).astype(object)
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values.tolist()):
        missing = value is None or (isinstance(value, float) and np.isnan(value))
        out[i] = "" if missing else repr(value) if isinstance(value, float) else str(value)
    return out


def _utc(times: pd.Series) -> np.ndarray:
    """Times as naive UTC datetime64[ms]."""
    return pd.DatetimeIndex(times).tz_convert("UTC").tz_localize(None).as_unit("ms").to_numpy()


def _observations(obs: pd.DataFrame, messiness: Messiness, seed: int, log: _Log) -> pd.DataFrame:
    """The observations with every kind of corruption, `issued_time` added (when each entered the record)."""
    profile, variants = messiness.profile, messiness.variants
    rates = {kind: getattr(profile, kind) for kind in CORRUPTION_KINDS}
    patient, row = obs["patient"].to_numpy(), obs["row"].to_numpy()
    code = obs["code"].astype(str).to_numpy(dtype=object)
    unit = obs["unit"].astype(object).to_numpy()
    value = obs["value"].to_numpy(np.float64)
    display = obs["display"].astype(str).to_numpy(dtype=object)
    time = _utc(obs["time"])
    is_loinc = (obs["system"].astype(str) == CODE_SYSTEMS["LOINC"]).to_numpy()
    open_ = ~np.isin(code, BLOOD_PRESSURE)
    conversions = variants.unit_conversions
    from_unit = np.array([conversions[c].from_unit if c in conversions else None for c in code], dtype=object)
    siblings = variants.siblings.get("LOINC", {})
    eligible = {
        "missing": open_ & ~np.isnan(value),
        "unit_variant": open_ & (unit == from_unit) & ~np.isnan(value),
        "out_of_range": open_ & np.isin(code, variants.decimal_shift.codes) & ~np.isnan(value),
        "miscoding": open_ & is_loinc & np.isin(code, list(siblings)),
        "typo": open_ & (np.char.str_len(display.astype(str)) >= 4),
        "late_entry": open_,
        "timestamp_shift": open_,
    }
    hits = _choose(_draws(seed, patient, row, 0), eligible, rates)

    new_value, new_unit, new_code, new_display = value.copy(), unit.copy(), code.copy(), display.copy()
    issued, new_time = time.copy(), time.copy()
    hit = hits["missing"]
    new_value[hit] = np.nan
    log.add(obs, hit, "missing", "value", value, new_value, "observations")

    hit = hits["unit_variant"]
    for loinc, conversion in conversions.items():
        rows = hit & (code == loinc)
        new_value[rows] = np.round(value[rows] * conversion.factor + conversion.offset, conversion.decimals)
        new_unit[rows] = conversion.to_unit
    log.add(obs, hit, "unit_variant", "value", value, new_value, "observations")
    log.add(obs, hit, "unit_variant", "unit", unit, new_unit, "observations")

    hit = hits["out_of_range"]
    new_value[hit] = value[hit] * variants.decimal_shift.factor
    log.add(obs, hit, "out_of_range", "value", value, new_value, "observations")

    hit = hits["miscoding"]
    for original, sibling in siblings.items():
        rows = hit & (code == original)
        new_code[rows], new_display[rows] = sibling.code, sibling.display
    log.add(obs, hit, "miscoding", "code", code, new_code, "observations")

    hit = hits["typo"]
    _typos(new_display, hit, seed, patient, row)
    log.add(obs, hit, "typo", "display", display, new_display, "observations")

    hit = hits["late_entry"]
    low, high = profile.late_entry.days
    delay = low + (high - low) * _draws(seed, patient, row, _slot("late_entry"))
    issued[hit] = time[hit] + (delay[hit] * DAY_MS).astype("timedelta64[ms]")
    log.add(obs, hit, "late_entry", "issued_time", time, issued, "observations")

    hit = hits["timestamp_shift"]
    low, high = profile.timestamp_shift.days
    u = _draws(seed, patient, row, _slot("timestamp_shift"))
    shift = np.where(u < 0.5, -1.0, 1.0) * (low + (high - low) * (2 * u % 1.0))
    new_time[hit] = time[hit] + (shift[hit] * DAY_MS).astype("timedelta64[ms]")
    issued[hit] = new_time[hit]
    log.add(obs, hit, "timestamp_shift", "time", time, new_time, "observations")

    out = obs.assign(
        time=pd.DatetimeIndex(new_time).tz_localize("UTC").as_unit(obs["time"].dt.unit),
        code=new_code,
        display=new_display,
        value=new_value,
        unit=new_unit,
    )
    out.insert(out.columns.get_loc("time") + 1, "issued_time", pd.DatetimeIndex(issued).tz_localize("UTC"))
    out["issued_time"] = out["issued_time"].dt.as_unit(obs["time"].dt.unit)
    return _duplicates(out, rates["duplicate"], open_, seed, log)


def _typos(display: np.ndarray, hit: np.ndarray, seed: int, patient: np.ndarray, row: np.ndarray) -> None:
    """Typing errors in the displays of the rows hit (in place)."""
    where = np.flatnonzero(hit)
    u = _draws(seed, patient[where], row[where], _slot("typo"))
    v = _draws(seed, patient[where], row[where], _slot("typo") + len(CORRUPTION_KINDS))
    for k, i in enumerate(where.tolist()):
        display[i] = typo(str(display[i]), float(u[k]), float(v[k]))


def _duplicates(obs: pd.DataFrame, rate: KindRate, eligible: np.ndarray, seed: int, log: _Log) -> pd.DataFrame:
    """The observations with some filed twice: a copy right after the original, with an id of its own."""
    patient, row = obs["patient"].to_numpy(), obs["row"].to_numpy()
    hit = eligible & (_draws(seed, patient, row, _slot("duplicate")) < rate.rate)
    if not hit.any():
        return obs
    copies = obs[hit].copy()
    copies["id"] = resource_ids(seed, copies["patient"].to_numpy(), "Duplicate", copies["row"].to_numpy())
    log.add(obs, hit, "duplicate", "id", obs["id"].to_numpy(dtype=object), _copy_ids(obs, hit, copies), "observations")
    both = pd.concat([obs, copies], ignore_index=True)
    order = np.lexsort((np.arange(len(both)), both["row"].to_numpy(), both["patient"].to_numpy()))
    return both.iloc[order].reset_index(drop=True)


def _copy_ids(obs: pd.DataFrame, hit: np.ndarray, copies: pd.DataFrame) -> np.ndarray:
    """The id of each row's copy (None for a row not filed twice)."""
    ids = np.full(len(obs), None, dtype=object)
    ids[hit] = copies["id"].to_numpy(dtype=object)
    return ids


def _conditions(conditions: pd.DataFrame, messiness: Messiness, seed: int, log: _Log) -> pd.DataFrame:
    """The condition episodes with sibling codes and mistyped displays."""
    rates = {kind: getattr(messiness.profile, kind) for kind in CORRUPTION_KINDS}
    patient, row = conditions["patient"].to_numpy(), conditions["row"].to_numpy()
    code = conditions["code"].astype(str).to_numpy(dtype=object)
    display = conditions["display"].astype(str).to_numpy(dtype=object)
    siblings = messiness.variants.siblings.get("SNOMED", {})
    is_snomed = (conditions["system"].astype(str) == CODE_SYSTEMS["SNOMED"]).to_numpy()
    eligible = {
        "miscoding": is_snomed & np.isin(code, list(siblings)),
        "typo": np.char.str_len(display.astype(str)) >= 4,
    }
    hits = _choose(_draws(seed, patient, row, 0), eligible, rates)
    new_code, new_display = code.copy(), display.copy()
    hit = hits["miscoding"]
    for original, sibling in siblings.items():
        rows = hit & (code == original)
        new_code[rows], new_display[rows] = sibling.code, sibling.display
    log.add(conditions, hit, "miscoding", "code", code, new_code, "conditions")
    _typos(new_display, hits["typo"], seed, patient, row)
    log.add(conditions, hits["typo"], "typo", "display", display, new_display, "conditions")
    return conditions.assign(code=new_code, display=new_display)


def corrupt(
    tables: dict[str, pd.DataFrame], messiness: Messiness, seed: int
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The tables with the profile's errors, and the log of every change (columns CORRUPTION_COLUMNS, in
    patient and record order)."""
    log = _Log()
    out = dict(tables)
    out["observations"] = _observations(tables["observations"], messiness, seed, log)
    out["conditions"] = _conditions(tables["conditions"], messiness, seed, log)
    return out, log.frame()
