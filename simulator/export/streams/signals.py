"""The samples of one monitored stay: every channel of its device on a regular grid, with the physiological
course through the charted readings, fast correlated variability, sensor noise, artefacts and dropouts
(rules/streams.yaml, docs/streams.md). Pure numpy on one stay; all its draws come from one generator that the
caller seeds from (seed, patient, encounter), so a stay's samples never depend on the rest of the run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from simulator.model.streams import PRESSURE_CHANNELS, QUALITY_ORDER, Artefact, StreamRules

QUALITY = ("ok", *QUALITY_ORDER)  # the quality column's values; its codes index this
Q_OK = 0
_RANK = {kind: QUALITY.index(kind) for kind in QUALITY_ORDER}  # lower rank = stronger flag
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Charted:
    """The charted readings of one observable in the stay: seconds from the stay's start and values."""

    t_s: np.ndarray
    value: np.ndarray


@dataclass(frozen=True)
class Episode:
    """One artefact episode on one channel, seconds from the stay's start (`end_s` exclusive)."""

    channel: str
    kind: str
    start_s: float
    end_s: float
    n_samples: int  # samples of the grid inside it (whatever flag a stronger episode gave them)


@dataclass(frozen=True)
class Irregular:
    """An irregular rhythm on one channel from `from_s` (seconds from the stay's start) on: a per-sample
    relative fluctuation of SD `relative_sd`, drawn from its own generator so that the stays without one
    draw exactly what they drew before."""

    channel: str
    from_s: float
    relative_sd: float
    rng: np.random.Generator


@dataclass(frozen=True)
class StaySamples:
    """Every channel of one stay on the grid `t_s` (seconds from its start): values (NaN in a dropout) and
    quality codes (indices of QUALITY), in the setting's channel order; and the artefact episodes."""

    t_s: np.ndarray
    channels: tuple[str, ...]
    value: np.ndarray  # float64 (channels, samples)
    quality: np.ndarray  # int8 (channels, samples)
    episodes: list[Episode]


def ou_path(n: int, step_s: float, time_constant_s: float, rng: np.random.Generator) -> np.ndarray:
    """A stationary Ornstein-Uhlenbeck path of unit variance on `n` points `step_s` apart: the AR(1)
    x[i] = r x[i-1] + sqrt(1 - r^2) e[i], r = exp(-step / time constant), x[0] = e[0]."""
    r = np.exp(-step_s / time_constant_s)
    e = rng.standard_normal(n)
    e[1:] *= np.sqrt(1.0 - r * r)
    return lfilter([1.0], [1.0, -r], e)


