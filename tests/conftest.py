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
