"""The event kernel: compiled arrays + people -> per-patient event buffers (numba).

Semantics (DESIGN.md, "Simulation semantics"): continuous time in float days since 1970-01-01;
each patient is simulated alone, event by event, from birth to the end of their window or death.
Every random number for patient i comes from a SplitMix64 stream derived from (seed, i, stream)
alone, so output never depends on chunking or threads. Per patient the next event is the earliest
of: scheduled encounter ends, the rounds of open encounters (repeated observations), module wake-ups
(delays, hazards, guard re-evaluation, booked clinic slots) and background death; ties go to encounter
ends, then rounds, then modules in order, then death.

Draw order for one patient (the reference implementation follows it exactly): one normal per
observable (persistent component) from the patient-level stream; then each module draws what its
states consume, as they happen, from its own stream (numbered from the module's name), so that a
change to one module's parameters leaves every other module's draws as they were. A background
death draws its cause last, from the patient-level stream.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from simulator.days import DAYS_PER_YEAR
from simulator.engine import codes
from simulator.engine.byref import by_ref
from simulator.engine.civil import completed_years_between, next_month_flip, year_month
from simulator.engine.compiler import OBS_ESTIMATED, OBS_MEASURED, CompiledModel
from simulator.engine.people import People, cumulative_at, inverse_cumulative
from simulator.engine.rng import STREAM_EVENTS, exponential, gamma, normal, stream_state, uniform
from simulator.model.schema import SYMPTOM_SCALE_MAX

# Numba builds a CPython wrapper for each compiled function; for a function that takes the compiled model (one
# NamedTuple of some 115 arrays) building it cost more than the function itself, for most of a first compile of
# several minutes. Only `simulate` is called from Python: the kernel's other functions go without.
internal = njit(cache=True, _nrt=False, no_cpython_wrapper=True, no_cfunc_wrapper=True)


@internal
def draw(model: CompiledModel, dist: int, rng: np.ndarray) -> float:
    """One value of a compiled distribution, times its unit in days (1 when unitless)."""
    kind = model.dist_kind[dist]
    a = model.dist_a[dist]
    b = model.dist_b[dist]
    if kind == codes.D_EXACT:
        value = a
    elif kind == codes.D_UNIFORM:
        value = a + (b - a) * uniform(rng)
    elif kind == codes.D_NORMAL:
        value = a + b * normal(rng)
    elif kind == codes.D_EXPONENTIAL:
        value = a * exponential(rng)
    elif kind == codes.D_LOGNORMAL:
        value = math.exp(a + b * normal(rng))
    else:
        value = b * gamma(rng, a)
    return value * model.dist_scale[dist]


# Helpers are compiled without Numba's reference counting (_nrt=False): they never allocate, and
# counting the ~100 arrays of the model and scratch tuples on every call cost 4x in throughput.
# Only the parallel entry points (which allocate per-block scratch) keep it.
EPS_DAYS = 1e-6  # guard re-evaluation lands just past a threshold so it is decided
MAX_PENDING = 32  # encounters one patient can have open at once
MAX_STEPS = 100_000  # state entries within one instant before we call it a runaway loop
STACK = 64
# indexes into Scratch.counters: events written, encounters started, a guard input changed (re-check),
# dead, a wellness visit to join (number + 1), open encounters, error bits (E_*), the stream in use
C_EVENTS, C_ENCOUNTERS, C_DIRTY, C_DEAD, C_JOIN, C_PENDING, C_ERROR, C_STREAM = 0, 1, 2, 3, 4, 5, 6, 7
# error bits
E_OVERLOAD, E_RUNAWAY, E_NO_ENCOUNTER = 1, 2, 4
# wake kinds (W_CLINIC: enter the state cur_state now, the clinic slot or hour its entry was deferred to)
W_NONE, W_FIRE, W_REEVALUATE, W_CLINIC = 0, 1, 2, 3
# wait kinds
WAIT_NONE, WAIT_WELLNESS, WAIT_CASES, WAIT_CLINIC = 0, 1, 2, 3
THURSDAY = 3  # the weekday (Monday 0) of day 0, 1970-01-01
# -1 ("none") and 0 as int64 values, not literals: Numba compiles a separate copy of a function, and of all it
# calls, for each literal it is first called with (a variable set to -1 before a loop counts), which doubled the
# first compile of the kernel.
NONE = np.int64(-1)
FIRST = np.int64(0)


class Scratch(NamedTuple):
    rng: np.ndarray  # uint64[1]: the stream being drawn from (counters[C_STREAM] says whose)
    streams: np.ndarray  # uint64[n_modules + 1]: each module's stream, then the patient-level one
    counters: np.ndarray  # int64[8], indexed by C_*
    cur_state: np.ndarray  # int32[n_modules]
    wake_t: np.ndarray  # float64[n_modules]
    wake_kind: np.ndarray  # int8[n_modules]
    wake_band: np.ndarray  # int32[n_modules]
    wait_kind: np.ndarray  # int8[n_modules]
    hz_mult: np.ndarray  # float64[n_modules, max_hazards]
    joining: np.ndarray  # bool[n_modules]
    enc_cur: np.ndarray  # int32[n_modules]: encounter the module's events attach to
    enc_open: np.ndarray  # bool[n_modules]: that encounter is open-ended
    enc_t: np.ndarray  # float64[n_modules]: when the module attached
    pend_t: np.ndarray  # float64[MAX_PENDING]: scheduled end (inf: open-ended)
    pend_id: np.ndarray  # int32[MAX_PENDING]
    pend_module: np.ndarray  # int32[MAX_PENDING]
    pend_state: np.ndarray  # int32[MAX_PENDING]
    pend_code: np.ndarray  # int32[MAX_PENDING]
    pend_class: np.ndarray  # int32[MAX_PENDING]
    attr_level: np.ndarray  # float64[n_attributes]
    attr_slope: np.ndarray  # float64[n_attributes], per year
    attr_t0: np.ndarray  # float64[n_attributes]
    cond_active: np.ndarray  # bool[n_conditions]
    cond_diagnosed: np.ndarray  # bool[n_conditions]
    med_active: np.ndarray  # bool[n_medications]
    obs_latest: np.ndarray  # float64[n_observables]
    obs_z: np.ndarray  # float64[n_observables]
    entered_t: np.ndarray  # float64[n_states]
    stack: np.ndarray  # bool[STACK]
    obs_visit_z: np.ndarray  # float64[n_observables]: last visit component (correlated observables)
    obs_visit_t: np.ndarray  # float64[n_observables]: when it was drawn (-inf: never)
    obs_lag_level: np.ndarray  # float64[n_observables]: lagged attribute effect (NaN: not yet used)
    obs_lag_t: np.ndarray  # float64[n_observables]: when the lagged level was last brought up to date
    med_state: np.ndarray  # int32[n_medications]: the state that started each active medication
    pend_round_t: np.ndarray  # float64[MAX_PENDING]: when the encounter's observations are next repeated (inf: never)
    med_course_code: np.ndarray  # int32[n_medications]: the code a running course was started under (its era's)
    attr_seen_level: np.ndarray  # float64[n_attributes]: what observables saw of the attribute at its last change
    attr_seen_t: np.ndarray  # float64[n_attributes]: when it last changed
    attr_half_life: np.ndarray  # float64[n_attributes]: lag of its effects since then (0: none)
    bg: np.ndarray  # float64[2]: background death time now, and the background hazard multiplier it was drawn at
    bg_cum_hazard: np.ndarray  # float64[2, n_ages + 1]: cumulative background hazard at whole ages, by sex (people)
    bg_tail_rate: np.ndarray  # float64[2]: background hazard per year past the table
    win: np.ndarray  # float64[n_windows, 2]: the patient's scenario windows, [from, to) in years of age
    log_weight: np.ndarray  # float64[1]: log likelihood ratio of the life so far, unconditioned / conditioned
    exposure_t: np.ndarray  # float64[n_modules]: tilted hazards counted into log_weight up to here (inf: none)
    wake_age: np.ndarray  # float64[n_modules]: start (years of age) of the stretch the scheduled hazard fires in
    last_t: np.ndarray  # float64[1]: time of the patient's last event (birth before the first)
    dirty: np.ndarray  # bool[n_modules]: something the module's guards read changed since its last re-check


class Person(NamedTuple):
    """One patient's fixed inputs, and where their events go."""

    stream: int  # the event stream drawn from: the patient's index, or another in population-mode redraws
    birth_t: float
    sex: int
    race: int
    ethnicity: int
    t_end: float
    death_t: float  # background death
    base: int  # first row of the patient's region in the event buffers
    capacity: int
    utc_offset_days: float  # standard UTC offset of the patient's time zone (local = UTC + it)


