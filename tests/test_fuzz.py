"""Module files are untrusted input: malformed ones are rejected with located messages, never a traceback,
a hang or unbounded memory.

A corpus of mutants of valid modules (lines deleted, duplicated or re-indented, bytes flipped, the text
cut short, values of another type, numbers made NaN, infinite or negative), made here from a fixed seed,
plus the hostile files of issue 29 (an alias bomb, deep nesting, NUL, a lone surrogate, a huge file).
Each goes through `ehrsim check FILE` in its library: accepted, or exit 1 with every problem as
`file:line:col: ...`. Then property-based tests (hypothesis) of the schema's numbers: a value outside a
field's documented range is rejected with a message located at it that names the field, one inside is
accepted."""

from __future__ import annotations

import math
import random
import re
import signal
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DATA, REPO
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simulator.cli import app
from simulator.model.loading import IN_LIBRARY
from simulator.model.parsing import LoadError, load
from simulator.model.schema import DiseaseModule
from simulator.model.yaml_reader import MAX_FILE_MB, MAX_FILE_MB_VARIABLE

FIXTURE = DATA / "fixture"
FIXTURE_LIBRARY = ("--modules", str(FIXTURE / "modules"), "--rules", str(FIXTURE / "rules"))
SHIPPED_LIBRARY = ("--rules", str(REPO / "rules"))
BASES = {  # a valid module, and the library it is checked in
    "flu": (FIXTURE / "modules" / "flu.yaml", FIXTURE_LIBRARY),
    "disease": (FIXTURE / "modules" / "disease.yaml", FIXTURE_LIBRARY),
    "atrial_fibrillation": (REPO / "modules" / "atrial_fibrillation.yaml", SHIPPED_LIBRARY),
}
MUTANTS_PER_BASE = {"flu": 110, "disease": 110, "atrial_fibrillation": 40}
FAST_SAMPLE = 25  # every 25th mutant runs in the fast loop, the rest are marked slow
HANG_S = 60.0  # a case that takes longer has hung (a mutant takes well under a second)
DOS_S = 5.0  # the hostile files are refused within this (issue 29's acceptance)
DOS_MEMORY_MB = 500.0

NUMBER = re.compile(r"(?<![\w.\-])\d+(?:\.\d+)?(?![\w.\-:])")
VALUE = re.compile(r"^(\s*(?:- )?[a-z_]+: )(\S.*)$")
OTHER_TYPES = ["[]", "{}", "text", "'3'", "-1", ".nan", ".inf", "1e400", "null", "[1, 2]", "{a: 1}", "true", "*x"]
BAD_NUMBERS = [".nan", ".NaN", ".inf", "-.inf", "-1", "-0.5", "-1e-300", "1e308", "1e999", "0", "2"]


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _delete(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    del lines[rng.randrange(len(lines))]
    return "".join(lines)


def _duplicate(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i])
    return "".join(lines)


