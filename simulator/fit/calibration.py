"""Free parameters of modules, fitted to the targets with the kernel alone under common random numbers.

A declaration, rules/targets/calibration/<module>.yaml, names the module's free parameters (paths into
the module file, a multiplier `scale` or an absolute `value`, with bounds; a multiplier `over` another
parameter scales the number that one sets) and the targets they answer to (patterns over target
ids). `ehrsim calibrate` fits them with scipy.optimize.least_squares on standardized errors and writes
<module>.fitted.yaml beside the declaration: the fitted numbers by path, with the targets, the loss
before and after and the date. load_library applies fitted files while loading, so the fitted values
ship as data and the module files keep their sourced values.

Modules whose guards read another module's conditions, attributes, medications or observables,
or whose attributes shift another module's observables, depend on it; declared modules that depend
on each other are fitted together. An evaluation simulates the modules the fitted ones can see
(`ensemble_for`); the others change them only through who dies of their causes, and leaving them
out makes the asthma fit five times cheaper. A parameter may name the targets it mainly moves
(default: its declaration's): the first, finite-difference Jacobian takes it as zero elsewhere and
steps parameters that move disjoint targets in one simulation; later steps update that Jacobian
from the step taken (sparse Broyden, the same zeros), so a step after the first costs one simulation.
The optimizer works in units of each parameter's difference step, so that its first trust region is
about as wide as the steps the Jacobian was differenced over. A fit may move only some of the declared
parameters (`--params`), the others held at their current values, and answer to only some of the
declared targets (`--targets`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import io
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq

from simulator.days import DAYS_PER_YEAR
from simulator.errors import ConfigError
from simulator.files import write_all
from simulator.fit.cohort import Vocabulary, needs_of
from simulator.fit.statistics import Z95, Comparison, compare
from simulator.model.fitted import (
    FITTED_SUFFIX,
    Declared,
    Parameter,
    PathParts,
    _assign,
    _lookup,
    _numbers,
    load_fitted,
)
from simulator.model.parsing import format_path, suggest, validate
from simulator.model.schema import DiseaseModule
from simulator.model.targets import TargetSet

if TYPE_CHECKING:
    from simulator.model.library import Library


LOG_STEP = 0.15  # finite-difference step of log(parameter): a 16% change
LIFETIME_STATISTICS = ("rate", "event_share", "life_expectancy")  # read from a lifetime cohort


def _names_read(module: DiseaseModule) -> set[str]:
    """Names a module's guards and hazard ratios read (conditions, attributes, medications, observations),
    and the observables its attributes shift (values another module's declaration may be fitted to)."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, BaseModel):
            for key in ("condition", "attribute", "medication", "observation"):
                value = getattr(node, key, None)
                if isinstance(value, str):
                    found.add(value)
            for name in type(node).model_fields:
                visit(getattr(node, name))
        elif isinstance(node, list | tuple):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            for item in node.values():
                visit(item)

    visit(module.states)
    for attribute in module.attributes.values():
        found.update(attribute.affects)
    return found


def _names_declared(module: DiseaseModule) -> list[str]:
    """The conditions, attributes, medications and observables a module declares (owns)."""
    kinds = ("conditions", "attributes", "medications", "observables")
    return [name for kind in kinds for name in getattr(module, kind)]


def ensemble_for(library: Library, modules: list[str]) -> Library:
    """The library cut to the modules that can change what `modules` do: they and, transitively, the
    modules that own, shift (attribute `affects`) or record (`observe`) a name their guards read, the
    owners of what they record, the modules with encounters of a class they wait for, and the modules whose
    observables the start of their encounters records (`observe_at_start`, `labs_at_start`: drawn from the
    encounter's module stream). With one
    random stream per module, every kept module draws exactly as in the whole library; what the cut
    leaves out is deaths from the other modules' causes, which select who is alive to be counted
    (measured in the README; the validation report always runs the whole library)."""
    owners: dict[str, set[str]] = {}
    providers: dict[str, set[str]] = {}
    starters: dict[str, set[str]] = {}  # encounter class -> modules whose observables its encounters record
    for module in library.modules:
        owned = _names_declared(module)
        for name in owned:
            owners.setdefault(name, set()).add(module.name)
        for encounter_class in [*module.observe_at_start, *module.labs_at_start]:
            starters.setdefault(encounter_class, set()).add(module.name)
        provided = owned + [name for attribute in module.attributes.values() for name in attribute.affects]
        for state in module.states.values():
            provided += state.observe
            if state.encounter is not None:
                provided.append(f"encounter class {state.encounter.encounter_class}")
        for name in provided:
            providers.setdefault(name, set()).add(module.name)
    by_name = {m.name: m for m in library.modules}
    keep, todo = set(modules), list(modules)
    while todo:
        module = by_name[todo.pop()]
        states = module.states.values()
        wanted = set().union(
            *(providers.get(name, set()) for name in _names_read(module)),
            *(providers.get(f"encounter class {s.wait_for}", set()) for s in states if s.wait_for),
            *(owners.get(name, set()) for s in states for name in s.observe),
            *(starters.get(s.encounter.encounter_class, set()) for s in states if s.encounter is not None),
            *(
                owners.get(name, set())
                for names in [*module.observe_at_start.values(), *module.labs_at_start.values()]
                for name in names
            ),
        )
        for other in wanted - keep:
            keep.add(other)
            todo.append(other)
    return dataclasses.replace(library, modules=tuple(m for m in library.modules if m.name in keep))


def fit_groups(library: Library, declared: list[str]) -> list[list[str]]:
    """Declared modules grouped by dependency (connected components of 'reads a name declared by')."""
    owner = {name: module.name for module in library.modules for name in _names_declared(module)}
    graph = nx.Graph()
    graph.add_nodes_from(declared)
    for module in library.modules:
        if module.name not in declared:
            continue
        for name in _names_read(module):
            other = owner.get(name)
            if other in declared and other != module.name:
                graph.add_edge(module.name, other)
    order = {name: i for i, name in enumerate(declared)}
    return sorted((sorted(c, key=order.get) for c in nx.connected_components(graph)), key=lambda g: order[g[0]])


@dataclass(frozen=True)
class Free:
    """One free parameter of a fit, in log space: x = log(multiplier) or log(value)."""

    module: str
    name: str
    parameter: Parameter
    paths: tuple[PathParts, ...]
    complements: tuple[PathParts, ...]
    base: tuple[list[float], ...]  # the module file's numbers at `paths` (a multiplier scales these)
    moves: tuple[str, ...]  # ids of the targets it moves (the Jacobian is taken as zero elsewhere)
    start: float  # x of the numbers the fit starts from (the shipped fitted values, if any)

    @property
    def log_bounds(self) -> tuple[float, float]:
        lo, hi = self.parameter.bounds
        return math.log(lo), math.log(hi)

    def numbers(self, x: float, over: list[float] | None = None) -> Iterator[tuple[PathParts, list[float]]]:
        """(path, numbers to write there) for this parameter at x; `over`: for a parameter declared `over`
        another, the numbers that one sets at its first path (see `assignments`)."""
        factor = math.exp(x)
        bases = self.base if over is None else tuple(over for _ in self.paths)
        for parts, base in zip(self.paths, bases, strict=True):
            yield parts, [b * factor for b in base] if self.parameter.scale is not None else [factor] * len(base)
        for i, parts in enumerate(self.complements):  # a scale parameter's complements pair with its paths
            yield parts, [1.0 - (factor if self.parameter.scale is None else self.base[i][0] * factor)]


def assignments(free: list[Free], x: Iterable[float]) -> Iterator[tuple[Free, PathParts, list[float]]]:
    """(parameter, path, numbers) of every free parameter at x, in declared order, so that a parameter
    `over` another scales the numbers just set at that one's first path."""
    first: dict[tuple[str, str], list[float]] = {}
    for f, xi in zip(free, x, strict=True):
        over = first[(f.module, f.parameter.over)] if f.parameter.over else None
        for parts, numbers in f.numbers(float(xi), over):
            first.setdefault((f.module, f.name), numbers)
            yield f, parts, numbers


@dataclass
class FitResult:
    modules: list[str]
    names: list[str]
    x: np.ndarray
    before: list[Comparison]
    after: list[Comparison]
    loss_before: float
    loss_after: float
    evaluations: int
    seconds: float
    values: dict[str, dict[str, float | list[float]]]
    parameters: dict[str, dict[str, float]]
    moved: dict[str, list[str]]  # the parameters of each module this fit moved (the others were held)


def residual(c: Comparison) -> float:
    """Standardized error: simulated minus target over the combined standard error of the simulated
    value (its 95% interval) and of the target (its interval, else the 10% tolerance as a 95% band)."""
    t = c.target
    target_se = (t.ci_hi - t.ci_lo) / (2 * Z95) if t.ci_lo is not None and t.ci_hi is not None else 0.1 * t.value / Z95
    sim_se = c.standard_error if math.isfinite(c.standard_error) else 0.0
    scale = math.sqrt(sim_se**2 + target_se**2) or 1.0
    return (c.simulated - t.value) / scale if math.isfinite(c.simulated) else 10.0


class Objective:
    """Simulated targets as a function of the free parameters, with the patients fixed (common
    random numbers: the same seed and patient indices at every evaluation)."""

    def __init__(self, library: Library, targets: TargetSet, free: list[Free], target_ids: list[str],
                 patients: int, seed: int, chunk_size: int = 10_000, lifetime_patients: int = 0):  # fmt: skip
        from simulator.engine.people import build_people_tables, fitted_background_share, reference_date_of, sample

        # The background mortality fitted with every module (rules/life_tables/background_share.yaml): the cut
        # below is another module set, for which the library has no fitted share, and without one the whole
        # life table would be background, on top of the modules' own deaths.
        share = fitted_background_share(library)
        library = ensemble_for(library, sorted({f.module for f in free}))
        self.library = library
        self.free = free
        by_id = targets.by_id()
        self.targets = [by_id[i] for i in target_ids]
        self.measures = targets.definitions.measures
        self.vocabulary = Vocabulary.of(library)
        self.needs = needs_of(targets.definitions, self.vocabulary)
        self.tables = build_people_tables(library, reference_date_of(library), share)
        youngest = min(t.age_lo for t in self.targets)
        size = 2 * patients + 100
        while True:  # the first `patients` indices old enough for the youngest target (same people every time)
            pool = np.arange(size, dtype=np.int64)
            ages = (self.tables.reference_t - sample(self.tables, seed, pool, lifetime=False).birth_t) / DAYS_PER_YEAR
            self.index = pool[ages >= youngest][:patients]
            if len(self.index) == patients:
                break
            size *= 2
        self.seed = seed
        self.chunk_size = chunk_size
        # Event rates, event shares and life expectancy are read from a birth cohort followed to death, as
        # in the validation report: simulated at every evaluation (the same lives) when a target needs it.
        needs_lifetime = any(self.measures[t.measure].statistic in LIFETIME_STATISTICS for t in self.targets)
        self.lifetime_patients = lifetime_patients if needs_lifetime else 0
        self.documents = {f.module: library.document(f.module) for f in free}
        self.evaluations = 0
        self.cache: dict[tuple[float, ...], list[Comparison]] = {}

    def library_at(self, x: np.ndarray) -> Library:
        """The library with the parameters at x (module documents re-validated; the originals restored)."""
        for f, parts, numbers in assignments(self.free, x):
            _assign(self.documents[f.module].data, parts, numbers)
        try:
            modules = tuple(
                validate(self.documents[m.name], DiseaseModule) if m.name in self.documents else m
                for m in self.library.modules
            )
        finally:
            self.restore()
        return dataclasses.replace(self.library, modules=modules)

    def restore(self) -> None:
        """Put the numbers the fit started from back into the module documents."""
        for f, parts, numbers in assignments(self.free, [f.start for f in self.free]):
            _assign(self.documents[f.module].data, parts, numbers)

    def comparisons(self, x: np.ndarray) -> list[Comparison]:
        """The targets simulated at x (cached: the optimizer asks for the same point more than once)."""
        key = tuple(float(v) for v in x)
        if key not in self.cache:
            self.cache[key] = self._simulate(x)
        return self.cache[key]

    def _simulate(self, x: np.ndarray) -> list[Comparison]:
        from simulator.engine.compiler import compile_library
        from simulator.engine.run import RunConfig, Simulator
        from simulator.fit.cohort import simulate_cohort

        library = self.library_at(x)
        model, names = compile_library(library)
        sim = Simulator(library, model, names, self.tables, RunConfig(patients=len(self.index), seed=self.seed))
        cohort = simulate_cohort(sim, self.index, self.needs, sim.reference_t, self.chunk_size)
        lifetime = None
        if self.lifetime_patients:
            config = RunConfig(patients=self.lifetime_patients, seed=self.seed, mode="lifetime")
            lives = Simulator(library, model, names, self.tables, config)
            lifetime = simulate_cohort(lives, np.arange(self.lifetime_patients), self.needs, math.inf, self.chunk_size)
        self.evaluations += 1
        return [compare(t, self.measures[t.measure], cohort, self.vocabulary, lifetime) for t in self.targets]

    def residuals(self, x: np.ndarray) -> np.ndarray:
        return np.array([residual(c) for c in self.comparisons(x)])


def free_parameters(library: Library, declared: dict[str, Declared], modules: list[str]) -> list[Free]:
    """The declared parameters of `modules`, each starting where the library's (fitted) values put it."""
    free = []
    for module in modules:
        d = declared[module]
        doc = library.document(module)
        sourced = library.sourced_numbers.get(module, {})
        for name, parameter in d.declaration.parameters.items():
            paths = d.paths[name]
            current = [_numbers(_lookup(doc.data, p)) or [] for p in paths]
            base = tuple(sourced.get(format_path(p), now) for p, now in zip(paths, current, strict=True))
            if parameter.scale is None:
                start = math.log(current[0][0])
            elif parameter.over is not None:
                start = math.log(current[0][0] / _numbers(_lookup(doc.data, d.paths[parameter.over][0]))[0])  # type: ignore[index]
            else:
                start = math.log(current[0][0] / base[0][0]) if base[0][0] else 0.0
            free.append(Free(module, name, parameter, paths, d.complements[name], base, d.moves[name], start))  # type: ignore[arg-type]
    return free


def chosen_parameters(declared: dict[str, Declared], modules: list[str], names: list[str]) -> set[tuple[str, str]]:
    """(module, parameter) of each name asked for (`name`, or `module.name` where two modules declare it);
    an unknown or ambiguous name is a ConfigError of `params` that lists the declared parameters."""
    by_name: dict[str, list[tuple[str, str]]] = {}
    for module in modules:
        for name in declared[module].declaration.parameters:
            by_name.setdefault(name, []).append((module, name))
            by_name[f"{module}.{name}"] = [(module, name)]
    chosen: set[tuple[str, str]] = set()
    for name in names:
        found = by_name.get(name, [])
        if len(found) > 1:
            options = ", ".join(f"{m}.{n}" for m, n in found)
            raise ConfigError("params", f"'{name}' is declared by {len(found)} modules: name one of {options}")
        if not found:
            listed = "; ".join(f"{m} declares {', '.join(declared[m].declaration.parameters)}" for m in modules)
            raise ConfigError("params", f"no declared parameter '{name}'{suggest(name, list(by_name))}; {listed}")
        chosen.add(found[0])
    return chosen


def chosen_targets(ids: list[str], patterns: list[str]) -> list[str]:
    """The declared target ids that match any of `patterns` (shell-style), in declared order; a pattern that
    matches none of them is a ConfigError of `targets`."""
    measures = sorted({f"{i.split('/', 1)[0]}/*" for i in ids})
    for pattern in patterns:
        if not fnmatch.filter(ids, pattern):
            close = suggest(pattern, [*measures, *ids])
            raise ConfigError("targets", f"'{pattern}' matches none of the {len(ids)} declared targets{close}")
    return [i for i in ids if any(fnmatch.fnmatchcase(i, p) for p in patterns)]


def sparsity(free: list[Free], ids: list[str]) -> np.ndarray:
    """bool[target, parameter]: the targets each parameter is declared to move."""
    return np.array([[i in f.moves for f in free] for i in ids], bool).reshape(len(ids), len(free))


def column_groups(rows: np.ndarray) -> list[list[int]]:
    """Parameters that share no target, grouped (a greedy colouring of the overlap graph), so that
    one simulation gives the finite difference of every parameter in a group."""
    graph = nx.Graph()
    graph.add_nodes_from(range(rows.shape[1]))
    overlap = rows.T.astype(np.int64) @ rows.astype(np.int64)
    graph.add_edges_from((int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(overlap, 1)), strict=True))
    colours = nx.greedy_color(graph, strategy="largest_first")
    groups: dict[int, list[int]] = {}
    for column in sorted(colours):
        groups.setdefault(colours[column], []).append(column)
    return [groups[c] for c in sorted(groups)]