class Events(NamedTuple):
    """Flat event buffers; each patient writes its own region."""

    t: np.ndarray  # float64 days since 1970-01-01
    kind: np.ndarray  # int8: K_*
    code: np.ndarray  # int32: code table index
    value: np.ndarray  # float64: observation value / symptom severity (NaN otherwise)
    encounter: np.ndarray  # int32: per-patient encounter number (-1 none)
    state: np.ndarray  # int32: global state that emitted it (-1: background)
    subject: np.ndarray  # int32: what the event is about: encounter class / observable / condition / medication
    reason: np.ndarray  # int32: reason condition of an encounter (-1 none)


@njit(cache=True)
def new_scratch(model: CompiledModel, bg_cum_hazard: np.ndarray, bg_tail_rate: np.ndarray, n_windows: int) -> Scratch:
    n_modules = model.module_start.shape[0]
    return Scratch(
        np.zeros(1, np.uint64),
        np.zeros(n_modules + 1, np.uint64),
        np.zeros(8, np.int64),
        np.zeros(n_modules, np.int32),
        np.zeros(n_modules, np.float64),
        np.zeros(n_modules, np.int8),
        np.zeros(n_modules, np.int32),
        np.zeros(n_modules, np.int8),
        np.zeros((n_modules, max(model.max_hazards, 1)), np.float64),
        np.zeros(n_modules, np.bool_),
        np.zeros(n_modules, np.int32),
        np.zeros(n_modules, np.bool_),
        np.zeros(n_modules, np.float64),
        np.zeros(MAX_PENDING, np.float64),
        np.zeros(MAX_PENDING, np.int32),
        np.zeros(MAX_PENDING, np.int32),
        np.zeros(MAX_PENDING, np.int32),
        np.zeros(MAX_PENDING, np.int32),
        np.zeros(MAX_PENDING, np.int32),
        np.zeros(model.attr_initial.shape[0], np.float64),
        np.zeros(model.attr_initial.shape[0], np.float64),
        np.zeros(model.attr_initial.shape[0], np.float64),
        np.zeros(model.cond_code.shape[0], np.bool_),
        np.zeros(model.cond_code.shape[0], np.bool_),
        np.zeros(model.med_code.shape[0], np.bool_),
        np.zeros(model.obs_code.shape[0], np.float64),
        np.zeros(model.obs_code.shape[0], np.float64),
        np.zeros(model.state_module.shape[0], np.float64),
        np.zeros(STACK, np.bool_),
        np.zeros(model.obs_code.shape[0], np.float64),
        np.zeros(model.obs_code.shape[0], np.float64),
        np.zeros(model.obs_code.shape[0], np.float64),
        np.zeros(model.obs_code.shape[0], np.float64),
        np.zeros(model.med_code.shape[0], np.int32),
        np.zeros(MAX_PENDING, np.float64),
        np.zeros(model.med_code.shape[0], np.int32),
        np.zeros(model.attr_initial.shape[0], np.float64),
        np.zeros(model.attr_initial.shape[0], np.float64),
        np.zeros(model.attr_initial.shape[0], np.float64),
        np.zeros(2, np.float64),
        bg_cum_hazard,
        bg_tail_rate,
        np.zeros((max(n_windows, 1), 2), np.float64),
        np.zeros(1, np.float64),
        np.zeros(n_modules, np.float64),
        np.zeros(n_modules, np.float64),
        np.zeros(1, np.float64),
        np.zeros(n_modules, np.bool_),
    )


@internal
def reset(model: CompiledModel, sc: Scratch, p: Person, seed: int) -> None:
    n_modules = model.module_stream.shape[0]
    for m in range(n_modules):
        sc.streams[m] = stream_state(seed, p.stream, model.module_stream[m])
    sc.rng[0] = stream_state(seed, p.stream, STREAM_EVENTS)
    sc.counters[:] = 0
    sc.counters[C_STREAM] = n_modules
    sc.dirty[:] = False
    sc.cur_state[:] = -1
    sc.bg[0] = p.death_t
    sc.bg[1] = 1.0
    sc.last_t[0] = p.birth_t
    sc.wake_t[:] = np.inf
    sc.wake_kind[:] = W_NONE
    sc.wait_kind[:] = WAIT_NONE
    sc.enc_cur[:] = -1
    for a in range(model.attr_initial.shape[0]):
        sc.attr_level[a] = model.attr_initial[a]
    sc.attr_slope[:] = 0.0
    sc.attr_t0[:] = p.birth_t
    sc.attr_half_life[:] = 0.0
    sc.cond_active[:] = False
    sc.cond_diagnosed[:] = False
    sc.med_active[:] = False
    sc.obs_latest[:] = np.nan
    sc.obs_visit_z[:] = 0.0
    sc.obs_visit_t[:] = -np.inf
    sc.obs_lag_level[:] = np.nan
    sc.obs_lag_t[:] = np.nan
    sc.entered_t[:] = -np.inf
    sc.hz_mult[:] = -1.0
    sc.log_weight[0] = 0.0
    sc.exposure_t[:] = np.inf
    for o in range(sc.obs_z.shape[0]):
        sc.obs_z[o] = normal(sc.rng)


@njit(cache=True, inline="always", _nrt=False)
def age_years(p: Person, t: float) -> float:
    return (t - p.birth_t) / DAYS_PER_YEAR


@njit(cache=True, inline="always", _nrt=False)
def attr_value(sc: Scratch, a: int, t: float) -> float:
    return sc.attr_level[a] + sc.attr_slope[a] * (t - sc.attr_t0[a]) / DAYS_PER_YEAR


@njit(cache=True, inline="always", _nrt=False)
def compare(x: float, cmp: int, v: float) -> bool:
    if cmp == 0:
        return x < v
    if cmp == 1:
        return x <= v
    if cmp == 2:
        return x > v
    if cmp == 3:
        return x >= v
    if cmp == 4:
        return x == v
    return x != v


@internal
def curve_at(model: CompiledModel, curve: int, sex: int, age: float) -> float:
    """Linear interpolation in a curve for this sex (flat outside its ages)."""
    start = model.curve_start[curve]
    n = model.curve_n[curve]
    values = model.curve_male if sex == 0 else model.curve_female
    if age <= model.curve_age[start] or n == 1:
        return values[start]
    for k in range(start + 1, start + n):
        if age < model.curve_age[k]:
            a0 = model.curve_age[k - 1]
            w = (age - a0) / (model.curve_age[k] - a0)
            return values[k - 1] + w * (values[k] - values[k - 1])
    return values[start + n - 1]


@internal
def emit(
    ev: Events,
    sc: Scratch,
    p: Person,
    t: float,
    kind: int,
    code: int,
    value: float,
    encounter: int,
    state: int,
    subject: int,
    reason: int,
) -> None:
    """Append one event to the patient's region; past capacity, only count it."""
    k = sc.counters[C_EVENTS]
    if k < p.capacity:
        row = p.base + k
        ev.t[row] = t
        ev.kind[row] = kind
        ev.code[row] = code
        ev.value[row] = value
        ev.encounter[row] = encounter
        ev.state[row] = state
        ev.subject[row] = subject
        ev.reason[row] = reason
    sc.counters[C_EVENTS] = k + 1
    sc.last_t[0] = t


@internal
def attached(sc: Scratch, m: int, t: float) -> int:
    """The encounter module m's events belong to now: an open-ended one, or one joined this instant."""
    enc = sc.enc_cur[m]
    if enc >= 0 and (sc.enc_open[m] or sc.enc_t[m] == t):
        return enc
    return -1


@internal
def need_encounter(sc: Scratch, m: int, t: float) -> int:
    enc = attached(sc, m, t)
    if enc < 0:
        sc.counters[C_ERROR] |= E_NO_ENCOUNTER
    return enc


