"""A slow, obvious Python reference of the event kernel's semantics, for tests on small cohorts.

It walks the validated pydantic models of a library (never the compiled arrays), keeps each patient
in plain objects and dicts, and follows the semantics documented in DESIGN.md and schema.py. From
the kernel it takes only the random-number primitives and the event-kind constants, and it consumes
random numbers in exactly the kernel's order, so for the same people it emits the same events.

Time is float days since 1970-01-01. Per patient, the next event is the earliest of: the scheduled
end of an open encounter (ties: the one started first), the next round of an open encounter (its start
observations repeated; ties likewise), a module's wake-up (ties: modules in library order; a deferred
clinic visit's slot is one) and background death; ties between the four go in that order. Nothing
happens at or after the patient's `t_end` (encounters still open then are left open); death stops
every active medication and closes every open encounter.
After anything happens at time t the patient "settles": modules waiting for a wellness visit join
one that just started, waiting cases are re-checked, and a pending hazard is re-drawn when the
product of its hazard ratios changed; repeat until nothing changes.

Draw order. Draws come from the patient's streams, stream_state(seed, index, stream):
  1. one standard normal per observable, in library order, from stream 1: the persistent component
     z_patient;
  2. then, as things happen, in the order they happen, each from the stream of the module whose
     state draws it (compiler.module_stream(name)):
     - an encounter with a duration: its duration (drawn after the start event is recorded);
     - `set` with `draw`: that distribution;
     - `observe` of a measured (not derived) observable: one normal, the visit component, then one
       normal for the measurement error if the observable declares `measurement_sd` (also for each
       observable a started encounter records at its start, before the state's own, and at its rounds,
       from the stream of the module that started it);
     - entering a state that starts a clinic visit outside clinic hours: one uniform, the booked slot;
       entering a state that starts or ends an encounter timed by encounter_hours: one uniform, the time;
     - an encounter with a duration whose end is timed by encounter_hours: one uniform, the time it ends;
     - `symptom`: its severity;
     - a state with `after`, once its actions ran: the delay;
     - leaving by `branches`: one uniform;
     - scheduling a state's hazards (on entry, at a re-evaluation wake-up, or when settling finds a
       changed hazard-ratio product): one exponential, the cumulative hazard to reach;
     - a hazard firing: one uniform, which of the competing hazards it was.
  3. at a background death with a cause table (mortality.causes): one uniform from stream 1, its cause
     (among the causes certifiable then: `since`).
  4. at any death with no encounter open, with mortality.in_hospital: one uniform from stream 1 (a terminal
     stay or not), then for a stay its length and the draws of its admission's and rounds' observations,
     from stream 1 too.
  A background hazard ratio (mortality.hazard_ratios) draws nothing: when the product of the ratios of the
  diagnosed conditions changes, the cumulative hazard left before the background death is spent at the
  new product.
  Distributions: exact draws nothing; uniform and exponential one uniform; normal and lognormal one
  normal (two uniforms, Box-Muller); gamma follows kernel.gamma (Marsaglia-Tsang, with one extra
  uniform first when shape < 1). Values with a unit are in days.

Not modelled here: the kernel's capacity limits (open encounters per patient, steps per instant,
event buffer size). Compare only patients the kernel did not flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd

from simulator.days import DAYS_PER_YEAR, EPOCH
from simulator.engine.codes import EVENT_KINDS
from simulator.engine.compiler import (
    MINUTES_PER_DAY,
    admission_observations,
    cause_since_t,
    hour_blocks,
    is_clinic_visit,
    module_stream,
    round_interval_days,
    start_hours,
    start_observations,
    state_observations,
)
from simulator.engine.guards import GUARD_KINDS, INF
from simulator.engine.people import People, background_hazard, cumulative_at, inverse_cumulative
from simulator.engine.rng import STREAM_EVENTS, exponential, gamma, normal, stream_state, uniform
from simulator.model import schema
from simulator.model.calendar import SYSTEM_NAMES
from simulator.model.library import Library
from simulator.model.providers import EncounterHours
from simulator.model.schema import (
    DAYS_PER_UNIT,
    SYMPTOM_SCALE_MAX,
    WEEKDAYS,
    AgeCurve,
    AllGuard,
    AnyGuard,
    Code,
    DiseaseModule,
    GuardAtom,
    NotGuard,
    RateTable,
    State,
    guard_atoms,
)

EPS_DAYS = 1e-6  # a guard re-check lands this far past the threshold, so the guard is decided
COLUMNS = ("patient", "t", "kind", "code", "value", "encounter", "module", "state")


def code_text(code: Code) -> str:
    return f"{code.system}|{code.code}"


def draw(dist: object, rng: np.ndarray) -> float:
    """One value of a distribution, in days when it has a unit."""
    if isinstance(dist, schema.Exact):
        value = dist.value
    elif isinstance(dist, schema.Uniform):
        value = dist.low + (dist.high - dist.low) * uniform(rng)
    elif isinstance(dist, schema.Normal):
        value = dist.mean + dist.sd * normal(rng)
    elif isinstance(dist, schema.Exponential):
        value = dist.mean * exponential(rng)
    elif isinstance(dist, schema.LogNormal):
        value = math.exp(math.log(dist.median) + dist.sigma * normal(rng))
    elif isinstance(dist, schema.Gamma):
        value = dist.scale * gamma(rng, float(dist.shape))
    else:
        raise TypeError(type(dist))
    unit = dist.unit  # type: ignore[attr-defined]
    return value * (DAYS_PER_UNIT[unit] if unit else 1.0)


def curve(value: float | AgeCurve, sex: str, age: float) -> float:
    """A value by age: linear between the given ages, flat outside them."""
    if not isinstance(value, AgeCurve):
        return float(value)
    ages, ys = value.ages, (value.male if sex == "M" else value.female)
    if age <= ages[0] or len(ages) == 1:
        return ys[0]
    for k in range(1, len(ages)):
        if age < ages[k]:
            w = (age - ages[k - 1]) / (ages[k] - ages[k - 1])
            return ys[k - 1] + w * (ys[k] - ys[k - 1])
    return ys[-1]


def band_edges(state: State) -> list[float]:
    """Ages (years) where any of the state's hazard rates may change: the merged age bands."""
    edges = {0.0}
    for hazard in state.hazards or []:
        if isinstance(hazard.rate_per_year, RateTable):
            edges.update(hazard.rate_per_year.ages)
    return sorted(edges)