def sparse_broyden(jac: np.ndarray, step: np.ndarray, change: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Schubert's sparse Broyden update: the least change to each row of `jac`, on the parameters
    declared to move that target (`rows`), that maps the step just taken onto the residuals' change."""
    updated = jac.copy()
    for i in range(jac.shape[0]):
        s = np.where(rows[i], step, 0.0)
        size = float(s @ s)
        if size > 0:
            updated[i] += (change[i] - jac[i] @ s) / size * s
    return updated


def fit(
    library: Library,
    targets: TargetSet,
    declared: dict[str, Declared],
    modules: list[str],
    patients: int = 10_000,
    seed: int = 20_240_701,
    max_iterations: int = 8,
    report: Callable[[str], None] = print,
    broyden: bool = True,
    lifetime_patients: int | None = None,
    params: list[str] | None = None,
    target_patterns: list[str] | None = None,
) -> FitResult:
    """Fit the free parameters of `modules` together (least squares on standardized errors). The
    Jacobian is simulated by finite differences at the start; with `broyden`, later steps update it
    from the step just taken (one simulation a step instead of one per difference group). `params`: move
    only these declared parameters (`name` or `module.name`), holding the others at their current values;
    `target_patterns`: answer to only the declared targets they match (default: all of them)."""
    from scipy.optimize import least_squares

    started = time.perf_counter()
    free = free_parameters(library, declared, modules)
    ids: list[str] = []
    for module in modules:
        ids += [i for i in declared[module].target_ids if i not in ids]
    chosen = chosen_parameters(declared, modules, params) if params else {(f.module, f.name) for f in free}
    if target_patterns:
        ids = chosen_targets(ids, target_patterns)
    moving = np.array([(f.module, f.name) in chosen for f in free])
    rows = sparsity(free, ids)
    idle = [f"{f.module}.{f.name}" for f, m, r in zip(free, moving, rows.T, strict=True) if m and not r.any()]
    if idle:
        message = f"{', '.join(idle)} moves none of the targets chosen"
        raise ConfigError("targets", f"{message}: add one of its own, or leave it out of --params")
    lives = patients if lifetime_patients is None else lifetime_patients
    objective = Objective(library, targets, free, ids, patients, seed, lifetime_patients=lives)
    names = [f"{f.module}.{f.name}" for f, m in zip(free, moving, strict=True) if m]
    lo = np.array([f.log_bounds[0] for f in free])
    hi = np.array([f.log_bounds[1] for f in free])
    # The difference step of each parameter: an eighth of its bounds' width where that is narrower
    # than LOG_STEP (a 16% step of a blood-pressure norm is 19 mmHg, far outside the linear range).
    size = np.minimum(LOG_STEP, (hi - lo) / 8)
    # A start on a bound moves half a step inside: scipy sizes its first trust region by the start's
    # distance from the bounds, and one on a bound gave a region of 1e-5 steps, too small to change anyone.
    # A held parameter stays exactly where it is, inside its bounds or not.
    current = np.array([f.start for f in free])
    start = np.where(moving, np.clip(current, lo, hi), current)
    x0 = np.where(moving, np.clip(start, lo + size / 2, hi - size / 2), current)
    n = len(objective.index)
    lived = f" and {objective.lifetime_patients:,} lives" if objective.lifetime_patients else ""
    held = f" ({len(free) - len(names)} held)" if len(names) < len(free) else ""
    fitted = f"{len(names)} parameters{held} of {', '.join(modules)}"
    report(f"fitting {fitted} to {len(ids)} targets, {n:,} patients{lived}")
    report(f"  simulating {', '.join(m.name for m in objective.library.modules)}")
    report("  eval  loss      " + "  ".join(f"{n.split('.', 1)[1][:14]:>14}" for n in names))

    def traced(x: np.ndarray) -> np.ndarray:
        r = objective.residuals(x)
        shown = "  ".join(f"{math.exp(xi):>14.4g}" for xi in x[moving])
        report(f"  {objective.evaluations:4d}  {float(r @ r):8.2f}  {shown}")
        return r

    rows = rows[:, moving]
    groups = column_groups(rows)
    report(f"  Jacobian: {len(names)} columns in {len(groups)} simultaneous difference groups")

    steps_taken = 0
    last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (x, residuals, Jacobian) of the last call
    lo_m, hi_m, size_m, x0_m = lo[moving], hi[moving], size[moving], x0[moving]

    def at(u: np.ndarray) -> np.ndarray:
        """All parameters' x, the moving ones at u (the held ones where they are). The optimizer works in
        difference steps from the start, u = (x - x0) / size: scipy's first trust region is then one step
        wide (from x itself it would be |x0|, several e-folds, and the first steps overshoot a Jacobian that
        is linear only about one step far)."""
        x = x0.copy()
        x[moving] = np.clip(x0_m + u * size_m, lo_m, hi_m)
        return x

    def fun(u: np.ndarray) -> np.ndarray:
        nonlocal steps_taken
        steps_taken += 1
        return traced(at(u))

    def jacobian(u: np.ndarray) -> np.ndarray:
        """Forward differences with a fixed step in log space (a step that resolves a change in a
        finite cohort; scipy's default relative step vanishes at x = 0), away from the nearer bound.
        Parameters that move disjoint targets are stepped together (one simulation per group).
        After the first, a Broyden update instead (`broyden`). After the last evaluation allowed,
        scipy stops without using the Jacobian: none is simulated."""
        nonlocal last
        x_all = at(u)
        x = x_all[moving]
        r0 = traced(x_all)
        if steps_taken >= max_iterations:
            return np.zeros((len(r0), len(x)))
        if broyden and last is not None:
            x_last, r_last, jac_last = last
            jac = sparse_broyden(jac_last, x - x_last, r0 - r_last, rows)
        else:
            steps = np.where(x + size_m <= hi_m, size_m, -size_m)
            jac = np.zeros((len(r0), len(x)))
            for group in groups:
                moved = x_all.copy()
                moved[np.flatnonzero(moving)[group]] += steps[group]
                change = traced(moved) - r0
                for j in group:
                    jac[rows[:, j], j] = change[rows[:, j]] / steps[j]
        last = (x.copy(), r0, jac)
        return jac * size_m

    before = objective.comparisons(start)
    solution = least_squares(
        fun, np.zeros(len(x0_m)), jac=jacobian, bounds=((lo_m - x0_m) / size_m, (hi_m - x0_m) / size_m),
        max_nfev=max_iterations, xtol=1e-3, ftol=1e-3, x_scale=1.0,
    )  # fmt: skip
    x_fit = at(solution.x)
    after = objective.comparisons(x_fit)
    loss = [float(sum(residual(c) ** 2 for c in cs)) for cs in (before, after)]
    values, parameters = fitted_numbers(library, free, moving, x_fit)
    moved = {m: [f.name for f, mv in zip(free, moving, strict=True) if mv and f.module == m] for m in modules}
    return FitResult(
        modules, names, x_fit, before, after, loss[0], loss[1], objective.evaluations,
        time.perf_counter() - started, values, parameters, moved,
    )  # fmt: skip


def fitted_numbers(
    library: Library, free: list[Free], moving: np.ndarray, x: np.ndarray
) -> tuple[dict[str, dict[str, float | list[float]]], dict[str, dict[str, float]]]:
    """The numbers to write (by module and path) and the parameters' values (by module and name) at x. A held
    parameter keeps what the module's fitted file holds for it (nothing if it has none: the module file's
    numbers stay in force), unless it is declared `over` a moving one, whose numbers it scales."""
    modules = sorted({f.module for f in free})
    previous = load_fitted(library.rules_dir, str)
    values: dict[str, dict[str, float | list[float]]] = {m: {} for m in modules}
    parameters: dict[str, dict[str, float]] = {m: {} for m in modules}
    follows = {(f.module, f.name): bool(m) for f, m in zip(free, moving, strict=True)}
    for f in free:  # declared order: an `over` parameter comes after the one it scales
        follows[(f.module, f.name)] |= bool(f.parameter.over and follows[(f.module, f.parameter.over)])
    numbers_of: dict[tuple[str, str], list[tuple[PathParts, list[float]]]] = {}
    for f, parts, numbers in assignments(free, x):
        numbers_of.setdefault((f.module, f.name), []).append((parts, numbers))
    for f, xi in zip(free, x, strict=True):
        if follows[(f.module, f.name)]:
            digits = _digits if f.parameter.scale is not None and not f.complements else _probability
            for parts, numbers in numbers_of[(f.module, f.name)]:
                is_list = isinstance(_lookup(library.document(f.module).data, parts), CommentedSeq)
                values[f.module][format_path(parts)] = [digits(v) for v in numbers] if is_list else digits(numbers[0])
            parameters[f.module][f.name] = round(math.exp(float(xi)), 6)
        elif f.module in previous:
            fitted = previous[f.module][0]
            for text in map(format_path, (*f.paths, *f.complements)):
                if text in fitted.values:
                    values[f.module][text] = fitted.values[text]
            if f.name in fitted.parameters:
                parameters[f.module][f.name] = fitted.parameters[f.name]
    return values, parameters


def stale_fits(library: Library) -> list[str]:
    """Modules whose data changed since their fitted values were computed (refit them); comments do not count."""
    stale = []
    for module, (fitted, _, _) in load_fitted(library.rules_dir, str).items():
        current = library.data_sha256.get(module)
        if fitted.module_data_sha256 and current is not None and current != fitted.module_data_sha256:
            stale.append(module)
    return sorted(stale)


def fits_outside_bounds(library: Library) -> list[str]:
    """Fitted parameters whose shipped value lies outside the bounds their declaration gives (relative
    to the module file's numbers); a refit brings them back inside."""
    outside = []
    for module in sorted(library.calibration):
        for f in free_parameters(library, library.calibration, [module]):
            lo, hi = f.parameter.bounds
            value = math.exp(f.start)
            if not lo * (1 - 1e-6) <= value <= hi * (1 + 1e-6):
                outside.append(f"{module}.{f.name} = {value:.4g}, outside [{lo:g}, {hi:g}]")
    return outside


def _digits(value: float) -> float:
    """A fitted multiple as written: six significant digits (small rates keep their precision)."""
    return float(f"{value:.6g}")


def _probability(value: float) -> float:
    """A fitted probability as written: six decimals, so that it and its complement still sum to 1."""
    return round(value, 6)


def write_fitted(result: FitResult, library: Library, patients: int, seed: int) -> list[Path]:
    """One <module>.fitted.yaml per module of the fit that moved any parameter, beside its declaration (all of
    them or none)."""
    declared = library.calibration
    texts: dict[Path, str] = {}
    when = datetime.now(UTC).isoformat(timespec="seconds")
    ids = [c.target.id for c in result.after]
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 200
    for module in (m for m in result.modules if result.moved[m]):
        d = declared[module]
        mine = [i for i in ids if i in d.target_ids]
        document = {
            "module": module,
            "fitted": when,
            "patients": patients,
            "seed": seed,
            "loss_before": round(result.loss_before, 4),
            "loss_after": round(result.loss_after, 4),
            "targets": mine,
            "parameters": result.parameters[module],
            "moved": result.moved[module],
            "values": result.values[module],
            "module_data_sha256": library.data_sha256[module],
        }
        text = io.StringIO()
        text.write(
            f"# Fitted by `ehrsim calibrate` ({when}); applied by load_library over {module}'s module file.\n"
            f"# loss = sum of squared standardized errors over the targets (simulator/calibration.py).\n"
        )
        yaml.dump(document, text)
        texts[d.path.with_name(f"{module}{FITTED_SUFFIX}")] = text.getvalue()
    return write_all(texts)