@internal
def eval_guard(model: CompiledModel, sc: Scratch, p: Person, g: int, t: float) -> bool:
    """Run a postfix guard program on a small boolean stack."""
    top = 0
    for k in range(model.guard_start[g], model.guard_start[g] + model.guard_n[g]):
        op = model.ginst_op[k]
        i0 = model.ginst_i0[k]
        cmp = model.ginst_cmp[k]
        f0 = model.ginst_f0[k]
        if op == codes.G_AND or op == codes.G_OR:  # noqa: SIM109 (numba)
            result = op == codes.G_AND
            for _ in range(i0):
                top -= 1
                result = (result and sc.stack[top]) if op == codes.G_AND else (result or sc.stack[top])
            value = result
        elif op == codes.G_NOT:
            top -= 1
            value = not sc.stack[top]
        elif op == codes.G_AGE:
            value = compare(age_years(p, t), cmp, f0)
        elif op == codes.G_SEX:
            value = p.sex == i0
        elif op == codes.G_RACE:
            value = p.race == i0
        elif op == codes.G_ETHNICITY:
            value = p.ethnicity == i0
        elif op == codes.G_ATTR:
            value = compare(attr_value(sc, i0, t), cmp, f0)
        elif op == codes.G_COND_ACTIVE:
            value = sc.cond_active[i0]
        elif op == codes.G_COND_DIAGNOSED:
            value = sc.cond_diagnosed[i0]
        elif op == codes.G_MED:
            value = sc.med_active[i0]
        elif op == codes.G_OBS:
            latest = sc.obs_latest[i0]
            value = (not math.isnan(latest)) and compare(latest, cmp, f0)
        elif op == codes.G_BEFORE:
            value = t < f0
        elif op == codes.G_MONTH:
            value = (i0 >> (year_month(t)[1] - 1)) & 1 == 1
        else:  # codes.G_SINCE
            entered = sc.entered_t[i0]
            value = entered > -np.inf and compare(t - entered, cmp, f0)
        sc.stack[top] = value
        top += 1
    return sc.stack[0]


@internal
def next_crossing(model: CompiledModel, sc: Scratch, p: Person, g: int, t: float) -> float:
    """Earliest time after t at which a continuously changing operand of guard g crosses its
    threshold (age, time since a state, a drifting attribute, a calendar date or month); inf if none."""
    best = np.inf
    for k in range(model.guard_start[g], model.guard_start[g] + model.guard_n[g]):
        op = model.ginst_op[k]
        f0 = model.ginst_f0[k]
        at = np.inf
        if op == codes.G_AGE:
            at = p.birth_t + f0 * DAYS_PER_YEAR
        elif op == codes.G_BEFORE:
            at = f0
        elif op == codes.G_MONTH:
            at = next_month_flip(t, model.ginst_i0[k])
        elif op == codes.G_SINCE:
            entered = sc.entered_t[model.ginst_i0[k]]
            if entered > -np.inf:
                at = entered + f0
        elif op == codes.G_ATTR:
            a = model.ginst_i0[k]
            slope = sc.attr_slope[a]
            if slope != 0.0:
                at = sc.attr_t0[a] + (f0 - sc.attr_level[a]) / slope * DAYS_PER_YEAR
        at += EPS_DAYS
        if t < at < best:
            best = at
    return best


@internal
def hazard_multipliers(model: CompiledModel, sc: Scratch, p: Person, m: int, s: int, t: float) -> bool:
    """Recompute the hazard-ratio products of state s into hz_mult[m]; True if any changed."""
    changed = False
    for k in range(model.state_sub_n[s]):
        h = model.state_sub_start[s] + k
        mult = 1.0
        for r in range(model.hazard_ratio_start[h], model.hazard_ratio_start[h] + model.hazard_ratio_n[h]):
            if eval_guard(model, sc, p, model.ratio_guard[r], t):
                mult *= model.ratio_value[r]
        if sc.hz_mult[m, k] != mult:
            changed = True
        sc.hz_mult[m, k] = mult
    return changed


@njit(cache=True, inline="always", _nrt=False)
def tilt_at(model: CompiledModel, sc: Scratch, h: int, age: float) -> float:
    """The scenario's factor on hazard h at this age (1 outside its window)."""
    w = model.hazard_window[h]
    if w >= 0 and not sc.win[w, 0] <= age < sc.win[w, 1]:
        return 1.0
    return model.hazard_tilt[h]


@internal
def next_window_edge(model: CompiledModel, sc: Scratch, s: int, age: float) -> float:
    """The first edge after `age` of the windows of state s's tilted hazards (inf: none), where a rate changes."""
    edge = np.inf
    for h in range(model.state_sub_start[s], model.state_sub_start[s] + model.state_sub_n[s]):
        w = model.hazard_window[h]
        if model.hazard_tilt[h] != 1.0 and w >= 0:
            for at in (sc.win[w, 0], sc.win[w, 1]):
                if age < at < edge:
                    edge = at
    return edge


@internal
def band_rate(model: CompiledModel, sc: Scratch, p: Person, m: int, s: int, band: int, age: float) -> float:
    """Total rate per year of state s's competing hazards in one age band, at `age` in it (scenario tilts)."""
    rates = model.rate_male if p.sex == 0 else model.rate_female
    total = 0.0
    for k in range(model.state_sub_n[s]):
        h = model.state_sub_start[s] + k
        rate = sc.hz_mult[m, k] * rates[model.hazard_rate_start[h] + band]
        if model.state_tilted[s]:
            rate *= tilt_at(model, sc, h, age)
        total += rate
    return total


@internal
def count_exposure(model: CompiledModel, sc: Scratch, p: Person, m: int, s: int, t: float) -> None:
    """Add to the log weight what the tilts of state s's hazards changed from exposure_t[m] to t: the
    integral of (factor - 1) x rate (a piecewise-exponential likelihood ratio's exp(-integral of the
    difference)), at the multipliers in hz_mult; exposure then runs on from t."""
    t0 = sc.exposure_t[m]
    sc.exposure_t[m] = t
    if not t0 < t:
        return
    rates = model.rate_male if p.sex == 0 else model.rate_female
    start, n_bands = model.state_band_start[s], model.state_band_n[s]
    age, stop = age_years(p, t0), age_years(p, t)
    band = 0
    while band + 1 < n_bands and model.band_edge_years[start + band + 1] <= age:
        band += 1
    while age < stop:
        end = model.band_edge_years[start + band + 1] if band + 1 < n_bands else np.inf
        end = min(end, next_window_edge(model, sc, s, age), stop)
        for k in range(model.state_sub_n[s]):
            h = model.state_sub_start[s] + k
            factor = tilt_at(model, sc, h, age)
            if factor != 1.0:
                rate = sc.hz_mult[m, k] * rates[model.hazard_rate_start[h] + band]
                sc.log_weight[0] += (factor - 1.0) * rate * (end - age)
        if band + 1 < n_bands and model.band_edge_years[start + band + 1] <= end:
            band += 1
        age = end


@internal
def hazard_recheck(model: CompiledModel, sc: Scratch, p: Person, s: int, t: float) -> float:
    """When the first hazard-ratio guard of state s may flip (a threshold of age, time since a state
    or a drifting attribute); inf if none can."""
    recheck = np.inf
    for k in range(model.state_sub_n[s]):
        h = model.state_sub_start[s] + k
        for r in range(model.hazard_ratio_start[h], model.hazard_ratio_start[h] + model.hazard_ratio_n[h]):
            recheck = min(recheck, next_crossing(model, sc, p, model.ratio_guard[r], t))
    return recheck


@njit(cache=True, inline="always", _nrt=False)
def use_stream(sc: Scratch, m: int) -> None:
    """Draw from module m's own stream from now on (common random numbers: a change to one module
    does not shift the draws of the others)."""
    current = sc.counters[C_STREAM]
    if current != m:
        sc.streams[current] = sc.rng[0]
        sc.rng[0] = sc.streams[m]
        sc.counters[C_STREAM] = m


