"""Read YAML files into data that knows where every key and value is written (file:line:col).

YAML is read from libyaml's event stream (PyYAML's C parser: no Python object is ever constructed
from a tag) into ruamel.yaml's round-trip containers with their line/column marks, as ruamel.yaml's
round-trip loader would build them but about twenty times faster. A file with a syntax error, with
one of the few features left to ruamel.yaml (tags, timestamps, directives, complex or duplicate keys)
or with characters the two scan differently (tabs) goes to ruamel.yaml itself: error messages keep
its wording and such files its reading. Files are untrusted input: nothing in them is evaluated as
code, and a file cannot make reading hang, overflow the stack or exhaust memory (its size, nesting
and alias expansion are limited; _check_shape).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError
from yaml.cyaml import CParser


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
                marks = (node.lc.data or {}).get(part)
                if marks is not None:
                    line, col = (marks[0] + 1, marks[1] + 1) if at_key and last else (marks[2] + 1, marks[3] + 1)
                elif isinstance(node[part], CommentedMap | CommentedSeq):  # merged in by '<<': where it is written
                    line, col = node[part].lc.line + 1, node[part].lc.col + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                item_line, item_col = node.lc.item(part)
                line, col = item_line + 1, item_col + 1
                node = node[part]
        return line, col

    def problem(self, path: tuple[str | int, ...], message: str, at_key: bool = False) -> Problem:
        line, col = self.position(path, at_key=at_key)
        return Problem(self.file, line, col, format_path(path), message)


def clip(text: str, limit: int = 60) -> str:
    """Text from a file as a message shows it: at most `limit` characters (a file may hold a line of megabytes)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_path(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


MAX_DEPTH = 100  # nesting levels a file may use (the shipped files use at most 14)
MAX_ALIAS_VALUES = 100_000  # values that YAML aliases may copy into a file (a guard against alias bombs)
_TOO_DEEP = f"YAML nesting deeper than {MAX_DEPTH} levels"


# The largest a module or rules file may be, in MB: 20 times the largest shipped file (48 kB). Checking a file
# costs about 5 s per MB at worst (a module of 36,000 states per MB), so this bounds what one file can cost.
MAX_FILE_MB = 1.0
MAX_FILE_MB_VARIABLE = "EHRSIM_MAX_FILE_MB"  # the environment variable that sets another limit


def max_file_mb(name: str) -> float:
    """The size limit for YAML files in MB: MAX_FILE_MB, or the environment's EHRSIM_MAX_FILE_MB."""
    value = os.environ.get(MAX_FILE_MB_VARIABLE, "").strip()
    if not value:
        return MAX_FILE_MB
    try:
        limit = float(value)
    except ValueError:
        limit = math.nan
    if not limit > 0 or math.isinf(limit):
        message = f"{MAX_FILE_MB_VARIABLE} must be a positive number of MB (got {value[:40]!r})"
        raise LoadError([Problem(name, 1, 1, "", message)])
    return limit


def parse_yaml(path: Path, display_name: str | None = None) -> Located:
    """Parse one YAML file (safe constructors only) keeping positions."""
    name = display_name or str(path)
    limit_mb = max_file_mb(name)
    try:
        size = path.stat().st_size
        if size > limit_mb * 1_000_000:
            message = (
                f"the file holds {size:,} bytes, more than the {limit_mb:g} MB a module or rules file may hold "
                f"(set the environment variable {MAX_FILE_MB_VARIABLE} to raise the limit)"
            )
            raise LoadError([Problem(name, 1, 1, "", message)])
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LoadError([Problem(name, 1, 1, "", f"cannot read file: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise LoadError([Problem(name, 1, 1, "", "file is not valid UTF-8")]) from None
    data = _read(name, text)
    if not isinstance(data, CommentedMap):
        raise LoadError([Problem(name, 1, 1, "", "the file must hold a mapping of keys to values")])
    _check_shape(Located(name, data))
    uses: dict[int, list[tuple[str | int, ...]]] = {}
    _unshare(data, (), uses)
    return Located(name, data, tuple(tuple(paths) for paths in uses.values() if len(paths) > 1))


def _read(name: str, text: str) -> Any:
    """The data of a YAML text: built from libyaml's events, or read by ruamel.yaml where _Reader leaves
    the text to it (and always where the two scan a text differently)."""
    if any(c in text for c in _SCANNED_DIFFERENTLY) or text.find("\ufeff", 1) >= 0:
        return _round_trip(name, text, None)
    try:
        data = _Reader(name).read(text)
    except yaml.YAMLError as exc:
        problem = _libyaml_problem(name, text, exc)
        if getattr(exc, "problem", None) == "exceeded maximum nesting depth":  # ruamel.yaml takes seconds to fail
            raise LoadError([problem]) from None
        return _round_trip(name, text, problem)
    return _round_trip(name, text, None) if data is _ROUND_TRIP else data


def _check_shape(document: Located) -> None:
    """Refuse, before anything recurses through the data or copies the nodes that YAML aliases share, a
    node that contains itself, nesting deeper than MAX_DEPTH, and aliases that copy more than
    MAX_ALIAS_VALUES values (a "billion laughs" file, a few lines long, would otherwise never load)."""
    sizes: dict[int, int] = {}  # id of a container -> its values, aliases expanded
    inside: set[int] = set()  # ids of the containers being walked
    copied = 0

    def refuse(path: tuple[str | int, ...], message: str) -> LoadError:
        return LoadError([Problem(document.file, *document.position(path, at_key=True), "", message)])

    def expanded(node: CommentedMap | CommentedSeq, path: tuple[str | int, ...]) -> int:
        nonlocal copied
        if id(node) in sizes:  # another use of a node an alias shares: _unshare copies it
            copied += sizes[id(node)]
            if copied > MAX_ALIAS_VALUES:
                raise refuse(path, f"YAML aliases copy more than {MAX_ALIAS_VALUES:,} values; refusing to expand them")
            return sizes[id(node)]
        if id(node) in inside:
            raise refuse(path, "a YAML alias cannot refer to a node that contains it")
        if len(path) >= MAX_DEPTH:
            raise refuse(path, _TOO_DEEP)
        inside.add(id(node))
        size = 1 + sum(expanded(v, (*path, k)) if isinstance(v, _CONTAINERS) else 1 for k, v in _items(node))
        inside.discard(id(node))
        sizes[id(node)] = size
        return size

    expanded(document.data, ())


_ROUND_TRIP: Any = object()  # what _Reader leaves to ruamel.yaml: a feature it does not build, or an error to word
_MERGE: Any = object()  # a plain '<<' key: merge the mapping(s) given as its value
_NO_KEY: Any = object()  # a mapping waits for its next key
_CONTAINERS = (CommentedMap, CommentedSeq)
# Tabs, YAML 1.1's line breaks and a byte order mark after the start are scanned differently by libyaml
# and ruamel.yaml (what they accept, the columns they count): ruamel.yaml reads such files, as before.
_SCANNED_DIFFERENTLY = "\t\x85\u2028\u2029"
_PLAIN_ANCHOR = re.compile(r"[A-Za-z0-9_-]+")  # other anchor names: ruamel.yaml's scanner and libyaml's differ


def _is_plain_anchor(name: str | None) -> bool:
    return name is None or _PLAIN_ANCHOR.fullmatch(name) is not None


_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULLS = {"", "~", "null", "Null", "NULL"}
# The YAML 1.2 patterns of ruamel.yaml's resolver (ruamel.yaml/resolver.py), tried in its order.
_FLOAT = re.compile(
    r"""[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN)""",
    re.X,
)
_INT = re.compile(r"[-+]?(?:0b[0-1_]+|0o?[0-7_]+|[0-9_]+|0x[0-9a-fA-F_]+)")
_TIMESTAMP = re.compile(
    r"""[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
    |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
    (?:[Tt]|[ \t]+)[0-9][0-9]?
    :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
    (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?""",
    re.X,
)
_BASES = (("0b", 2), ("0x", 16), ("0o", 8))


def _number(text: str, is_float: bool) -> int | float:
    """A YAML 1.2 int or float as ruamel.yaml computes it (underscores dropped, 0b/0o/0x bases)."""
    digits = text.replace("_", "").lower() if is_float else text.replace("_", "")
    sign = -1 if digits[0] == "-" else 1
    digits = digits[1:] if digits[0] in "+-" else digits
    if is_float:
        return sign * math.inf if digits == ".inf" else math.nan if digits == ".nan" else sign * float(digits)
    base = next((b for prefix, b in _BASES if digits.startswith(prefix)), 10)
    return sign * int(digits[2:] if base != 10 else digits, base)


class _Frame:
    """A mapping or sequence being read: its container, its marks, the key that waits for its value."""

    __slots__ = ("container", "is_block_map", "is_map", "key", "key_mark", "lines", "mark", "merges")

    def __init__(self, container: CommentedMap | CommentedSeq, event: Any):
        self.container = container
        self.is_map = type(container) is CommentedMap
        self.is_block_map = self.is_map and not event.flow_style
        self.lines: dict[Any, list[int]] = {}  # ruamel.yaml's LineCol data: key -> [line, col, line, col]
        self.mark = event.start_mark
        self.key: Any = _NO_KEY
        self.key_mark: Any = None
        self.merges: list[CommentedMap] | None = None


class _Reader:
    """Builds ruamel.yaml's round-trip data (CommentedMap/CommentedSeq with the same line/column marks,
    an alias the very object of its anchor, '<<' merges) from libyaml's events, without recursion.
    Returns _ROUND_TRIP when ruamel.yaml must read the text; raises LoadError on a number Python cannot
    read (ruamel.yaml raised a traceback on those)."""

    def __init__(self, name: str):
        self.name = name
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, Any]] = {}  # name -> (object, mark)
        self.documents = 0
        self.root: Any = None
        self.round_trip = False
        self.empty_value: tuple[list[int], int] | None = None  # the marks of a `key:` with nothing after it, and
        # the index of the end of its ':' in the text

    def read(self, text: str) -> Any:
        for event in yaml.parse(text, Loader=CParser):
            if self.empty_value is not None:
                self._mark_empty_value(text, event)
            kind = type(event)
            if kind is yaml.ScalarEvent:
                self._scalar(event)
            elif kind is yaml.AliasEvent:
                self._alias(event)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                self._start(event, CommentedMap() if kind is yaml.MappingStartEvent else CommentedSeq())
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                self._end()
            elif kind is yaml.DocumentStartEvent:
                self.documents += 1
                self.round_trip |= self.documents > 1 or bool(event.version or event.tags)
        return _ROUND_TRIP if self.round_trip else self.root

    def _mark_empty_value(self, text: str, event: Any) -> None:
        """ruamel.yaml marks the empty value of a block mapping's `key:` where the next token starts, unless a
        comment follows the ':' and another key comes next: then right after the ':', as libyaml does."""
        marks, index = self.empty_value  # type: ignore[misc]
        self.empty_value = None
        line_end = text.find("\n", index)
        is_commented = text[index : line_end if line_end >= 0 else None].lstrip(" ").startswith("#")
        if is_commented and type(event) is not yaml.MappingEndEvent:
            return
        if event.start_mark.index < len(text):
            marks[2:] = [event.start_mark.line, event.start_mark.column]
        else:  # the end of a text without a final line break: libyaml counts one more line
            marks[2:] = [text.count("\n"), len(text) - text.rfind("\n") - 1]

    def _scalar(self, event: Any) -> None:
        value: Any = event.value
        self.round_trip |= event.tag is not None or not _is_plain_anchor(event.anchor)
        if event.implicit[0] and not event.style:  # a plain scalar: resolve it as YAML 1.2
            value = self._resolve(value, event.start_mark)
        is_empty = not event.value and not event.style
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, event.start_mark)
            # `&name: x`: ruamel.yaml reads the ':' as part of the name; `&name true`: it makes an int of it
            self.round_trip |= is_empty or isinstance(value, bool)
        self._add(value, event.start_mark, is_empty=is_empty and event.anchor is None)

    def _resolve(self, text: str, mark: Any) -> Any:
        if text in _BOOLS:
            return _BOOLS[text]
        if text in _NULLS:
            return None
        if text[:1] in "-+0123456789.":
            is_float = _FLOAT.fullmatch(text) is not None
            if is_float or _INT.fullmatch(text):
                try:
                    return _number(text, is_float)
                except ValueError:
                    raise LoadError([self._problem(mark, f"cannot read '{text[:40]}' as a number")]) from None
        if text == "<<":
            return _MERGE
        self.round_trip |= text == "=" or _TIMESTAMP.fullmatch(text) is not None
        return text

    def _alias(self, event: Any) -> None:
        if event.anchor not in self.anchors or not _is_plain_anchor(event.anchor):
            self.round_trip = True  # an undefined alias (or an odd name): ruamel.yaml decides
            self._add(None, event.start_mark)
            return
        value, mark = self.anchors[event.anchor]
        self._add(value, mark)  # ruamel.yaml marks an alias where its anchor's node starts

    def _start(self, event: Any, container: CommentedMap | CommentedSeq) -> None:
        self.round_trip |= event.tag is not None or not _is_plain_anchor(event.anchor)
        container.lc.line, container.lc.col = event.start_mark.line, event.start_mark.column
        if event.anchor is not None:
            self.anchors[event.anchor] = (container, event.start_mark)
        self.stack.append(_Frame(container, event))

    def _end(self) -> None:
        frame = self.stack.pop()
        container = frame.container
        container.lc.data = frame.lines
        if frame.merges:  # ruamel.yaml's add_yaml_merge: the first mapping that has a key gives its value
            for merged in frame.merges:
                for key, value in merged.items():
                    if key not in container:
                        super(CommentedMap, container).__setitem__(key, value)
        self._add(container, frame.mark)

    def _add(self, value: Any, mark: Any, is_empty: bool = False) -> None:
        """Put a value into the container being read (or make it the document)."""
        if not self.stack:
            self.root = value if self.documents == 1 else self.root
            self.round_trip |= value is _MERGE
            return
        frame = self.stack[-1]
        container = frame.container
        if not frame.is_map:
            frame.lines[len(container)] = [mark.line, mark.column]
            list.append(container, value)  # CommentedSeq.append would also shift comments: there are none
            self.round_trip |= value is _MERGE
        elif frame.key is _NO_KEY:
            self.round_trip |= type(value) in _CONTAINERS  # a complex key
            frame.key, frame.key_mark = value, mark
        else:
            key, frame.key = frame.key, _NO_KEY
            if key is _MERGE:
                self._merge(frame, value)
            elif type(key) in _CONTAINERS or key in frame.lines or value is _MERGE:
                self.round_trip = True  # a complex or duplicate key, a misplaced '<<': ruamel.yaml words it
            else:
                container[key] = value
                frame.lines[key] = [frame.key_mark.line, frame.key_mark.column, mark.line, mark.column]
                if is_empty and frame.is_block_map:
                    self.empty_value = frame.lines[key], mark.index
                elif is_empty:  # ruamel.yaml marks an empty value in braces at the end of its ':'
                    self.round_trip = True

    def _merge(self, frame: _Frame, value: Any) -> None:
        """'<<: *anchor' or '<<: [*a, *b]': mappings whose keys the mapping takes when it lacks them."""
        merges = [value] if isinstance(value, CommentedMap) else value if isinstance(value, CommentedSeq) else None
        if frame.merges is not None or merges is None or not all(isinstance(m, CommentedMap) for m in merges):
            self.round_trip = True  # a second '<<' or something else than mappings: ruamel.yaml words the error
            return
        frame.merges = list(merges)

    def _problem(self, mark: Any, message: str) -> Problem:
        return Problem(self.name, mark.line + 1, mark.column + 1, "", message)


def _libyaml_problem(name: str, text: str, exc: yaml.YAMLError) -> Problem:
    """libyaml's own account of a syntax error, for when ruamel.yaml accepts what libyaml refuses."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        return Problem(name, mark.line + 1, mark.column + 1, "", f"YAML syntax error: {message}")
    if isinstance(exc, yaml.reader.ReaderError):  # libyaml counts bytes
        position = len(text.encode("utf-8")[: exc.position].decode("utf-8", "ignore"))
        return _reader_problem(name, text, position, exc.character, exc.reason)
    return Problem(name, 1, 1, "", f"YAML syntax error: {exc}")


def _reader_problem(name: str, text: str, position: int, character: int, reason: str) -> Problem:
    """A character YAML does not allow (a NUL byte, a control character), at its line and column."""
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return Problem(name, line, column, "", f"YAML syntax error: unacceptable character #x{character:04x}: {reason}")


def _round_trip(name: str, text: str, libyaml_problem: Problem | None) -> Any:
    """ruamel.yaml's reading of a text that _Reader leaves to it: its data, or its error message (the
    wording that the golden error files hold). Where libyaml found an error, it stands when ruamel.yaml
    reports none (an escaped lone surrogate, nesting beyond its stack, a few odd constructs). A key
    given twice in a mapping is reported with its path and the lines of both."""
    reader = YAML(typ="rt", pure=True)
    reader.Constructor = _Constructor
    try:
        data = reader.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise LoadError([Problem(name, line, col, "", f"YAML syntax error: {message}")]) from None
    except ReaderError as exc:
        raise LoadError([_reader_problem(name, text, exc.position, exc.character, exc.reason)]) from None
    except RecursionError:
        raise LoadError([libyaml_problem or Problem(name, 1, 1, "", _TOO_DEEP)]) from None
    except ValueError as exc:  # a number Python cannot read
        raise LoadError([libyaml_problem or Problem(name, 1, 1, "", f"YAML syntax error: {exc}")]) from None
    problems = _duplicate_problems(name, data, reader.constructor.duplicates)
    if libyaml_problem is not None or problems:
        raise LoadError([*problems, *([libyaml_problem] if libyaml_problem else [])])
    return data


class _Constructor(RoundTripConstructor):
    """ruamel.yaml's round-trip constructor, noting each key given twice in a mapping (the mapping, the key,
    the line of its first use, the mark of the second) where ruamel.yaml raises a dump of both values."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.duplicates: list[tuple[CommentedMap, Any, int, Any]] = []

    def check_mapping_key(self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any) -> bool:
        if key not in mapping:
            return True
        self.duplicates.append((mapping, key, mapping.lc.data[key][0], key_node.start_mark))
        return False


