"""Compile a validated Library into immutable numpy arrays the kernel runs on. No RNG, no I/O.

Everything is indexed globally: states, attributes, conditions, medications, observables, codes,
distributions and guard programs get one integer id across all modules. Variable-length parts
(actions of a state, branches, hazards, guard instructions, curves) live in flat arrays addressed
by `*_start` / `*_n` pairs. Guards are compiled to postfix programs evaluated with a small stack.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

import numpy as np

from simulator.days import days_since_epoch
from simulator.engine.codes import (
    A_DEATH,
    A_DIAGNOSE,
    A_ENC_END,
    A_ENC_START,
    A_IMMUNIZATION,
    A_MED_START,
    A_MED_STOP,
    A_OBSERVE,
    A_ONSET,
    A_PROCEDURE,
    A_RESOLVE,
    A_SET_ADD,
    A_SET_DRAW,
    A_SET_TO,
    A_SYMPTOM,
    COMPARISONS,
    D_EXACT,
    D_EXPONENTIAL,
    D_GAMMA,
    D_LOGNORMAL,
    D_NORMAL,
    D_UNIFORM,
    G_AND,
    G_ATTR,
    G_COND_ACTIVE,
    G_COND_DIAGNOSED,
    G_MED,
    G_NOT,
    G_OBS,
    G_OR,
    X_BRANCHES,
    X_CASES,
    X_HAZARDS,
    X_NEXT,
    X_TERMINAL,
)
from simulator.engine.guards import GUARD_KINDS
from simulator.model.calendar import SYSTEM_NAMES, Calendar
from simulator.model.library import Library
from simulator.model.providers import EncounterHours
from simulator.model.schema import (
    CODE_SYSTEMS,
    DAYS_PER_UNIT,
    ENCOUNTER_CLASSES,
    WEEKDAYS,
    AgeCurve,
    AllGuard,
    CauseOfDeath,
    Code,
    DeathCauses,
    Deterioration,
    DiseaseModule,
    Exact,
    Exponential,
    Gamma,
    GfrEquation,
    GuardAtom,
    LogNormal,
    Normal,
    NotGuard,
    Observable,
    RateTable,
    State,
    Uniform,
)

OBS_MEASURED, OBS_ESTIMATED, OBS_INVERTED = 0, 1, 2
ACTION_DEFAULTS = {
    "code": -1,
    "dist": -1,
    "duration": -1,
    "reason": -1,
    "value": 0.0,
    "drift_per_year": math.nan,
    "half_life_days": 0.0,
}
MINUTES_PER_DAY = 1440
FIRST_MODULE_STREAM = 2  # streams 0 and 1 are a patient's demographics and patient-level draws (kernel)


class CompiledModel(NamedTuple):
    """The whole library as arrays (see module docstring for the addressing scheme)."""

    # modules and states
    module_start: np.ndarray  # int32[n_modules]: global index of each module's start state
    module_stream: np.ndarray  # int64[n_modules]: random stream number of each module (from its name)
    state_module: np.ndarray  # int32[n_states]
    state_act_start: np.ndarray  # int32[n_states]
    state_act_n: np.ndarray  # int32[n_states]
    state_exit: np.ndarray  # int8[n_states]: X_*
    state_delay: np.ndarray  # int32[n_states]: distribution of `after`, -1 none
    state_wait_wellness: np.ndarray  # bool[n_states]
    state_next: np.ndarray  # int32[n_states]: target of next / otherwise (-1: wait)
    state_sub_start: np.ndarray  # int32[n_states]: first branch / case / hazard
    state_sub_n: np.ndarray  # int32[n_states]
    state_band_start: np.ndarray  # int32[n_states]: first age edge of the merged hazard bands
    state_band_n: np.ndarray  # int32[n_states]
    # actions
    act_kind: np.ndarray  # int8[n_actions]: A_*
    act_target: np.ndarray  # int32: what it acts on: attribute / condition / medication / observable / code / class
    act_code: np.ndarray  # int32: code of the encounter started (-1 otherwise)
    act_dist: np.ndarray  # int32: distribution drawn: attribute level (set draw), symptom severity (-1 otherwise)
    act_duration: np.ndarray  # int32: distribution of an encounter's duration (-1: open until ended)
    act_reason: np.ndarray  # int32: reason condition of an encounter (-1 none)
    act_value: np.ndarray  # float64: attribute level set to / added
    act_drift_per_year: np.ndarray  # float64: attribute drift from now on (NaN: keep the current drift)
    act_half_life_days: np.ndarray  # float64: lag of the attribute's effects after this change (0: none)
    # branches and cases
    branch_prob: np.ndarray  # float64[n_branches]
    branch_to: np.ndarray  # int32[n_branches]
    case_guard: np.ndarray  # int32[n_cases]
    case_to: np.ndarray  # int32[n_cases]
    # hazards: rates per merged band, per sex
    hazard_to: np.ndarray  # int32[n_hazards]
    hazard_rate_start: np.ndarray  # int32[n_hazards] into rate_male / rate_female
    hazard_ratio_start: np.ndarray  # int32[n_hazards]
    hazard_ratio_n: np.ndarray  # int32[n_hazards]
    band_edge_years: np.ndarray  # float64[n_edges]
    rate_male: np.ndarray  # float64[n_rates], per year
    rate_female: np.ndarray  # float64[n_rates]
    ratio_guard: np.ndarray  # int32[n_ratios]
    ratio_value: np.ndarray  # float64[n_ratios]
    # guards
    guard_start: np.ndarray  # int32[n_guards]
    guard_n: np.ndarray  # int32[n_guards]
    ginst_op: np.ndarray  # int8[n_inst]: G_*
    ginst_i0: np.ndarray  # int32: operand (index, or child count for and/or)
    ginst_cmp: np.ndarray  # int8: index into COMPARISONS
    ginst_f0: np.ndarray  # float64: value (days for since)
    # distributions (values in days when they carry a unit)
    dist_kind: np.ndarray  # int8[n_dists]
    dist_a: np.ndarray  # float64: exact value; uniform low; normal mean; exponential mean; lognormal mu; gamma shape
    dist_b: np.ndarray  # float64: uniform high; normal sd; lognormal sigma; gamma scale (0 otherwise)
    dist_scale: np.ndarray  # float64: unit in days (1 when unitless)
    # attributes, conditions, medications
    attr_initial: np.ndarray  # float64[n_attributes]
    cond_code: np.ndarray  # int32[n_conditions]
    med_code: np.ndarray  # int32[n_medications]
    # observables
    obs_code: np.ndarray  # int32[n_observables]
    obs_mean_start: np.ndarray  # int32: curve of the mean (-1 when derived)
    obs_sd_start: np.ndarray  # int32: curve of the sd
    obs_persistence: np.ndarray  # float64
    obs_low: np.ndarray  # float64 (-inf: none)
    obs_high: np.ndarray  # float64 (+inf: none)
    obs_decimals: np.ndarray  # int32
    obs_effect_start: np.ndarray  # int32: attribute effects
    obs_effect_n: np.ndarray  # int32
    effect_attr: np.ndarray  # int32[n_effects]
    effect_coef: np.ndarray  # float64[n_effects]
    obs_derived_start: np.ndarray  # int32
    obs_derived_n: np.ndarray  # int32 (0: not derived)
    obs_derived_scale: np.ndarray  # float64
    obs_derived_sum: np.ndarray  # bool: a derived value is the sum of coefficient x input, not the product
    derived_obs: np.ndarray  # int32[n_factors]
    derived_power: np.ndarray  # float64[n_factors]
    curve_start: np.ndarray  # int32[n_curves] into curve_age / curve_male / curve_female
    curve_n: np.ndarray  # int32[n_curves]
    curve_age: np.ndarray  # float64
    curve_male: np.ndarray  # float64
    curve_female: np.ndarray  # float64
    # scalars
    wellness_class: int  # ENCOUNTER_CLASSES index of wellness
    death_code: int  # code of background (life-table) death
    max_hazards: int  # most competing hazards in one state
    # which modules' guards read what: a change re-checks the waiting cases and hazard ratios of those
    # modules only (a change to anything no guard reads re-checks none)
    attr_readers: np.ndarray  # bool[n_attributes, n_modules]
    cond_readers: np.ndarray  # bool[n_conditions, n_modules]
    med_readers: np.ndarray  # bool[n_medications, n_modules]
    obs_readers: np.ndarray  # bool[n_observables, n_modules]
    # how readings evolve (Observable.correlation_days, measurement_sd, response_half_life_days)
    obs_correlation_days: np.ndarray  # float64[n_observables]: correlation time of z_visit (0: fresh each reading)
    obs_measurement_sd: np.ndarray  # float64[n_observables]: measurement error SD (NaN: none, no draw)
    obs_half_life_days: np.ndarray  # float64[n_observables]: lag of the attribute effects (0: none)
    attr_lagged: np.ndarray  # bool[n_attributes]: affects an observable with a lag
    # underlying causes of background deaths (none: every background death has death_code)
    death_cause_code: np.ndarray  # int32[n_causes]
    death_cause_age: np.ndarray  # float64[n_cause_bands]: band starts in years
    death_cause_deaths_male: np.ndarray  # float64[n_cause_bands, n_causes]: the table's deaths in each band
    death_cause_deaths_female: np.ndarray  # float64[n_cause_bands, n_causes]
    death_cause_since_t: np.ndarray  # float64[n_causes]: no death has the cause before it (-inf: always)
    # deaths in hospital (rules/mortality.yaml in_hospital): a terminal inpatient stay before a death outside
    # any encounter
    terminal_share: float  # probability of the stay (0: never)
    terminal_stay: int  # distribution of its length, days before death (-1: none)
    terminal_code: int  # code of its encounter (-1: none)
    terminal_class: int  # ENCOUNTER_CLASSES index of inpatient
    terminal_obs: np.ndarray  # int32: what its admission records (an inpatient start's observations, then labs)
    dying_shift: np.ndarray  # float64[n_obs]: each reading's shift at death in a terminal stay (0: none)
    dying_window: float  # days before death the shift starts growing from 0 (inf: no deterioration)
    # background hazard ratios (rules/mortality.yaml hazard_ratios): a patient's background hazard is the
    # life table's (times the fitted share) times the product of the ratios of their diagnosed conditions
    cond_bg_hr: np.ndarray  # float64[n_conditions]: 1 when the condition has none
    # clinic hours (rules/providers.yaml clinic_hours), in days of the patient's local standard time
    state_clinic: np.ndarray  # bool[n_states]: the state starts an encounter of a class clinics see in their hours
    clinic_days: np.ndarray  # bool[7]: working days, Monday first
    clinic_opens_days: float  # opening, as a fraction of the day
    clinic_closes_days: float
    clinic_slot_days: float  # an appointment starts a whole number of these after opening
    clinic_n_slots: int  # appointments of a day
    # hours of acute care (rules/providers.yaml encounter_hours): times of day drawn from blocks, per rule
    state_hours: np.ndarray  # int32[n_states]: rule for when the encounter the state starts starts (-1: any time)
    state_ends: np.ndarray  # bool[n_states]: the state ends its module's open-ended encounter
    class_end_hours: np.ndarray  # int32[n_classes]: rule for when an encounter of the class ends (-1: any time)
    hours_block_start: np.ndarray  # int32[n_rules] into the block arrays
    hours_block_n: np.ndarray  # int32[n_rules]
    block_from_days: np.ndarray  # float64[n_blocks]: the block's start, as a fraction of the day
    block_length_days: np.ndarray  # float64[n_blocks]
    block_cum: np.ndarray  # float64[n_blocks]: share of the rule's encounters up to the end of this block
    # observations repeated while an encounter stays open (rules/vital_signs.yaml observe_every_hours)
    class_obs_start: np.ndarray  # int32[n_classes] into class_obs: what an encounter of the class records at its start
    class_obs_n: np.ndarray  # int32[n_classes]
    class_obs: np.ndarray  # int32: observables
    class_round_days: np.ndarray  # float64[n_classes]: days between repeats of them (inf: none)
    # eras (rules/calendar.yaml): what a record contains for a dated code at a time and age, newest era first
    code_era_start: np.ndarray  # int32[n_codes]: first era of the code
    code_era_n: np.ndarray  # int32[n_codes] (0: not dated, always itself)
    era_code: np.ndarray  # int32[n_eras]: the code recorded in this era
    era_step_start: np.ndarray  # int32[n_eras]: its start date as a step function of age
    era_step_n: np.ndarray  # int32[n_eras]
    step_age: np.ndarray  # float64[n_steps]: from this age (years) up to the next step's ...
    step_t: np.ndarray  # float64[n_steps]: ... the era starts at this time (days since 1970)
    # kidney function observables: an eGFR estimated from creatinine, a creatinine inverted from the true GFR
    obs_kidney: np.ndarray  # int8[n_observables]: OBS_MEASURED, OBS_ESTIMATED or OBS_INVERTED
    obs_kidney_input: np.ndarray  # int32: creatinine observable (estimated) / true-GFR attribute (inverted)
    obs_kidney_min_age: np.ndarray  # float64: estimated: missing below this age
    obs_eq_start: np.ndarray  # int32: its equations (inverted: the one of its eGFR's own code)
    obs_eq_n: np.ndarray  # int32
    eq_code: np.ndarray  # int32[n_equations]: the code whose values the equation gives
    eq_scale: np.ndarray  # float64
    eq_kappa: np.ndarray  # float64[n_equations, 2]: by sex (0 male, 1 female)
    eq_alpha: np.ndarray  # float64[n_equations, 2]
    eq_above: np.ndarray  # float64: exponent above kappa
    eq_age_factor: np.ndarray  # float64: per year of age
    eq_age_power: np.ndarray  # float64
    eq_female: np.ndarray  # float64: female factor
    eq_race: np.ndarray  # int32: race the race factor applies to (-1 none)
    eq_race_factor: np.ndarray  # float64
    # scenario conditioning (simulator.scenario; neutral here): hazards tilted inside a window of age and
    # branches forced there; the kernel adds the log likelihood ratio of each change to the patient's weight
    hazard_tilt: np.ndarray  # float64[n_hazards]: factor on the hazard's rate inside its window (1: none)
    hazard_window: np.ndarray  # int32[n_hazards]: the patient's window it applies in (-1: the whole life)
    state_tilted: np.ndarray  # bool[n_states]: some hazard of the state is tilted
    state_force: np.ndarray  # int32[n_states]: global branch taken inside its window (-1: none)
    state_force_window: np.ndarray  # int32[n_states]: the window (-1: the whole life)


@dataclass(frozen=True)
class Names:
    """What the integer ids mean, for the table layer (never needed by the kernel)."""

    modules: tuple[str, ...]
    states: tuple[str, ...]  # "module.state"
    state_names: tuple[str, ...]  # bare state names
    attributes: tuple[str, ...]
    conditions: tuple[str, ...]
    medications: tuple[str, ...]
    observables: tuple[str, ...]
    observable_units: tuple[str, ...]
    observable_categories: tuple[str, ...]
    codes: tuple[Code, ...]
    races: tuple[str, ...]
    ethnicities: tuple[str, ...]


class _Builder:
    """Accumulates flat tables while walking the modules."""

    def __init__(self, library: Library):
        self.library = library
        self.modules = [m for m in library.modules if m.states]
        self.state_index: dict[tuple[str, str], int] = {}
        for module in self.modules:
            for name in module.states:
                self.state_index[(module.name, name)] = len(self.state_index)
        self.attributes = _index(m.attributes for m in library.modules)
        self.conditions = _index(m.conditions for m in library.modules)
        self.medications = _index(m.medications for m in library.modules)
        self.observables = _index(m.observables for m in library.modules)
        self.races = [c.name for c in library.demographics.race]
        self.ethnicities = [c.name for c in library.demographics.ethnicity]
        self.codes: dict[tuple[str, str], int] = {}
        self.code_list: list[Code] = []
        self.t: dict[str, list] = {}

    def code(self, code: Code) -> int:
        key = (code.system, code.code)
        if key not in self.codes:
            self.codes[key] = len(self.code_list)
            self.code_list.append(code)
        return self.codes[key]

    def add(self, table: str, **columns: object) -> int:
        """Append one row to a flat table; return its index."""
        rows = self.t.setdefault(table, [])
        rows.append(columns)
        return len(rows) - 1

    def size(self, table: str) -> int:
        return len(self.t.get(table, []))

    def column(self, table: str, name: str, dtype: type) -> np.ndarray:
        values = [row[name] for row in self.t.get(table, [])]
        array = np.array(values, dtype=dtype) if values else np.zeros(0, dtype=dtype)
        array.setflags(write=False)
        return array

    # --- pieces ----------------------------------------------------------------------------------

    def distribution(self, dist: object) -> int:
        scale = DAYS_PER_UNIT[dist.unit] if dist.unit else 1.0  # type: ignore[attr-defined]
        if isinstance(dist, Exact):
            kind, a, b = D_EXACT, dist.value, 0.0
        elif isinstance(dist, Uniform):
            kind, a, b = D_UNIFORM, dist.low, dist.high
        elif isinstance(dist, Normal):
            kind, a, b = D_NORMAL, dist.mean, dist.sd
        elif isinstance(dist, Exponential):
            kind, a, b = D_EXPONENTIAL, dist.mean, 0.0
        elif isinstance(dist, LogNormal):
            kind, a, b = D_LOGNORMAL, math.log(dist.median), dist.sigma
        elif isinstance(dist, Gamma):
            kind, a, b = D_GAMMA, dist.shape, dist.scale
        else:  # pragma: no cover - the schema admits no other
            raise TypeError(type(dist))
        return self.add("dist", kind=kind, a=a, b=b, scale=scale)

    def curve(self, value: float | AgeCurve) -> int:
        if isinstance(value, AgeCurve):
            ages, male, female = value.ages, value.male, value.female
        else:
            ages, male, female = [0.0], [float(value)], [float(value)]
        start = self.size("curve")
        for age, m, f in zip(ages, male, female, strict=True):
            self.add("curve", age=age, male=m, female=f)
        return self.add("curves", start=start, n=len(ages))

    def guard(self, guard: object, module: DiseaseModule) -> int:
        start = self.size("ginst")
        self._emit_guard(guard, module)
        return self.add("guards", start=start, n=self.size("ginst") - start, module=self.modules.index(module))

    def _inst(self, op: int, i0: int = 0, cmp: str = "==", f0: float = 0.0) -> None:
        self.add("ginst", op=op, i0=i0, cmp=COMPARISONS.index(cmp), f0=f0)

    def _emit_guard(self, g: object, module: DiseaseModule) -> None:
        """Append guard g as postfix instructions: the parts of all/any/not first, then their combinator."""
        if isinstance(g, GuardAtom):
            for op, i0, cmp, f0 in GUARD_KINDS[type(g)].instructions(g, self, module.name):
                self._inst(op, i0, cmp, f0)
            return
        parts = g.parts()  # type: ignore[union-attr]
        for _, part in parts:
            self._emit_guard(part, module)
        if isinstance(g, NotGuard):
            self._inst(G_NOT)
        else:
            self._inst(G_AND if isinstance(g, AllGuard) else G_OR, len(parts))

    def eras(self, calendar: Calendar) -> None:
        """One row per code of the code table: its eras, newest first, each the code recorded from its start
        date (a step function of age) on; the alternatives are added to the code table (not dated there:
        they are recorded, never looked up)."""
        for code in list(self.code_list):
            start = self.size("era")
            for entry in calendar.eras(CODE_SYSTEMS[code.system], code.code):
                step_start = self.size("step")
                for age, day in entry.age_steps():
                    self.add("step", age=age, t=days_since_epoch(day))
                alternative = Code(system=SYSTEM_NAMES[entry.system], code=entry.code, display=entry.display)
                step_n = self.size("step") - step_start
                self.add("era", code=self.code(alternative), step_start=step_start, step_n=step_n)
            self.add("code_era", start=start, n=self.size("era") - start)
        while self.size("code_era") < len(self.code_list):
            self.add("code_era", start=self.size("era"), n=0)

    def kidney(self, obs: Observable, observables: dict[str, Observable]) -> tuple[int, int, float, int]:
        """How a kidney function observable is computed: (OBS_*, input, minimum age, first equation), its
        equations appended (the observable's own code's first)."""
        eq_start = self.size("eq")
        if obs.estimated is not None:
            own = [e for e in obs.estimated.equations if e.code == obs.code.code]
            for equation in own + [e for e in obs.estimated.equations if e.code != obs.code.code]:
                self.equation(equation, obs.code)
            creatinine = self.observables[obs.estimated.creatinine]
            return OBS_ESTIMATED, creatinine, obs.estimated.minimum_age_years, eq_start
        if obs.inverted is not None:
            estimate = observables[obs.inverted.estimate]
            if estimate.estimated is None:
                raise ValueError(f"inverted: '{obs.inverted.estimate}' is not an estimated observable")
            [own] = [e for e in estimate.estimated.equations if e.code == estimate.code.code]
            self.equation(own, estimate.code)
            return OBS_INVERTED, self.attributes[obs.inverted.attribute], 0.0, eq_start
        return OBS_MEASURED, -1, 0.0, eq_start

    def equation(self, eq: GfrEquation, reported: Code) -> None:
        """Append a GFR equation; its code is looked up in the code table by the reported code's system."""
        code = self.codes.get((reported.system, eq.code), -1)
        race = self.races.index(eq.race_factor.race) if eq.race_factor is not None else -1
        self.add(
            "eq",
            code=code,
            scale=eq.scale,
            kappa=(eq.kappa.male, eq.kappa.female),
            alpha=(eq.alpha.male, eq.alpha.female),
            above=eq.exponent_above,
            age_factor=eq.age_factor,
            age_power=eq.age_power,
            female=eq.female_factor,
            race=race,
            race_factor=eq.race_factor.factor if eq.race_factor is not None else 1.0,
        )

    def action(self, kind: int, target: int = -1, **operands: float) -> None:
        """Append an action: its kind, what it acts on, and the operands it uses by name (the act_* columns of
        CompiledModel); the others keep their defaults."""
        self.add("act", kind=kind, target=target, **(ACTION_DEFAULTS | operands))

    def state(self, module: DiseaseModule, state: State) -> None:
        act_start = self.size("act")
        if state.encounter is not None:
            enc = state.encounter
            duration = self.distribution(enc.duration) if enc.duration is not None else -1
            reason = self.conditions[enc.reason] if enc.reason is not None else -1
            encounter_class = ENCOUNTER_CLASSES.index(enc.encounter_class)
            self.action(A_ENC_START, encounter_class, code=self.code(enc.code), duration=duration, reason=reason)
        for setter in state.set:
            attr = self.attributes[setter.attribute]
            drift = math.nan if setter.per_year is None else setter.per_year
            settled = 0.0 if setter.per_year is None else drift  # `to` and `draw` stop a drift unless given one
            lag = setter.response_half_life_days or 0.0
            if setter.to is not None:
                self.action(A_SET_TO, attr, value=setter.to, drift_per_year=settled, half_life_days=lag)
            elif setter.add is not None:
                self.action(A_SET_ADD, attr, value=setter.add, drift_per_year=drift, half_life_days=lag)
            else:
                dist = self.distribution(setter.draw)
                self.action(A_SET_DRAW, attr, dist=dist, drift_per_year=settled, half_life_days=lag)
        for key, kind in (("onset", A_ONSET), ("diagnose", A_DIAGNOSE), ("resolve", A_RESOLVE)):
            for name in getattr(state, key):
                self.action(kind, self.conditions[name])
        for name in state.start_medication:
            self.action(A_MED_START, self.medications[name])
        for name in state.stop_medication:
            self.action(A_MED_STOP, self.medications[name])
        for code in state.procedure:
            self.action(A_PROCEDURE, self.code(code))
        for code in state.immunization:
            self.action(A_IMMUNIZATION, self.code(code))
        for name in state_observations(self.library, state):
            self.action(A_OBSERVE, self.observables[name])
        for symptom in state.symptom:
            self.action(A_SYMPTOM, self.code(symptom.code), dist=self.distribution(symptom.severity))
        if state.end_encounter:
            self.action(A_ENC_END)
        if state.death is not None:
            self.action(A_DEATH, self.code(state.death.cause))
        act_n = self.size("act") - act_start

        target = lambda name: self.state_index[(module.name, name)]  # noqa: E731
        exit_kind, nxt, sub_start, sub_n, band_start, band_n = X_TERMINAL, -1, 0, 0, 0, 0
        if state.next is not None:
            exit_kind, nxt = X_NEXT, target(state.next)
        elif state.branches is not None:
            exit_kind, sub_start, sub_n = X_BRANCHES, self.size("branch"), len(state.branches)
            for branch in state.branches:
                self.add("branch", prob=branch.probability, to=target(branch.to))
        elif state.cases is not None:
            exit_kind, sub_start, sub_n = X_CASES, self.size("case"), len(state.cases)
            guards = [self.guard(case.when, module) for case in state.cases]
            for case, guard in zip(state.cases, guards, strict=True):
                self.add("case", guard=guard, to=target(case.to))
            nxt = target(state.otherwise) if state.otherwise is not None else -1
        elif state.hazards is not None:
            exit_kind, sub_n = X_HAZARDS, len(state.hazards)
            edges = sorted(
                {
                    0.0,
                    *(a for h in state.hazards if isinstance(h.rate_per_year, RateTable) for a in h.rate_per_year.ages),
                }
            )
            band_start, band_n = self.size("edge"), len(edges)
            for edge in edges:
                self.add("edge", age=edge)
            ratios = [[(self.guard(r.when, module), r.ratio) for r in h.hazard_ratios] for h in state.hazards]
            sub_start = self.size("hazard")
            for hazard, hazard_ratios in zip(state.hazards, ratios, strict=True):
                ratio_start = self.size("ratio")
                for guard, value in hazard_ratios:
                    self.add("ratio", guard=guard, value=value)
                rate_start = self.size("rate")
                for edge in edges:
                    self.add(
                        "rate",
                        male=_rate_at(hazard.rate_per_year, "male", edge),
                        female=_rate_at(hazard.rate_per_year, "female", edge),
                    )
                self.add(
                    "hazard",
                    to=target(hazard.to),
                    rate_start=rate_start,
                    ratio_start=ratio_start,
                    ratio_n=len(hazard_ratios),
                )
        delay = self.distribution(state.after) if state.after is not None else -1
        self.add(
            "state",
            module=self.modules.index(module),
            act_start=act_start,
            act_n=act_n,
            exit=exit_kind,
            delay=delay,
            wait_wellness=state.wait_for == "wellness",
            clinic=is_clinic_visit(self.library, state),
            hours=start_hours(self.library, module, state),
            ends=state.end_encounter,
            next=nxt,
            sub_start=sub_start,
            sub_n=sub_n,
            band_start=band_start,
            band_n=band_n,
        )