@internal
def schedule_hazards(model: CompiledModel, sc: Scratch, p: Person, m: int, s: int, t: float) -> None:
    """Draw the time of the first competing hazard from t by inverting the cumulative hazard over
    the age bands (and the edges of its scenario windows); wake earlier if a hazard ratio's guard may flip
    before then."""
    tilted = model.state_tilted[s]
    if tilted:
        count_exposure(model, sc, p, m, s, t)  # at the multipliers so far
    hazard_multipliers(model, sc, p, m, s, t)
    use_stream(sc, m)
    remaining = exponential(sc.rng)
    start = model.state_band_start[s]
    n_bands = model.state_band_n[s]
    age = age_years(p, t)
    band = 0
    while band + 1 < n_bands and model.band_edge_years[start + band + 1] <= age:
        band += 1
    hit_t = np.inf
    while True:
        rate = band_rate(model, sc, p, m, s, band, age)
        end = model.band_edge_years[start + band + 1] if band + 1 < n_bands else np.inf
        if tilted:
            end = min(end, next_window_edge(model, sc, s, age))
        if rate > 0.0 and rate * (end - age) >= remaining:
            hit_t = p.birth_t + (age + remaining / rate) * DAYS_PER_YEAR
            break
        if end == np.inf:
            break
        remaining -= rate * (end - age)
        if band + 1 < n_bands and model.band_edge_years[start + band + 1] <= end:
            band += 1
        age = end
    sc.wake_age[m] = age
    recheck = hazard_recheck(model, sc, p, s, t)
    if recheck < hit_t:
        sc.wake_t[m] = recheck
        sc.wake_kind[m] = W_REEVALUATE
    else:
        sc.wake_t[m] = hit_t
        sc.wake_kind[m] = W_FIRE if hit_t < np.inf else W_NONE
        sc.wake_band[m] = band


@internal
def fired_hazard(model: CompiledModel, sc: Scratch, p: Person, m: int, s: int) -> int:
    """Which competing hazard fired: chosen in proportion to the rates in the band it fired in."""
    rates = model.rate_male if p.sex == 0 else model.rate_female
    band = sc.wake_band[m]
    use_stream(sc, m)
    age = sc.wake_age[m]
    pick = uniform(sc.rng) * band_rate(model, sc, p, m, s, band, age)
    last = model.state_sub_start[s]
    for k in range(model.state_sub_n[s]):
        h = model.state_sub_start[s] + k
        rate = sc.hz_mult[m, k] * rates[model.hazard_rate_start[h] + band]
        if model.state_tilted[s]:
            rate *= tilt_at(model, sc, h, age)
        if rate > 0.0:
            last = h
            if pick < rate:
                break
            pick -= rate
    if model.state_tilted[s]:  # the density ratio of the hazard that fired: rate / (factor x rate)
        sc.log_weight[0] -= math.log(tilt_at(model, sc, last, age))
    return model.hazard_to[last]


@njit(cache=True, inline="always", _nrt=False)
def attr_seen(sc: Scratch, a: int, t: float) -> float:
    """Attribute a as observables see it at t: its value, or, while the lag of its last change runs, first
    order from what they saw at that change toward its value (SetAttribute.response_half_life_days)."""
    value = attr_value(sc, a, t)
    half_life = sc.attr_half_life[a]
    if half_life == 0.0:
        return value
    return value + (sc.attr_seen_level[a] - value) * 0.5 ** ((t - sc.attr_seen_t[a]) / half_life)


@internal
def effect_target(model: CompiledModel, sc: Scratch, o: int, t: float) -> float:
    """Sum of coefficient x attribute over observable o's effects at t (what a lagged level moves toward)."""
    target = 0.0
    for k in range(model.obs_effect_start[o], model.obs_effect_start[o] + model.obs_effect_n[o]):
        target += model.effect_coef[k] * attr_seen(sc, model.effect_attr[k], t)
    return target


@internal
def lag_to(model: CompiledModel, sc: Scratch, o: int, t: float) -> float:
    """Bring observable o's lagged effect level up to t, first order toward its target now (starting at
    the target on first use); return it."""
    target = effect_target(model, sc, o, t)
    level = sc.obs_lag_level[o]
    if math.isnan(level):
        level = target
    else:
        level = target + (level - target) * 0.5 ** ((t - sc.obs_lag_t[o]) / model.obs_half_life_days[o])
    sc.obs_lag_level[o] = level
    sc.obs_lag_t[o] = t
    return level


@internal
def lag_before_set(model: CompiledModel, sc: Scratch, a: int, t: float) -> None:
    """Attribute a is about to change at t: bring each lagged observable it affects up to t with the old
    target, so that a step change is followed exactly."""
    for o in range(model.obs_code.shape[0]):
        if model.obs_half_life_days[o] > 0.0:
            for k in range(model.obs_effect_start[o], model.obs_effect_start[o] + model.obs_effect_n[o]):
                if model.effect_attr[k] == a:
                    lag_to(model, sc, o, t)
                    break


@internal
def visit_component(model: CompiledModel, sc: Scratch, o: int, t: float) -> float:
    """z_visit of a reading of o at t from one standard normal: fresh, or an Ornstein-Uhlenbeck step
    from the previous reading when the observable has a correlation time."""
    z = normal(sc.rng)
    corr = model.obs_correlation_days[o]
    if corr > 0.0:
        if sc.obs_visit_t[o] > -np.inf:
            rho = math.exp(-(t - sc.obs_visit_t[o]) / corr)
            z = rho * sc.obs_visit_z[o] + math.sqrt(1.0 - rho * rho) * z
        sc.obs_visit_z[o] = z
        sc.obs_visit_t[o] = t
    return z


@internal
def measured(model: CompiledModel, sc: Scratch, p: Person, o: int, t: float) -> float:
    """A measured observable's reading before clipping and rounding: mean, attribute effects (lagged or
    not), the patient and visit components, and the measurement error when declared."""
    age = age_years(p, t)
    value = curve_at(model, model.obs_mean_start[o], p.sex, age)
    if model.obs_half_life_days[o] > 0.0:
        value += lag_to(model, sc, o, t)
    else:
        for k in range(model.obs_effect_start[o], model.obs_effect_start[o] + model.obs_effect_n[o]):
            value += model.effect_coef[k] * attr_seen(sc, model.effect_attr[k], t)
    sd = curve_at(model, model.obs_sd_start[o], p.sex, age)
    share = model.obs_persistence[o]
    value += sd * (math.sqrt(share) * sc.obs_z[o] + math.sqrt(1.0 - share) * visit_component(model, sc, o, t))
    error_sd = model.obs_measurement_sd[o]
    if not math.isnan(error_sd):
        value += error_sd * normal(sc.rng)
    return value


@internal
def era_code(model: CompiledModel, c: int, p: Person, t: float) -> int:
    """The code a record at time t contains for code c (rules/calendar.yaml): c itself when not dated, else
    the newest era started by t at the patient's age; -1: nothing in this era."""
    n = model.code_era_n[c]
    if n == 0:
        return c
    age = age_years(p, t)
    for e in range(model.code_era_start[c], model.code_era_start[c] + n):
        start_t = np.inf
        for k in range(model.era_step_start[e], model.era_step_start[e] + model.era_step_n[e]):
            if model.step_age[k] <= age:
                start_t = model.step_t[k]
        if t >= start_t:
            return model.era_code[e]
    return -1


@internal
def gfr_base(model: CompiledModel, e: int, p: Person, age: float) -> float:
    """Equation e without its creatinine terms: scale, age, sex and race factors."""
    value = model.eq_scale[e] * model.eq_age_factor[e] ** age * age ** model.eq_age_power[e]
    if p.sex == 1:
        value *= model.eq_female[e]
    if p.race == model.eq_race[e]:
        value *= model.eq_race_factor[e]
    return value


