"""Calibration declarations and fitted values as data: rules/targets/calibration/<module>.yaml names a
module's free parameters (paths into its file, bounds, the targets they answer to) and
<module>.fitted.yaml holds fitted numbers, which load_library writes into the module while loading."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import Field, model_validator
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from simulator.model.parsing import LoadError, Located, Problem, format_path, parse_yaml, validate
from simulator.model.schema import DiseaseModule, Frozen
from simulator.model.targets import TargetSet

CALIBRATION_DIR = Path("targets") / "calibration"
FITTED_SUFFIX = ".fitted.yaml"
PathParts = tuple[str | int, ...]


class LoadedModules(Protocol):
    """What checking declarations reads of a library being loaded (a Library has all of it)."""

    rules_dir: Path
    modules: tuple[DiseaseModule, ...]
    sourced_numbers: dict[str, dict[str, list[float]]]

    def document(self, module_name: str) -> Located: ...


class Parameter(Frozen):
    """`scale`: bounds of a multiplier of every number at `paths`; `value`: bounds of the number set at
    `paths`. `complement`: the other branch of a two-way choice, set to 1 - the number at `paths` (with
    `scale`, one complement per path, in the same order). `over`: a scale parameter multiplies the number
    that the named parameter (declared before it) sets at its first path, not the module file's own, so
    that one number stays at least (bounds from 1) or at most another, e.g. a mean that rises with age."""

    paths: list[str] = Field(min_length=1)
    scale: tuple[float, float] | None = None
    value: tuple[float, float] | None = None
    complement: list[str] = []
    over: str | None = None
    targets: list[str] = []  # patterns of the targets it moves (its Jacobian rows); []: the declaration's
    source: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> Parameter:
        if (self.scale is None) == (self.value is None):
            raise ValueError("give exactly one of scale or value (the bounds of the fitted number)")
        lo, hi = self.bounds
        if not 0 < lo < hi:
            raise ValueError(f"bounds must satisfy 0 < low < high (got [{lo:g}, {hi:g}])")
        if self.complement and self.scale is not None and len(self.complement) != len(self.paths):
            raise ValueError("a scale parameter needs one complement per path")
        if self.over is not None and (self.scale is None or self.complement):
            raise ValueError("'over' needs a scale parameter without complements")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        return self.scale if self.scale is not None else self.value  # type: ignore[return-value]


class Declaration(Frozen):
    module: str
    targets: list[str] = Field(min_length=1)  # fnmatch patterns over target ids
    parameters: dict[str, Parameter] = Field(min_length=1)


class Fitted(Frozen):
    module: str
    fitted: str
    patients: int
    seed: int
    loss_before: float
    loss_after: float
    targets: list[str]
    parameters: dict[str, float]
    moved: list[str] = []  # the parameters this fit moved, the others held as they were ([]: not recorded)
    values: dict[str, float | list[float]]
    module_data_sha256: str = ""  # the parsed data of the module the fit started from ("": not recorded)


_PATH = re.compile(r"[A-Za-z_]\w*(\[\d+\])*(\.[A-Za-z_]\w*(\[\d+\])*)*")
_PART = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")


def parse_path(text: str) -> PathParts | None:
    """'states.a.hazards[0].rate_per_year.male[1]' -> parts; None when malformed."""
    if not _PATH.fullmatch(text):
        return None
    return tuple(name if name else int(number) for name, number in _PART.findall(text))


def _lookup(data: Any, parts: PathParts) -> Any:
    for part in parts:
        if (
            isinstance(data, CommentedMap)
            and isinstance(part, str)
            and part in data
            or isinstance(data, CommentedSeq)
            and isinstance(part, int)
            and part < len(data)
        ):
            data = data[part]
        else:
            raise KeyError(part)
    return data


def _numbers(value: Any) -> list[float] | None:
    """The number(s) at a path: a number or a list of numbers; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return [float(value)]
    if (
        isinstance(value, CommentedSeq)
        and value
        and all(_numbers(v) is not None and not isinstance(v, list) for v in value)
    ):
        return [float(v) for v in value]
    return None


def _assign(data: Any, parts: PathParts, numbers: list[float]) -> None:
    """Write numbers at a path: into the list there, or the single number."""
    parent = _lookup(data, parts[:-1])
    current = parent[parts[-1]]
    if isinstance(current, CommentedSeq):
        for i, v in enumerate(numbers):
            current[i] = v
    else:
        parent[parts[-1]] = numbers[0]


