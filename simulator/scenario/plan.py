"""A scenario file checked against a library and turned into what the engine runs: the compiled model with
its tilted hazards and forced branches, each patient's windows (years of age), the demographic share the
patients are drawn from, and the test of a history against the scenario's requirements.

Every name in the file is checked here, each error located as file:line:col like a module file's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator.days import DAYS_PER_YEAR
from simulator.engine import codes
from simulator.engine.compiler import CompiledModel, Names
from simulator.engine.kernel import Events
from simulator.engine.people import (
    People,
    PeopleTables,
    build_people_tables,
    cumulative_at,
    module_hazard,
    reference_date_of,
)
from simulator.engine.reference import Conditioning
from simulator.engine.run import LIFETIME_HORIZON_YEARS
from simulator.model.library import Library
from simulator.model.messiness import PROFILES
from simulator.model.parsing import LoadError, Located, Problem, parse_yaml, suggest, validate
from simulator.model.schema import ENCOUNTER_CLASSES, Hazard, RateTable
from simulator.scenario.schema import Scenario, Window

AUTO_EVENTS = 3.0  # expected events of a tilt without a factor inside its window: at least one with probability ~95%
MAX_FACTOR = 1e6  # the largest tilt factor (as the file's)


@dataclass(frozen=True)
class Plan:
    """A checked scenario: `model` is the library's compiled model with the scenario's tilts and forced
    branches, whose windows are `windows` (the distinct windows of `force` and `tilt`, in order);
    `conditioning` says the same to the reference."""

    scenario: Scenario
    file: str
    model: CompiledModel
    names: Names
    windows: tuple[Window, ...]
    conditioning: Conditioning
    factors: tuple[float, ...]  # of each tilt, computed where the file gives none (auto_factor)
    # population mode: the hazard the life tables leave to the modules, by sex (cumulative at whole ages, and
    # past the table: simulator.engine.people.module_hazard); None in lifetime mode
    module_hazard: tuple[np.ndarray, np.ndarray] | None = None

    def window_ages(self, people: People, t_end: np.ndarray) -> np.ndarray:
        """float64[n, n_windows, 2]: each patient's windows, [from, to) in years of age."""
        return np.stack([window_ages(w, people.birth_t, t_end) for w in self.windows], axis=1).reshape(
            len(t_end), len(self.windows), 2
        )

    def demographic_share(self, tables: PeopleTables) -> float:
        """The share of the unconditioned population whose sex, age at the end, race and ethnicity are inside
        `who` (patients are drawn from these alone; each weight carries the share)."""
        who = self.scenario.who
        share = float(who_cells(self.scenario, tables)[2].sum())
        for chosen, cdf, labels in (
            (who.race, tables.race_cdf, self.names.races),
            (who.ethnicity, tables.ethnicity_cdf, self.names.ethnicities),
        ):
            if chosen is not None:
                shares = np.diff(cdf, prepend=0.0)
                share *= float(sum(shares[labels.index(name)] for name in chosen))
        return share

    def log_survival(self, people: People, t_end: np.ndarray) -> np.ndarray:
        """float64[n]: the log of the chance that no module ends a life of each one's sex before their age at
        the end, from the life tables the modules' deaths were fitted to (0 in lifetime mode). A plain
        population run lives a life a module ends again until one reaches the end date, so each sex and age
        holds its survivors as if every life survived: a history's weight is divided by this chance."""
        if self.module_hazard is None:
            return np.zeros(len(t_end))
        cum, tails = self.module_hazard
        age = (t_end - people.birth_t) / DAYS_PER_YEAR
        return -np.array([cumulative_at(cum[s], tails[s], a) for s, a in zip(people.sex, age, strict=True)])

    def in_who(self, people: People) -> np.ndarray:
        """bool[n]: the people whose sex, age at the end, race and ethnicity are inside `who`."""
        who, names = self.scenario.who, self.names
        keep = np.ones(len(people.index), bool)
        if who.sex is not None:
            keep &= np.isin(people.sex, [("male", "female").index(s) for s in who.sex])
        if who.race is not None:
            keep &= np.isin(people.race, [names.races.index(r) for r in who.race])
        if who.ethnicity is not None:
            keep &= np.isin(people.ethnicity, [names.ethnicities.index(e) for e in who.ethnicity])
        return keep

    def in_who_age(self, people: People, t_end: np.ndarray) -> np.ndarray:
        """bool[n]: age at the end of the record inside `who.age_at_end` (population mode)."""
        band = self.scenario.who.age_at_end
        if band is None:
            return np.ones(len(t_end), bool)
        age = (t_end - people.birth_t) / DAYS_PER_YEAR
        return (age >= band.min) & (age < band.max)

    def satisfied(self, events: Events, patient_row: np.ndarray, people: People, t_end: np.ndarray) -> np.ndarray:
        """bool[n]: the histories that hold everything the scenario asks (read from their events, as a record
        would show them): its conditions, each requirement at least `at_least` times in its window (in
        order, each after the previous one was met, with `in_order`), and, in population mode, alive at the
        end of the record or dead in its last `decedent_years`."""
        n = len(t_end)
        scenario, names = self.scenario, self.names
        ok = np.ones(n, bool)
        onset = events.kind == codes.K_ONSET
        for name in scenario.who.conditions.required:
            ok &= _count(onset & (events.subject == names.conditions.index(name)), patient_row, n) > 0
        for name in scenario.who.conditions.excluded:
            ok &= _count(onset & (events.subject == names.conditions.index(name)), patient_row, n) == 0
        if scenario.mode == "population":  # alive at the end, or dead inside the decedent window
            since = t_end - scenario.decedent_years * DAYS_PER_YEAR
            ok &= _count((events.kind == codes.K_DEATH) & (events.t < since[patient_row]), patient_row, n) == 0
        age = (events.t - people.birth_t[patient_row]) / DAYS_PER_YEAR
        after = np.full(n, -np.inf)
        closing = closing_events(events, patient_row, n)
        for requirement in scenario.require:
            match = self.requirement_events(requirement, events) & ~closing
            window = window_ages(requirement.window, people.birth_t, t_end)
            match &= (age >= window[patient_row, 0]) & (age < window[patient_row, 1])
            if scenario.in_order:
                match &= events.t > after[patient_row]
            met_t = _nth_time(match, events.t, patient_row, n, requirement.at_least)
            ok &= met_t < np.inf
            after = met_t
        return ok

    def requirement_events(self, requirement: object, events: Events) -> np.ndarray:
        """bool[n_events]: the events that show the requirement (in any window)."""
        names = self.names
        if requirement.state is not None:  # type: ignore[attr-defined]
            state = names.states.index(f"{requirement.module}.{requirement.state}")  # type: ignore[attr-defined]
            return events.state == state
        if requirement.condition is not None:  # type: ignore[attr-defined]
            condition = names.conditions.index(requirement.condition)  # type: ignore[attr-defined]
            return (events.kind == codes.K_ONSET) & (events.subject == condition)
        if requirement.encounter_class is not None:  # type: ignore[attr-defined]
            klass = ENCOUNTER_CLASSES.index(requirement.encounter_class)  # type: ignore[attr-defined]
            return (events.kind == codes.K_ENCOUNTER_START) & (events.subject == klass)
        observable = names.observables.index(requirement.observation)  # type: ignore[attr-defined]
        match = (events.kind == codes.K_OBSERVATION) & (events.subject == observable)
        if requirement.above is not None:  # type: ignore[attr-defined]
            return match & (events.value > requirement.above)  # type: ignore[attr-defined]
        return match & (events.value < requirement.below)  # type: ignore[attr-defined]