def _duplicate_problems(name: str, data: Any, duplicates: list[tuple[CommentedMap, Any, int, Any]]) -> list[Problem]:
    """`states.s1: state 's1' is defined twice (lines 8 and 10)`, at the second use of the key."""
    paths = _paths_of({id(mapping) for mapping, *_ in duplicates}, data)
    problems = []
    for mapping, key, first_line, mark in duplicates:
        path = (*paths.get(id(mapping), ()), key)
        kind = "state" if path[:-1] == ("states",) else "key"
        message = f"{kind} '{clip(str(key))}' is defined twice (lines {first_line + 1} and {mark.line + 1})"
        problems.append(Problem(name, mark.line + 1, mark.column + 1, format_path(path), message))
    return problems


def _paths_of(targets: set[int], data: Any) -> dict[int, tuple[Any, ...]]:
    """The path of the first place where each container whose id is in `targets` sits in `data` (each
    container is visited once, so the nodes that aliases share are not walked again)."""
    found: dict[int, tuple[Any, ...]] = {}
    seen: set[int] = set()
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack and len(found) < len(targets):
        path, node = stack.pop()
        if not isinstance(node, _CONTAINERS) or id(node) in seen:
            continue
        seen.add(id(node))
        if id(node) in targets:
            found[id(node)] = path
        stack.extend(((*path, key), child) for key, child in reversed(list(_items(node))))
    return found