def start_observations(library: Library, encounter_class: str) -> list[str]:
    """Observables recorded at the start of every encounter of a class: the modules' `observe_at_start`, in
    library order, each once."""
    names = [name for m in library.modules for name in m.observe_at_start.get(encounter_class, [])]
    return list(dict.fromkeys(names))


def start_labs(library: Library, encounter_class: str) -> list[str]:
    """Observables measured once at the start of every encounter of a class (the modules' `labs_at_start`, in
    library order, each once), never repeated on its rounds."""
    names = [name for m in library.modules for name in m.labs_at_start.get(encounter_class, [])]
    return list(dict.fromkeys(names))


def admission_observations(library: Library) -> list[str]:
    """What the admission of a terminal stay records, in order: an inpatient start's observations, then its
    labs (each once)."""
    return list(dict.fromkeys([*start_observations(library, "inpatient"), *start_labs(library, "inpatient")]))


def _deterioration(deteriorate: Deterioration | None, observables: dict[str, int]) -> dict[str, object]:
    """The per-observable shifts at death of a terminal stay's readings (by observable index) and their window
    in days (mortality.in_hospital.deteriorate); names no loaded module declares are skipped."""
    shift = np.zeros(len(observables), np.float64)
    for name, size in (deteriorate.shifts if deteriorate is not None else {}).items():
        if name in observables:
            shift[observables[name]] = size
    return {
        "dying_shift": _frozen(shift.tolist(), np.float64),
        "dying_window": deteriorate.window_hours / 24.0 if deteriorate is not None else np.inf,
    }


