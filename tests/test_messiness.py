"""Messy-data profiles (`--messiness`): clean is no change at all; a profile's errors reach FHIR, CSV and
Parquet alike at the profile's rates, each logged in truth/corruptions, the same whatever the chunking, and
`ehrsim audit` finds them while FHIR stays valid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, REPO, read_ndjson
from typer.testing import CliRunner

import simulator
from simulator.cli import app
from simulator.export.messiness import CORRUPTION_COLUMNS, typo
from simulator.model.messiness import CORRUPTION_KINDS, load_messiness
from simulator.model.parsing import LoadError

RULES = REPO / "rules"
RUN = {"patients": 120, "seed": 4, "formats": "ndjson,csv,parquet"}


def _files(out: Path) -> dict[str, str]:
    """sha256 of every file of a run, by name."""
    return {name: entry["sha256"] for name, entry in json.loads((out / "manifest.json").read_text())["files"].items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same cohort with no option, with clean, with typical (in two chunkings) and with hostile."""
    root = tmp_path_factory.mktemp("messiness")
    asked = {
        "none": {},
        "clean": {"messiness": "clean"},
        "typical": {"messiness": "typical"},
        "typical_chunked": {"messiness": "typical", "chunk_size": 37},
        "hostile": {"messiness": "hostile"},
    }
    for name, options in asked.items():
        simulator.generate(out=root / name, **RUN, **options)  # type: ignore[arg-type]
    return {name: root / name for name in asked}


def test_the_shipped_profiles_load_and_cite_every_rate() -> None:
    for name in ("typical", "hostile"):
        messiness = load_messiness(name, RULES)
        assert messiness is not None
        for kind in CORRUPTION_KINDS:
            rate = getattr(messiness.profile, kind)
            assert 0 < rate.rate < 0.25 and (rate.source or rate.assumption)
    assert load_messiness("clean", RULES) is None


