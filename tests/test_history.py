"""`--history YEARS`: a written record holds the last years before its end and what a chart carries from
before them (simulator/export/history.py), the same in every output; the whole life stays the default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import EXPORT_RUN, HISTORY_YEARS, read_ndjson

import simulator
from simulator.cli import _history_years
from simulator.days import DAYS_PER_YEAR
from simulator.errors import ConfigError
from simulator.export.history import ENCOUNTER_REFERENCES
from simulator.model.library import Library


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    return {path.stem: pd.read_parquet(path) for path in sorted((out / "parquet").glob("*.parquet"))}


def _window_start(tables: dict[str, pd.DataFrame], frame: pd.DataFrame, reference: str) -> pd.Series:
    """The window start of each row's patient: HISTORY_YEARS before death, else before the reference date
    (the fixture run is a lifetime run: nearly everyone dies)."""
    patients = tables["patients"].set_index("index")
    end = patients["death_time"].fillna(pd.Timestamp(reference, tz="UTC"))
    start = end - pd.Timedelta(days=HISTORY_YEARS * DAYS_PER_YEAR)
    return pd.Series(start.reindex(frame["patient"]).to_numpy(), index=frame.index)


@pytest.fixture(scope="module")
def runs(fixture_export: Path, history_export: Path) -> tuple[dict, dict, str]:
    reference = json.loads((history_export / "manifest.json").read_text())["config"]["reference_date"]
    return _tables(fixture_export), _tables(history_export), reference


def test_the_manifest_records_the_window(fixture_export: Path, history_export: Path) -> None:
    assert json.loads((history_export / "manifest.json").read_text())["history_years"] == HISTORY_YEARS
    assert json.loads((fixture_export / "manifest.json").read_text())["history_years"] is None
    assert "--history 5" in (history_export / "fhir" / "manifest.json").read_text()


def test_nothing_before_the_window_but_what_a_chart_carries(runs: tuple, fixture_library: Library) -> None:
    full, kept, reference = runs
    rules = fixture_library.history
    assert full["patients"]["death_time"].notna().mean() > 0.9
    n_before = 0
    for name, column in (("observations", "time"), ("symptoms", "time"), ("procedures", "time")):
        frame = kept[name]
        before = frame[frame[column] < _window_start(kept, frame, reference)]
        n_before += len(before)
        if name == "symptoms":
            assert before.empty
        elif name == "procedures":
            assert set(before["code"].astype(str)) <= {p.code.code for p in rules.procedures}
            first_only = {p.code.code for p in rules.procedures if p.first}
            once = before[before["code"].astype(str).isin(first_only)]
            assert not once.duplicated(["patient", "code"]).any(), "a recurring procedure carried more than once"
        else:  # the latest height or weight, only when the window holds none of that code
            assert set(before["code"].astype(str)) <= set(rules.observations)
            assert not before.duplicated(["patient", "code"]).any()
            in_window = frame[frame[column] >= _window_start(kept, frame, reference)]
            both = before.merge(in_window, on=["patient", "code"])
            assert both.empty, "a reading carried although the window has one"
    for name, end in (("conditions", "resolution_time"), ("medications", "stop_time")):
        frame = kept[name]
        ended_before = frame[end] < _window_start(kept, frame, reference)
        assert not ended_before.any(), f"{name} ended before the window"
    encounters = kept["encounters"]
    ended = encounters["end_time"] < _window_start(kept, encounters, reference)
    stays = set(encounters.loc[~ended, "id"]) | set(encounters.loc[~ended, "part_of_encounter_id"].dropna())
    hospital = encounters["id"].isin(stays) | encounters["part_of_encounter_id"].isin(stays)
    assert (~ended | hospital).all(), "an encounter before the window that no kept stay needs"
    assert n_before > 0 and len(kept["immunizations"]) == len(full["immunizations"])


def test_what_was_active_at_the_window_start_is_kept_with_its_dates(runs: tuple) -> None:
    full, kept, reference = runs
    for name, start, end in (
        ("conditions", "onset_time", "resolution_time"),
        ("medications", "start_time", "stop_time"),
    ):
        frame = full[name]
        window = _window_start(full, frame, reference)
        active = frame[(frame[start] < window) & ~(frame[end] < window)]
        assert len(active) > 10, name
        carried = kept[name].set_index("id").reindex(active["id"])
        assert carried[start].notna().all(), f"{name} active at the window start missing"
        assert (carried[start].to_numpy() == active[start].to_numpy()).all()


def test_the_window_is_a_subset_of_the_full_record_with_the_same_ids(runs: tuple) -> None:
    full, kept, _ = runs
    for name in ("encounters", "conditions", "observations", "medications", "procedures", "immunizations"):
        assert set(kept[name]["id"]) <= set(full[name]["id"]), name
        assert len(kept[name]) < len(full[name]) or name == "immunizations", name
    assert kept["events"].equals(full["events"]), "the events table is the whole simulation"


def test_no_reference_to_an_encounter_or_episode_outside_the_record(runs: tuple) -> None:
    _, kept, _ = runs
    encounters = set(kept["encounters"]["id"])
    conditions = set(kept["conditions"]["id"])
    for name, frame in kept.items():
        for column in ENCOUNTER_REFERENCES:
            if column in frame:
                assert frame[column].dropna().isin(encounters).all(), f"{name}.{column}"
        if "reason_condition_id" in frame:
            assert frame["reason_condition_id"].dropna().isin(conditions).all(), name


def test_carried_medications_have_a_requester(history_export: Path) -> None:
    """A course from before the window has no encounter in the record: the general practitioner orders it."""
    requests = read_ndjson(history_export)["MedicationRequest"]
    assert any("encounter" not in r for r in requests)
    assert all("requester" in r for r in requests)


def _file_hashes(out: Path) -> dict[str, str]:
    """The SHA-256 of every file of a run but the Bulk manifest (its time) and Parquet (its row groups follow
    the chunks: compared by content)."""
    files = json.loads((out / "manifest.json").read_text())["files"]
    return {name: f["sha256"] for name, f in files.items() if name != "fhir/manifest.json" and "parquet" not in name}


def test_same_bytes_whatever_the_chunk_size(history_export: Path, tmp_path: Path) -> None:
    simulator.generate(out=tmp_path / "out", chunk_size=1000, history_years=HISTORY_YEARS, **EXPORT_RUN)
    assert _file_hashes(tmp_path / "out") == _file_hashes(history_export)
    again, before = _tables(tmp_path / "out"), _tables(history_export)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(again[name], frame)


def test_a_window_longer_than_any_life_is_the_whole_record_byte_for_byte(fixture_export: Path, tmp_path: Path) -> None:
    simulator.generate(out=tmp_path / "out", chunk_size=64, history_years=150, **EXPORT_RUN)
    assert _file_hashes(tmp_path / "out") == _file_hashes(fixture_export)
    again, before = _tables(tmp_path / "out"), _tables(fixture_export)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(again[name], frame)


def test_history_option_values() -> None:
    assert _history_years("all") is None and _history_years("ALL") is None
    assert _history_years("10") == 10.0 and _history_years("2.5") == 2.5
    with pytest.raises(ConfigError, match="number of years"):
        _history_years("ten")
    for bad in (0, -1, 151):
        with pytest.raises(ConfigError, match="more than 0"):
            simulator.generate(patients=1, out="never-written", history_years=bad)


def test_the_carried_rules_name_known_codes(shipped_library: Library) -> None:
    procedures = shipped_library.history.procedures
    used = {
        code.code
        for module in shipped_library.modules
        for state in module.states.values()
        for code in getattr(state, "procedure", None) or []
    }
    assert {p.code.code for p in procedures} <= used, "a carried procedure no module performs"
    assert np.array([len(p.reason) for p in procedures]).min() > 20


def test_the_audit_reads_the_windowed_record(history_export: Path, fixture_export: Path) -> None:
    """`ehrsim audit` checks the record as written: fewer records checked, no rule newly broken by the cut."""
    windowed, full = simulator.audit(history_export), simulator.audit(fixture_export)
    by_rule = {r.id: r for r in full.rules}
    assert sum(r.checked for r in windowed.rules) < sum(r.checked for r in full.rules)
    for rule in windowed.rules:
        if by_rule[rule.id].violations == 0:
            assert rule.violations == 0, rule.id