def closing_events(events: Events, patient_row: np.ndarray, n: int) -> np.ndarray:
    """bool[n_events]: events that close what a state opened rather than show it entered: encounter ends, and
    the medication stops a death records (tagged with the state that started each course, years before)."""
    death_t = _nth_time(events.kind == codes.K_DEATH, events.t, patient_row, n, 1)
    stopped_at_death = (events.kind == codes.K_MED_STOP) & (events.t == death_t[patient_row])
    return (events.kind == codes.K_ENCOUNTER_END) | stopped_at_death


def who_cells(scenario: Scenario, tables: PeopleTables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The unconditioned population inside `who`'s sex and age at the end, as cells: sex (0 male, 1 female),
    age at the end (years; the middle of the part of the one-year band inside `who`, the lifetime horizon in
    lifetime mode) and share of the population."""
    who = scenario.who
    n_ages = len(tables.age_sex_cdf) // 2
    cells = np.diff(tables.age_sex_cdf, prepend=0.0).reshape(2, n_ages)
    sexes = [0, 1] if who.sex is None else [("male", "female").index(s) for s in who.sex]
    if scenario.mode == "lifetime":
        male = tables.age_sex_cdf[0] / (tables.age_sex_cdf[0] + cells[1, 0])
        return (
            np.array(sexes),
            np.full(len(sexes), LIFETIME_HORIZON_YEARS),
            np.array([(male, 1 - male)[s] for s in sexes]),
        )
    low, high = (0.0, math.inf) if who.age_at_end is None else (who.age_at_end.min, who.age_at_end.max)
    ages = np.arange(n_ages, dtype=float)
    from_, to = np.maximum(ages, low), np.minimum(ages + 1, high)
    overlap = np.clip(to - from_, 0.0, 1.0)
    sex = np.repeat(sexes, n_ages)
    return sex, np.tile((from_ + to) / 2, len(sexes)), np.concatenate([cells[s] * overlap for s in sexes])


def auto_factor(scenario: Scenario, hazard: Hazard, window: Window, tables: PeopleTables) -> float:
    """The tilt factor that makes the hazard's expected number of events inside `window` AUTO_EVENTS, on
    average over the patients of `who` who sit in its state throughout the window (its rate by age and sex,
    without hazard ratios): at least one event then has probability about 1 - exp(-AUTO_EVENTS). The factor
    is a constant of the model, so the weights stay exact likelihood ratios; never below 1."""
    sex, end_age, share = who_cells(scenario, tables)
    low = np.full(len(end_age), 0.0 if window.age is None else window.age.min)
    high = end_age if window.age is None else np.minimum(end_age, window.age.max)
    if window.years_before_end is not None:
        low = np.maximum(low, end_age - window.years_before_end)
    rate = hazard.rate_per_year
    if isinstance(rate, RateTable):
        edges = np.array([*rate.ages, math.inf])
        values = np.array([rate.male, rate.female])[sex]  # [cell, band]
        span = np.clip(np.minimum(high[:, None], edges[1:]) - np.maximum(low[:, None], edges[:-1]), 0.0, None)
        expected = (values * span).sum(axis=1)
    else:
        expected = rate * np.clip(high - low, 0.0, None)
    mean = float((expected * share).sum() / share.sum()) if share.sum() > 0 else 0.0
    return 1.0 if mean <= 0.0 else float(np.clip(AUTO_EVENTS / mean, 1.0, MAX_FACTOR))


def window_ages(window: Window, birth_t: np.ndarray, t_end: np.ndarray) -> np.ndarray:
    """float64[n, 2]: a window as [from, to) in years of age of each patient (empty: from >= to)."""
    end_age = (t_end - birth_t) / DAYS_PER_YEAR
    low = np.zeros(len(t_end)) if window.age is None else np.full(len(t_end), window.age.min)
    high = end_age.copy() if window.age is None else np.minimum(end_age, window.age.max)
    if window.years_before_end is not None:
        low = np.maximum(low, end_age - window.years_before_end)
    return np.stack([low, high], axis=1)


def _count(mask: np.ndarray, patient_row: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(patient_row[mask], minlength=n)


def _nth_time(mask: np.ndarray, t: np.ndarray, patient_row: np.ndarray, n: int, nth: int) -> np.ndarray:
    """float64[n]: the time of each patient's nth event of `mask` (events in patient then time order; inf:
    fewer)."""
    rows, times = patient_row[mask], t[mask]
    first = np.searchsorted(rows, np.arange(n))
    counts = np.bincount(rows, minlength=n)
    out = np.full(n, np.inf)
    has = counts >= nth
    out[has] = times[first[has] + nth - 1]
    return out


def load_plan(path: str | Path, library: Library, model: CompiledModel, names: Names) -> Plan:
    """Read and check a scenario file against a library compiled as `model` (LoadError: every problem, located)."""
    doc = parse_yaml(Path(path))
    scenario = validate(doc, Scenario)
    problems = _name_problems(doc, scenario, library, names)
    if problems:
        raise LoadError(problems)
    tables = build_people_tables(library, reference_date_of(library))  # the pyramid of the auto tilt factors
    return _plan(doc.file, scenario, library, model, names, tables)


def _name_problems(doc: Located, scenario: Scenario, library: Library, names: Names) -> list[Problem]:
    problems: list[Problem] = []
    modules = {m.name: m for m in library.modules if m.states}
    state_index = {name: k for k, name in enumerate(names.states)}

    def need(value: str, valid: list[str] | tuple[str, ...], path: tuple, what: str, of: str = "") -> bool:
        if value in valid:
            return True
        problems.append(doc.problem(path, f"unknown {what} '{value}'{of}{suggest(value, list(valid))}"))
        return False

    def module_state(entry: object, path: tuple) -> object | None:
        if not need(entry.module, list(modules), (*path, "module"), "module"):  # type: ignore[attr-defined]
            return None
        states = modules[entry.module].states  # type: ignore[attr-defined]
        if not need(entry.state, list(states), (*path, "state"), "state", f" of {entry.module}"):  # type: ignore[attr-defined]
            return None
        return states[entry.state]  # type: ignore[attr-defined]

    who = scenario.who
    for key, chosen, valid in (("race", who.race, names.races), ("ethnicity", who.ethnicity, names.ethnicities)):
        for k, name in enumerate(chosen or []):
            need(name, valid, ("who", key, k), key)
    for key in ("required", "excluded"):
        for k, name in enumerate(getattr(who.conditions, key)):
            need(name, names.conditions, ("who", "conditions", key, k), "condition")
    lifetime = scenario.mode == "lifetime"
    if lifetime and who.age_at_end is not None:
        problems.append(doc.problem(("who", "age_at_end"), "a lifetime run has no age at the end: ask an age window"))
    if lifetime and scenario.decedent_years:
        problems.append(doc.problem(("decedent_years",), "a lifetime run follows every life to its death: give none"))
    windows: list[tuple[tuple, Window]] = []
    for k, requirement in enumerate(scenario.require):
        path = ("require", k)
        windows.append(((*path, "window"), requirement.window))
        if requirement.state is not None and (state := module_state(requirement, path)) is not None:
            s = state_index[f"{requirement.module}.{requirement.state}"]
            if not _records(s, names, library):
                message = "records nothing (no encounter, condition, medication, procedure or observation): ask "
                problems.append(doc.problem((*path, "state"), message + "for a state that does"))
        if requirement.condition is not None:
            need(requirement.condition, names.conditions, (*path, "condition"), "condition")
        if requirement.observation is not None:
            need(requirement.observation, names.observables, (*path, "observation"), "observable")
    for k, forced in enumerate(scenario.force):
        path = ("force", k)
        windows.append(((*path, "window"), forced.window))
        if (state := module_state(forced, path)) is not None:
            if state.branches is None:  # type: ignore[attr-defined]
                problems.append(doc.problem((*path, "state"), "has no branches to force"))
            else:
                need(forced.to, [b.to for b in state.branches], (*path, "to"), "branch target")  # type: ignore[attr-defined]
    for k, tilt in enumerate(scenario.tilt):
        path = ("tilt", k)
        windows.append(((*path, "window"), tilt.window))
        if (state := module_state(tilt, path)) is not None:
            if state.hazards is None:  # type: ignore[attr-defined]
                problems.append(doc.problem((*path, "state"), "has no hazards to tilt"))
            else:
                need(tilt.to, [h.to for h in state.hazards], (*path, "to"), "hazard target")  # type: ignore[attr-defined]
    for path, window in windows:
        if lifetime and window.years_before_end is not None:
            message = "a lifetime run ends at death, which is not known ahead: give an age window"
            problems.append(doc.problem((*path, "years_before_end"), message))
    seen = set()
    for k, entry in enumerate([*scenario.force, *scenario.tilt]):
        key = (
            type(entry).__name__,
            entry.module,
            entry.state,
            getattr(entry, "to", None) if k >= len(scenario.force) else None,
        )
        if key in seen:
            where = ("force", k) if k < len(scenario.force) else ("tilt", k - len(scenario.force))
            problems.append(doc.problem(where, "the same branch or hazard is changed twice"))
        seen.add(key)
    known = set(library.streams.settings)
    for k, setting in enumerate(scenario.streams.settings):
        if setting not in known:
            hint = suggest(setting, sorted(known))
            problems.append(doc.problem(("streams", "settings", k), f"unknown setting '{setting}'{hint}"))
    if scenario.messiness not in PROFILES:
        what = f"'{scenario.messiness}': one of {', '.join(PROFILES)} (a profile file is given with --messiness)"
        problems.append(doc.problem(("messiness",), what))
    return problems


def _records(state: int, names: Names, library: Library) -> bool:
    """Whether the state's actions record something (an event carries the state)."""
    module_name, state_name = names.states[state].split(".", 1)
    module = next(m for m in library.modules if m.name == module_name)
    entered = module.states[state_name]
    fields = ("onset", "diagnose", "resolve", "start_medication", "stop_medication", "procedure", "immunization")
    recorded = any(getattr(entered, f) for f in (*fields, "observe", "symptom"))
    return recorded or entered.encounter is not None or entered.death is not None


