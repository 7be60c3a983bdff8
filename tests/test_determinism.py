"""Same seed and inputs give the same tables whatever the chunking, threads or process."""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import pytest
from conftest import REPO, table_hash

import simulator


def _hash(**kwargs) -> str:
    population = simulator.generate(**kwargs)
    return table_hash(population.patients, population.events)


@pytest.mark.slow
def test_chunk_size_and_threads_do_not_change_output() -> None:
    reference = _hash(patients=400, seed=7, chunk_size=400)
    assert _hash(patients=400, seed=7, chunk_size=37) == reference
    assert _hash(patients=400, seed=7, chunk_size=400, threads=1) == reference
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_a_patient_is_the_same_person_in_a_smaller_run() -> None:
    small = simulator.generate(patients=50, seed=7, decedents="none")
    large = simulator.generate(patients=120, seed=7, decedents="none")
    first = large.events[large.events["patient"] < 50].reset_index(drop=True)
    assert table_hash(small.patients, small.events) == table_hash(large.patients.iloc[:50], first)


@pytest.mark.slow
def test_different_seeds_differ() -> None:
    assert _hash(patients=100, seed=1) != _hash(patients=100, seed=2)


@pytest.mark.slow
def test_written_files_are_byte_identical(tmp_path) -> None:
    for name in ("a", "b"):
        simulator.generate(patients=200, seed=9, out=tmp_path / name, chunk_size=64, formats="parquet")
    for table in ("parquet/patients.parquet", "parquet/events.parquet"):
        assert (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes()


@pytest.mark.slow
def test_pure_python_kernel_gives_the_same_output() -> None:
    """NUMBA_DISABLE_JIT=1 runs the kernel as plain Python: it must produce the same tables."""
    code = (
        "import simulator, conftest; p = simulator.generate(patients=8, seed=4); "
        "print(conftest.table_hash(p.patients, p.events))"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": str(REPO / "tests")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == _hash(patients=8, seed=4)
