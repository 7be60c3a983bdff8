"""Shared inputs, made once per test session: the loaded libraries, cohorts of the shipped and fixture
modules, and their exports. Tests that only read them share them; a test that changes one makes its own."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import simulator
from simulator.fit.validation import Validation, validate_generated
from simulator.model.library import Library
from simulator.model.loading import load_library
from simulator.model.parsing import LoadError, Problem

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
NO_MODULES: list[Path] = []  # only the rules' own modules (wellness visits, vital signs)


def table_hash(*frames: pd.DataFrame) -> str:
    """Content hash of tables (values and column order; not Parquet layout)."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(",".join(frame.columns).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def edited_rules_problems(
    tmp_path: Path, rules: Path, edits: dict[str, tuple[str, str]], modules: Path | list[Path]
) -> list[Problem]:
    """The problems of loading `modules` with a copy of the rules folder `rules` where, in each file named in
    `edits`, the first `old` (which must be there) is replaced by `new`."""
    copy = tmp_path / "rules"
    shutil.copytree(rules, copy)
    for name, (old, new) in edits.items():
        text = (copy / name).read_text()
        assert old in text, (name, old)
        (copy / name).write_text(text.replace(old, new, 1))
    with pytest.raises(LoadError) as caught:
        load_library(modules, copy)
    return caught.value.problems


def _contents(library: Library) -> str:
    """Everything a test could read from a library, as text (documents aside)."""
    fields = {name: getattr(library, name) for name in Library.__dataclass_fields__ if name != "documents"}
    return repr(fields)


@pytest.fixture(scope="session")
def shipped_library() -> Iterator[Library]:
    """The shipped modules/ and rules/, loaded once, for tests that only read them. A Library is frozen
    but holds dicts and lists: a test that changes one would change it for every later test, so the
    session fails if the library is not as loaded at its end (a test that changes it loads its own)."""
    library = load_library()
    loaded = _contents(library)
    yield library
    assert _contents(library) == loaded, "a test changed the shared shipped_library"


@pytest.fixture(scope="session")
def bare_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture rules without their own module (vitals.yaml): a library of only the modules a test
    writes (unit tests: write a tiny module, `load_library([path], bare_rules)`)."""
    rules = tmp_path_factory.mktemp("bare") / "rules"
    shutil.copytree(DATA / "fixture" / "rules", rules, ignore=shutil.ignore_patterns("vitals.yaml"))
    return rules


@pytest.fixture(scope="session")
def shipped_population() -> simulator.Population:
    return simulator.generate(patients=3000, seed=11, chunk_size=1000)


@pytest.fixture(scope="session")
def kernel_validation_36000() -> Validation:
    """The validation of a kernel-only cohort of 36,000 (seed 7, no lifetimes): the statistical tests of rows that
    need tens of thousands of patients share it (hypertension control by sex, adult type 1 diabetes)."""
    return validate_generated(patients=36_000, seed=7, lifetime_patients=0)


@pytest.fixture(scope="session")
def shipped_lifetime() -> simulator.Population:
    return simulator.generate(patients=1000, seed=12, mode="lifetime")


# --- FHIR and table export (tests/test_fhir_*.py, tests/test_export_*.py) ---------------------------

ALL_FORMATS = "ndjson,bundles,csv,parquet"
FIXTURE_LIBRARY = {"modules_dir": DATA / "fixture" / "modules", "rules_dir": DATA / "fixture" / "rules"}
# lifetime mode: every patient dies (in population mode nobody may die before the reference date)
EXPORT_RUN = {"patients": 150, "seed": 5, "mode": "lifetime", "formats": ALL_FORMATS, **FIXTURE_LIBRARY}


@pytest.fixture(scope="session")
def fixture_library() -> Library:
    """The fixture modules and rules (tests/data/fixture), for tests that only read them."""
    return load_library(FIXTURE_LIBRARY["modules_dir"], FIXTURE_LIBRARY["rules_dir"])


@pytest.fixture(scope="session")
def fixture_population() -> simulator.Population:
    """300 lifetimes of the fixture library in memory (every event kind, deaths): a small cohort for
    checks that need events of each kind rather than the shipped modules' statistics."""
    return simulator.generate(patients=300, seed=8, mode="lifetime", **FIXTURE_LIBRARY)


@pytest.fixture(scope="session")
def fixture_export(tmp_path_factory) -> Path:
    """Every output format of 150 lifetimes of the fixture library (which emits every event kind,
    every encounter class, resolutions, stops and deaths), in chunks of 64."""
    out = tmp_path_factory.mktemp("fixture_export") / "out"
    simulator.generate(out=out, chunk_size=64, **EXPORT_RUN)
    return out


HISTORY_YEARS = 5  # the record window of `history_export`


@pytest.fixture(scope="session")
def history_export(tmp_path_factory) -> Path:
    """The run of `fixture_export` with `--history 5`: each record its last 5 years before death."""
    out = tmp_path_factory.mktemp("history_export") / "out"
    simulator.generate(out=out, chunk_size=64, history_years=HISTORY_YEARS, **EXPORT_RUN)
    return out


@pytest.fixture(scope="session")
def shipped_export(tmp_path_factory) -> Path:
    """ndjson, bundles and Parquet of 40 patients of the shipped modules and rules, and the patients who died in
    the 10 years before the end (decedents: a few records that end in death, for the FHIR checks)."""
    out = tmp_path_factory.mktemp("shipped_export") / "out"
    simulator.generate(patients=40, seed=6, out=out, formats="ndjson,bundles,parquet", decedents=10)
    return out


@pytest.fixture(scope="session")
def teaching_run(tmp_path_factory) -> Path:
    """ndjson, CSV and Parquet of 300 patients of the shipped modules: the run teaching material is made
    from (tests/test_cases.py, tests/test_browse.py)."""
    out = tmp_path_factory.mktemp("teaching_run") / "out"
    simulator.generate(patients=300, seed=3, out=out, formats="ndjson,csv,parquet")
    return out


@pytest.fixture(scope="session")
def parquet_2000(tmp_path_factory) -> Path:
    """Parquet of 2,000 patients of the shipped modules: the acceptance-sized cohort the cohort browser and the
    case writer are tried on (tests/test_browse.py, tests/test_cases.py); made once, as it takes half a minute."""
    out = tmp_path_factory.mktemp("parquet_2000") / "out"
    simulator.generate(patients=2_000, seed=4, out=out, formats="parquet")
    return out


def read_ndjson(out: Path) -> dict[str, list[dict]]:
    """out/fhir/<Type>.ndjson -> resources by type."""
    import orjson

    return {
        path.stem: [orjson.loads(line) for line in path.read_bytes().splitlines()]
        for path in sorted((out / "fhir").glob("*.ndjson"))
    }


def read_bundles(out: Path) -> dict[str, dict]:
    """out/bundles/<patient id>.json -> bundles by patient id."""
    import orjson

    return {path.stem: orjson.loads(path.read_bytes()) for path in sorted((out / "bundles").glob("*.json"))}