def _reindent(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    lines[i] = " " * rng.choice([0, 1, 2, 3, 4, 6, 8]) + lines[i].lstrip(" ")
    return "".join(lines)


def _swap_indentation(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    indent_i, indent_j = (len(x) - len(x.lstrip(" ")) for x in (lines[i], lines[j]))
    lines[i], lines[j] = " " * indent_j + lines[i].lstrip(" "), " " * indent_i + lines[j].lstrip(" ")
    return "".join(lines)


def _swap_lines(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


def _flip_bytes(text: str, rng: random.Random) -> bytes:
    data = bytearray(text.encode())
    for _ in range(rng.randint(1, 3)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def _truncate(text: str, rng: random.Random) -> str:
    return text[: rng.randrange(len(text))]


def _change_type(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    candidates = [i for i, line in enumerate(lines) if VALUE.match(line.rstrip("\n"))]
    i = rng.choice(candidates)
    lines[i] = VALUE.sub(lambda m: m.group(1) + rng.choice(OTHER_TYPES), lines[i].rstrip("\n")) + "\n"
    return "".join(lines)


def _bad_number(text: str, rng: random.Random) -> str:
    numbers = list(NUMBER.finditer(text))
    found = rng.choice(numbers)
    return text[: found.start()] + rng.choice(BAD_NUMBERS) + text[found.end() :]


MUTATIONS: dict[str, Callable[[str, random.Random], str | bytes]] = {
    "delete": _delete,
    "duplicate": _duplicate,
    "reindent": _reindent,
    "swap_indentation": _swap_indentation,
    "swap_lines": _swap_lines,
    "flip_bytes": _flip_bytes,
    "truncate": _truncate,
    "change_type": _change_type,
    "bad_number": _bad_number,
}


@dataclass(frozen=True)
class Case:
    """One file for `ehrsim check`: its bytes, the library it is checked in, and whether it is hostile."""

    id: str
    data: bytes
    library: tuple[str, ...]
    is_hostile: bool = False
    expected: str | None = None  # a message the rejection must hold


def _mutants() -> list[Case]:
    cases = []
    for base, (path, library) in BASES.items():
        text = path.read_text()
        rng = random.Random(f"issue 29 {base}")  # the same corpus on every run
        for i in range(MUTANTS_PER_BASE[base]):
            kind = rng.choice(sorted(MUTATIONS))
            mutant = MUTATIONS[kind](text, rng)
            data = mutant if isinstance(mutant, bytes) else mutant.encode()
            cases.append(Case(f"{base}-{i:03d}-{kind}", data, library))
    return cases


def _lol(levels: int) -> str:
    """A "billion laughs": each anchor a list of ten aliases of the one before (10**levels values)."""
    text = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    return text + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, levels))


FLU = (FIXTURE / "modules" / "flu.yaml").read_text()
TITLE = "title: Influenza (test fixture)\n"
DEEP_BLOCK = "".join(f"{'  ' * i}k{i}:\n" for i in range(150)) + "  " * 150 + "leaf: 1\n"
HOSTILE = {  # issue 29's classes, each with what its rejection says
    "alias_bomb": (FLU + _lol(9), "YAML aliases copy more than 100,000 values"),
    "alias_bomb_tab": (FLU + _lol(9) + 'tab: "\t"\n', "YAML aliases copy more than 100,000 values"),
    "alias_fan_out": (  # 60,000 values copied: within the budget, then an unknown key
        FLU + "wide: &w [" + ", ".join(["1"] * 1000) + "]\nfan: [" + ", ".join(["*w"] * 60) + "]\n",
        "unknown key 'fan'",
    ),
    "alias_cycle": (FLU + "loop: &l [1, {b: *l}]\n", "a YAML alias cannot refer to a node that contains it"),
    "deep_flow": (FLU.replace(TITLE, "title: " + "[" * 300 + "]" * 300 + "\n"), "YAML nesting deeper than 100"),
    "deep_flow_5000": (FLU + "deep: " + "[" * 5000 + "]" * 5000 + "\n", "exceeded maximum nesting depth"),
    "deep_block": (FLU + DEEP_BLOCK, "YAML nesting deeper than 100 levels"),
    "nul": (FLU.replace(TITLE, "title: Influenza\x00\n"), "unacceptable character #x0000"),
    "control": (FLU.replace(TITLE, "title: Influenza\x07\n"), "unacceptable character #x0007"),
    "lone_surrogate": (FLU.replace(TITLE, 'title: "\\ud800"\n'), "invalid Unicode character escape code"),
    "nan_rate": (FLU.replace("rate_per_year: 0.15", "rate_per_year: .nan"), "finite number"),
    "inf_rate": (FLU.replace("rate_per_year: 0.15", "rate_per_year: .inf"), "finite number"),
    "negative_rate": (FLU.replace("rate_per_year: 0.15", "rate_per_year: -0.15"), "greater than or equal to 0"),
    "nan_delay": (FLU.replace("value: 2, unit: hours", "value: .nan, unit: hours"), "finite number"),
    "inf_delay": (FLU.replace("value: 2, unit: hours", "value: .inf, unit: hours"), "finite number"),
    "negative_delay": (FLU.replace("value: 2, unit: hours", "value: -2, unit: hours"), "a time cannot be negative"),
    "negative_normal_mean": (
        FLU.replace("exponential, mean: 2,", "normal, mean: -2, sd: 1,"),
        "a time cannot be negative (mean -2)",
    ),
    "huge": (FLU + "#" * 99 + ("\n" + "#" * 99) * int(MAX_FILE_MB * 10_000), f"more than the {MAX_FILE_MB:g} MB"),
    "duplicate_state": (FLU + "  icu:\n    terminal: true\n", "states.icu: state 'icu' is defined twice"),
    "many_unknown_keys": (FLU + "".join(f"k{i}: {i}\n" for i in range(60_000)), "(the first 100 are listed)"),
    "many_bad_states": (  # each state's error has its own parent (this was quadratic in the errors)
        FLU.replace("states:\n", "states:\n" + "".join(f"  s{i}: {{terminal: true, x: 1}}\n" for i in range(25_000))),
        "(the first 100 are listed)",
    ),
}


BIG_HOSTILE = ("many_unknown_keys", "many_bad_states")  # seconds each: the full tier


def _hostile() -> list[Case]:
    return [Case(name, text.encode(), FIXTURE_LIBRARY, True, expected) for name, (text, expected) in HOSTILE.items()]


MUTANTS = _mutants()
CASES = [
    pytest.param(case, id=case.id, marks=() if i % FAST_SAMPLE == 0 else pytest.mark.slow)
    for i, case in enumerate(MUTANTS)
] + [pytest.param(case, id=case.id, marks=pytest.mark.slow if case.id in BIG_HOSTILE else ()) for case in _hostile()]


class Hung(Exception):
    """A case ran past HANG_S."""


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Interrupt a case that runs longer than `seconds` (a hang fails the test instead of the run)."""

    def interrupt(signum: int, frame: object) -> None:
        raise Hung(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


TRACED = {"alias_bomb", "alias_bomb_tab", "alias_fan_out"}  # tracing memory slows a check several times


def _check(case: Case, directory: Path) -> tuple[int, str, str, float, float]:
    """Exit code, stdout, stderr, seconds and (for the alias cases) peak traced memory in MB of `ehrsim check`
    on the case."""
    path = directory / "case.yaml"
    path.write_bytes(case.data)
    if case.id in TRACED:
        tracemalloc.start()
    started = time.perf_counter()
    with _deadline(HANG_S):
        result = CliRunner().invoke(app, ["check", path.name, *case.library])
    seconds = time.perf_counter() - started
    peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr, seconds, peak_mb


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_module_is_accepted_or_rejected_with_located_messages(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr, seconds, peak_mb = _check(case, tmp_path)
    assert "Traceback" not in stdout + stderr
    if case.is_hostile:
        assert seconds < DOS_S and peak_mb < DOS_MEMORY_MB, f"{seconds:.1f} s, {peak_mb:.0f} MB"
        assert case.expected is not None and case.expected in stderr
    if code == 0:
        assert stdout.startswith("ok: 1 named, in the library; ") and stderr == ""
        return
    assert code == 1, stdout + stderr
    *problems, count = stderr.splitlines()
    assert problems and count == f"{len(problems)} problem{'s' if len(problems) > 1 else ''} found"
    for line in problems:  # the case's own problems, or those it causes in the library's other modules
        assert re.match(r"case\.yaml:\d+:\d+: \S", line) or (
            re.match(r"\S+\.yaml:\d+:\d+: \S", line) and line.endswith(IN_LIBRARY)
        ), line


def test_the_corpus_is_reproducible_and_covers_every_mutation() -> None:
    again = _mutants()
    assert [c.data for c in again] == [c.data for c in MUTANTS]
    assert {c.id.split("-")[-1] for c in MUTANTS} == set(MUTATIONS)
    assert len({c.data for c in MUTANTS}) > 0.9 * len(MUTANTS)  # mutants differ from each other


def test_the_file_size_limit_is_far_above_the_shipped_files_and_can_be_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    largest = max(p.stat().st_size for p in [*REPO.glob("modules/*.yaml"), *REPO.glob("rules/**/*.yaml")])
    assert largest * 10 < MAX_FILE_MB * 1_000_000  # 48 kB today
    path = tmp_path / "big.yaml"
    path.write_text(FLU + "#" * 1_000_000 + "\n")
    monkeypatch.setenv(MAX_FILE_MB_VARIABLE, "1")
    with pytest.raises(LoadError) as raised:
        load(path, DiseaseModule, "big.yaml")
    assert str(raised.value) == (
        f"big.yaml:1:1: the file holds {path.stat().st_size:,} bytes, more than the 1 MB a module or rules file "
        f"may hold (set the environment variable {MAX_FILE_MB_VARIABLE} to raise the limit)"
    )
    monkeypatch.setenv(MAX_FILE_MB_VARIABLE, "2.5")
    assert load(path, DiseaseModule).name == "flu"
    monkeypatch.setenv(MAX_FILE_MB_VARIABLE, "lots")
    with pytest.raises(LoadError, match=f"big.yaml:1:1: {MAX_FILE_MB_VARIABLE} must be a positive number of MB"):
        load(path, DiseaseModule, "big.yaml")


# --- property-based: the schema's numbers ----------------------------------------------------------


@dataclass(frozen=True)
class NumberField:
    """A numeric field of the module format: a flow-style line that holds it ({x}: the value), the words
    a rejection names it by, and its documented range."""

    line: str
    names: tuple[str, ...]
    is_valid: Callable[[float], bool]


def _after(distribution: str) -> str:
    return f"    after: {{distribution: {distribution}, unit: days, source: a}}\n    next: s1\n"


def _guard(guard: str) -> str:
    return f"    cases: [{{when: {guard}, to: s1}}]\n    otherwise: s1\n"


def _hazard(rate: str, ratio: str = "2") -> str:
    ratios = f"[{{when: {{sex: F}}, ratio: {ratio}, source: a}}]"
    return f"    hazards: [{{to: s1, rate_per_year: {rate}, hazard_ratios: {ratios}, source: a}}]\n"


def _observable(fields: str) -> str:
    code = "{system: LOINC, code: 8310-5, display: Body temperature}"
    return f"observables:\n  t: {{code: {code}, category: vital-signs, unit: Cel, source: a, {fields}}}\n"


def at_least(low: float) -> Callable[[float], bool]:
    return lambda x: math.isfinite(x) and x >= low


def above(low: float) -> Callable[[float], bool]:
    return lambda x: math.isfinite(x) and x > low


def between(low: float, high: float) -> Callable[[float], bool]:
    return lambda x: math.isfinite(x) and low <= x <= high


NUMBER_FIELDS = {
    "probability": NumberField(
        "    branches: [{to: s1, probability: {x}, source: a}, {to: s1, probability: 0.5, source: a}]\n",
        ("probability",),
        between(0, 1),
    ),
    "rate": NumberField(_hazard("{x}"), ("rate_per_year",), at_least(0)),
    "rate_table_rate": NumberField(
        _hazard("{ages: [0, 50], male: [{x}, 0.1], female: [0.1, 0.1]}"), ("male",), at_least(0)
    ),
    "rate_table_age": NumberField(_hazard("{ages: [{x}], male: [0.1], female: [0.1]}"), ("ages",), at_least(0)),
    "hazard_ratio": NumberField(_hazard("0.1", "{x}"), ("ratio",), above(0)),
    "exact_delay": NumberField(_after("exact, value: {x}"), ("value",), at_least(0)),
    "uniform_delay_low": NumberField(_after("uniform, low: {x}, high: 1e308"), ("low",), between(0, 1e308)),
    "uniform_delay_high": NumberField(_after("uniform, low: 0, high: {x}"), ("high",), at_least(0)),
    "normal_delay_mean": NumberField(_after("normal, mean: {x}, sd: 1"), ("mean",), at_least(0)),
    "normal_delay_sd": NumberField(_after("normal, mean: 1, sd: {x}"), ("sd",), at_least(0)),
    "exponential_delay_mean": NumberField(_after("exponential, mean: {x}"), ("mean",), above(0)),
    "lognormal_delay_median": NumberField(_after("lognormal, median: {x}, sigma: 1"), ("median",), above(0)),
    "lognormal_delay_sigma": NumberField(_after("lognormal, median: 1, sigma: {x}"), ("sigma",), at_least(0)),
    "gamma_delay_shape": NumberField(_after("gamma, shape: {x}, scale: 1"), ("shape",), above(0)),
    "gamma_delay_scale": NumberField(_after("gamma, shape: 1, scale: {x}"), ("scale",), above(0)),
    "age_guard": NumberField(_guard("{age_years: '>=', value: {x}}"), ("value",), at_least(0)),
    "since_guard": NumberField(_guard("{since: s0, op: '<', value: {x}, unit: years}"), ("value",), at_least(0)),
    "attribute_guard": NumberField(_guard("{attribute: r, op: '<', value: {x}}"), ("value",), math.isfinite),
    "observable_sd": NumberField(_observable("mean: 37, sd: {x}"), ("sd",), at_least(0)),
    "observable_persistence": NumberField(_observable("mean: 37, persistence: {x}"), ("persistence",), between(0, 1)),
    "observable_correlation_days": NumberField(
        _observable("mean: 37, correlation_days: {x}"), ("correlation_days",), above(0)
    ),
    "observable_measurement_sd": NumberField(
        _observable("mean: 37, measurement_sd: {x}"), ("measurement_sd",), at_least(0)
    ),
    "observable_response_half_life": NumberField(
        _observable("mean: 37, response_half_life_days: {x}"), ("response_half_life_days",), above(0)
    ),
    "observable_limit_low": NumberField(_observable("mean: 37, limits: [{x}, 45]"), ("limits",), between(-1e308, 45)),
    "observable_limit_high": NumberField(_observable("mean: 37, limits: [30, {x}]"), ("limits",), between(30, 1e308)),
}
MODULE = """name: numbers
title: One number under test
sources: {a: "assumption: test"}
attributes: {r: {description: a risk}}
start: s0
states:
  s0:
{state}  s1:
    terminal: true
"""
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([0.0, -0.0, 1.0, 1e-320, -1e-320, 5e-324]),
)


def _yaml_number(x: float | int) -> str:
    """The YAML spelling of a number: .nan, .inf, -.inf, or Python's own (a YAML 1.2 float or int)."""
    if isinstance(x, float) and math.isnan(x):
        return ".nan"
    if isinstance(x, float) and math.isinf(x):
        return ".inf" if x > 0 else "-.inf"
    return repr(x)


def _module_with(field: NumberField, value: str) -> tuple[str, int]:
    """The module text with the value in the field's line, and that line's number."""
    line = field.line.replace("{x}", value)
    if line.startswith("observables:"):
        text = MODULE.replace("start: s0", line + "start: s0").replace("{state}", "    next: s1\n")
    else:
        text = MODULE.replace("{state}", line)
    at = text.index(line) + field.line.index("{x}")
    return text, text[:at].count("\n") + 1


@pytest.fixture(scope="module")
def number_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("numbers") / "numbers.yaml"


@pytest.mark.parametrize("kind", NUMBER_FIELDS)
@settings(max_examples=40, deadline=None, database=None, derandomize=True)
@given(x=NUMBERS)
@example(x=math.nan)
@example(x=math.inf)
@example(x=-math.inf)
@example(x=-1.0)
def test_a_number_out_of_its_range_is_rejected_at_its_place_and_one_inside_accepted(
    kind: str, x: float | int, number_file: Path
) -> None:
    field = NUMBER_FIELDS[kind]
    text, line = _module_with(field, _yaml_number(x))
    number_file.write_text(text)
    try:
        as_float = float(x)
    except OverflowError:  # an int beyond the floats
        as_float = math.inf
    if field.is_valid(as_float):
        assert load(number_file, DiseaseModule).name == "numbers"
        return
    with pytest.raises(LoadError) as raised:
        load(number_file, DiseaseModule, "numbers.yaml")
    problems = raised.value.problems
    assert problems, text
    for problem in problems:
        assert (problem.file, problem.line) == ("numbers.yaml", line), str(problem)
        assert any(name in f"{problem.path} {problem.message}" for name in field.names), str(problem)
