"""Cross-file and graph checks on validated modules: everything that can be caught at load time.

Names: every referenced state, attribute, condition, medication, observable, race, ethnicity and
source exists (closest valid name suggested). Graph (networkx): every state reachable from start,
branch probabilities sum to 1, no cycle that can loop without time passing, encounter-bound
actions (diagnosis, prescriptions, procedures, immunizations, observations) happen inside an
encounter. Codes: every coded concept is in the terminology table of the rules directory
(`terminology.csv`: system, code, official display), so a mistyped code or display fails at load.
"""

from __future__ import annotations

import csv
import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import networkx as nx
from pydantic import BaseModel

from simulator.model.parsing import LoadError, Located, Problem, suggest
from simulator.model.schema import (
    Code,
    DiseaseModule,
    Exact,
    State,
    guard_atoms,
)

if TYPE_CHECKING:
    from simulator.model.library import Library

Path = tuple[str | int, ...]
KINDS = ("attributes", "conditions", "medications", "observables")


def walk(obj: Any, path: Path = ()) -> Iterator[tuple[Path, BaseModel]]:
    """Every model nested in `obj`, with its path as it is written in the file."""
    if isinstance(obj, BaseModel):
        yield path, obj
        for name, info in type(obj).model_fields.items():
            yield from walk(getattr(obj, name), (*path, info.alias or name))
    elif isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            yield from walk(item, (*path, i))
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from walk(item, (*path, key))


def state_guards(state: State, path: Path) -> Iterator[tuple[Path, BaseModel]]:
    """(path, guard) for every guard of a state."""
    for i, case in enumerate(state.cases or []):
        yield (*path, "cases", i, "when"), case.when
    for i, hazard in enumerate(state.hazards or []):
        for j, ratio in enumerate(hazard.hazard_ratios):
            yield (*path, "hazards", i, "hazard_ratios", j, "when"), ratio.when


def check_library(library: Library) -> None:
    """Raise LoadError with every cross-reference and graph problem of the library."""
    problems: list[Problem] = []
    declared = _declarations(library, problems)
    races = {c.name for c in library.demographics.race}
    ethnicities = {c.name for c in library.demographics.ethnicity}
    for module in library.modules:
        doc = library.document(module.name)
        problems += _check_references(module, doc, declared, races, ethnicities)
        problems += _check_graph(module, doc)
    problems += _check_codes(library)
    problems += _check_lags(library)
    if problems:
        raise LoadError(problems)


TERMINOLOGY_FILE = "terminology.csv"


def load_terminology(rules_dir: pathlib.Path) -> dict[tuple[str, str], str] | None:
    """(system, code) -> official display from the rules' terminology table; None without one."""
    path = rules_dir / TERMINOLOGY_FILE
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        return {(row["system"], row["code"]): row["display"] for row in csv.DictReader(handle)}


def _check_codes(library: Library) -> list[Problem]:
    """Every code of every module and rules file is in the terminology table, with its display."""
    terminology = load_terminology(library.rules_dir)
    if terminology is None:
        return []
    table = f"{library.rules_dir.name}/{TERMINOLOGY_FILE}"
    problems: list[Problem] = []
    documents = [(m, library.document(m.name)) for m in library.modules]
    documents += [(library.demographics, library.documents["demographics.yaml"])]
    documents += [(library.mortality, library.documents["mortality.yaml"])]
    for model, doc in documents:
        for path, code in walk(model):
            if not isinstance(code, Code):
                continue
            display = terminology.get((code.system, code.code))
            if display is None:
                known = {c for s, c in terminology if s == code.system}
                problems.append(
                    doc.problem(
                        (*path, "code"),
                        f"{code.system} code '{code.code}' is not in {table}{suggest(code.code, known)}",
                    )
                )
            elif display != code.display:
                problems.append(doc.problem((*path, "display"), f"display should be '{display}' (as in {table})"))
    return problems


def _check_lags(library: Library) -> list[Problem]:
    """A change with a response half-life may not affect an observable that lags its effects itself (the
    observable's lag is exact only toward effects that change in steps)."""
    lagging = {n for m in library.modules for n, o in m.observables.items() if o.response_half_life_days is not None}
    affects = {n: set(a.affects) for m in library.modules for n, a in m.attributes.items()}
    problems: list[Problem] = []
    for module in library.modules:
        for name, state in module.states.items():
            for i, setter in enumerate(state.set):
                both = sorted(affects.get(setter.attribute, set()) & lagging)
                if setter.response_half_life_days is not None and both:
                    problems.append(
                        library.document(module.name).problem(
                            ("states", name, "set", i, "response_half_life_days"),
                            f"'{setter.attribute}' affects {', '.join(both)}, which lag(s) its effects itself",
                        )
                    )
    return problems


