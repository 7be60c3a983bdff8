"""Writing dense monitoring streams chunk by chunk (`--streams`): `streams/streams.parquet` (patient, encounter,
device, code, time, value, quality), `truth/stream_artefacts.parquet` (every artefact episode),
`truth/stream_events.parquet` (the clinical episodes a stream shows: atrial fibrillation, severe
hypoglycaemia), and in the Bulk FHIR output `Device.ndjson` (one device per stay or home wear window) and
`Observation.streams.ndjson` (valueSampledData, one Observation per channel and segment). Each stay or window
is sampled from its own generator seeded with (seed, patient, key), and a chunk's are written in patient then
key order, so the output does not depend on the chunking; batches are flushed every FLUSH_ROWS rows, so
memory stays flat however long the stays or fine the interval."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simulator.engine.people import PeopleTables
from simulator.errors import ConfigError
from simulator.export.fhir_text import TEXT
from simulator.export.ids import TAGS, resource_ids
from simulator.export.streams.fhir import device_lines, segment_lines
from simulator.export.streams.home import abpm_samples, abpm_visits, cgm_samples, cgm_windows
from simulator.export.streams.signals import QUALITY, Charted, Irregular, StaySamples, stay_samples
from simulator.export.writers import NdjsonWriter, Part, Staging, _sha256
from simulator.model.library import Library
from simulator.model.schema import CODE_SYSTEMS
from simulator.model.streams import StreamRules

STREAM_FOLDER = "streams"
FLUSH_ROWS = 2_000_000  # rows held before a Parquet write (about 60 MB of arrays)
MIN_INTERVAL_S, MAX_INTERVAL_S = 1.0, 3600.0
SECONDS_PER_DAY = 86400.0
HOME_KEY = 1 << 30  # keys of home wear windows: above every encounter number, HOME_KEY + setting << 16 + window
TIME_MS = pa.timestamp("ms", tz="UTC")  # the time columns of streams/ and truth/


def parse_streams(text: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """'icu,ed' or a sequence -> the setting names, in order, without repeats (checked against the rules by
    `StreamPlan`)."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(dict.fromkeys(item.strip().lower() for item in items if item.strip()))


def check_interval(interval_s: float | None) -> float | None:
    """The sampling interval in seconds, 1 s to 1 h; ConfigError otherwise."""
    if interval_s is not None and not MIN_INTERVAL_S <= float(interval_s) <= MAX_INTERVAL_S:
        raise ConfigError("stream_interval", f"must be between 1 and 3600 seconds (got {interval_s:g})")
    return None if interval_s is None else float(interval_s)


