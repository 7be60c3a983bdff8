"""Validate parsed module and rules files against their pydantic models, every error located as file:line:col.

yaml_reader reads a file into data that knows where each key and value is written; here pydantic's
errors are mapped back to those positions (through the union tags that pydantic puts in its paths),
worded for a person, and unknown names get the closest valid name suggested.
"""

from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from simulator.model.schema import GUARD_KEYS
from simulator.model.yaml_reader import LoadError, Located, Problem, clip, format_path, parse_yaml

__all__ = ["LoadError", "Located", "Problem", "format_path", "load", "parse_yaml", "suggest", "validate"]

M = TypeVar("M", bound=BaseModel)


def suggest(name: str, valid: list[str] | set[str]) -> str:
    """' (did you mean X?)' for the closest valid name, or ''."""
    close = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _data_path(doc: Located, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """The part of a pydantic loc that names real keys/indices in the data (drops union tags)."""
    node = doc.data
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


def _names_sibling_key(node: dict, part: str | int, rest: tuple[str | int, ...]) -> bool:
    """Whether `part` holds a scalar and the next loc part is another key of the same mapping: one given,
    or a field the mapping lacks (a since guard without its unit)."""
    if not rest or isinstance(node[part], dict | list) or rest[0] == part:
        return False
    return rest[0] in node or isinstance(rest[0], str) and _is_field_name(rest[0])


def _is_field_name(part: str) -> bool:
    """Whether a loc part can be a model's field (pydantic's union tags: 'float', 'constrained-float', ...)."""
    return part.isidentifier() and part[:1].islower() and part not in _TAGS


_TAGS = {"age", "calendar", "exact", "uniform", "normal", "exponential", "lognormal", "gamma", "float", "int"}


def _message(error: dict[str, Any], model: type[BaseModel], path: tuple[str | int, ...]) -> tuple[str, bool]:
    """A readable message for one pydantic error, and whether it points at a key."""
    kind = error["type"]
    if kind == "extra_forbidden":
        valid = _valid_fields(model, tuple(error["loc"][:-1]))
        return f"unknown key '{clip(str(path[-1]))}'{suggest(str(path[-1]), valid)}", True
    if kind == "missing":
        return f"required key '{path[-1]}' is missing" if path else "required key is missing", False
    if kind == "invalid_guard":
        keys = list(error["input"]) if isinstance(error["input"], dict) else []
        hint = suggest(str(keys[0]), set(GUARD_KEYS)) if keys else ""
        return f"{error['msg']}{hint}", False
    if kind == "union_tag_invalid" and "distribution" in str(error.get("ctx", {})):
        tag = str(error["ctx"].get("tag", ""))
        valid = ["exact", "uniform", "normal", "exponential", "lognormal", "gamma"]
        return f"unknown distribution '{clip(tag)}'{suggest(tag, valid)}; expected one of {', '.join(valid)}", False
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if kind == "literal_error":
        expected = [x.strip(" '") for x in error["ctx"]["expected"].replace(" or ", ", ").split(",")]
        message += f" (got {clip(repr(value))}){suggest(str(value), expected)}"
    elif not kind.startswith("value_error") and isinstance(value, str | int | float | bool):
        message += f" (got {clip(repr(value))})"
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
        errors = _relevant(exc.errors())
        problems = []
        for error in errors[:MAX_LISTED]:
            path = _data_path(doc, tuple(error["loc"]))
            message, at_key = _message(error, model, path)
            problems.append(doc.problem(path, message, at_key=at_key))
        if len(errors) > MAX_LISTED:
            where = doc.position(_data_path(doc, tuple(errors[MAX_LISTED]["loc"])))
            more = f"{len(errors) - MAX_LISTED:,} more problems in this file (the first {MAX_LISTED} are listed)"
            problems.append(Problem(doc.file, *where, "", more))
        raise LoadError(_dedupe(problems)) from None


MAX_LISTED = 100  # problems listed for one file's validation; more are counted (a file may hold 100,000 bad keys)


_SCALAR_TAGS = ("float", "int", "str", "bool")


def _relevant(errors: list[Any]) -> list[Any]:
    """Drop the complaints of union branches that cannot apply: a number branch about a mapping,
    a mapping branch about a number."""
    out = []
    parents = Counter(tuple(error["loc"][:-1]) for error in errors)
    for error in errors:
        scalar_branch = any(isinstance(p, str) and p.endswith(_SCALAR_TAGS) for p in error["loc"])
        structured = isinstance(error["input"], dict | list)
        if scalar_branch and structured:
            continue
        structure_branch = error["type"] in ("model_type", "dict_type", "model_attributes_type")
        has_sibling = parents[tuple(error["loc"][:-1])] > 1
        if structure_branch and not structured and has_sibling:
            continue
        out.append(error)
    return out


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return sorted(set(problems))


def load(path: Path, model: type[M], display_name: str | None = None) -> M:
    """Parse and validate one file."""
    return validate(parse_yaml(path, display_name), model)
