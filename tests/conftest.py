"""Shared cohorts: generated once per test session from the shipped modules and rules."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

import simulator

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


@pytest.fixture(scope="session")
def shipped_population() -> simulator.Population:
    return simulator.generate(patients=3000, seed=11, chunk_size=1000)


@pytest.fixture(scope="session")
def shipped_lifetime() -> simulator.Population:
    return simulator.generate(patients=1000, seed=12, mode="lifetime")


# --- FHIR and table export (tests/test_fhir_*.py, tests/test_export_*.py) ---------------------------

ALL_FORMATS = "ndjson,bundles,csv,parquet"
FIXTURE_LIBRARY = {"modules_dir": DATA / "fixture" / "modules", "rules_dir": DATA / "fixture" / "rules"}
# lifetime mode: every patient dies (in population mode nobody may die before the reference date)
EXPORT_RUN = {"patients": 150, "seed": 5, "mode": "lifetime", "formats": ALL_FORMATS, **FIXTURE_LIBRARY}


@pytest.fixture(scope="session")
def fixture_export(tmp_path_factory) -> Path:
    """Every output format of 150 lifetimes of the fixture library (which emits every event kind,
    every encounter class, resolutions, stops and deaths), in chunks of 64."""
    out = tmp_path_factory.mktemp("fixture_export") / "out"
    simulator.generate(out=out, chunk_size=64, **EXPORT_RUN)
    return out


@pytest.fixture(scope="session")
def shipped_export(tmp_path_factory) -> Path:
    """ndjson, bundles and Parquet of 40 patients of the shipped modules and rules."""
    out = tmp_path_factory.mktemp("shipped_export") / "out"
    simulator.generate(patients=40, seed=6, out=out, formats="ndjson,bundles,parquet")
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