def state_observations(library: Library, state: State) -> list[str]:
    """What entering a state observes, in order: what the start of the encounter it starts records (its
    `observe_at_start`, then its `labs_at_start`, less what the state observes itself), then the state's own
    `observe`."""
    if state.encounter is None:
        return list(state.observe)
    encounter_class = state.encounter.encounter_class
    at_start = dict.fromkeys([*start_observations(library, encounter_class), *start_labs(library, encounter_class)])
    return [*(name for name in at_start if name not in state.observe), *state.observe]


def round_interval_days(library: Library, encounter_class: str) -> float:
    """Days between repeats of a class's start observations while an encounter stays open (the modules'
    shortest `observe_every_hours`; inf: none, or nothing to repeat)."""
    hours = [m.observe_every_hours.get(encounter_class, math.inf) for m in library.modules]
    if not start_observations(library, encounter_class):
        return math.inf
    return min(hours, default=math.inf) / 24.0


def is_clinic_visit(library: Library, state: State) -> bool:
    """Whether the state starts an encounter of a class that clinics see only in their hours."""
    hours = library.providers.clinic_hours
    return state.encounter is not None and state.encounter.encounter_class in hours.encounter_classes


def start_hours(library: Library, module: DiseaseModule, state: State) -> int:
    """Index of the encounter_hours rule that times a state entered after a wait (-1: none): the rule for
    the start of an encounter the state starts, or that a state it leads to at once (by next, branches or
    cases, with no wait between) starts, so that an illness whose onset goes straight to the emergency
    department has its onset, not only its arrival, at the drawn time; the lowest such rule if several."""
    providers, found, seen, todo = library.providers, set(), set(), [state]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        encounter = current.encounter
        if encounter is not None and (rule := providers.hours_of(encounter.encounter_class, "start")) is not None:
            found.add(providers.encounter_hours.index(rule))
        if current.after is None and current.hazards is None and current.wait_for is None:
            targets = [current.next, current.otherwise, *(b.to for b in current.branches or [])]
            todo += [module.states[t] for t in [*targets, *(c.to for c in current.cases or [])] if t is not None]
    return min(found, default=-1)