@internal
def kidney_value(model: CompiledModel, sc: Scratch, p: Person, o: int, t: float) -> float:
    """An estimated GFR from the latest creatinine by the equation of the era's code (the observable's own
    when the era reports none; NaN below the minimum age or without a creatinine), or a creatinine that the
    eGFR's own equation turns into the true GFR attribute, plus one visit-to-visit normal draw. Age in
    completed years, as laboratories compute it."""
    age = completed_years_between(p.birth_t, t)
    sex = p.sex
    start = model.obs_eq_start[o]
    if model.obs_kidney[o] == OBS_ESTIMATED:
        creatinine = sc.obs_latest[model.obs_kidney_input[o]]
        if age < model.obs_kidney_min_age[o] or math.isnan(creatinine):
            return np.nan
        reported = era_code(model, model.obs_code[o], p, t)
        e = start
        for k in range(start, start + model.obs_eq_n[o]):
            if model.eq_code[k] == reported:
                e = k
        ratio = creatinine / model.eq_kappa[e, sex]
        terms = min(ratio, 1.0) ** model.eq_alpha[e, sex] * max(ratio, 1.0) ** model.eq_above[e]
        return gfr_base(model, e, p, age) * terms
    ratio = max(attr_value(sc, model.obs_kidney_input[o], t), 0.0) / gfr_base(model, start, p, age)
    exponent = model.eq_above[start] if ratio <= 1.0 else model.eq_alpha[start, sex]
    creatinine = model.eq_kappa[start, sex] * ratio ** (1.0 / exponent)
    return creatinine + curve_at(model, model.obs_sd_start[o], sex, age_years(p, t)) * normal(sc.rng)


@internal
def observe(model: CompiledModel, sc: Scratch, p: Person, o: int, t: float) -> float:
    """A value from the observable's model (NaN when a derived input was never measured)."""
    n_factors = model.obs_derived_n[o]
    if model.obs_kidney[o] != OBS_MEASURED:
        value = kidney_value(model, sc, p, o, t)
    elif n_factors > 0 and model.obs_derived_sum[o]:
        value = 0.0
        for k in range(model.obs_derived_start[o], model.obs_derived_start[o] + n_factors):
            value += model.derived_power[k] * sc.obs_latest[model.derived_obs[k]]
    elif n_factors > 0:
        value = model.obs_derived_scale[o]
        for k in range(model.obs_derived_start[o], model.obs_derived_start[o] + n_factors):
            value *= sc.obs_latest[model.derived_obs[k]] ** model.derived_power[k]
    else:
        value = measured(model, sc, p, o, t)
    if math.isnan(value):
        return value
    return bounded(model, o, value)


@internal
def bounded(model: CompiledModel, o: int, value: float) -> float:
    """A reading of observable o inside its limits, rounded to its decimals."""
    value = min(max(value, model.obs_low[o]), model.obs_high[o])
    scale = 10.0 ** model.obs_decimals[o]
    return math.floor(value * scale + 0.5) / scale


@njit(cache=True, inline="always", _nrt=False)
def is_clinic_day(model: CompiledModel, day: float) -> bool:
    """Whether a local day (whole days since 1970-01-01) is a working day."""
    return model.clinic_days[(int(day) % 7 + 7 + THURSDAY) % 7]


@internal
def clinic_open(model: CompiledModel, p: Person, t: float) -> bool:
    """Whether t falls in the clinic hours of a working day, in the patient's local standard time. Both ends
    move EPS_DAYS earlier: a booked slot counts as open however the float arithmetic rounded it, and a time
    that rounds to closing (a visit ending then) does not."""
    local = t + p.utc_offset_days
    day = float(math.floor(local))
    into = local - day
    opens, closes = model.clinic_opens_days - EPS_DAYS, model.clinic_closes_days - EPS_DAYS
    return is_clinic_day(model, day) and opens <= into < closes


@internal
def clinic_slot(model: CompiledModel, sc: Scratch, p: Person, t: float) -> float:
    """An appointment on the next working day whose opening is after t, drawn uniformly among its slots."""
    local = t + p.utc_offset_days
    day = float(math.floor(local))
    if not is_clinic_day(model, day) or local - day >= model.clinic_opens_days:
        day += 1.0
        while not is_clinic_day(model, day):
            day += 1.0
    slot = math.floor(uniform(sc.rng) * model.clinic_n_slots)
    return day + model.clinic_opens_days + slot * model.clinic_slot_days - p.utc_offset_days


@internal
def hours_time(model: CompiledModel, sc: Scratch, p: Person, rule: int, t: float) -> float:
    """The first time at or after t whose local standard time of day is drawn from the rule's blocks (one
    uniform: its block by the blocks' shares, then where in the block)."""
    u = uniform(sc.rng)
    start = model.hours_block_start[rule]
    k = start + model.hours_block_n[rule] - 1
    for j in range(start, k):
        if u < model.block_cum[j]:
            k = j
            break
    below = model.block_cum[k - 1] if k > start else 0.0
    clock = model.block_from_days[k] + model.block_length_days[k] * (u - below) / (model.block_cum[k] - below)
    clock -= math.floor(clock)
    local = t + p.utc_offset_days
    at = math.floor(local) + clock
    if at < local:
        at += 1.0
    return at - p.utc_offset_days


@internal
def deferral_rule(model: CompiledModel, sc: Scratch, m: int, s: int) -> int:
    """The encounter_hours rule that times state s of module m: the one for the start of the encounter it
    starts, else the one for the end of the open-ended encounter it ends (-1: none)."""
    rule = model.state_hours[s]
    if rule < 0 and model.state_ends[s]:
        for k in range(sc.counters[C_PENDING]):
            if sc.pend_module[k] == m and sc.pend_t[k] == np.inf:
                return model.class_end_hours[sc.pend_class[k]]
    return rule


@internal
def product_taken(model: CompiledModel, sc: Scratch, d: int) -> bool:
    """Whether medication d's product (its code) is taken now, under d or another module's name: a
    product is never ordered twice at once, so starting it then records nothing."""
    for other in range(sc.med_active.shape[0]):
        if sc.med_active[other] and model.med_code[other] == model.med_code[d]:
            return True
    return False


@internal
def dying(model: CompiledModel, o: int, value: float, before: float) -> float:
    """A reading of observable o in a terminal stay, `before` days before death, shifted toward death: by its
    shift at death times 1 - before / window (none earlier; mortality.in_hospital.deteriorate), then kept
    inside its limits and rounded (bounded). Draws nothing."""
    weight = 1.0 - before / model.dying_window
    if weight <= 0.0 or model.dying_shift[o] == 0.0 or math.isnan(value):
        return value
    return bounded(model, o, value + model.dying_shift[o] * weight)


@internal
def terminal_stay(model: CompiledModel, ev: Events, sc: Scratch, p: Person, t: float) -> int:
    """Maybe admit the patient who dies at t, with no encounter open, for the stay they die in: from the
    patient-level stream one uniform (in hospital with probability terminal_share), then its length. The
    admission is that long before t but not before the last event (nothing else happens in between: death
    was the next event), records the inpatient start's observations and labs, repeats the observations on
    the inpatient rounds before t, and stays open for die to close at t. Draws come after every other draw
    of the patient, so none of them moves. Returns the stay's encounter number (-1: none), which the death
    records as the encounter it ended."""
    if model.terminal_stay < 0 or sc.counters[C_PENDING] > 0:
        return -1
    patient_stream = model.module_stream.shape[0]
    use_stream(sc, patient_stream)
    if uniform(sc.rng) >= model.terminal_share:
        return -1
    admitted = max(t - max(0.0, draw(model, model.terminal_stay, sc.rng)), sc.last_t[0])
    if admitted >= t:
        return -1
    enc = sc.counters[C_ENCOUNTERS]
    sc.counters[C_ENCOUNTERS] = enc + 1
    c = model.terminal_class
    emit(ev, sc, p, admitted, codes.K_ENCOUNTER_START, model.terminal_code, np.nan, enc, -1, c, -1)
    for j in range(model.terminal_obs.shape[0]):
        o = model.terminal_obs[j]
        value = dying(model, o, observe(model, sc, p, o, admitted), t - admitted)
        if not math.isnan(value):
            record(model, ev, sc, p, o, value, admitted, enc, -1)
    sc.pend_t[0] = t
    sc.pend_id[0] = enc
    sc.pend_module[0] = patient_stream
    sc.pend_state[0] = -1
    sc.pend_code[0] = model.terminal_code
    sc.pend_class[0] = c
    sc.pend_round_t[0] = admitted + model.class_round_days[c]
    sc.counters[C_PENDING] = 1
    while sc.pend_round_t[0] < t:
        take_round(model, ev, sc, p, FIRST, sc.pend_round_t[0])
    return enc


