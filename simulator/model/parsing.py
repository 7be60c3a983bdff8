"""Load module and rules files into validated models, with every error located as file:line:col.

YAML is parsed with ruamel.yaml (safe, round-trip nodes keep their positions); pydantic errors are
mapped back to the position of the offending key or value, and unknown names get the closest valid
name suggested. Nothing in a file is evaluated as code.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in one file, printable as `file:line:col: path: message`."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class LoadError(Exception):
    """Raised with every problem found in the files being loaded."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def suggest(name: str, valid: list[str] | set[str]) -> str:
    """' (did you mean X?)' for the closest valid name, or ''."""
    close = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Located:
    """A parsed YAML document that can tell where any path inside it is."""

    def __init__(self, file: str, data: Any, aliases: tuple[tuple[tuple[str | int, ...], ...], ...] = ()):
        self.file = file
        self.data = data
        self.aliases = aliases  # the paths of the uses of each node the file shares through a YAML alias

    def position(self, path: tuple[str | int, ...], at_key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the value at `path` (or of its key); path parts absent from the data
        (pydantic's union tags) are skipped, and an unreachable tail reports its nearest parent."""
        node = self.data
        line, col = 1, 1
        if isinstance(node, CommentedMap | CommentedSeq):
            line, col = node.lc.line + 1, node.lc.col + 1
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, CommentedMap) and part in node:
                key_line, key_col = node.lc.key(part)
                value_line, value_col = node.lc.value(part)
                use_key = at_key and last
                line, col = (key_line + 1, key_col + 1) if use_key else (value_line + 1, value_col + 1)
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                item_line, item_col = node.lc.item(part)
                line, col = item_line + 1, item_col + 1
                node = node[part]
        return line, col

    def data_path(self, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
        """The part of a pydantic loc that names real keys/indices in the data (drops union tags)."""
        node = self.data
        out: list[str | int] = []
        for i, part in enumerate(loc):
            if isinstance(node, dict) and part in node and _names_sibling_key(node, part, loc[i + 1 : i + 2]):
                continue  # a union tag that is also one of the member's keys ('since'), followed by another key
            if (
                isinstance(node, dict)
                and part in node
                or isinstance(node, list)
                and isinstance(part, int)
                and 0 <= part < len(node)
            ):
                out.append(part)
                node = node[part]
            elif isinstance(node, dict) and isinstance(part, str) and part not in node and _is_field_name(part):
                out.append(part)  # a missing or extra field: keep it, position falls back to the parent
                node = None
        return tuple(out)

    def problem(self, path: tuple[str | int, ...], message: str, at_key: bool = False) -> Problem:
        line, col = self.position(path, at_key=at_key)
        return Problem(self.file, line, col, format_path(path), message)


def _names_sibling_key(node: dict, part: str | int, rest: tuple[str | int, ...]) -> bool:
    """Whether `part` holds a scalar and the next loc part is another key of the same mapping."""
    return bool(rest) and not isinstance(node[part], dict | list) and rest[0] in node and rest[0] != part


def _is_field_name(part: str) -> bool:
    return part[:1].islower() and not part.startswith("function-") and part not in _TAGS


_TAGS = {"age", "calendar", "exact", "uniform", "normal", "exponential", "lognormal", "gamma", "float", "int"}


def format_path(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_yaml(path: Path, display_name: str | None = None) -> Located:
    """Parse one YAML file (safe constructors only) keeping positions."""
    name = display_name or str(path)
    yaml = YAML(typ="rt", pure=True)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LoadError([Problem(name, 1, 1, "", f"cannot read file: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise LoadError([Problem(name, 1, 1, "", "file is not valid UTF-8")]) from None
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise LoadError([Problem(name, line, col, "", f"YAML syntax error: {message}")]) from None
    if not isinstance(data, CommentedMap):
        raise LoadError([Problem(name, 1, 1, "", "the file must hold a mapping of keys to values")])
    uses: dict[int, list[tuple[str | int, ...]]] = {}
    _unshare(data, (), uses)
    return Located(name, data, tuple(tuple(paths) for paths in uses.values() if len(paths) > 1))


def _unshare(
    node: CommentedMap | CommentedSeq, path: tuple[str | int, ...], uses: dict[int, list[tuple[str | int, ...]]]
) -> None:
    """Give each YAML alias (*name) its own copy of the anchored node (positions kept): the parsed
    document is a tree, so a fitted number written at one path does not change every alias of it.
    `uses` collects the paths of each parsed node (id: paths), so that callers can see the aliases."""
    for key, child in list(node.items() if isinstance(node, CommentedMap) else enumerate(node)):
        if not isinstance(child, CommentedMap | CommentedSeq):
            continue
        here = (*path, key)
        shared = id(child) in uses
        uses.setdefault(id(child), []).append(here)
        if shared:
            child = copy.deepcopy(child)
            node[key] = child
        _unshare(child, here, uses)


def _message(error: dict[str, Any], model: type[BaseModel], path: tuple[str | int, ...]) -> tuple[str, bool]:
    """A readable message for one pydantic error, and whether it points at a key."""
    kind = error["type"]
    if kind == "extra_forbidden":
        valid = _valid_fields(model, tuple(error["loc"][:-1]))
        return f"unknown key '{path[-1]}'{suggest(str(path[-1]), valid)}", True
    if kind == "missing":
        return "required key is missing", False
    if kind == "invalid_guard":
        keys = list(error["input"]) if isinstance(error["input"], dict) else []
        from simulator.model.schema import GUARD_KEYS

        hint = suggest(str(keys[0]), set(GUARD_KEYS)) if keys else ""
        return f"{error['msg']}{hint}", False
    if kind == "union_tag_invalid" and "distribution" in str(error.get("ctx", {})):
        tag = error["ctx"].get("tag", "")
        valid = ["exact", "uniform", "normal", "exponential", "lognormal", "gamma"]
        return f"unknown distribution '{tag}'{suggest(str(tag), valid)}; expected one of {', '.join(valid)}", False
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if kind == "literal_error":
        expected = [x.strip(" '") for x in error["ctx"]["expected"].replace(" or ", ", ").split(",")]
        message += f" (got {value!r}){suggest(str(value), expected)}"
    elif not kind.startswith("value_error") and isinstance(value, str | int | float | bool):
        message += f" (got {value!r})"
    return message, False


def _valid_fields(model: type[BaseModel], loc: tuple[str | int, ...]) -> set[str]:
    """Keys allowed where an unknown key was found: walk the schema types along pydantic's loc."""
    node: Any = model
    for part in loc:
        node = _step(node, part)
        if node is None:
            return set()
    node = _unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return {f.alias or n for n, f in node.model_fields.items()}
    return set()


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional wrappers."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, UnionType) and len(members := _members(tp)) == 1:
            tp = members[0]
        else:
            return tp


def _members(tp: Any) -> list[Any]:
    return [m for m in get_args(tp) if m is not type(None)]


def _step(tp: Any, part: str | int) -> Any:
    """The type one loc step below `tp` (a field, an item, a value, or a tagged union member)."""
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, field in tp.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    if origin in (list, tuple) and isinstance(part, int):
        return get_args(tp)[0]
    if origin is dict and isinstance(part, str):
        return get_args(tp)[1]
    if origin in (Union, UnionType):
        for member in _members(tp):
            tags = [x.tag for x in getattr(member, "__metadata__", ()) if hasattr(x, "tag")]
            inner = _unwrap(member)
            literal = getattr(inner, "model_fields", {}).get("distribution")
            names = {*tags, getattr(inner, "__name__", "")}
            if literal is not None:
                names.update(get_args(literal.annotation))
            if part in names or (isinstance(part, str) and part.endswith(f", {inner.__name__}]")):
                return member
    return None


def validate(doc: Located, model: type[M]) -> M:
    """Validate a parsed document against a model; raise LoadError with every problem located."""
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems = []
        for error in _relevant(exc.errors()):
            path = doc.data_path(tuple(error["loc"]))
            message, at_key = _message(error, model, path)
            problems.append(doc.problem(path, message, at_key=at_key))
        raise LoadError(_dedupe(problems)) from None


_SCALAR_TAGS = ("float", "int", "str", "bool")


def _relevant(errors: list[Any]) -> list[Any]:
    """Drop the complaints of union branches that cannot apply: a number branch about a mapping,
    a mapping branch about a number."""
    out = []
    for error in errors:
        scalar_branch = any(isinstance(p, str) and p.endswith(_SCALAR_TAGS) for p in error["loc"])
        structured = isinstance(error["input"], dict | list)
        if scalar_branch and structured:
            continue
        structure_branch = error["type"] in ("model_type", "dict_type", "model_attributes_type")
        has_sibling = any(e is not error and e["loc"][:-1] == error["loc"][:-1] for e in errors)
        if structure_branch and not structured and has_sibling:
            continue
        out.append(error)
    return out


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return sorted(set(problems))


def load(path: Path, model: type[M], display_name: str | None = None) -> M:
    """Parse and validate one file."""
    return validate(parse_yaml(path, display_name), model)