def end_hours(library: Library, encounter_class: str) -> int:
    """Index of the encounter_hours rule for when an encounter of the class ends (-1: none)."""
    rule = library.providers.hours_of(encounter_class, "end")
    return -1 if rule is None else library.providers.encounter_hours.index(rule)


def hour_blocks(hours: EncounterHours) -> list[tuple[float, float, float]]:
    """A rule's blocks with a share, as (start, length, cumulative share) in fractions of a day and of one."""
    total = sum(block.percent for block in hours.blocks)
    blocks, cum = [], 0.0
    for block in hours.blocks:
        if block.percent > 0:
            start, length = block.span_minutes()
            cum += block.percent / total
            blocks.append((start / MINUTES_PER_DAY, length / MINUTES_PER_DAY, cum))
    return blocks


def _index(mappings: object) -> dict[str, int]:
    out: dict[str, int] = {}
    for mapping in mappings:  # type: ignore[attr-defined]
        for name in mapping:
            out.setdefault(name, len(out))
    return out


def _rate_at(rate: float | RateTable, sex: str, age: float) -> float:
    """The rate of a hazard in the band that starts at `age` (zero before its first band)."""
    if not isinstance(rate, RateTable):
        return float(rate)
    values = getattr(rate, sex)
    current = 0.0
    for lower, value in zip(rate.ages, values, strict=True):
        if lower <= age:
            current = value
    return current