def _plan(
    file: str, scenario: Scenario, library: Library, model: CompiledModel, names: Names, tables: PeopleTables
) -> Plan:
    """The compiled model with the scenario's changes (a forced branch or a tilt per (module, state))."""
    windows: list[Window] = []

    def window_of(window: Window) -> int:
        if window.age is None and window.years_before_end is None:
            return -1
        if window not in windows:
            windows.append(window)
        return windows.index(window)

    modules = {m.name: m for m in library.modules}
    state_index = {name: k for k, name in enumerate(names.states)}
    tilt_factor, tilt_window = model.hazard_tilt.copy(), model.hazard_window.copy()
    tilted, force, force_window = model.state_tilted.copy(), model.state_force.copy(), model.state_force_window.copy()
    tilts: dict[tuple[str, str, int], tuple[float, int]] = {}
    forced: dict[tuple[str, str], tuple[int, int]] = {}
    factors = []
    for entry in scenario.tilt:
        s = state_index[f"{entry.module}.{entry.state}"]
        hazards = modules[entry.module].states[entry.state].hazards or []
        k = [h.to for h in hazards].index(entry.to)
        factor = auto_factor(scenario, hazards[k], entry.window, tables) if entry.factor is None else entry.factor
        factors.append(factor)
        w = window_of(entry.window)
        h = model.state_sub_start[s] + k
        tilt_factor[h], tilt_window[h], tilted[s] = factor, w, True
        tilts[(entry.module, entry.state, k)] = (factor, w)
    for entry in scenario.force:
        s = state_index[f"{entry.module}.{entry.state}"]
        k = [b.to for b in modules[entry.module].states[entry.state].branches or []].index(entry.to)
        w = window_of(entry.window)
        force[s], force_window[s] = model.state_sub_start[s] + k, w
        forced[(entry.module, entry.state)] = (k, w)
    for array in (tilt_factor, tilt_window, tilted, force, force_window):
        array.setflags(write=False)  # as the compiler leaves them: the kernel compiled for them runs
    changed = model._replace(
        hazard_tilt=tilt_factor,
        hazard_window=tilt_window,
        state_tilted=tilted,
        state_force=force,
        state_force_window=force_window,
    )
    hazard = module_hazard(library) if scenario.mode == "population" else None
    return Plan(scenario, file, changed, names, tuple(windows), Conditioning(tilts, forced), tuple(factors), hazard)
