"""The fast YAML reader (libyaml's events built into ruamel.yaml's round-trip containers) and the
manifest's names of input files. Load time is printed by benchmarks/load.py, never asserted here."""

from __future__ import annotations

import datetime
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, REPO
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from typer.testing import CliRunner

from simulator.cli import app
from simulator.model.loading import load_library
from simulator.model.yaml_reader import _ROUND_TRIP, LoadError, _Reader, _unshare, parse_yaml

SHIPPED_YAML = sorted(REPO.glob("modules/*.yaml")) + sorted(REPO.glob("rules/**/*.yaml"))
TEST_YAML = sorted(DATA.glob("**/*.yaml"))


def _marked(node: Any) -> Any:
    """A comparable picture of parsed data: every value with its type, every container with the
    line/column marks of itself and of its keys, values and items, in order."""
    if isinstance(node, CommentedMap | CommentedSeq):
        marks = node.lc.data or {}
        items = node.items() if isinstance(node, CommentedMap) else enumerate(node)
        kind = "map" if isinstance(node, CommentedMap) else "seq"
        return kind, node.lc.line, node.lc.col, [(_marked(k), _marked(v), marks.get(k)) for k, v in items]
    for kind in (bool, int, float, str):  # ruamel.yaml's subclasses (ScalarFloat, ...) hold the same values
        if isinstance(node, kind):
            return kind.__name__, repr(kind(node))
    return type(node).__name__, node


def _round_trip(text: str) -> tuple[Any, tuple]:
    """What the round-trip loader alone made of a text, as parse_yaml pictures it."""
    data = YAML(typ="rt", pure=True).load(text)
    uses: dict[int, list[tuple[str | int, ...]]] = {}
    picture = _marked(data)
    _unshare(data, (), uses)
    return picture, tuple(tuple(paths) for paths in uses.values() if len(paths) > 1)


@pytest.mark.parametrize("path", SHIPPED_YAML + TEST_YAML, ids=lambda p: str(p.relative_to(REPO)))
def test_the_reader_builds_what_the_round_trip_loader_builds(path: Path) -> None:
    """Values and their types, key order, line/column marks of every key, value and item, and the
    nodes shared through YAML aliases and '<<' merges: the same as ruamel.yaml's round-trip loader."""
    text = path.read_text(encoding="utf-8")
    try:
        expected = _round_trip(text)
    except Exception:
        with pytest.raises(LoadError):
            parse_yaml(path)
        return
    assert path in TEST_YAML or _Reader(path.name).read(text) is not _ROUND_TRIP  # shipped: never ruamel.yaml
    assert _read_and_unshared(path) == expected


MARKS = [
    "a:\nb: 1\n",  # an empty value is marked where the next key starts
    "a: # c\nb: 1\n",  # ... but right after the ':' when a comment follows it and a key comes next
    "a:\n  b:   # c\n\n  c: 1\n",
    "a:\n  b: # c\nc: 1\n",
    "s:\n  t: ",  # ... at the very end of a text without a final line break
    "x: &x {a: 1, b: [2]}\ny:\n  <<: *x\n  b: 3\n",  # merged keys come after the mapping's own, unmarked
    "x: &x [1, {a: 2}]\ny: *x\nz: [*x, *x]\n",  # an alias is marked where its anchor's node starts
    "a: {b: , c: 1}\n",  # an empty value in braces: left to ruamel.yaml
    "a: !!float 1\nb: [x, y]\n",  # a tag: left to ruamel.yaml
    "a: &t true\nb: *t\n",  # ruamel.yaml's anchored true is a ScalarBoolean, an int: left to it
]


@pytest.mark.parametrize("text", MARKS, ids=range(len(MARKS)))
def test_marks_are_those_of_the_round_trip_loader(tmp_path: Path, text: str) -> None:
    path = tmp_path / "marks.yaml"
    path.write_text(text)
    assert _read_and_unshared(path) == _round_trip(text)


def _read_and_unshared(path: Path) -> tuple[Any, tuple]:
    """What parse_yaml made of a file: its data as read (before aliases get their own copies) and its aliases."""
    text = path.read_text(encoding="utf-8")
    read = _Reader(path.name).read(text)
    document = parse_yaml(path)  # a copy keeps the marks: ruamel.yaml's data after unsharing pictures the same
    return _marked(document.data if read is _ROUND_TRIP else read), document.aliases