def rate_at(rate: float | RateTable, sex: str, age: float) -> float:
    """Rate per year at an age: the band of the table that contains it, zero before its first band."""
    if not isinstance(rate, RateTable):
        return float(rate)
    values = rate.male if sex == "M" else rate.female
    inside = [value for lower, value in zip(rate.ages, values, strict=True) if lower <= age]
    return inside[-1] if inside else 0.0


@dataclass
class Attribute:
    level: float
    slope_per_year: float
    t0: float
    seen_level: float = 0.0  # what observables saw of it at its last change
    seen_t: float = 0.0  # when it last changed
    half_life_days: float = 0.0  # lag of its effects since then (0: none)

    def at(self, t: float) -> float:
        return self.level + self.slope_per_year * (t - self.t0) / DAYS_PER_YEAR

    def seen(self, t: float) -> float:
        """The value observables see: the value, or first order toward it while the last change's lag runs."""
        value = self.at(t)
        if self.half_life_days == 0.0:
            return value
        return value + (self.seen_level - value) * 0.5 ** ((t - self.seen_t) / self.half_life_days)


@dataclass
class Pending:
    """An open encounter and when it ends by itself (inf: a later state ends it)."""

    t_end: float
    encounter: int
    module: str
    state: str
    code: Code
    encounter_class: str
    round_t: float  # when its start observations are next repeated (inf: never)


def guard_reads(module: DiseaseModule) -> frozenset[tuple[str, str]]:
    """(namespace, name) of every attribute, condition, medication and observable that the module's waiting
    cases and hazard ratios read."""
    guards = [case.when for state in module.states.values() for case in state.cases or []]
    guards += [r.when for state in module.states.values() for h in state.hazards or [] for r in h.hazard_ratios]
    return frozenset(
        (namespace, name)
        for guard in guards
        for _, atom in guard_atoms(guard)
        for namespace, name, _ in atom.references()
        if namespace in ("attributes", "conditions", "medications", "observables")
    )


@dataclass
class Track:
    """Where one disease module is for this patient, and what it waits for."""

    module: DiseaseModule
    state: str = ""
    wake_t: float = INF
    wake: str = ""  # "fire" | "reevaluate" | "clinic" (enter `state` at its booked slot) | "" (none scheduled)
    band: int = 0  # the age band a scheduled hazard fires in
    wake_age: float = 0.0  # start (years of age) of the stretch a scheduled hazard fires in (scenario windows)
    exposure_t: float = INF  # a tilted hazard's exposure is counted into the log weight up to here (inf: none)
    waiting: str = ""  # "wellness" | "cases" | "clinic" | ""
    multipliers: list[float] = field(default_factory=list)  # hazard-ratio product per hazard
    encounter: int = -1  # the encounter this module's events attach to
    encounter_open: bool = False  # ... is open-ended (else: only at encounter_t)
    encounter_t: float = 0.0
    rng: np.ndarray = field(default_factory=lambda: np.zeros(1, np.uint64))  # the module's own stream
    reads: frozenset[tuple[str, str]] = frozenset()  # (namespace, name) its waiting cases and hazard ratios read
    dirty: bool = False  # something it reads changed since its last re-check


@dataclass(frozen=True)
class Conditioning:
    """A scenario's changes to the model, as the reference reads them: `tilts` (module, state, hazard number)
    -> (factor on its rate, window), `forced` (module, state) -> (branch number, window); a window is a
    column of the patients' windows (years of age, [from, to)), -1 the whole life."""

    tilts: dict[tuple[str, str, int], tuple[float, int]] = field(default_factory=dict)
    forced: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


@dataclass
class Event:
    t: float
    kind: str  # one of kernel.EVENT_KINDS
    code: Code
    value: float
    encounter: int
    module: str
    state: str

    def __post_init__(self) -> None:
        assert self.kind in EVENT_KINDS, self.kind


@dataclass(frozen=True)
class Person:
    index: int
    birth_t: float
    sex: str  # "M" | "F"
    race: str
    ethnicity: str
    t_end: float  # nothing happens at or after it
    death_t: float  # background death (life tables)
    utc_offset_days: float = 0.0  # standard UTC offset of the patient's time zone (local = UTC + it)