def test_a_broken_profile_gives_every_problem_at_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    path = (DATA / "messiness" / "broken_profile.yaml").relative_to(REPO)
    with pytest.raises(LoadError) as caught:
        load_messiness(path, RULES)
    assert str(caught.value) + "\n" == path.with_suffix(".expected").read_text()
    result = CliRunner().invoke(app, ["generate", "-n", "5", "--messiness", str(path), "--out", "/tmp/never", "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "missing.rate" in result.stderr
    unknown = CliRunner().invoke(app, ["generate", "-n", "5", "--messiness", "tidy", "--out", "/tmp/never", "-q"])
    assert unknown.exit_code == 2 and "clean, typical, hostile or a profile file" in unknown.stderr


def test_typos_change_the_text_a_little() -> None:
    rng = np.random.default_rng(0)
    for u, v in rng.random((200, 2)):
        text = "Glucose [Mass/volume] in Serum or Plasma"
        changed = typo(text, float(u), float(v))
        assert changed != text and abs(len(changed) - len(text)) <= 1 and changed[0] == text[0]


def test_clean_is_byte_identical_to_no_option(runs: dict[str, Path]) -> None:
    """Every file but the Bulk manifest, which holds its export time and the file URLs of its own folder."""
    clean, plain = _files(runs["clean"]), _files(runs["none"])
    assert clean.pop("fhir/manifest.json") and plain.pop("fhir/manifest.json")
    assert clean == plain
    assert not (runs["clean"] / "truth").exists()


def _corruptions(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "truth" / "corruptions.parquet")


def test_every_change_is_logged_and_the_same_whatever_the_chunking(runs: dict[str, Path]) -> None:
    log = _corruptions(runs["typical"])
    assert list(log.columns) == CORRUPTION_COLUMNS
    assert set(log["kind"]) == set(CORRUPTION_KINDS)
    csv = pd.read_csv(runs["typical"] / "truth" / "corruptions.csv", dtype=str, keep_default_na=False)
    assert len(csv) == len(log)
    files, chunked = _files(runs["typical"]), _files(runs["typical_chunked"])
    for name in ("truth/corruptions.csv", "fhir/Observation.ndjson", "fhir/Condition.ndjson", "csv/observations.csv"):
        assert files[name] == chunked[name], name
    # the tables differ from the clean run's exactly where the log says
    clean = pd.read_parquet(runs["none"] / "parquet" / "observations.parquet").set_index("id")
    messy = pd.read_parquet(runs["typical"] / "parquet" / "observations.parquet")
    originals = messy[~messy["id"].isin(log.loc[log["kind"] == "duplicate", "new"])].set_index("id")
    assert originals.index.equals(clean.index)
    logged = set(log.loc[log["table"] == "observations", "resource_id"])
    for column in ("value", "unit", "code", "display", "time"):
        before, after = clean[column].astype(str), originals[column].astype(str)
        changed = set(before.index[(before != after).to_numpy()])
        assert changed <= logged, column
    value = log[(log["kind"] == "unit_variant") & (log["field"] == "value")]
    assert len(value) and (value["original"] != value["new"]).all()


def test_rates_reached_are_the_profiles(runs: dict[str, Path]) -> None:
    """Each kind's share of the records it can hit, within 4 binomial standard errors of the profile's rate
    (the eligible records counted from the clean run)."""
    profile = load_messiness("hostile", RULES).profile  # type: ignore[union-attr]
    log = _corruptions(runs["hostile"])
    observations = pd.read_parquet(runs["none"] / "parquet" / "observations.parquet")
    open_ = ~observations["code"].astype(str).isin(["8480-6", "8462-4"])
    n = int(open_.sum())
    for kind in ("missing", "duplicate", "late_entry", "typo", "timestamp_shift"):
        rate = getattr(profile, kind).rate
        hits = log[(log["kind"] == kind) & (log["table"] == "observations")]["resource_id"].nunique()
        assert abs(hits / n - rate) < 4 * np.sqrt(rate * (1 - rate) / n), kind


def test_the_audit_finds_the_injected_errors(runs: dict[str, Path]) -> None:
    clean = {r.id: r.violations for r in simulator.audit(runs["none"]).rules}
    messy = {r.id: r.violations for r in simulator.audit(runs["typical"]).rules}
    log = _corruptions(runs["typical"])
    copied = set(log.loc[log["kind"] == "duplicate", "resource_id"])

    def found(kind: str, field: str | None = None) -> int:
        """The records the kind changed, with the copies of those filed twice."""
        rows = log[(log["kind"] == kind) & ((log["field"] == field) if field else True)]
        return len(rows) + len(set(rows["resource_id"]) & copied)

    new_rules = (
        "observation_values",
        "duplicate_observations",
        "observation_units",
        "plausible_vital_signs",
        "timely_entry",
        "known_codes",
    )
    assert all(clean[rule] == 0 for rule in new_rules)
    assert messy["observation_values"] == found("missing")
    assert messy["duplicate_observations"] == len(copied)
    assert messy["observation_units"] == found("unit_variant", "unit")
    assert messy["timely_entry"] == found("late_entry")
    assert messy["known_codes"] == found("miscoding") + found("typo")
    assert messy["plausible_vital_signs"] >= 0.9 * found("out_of_range")
    assert messy["within_encounter"] - clean["within_encounter"] >= 0.5 * found("timestamp_shift")


def test_the_audit_of_the_csv_tables_finds_the_same(runs: dict[str, Path], tmp_path: Path) -> None:
    """A run written as CSV only is audited from its CSV (whose header Arrow quotes): the messy-data columns
    such as issued_time are read there too."""
    shutil.copytree(runs["typical"] / "csv", tmp_path / "csv")
    shutil.copy(runs["typical"] / "manifest.json", tmp_path / "manifest.json")
    from_parquet = {r.id: r.violations for r in simulator.audit(runs["typical"]).rules}
    from_csv = {r.id: r.violations for r in simulator.audit(tmp_path).rules}
    assert from_csv["timely_entry"] == from_parquet["timely_entry"] > 0
    assert from_csv == from_parquet


def test_messy_fhir_is_valid_fhir(runs: dict[str, Path]) -> None:
    """Up to 20 resources of each kind of corruption validate as FHIR R4 (a messy record is messy, not
    invalid), ids stay unique, and no value is written as NaN."""
    from fhir.resources.R4B.condition import Condition
    from fhir.resources.R4B.observation import Observation

    written = read_ndjson(runs["hostile"])
    resources = {r["id"]: r for kind in ("Observation", "Condition") for r in written[kind]}
    assert sum(len(written[kind]) for kind in ("Observation", "Condition")) == len(resources)
    log = _corruptions(runs["hostile"])
    for (kind, table), group in log.groupby(["kind", "table"]):
        ids = group.loc[group["resource_id"].isin(resources), "resource_id"].drop_duplicates().head(20)
        if kind == "duplicate":
            ids = group["new"].head(20)
        assert len(ids), (kind, table)
        model = Condition if table == "conditions" else Observation
        for resource_id in ids:
            model.model_validate(resources[resource_id])
    observations = written["Observation"]
    units = {r["valueQuantity"].get("code") for r in observations if "valueQuantity" in r}
    assert {"[degF]", "[lb_av]", "mmol/L", "umol/L"} <= units
    assert any("dataAbsentReason" in r for r in observations)
    text = (runs["hostile"] / "fhir" / "Observation.ndjson").read_text()
    assert "NaN" not in text and ":nan" not in text