PLAIN_SCALARS = [
    "yes", "no", "on", "True", "FALSE", "~", "null", "", "0x1F", "0o17", "0b101", "010", "1_000", "-0",
    "1e3", ".5", "-.5", "1.", "+1.5e-3", ".5e3", "1_0.2_5", ".inf", "-.INF", ".nan", "1:20", "12:30:00",
    "2024", "'quoted'", '"1"', "<<x", "=x", "0.1.2", "-x",
]  # fmt: skip


@pytest.mark.parametrize("scalar", PLAIN_SCALARS)
def test_scalars_resolve_as_the_round_trip_loader_resolves_them(scalar: str) -> None:
    """YAML 1.2 as ruamel.yaml reads it: `yes` is a string, 010 is ten, 1e3 a float, 1:20 a string."""
    text = f"value: {scalar}\n"
    data = _Reader("s.yaml").read(text)
    expected = YAML(typ="rt", pure=True).load(text)["value"]
    assert _marked(data["value"]) == _marked(expected)


def test_features_left_to_the_round_trip_loader_keep_its_values(tmp_path: Path) -> None:
    """Tags, timestamps and directives are read by ruamel.yaml itself, as before."""
    path = tmp_path / "rare.yaml"
    path.write_text("a: !!float 1\nb: 2024-01-01\n")
    assert _Reader(path.name).read(path.read_text()) is _ROUND_TRIP
    assert parse_yaml(path).data == {"a": 1.0, "b": datetime.date(2024, 1, 1)}
    path.write_text("%YAML 1.1\n---\na: yes\n")
    assert parse_yaml(path).data == {"a": True}  # a YAML 1.1 document: ruamel.yaml reads `yes` as true


def _problems(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LoadError) as caught:
        parse_yaml(path, "bad.yaml")
    return str(caught.value)


WORDED_BY_THE_ROUND_TRIP_LOADER = {
    "a: 1\nb: 2\na: 3\n": "bad.yaml:3:1: a: key 'a' is defined twice (lines 1 and 3)",
    "x: &x {a: 1}\ny:\n  <<: *x\n  <<: *x\n": """bad.yaml:4:3: YAML syntax error: while constructing a mapping """
    """found duplicate merge key "<<\"""",
    "a: *nope\n": "bad.yaml:1:4: YAML syntax error: found undefined alias 'nope'",
    "a: 1\n---\nb: 2\n": "bad.yaml:2:1: YAML syntax error: expected a single document in the stream "
    "but found another document",
    "a:\n\tb: 1\n": "bad.yaml:2:1: YAML syntax error: while scanning for the next token found character '\\t' "
    "that cannot start any token",
}


@pytest.mark.parametrize("text", WORDED_BY_THE_ROUND_TRIP_LOADER, ids=range(len(WORDED_BY_THE_ROUND_TRIP_LOADER)))
def test_yaml_errors_keep_the_round_trip_loaders_words_and_positions(tmp_path: Path, text: str) -> None:
    assert _problems(tmp_path, text) == WORDED_BY_THE_ROUND_TRIP_LOADER[text]


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
BOMB = "4:4: YAML aliases copy more than 100,000 values; refusing to expand them"
DEEP = "YAML nesting deeper than 100 levels"
SYNTAX, SPECIAL = "YAML syntax error:", "special characters are not allowed"
TAB = 'tab: "\t"\n'  # a tab sends a file to ruamel.yaml: the same limits apply to what it reads
LOCATED = [  # inputs that raised a traceback, hung, or passed silently before
    pytest.param("a: 1\x00\n", f"1:5: {SYNTAX} unacceptable character #x0000: {SPECIAL}", id="nul"),
    pytest.param("a:\n  b: \x07\n", f"2:6: {SYNTAX} unacceptable character #x0007: {SPECIAL}", id="control"),
    pytest.param('a: "\\ud800"\n', f"1:7: {SYNTAX} while parsing a quoted scalar found invalid Unicode character "
                 "escape code", id="surrogate"),
    pytest.param("a: " + "[" * 150 + "]" * 150 + "\n", f"1:103: {DEEP}", id="deep"),
    pytest.param("a: " + "[" * 5000 + "]" * 5000 + "\n", f"1:1003: {SYNTAX} while increasing flow level exceeded "
                 "maximum nesting depth", id="deeper"),
    pytest.param(BILLION_LAUGHS, BOMB, id="bomb"),
    pytest.param("a: &x [1, {b: *x}]\n", "1:12: a YAML alias cannot refer to a node that contains it", id="cycle"),
    pytest.param("a: 0b_\n", "1:4: cannot read '0b_' as a number", id="number"),
    pytest.param(BILLION_LAUGHS + TAB, BOMB, id="bomb-ruamel"),
    pytest.param(TAB + "a: " + "[" * 150 + "]" * 150 + "\n", f"2:103: {DEEP}", id="deep-ruamel"),
    pytest.param(TAB + "a: " + "[" * 5000 + "]" * 5000 + "\n", f"1:1: {DEEP}", id="deeper-ruamel",
                 marks=pytest.mark.slow),  # ruamel.yaml takes seconds to overflow its stack
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), LOCATED)
def test_bad_yaml_gives_a_located_error(tmp_path: Path, text: str, expected: str) -> None:
    assert _problems(tmp_path, text) == f"bad.yaml:{expected}"