@internal
def die(model: CompiledModel, ev: Events, sc: Scratch, p: Person, t: float, cause: int, state: int) -> None:
    """Stop every active medication at t (in medication order, each as the state that started it),
    close every open encounter, then record death; nothing happens after this. A death with no encounter
    open may come at the end of a terminal stay (terminal_stay): the death records that stay's encounter."""
    stay = terminal_stay(model, ev, sc, p, t)
    for d in range(sc.med_active.shape[0]):
        if sc.med_active[d]:
            sc.med_active[d] = False
            emit(ev, sc, p, t, codes.K_MED_STOP, sc.med_course_code[d], np.nan, -1, sc.med_state[d], d, -1)
    for k in range(sc.counters[C_PENDING]):
        emit(
            ev,
            sc,
            p,
            t,
            codes.K_ENCOUNTER_END,
            sc.pend_code[k],
            np.nan,
            sc.pend_id[k],
            sc.pend_state[k],
            sc.pend_class[k],
            -1,
        )
    sc.counters[C_PENDING] = 0
    emit(ev, sc, p, t, codes.K_DEATH, cause, np.nan, stay, state, -1, -1)
    sc.counters[C_DEAD] = 1
    sc.wake_t[:] = np.inf


@internal
def rescale_background(model: CompiledModel, sc: Scratch, p: Person, t: float) -> None:
    """Move the background death after the background hazard ratio changed at t (a condition with a ratio
    was diagnosed or resolved): the cumulative hazard still to go before death, drawn at the old ratio, is
    spent at the new one (exact for a proportional change; no draw). The ratio is the product of the
    ratios of the diagnosed conditions."""
    ratio = 1.0
    for c in range(model.cond_bg_hr.shape[0]):
        if sc.cond_diagnosed[c]:
            ratio *= model.cond_bg_hr[c]
    if ratio == sc.bg[1] or sc.bg[0] <= t:
        return
    cum, tail = sc.bg_cum_hazard[p.sex], sc.bg_tail_rate[p.sex]
    now = cumulative_at(cum, tail, (t - p.birth_t) / DAYS_PER_YEAR)
    left = cumulative_at(cum, tail, (sc.bg[0] - p.birth_t) / DAYS_PER_YEAR) - now
    sc.bg[0] = p.birth_t + inverse_cumulative(cum, tail, now + left * sc.bg[1] / ratio) * DAYS_PER_YEAR
    sc.bg[1] = ratio


@internal
def background_cause(model: CompiledModel, sc: Scratch, p: Person, t: float) -> int:
    """The underlying cause of a background death at t (a code index): one uniform from the patient-level
    stream picks a cause in proportion to the deaths of the patient's age band and sex, among the causes
    certifiable at t (death_code when the library has no cause table). Nothing is drawn after it, so no
    other draw moves."""
    n_causes = model.death_cause_code.shape[0]
    if n_causes == 0:
        return model.death_code
    age = age_years(p, t)
    band = 0
    while band + 1 < model.death_cause_age.shape[0] and model.death_cause_age[band + 1] <= age:
        band += 1
    deaths = model.death_cause_deaths_male[band] if p.sex == 0 else model.death_cause_deaths_female[band]
    total = 0.0
    last = n_causes - 1
    for c in range(n_causes):
        if model.death_cause_since_t[c] <= t:
            total += deaths[c]
            last = c
    use_stream(sc, model.module_stream.shape[0])
    pick = uniform(sc.rng)
    running = 0.0
    for c in range(last):
        if model.death_cause_since_t[c] <= t:
            running += deaths[c]
            if pick < running / max(total, 1.0):
                return model.death_cause_code[c]
    return model.death_cause_code[last]


@internal
def end_pending(ev: Events, sc: Scratch, p: Person, k: int, t: float) -> None:
    """Emit the end of pending encounter k and drop it from the list (order kept)."""
    kind, code, state = codes.K_ENCOUNTER_END, sc.pend_code[k], sc.pend_state[k]
    emit(ev, sc, p, t, kind, code, np.nan, sc.pend_id[k], state, sc.pend_class[k], -1)
    m = sc.pend_module[k]
    if sc.enc_cur[m] == sc.pend_id[k]:
        sc.enc_cur[m] = -1
    n = sc.counters[C_PENDING]
    for j in range(k, n - 1):
        sc.pend_t[j] = sc.pend_t[j + 1]
        sc.pend_id[j] = sc.pend_id[j + 1]
        sc.pend_module[j] = sc.pend_module[j + 1]
        sc.pend_state[j] = sc.pend_state[j + 1]
        sc.pend_code[j] = sc.pend_code[j + 1]
        sc.pend_class[j] = sc.pend_class[j + 1]
        sc.pend_round_t[j] = sc.pend_round_t[j + 1]
    sc.counters[C_PENDING] = n - 1


@njit(cache=True, inline="always", _nrt=False)
def wake_readers(sc: Scratch, readers: np.ndarray) -> None:
    """Something changed that the guards of the modules flagged in `readers` (bool[n_modules]) read: the next
    settle re-checks them (their waiting cases and hazard ratios), and no other module."""
    for m in range(readers.shape[0]):
        if readers[m]:
            sc.dirty[m] = True
            sc.counters[C_DIRTY] = 1


@internal
def record(
    model: CompiledModel, ev: Events, sc: Scratch, p: Person, o: int, value: float, t: float, encounter: int, state: int
) -> None:
    """Record a reading of observable o: it becomes the latest, and guards that read it are re-checked; the
    record holds it under its era's code (rules/calendar.yaml), or not at all in an era without one."""
    sc.obs_latest[o] = value
    code = era_code(model, model.obs_code[o], p, t)
    if code >= 0:
        emit(ev, sc, p, t, codes.K_OBSERVATION, code, value, encounter, state, o, -1)
    wake_readers(sc, model.obs_readers[o])


@internal
def take_round(model: CompiledModel, ev: Events, sc: Scratch, p: Person, k: int, t: float) -> None:
    """Repeat the start observations of open encounter k (a ward round, an ICU hour), drawing from the stream
    of the module that started it, and schedule the next. The rounds of a terminal stay (the patient-level
    stream's) deteriorate toward its end, the death (dying)."""
    use_stream(sc, sc.pend_module[k])
    c = sc.pend_class[k]
    terminal = sc.pend_module[k] == model.module_stream.shape[0]
    for j in range(model.class_obs_start[c], model.class_obs_start[c] + model.class_obs_n[c]):
        o = model.class_obs[j]
        value = observe(model, sc, p, o, t)
        if terminal:
            value = dying(model, o, value, sc.pend_t[k] - t)
        if not math.isnan(value):
            record(model, ev, sc, p, o, value, t, sc.pend_id[k], sc.pend_state[k])
    sc.pend_round_t[k] = t + model.class_round_days[c]