class PatientRun:
    """One patient simulated from birth to t_end or death."""

    def __init__(
        self,
        library: Library,
        seed: int,
        person: Person,
        conditioning: Conditioning | None = None,
        windows: list[tuple[float, float]] | None = None,
    ) -> None:
        self.library, self.index = library, person.index
        self.conditioning = conditioning or Conditioning()
        self.windows = windows or []
        self.log_weight = 0.0  # log likelihood ratio of the life, unconditioned / conditioned
        self.birth_t, self.sex, self.race, self.ethnicity = person.birth_t, person.sex, person.race, person.ethnicity
        self.t_end, self.death_t, self.utc_offset_days = person.t_end, person.death_t, person.utc_offset_days
        hours = library.providers.clinic_hours
        self.clinic_days = {WEEKDAYS.index(day) for day in hours.weekdays}
        self.opens_days = hours.minutes(hours.opens) / MINUTES_PER_DAY
        self.closes_days = hours.minutes(hours.closes) / MINUTES_PER_DAY
        self.slot_days = hours.slot_minutes / MINUTES_PER_DAY
        self.n_slots = math.ceil((hours.minutes(hours.closes) - hours.minutes(hours.opens)) / hours.slot_minutes)
        self.rng = np.zeros(1, np.uint64)
        self.rng[0] = stream_state(seed, person.index, STREAM_EVENTS)
        declared = library.modules
        self.attribute_models = {n: a for m in declared for n, a in m.attributes.items()}
        self.observables = {n: o for m in declared for n, o in m.observables.items()}
        self.conditions = {n: c.code for m in declared for n, c in m.conditions.items()}
        self.medications = {n: d.code for m in declared for n, d in m.medications.items()}
        self.attributes = {n: Attribute(a.initial, 0.0, self.birth_t) for n, a in self.attribute_models.items()}
        self.active: set[str] = set()  # conditions
        self.diagnosed: set[str] = set()
        self.taking: dict[str, tuple[str, str, Code]] = {}  # running course -> (module, state) that started it, code
        self.latest = dict.fromkeys(self.observables, math.nan)
        self.z = {name: normal(self.rng) for name in self.observables}
        self.visit: dict[str, tuple[float, float]] = {}  # correlated observable -> (t, z) of its last reading
        self.lagged: dict[str, tuple[float, float]] = {}  # lagged observable -> (t, level) of its effects
        self.entered: dict[tuple[str, str], float] = {}  # (module, state) -> last entry time
        self.pending: list[Pending] = []  # in the order they started
        self.tracks = [Track(m, reads=guard_reads(m)) for m in declared if m.states]
        for track in self.tracks:
            track.rng[0] = stream_state(seed, person.index, module_stream(track.module.name))
        self.track_of = {track.module.name: track for track in self.tracks}
        self.n_encounters = 0
        self.join: int | None = None  # a wellness visit started since the last settle
        self.dirty = False  # something a module's guards read changed since the last settle
        self.dead = False
        self.background_ratio = 1.0  # the background hazard ratio death_t is drawn at
        self.events: list[Event] = []

    # --- the main loop ---------------------------------------------------------------------------

    def run(self) -> list[Event]:
        t = self.birth_t
        for track in self.tracks:
            if not self.dead:
                self.enter(track, track.module.start, t)  # type: ignore[arg-type]
        self.settle(t)
        while not self.dead:
            ends = [(e.t_end, 0, k) for k, e in enumerate(self.pending)]
            rounds = [(e.round_t, 1, k) for k, e in enumerate(self.pending)]
            wakes = [(track.wake_t, 2, k) for k, track in enumerate(self.tracks)]
            t, what, k = min([*ends, *rounds, *wakes, (self.death_t, 3, 0)])
            if t >= self.t_end:
                t = self.t_end
                break
            if what == 0:
                self.end_encounter(k, t)
            elif what == 1:
                self.take_round(self.pending[k], t)
            elif what == 2:
                self.tracks[k].wake_t = INF
                self.leave(self.tracks[k], t)
            else:
                self.die(t, self.background_cause(t), "", "")
                break
            self.settle(t)
        for track in self.tracks:  # tilted hazards still pending were exposed until the end or death
            if track.exposure_t < INF:
                self.count_exposure(track, t)
        return self.events

    def move_background_death(self, condition: str, t: float) -> None:
        """After `condition` was diagnosed or resolved at t: when the product of the background hazard ratios
        of the diagnosed conditions (mortality.hazard_ratios) changed, the cumulative background hazard left
        before death is spent at the new ratio."""
        ratios = {}
        for entry in self.library.mortality.hazard_ratios:
            for name in entry.conditions:
                ratios[name] = ratios.get(name, 1.0) * entry.hazard_ratio
        if ratios.get(condition, 1.0) == 1.0:
            return
        ratio = math.prod(ratios.get(name, 1.0) for name in self.conditions if name in self.diagnosed)
        if ratio == self.background_ratio or self.death_t <= t:
            return
        cum_hazard, tail_rate = background_hazard(self.library)
        cum, tail = cum_hazard["MF".index(self.sex)], float(tail_rate["MF".index(self.sex)])
        now = cumulative_at(cum, tail, (t - self.birth_t) / DAYS_PER_YEAR)
        left = cumulative_at(cum, tail, (self.death_t - self.birth_t) / DAYS_PER_YEAR) - now
        reached = inverse_cumulative(cum, tail, now + left * self.background_ratio / ratio)
        self.death_t = self.birth_t + reached * DAYS_PER_YEAR
        self.background_ratio = ratio

    def background_cause(self, t: float) -> Code:
        """The underlying cause of a background death at t: one uniform from the patient-level stream
        against the cumulative shares of the deaths in the patient's age band and sex."""
        mortality = self.library.mortality
        if mortality.causes is None:
            return mortality.cause
        age = (t - self.birth_t) / DAYS_PER_YEAR
        band = max(k for k, start in enumerate(mortality.causes.age) if start <= age)
        sex = "male" if self.sex == "M" else "female"
        certifiable = [k for k, cause in enumerate(mortality.causes.causes) if cause_since_t(cause) <= t]
        deaths = np.array([getattr(mortality.causes.causes[k], sex)[band] for k in certifiable], np.float64)
        cumulative = np.cumsum(deaths) / max(deaths.sum(), 1.0)
        pick = uniform(self.rng)
        chosen = certifiable[next((k for k, share in enumerate(cumulative[:-1]) if pick < share), len(deaths) - 1)]
        return mortality.causes.causes[chosen].code

    def changed(self, namespace: str, name: str) -> None:
        """Something guards may read changed: the next settle re-checks the modules whose guards read it."""
        for track in self.tracks:
            if (namespace, name) in track.reads:
                track.dirty = self.dirty = True

    def settle(self, t: float) -> None:
        """After a change, re-check the waiting cases and hazard ratios of the modules whose guards read it,
        until quiet. A module whose guards read nothing that changed is left alone: the crossings in time of
        its guards are scheduled wakes, so its decisions do not depend on other modules' events. (Tilted
        hazards count their exposure at every settle that re-checks anything, as the kernel does.)"""
        while not self.dead:
            if self.join is not None:
                encounter, self.join = self.join, None
                for track in [track for track in self.tracks if track.waiting == "wellness"]:
                    if self.dead:
                        break
                    track.encounter, track.encounter_open, track.encounter_t = encounter, False, t
                    track.waiting = ""
                    self.leave(track, t)
                continue
            if not self.dirty:
                return
            self.dirty = False
            for track in self.tracks:
                if self.dead:
                    return
                state = track.module.states[track.state]
                dirty, track.dirty = track.dirty, False
                if track.waiting == "cases":
                    if dirty:
                        self.leave(track, t)
                elif track.waiting == "" and state.hazards is not None and track.wake_t > t:
                    if self.is_tilted(track):
                        self.count_exposure(track, t)  # before the multipliers change
                    if not dirty:
                        continue
                    if self.multipliers(track, state, t) != track.multipliers:
                        self.schedule_hazards(track, t)
                    elif (recheck := self.recheck_time(track, state, t)) < track.wake_t:
                        # Same ratios, but a guard may flip sooner now (e.g. an attribute began drifting).
                        track.wake_t, track.wake = recheck, "reevaluate"

    # --- states ----------------------------------------------------------------------------------

    def enter(self, track: Track, name: str, t: float, booked: bool = False) -> None:
        """Enter a state, run its actions, and follow instantaneous exits until the module waits; a state that
        starts a clinic visit outside clinic hours is entered at the next clinic slot instead, one that starts
        (or leads at once to a state that starts) or ends an encounter timed by encounter_hours at the next
        time of day drawn from them (`booked`: the state is entered at the time it was deferred to, and the
        states it leads to at once are not timed again)."""
        while True:
            state = track.module.states[name]
            rule = None if booked else self.deferral_rule(track, state)
            if rule is not None or (is_clinic_visit(self.library, state) and not self.clinic_open(t)):
                track.state, track.waiting, track.wake = name, "clinic", "clinic"
                track.wake_t = (
                    self.hours_time(rule, t, track.rng) if rule is not None else self.clinic_slot(t, track.rng)
                )
                return
            track.state, track.waiting, track.wake_t, track.wake = name, "", INF, ""
            self.entered[(track.module.name, name)] = t
            self.run_actions(track, name, state, t)
            if self.dead or state.is_terminal:
                return
            if state.hazards is not None:
                self.schedule_hazards(track, t)
                return
            if state.after is not None:
                track.wake_t, track.wake = t + max(0.0, draw(state.after, track.rng)), "fire"
                return
            if state.wait_for == "wellness":
                track.waiting = "wellness"
                return
            target = self.choose(track, state, t)
            if target is None:
                self.wait_for_cases(track, state, t)
                return
            name = target

    def leave(self, track: Track, t: float) -> None:
        """The module's wait ends at t: take the state's exit, or keep waiting (or enter a deferred state)."""
        if track.wake == "clinic":
            self.enter(track, track.state, t, booked=True)
            return
        state = track.module.states[track.state]
        if state.hazards is not None:
            if track.wake == "reevaluate":
                self.schedule_hazards(track, t)
                return
            if self.is_tilted(track):
                self.count_exposure(track, t)
                track.exposure_t = INF
            target = self.fired_hazard(track, state)
        else:
            target = self.choose(track, state, t)
            if target is None:
                self.wait_for_cases(track, state, t)
                return
        self.enter(track, target, t)

    def choose(self, track: Track, state: State, t: float) -> str | None:
        """Target of a next / branches / cases exit (None: no case holds and no otherwise)."""
        if state.next is not None:
            return state.next
        if state.branches is not None:
            pick = uniform(track.rng)
            forced = self.conditioning.forced.get((track.module.name, track.state))
            if forced is not None and self.in_window(forced[1], (t - self.birth_t) / DAYS_PER_YEAR):
                self.log_weight += math.log(state.branches[forced[0]].probability)  # taken with probability 1
                return state.branches[forced[0]].to
            for branch in state.branches:
                if pick < branch.probability:
                    return branch.to
                pick -= branch.probability
            return state.branches[-1].to
        for case in state.cases or []:
            if self.holds(case.when, track.module.name, t):
                return case.to
        return state.otherwise

    def wait_for_cases(self, track: Track, state: State, t: float) -> None:
        track.waiting = "cases"
        track.wake_t = min([self.crossing(case.when, track.module.name, t) for case in state.cases or []], default=INF)
        track.wake = "reevaluate" if track.wake_t < INF else ""

    # --- clinic hours ----------------------------------------------------------------------------

    def is_clinic_day(self, day: float) -> bool:
        """Whether a local day (whole days since 1970-01-01, a Thursday) is a working day."""
        return (int(day) + 3) % 7 in self.clinic_days

    def clinic_open(self, t: float) -> bool:
        """Whether t is in clinic hours on a working day, local standard time (both ends EPS_DAYS earlier)."""
        local = t + self.utc_offset_days
        day = math.floor(local)
        return self.is_clinic_day(day) and self.opens_days - EPS_DAYS <= local - day < self.closes_days - EPS_DAYS

    def clinic_slot(self, t: float, rng: np.ndarray) -> float:
        """A slot drawn uniformly on the next working day whose opening is after t."""
        local = t + self.utc_offset_days
        day = float(math.floor(local))
        if not self.is_clinic_day(day) or local - day >= self.opens_days:
            day += 1.0
            while not self.is_clinic_day(day):
                day += 1.0
        slot = math.floor(uniform(rng) * self.n_slots)
        return day + self.opens_days + slot * self.slot_days - self.utc_offset_days

    # --- hours of acute care ---------------------------------------------------------------------

    def deferral_rule(self, track: Track, state: State) -> EncounterHours | None:
        """The encounter_hours rule for the start of the encounter the state starts or leads to at once, else
        for the end of the module's open-ended encounter it ends (None: the state is not timed)."""
        providers = self.library.providers
        index = start_hours(self.library, track.module, state)
        rule = providers.encounter_hours[index] if index >= 0 else None
        if rule is None and state.end_encounter:
            for pending in self.pending:
                if pending.module == track.module.name and pending.t_end == INF:
                    return providers.hours_of(pending.encounter_class, "end")
        return rule

    def hours_time(self, rule: EncounterHours, t: float, rng: np.ndarray) -> float:
        """The first time at or after t whose local time of day is drawn from the rule's blocks."""
        u = uniform(rng)
        blocks = hour_blocks(rule)
        k = next((j for j, (_, _, cum) in enumerate(blocks[:-1]) if u < cum), len(blocks) - 1)
        start, length, cum = blocks[k]
        below = blocks[k - 1][2] if k > 0 else 0.0
        clock = start + length * (u - below) / (cum - below)
        clock -= math.floor(clock)
        local = t + self.utc_offset_days
        at = math.floor(local) + clock
        if at < local:
            at += 1.0
        return at - self.utc_offset_days

    # --- guards ----------------------------------------------------------------------------------

    def holds(self, guard: object, module: str, t: float) -> bool:
        if isinstance(guard, GuardAtom):
            return GUARD_KINDS[type(guard)].holds(guard, self, module, t)
        if isinstance(guard, AllGuard):
            return all(self.holds(g, module, t) for g in guard.all)
        if isinstance(guard, AnyGuard):
            return any(self.holds(g, module, t) for g in guard.any)
        if isinstance(guard, NotGuard):
            return not self.holds(guard.not_, module, t)
        raise TypeError(type(guard))

    def crossing(self, guard: object, module: str, t: float) -> float:
        """Earliest time after t when an operand of the guard that changes with time (age, time since
        a state, a drifting attribute, a calendar date) crosses its threshold, plus EPS_DAYS; inf if none."""
        best = INF
        for _, atom in guard_atoms(guard):  # type: ignore[arg-type]
            threshold = GUARD_KINDS[type(atom)].threshold
            at = (INF if threshold is None else threshold(atom, self, module, t)) + EPS_DAYS
            if t < at < best:
                best = at
        return best

    def multipliers(self, track: Track, state: State, t: float) -> list[float]:
        """Product of the hazard ratios whose guard holds, per hazard."""
        out = []
        for hazard in state.hazards or []:
            product = 1.0
            for ratio in hazard.hazard_ratios:
                if self.holds(ratio.when, track.module.name, t):
                    product *= ratio.ratio
            out.append(product)
        return out

    def rates(self, track: Track, state: State, band_start: float, age: float) -> list[float]:
        """Rate per year of each competing hazard in the band that starts at band_start, at `age` in it
        (times the scenario's tilt there)."""
        hazards = state.hazards or []
        return [
            m * rate_at(h.rate_per_year, self.sex, band_start) * self.tilt(track, k, age)
            for k, (m, h) in enumerate(zip(track.multipliers, hazards, strict=True))
        ]

    # --- scenario conditioning -------------------------------------------------------------------

    def in_window(self, window: int, age: float) -> bool:
        return window < 0 or self.windows[window][0] <= age < self.windows[window][1]

    def is_tilted(self, track: Track) -> bool:
        return any((track.module.name, track.state) == key[:2] for key in self.conditioning.tilts)

    def tilt(self, track: Track, k: int, age: float) -> float:
        """The scenario's factor on hazard k of the module's state at this age (1: none, or outside its window)."""
        factor, window = self.conditioning.tilts.get((track.module.name, track.state, k), (1.0, -1))
        return factor if self.in_window(window, age) else 1.0

    def window_edge(self, track: Track, age: float) -> float:
        """The first edge after `age` of the windows of the state's tilted hazards (inf: none)."""
        edges = [
            edge
            for (module, state, _), (_, window) in self.conditioning.tilts.items()
            if (module, state) == (track.module.name, track.state) and window >= 0
            for edge in self.windows[window]
        ]
        return min([edge for edge in edges if edge > age], default=INF)

    def count_exposure(self, track: Track, t: float) -> None:
        """Add (factor - 1) x the integral of each tilted hazard's rate from track.exposure_t to t to the log
        weight (the exp(-integral of the rate difference) of a piecewise-exponential likelihood ratio)."""
        t0, track.exposure_t = track.exposure_t, t
        if not t0 < t:
            return
        state = track.module.states[track.state]
        edges = band_edges(state)
        age, stop = (t0 - self.birth_t) / DAYS_PER_YEAR, (t - self.birth_t) / DAYS_PER_YEAR
        band = max([k for k, edge in enumerate(edges) if edge <= age], default=0)
        while age < stop:
            end = min(edges[band + 1] if band + 1 < len(edges) else INF, self.window_edge(track, age), stop)
            for k, (m, hazard) in enumerate(zip(track.multipliers, state.hazards or [], strict=True)):
                factor = self.tilt(track, k, age)
                if factor != 1.0:
                    rate = m * rate_at(hazard.rate_per_year, self.sex, edges[band])
                    self.log_weight += (factor - 1.0) * rate * (end - age)
            if band + 1 < len(edges) and edges[band + 1] <= end:
                band += 1
            age = end

    def recheck_time(self, track: Track, state: State, t: float) -> float:
        """When the first of the state's hazard-ratio guards may flip (inf if none can)."""
        guards = [ratio.when for hazard in state.hazards or [] for ratio in hazard.hazard_ratios]
        return min([self.crossing(g, track.module.name, t) for g in guards], default=INF)

    def schedule_hazards(self, track: Track, t: float) -> None:
        """Draw when the first of the state's competing hazards fires, walking the age bands; wake up
        earlier to re-draw if a hazard ratio's guard may flip before then."""
        state = track.module.states[track.state]
        if self.is_tilted(track):
            self.count_exposure(track, t)  # at the multipliers so far
        track.multipliers = self.multipliers(track, state, t)
        remaining = exponential(track.rng)
        edges = band_edges(state)
        age = (t - self.birth_t) / DAYS_PER_YEAR
        band = max([k for k, edge in enumerate(edges) if edge <= age], default=0)
        hit_t = INF
        while True:
            rate = sum(self.rates(track, state, edges[band], age))
            end = min(edges[band + 1] if band + 1 < len(edges) else INF, self.window_edge(track, age))
            if rate > 0.0 and rate * (end - age) >= remaining:
                hit_t = self.birth_t + (age + remaining / rate) * DAYS_PER_YEAR
                break
            if end == INF:
                break
            remaining -= rate * (end - age)
            if band + 1 < len(edges) and edges[band + 1] <= end:
                band += 1
            age = end
        track.wake_age = age
        recheck = self.recheck_time(track, state, t)
        if recheck < hit_t:
            track.wake_t, track.wake = recheck, "reevaluate"
        else:
            track.wake_t, track.wake, track.band = hit_t, ("fire" if hit_t < INF else ""), band

    def fired_hazard(self, track: Track, state: State) -> str:
        """Which hazard fired: chosen in proportion to the rates in the band it fired in."""
        rates = self.rates(track, state, band_edges(state)[track.band], track.wake_age)
        pick = uniform(track.rng) * sum(rates)
        chosen = 0
        for k, rate in enumerate(rates):
            if rate > 0.0:
                chosen = k
                if pick < rate:
                    break
                pick -= rate
        self.log_weight -= math.log(self.tilt(track, chosen, track.wake_age))  # rate / (factor x rate)
        return (state.hazards or [])[chosen].to

    # --- actions ---------------------------------------------------------------------------------

    def attached(self, track: Track, t: float) -> int:
        """The module's encounter now: an open-ended one, or one started or joined at this instant."""
        if track.encounter >= 0 and (track.encounter_open or track.encounter_t == t):
            return track.encounter
        return -1

    def effects(self, name: str, t: float) -> list[float]:
        """coefficient x attribute now, for each attribute that affects the observable (library order)."""
        return [
            attr.affects[name] * self.attributes[attr_name].seen(t)
            for attr_name, attr in self.attribute_models.items()
            if name in attr.affects
        ]

    def lag_to(self, name: str, t: float) -> float:
        """The observable's lagged effect level brought up to t: first order, with its half-life, toward
        the sum of its effects now; on first use it starts at that sum."""
        target = 0.0
        for effect in self.effects(name, t):
            target += effect
        level = target
        if name in self.lagged:
            t0, previous = self.lagged[name]
            half_life = self.observables[name].response_half_life_days
            level = target + (previous - target) * 0.5 ** ((t - t0) / half_life)  # type: ignore[operator]
        self.lagged[name] = (t, level)
        return level

    def visit_component(self, name: str, t: float, rng: np.ndarray) -> float:
        """z_visit: one fresh normal, or an Ornstein-Uhlenbeck step from the last reading's."""
        z = normal(rng)
        correlation_days = self.observables[name].correlation_days
        if correlation_days is not None:
            if name in self.visit:
                t0, previous = self.visit[name]
                rho = math.exp(-(t - t0) / correlation_days)
                z = rho * previous + math.sqrt(1.0 - rho * rho) * z
            self.visit[name] = (t, z)
        return z

    def measured(self, name: str, t: float, rng: np.ndarray) -> float:
        """A measured observable's reading before clipping and rounding."""
        obs = self.observables[name]
        age = (t - self.birth_t) / DAYS_PER_YEAR
        value = curve(obs.mean, self.sex, age)  # type: ignore[arg-type]
        if obs.response_half_life_days is not None:
            value += self.lag_to(name, t)
        else:
            for effect in self.effects(name, t):
                value += effect
        sd, p = curve(obs.sd, self.sex, age), obs.persistence
        value += sd * (math.sqrt(p) * self.z[name] + math.sqrt(1.0 - p) * self.visit_component(name, t, rng))
        if obs.measurement_sd is not None:
            value += obs.measurement_sd * normal(rng)
        return value

    def recorded(self, code: Code, t: float) -> Code | None:
        """What a record at t contains for `code` (rules/calendar.yaml): the code itself when not dated, else
        its era's code at the patient's age; None: nothing in this era."""
        uri = schema.CODE_SYSTEMS[code.system]
        if not self.library.calendar.eras(uri, code.code):
            return code
        entry = self.library.calendar.in_use(uri, code.code, t, (t - self.birth_t) / DAYS_PER_YEAR)
        if entry is None:
            return None
        return Code(system=SYSTEM_NAMES[entry.system], code=entry.code, display=entry.display)

    def kidney(self, obs: schema.Observable, t: float, rng: np.ndarray) -> float:
        """An eGFR estimated from the latest creatinine by the equation of the code the era reports (the
        observable's own when it reports none), or a creatinine inverted from the true GFR plus a visit
        normal; age in completed years."""
        born, now = (EPOCH + timedelta(days=math.floor(x)) for x in (self.birth_t, t))
        age = now.year - born.year - ((now.month, now.day) < (born.month, born.day))  # completed years
        female = self.sex == "F"
        if obs.estimated is not None:
            creatinine = self.latest[obs.estimated.creatinine]
            if age < obs.estimated.minimum_age_years or math.isnan(creatinine):
                return math.nan
            reported = self.recorded(obs.code, t)
            by_code = {e.code: e for e in obs.estimated.equations}
            equation = by_code.get(reported.code if reported is not None else "", by_code[obs.code.code])
            return equation.gfr(creatinine, age, female, self.race)
        inverted = obs.inverted
        estimate = self.observables[inverted.estimate]  # type: ignore[union-attr]
        [equation] = [e for e in estimate.estimated.equations if e.code == estimate.code.code]  # type: ignore[union-attr]
        gfr = self.attributes[inverted.attribute].at(t)  # type: ignore[union-attr]
        creatinine = equation.creatinine(gfr, age, female, self.race)
        return creatinine + curve(obs.sd, self.sex, (t - self.birth_t) / DAYS_PER_YEAR) * normal(rng)

    def observe(self, name: str, t: float, rng: np.ndarray) -> float:
        """A value of an observable now (NaN when a derived one has an input never measured); the
        visit component is drawn from `rng`."""
        obs = self.observables[name]
        if obs.estimated is not None or obs.inverted is not None:
            value = self.kidney(obs, t, rng)
        elif obs.derived is not None and obs.derived.sum is not None:
            value = sum(coefficient * self.latest[factor] for factor, coefficient in obs.derived.sum.items())
        elif obs.derived is not None:
            value = obs.derived.scale
            for factor, power in obs.derived.terms().items():
                value *= self.latest[factor] ** power
        else:
            value = self.measured(name, t, rng)
        if math.isnan(value):
            return value
        return self.bounded(name, value)

    def bounded(self, name: str, value: float) -> float:
        """A reading of observable `name` inside its limits, rounded to its decimals."""
        obs = self.observables[name]
        low, high = obs.limits if obs.limits is not None else (-INF, INF)
        scale = 10.0**obs.decimals
        return math.floor(min(max(value, low), high) * scale + 0.5) / scale

    def observables_lagging(self, attribute: str) -> list[str]:
        """The observables with a response half-life that the attribute affects (library order)."""
        affects = self.attribute_models[attribute].affects
        return [n for n, o in self.observables.items() if o.response_half_life_days is not None and n in affects]

    def run_actions(self, track: Track, name: str, state: State, t: float) -> None:
        """A state's actions, in the documented order (State)."""
        module = track.module.name

        def emit(kind: str, code: Code, value: float = math.nan, encounter: int | None = None) -> None:
            number = self.attached(track, t) if encounter is None else encounter
            self.events.append(Event(t, kind, code, value, number, module, name))

        if state.encounter is not None:
            number, self.n_encounters = self.n_encounters, self.n_encounters + 1
            emit("encounter_start", state.encounter.code, encounter=number)
            duration = state.encounter.duration
            t_end = t + max(0.0, draw(duration, track.rng)) if duration is not None else INF
            ends = self.library.providers.hours_of(state.encounter.encounter_class, "end")
            if duration is not None and ends is not None:  # a stay of set length ends in its hours
                t_end = self.hours_time(ends, t_end, track.rng)
            encounter_class = state.encounter.encounter_class
            round_t = t + round_interval_days(self.library, encounter_class)
            self.pending.append(Pending(t_end, number, module, name, state.encounter.code, encounter_class, round_t))
            track.encounter, track.encounter_open, track.encounter_t = number, duration is None, t
            if state.encounter.encounter_class == "wellness":
                self.join = number
        for setter in state.set:
            attribute = self.attributes[setter.attribute]
            for lagged in self.observables_lagging(setter.attribute):
                self.lag_to(lagged, t)  # with the old target, so that a step is followed exactly
            if setter.to is not None:
                level, slope = setter.to, setter.per_year if setter.per_year is not None else 0.0
            elif setter.add is not None:
                level, slope = attribute.at(t) + setter.add, setter.per_year  # None: keep the drift
            else:
                level, slope = draw(setter.draw, track.rng), setter.per_year if setter.per_year is not None else 0.0
            attribute.seen_level, attribute.seen_t = attribute.seen(t), t
            attribute.half_life_days = setter.response_half_life_days or 0.0
            attribute.level, attribute.t0 = level, t
            if slope is not None:
                attribute.slope_per_year = slope
            self.changed("attributes", setter.attribute)
        for condition, is_diagnosis in [*((c, False) for c in state.onset), *((c, True) for c in state.diagnose)]:
            if condition not in self.active:  # a diagnosis implies onset
                self.active.add(condition)
                self.diagnosed.discard(condition)
                emit("condition_onset", self.conditions[condition])
                self.changed("conditions", condition)
            if is_diagnosis and condition not in self.diagnosed:
                self.diagnosed.add(condition)
                emit("condition_diagnosis", self.conditions[condition])
                self.changed("conditions", condition)
                self.move_background_death(condition, t)
        for condition in state.resolve:
            if condition in self.active:
                was_diagnosed = condition in self.diagnosed
                self.active.discard(condition)
                self.diagnosed.discard(condition)
                emit("condition_resolved", self.conditions[condition])
                self.changed("conditions", condition)
                if was_diagnosed:
                    self.move_background_death(condition, t)
        for medication in state.start_medication:
            course = self.recorded(self.medications[medication], t)
            if course is not None and not self.product_taken(medication):
                self.taking[medication] = (module, name, course)
                emit("medication_start", course)
                self.changed("medications", medication)
        for medication in state.stop_medication:
            if medication in self.taking:
                emit("medication_stop", self.taking.pop(medication)[2])
                self.changed("medications", medication)
        for kind, codes in (("procedure", state.procedure), ("immunization", state.immunization)):
            for code in codes:
                given = self.recorded(code, t)
                if given is not None:
                    emit(kind, given)
        for observable in state_observations(self.library, state):
            value = self.observe(observable, t, track.rng)
            if not math.isnan(value):
                self.record(observable, value, t, self.attached(track, t), module, name)
        for symptom in state.symptom:
            emit("symptom", symptom.code, min(max(draw(symptom.severity, track.rng), 0.0), SYMPTOM_SCALE_MAX))
        if state.end_encounter:
            for k, pending in enumerate(self.pending):
                if pending.module == module and pending.t_end == INF:
                    self.end_encounter(k, t)
                    break
        if state.death is not None:
            self.die(t, state.death.cause, module, name)

    def product_taken(self, medication: str) -> bool:
        """Whether the medication's product (system and code) is taken now, under any module's name."""

        def product(name: str) -> tuple[str, str]:
            return self.medications[name].system, self.medications[name].code

        return any(product(taken) == product(medication) for taken in self.taking)

    def record(self, observable: str, value: float, t: float, encounter: int, module: str, state: str) -> None:
        """A reading of an observable, in an encounter: it becomes the latest (guards are re-checked), recorded
        under its era's code (rules/calendar.yaml), or not at all in an era without one."""
        self.latest[observable] = value
        code = self.recorded(self.observables[observable].code, t)
        if code is not None:  # an era with no code for it records nothing
            self.events.append(Event(t, "observation", code, value, encounter, module, state))
        self.changed("observables", observable)

    def take_round(self, pending: Pending, t: float) -> None:
        """Repeat the start observations of an open encounter (a ward round, an ICU hour), drawing from the
        stream of the module that started it, and schedule the next."""
        rng = self.track_of[pending.module].rng
        for observable in start_observations(self.library, pending.encounter_class):
            value = self.observe(observable, t, rng)
            if not math.isnan(value):
                self.record(observable, value, t, pending.encounter, pending.module, pending.state)
        pending.round_t = t + round_interval_days(self.library, pending.encounter_class)

    def close(self, pending: Pending, t: float) -> None:
        """Record the end of an encounter (as emitted by the state that started it)."""
        self.events.append(
            Event(t, "encounter_end", pending.code, math.nan, pending.encounter, pending.module, pending.state)
        )

    def end_encounter(self, k: int, t: float) -> None:
        """End pending encounter k now and drop it from the list."""
        pending = self.pending.pop(k)
        self.close(pending, t)
        track = self.track_of[pending.module]
        if track.encounter == pending.encounter:
            track.encounter = -1

    def dying(self, name: str, value: float, before: float) -> float:
        """A terminal stay's reading `before` days before death, shifted toward death by its shift at death
        times 1 - before / window (none earlier; mortality.in_hospital.deteriorate), bounded and rounded."""
        in_hospital = self.library.mortality.in_hospital
        deteriorate = in_hospital.deteriorate if in_hospital is not None else None
        if deteriorate is None or name not in deteriorate.shifts or math.isnan(value):
            return value
        weight = 1.0 - before / (deteriorate.window_hours / 24.0)
        if weight <= 0.0 or deteriorate.shifts[name] == 0.0:
            return value
        return self.bounded(name, value + deteriorate.shifts[name] * weight)

    def terminal_stay(self, t: float) -> int:
        """For a death at t with no encounter open (mortality.in_hospital): one uniform from the patient-level
        stream (a stay with probability `share`), then its length; the inpatient admission is that long before
        t but not before the last event, records an inpatient start's observations and labs, and repeats the
        observations on the inpatient rounds before t, deteriorating toward death (dying); it is open until
        death. Returns the stay's encounter
        number (-1: none), which the death records."""
        in_hospital = self.library.mortality.in_hospital
        if in_hospital is None or self.pending or uniform(self.rng) >= in_hospital.share:
            return -1
        last_t = self.events[-1].t if self.events else self.birth_t
        admitted = max(t - max(0.0, draw(in_hospital.stay, self.rng)), last_t)
        if admitted >= t:
            return -1
        number, self.n_encounters = self.n_encounters, self.n_encounters + 1
        self.events.append(Event(admitted, "encounter_start", in_hospital.encounter, math.nan, number, "", ""))
        observed, at = admission_observations(self.library), admitted
        interval = round_interval_days(self.library, "inpatient")
        while at < t:
            for observable in observed:
                value = self.dying(observable, self.observe(observable, at, self.rng), t - at)
                if not math.isnan(value):
                    self.record(observable, value, at, number, "", "")
            observed, at = start_observations(self.library, "inpatient"), at + interval
        self.pending.append(Pending(t, number, "", "", in_hospital.encounter, "inpatient", INF))
        return number

    def die(self, t: float, cause: Code, module: str, state: str) -> None:
        """Stop every active medication at t (in library order, each as the state that started it),
        close every open encounter, then record death; nothing happens after it. A death with no encounter
        open may end a terminal stay (terminal_stay): the death records that stay's encounter."""
        stay = self.terminal_stay(t)
        for medication in [name for name in self.medications if name in self.taking]:
            module_started, state_started, code = self.taking[medication]
            self.events.append(Event(t, "medication_stop", code, math.nan, -1, module_started, state_started))
        self.taking.clear()
        for pending in self.pending:
            self.close(pending, t)
        self.pending.clear()
        self.events.append(Event(t, "death", cause, math.nan, stay, module, state))
        self.dead = True
        for track in self.tracks:
            track.wake_t = INF