def _path_problems(doc: Located, where: Located, at: PathParts, text: str) -> tuple[PathParts | None, list[Problem]]:
    parts = parse_path(text)
    if parts is None:
        return None, [where.problem(at, f"malformed path '{text}' (expected e.g. states.x.hazards[0].rate_per_year)")]
    try:
        found = _lookup(doc.data, parts)
    except KeyError as missing:
        return None, [where.problem(at, f"path '{text}' does not exist in {doc.file} (no '{missing.args[0]}')")]
    if _numbers(found) is None:
        return None, [where.problem(at, f"path '{text}' in {doc.file} is not a number or a list of numbers")]
    return parts, []


def calibration_dir(rules_dir: Path) -> Path:
    return rules_dir / CALIBRATION_DIR


def load_fitted(rules_dir: Path, display: Callable[[Path], str]) -> dict[str, tuple[Fitted, Located, Path]]:
    """Every fitted-parameters file of the rules, by module name; raise LoadError on bad files."""
    out: dict[str, tuple[Fitted, Located, Path]] = {}
    problems: list[Problem] = []
    for path in sorted(calibration_dir(rules_dir).glob(f"*{FITTED_SUFFIX}")):
        try:
            doc = parse_yaml(path, display(path))
            fitted = validate(doc, Fitted)
        except LoadError as exc:
            problems += exc.problems
            continue
        out[fitted.module] = (fitted, doc, path)
    if problems:
        raise LoadError(problems)
    return out


def apply_fitted(
    module_doc: Located, fitted: Fitted, fitted_doc: Located, sourced: dict[str, list[float]]
) -> list[Problem]:
    """Write the fitted numbers into a parsed module (before it is validated); problems located in
    the fitted file. The module file's own numbers at those paths go into `sourced` (by path): a
    refit's bounds are relative to them, not to the values of the previous fit."""
    problems: list[Problem] = []
    for text, value in fitted.values.items():
        parts, found = _path_problems(module_doc, fitted_doc, ("values", text), text)
        problems += found
        if parts is None:
            continue
        numbers = value if isinstance(value, list) else [value]
        found_there = _lookup(module_doc.data, parts)
        own = _numbers(found_there) or []
        if isinstance(found_there, CommentedSeq) != isinstance(value, list) or len(own) != len(numbers):
            problems.append(fitted_doc.problem(("values", text), f"value does not match the shape at '{text}'"))
            continue
        sourced[format_path(parts)] = own
        _assign(module_doc.data, parts, numbers)
    return problems


@dataclass(frozen=True)
class Declared:
    """A checked declaration: its parameters' parsed paths, the target ids it answers to, and
    those each parameter moves."""

    declaration: Declaration
    path: Path
    paths: dict[str, tuple[PathParts, ...]]
    complements: dict[str, tuple[PathParts, ...]]
    target_ids: tuple[str, ...]
    moves: dict[str, tuple[str, ...]]


def _bound_problems(
    library: LoadedModules,
    module: str,
    doc: Located,
    name: str,
    parameter: Parameter,
    paths: tuple[PathParts | None, ...],
) -> list[Problem]:
    """The module file's numbers at a parameter's paths lie inside a value parameter's bounds, and a
    scaled probability (a scale parameter with complements) stays at most 1 at its upper bound."""
    sourced = library.sourced_numbers.get(module, {})
    lo, hi = parameter.bounds
    problems = []
    for parts in filter(None, paths):
        own = sourced.get(format_path(parts)) or _numbers(_lookup(library.document(module).data, parts))
        if own and parameter.value is not None and not all(lo <= v <= hi for v in own):
            at = ("parameters", name, "value")
            problems.append(doc.problem(at, f"the module's value {own[0]:g} is outside the bounds"))
        if own and parameter.scale is not None and parameter.complement and max(own) * hi > 1:
            at = ("parameters", name, "scale")
            problems.append(doc.problem(at, f"the upper bound takes the probability {own[0]:g} above 1"))
    return problems