@internal
def run_actions(model: CompiledModel, ev: Events, sc: Scratch, p: Person, m: int, s: int, t: float) -> None:
    use_stream(sc, m)
    for a in range(model.state_act_start[s], model.state_act_start[s] + model.state_act_n[s]):
        kind = model.act_kind[a]
        target = model.act_target[a]
        if kind == codes.A_ENC_START:
            enc = sc.counters[C_ENCOUNTERS]
            sc.counters[C_ENCOUNTERS] = enc + 1
            code = model.act_code[a]
            emit(ev, sc, p, t, codes.K_ENCOUNTER_START, code, np.nan, enc, s, target, model.act_reason[a])
            n = sc.counters[C_PENDING]
            if n == MAX_PENDING:
                sc.counters[C_ERROR] |= E_OVERLOAD
                continue
            duration = model.act_duration[a]
            sc.pend_t[n] = t + max(0.0, draw(model, duration, sc.rng)) if duration >= 0 else np.inf
            if duration >= 0 and model.class_end_hours[target] >= 0:  # a stay of set length ends in its hours
                sc.pend_t[n] = hours_time(model, sc, p, model.class_end_hours[target], sc.pend_t[n])
            sc.pend_id[n] = enc
            sc.pend_module[n] = m
            sc.pend_state[n] = s
            sc.pend_code[n] = code
            sc.pend_class[n] = target
            sc.pend_round_t[n] = t + model.class_round_days[target]
            sc.counters[C_PENDING] = n + 1
            sc.enc_cur[m] = enc
            sc.enc_open[m] = duration < 0
            sc.enc_t[m] = t
            if target == model.wellness_class:
                sc.counters[C_JOIN] = enc + 1
        elif kind == codes.A_SET_TO or kind == codes.A_SET_ADD or kind == codes.A_SET_DRAW:  # noqa: SIM109 (numba)
            current = attr_value(sc, target, t)
            if kind == codes.A_SET_TO:
                level = model.act_value[a]
            elif kind == codes.A_SET_ADD:
                level = current + model.act_value[a]
            else:
                level = draw(model, model.act_dist[a], sc.rng)
            drift = model.act_drift_per_year[a]
            if model.attr_lagged[target]:
                lag_before_set(model, sc, target, t)
            sc.attr_seen_level[target] = attr_seen(sc, target, t)
            sc.attr_seen_t[target] = t
            sc.attr_half_life[target] = model.act_half_life_days[a]
            sc.attr_level[target] = level
            sc.attr_t0[target] = t
            if not math.isnan(drift):
                sc.attr_slope[target] = drift
            wake_readers(sc, model.attr_readers[target])
        elif kind == codes.A_ONSET or kind == codes.A_DIAGNOSE:  # noqa: SIM109 (numba)
            code = model.cond_code[target]
            if not sc.cond_active[target]:
                sc.cond_active[target] = True
                sc.cond_diagnosed[target] = False
                emit(ev, sc, p, t, codes.K_ONSET, code, np.nan, attached(sc, m, t), s, target, -1)
                wake_readers(sc, model.cond_readers[target])
            if kind == codes.A_DIAGNOSE and not sc.cond_diagnosed[target]:
                sc.cond_diagnosed[target] = True
                emit(ev, sc, p, t, codes.K_DIAGNOSIS, code, np.nan, need_encounter(sc, m, t), s, target, -1)
                wake_readers(sc, model.cond_readers[target])
                if model.cond_bg_hr[target] != 1.0:
                    rescale_background(model, sc, p, t)
        elif kind == codes.A_RESOLVE:
            if sc.cond_active[target]:
                was_diagnosed = sc.cond_diagnosed[target]
                sc.cond_active[target] = False
                sc.cond_diagnosed[target] = False
                emit(ev, sc, p, t, codes.K_RESOLVED, model.cond_code[target], np.nan, attached(sc, m, t), s, target, -1)
                wake_readers(sc, model.cond_readers[target])
                if was_diagnosed and model.cond_bg_hr[target] != 1.0:
                    rescale_background(model, sc, p, t)
        elif kind == codes.A_MED_START:
            code = era_code(model, model.med_code[target], p, t)
            if code >= 0 and not product_taken(model, sc, target):
                sc.med_active[target] = True
                sc.med_state[target] = s
                sc.med_course_code[target] = code
                encounter = need_encounter(sc, m, t)
                emit(ev, sc, p, t, codes.K_MED_START, code, np.nan, encounter, s, target, -1)
                wake_readers(sc, model.med_readers[target])
        elif kind == codes.A_MED_STOP:
            if sc.med_active[target]:
                sc.med_active[target] = False
                code = sc.med_course_code[target]
                emit(ev, sc, p, t, codes.K_MED_STOP, code, np.nan, attached(sc, m, t), s, target, -1)
                wake_readers(sc, model.med_readers[target])
        elif kind == codes.A_PROCEDURE or kind == codes.A_IMMUNIZATION:  # noqa: SIM109 (numba)
            event_kind = codes.K_PROCEDURE if kind == codes.A_PROCEDURE else codes.K_IMMUNIZATION
            code = era_code(model, target, p, t)
            if code >= 0:
                emit(ev, sc, p, t, event_kind, code, np.nan, need_encounter(sc, m, t), s, -1, -1)
        elif kind == codes.A_OBSERVE:
            value = observe(model, sc, p, target, t)
            if not math.isnan(value):
                record(model, ev, sc, p, target, value, t, need_encounter(sc, m, t), s)
        elif kind == codes.A_SYMPTOM:
            severity = min(max(draw(model, model.act_dist[a], sc.rng), 0.0), SYMPTOM_SCALE_MAX)
            emit(ev, sc, p, t, codes.K_SYMPTOM, target, severity, attached(sc, m, t), s, -1, -1)
        elif kind == codes.A_ENC_END:
            for k in range(sc.counters[C_PENDING]):
                if sc.pend_module[k] == m and sc.pend_t[k] == np.inf:
                    end_pending(ev, sc, p, k, t)
                    break
        else:  # A_DEATH
            die(model, ev, sc, p, t, target, s)
            return


@internal
def choose(model: CompiledModel, sc: Scratch, p: Person, s: int, t: float) -> int:
    """Target of a next/branches/cases exit at time t (-1: no case holds yet, keep waiting)."""
    kind = model.state_exit[s]
    if kind == codes.X_NEXT:
        return model.state_next[s]
    start = model.state_sub_start[s]
    if kind == codes.X_BRANCHES:
        use_stream(sc, model.state_module[s])
        pick = uniform(sc.rng)
        forced = model.state_force[s]
        if forced >= 0:
            w = model.state_force_window[s]
            if w < 0 or sc.win[w, 0] <= age_years(p, t) < sc.win[w, 1]:
                sc.log_weight[0] += math.log(model.branch_prob[forced])  # taken with probability 1, not this
                return model.branch_to[forced]
        for k in range(start, start + model.state_sub_n[s]):
            if pick < model.branch_prob[k]:
                return model.branch_to[k]
            pick -= model.branch_prob[k]
        return model.branch_to[start + model.state_sub_n[s] - 1]
    for k in range(start, start + model.state_sub_n[s]):
        if eval_guard(model, sc, p, model.case_guard[k], t):
            return model.case_to[k]
    return model.state_next[s]


@internal
def wait_for_cases(model: CompiledModel, sc: Scratch, p: Person, m: int, s: int, t: float) -> None:
    sc.wait_kind[m] = WAIT_CASES
    recheck = np.inf
    for k in range(model.state_sub_start[s], model.state_sub_start[s] + model.state_sub_n[s]):
        recheck = min(recheck, next_crossing(model, sc, p, model.case_guard[k], t))
    sc.wake_t[m] = recheck
    sc.wake_kind[m] = W_REEVALUATE if recheck < np.inf else W_NONE


@internal
def enter(model: CompiledModel, ev: Events, sc: Scratch, p: Person, m: int, s: int, t: float, booked: bool) -> None:
    """Enter state s of module m at time t and follow instantaneous exits until the module waits. A state
    that starts a clinic visit outside clinic hours is entered at the next clinic slot instead, one that
    starts (or leads at once to a state that starts) or ends an encounter timed by encounter_hours at the
    next time of day drawn from them; `booked`: s is entered at the time it was deferred to, and the states
    it leads to at once are not timed again."""
    for _ in range(MAX_STEPS):
        sc.cur_state[m] = s
        rule = -1 if booked else deferral_rule(model, sc, m, s)
        if rule >= 0 or (model.state_clinic[s] and not clinic_open(model, p, t)):
            use_stream(sc, m)
            sc.wait_kind[m] = WAIT_CLINIC
            sc.wake_t[m] = hours_time(model, sc, p, rule, t) if rule >= 0 else clinic_slot(model, sc, p, t)
            sc.wake_kind[m] = W_CLINIC
            return
        sc.entered_t[s] = t
        sc.wait_kind[m] = WAIT_NONE
        sc.wake_t[m] = np.inf
        sc.wake_kind[m] = W_NONE
        run_actions(model, ev, sc, p, m, s, t)
        if sc.counters[C_DEAD]:
            return
        kind = model.state_exit[s]
        if kind == codes.X_TERMINAL:
            return
        if kind == codes.X_HAZARDS:
            schedule_hazards(model, sc, p, m, s, t)
            return
        if model.state_delay[s] >= 0:
            use_stream(sc, m)
            sc.wake_t[m] = t + max(0.0, draw(model, model.state_delay[s], sc.rng))
            sc.wake_kind[m] = W_FIRE
            return
        if model.state_wait_wellness[s]:
            sc.wait_kind[m] = WAIT_WELLNESS
            return
        target = choose(model, sc, p, s, t)
        if target < 0:
            wait_for_cases(model, sc, p, m, s, t)
            return
        s = target
    sc.counters[C_ERROR] |= E_RUNAWAY
    sc.wake_t[m] = np.inf