def _declarations(library: Library, problems: list[Problem]) -> dict[str, dict[str, str]]:
    """name -> declaring module, per kind; duplicates across modules are problems."""
    declared: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
    for module in library.modules:
        for kind in KINDS:
            for name in getattr(module, kind):
                for other_kind in KINDS:
                    owner = declared[other_kind].get(name)
                    if owner is not None:
                        doc = library.document(module.name)
                        problems.append(
                            doc.problem(
                                (kind, name), f"'{name}' is already declared in module '{owner}' ({other_kind})", True
                            )
                        )
                declared[kind].setdefault(name, module.name)
    return declared


def _check_references(
    module: DiseaseModule,
    doc: Located,
    declared: dict[str, dict[str, str]],
    races: set[str],
    ethnicities: set[str],
) -> list[Problem]:
    problems: list[Problem] = []

    def need(name: str, kind: str, path: Path, valid: set[str] | None = None) -> None:
        pool = valid if valid is not None else set(declared[kind])
        if name not in pool:
            what = kind[:-1] if kind.endswith("s") else kind
            problems.append(doc.problem(path, f"unknown {what} '{name}'{suggest(name, pool)}"))

    for path, model in walk(module):
        source = getattr(model, "source", None)
        if isinstance(source, str) and path[:1] != ("sources",):
            need(source, "sources", (*path, "source"), set(module.sources))
    for name, attribute in module.attributes.items():
        for target in attribute.affects:
            need(target, "observables", ("attributes", name, "affects", target))
    for name, observable in module.observables.items():
        if observable.derived is not None:
            form = "product" if observable.derived.product is not None else "sum"
            for target in observable.derived.terms():
                need(target, "observables", ("observables", name, "derived", form, target))
        if observable.estimated is not None:
            need(observable.estimated.creatinine, "observables", ("observables", name, "estimated", "creatinine"))
            for i, equation in enumerate(observable.estimated.equations):
                if equation.race_factor is not None:
                    path = ("observables", name, "estimated", "equations", i, "race_factor", "race")
                    need(equation.race_factor.race, "race", path, races)
        if observable.inverted is not None:
            need(observable.inverted.estimate, "observables", ("observables", name, "inverted", "estimate"))
            need(observable.inverted.attribute, "attributes", ("observables", name, "inverted", "attribute"))
    for key in ("observe_at_start", "labs_at_start"):
        for encounter_class, names in getattr(module, key).items():
            for i, target in enumerate(names):
                need(target, "observables", (key, encounter_class, i))
    states = set(module.states)
    pools = {"states": states, "race": races, "ethnicity": ethnicities}
    if module.start is not None:
        need(module.start, "states", ("start",), states)
    for name, state in module.states.items():
        base: Path = ("states", name)
        for key, kind in (
            ("onset", "conditions"),
            ("diagnose", "conditions"),
            ("resolve", "conditions"),
            ("start_medication", "medications"),
            ("stop_medication", "medications"),
            ("observe", "observables"),
        ):
            for i, ref in enumerate(getattr(state, key)):
                need(ref, kind, (*base, key, i))
        for i, setter in enumerate(state.set):
            need(setter.attribute, "attributes", (*base, "set", i, "attribute"))
        if state.encounter is not None and state.encounter.reason is not None:
            need(state.encounter.reason, "conditions", (*base, "encounter", "reason"))
        if state.next is not None:
            need(state.next, "states", (*base, "next"), states)
        for i, branch in enumerate(state.branches or []):
            need(branch.to, "states", (*base, "branches", i, "to"), states)
        for i, case in enumerate(state.cases or []):
            need(case.to, "states", (*base, "cases", i, "to"), states)
        if state.otherwise is not None:
            need(state.otherwise, "states", (*base, "otherwise"), states)
        for i, hazard in enumerate(state.hazards or []):
            need(hazard.to, "states", (*base, "hazards", i, "to"), states)
        for gpath, guard in state_guards(state, base):
            for apath, atom in guard_atoms(guard, gpath):
                for namespace, name, below in atom.references():
                    need(name, namespace, (*apath, *below), pools.get(namespace))
    return problems