def _alias_problems(
    module_doc: Located,
    doc: Located,
    paths: dict[str, tuple[PathParts | None, ...]],
    complements: dict[str, tuple[PathParts | None, ...]],
) -> list[Problem]:
    """A declared path inside a node the module file reuses through a YAML alias changes only that use
    (the parsed document is a tree), so the same number must be declared at every use: a fit of one use
    would silently give the others different values than the module file's alias says."""
    declared = {
        parts: (name, field, i)
        for table, field in ((paths, "paths"), (complements, "complement"))
        for name, parsed in table.items()
        for i, parts in enumerate(parsed)
        if parts is not None
    }
    problems = []
    for uses in module_doc.aliases:
        for parts, (name, field, i) in declared.items():
            use = next((u for u in uses if parts[: len(u)] == u), None)
            if use is None:
                continue
            missing = [format_path((*u, *parts[len(use) :])) for u in uses if (*u, *parts[len(use) :]) not in declared]
            if missing:
                message = (
                    f"'{format_path(parts)}' is in a node the module file reuses through a YAML alias; "
                    f"declare it at every use (missing: {', '.join(missing)})"
                )
                problems.append(doc.problem(("parameters", name, field, i), message))
    return problems


def _over_problems(
    module_doc: Located, doc: Located, declaration: Declaration, paths: dict[str, tuple[PathParts | None, ...]],
    name: str,
) -> list[Problem]:  # fmt: skip
    """`over` names a parameter declared before this one, whose first path holds as many numbers as each
    of this one's paths (they are set to those numbers times the factor)."""
    over = declaration.parameters[name].over
    before = list(declaration.parameters)[: list(declaration.parameters).index(name)]
    at = ("parameters", name, "over")
    if over not in before:
        return [doc.problem(at, f"'over' must name a parameter declared before '{name}' (got '{over}')")]
    reference = paths[over][0]
    if reference is None:
        return []
    size = len(_numbers(_lookup(module_doc.data, reference)) or [])
    if any(p is not None and len(_numbers(_lookup(module_doc.data, p)) or []) != size for p in paths[name]):
        return [doc.problem(at, f"each path must hold as many numbers as the first path of '{over}'")]
    return []


def load_declarations(
    library: LoadedModules, targets: TargetSet, display: Callable[[Path], str]
) -> dict[str, Declared]:
    """The declarations of the loaded modules, checked against the modules and the targets."""
    directory = calibration_dir(library.rules_dir)
    loaded = {m.name for m in library.modules}
    ids = [t.id for t in targets.targets]
    out: dict[str, Declared] = {}
    problems: list[Problem] = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name.endswith(FITTED_SUFFIX):
            continue
        try:
            doc = parse_yaml(path, display(path))
            declaration = validate(doc, Declaration)
        except LoadError as exc:
            problems += exc.problems
            continue
        if declaration.module not in loaded:
            continue  # a module this run does not load
        module_doc = library.document(declaration.module)
        paths, complements = {}, {}
        for name, parameter in declaration.parameters.items():
            for field, table in (("paths", paths), ("complement", complements)):
                parsed = []
                for i, text in enumerate(getattr(parameter, field)):
                    parts, found = _path_problems(module_doc, doc, ("parameters", name, field, i), text)
                    problems += found
                    parsed.append(parts)
                table[name] = tuple(parsed)
            problems += _bound_problems(library, declaration.module, doc, name, parameter, paths[name])
            if parameter.over is not None:
                problems += _over_problems(module_doc, doc, declaration, paths, name)
        problems += _alias_problems(module_doc, doc, paths, complements)
        matched: list[str] = []
        for i, pattern in enumerate(declaration.targets):
            hits = fnmatch.filter(ids, pattern)
            if not hits:
                problems.append(doc.problem(("targets", i), f"pattern '{pattern}' matches no target id"))
            matched += [h for h in hits if h not in matched]
        moves: dict[str, tuple[str, ...]] = {}
        for name, parameter in declaration.parameters.items():
            moves[name] = tuple(matched)
            if parameter.targets:
                hits = [i for i in matched if any(fnmatch.fnmatchcase(i, p) for p in parameter.targets)]
                if not hits:
                    at = ("parameters", name, "targets")
                    problems.append(doc.problem(at, "these patterns match none of the declaration's targets"))
                moves[name] = tuple(hits)
        for name, parameter in reversed(declaration.parameters.items()):  # a reference moves what its `over`s move
            if parameter.over in moves:
                moves[parameter.over] += tuple(i for i in moves[name] if i not in moves[parameter.over])
        out[declaration.module] = Declared(declaration, path, paths, complements, tuple(matched), moves)
    if problems:
        raise LoadError(problems)
    return out