@internal
def leave(model: CompiledModel, ev: Events, sc: Scratch, p: Person, m: int, t: float) -> None:
    """Module m's current state ends its wait at t: take its exit (or keep waiting)."""
    s = sc.cur_state[m]
    if sc.wake_kind[m] == W_CLINIC:
        enter(model, ev, sc, p, m, s, t, True)
        return
    if model.state_exit[s] == codes.X_HAZARDS:
        if sc.wake_kind[m] == W_REEVALUATE:
            schedule_hazards(model, sc, p, m, s, t)
            return
        if model.state_tilted[s]:
            count_exposure(model, sc, p, m, s, t)
            sc.exposure_t[m] = np.inf
        target = fired_hazard(model, sc, p, m, s)
    else:
        target = choose(model, sc, p, s, t)
        if target < 0:
            wait_for_cases(model, sc, p, m, s, t)
            return
    enter(model, ev, sc, p, m, target, t, False)


@internal
def settle(model: CompiledModel, ev: Events, sc: Scratch, p: Person, t: float) -> None:
    """After anything changed at t: let waiting modules join a wellness visit that just started; in the
    modules whose guards read what changed, re-check waiting cases, re-draw hazards whose ratios changed and
    bring forward the re-check of hazards whose ratio guards may now flip sooner; repeat until quiet. (A
    module whose guards read nothing that changed would decide as before: its guards' crossings in time
    are already scheduled. Tilted hazards count their exposure at every settle that re-checks anything,
    so that the log weight sums the same pieces.)"""
    n_modules = model.module_start.shape[0]
    for _ in range(MAX_STEPS):
        if sc.counters[C_DEAD]:
            return
        join = sc.counters[C_JOIN] - 1
        sc.counters[C_JOIN] = 0
        if join >= 0:
            for m in range(n_modules):
                sc.joining[m] = sc.wait_kind[m] == WAIT_WELLNESS
            for m in range(n_modules):
                if sc.joining[m] and not sc.counters[C_DEAD]:
                    sc.enc_cur[m] = join
                    sc.enc_open[m] = False
                    sc.enc_t[m] = t
                    sc.wait_kind[m] = WAIT_NONE
                    leave(model, ev, sc, p, m, t)
            continue
        if not sc.counters[C_DIRTY]:
            return
        sc.counters[C_DIRTY] = 0
        for m in range(n_modules):
            if sc.counters[C_DEAD]:
                return
            s = sc.cur_state[m]
            dirty = sc.dirty[m]
            sc.dirty[m] = False
            if sc.wait_kind[m] == WAIT_CASES:
                if dirty:
                    leave(model, ev, sc, p, m, t)
            elif sc.wait_kind[m] == WAIT_NONE and model.state_exit[s] == codes.X_HAZARDS and sc.wake_t[m] > t:
                if model.state_tilted[s]:
                    count_exposure(model, sc, p, m, s, t)  # before the multipliers change
                if not dirty:
                    continue
                if hazard_multipliers(model, sc, p, m, s, t):
                    schedule_hazards(model, sc, p, m, s, t)
                else:  # same ratios, but a guard may flip sooner now (e.g. an attribute began drifting)
                    recheck = hazard_recheck(model, sc, p, s, t)
                    if recheck < sc.wake_t[m]:
                        sc.wake_t[m] = recheck
                        sc.wake_kind[m] = W_REEVALUATE
    sc.counters[C_ERROR] |= E_RUNAWAY


@internal
def simulate_patient(model: CompiledModel, ev: Events, sc: Scratch, p: Person, seed: int, window: np.ndarray) -> None:
    """Simulate one patient; `window`: their scenario windows (float64[n_windows, 2], years of age)."""
    reset(model, sc, p, seed)
    for w in range(window.shape[0]):
        sc.win[w, 0] = window[w, 0]
        sc.win[w, 1] = window[w, 1]
    t = p.birth_t
    n_modules = model.module_start.shape[0]
    for m in range(n_modules):
        if not sc.counters[C_DEAD]:
            enter(model, ev, sc, p, m, model.module_start[m], t, False)
    settle(model, ev, sc, p, t)
    while not sc.counters[C_DEAD]:
        t_next = np.inf
        what = -1  # 0: encounter end, 1: module, 2: background death, 3: an open encounter's round
        which = NONE
        for k in range(sc.counters[C_PENDING]):
            if sc.pend_t[k] < t_next:
                t_next, what, which = sc.pend_t[k], 0, k
        for k in range(sc.counters[C_PENDING]):
            if sc.pend_round_t[k] < t_next:
                t_next, what, which = sc.pend_round_t[k], 3, k
        for m in range(n_modules):
            if sc.wake_t[m] < t_next:
                t_next, what, which = sc.wake_t[m], 1, m
        if sc.bg[0] < t_next:
            t_next, what = sc.bg[0], 2
        if t_next >= p.t_end or what < 0:
            t = p.t_end
            break
        t = t_next
        if what == 0:
            end_pending(ev, sc, p, which, t)
        elif what == 3:
            take_round(model, ev, sc, p, which, t)
        elif what == 1:
            sc.wake_t[which] = np.inf
            leave(model, ev, sc, p, which, t)
        else:
            die(model, ev, sc, p, t, background_cause(model, sc, p, t), NONE)
            break
        settle(model, ev, sc, p, t)
    for m in range(n_modules):  # tilted hazards still pending were exposed until the end or death
        if sc.exposure_t[m] < np.inf:
            count_exposure(model, sc, p, m, sc.cur_state[m], t)


class Lives(NamedTuple):
    """How each patient of a kernel call is simulated (arrays of one row a patient)."""

    stream: np.ndarray  # int64: the event streams drawn from (the patient index; another in population-mode redraws)
    t_end: np.ndarray  # float64: end of the simulated window, days since 1970-01-01
    base: np.ndarray  # int64: first row of the patient's region in the event buffers
    capacity: np.ndarray  # int64: rows of that region
    window: np.ndarray  # float64[n, n_windows, 2]: scenario windows, [from, to) in years of age (CompiledModel)


class Outcome(NamedTuple):
    """What the kernel reports per patient besides the events."""

    n_events: np.ndarray  # int64: the true count, which may exceed capacity (then rerun with more room)
    error: np.ndarray  # int64: E_* bits
    entered: np.ndarray  # uint64[n, ceil(n_states / 64)]: bit s set when the patient ever entered global state s
    log_weight: np.ndarray  # float64: log likelihood ratio of the life, unconditioned / scenario (0 without one)


@njit(cache=True, nogil=True)
def simulate(
    model: CompiledModel,
    seed: int,
    people: People,
    lives: Lives,
    ev: Events,
    outcome: Outcome,
    scratch: Scratch,
    first: int,
    stop: int,
) -> None:
    """Simulate patients first..stop-1 (`people` row i, drawing from stream `lives.stream[i]`) into rows
    [base, base + capacity) of `ev`, and report their `outcome`. Deaths are the codes.K_DEATH events.
    `scratch`: this call's working memory (`new_scratch`), made and held by the caller: the helpers reach it
    through a pointer, which does not keep a tuple made here alive (byref.py).
    Without the GIL: threads run disjoint ranges at once (simulator.engine.run), which Numba compiles in a
    fraction of the time its parallel loop took over this many arguments."""
    n_states = model.state_module.shape[0]
    compiled, sc, events = by_ref(model), by_ref(scratch), by_ref(ev)  # one pointer each to the helpers
    for i in range(first, stop):
        p = Person(
            lives.stream[i],
            people.birth_t[i],
            people.sex[i],
            people.race[i],
            people.ethnicity[i],
            lives.t_end[i],
            people.death_t[i],
            lives.base[i],
            lives.capacity[i],
            people.utc_offset_days[i],
        )
        simulate_patient(compiled, events, sc, p, seed, lives.window[i])
        outcome.n_events[i] = sc.counters[C_EVENTS]
        outcome.error[i] = sc.counters[C_ERROR]
        outcome.log_weight[i] = sc.log_weight[0]
        for s in range(n_states):
            if sc.entered_t[s] > -np.inf:
                outcome.entered[i, s >> 6] |= np.uint64(1) << np.uint64(s & 63)