def simulate(
    library: Library,
    seed: int,
    people: People,
    t_end: np.ndarray,
    run_class: type[PatientRun] = PatientRun,
    conditioning: Conditioning | None = None,
    windows: np.ndarray | None = None,
) -> pd.DataFrame:
    """Events of `people` (as population.sample draws them) up to t_end[i] each, one row per event in
    the order they happen: patient (index), t (days), kind (an EVENT_KINDS name), code ("SYSTEM|code"),
    value, encounter (per-patient number, -1 none), module and state ("" for background death). Under a
    scenario's `conditioning` (`windows`: float64[n, n_windows, 2], years of age) each patient's log likelihood
    ratio is in the frame's attrs["log_weight"]."""
    races = [c.name for c in library.demographics.race]
    ethnicities = [c.name for c in library.demographics.ethnicity]
    rows, log_weights = [], []
    for i, index in enumerate(people.index.tolist()):
        sex, race, ethnicity = "MF"[int(people.sex[i])], races[people.race[i]], ethnicities[people.ethnicity[i]]
        person = Person(
            index,
            float(people.birth_t[i]),
            sex,
            race,
            ethnicity,
            float(t_end[i]),
            float(people.death_t[i]),
            float(people.utc_offset_days[i]),
        )
        patient_windows = [] if windows is None else [(float(a), float(b)) for a, b in windows[i]]
        run = run_class(library, seed, person, conditioning, patient_windows)
        with np.errstate(over="ignore"):  # SplitMix64 wraps on purpose (warns only without JIT)
            events = run.run()
        log_weights.append(run.log_weight)
        rows += [(index, e.t, e.kind, code_text(e.code), e.value, e.encounter, e.module, e.state) for e in events]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs["log_weight"] = log_weights
    return frame