@dataclass(frozen=True)
class StreamPlan:
    """What the run streams: the settings asked for, the interval, and per channel the code of its observable
    in the event table and the correlation time of its course (from rules/vital_signs.yaml)."""

    rules: StreamRules
    settings: tuple[str, ...]
    interval_s: float
    observed_code: dict[str, str]
    slow_time_constant_s: dict[str, float]
    end_ms: int  # the end of the record of every living patient
    introduced_ms: dict[str, int]  # the date each home setting's first channel came into use (rules/calendar.yaml)
    # each city's standard UTC offset (s) by (city, state, zip): home devices follow the patient's local clock,
    # the one the kernel's clinic hours keep (PeopleTables.city_utc_offset_days)
    utc_offset_s: dict[tuple[str, str, str], float]

    @classmethod
    def of(
        cls, library: Library, settings: tuple[str, ...], interval_s: float | None, tables: PeopleTables
    ) -> StreamPlan:
        """The plan of a run of `library` whose people come from `tables` (its end and its cities' clocks)."""
        rules = library.streams
        unknown = [s for s in settings if s not in rules.settings]
        if unknown:
            known = ", ".join(rules.settings)
            raise ConfigError("streams", f"unknown setting '{unknown[0]}' (the rules know {known})")
        observables = {name: o for module in library.modules for name, o in module.observables.items()}
        codes, constants = {}, {}
        for name, channel in rules.channels.items():
            if channel.observable is None:
                continue
            observable = observables.get(channel.observable)
            if observable is None:
                raise ConfigError("streams", f"channel {name}: no module defines the observable {channel.observable}")
            codes[name] = observable.code.code
            days = observable.correlation_days
            constants[name] = channel.slow_time_constant_s or (days * SECONDS_PER_DAY if days else None)
            if constants[name] is None:
                raise ConfigError("streams", f"channel {name}: give slow_time_constant_s (its observable has none)")
        interval = check_interval(interval_s) or rules.default_interval_s
        introduced = {}
        for name in settings:
            if rules.settings[name].home is not None:
                code = rules.channels[rules.settings[name].channels[0]].code
                day = library.calendar.introduced_on(CODE_SYSTEMS[code.system], code.code)
                introduced[name] = 0 if day is None else int(pd.Timestamp(day).value // 1_000_000)
        offsets = {
            (c.city, c.state, c.zip): days * SECONDS_PER_DAY
            for c, days in zip(library.names.cities, tables.city_utc_offset_days, strict=True)
        }
        end_ms = round(tables.reference_t * SECONDS_PER_DAY * 1000)
        return cls(rules, settings, interval, codes, constants, end_ms, introduced, offsets)


@dataclass(frozen=True)
class _Stays:
    """The monitored stays of a chunk, one row each, in patient then encounter order."""

    patient: np.ndarray
    encounter: np.ndarray
    setting: np.ndarray  # object: the setting's name
    start: pd.Series  # datetime64 UTC
    end: pd.Series
    is_ended: np.ndarray


def monitored_stays(events: pd.DataFrame, plan: StreamPlan) -> _Stays:
    """Every encounter of a chosen setting's class: from its start to its end (an encounter still open at the
    end of the record: to its last event)."""
    classes = {plan.rules.settings[s].encounter_class: s for s in plan.settings if plan.rules.settings[s].home is None}
    kind = events["kind"].astype(str).to_numpy()
    starts = events.loc[(kind == "encounter_start") & events["encounter_class"].isin(list(classes))]
    keys = ["patient", "encounter"]
    ends = events.loc[kind == "encounter_end", [*keys, "time"]].rename(columns={"time": "end"})
    last = events.loc[events["encounter"] >= 0].groupby(keys, sort=False)["time"].max().rename("last").reset_index()
    stays = starts[[*keys, "time", "encounter_class"]].merge(ends, on=keys, how="left").merge(last, on=keys)
    stays = stays.sort_values(keys, kind="stable").reset_index(drop=True)
    return _Stays(
        stays["patient"].to_numpy(np.int64),
        stays["encounter"].to_numpy(np.int64),
        stays["encounter_class"].astype(str).map(classes).to_numpy(dtype=object),
        stays["time"],
        stays["end"].fillna(stays["last"]),
        stays["end"].notna().to_numpy(),
    )


def _charted(events: pd.DataFrame, plan: StreamPlan, stays: _Stays) -> dict[tuple[int, int, str], pd.DataFrame]:
    """The charted readings of each stay's channels, by (patient, encounter, channel): only the monitored
    stays' rows are grouped (every visit charts vital signs; grouping them all was most of the writer's time)."""
    by_code = {code: name for name, code in plan.observed_code.items()}
    rows = events.loc[(events["kind"].astype(str) == "observation") & events["code"].isin(list(by_code))]
    key = rows["patient"].to_numpy(np.int64) * (1 << 32) + rows["encounter"].to_numpy(np.int64)
    rows = rows.loc[
        np.isin(key, stays.patient * (1 << 32) + stays.encounter), ["patient", "encounter", "code", "time", "value"]
    ]
    found = {}
    for (patient, encounter, code), group in rows.groupby(["patient", "encounter", "code"], sort=False, observed=True):
        found[(int(patient), int(encounter), by_code[str(code)])] = group
    return found


class StreamWriter:
    """The stream outputs of a run, fed chunk by chunk beside the other writers (`Export`), closed before the
    FHIR writer so that its Bulk manifest lists the stream files."""

    def __init__(
        self,
        out: Path,
        plan: StreamPlan,
        seed: int,
        ndjson: NdjsonWriter | None,
        truth: Staging,
        part: Part | None = None,
    ):
        self.plan = plan
        self.seed = seed
        self.ndjson = ndjson
        self.streams = Staging.start(out, STREAM_FOLDER, part)
        self.truth = truth  # the run's truth/ folder (`Export.truth_folder`), shared with the messy-data log
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.rows = {"streams": 0, "stream_artefacts": 0, "stream_events": 0}
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.channel_codes = [c.code.code for c in plan.rules.channels.values()]
        self.channel_index = {name: i for i, name in enumerate(plan.rules.channels)}

    def write(self, patients: pd.DataFrame, events: pd.DataFrame) -> None:
        """The streams of the chunk's monitored stays and home wear windows, in patient then key order."""
        ids = patients.set_index("index")["id"]
        jobs = [(int(p), int(e), "stay", k) for k, (p, e) in enumerate(zip(*self._stays(events), strict=True))]
        rules = self.plan.rules
        end_ms = self._end_ms(patients)
        cities = zip(patients["city"], patients["state"], patients["zip"], strict=True)
        utc_offset_s = dict(zip(patients["index"].astype(int), map(self.plan.utc_offset_s.get, cities), strict=True))
        for number, setting in enumerate(self.plan.settings):
            home = rules.settings[setting].home
            if home == "cgm":
                found = cgm_windows(events, end_ms, rules.cgm, self.plan.introduced_ms[setting])
            elif home == "abpm":
                codes = tuple(rules.channels[c].code.code for c in rules.settings[setting].channels[:2])
                found = abpm_visits(events, end_ms, rules.abpm, codes)
            else:
                continue
            jobs += [(w.patient, HOME_KEY + (number << 16) + w.number, setting, w) for w in found]
        if not jobs:
            return
        jobs.sort(key=lambda job: job[:2])
        keys = np.array([key for _, key, _, _ in jobs], np.int64)
        patients_of = np.array([patient for patient, _, _, _ in jobs], np.int64)
        device_ids = resource_ids(self.seed, patients_of, "StreamDevice", keys)
        patient_ids = ids.loc[patients_of].to_numpy(dtype=object)
        episodes, shown = [], []
        for k, (patient, key, what, item) in enumerate(jobs):
            rng = np.random.default_rng([self.seed, TAGS["Streams"], patient, key])
            if what == "stay":
                setting, samples, start_ms, found, is_ended = self._stay(patient, key, item, rng)
                encounter = key
            elif rules.settings[what].home == "abpm":
                setting, start_ms, is_ended, encounter = what, item.start_ms, True, None
                samples, found = abpm_samples(rules, rules.settings[what], item, rng, utc_offset_s[patient]), []
            else:
                setting, start_ms, is_ended, encounter = what, item.start_ms, True, None
                samples, found = cgm_samples(rules, rules.settings[what], item, rng, utc_offset_s[patient])
            self._add_rows(patient, encounter, device_ids[k], start_ms, samples)
            episodes += [
                (patient, encounter, device_ids[k], e.channel, e.kind, e.start_s, e.end_s, start_ms, e.n_samples)
                for e in samples.episodes
            ]
            channel = samples.channels[0] if what != "stay" else self.plan.rules.atrial_fibrillation.channel
            shown += [(patient, encounter, device_ids[k], channel, *f, start_ms) for f in found]
            if self.ndjson is not None:  # one at a time, so that the text of a chunk is never held whole
                setting_rules = self.plan.rules.settings[setting]
                line = device_lines(device_ids[k], setting_rules.device, patient_ids[k], is_ended)
                self.ndjson.append_text("Device", pa.array([line], TEXT))
                encounter_id = self._encounter_ids[(patient, key)] if encounter is not None else None
                refs = (patient_ids[k], encounter_id, device_ids[k])
                category = "laboratory" if setting_rules.home == "cgm" else "vital-signs"
                lines = self._segments(patient, key, refs, start_ms, samples, category)
                self.ndjson.append_text("Observation.streams", pa.array(lines, TEXT))
        self._flush(force=False)
        self._write_episodes("stream_artefacts", episodes)  # the artefacts and dropouts, with their samples
        self._write_episodes("stream_events", shown)

    def _stays(self, events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The chunk's monitored stays, kept for `_stay` (by encounter), and their patients and encounters."""
        stays = monitored_stays(events, self.plan)
        self._charted = _charted(events, self.plan, stays) if len(stays.patient) else {}
        self._chunk_stays = stays
        encounter_ids = resource_ids(self.seed, stays.patient, "Encounter", stays.encounter)
        pairs = zip(stays.patient.tolist(), stays.encounter.tolist(), strict=True)
        self._encounter_ids = dict(zip(pairs, encounter_ids, strict=True))
        self._af_onset_ms = self._af_onsets(events)
        return stays.patient, stays.encounter

    def _af_onsets(self, events: pd.DataFrame) -> dict[int, int]:
        """Each patient's true onset of atrial fibrillation (ms), where the rules stream it."""
        af = self.plan.rules.atrial_fibrillation
        if af is None:
            return {}
        rows = events.loc[(events["kind"].astype(str) == "condition_onset") & (events["code"] == af.condition.code)]
        first = rows.groupby("patient", sort=False)["time"].min()
        return dict(zip(first.index.astype(int), first.dt.as_unit("ms").astype("int64"), strict=True))

    def _stay(
        self, patient: int, encounter: int, k: int, rng: np.random.Generator
    ) -> tuple[str, StaySamples, int, list, bool]:
        """The samples of the chunk's stay `k`, with the atrial fibrillation it shows."""
        stays = self._chunk_stays
        setting = stays.setting[k]
        start_ms = int(stays.start.iloc[k].value // 1_000_000)
        stay_s = (int(stays.end.iloc[k].value // 1_000_000) - start_ms) / 1000.0
        names = tuple(self.plan.rules.settings[setting].channels)
        readings = {
            name: self._readings(self._charted.get((patient, encounter, name)), start_ms)
            for name in names
            if name in self.plan.observed_code
        }
        irregular, found = None, []
        af = self.plan.rules.atrial_fibrillation
        onset = self._af_onset_ms.get(patient)
        if af is not None and af.channel in names and onset is not None and (onset - start_ms) / 1000.0 < stay_s:
            from_s = max(0.0, (onset - start_ms) / 1000.0)
            af_rng = np.random.default_rng([self.seed, TAGS["Streams"], patient, encounter, 1])
            irregular = Irregular(af.channel, from_s, af.rr_cv / np.sqrt(af.beats_averaged), af_rng)
            found = [("atrial_fibrillation", from_s, stay_s)]
        samples = stay_samples(
            self.plan.rules,
            names,
            stay_s,
            self.plan.interval_s,
            readings,
            self.plan.slow_time_constant_s,
            rng,
            irregular,
        )
        return setting, samples, start_ms, found, bool(stays.is_ended[k])

    def _end_ms(self, patients: pd.DataFrame) -> dict[int, int]:
        """Each patient's end of record (ms): death, else the run's end."""
        death = patients["death_time"]
        ms = np.where(death.isna(), self.plan.end_ms, death.dt.as_unit("ms").astype("int64", errors="ignore"))
        return dict(zip(patients["index"].astype(int), ms.astype(np.int64), strict=True))

    @staticmethod
    def _readings(rows: pd.DataFrame | None, start_ms: int) -> Charted:
        if rows is None:
            return Charted(np.zeros(0), np.zeros(0))
        t_ms = rows["time"].dt.as_unit("ms").astype("int64").to_numpy()
        return Charted((t_ms - start_ms) / 1000.0, rows["value"].to_numpy(np.float64))

    def _segments(
        self,
        patient: int,
        key: int,
        refs: tuple[str, str | None, str],
        start_ms: int,
        samples: StaySamples,
        category: str,
    ) -> list[str]:
        rules = self.plan.rules
        step = float(samples.t_s[1] - samples.t_s[0]) if len(samples.t_s) > 1 else self.plan.interval_s
        per_segment = max(1, int(round(rules.segment_s / step)))
        lines = []
        for i, name in enumerate(samples.channels):
            channel = rules.channels[name]
            first = (key << 24) | (self.channel_index[name] << 16)
            lines += segment_lines(
                self.seed, patient, first, refs, channel, start_ms, step, samples.value[i], per_segment, category
            )
        return lines

    def _add_rows(
        self, patient: int, encounter: int | None, device_id: str, start_ms: int, samples: StaySamples
    ) -> None:
        n_channels, n = samples.value.shape
        time_ms = start_ms + np.round(samples.t_s * 1000.0).astype(np.int64)
        codes = np.array([self.channel_index[name] for name in samples.channels], dtype=np.int32)
        rows = n_channels * n
        table = pa.table(
            {
                "patient": pa.array(np.full(rows, patient, np.int64)),
                "encounter": _encounters(encounter, rows),
                "device": pa.DictionaryArray.from_arrays(np.zeros(rows, np.int32), pa.array([device_id])),
                "code": pa.DictionaryArray.from_arrays(np.repeat(codes, n), pa.array(self.channel_codes)),
                "time": pa.array(np.tile(time_ms, n_channels), TIME_MS),
                "value": pa.array(samples.value.ravel(), pa.float64(), from_pandas=True),
                "quality": pa.DictionaryArray.from_arrays(samples.quality.ravel().astype(np.int32), pa.array(QUALITY)),
            }
        )
        self.pending.append(table)
        self.pending_rows += rows
        self._flush(force=False)

    def _flush(self, force: bool) -> None:
        if not self.pending or (self.pending_rows < FLUSH_ROWS and not force):
            return
        table = pa.concat_tables(self.pending).unify_dictionaries().combine_chunks()
        self._parquet(self.streams, "streams", table)
        self.pending, self.pending_rows = [], 0

    def _write_episodes(self, name: str, rows: list[tuple]) -> None:
        """truth/<name>: one row per episode of a stream, from (patient, encounter, device, channel, kind, start
        and end in seconds after the stream's start, the stream's start in ms[, samples flagged]): the
        artefacts and dropouts (stream_artefacts), or the clinical episodes a stream shows, for scoring a
        detector (stream_events: an atrial fibrillation period of a stay, a severe hypoglycaemia's trough)."""
        if not rows:
            return
        patient, encounter, device, channel, kind, start_s, end_s, start_ms, *samples = zip(*rows, strict=True)
        columns = {
            "patient": pa.array(patient, pa.int64()),
            "encounter": pa.array(encounter, pa.int32()),
            "device": pa.array(device, pa.string()),
            "code": pa.array([self.plan.rules.channels[c].code.code for c in channel], pa.string()),
            "kind": pa.array(kind, pa.string()),
            "start": pa.array([s + round(a * 1000) for s, a in zip(start_ms, start_s, strict=True)], TIME_MS),
            "end": pa.array([s + round(a * 1000) for s, a in zip(start_ms, end_s, strict=True)], TIME_MS),
        }
        if samples:
            columns["samples"] = pa.array(samples[0], pa.int32())
        self._parquet(self.truth, name, pa.table(columns))

    def _parquet(self, staging: Staging, name: str, table: pa.Table) -> None:
        if name not in self.writers:
            path = staging.dir / staging.name(name, ".parquet")
            self.writers[name] = pq.ParquetWriter(path, table.schema)
        self.writers[name].write_table(table.cast(self.writers[name].schema))
        self.rows[name] += len(table)

    def close(self) -> dict[str, dict]:
        """Every stream file closed, with its rows, size and SHA-256; an empty run still writes both tables."""
        self._flush(force=True)
        files: dict[str, dict] = {}
        for staging, name in (
            (self.streams, "streams"),
            (self.truth, "stream_artefacts"),
            (self.truth, "stream_events"),
        ):
            path = staging.dir / staging.name(name, ".parquet")
            if name in self.writers:
                self.writers[name].close()
            else:
                pq.write_table(_EMPTY[name], path)
            staging.record(path.name, "rows", self.rows[name], path, _sha256(path))
            files.update(staging.files)
        return files

    def folders(self) -> list[Path]:
        """The output folders it writes (put in place when the run is published)."""
        return [self.streams.final]

    def abort(self) -> None:
        for writer in self.writers.values():
            with contextlib.suppress(OSError):
                writer.close()
        self.streams.abort()


def _encounters(encounter: int | None, rows: int) -> pa.Array:
    """The encounter column of a stay's rows (null for a home device's)."""
    if encounter is None:
        return pa.nulls(rows, pa.int32())
    return pa.array(np.full(rows, encounter, np.int32))


_EMPTY = {
    "streams": pa.table(
        {
            "patient": pa.array([], pa.int64()),
            "encounter": pa.array([], pa.int32()),
            "device": pa.array([], pa.dictionary(pa.int32(), pa.string())),
            "code": pa.array([], pa.dictionary(pa.int32(), pa.string())),
            "time": pa.array([], TIME_MS),
            "value": pa.array([], pa.float64()),
            "quality": pa.array([], pa.dictionary(pa.int32(), pa.string())),
        }
    ),
    "stream_artefacts": pa.table(
        {
            "patient": pa.array([], pa.int64()),
            "encounter": pa.array([], pa.int32()),
            "device": pa.array([], pa.string()),
            "code": pa.array([], pa.string()),
            "kind": pa.array([], pa.string()),
            "start": pa.array([], TIME_MS),
            "end": pa.array([], TIME_MS),
            "samples": pa.array([], pa.int32()),
        }
    ),
}
# A truth/stream_events row is an episode without a sample count.
_EMPTY["stream_events"] = _EMPTY["stream_artefacts"].drop_columns(["samples"])