def module_stream(name: str) -> int:
    """The random stream a module draws from: fixed by its name, so that adding, removing or changing
    another module leaves this module's draws as they were (common random numbers)."""
    return FIRST_MODULE_STREAM + zlib.crc32(name.encode())


def compile_library(library: Library) -> tuple[CompiledModel, Names]:
    """Validated library -> (arrays for the kernel, names for the tables)."""
    b = _Builder(library)
    for module in b.modules:
        for state in module.states.values():
            b.state(module, state)

    attr_all = {n: a for m in library.modules for n, a in m.attributes.items()}
    cond_all = {n: c for m in library.modules for n, c in m.conditions.items()}
    med_all = {n: d for m in library.modules for n, d in m.medications.items()}
    obs_all = {n: o for m in library.modules for n, o in m.observables.items()}
    effects: dict[str, list[tuple[int, float]]] = {name: [] for name in obs_all}
    for attr_name, attribute in attr_all.items():
        for obs_name, coef in attribute.affects.items():
            effects[obs_name].append((b.attributes[attr_name], coef))
    for name, obs in obs_all.items():
        effect_start = b.size("effect")
        for attr, coef in effects[name]:
            b.add("effect", attr=attr, coef=coef)
        derived_start = b.size("factor")
        if obs.derived is not None:
            for factor, power in obs.derived.terms().items():
                b.add("factor", obs=b.observables[factor], power=power)
        low, high = obs.limits if obs.limits is not None else (-math.inf, math.inf)
        b.add(
            "obs",
            code=b.code(obs.code),
            mean=b.curve(obs.mean) if obs.mean is not None else -1,
            sd=b.curve(obs.sd),
            persistence=obs.persistence,
            low=low,
            high=high,
            decimals=obs.decimals,
            effect_start=effect_start,
            effect_n=len(effects[name]),
            derived_start=derived_start,
            derived_n=b.size("factor") - derived_start,
            derived_scale=obs.derived.scale if obs.derived is not None else 1.0,
            derived_sum=obs.derived is not None and obs.derived.sum is not None,
            correlation_days=obs.correlation_days or 0.0,
            measurement_sd=obs.measurement_sd if obs.measurement_sd is not None else math.nan,
            half_life_days=obs.response_half_life_days or 0.0,
        )
    cond_codes = [b.code(c.code) for c in cond_all.values()]
    med_codes = [b.code(d.code) for d in med_all.values()]
    death_code = b.code(library.mortality.cause)
    in_hospital = library.mortality.in_hospital
    terminal_stay = b.distribution(in_hospital.stay) if in_hospital is not None else -1
    terminal_code = b.code(in_hospital.encounter) if in_hospital is not None else -1
    b.eras(library.calendar)
    for obs in obs_all.values():
        kind, source, min_age, eq_start = b.kidney(obs, obs_all)
        b.add("kidney", kind=kind, input=source, min_age=min_age, eq_start=eq_start, eq_n=b.size("eq") - eq_start)

    i32, i8, f8 = np.int32, np.int8, np.float64
    hours = library.providers.clinic_hours
    rule_blocks = [hour_blocks(rule) for rule in library.providers.encounter_hours]
    blocks = [block for rule in rule_blocks for block in rule]
    at_start = [[b.observables[name] for name in start_observations(library, c)] for c in ENCOUNTER_CLASSES]
    ginst_op, ginst_i0 = b.column("ginst", "op", i8), b.column("ginst", "i0", i32)
    ginst_module = np.repeat(b.column("guards", "module", i32), b.column("guards", "n", i32))
    readers = functools.partial(_readers, ginst_op, ginst_i0, ginst_module, len(b.modules))
    hazard_to, n_states = b.column("hazard", "to", i32), len(b.state_index)
    model = CompiledModel(
        module_start=_frozen([b.state_index[(m.name, m.start)] for m in b.modules], i32),
        module_stream=_frozen([module_stream(m.name) for m in b.modules], np.int64),
        state_module=b.column("state", "module", i32),
        state_act_start=b.column("state", "act_start", i32),
        state_act_n=b.column("state", "act_n", i32),
        state_exit=b.column("state", "exit", i8),
        state_delay=b.column("state", "delay", i32),
        state_wait_wellness=b.column("state", "wait_wellness", np.bool_),
        state_next=b.column("state", "next", i32),
        state_sub_start=b.column("state", "sub_start", i32),
        state_sub_n=b.column("state", "sub_n", i32),
        state_band_start=b.column("state", "band_start", i32),
        state_band_n=b.column("state", "band_n", i32),
        act_kind=b.column("act", "kind", i8),
        act_target=b.column("act", "target", i32),
        act_code=b.column("act", "code", i32),
        act_dist=b.column("act", "dist", i32),
        act_duration=b.column("act", "duration", i32),
        act_reason=b.column("act", "reason", i32),
        act_value=b.column("act", "value", f8),
        act_drift_per_year=b.column("act", "drift_per_year", f8),
        act_half_life_days=b.column("act", "half_life_days", f8),
        branch_prob=b.column("branch", "prob", f8),
        branch_to=b.column("branch", "to", i32),
        case_guard=b.column("case", "guard", i32),
        case_to=b.column("case", "to", i32),
        hazard_to=hazard_to,
        hazard_rate_start=b.column("hazard", "rate_start", i32),
        hazard_ratio_start=b.column("hazard", "ratio_start", i32),
        hazard_ratio_n=b.column("hazard", "ratio_n", i32),
        band_edge_years=b.column("edge", "age", f8),
        rate_male=b.column("rate", "male", f8),
        rate_female=b.column("rate", "female", f8),
        ratio_guard=b.column("ratio", "guard", i32),
        ratio_value=b.column("ratio", "value", f8),
        guard_start=b.column("guards", "start", i32),
        guard_n=b.column("guards", "n", i32),
        ginst_op=ginst_op,
        ginst_i0=ginst_i0,
        ginst_cmp=b.column("ginst", "cmp", i8),
        ginst_f0=b.column("ginst", "f0", f8),
        dist_kind=b.column("dist", "kind", i8),
        dist_a=b.column("dist", "a", f8),
        dist_b=b.column("dist", "b", f8),
        dist_scale=b.column("dist", "scale", f8),
        attr_initial=_frozen([a.initial for a in attr_all.values()], f8),
        cond_code=_frozen(cond_codes, i32),
        med_code=_frozen(med_codes, i32),
        obs_code=b.column("obs", "code", i32),
        obs_mean_start=b.column("obs", "mean", i32),
        obs_sd_start=b.column("obs", "sd", i32),
        obs_persistence=b.column("obs", "persistence", f8),
        obs_low=b.column("obs", "low", f8),
        obs_high=b.column("obs", "high", f8),
        obs_decimals=b.column("obs", "decimals", i32),
        obs_effect_start=b.column("obs", "effect_start", i32),
        obs_effect_n=b.column("obs", "effect_n", i32),
        effect_attr=b.column("effect", "attr", i32),
        effect_coef=b.column("effect", "coef", f8),
        obs_derived_start=b.column("obs", "derived_start", i32),
        obs_derived_n=b.column("obs", "derived_n", i32),
        obs_derived_scale=b.column("obs", "derived_scale", f8),
        obs_derived_sum=b.column("obs", "derived_sum", np.bool_),
        derived_obs=b.column("factor", "obs", i32),
        derived_power=b.column("factor", "power", f8),
        curve_start=b.column("curves", "start", i32),
        curve_n=b.column("curves", "n", i32),
        curve_age=b.column("curve", "age", f8),
        curve_male=b.column("curve", "male", f8),
        curve_female=b.column("curve", "female", f8),
        wellness_class=ENCOUNTER_CLASSES.index("wellness"),
        death_code=death_code,
        max_hazards=max([len(s.hazards or []) for m in b.modules for s in m.states.values()], default=0),
        attr_readers=readers((G_ATTR,), len(attr_all)),
        cond_readers=readers((G_COND_ACTIVE, G_COND_DIAGNOSED), len(cond_codes)),
        med_readers=readers((G_MED,), len(med_codes)),
        obs_readers=readers((G_OBS,), len(obs_all)),
        obs_correlation_days=b.column("obs", "correlation_days", f8),
        obs_measurement_sd=b.column("obs", "measurement_sd", f8),
        obs_half_life_days=b.column("obs", "half_life_days", f8),
        attr_lagged=_frozen(
            [any(obs_all[o].response_half_life_days is not None for o in a.affects) for a in attr_all.values()],
            np.bool_,
        ),
        **_death_causes(b, library.mortality.causes),
        terminal_share=in_hospital.share if in_hospital is not None else 0.0,
        terminal_stay=terminal_stay,
        terminal_code=terminal_code,
        terminal_class=ENCOUNTER_CLASSES.index("inpatient"),
        terminal_obs=_frozen([b.observables[name] for name in admission_observations(library)], i32),
        **_deterioration(in_hospital.deteriorate if in_hospital is not None else None, b.observables),
        cond_bg_hr=_frozen(_background_ratios(library, list(cond_all)), f8),
        state_clinic=b.column("state", "clinic", np.bool_),
        clinic_days=_frozen([day in hours.weekdays for day in WEEKDAYS], np.bool_),
        clinic_opens_days=hours.minutes(hours.opens) / MINUTES_PER_DAY,
        clinic_closes_days=hours.minutes(hours.closes) / MINUTES_PER_DAY,
        clinic_slot_days=hours.slot_minutes / MINUTES_PER_DAY,
        clinic_n_slots=-(-(hours.minutes(hours.closes) - hours.minutes(hours.opens)) // hours.slot_minutes),
        state_hours=b.column("state", "hours", i32),
        state_ends=b.column("state", "ends", np.bool_),
        class_end_hours=_frozen([end_hours(library, c) for c in ENCOUNTER_CLASSES], i32),
        hours_block_start=_frozen([sum(len(r) for r in rule_blocks[:k]) for k in range(len(rule_blocks))], i32),
        hours_block_n=_frozen([len(r) for r in rule_blocks], i32),
        block_from_days=_frozen([start for start, _, _ in blocks], f8),
        block_length_days=_frozen([length for _, length, _ in blocks], f8),
        block_cum=_frozen([cum for _, _, cum in blocks], f8),
        class_obs_start=_frozen(np.cumsum([0] + [len(o) for o in at_start[:-1]]).tolist(), i32),
        class_obs_n=_frozen([len(o) for o in at_start], i32),
        class_obs=_frozen([o for names in at_start for o in names], i32),
        class_round_days=_frozen([round_interval_days(library, c) for c in ENCOUNTER_CLASSES], f8),
        code_era_start=b.column("code_era", "start", i32),
        code_era_n=b.column("code_era", "n", i32),
        era_code=b.column("era", "code", i32),
        era_step_start=b.column("era", "step_start", i32),
        era_step_n=b.column("era", "step_n", i32),
        step_age=b.column("step", "age", f8),
        step_t=b.column("step", "t", f8),
        obs_kidney=b.column("kidney", "kind", i8),
        obs_kidney_input=b.column("kidney", "input", i32),
        obs_kidney_min_age=b.column("kidney", "min_age", f8),
        obs_eq_start=b.column("kidney", "eq_start", i32),
        obs_eq_n=b.column("kidney", "eq_n", i32),
        eq_code=b.column("eq", "code", i32),
        eq_scale=b.column("eq", "scale", f8),
        eq_kappa=_by_sex(b, "kappa"),
        eq_alpha=_by_sex(b, "alpha"),
        eq_above=b.column("eq", "above", f8),
        eq_age_factor=b.column("eq", "age_factor", f8),
        eq_age_power=b.column("eq", "age_power", f8),
        eq_female=b.column("eq", "female", f8),
        eq_race=b.column("eq", "race", i32),
        eq_race_factor=b.column("eq", "race_factor", f8),
        hazard_tilt=_frozen([1.0] * len(hazard_to), f8),
        hazard_window=_frozen([-1] * len(hazard_to), i32),
        state_tilted=_frozen([False] * n_states, np.bool_),
        state_force=_frozen([-1] * n_states, i32),
        state_force_window=_frozen([-1] * n_states, i32),
    )
    names = Names(
        modules=tuple(m.name for m in b.modules),
        states=tuple(f"{m}.{s}" for m, s in b.state_index),
        state_names=tuple(s for _, s in b.state_index),
        attributes=tuple(b.attributes),
        conditions=tuple(b.conditions),
        medications=tuple(b.medications),
        observables=tuple(b.observables),
        observable_units=tuple(o.unit for o in obs_all.values()),
        observable_categories=tuple(o.category for o in obs_all.values()),
        codes=tuple(b.code_list),
        races=tuple(b.races),
        ethnicities=tuple(b.ethnicities),
    )
    return model, names


def _death_causes(b: _Builder, causes: DeathCauses | None) -> dict[str, np.ndarray]:
    """The background-death cause table: codes, band starts, the first day each cause can be certified
    and, per sex, each band's deaths by cause (rows: bands, columns: causes); empty without a table."""
    rows = causes.causes if causes is not None else []
    out = {
        "death_cause_code": _frozen([b.code(c.code) for c in rows], np.int32),
        "death_cause_age": _frozen(causes.age if causes is not None else [], np.float64),
        "death_cause_since_t": _frozen([cause_since_t(c) for c in rows], np.float64),
    }
    for sex in ("male", "female"):
        deaths = np.array([getattr(c, sex) for c in rows], np.float64).T.reshape(len(out["death_cause_age"]), len(rows))
        deaths.setflags(write=False)
        out[f"death_cause_deaths_{sex}"] = deaths
    return out


def cause_since_t(cause: CauseOfDeath) -> float:
    """The first day (days since the epoch) a death can have this cause: 1 January of its `since` year."""
    return -math.inf if cause.since is None else float(days_since_epoch(date(cause.since, 1, 1)))


def _background_ratios(library: Library, conditions: list[str]) -> list[float]:
    """Each condition's hazard ratio on background death (the product of the entries naming it; 1: none)."""
    ratios = dict.fromkeys(conditions, 1.0)
    for entry in library.mortality.hazard_ratios:
        for name in entry.conditions:
            if name in ratios:
                ratios[name] *= entry.hazard_ratio
    return list(ratios.values())


def _readers(
    op: np.ndarray, i0: np.ndarray, module: np.ndarray, n_modules: int, kinds: tuple[int, ...], n: int
) -> np.ndarray:
    """bool[n, n_modules]: which modules have a guard instruction of these kinds reading each index
    (`module`: the module of each instruction's guard)."""
    flags = np.zeros((n, n_modules), np.bool_)
    read = np.isin(op, kinds)
    flags[i0[read], module[read]] = True
    flags.setflags(write=False)
    return flags


def _by_sex(b: _Builder, name: str) -> np.ndarray:
    """float64[n_equations, 2]: an equation column given for each sex (male, female)."""
    array = np.array([row[name] for row in b.t.get("eq", [])], dtype=np.float64).reshape(-1, 2)
    array.setflags(write=False)
    return array


def _frozen(values: list, dtype: type) -> np.ndarray:
    array = np.array(values, dtype=dtype) if values else np.zeros(0, dtype=dtype)
    array.setflags(write=False)
    return array