def _items(node: CommentedMap | CommentedSeq) -> Iterable[tuple[Any, Any]]:
    """The (key, value) pairs of a mapping, the (index, item) pairs of a sequence."""
    return node.items() if isinstance(node, CommentedMap) else enumerate(node)


def _unshare(
    node: CommentedMap | CommentedSeq, path: tuple[str | int, ...], uses: dict[int, list[tuple[str | int, ...]]]
) -> None:
    """Give each YAML alias (*name) its own copy of the anchored node (positions kept): the parsed
    document is a tree, so a fitted number written at one path does not change every alias of it.
    `uses` collects the paths of each parsed node (id: paths), so that callers can see the aliases."""
    for key, child in list(_items(node)):
        if not isinstance(child, CommentedMap | CommentedSeq):
            continue
        here = (*path, key)
        shared = id(child) in uses
        uses.setdefault(id(child), []).append(here)
        if shared:
            child = _copied(child, {})
            node[key] = child
        _unshare(child, here, uses)


def _copied(node: CommentedMap | CommentedSeq, memo: dict[int, Any]) -> CommentedMap | CommentedSeq:
    """A copy of a parsed container and all inside it, with its line/column marks, as copy.deepcopy makes
    it (a node shared inside it is shared in the copy) but in linear time: ruamel.yaml's deepcopy copies
    a sequence's marks again for each of its items (a 60,000-value alias fan-out took minutes)."""
    if id(node) in memo:
        return memo[id(node)]
    copied = type(node)()
    memo[id(node)] = copied
    if isinstance(node, CommentedMap):
        for key, value in node.items():
            copied[key] = _copied(value, memo) if isinstance(value, _CONTAINERS) else value
    else:
        list.extend(copied, [_copied(item, memo) if isinstance(item, _CONTAINERS) else item for item in node])
    copied.lc.line, copied.lc.col = node.lc.line, node.lc.col
    copied.lc.data = None if node.lc.data is None else dict(node.lc.data)
    return copied