def test_a_nul_byte_in_a_module_fails_cleanly_in_the_cli(tmp_path: Path) -> None:
    module = tmp_path / "nul.yaml"
    module.write_bytes((DATA / "calibration" / "toy.yaml").read_bytes().replace(b"version: 1", b"version: 1\x00"))
    result = CliRunner().invoke(app, ["check", str(module), "--rules", str(REPO / "rules")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "nul.yaml:4:11: YAML syntax error: unacceptable character #x0000" in result.stderr


def test_a_key_merged_by_yaml_has_a_position(tmp_path: Path) -> None:
    """A key that '<<' merges in has no mark in its mapping (ruamel.yaml's marks neither): a path through it
    reports the merged node where it is written, or the merging mapping (this raised a KeyError before)."""
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b\n  rate: 1\n  inner: {x: 1}\nuse:\n  <<: *b\n  own: 2\n")
    document = parse_yaml(path)
    assert list(document.data["use"]) == ["own", "rate", "inner"]
    assert document.position(("use", "own")) == (6, 8)
    assert document.position(("use", "rate")) == (5, 3)
    assert document.position(("use", "inner", "x")) == (3, 14)
    assert document.aliases == ((("base", "inner"), ("use", "inner")),)


# --- the manifest's names of input files ------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shipped_inputs_are_named_relative_to_the_library_root_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    from_checkout = load_library().file_sha256
    monkeypatch.chdir(tmp_path)
    elsewhere = load_library().file_sha256
    assert elsewhere == from_checkout
    for name in ("modules/asthma.yaml", "rules/demographics.yaml", "rules/targets/calibration/asthma.fitted.yaml",
                 "rules/life_tables/male.csv", "rules/population_2024.csv", "rules/vital_signs.yaml"):  # fmt: skip
        assert elsewhere[name] == _digest(REPO / name)
    assert all(name.startswith(("modules/", "rules/")) for name in elsewhere)


def test_own_directories_are_named_modules_and_rules_and_messages_keep_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(DATA / "fixture" / "modules", tmp_path / "mine" / "diseases")
    shutil.copytree(DATA / "fixture" / "rules", tmp_path / "mine" / "population")
    monkeypatch.chdir(tmp_path / "mine")
    names = load_library(Path("diseases"), Path("population")).file_sha256
    assert names["modules/disease.yaml"] == _digest(tmp_path / "mine" / "diseases" / "disease.yaml")
    assert names["rules/demographics.yaml"] == _digest(tmp_path / "mine" / "population" / "demographics.yaml")
    assert "rules/life_tables/male.csv" in names
    assert all(name.startswith(("modules/", "rules/")) for name in names)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(DATA / "calibration" / "toy.yaml", tmp_path / "elsewhere" / "toy.yaml")
    files = [*sorted((tmp_path / "mine" / "diseases").glob("*.yaml")), tmp_path / "elsewhere" / "toy.yaml"]
    names = load_library(files, tmp_path / "mine" / "population").file_sha256
    assert {"modules/mine/diseases/flu.yaml", "modules/elsewhere/toy.yaml"} <= set(names)

    (tmp_path / "mine" / "diseases" / "flu.yaml").write_text("name: [unclosed\n")
    with pytest.raises(LoadError, match=r"^mine/diseases/flu\.yaml:2:1: YAML syntax error"):
        load_library(Path("mine/diseases"), Path("mine/population"))
