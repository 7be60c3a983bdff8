"""Output written in a background thread (`simulator.export.background`) and the ndjson bytes taken without a
copy (`Resources.sorted_bytes`): the same bytes, in the same order, errors raised in the run's thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from simulator.engine.run import RunConfig, Simulator
from simulator.export.background import Background
from simulator.export.clinical_tables import build_tables
from simulator.export.context import ExportContext
from simulator.export.fhir_resources import build_resources
from simulator.export.fhir_text import TEXT, References, Resources, no_encounter
from simulator.model.library import Library
from simulator.tables.chunks import chunk_tables


def test_jobs_run_in_the_order_given_in_another_thread() -> None:
    background = Background()
    done: list[tuple[int, str]] = []
    for k in range(50):
        background.submit(lambda k=k: done.append((k, threading.current_thread().name)), 1)
    background.drain()
    background.close()
    assert [k for k, _ in done] == list(range(50))
    assert {name for _, name in done} == {"ehrsim-writer"}


def test_an_error_in_the_thread_is_raised_by_the_next_call_and_stops_the_rest() -> None:
    background = Background()
    done: list[int] = []
    queued = threading.Event()

    def fails() -> None:
        queued.wait(5)
        raise OSError("disk full")

    background.submit(fails, 1)
    background.submit(lambda: done.append(1), 1)
    queued.set()
    with pytest.raises(OSError, match="disk full"):
        background.drain()
    with pytest.raises(OSError, match="disk full"):
        background.submit(lambda: done.append(2), 1)
    background.close()
    assert done == []


def test_submit_waits_while_the_thread_is_too_far_behind() -> None:
    background = Background(limit_bytes=10)
    release = threading.Event()
    background.submit(release.wait, 8)
    waited = threading.Event()

    def second() -> None:
        background.submit(lambda: None, 8)  # 16 bytes would wait: blocks until the first is done
        waited.set()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.2)
    assert not waited.is_set()
    release.set()
    thread.join(5)
    assert waited.is_set()
    background.drain()
    background.close()


def _resources(rng: np.random.Generator, n_chunks: int) -> Resources:
    """Resources of one type in `n_chunks` pieces, each in patient then row order, mixed as builders mix them."""
    patient, order, texts = [], [], []
    for k in range(n_chunks):
        n = int(rng.integers(0, 40))
        p = np.sort(rng.integers(0, 6, n))
        o = np.sort(rng.choice(1000, n, replace=False)) * n_chunks + k  # orders are distinct across pieces
        patient.append(p)
        order.append(o)
        pads = ["x" * int(rng.integers(0, 30)) for _ in range(n)]
        texts.append([f'{{"p":{a},"o":{b},"pad":"{pad}"}}\n' for a, b, pad in zip(p, o, pads, strict=True)])
    ids = np.array([str(i) for i in range(sum(len(t) for t in texts))], dtype=object)
    chunked = pa.chunked_array([pa.array(t, TEXT) for t in texts], TEXT)
    patients, orders = np.concatenate(patient), np.concatenate(order)
    return Resources("Observation", ids, patients, orders, chunked, no_encounter(len(ids)))


@pytest.mark.parametrize("n_chunks", [1, 2, 5])
def test_sorted_bytes_are_the_bytes_of_the_sorted_text(n_chunks: int) -> None:
    rng = np.random.default_rng(n_chunks)
    for _ in range(20):
        resources = _resources(rng, n_chunks)
        expected = "".join(resources.sorted_json().to_pylist()).encode()
        assert b"".join(piece.to_pybytes() for piece in resources.sorted_bytes()) == expected


def test_sorted_bytes_of_a_run_are_its_sorted_text(fixture_library: Library) -> None:
    """On real resources (several builders per type): the slices hold exactly the text in patient, row order."""
    sim = Simulator.build(RunConfig(patients=8, seed=3, mode="lifetime"), fixture_library)
    chunk = chunk_tables(sim, 0, 8)
    context = ExportContext.from_library(fixture_library, seed=3, request="test", patients=8)
    resources = build_resources(
        chunk.patients,
        build_tables(chunk.patients, chunk.events, context),
        context,
        References(urn=False, line_end="\n"),
    )
    assert any(group.json.num_chunks > 1 for group in resources.values())
    for group in resources.values():
        expected = "".join(group.sorted_json().to_pylist()).encode()
        assert b"".join(piece.to_pybytes() for piece in group.sorted_bytes()) == expected