def passes_time(state: State) -> bool:
    """Whether leaving this state always takes time (so a cycle through it cannot spin)."""
    if state.hazards is not None or state.wait_for is not None:
        return True
    if state.after is not None:
        return not (isinstance(state.after, Exact) and state.after.value <= 0)
    return False


def _check_graph(module: DiseaseModule, doc: Located) -> list[Problem]:
    problems: list[Problem] = []
    if not module.states:
        return problems
    graph = nx.DiGraph()
    graph.add_nodes_from(module.states)
    for name, state in module.states.items():
        for target in state.targets():
            if target in module.states:
                graph.add_edge(name, target, instant=not passes_time(state))
        total = sum(b.probability for b in state.branches or [])
        if state.branches is not None and abs(total - 1.0) > 1e-9:
            problems.append(
                doc.problem(("states", name, "branches"), f"branch probabilities must sum to 1 (got {total:g})")
            )
    if module.start in module.states:
        reachable = nx.descendants(graph, module.start) | {module.start}
        for name in module.states:
            if name not in reachable:
                problems.append(doc.problem(("states", name), f"state '{name}' cannot be reached from start", True))
    instant = graph.edge_subgraph([(a, b) for a, b, d in graph.edges(data=True) if d["instant"]])
    for component in nx.strongly_connected_components(instant):
        first = min(component)
        if len(component) > 1 or instant.has_edge(first, first):
            cycle = [a for a, _ in nx.find_cycle(instant.subgraph(component), first)]
            loop = " -> ".join([*cycle, cycle[0]])
            problems.append(doc.problem(("states", first), f"cycle without time passing: {loop}", True))
    problems += _check_encounters(module, doc)
    return problems


CLOSED, CHAIN, OPEN = 1, 2, 4  # no encounter; one that closes itself once time passes; open-ended
NEEDS_ENCOUNTER = ("diagnose", "start_medication", "procedure", "immunization", "observe")


def _check_encounters(module: DiseaseModule, doc: Located) -> list[Problem]:
    """Forward dataflow of which encounter a module may have open when it enters each state."""
    status_in: dict[str, int] = {name: 0 for name in module.states}
    if module.start not in status_in:
        return []
    status_in[module.start] = CLOSED
    work = [module.start]
    while work:
        name = work.pop()
        state = module.states[name]
        status = _after_actions(state, status_in[name])
        if state.after is not None or state.hazards is not None:
            status = (status & OPEN) | (CLOSED if status & (CHAIN | CLOSED) else 0)
        elif state.wait_for is not None:
            status = CHAIN | (status & OPEN)
        elif state.cases is not None and state.otherwise is None and status & CHAIN:
            status |= CLOSED  # waiting for a case may let time pass
        for target in state.targets():
            if target in status_in and status_in[target] | status != status_in[target]:
                status_in[target] |= status
                work.append(target)

    problems: list[Problem] = []
    for name, state in module.states.items():
        incoming = status_in[name]
        if not incoming:
            continue
        base: Path = ("states", name)
        if state.encounter is not None and incoming & (CHAIN | OPEN):
            problems.append(doc.problem((*base, "encounter"), "starts an encounter while another may still be open"))
        if state.wait_for is not None and _after_actions(state, incoming) & OPEN:
            problems.append(doc.problem((*base, "wait_for"), "waits for a wellness visit while an encounter is open"))
        inside = CHAIN if state.encounter is not None else incoming
        for key in NEEDS_ENCOUNTER:
            if getattr(state, key) and inside & CLOSED:
                problems.append(
                    doc.problem(
                        (*base, key),
                        f"{key} needs an encounter, but this state can be entered with none open "
                        "(start one here or earlier without time passing, or wait_for: wellness)",
                        True,
                    )
                )
        if state.end_encounter and (inside & ~OPEN or state.encounter is not None):
            problems.append(
                doc.problem(
                    (*base, "end_encounter"), "end_encounter needs an open-ended encounter (one without duration)"
                )
            )
    return problems


def _after_actions(state: State, status: int) -> int:
    if state.encounter is not None:
        status = CHAIN if state.encounter.duration is not None else OPEN
    if state.end_encounter or state.death is not None:
        status = CLOSED
    return status