def _bridge_weights(t: np.ndarray, t0: np.ndarray, t1: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the two ends in the conditional mean of an Ornstein-Uhlenbeck bridge between t0 and t1,
    sinh(k (t1 - t)) / sinh(k (t1 - t0)) and sinh(k (t - t0)) / sinh(k (t1 - t0)), written with exponentials
    of non-positive arguments so that long gaps do not overflow."""
    a, b, span = rate * (t1 - t), rate * (t - t0), rate * (t1 - t0)
    denominator = -np.expm1(-2.0 * span)
    w0 = np.exp(a - span) * -np.expm1(-2.0 * a) / denominator
    w1 = np.exp(b - span) * -np.expm1(-2.0 * b) / denominator
    return w0, w1


def course(t_s: np.ndarray, charted: Charted, time_constant_s: float, noise: np.ndarray) -> np.ndarray:
    """The slow course of a channel on the grid: an Ornstein-Uhlenbeck bridge through the charted readings,
    around their mean, with the spread of their values (`noise`: a unit stationary path of the same time
    constant on the grid, whose own bridge residual is added). Before the first and after the last reading
    it relaxes toward the mean. Without readings it is NaN (the caller skips the channel)."""
    if len(charted.t_s) == 0:
        return np.full(len(t_s), np.nan)
    order = np.argsort(charted.t_s, kind="stable")
    tc, vc = charted.t_s[order], charted.value[order]
    mean = float(vc.mean())
    spread = float(vc.std()) if len(vc) > 1 else 0.0
    rate = 1.0 / time_constant_s
    at = np.clip(np.searchsorted(t_s, tc), 0, len(t_s) - 1)  # the grid point at or after each reading
    z_at = noise[at]
    k = np.searchsorted(tc, t_s, side="right")  # readings at or before each grid point
    inside = (k > 0) & (k < len(tc))
    out = np.empty(len(t_s))
    # between two readings: the bridge mean, plus the noise path's own bridge residual
    j = k[inside] - 1
    w0, w1 = _bridge_weights(t_s[inside], tc[j], tc[j + 1], rate)
    residual = noise[inside] - w0 * z_at[j] - w1 * z_at[j + 1]
    out[inside] = mean + w0 * (vc[j] - mean) + w1 * (vc[j + 1] - mean) + spread * residual
    # outside: relaxing from the nearest reading
    for mask, nearest in ((k == 0, 0), (k == len(tc), len(tc) - 1)):
        w = np.exp(-rate * np.abs(t_s[mask] - tc[nearest]))
        residual = noise[mask] - w * z_at[nearest]
        out[mask] = mean + w * (vc[nearest] - mean) + spread * np.sqrt(np.maximum(1.0 - w * w, 0.0)) * residual
    return out


def _episodes(
    kind: str,
    artefact: Artefact,
    names: tuple[str, ...],
    stay_s: float,
    rng: np.random.Generator,
    clock0_s: float = 0.0,
) -> list[tuple[str, float, float]]:
    """(channel, start, end) of the episodes of one artefact kind in a stay of `stay_s` seconds: a Poisson
    number at the kind's hourly rate, uniform starts, uniform durations, cut at the stay's end. With `hours`,
    only the starts inside those hours of the day (the stay starting `clock0_s` seconds into its day) are kept,
    so that the rate is per hour of that window."""
    hit = [c for c in names if c in artefact.channels]
    if not hit:
        return []
    groups = [tuple(hit)] if artefact.device_wide else [(c,) for c in hit]
    found = []
    for group in groups:
        n = int(rng.poisson(artefact.per_hour * stay_s / 3600.0))
        starts = rng.uniform(0.0, stay_s, n)
        ends = np.minimum(starts + rng.uniform(*artefact.duration_s, n), stay_s)
        if artefact.hours is not None:
            hour = ((clock0_s + starts) % SECONDS_PER_DAY) / 3600.0
            keep = (hour >= artefact.hours[0]) & (hour < artefact.hours[1])
            starts, ends = starts[keep], ends[keep]
        found += [(c, float(s), float(e)) for s, e in zip(starts, ends, strict=True) for c in group]
    return found


def stay_samples(
    rules: StreamRules,
    names: tuple[str, ...],
    stay_s: float,
    step_s: float,
    charted: dict[str, Charted],
    slow_time_constant_s: dict[str, float],
    rng: np.random.Generator,
    irregular: Irregular | None = None,
) -> StaySamples:
    """Sample the channels `names` (a setting's, in order) over a stay of `stay_s` seconds every `step_s`.
    `charted`: the readings of each channel's observable in the stay; `slow_time_constant_s`: the correlation
    time of each observed channel's course; `irregular`: an irregular rhythm (atrial fibrillation) on one
    channel. Draws, in order: the shared fluctuation, then per channel the course noise, its own fluctuation
    and the sensor noise, then the artefacts kind by kind."""
    t_s = np.arange(0.0, stay_s, step_s) if stay_s > 0 else np.zeros(1)
    n = len(t_s)
    shared = ou_path(n, step_s, rules.shared_time_constant_s, rng)
    physiology: dict[str, np.ndarray] = {}
    sensor: dict[str, np.ndarray] = {}
    for name in names:
        channel = rules.channels[name]
        if channel.derived is None:
            v = channel.variability
            slow = course(
                t_s, charted[name], slow_time_constant_s[name], ou_path(n, step_s, slow_time_constant_s[name], rng)
            )
            own = ou_path(n, step_s, v.time_constant_s, rng)
            fast = v.sd * (v.direction * np.sqrt(v.shared) * shared + np.sqrt(1.0 - v.shared) * own)
            physiology[name] = slow + fast
        sensor[name] = channel.sensor_sd * rng.standard_normal(n)
    if irregular is not None and irregular.channel in physiology:
        beats = irregular.relative_sd * irregular.rng.standard_normal(n)
        physiology[irregular.channel] *= 1.0 + np.where(t_s >= irregular.from_s, beats, 0.0)
    systolic, diastolic = (physiology.get(c) for c in PRESSURE_CHANNELS)
    value = np.empty((len(names), n))
    for i, name in enumerate(names):
        channel = rules.channels[name]
        level = diastolic + (systolic - diastolic) / 3.0 if channel.derived else physiology[name]
        value[i] = level + sensor[name]
    quality = np.zeros((len(names), n), dtype=np.int8)
    episodes = apply_artefacts(rules, rules.artefacts, names, t_s, stay_s, value, quality, rng)
    return StaySamples(t_s, names, finish(rules, names, value), quality, episodes)


def finish(rules: StreamRules, names: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    """Values clipped to each channel's limits and rounded to its decimals (NaN stays NaN)."""
    for i, name in enumerate(names):
        channel = rules.channels[name]
        value[i] = np.round(np.clip(value[i], *channel.limits), channel.decimals)
    return value


def apply_artefacts(
    rules: StreamRules,
    artefacts: dict[str, Artefact],
    names: tuple[str, ...],
    t_s: np.ndarray,
    stay_s: float,
    value: np.ndarray,
    quality: np.ndarray,
    rng: np.random.Generator,
    clock0_s: float = 0.0,
) -> list[Episode]:
    """Corrupt `value` in place with the episodes of `artefacts` (the file's, or a setting's own), kind by
    kind from the weakest flag to the strongest (motion, compression low, flat line, probe off, dropout), so
    that the strongest episode decides what a sample holds and says; `quality` gets the strongest flag of each
    sample. Returns every episode."""
    row = {name: i for i, name in enumerate(names)}
    episodes = []
    for kind in reversed(QUALITY_ORDER):
        if kind not in artefacts:
            continue
        artefact = artefacts[kind]
        for name, start, end in _episodes(kind, artefact, names, stay_s, rng, clock0_s):
            i, channel = row[name], rules.channels[name]
            lo, hi = np.searchsorted(t_s, [start, end])
            inside = slice(lo, hi)
            m = hi - lo
            if kind == "motion":
                jolt = channel.motion_sd * rng.standard_normal(m)
                value[i, inside] += -np.abs(jolt) if channel.motion_direction == "down" else jolt
            elif kind == "compression_low":
                fall = np.minimum((t_s[inside] - start) / artefact.fall_s, 1.0)
                value[i, inside] *= 1.0 - rng.uniform(*artefact.depth) * fall
            elif kind == "flat_line" and m:
                value[i, inside] = value[i, lo]
            elif kind == "probe_off":
                floor = rng.uniform(*artefact.floor)
                before = value[i, lo - 1] if lo > 0 else value[i, lo] if m else floor
                fall = np.minimum((t_s[inside] - start) / artefact.fall_s, 1.0)
                value[i, inside] = before + (floor - before) * fall
            elif kind == "dropout":
                value[i, inside] = np.nan
            q = quality[i, inside]
            quality[i, inside] = np.where((q == Q_OK) | (q > _RANK[kind]), _RANK[kind], q)
            episodes.append(Episode(name, kind, start, end, int(m)))
    return episodes
