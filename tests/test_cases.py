"""Teaching cases (`ehrsim cases`): what they are made of, that they read as sentences, and that every answer
agrees with the ground truth of the run's tables. Also the data dictionary written beside the CSV tables and
the teaching example script.

The 300-patient `teaching_run` (conftest.py) serves the fast tests; the acceptance test draws 20 cases of
COPD, type 2 diabetes and myocardial infarction from 2,000 patients."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO
from typer.testing import CliRunner

from simulator.cli import app
from simulator.export.writers import DATA_DICTIONARY
from simulator.teaching import dictionary
from simulator.teaching.cases import CaseOptions, select, targets, write_cases
from simulator.teaching.record import WRITTEN, RunRecord, data_dictionary
from simulator.teaching.terms import known_codes, quantity, term

SECTIONS = ("## History", "## Course", "## Afterwards", "## Questions")
# What must never reach a reader: missing values, semantic tags, names from the module files, markup slips.
UNREADABLE = re.compile(
    r"\bnan\b|\bNaT\b|\bNone\b|<NA>|\((disorder|finding|procedure)\)|\b[a-z]+_[a-z_]+\b|  |\s[.,;:]"
)


def _tables(run: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(run / "parquet" / f"{name}.parquet") for name in WRITTEN if name != "events"}


def _time(text: str | None) -> pd.Timestamp | None:
    return None if text is None else pd.Timestamp(text)


def check_answers(run: Path, out: Path) -> int:
    """Check every answer of answers.json against the run's tables; returns the number of cases."""
    tables = _tables(run)
    c, m, o, p, e = (tables[n] for n in ("conditions", "medications", "observations", "procedures", "encounters"))
    cases = json.loads((out / "answers.json").read_text())
    for case in cases:
        patient = case["patient_index"]
        text = (out / f"{case['patient_id']}.md").read_text()
        asked = {q["kind"]: q for q in case["questions"]}
        for question in case["questions"]:
            assert question["answer"] in text, (
                f"{case['patient_id']}: answer of {question['kind']} not in its case file"
            )
        facts = asked["diagnosis"]["facts"]
        episode = c[c["id"] == facts["condition_id"]].iloc[0]
        assert episode["patient"] == patient and str(episode["code"]) == facts["code"]
        diagnosed = episode["diagnosis_time"]
        assert (
            _time(facts["diagnosis_time"]) == diagnosed
            and episode["diagnosis_encounter_id"] == facts["diagnosis_encounter_id"]
        )
        for reading in facts["results"]:
            row = o[o["id"] == reading["id"]].iloc[0]
            assert (
                row["patient"] == patient and row["value"] == reading["value"] and str(row["code"]) == reading["code"]
            )
            assert row["encounter_id"] == episode["diagnosis_encounter_id"] and row["time"] <= diagnosed
        for procedure in facts["procedures"]:
            row = p[p["id"] == procedure["id"]].iloc[0]
            assert row["encounter_id"] == episode["diagnosis_encounter_id"] and row["time"] <= diagnosed
        delay = asked["diagnostic_delay"]["facts"]
        assert _time(delay["onset_time"]) == episode["onset_time"] and delay["condition_id"] == episode["id"]
        assert delay["years"] == pytest.approx((diagnosed - episode["onset_time"]).days / 365.25, abs=0.01)
        own = m[
            (m["patient"] == patient)
            & ((m["module"] == episode["module"]) | (m["reason_condition_id"] == episode["id"]))
        ]
        own = own[own["start_time"] >= diagnosed - pd.Timedelta(minutes=1)]
        if not pd.isna(episode["resolution_time"]):
            own = own[own["start_time"] <= episode["resolution_time"]]
        first = asked["first_treatment"]["facts"]["medications"]
        assert bool(first) == (not own.empty)
        if first:
            starts = [own[own["id"] == f["id"]]["start_time"].iloc[0] for f in first]
            assert min(starts) == own["start_time"].min(), "the first treatment is the earliest course started for it"
        missed = asked["undiagnosed"]["facts"]
        at = _time(missed["at"])
        mine = c[c["patient"] == patient]
        present = mine[(mine["onset_time"] <= at) & ~(mine["resolution_time"] <= at) & ~(mine["diagnosis_time"] <= at)]
        listed = {x["id"] for x in missed["conditions"]}
        assert listed <= set(present["id"]) and (not listed) == present.empty
        if "outcome" in asked:
            outcome = asked["outcome"]["facts"]
            stay = e[e["id"].isin(outcome["encounter_ids"])]
            assert len(stay) == len(outcome["encounter_ids"]) and set(stay["patient"]) == {patient}
            if outcome["end_time"] is not None:
                assert _time(outcome["end_time"]) == stay["end_time"].max()
    return len(cases)


def check_readable(out: Path) -> None:
    """Each case file has its sections, and its prose reads as sentences."""
    for path in sorted(out.glob("*.md")):
        if path.name == "index.md":
            continue
        text = path.read_text()
        assert all(section in text for section in SECTIONS), path.name
        prose = text[text.index("## History") : text.index("## Questions")]
        prose = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", prose)  # the charts' image links
        paragraphs = [line for line in prose.splitlines() if line and not line.startswith("#")]
        assert paragraphs, path.name
        for paragraph in paragraphs:
            assert paragraph[0].isupper() and paragraph.endswith("."), f"{path.name}: {paragraph[:80]}"
            assert not UNREADABLE.search(paragraph), f"{path.name}: {UNREADABLE.search(paragraph)} in {paragraph[:200]}"
        html = path.with_suffix(".html").read_text()
        assert "<svg" in html or "## Results over time" not in text, f"{path.name}: a chart missing in the page"


@pytest.fixture(scope="module")
def cases_out(teaching_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cases")
    write_cases(teaching_run, out, patients=6, seed=1)
    return out


@pytest.mark.slow
def test_cases_are_written_for_a_mix_of_conditions(cases_out: Path) -> None:
    answers = json.loads((cases_out / "answers.json").read_text())
    assert len(answers) == 6
    for case in answers:
        for suffix in (".html", ".md"):
            assert (cases_out / f"{case['patient_id']}{suffix}").is_file()
    conditions = {q["facts"]["code"] for a in answers for q in a["questions"] if q["kind"] == "diagnosis"}
    assert len(conditions) >= 4, "drawn in turn from several conditions"
    index = (cases_out / "index.html").read_text()
    assert all(f'href="{a["patient_id"]}.html"' in index for a in answers)


@pytest.mark.slow
def test_every_answer_agrees_with_the_truth_tables(teaching_run: Path, cases_out: Path) -> None:
    assert check_answers(teaching_run, cases_out) == 6


@pytest.mark.slow
def test_case_files_read_as_sentences(cases_out: Path) -> None:
    check_readable(cases_out)


@pytest.mark.slow
def test_a_case_tells_its_story_in_clinical_words(cases_out: Path) -> None:
    """Sentences start from an age and a date, say where things happened, and use plain terms."""
    texts = [p.read_text() for p in cases_out.glob("*.md") if p.name != "index.md"]
    joined = "\n".join(texts)
    assert re.search(
        r"At \d+ \((January|February|March|April|May|June|July|August|September|October|November|December) \d{4}\)",
        joined,
    )
    assert re.search(r"On \d{1,2} \w+ \d{4} \(age \d+", joined)
    assert "was diagnosed" in joined and " started " in joined
    assert "Diabetes mellitus type 2" not in joined and "Hypertensive disorder" not in joined


@pytest.mark.slow
def test_history_window_and_detail(teaching_run: Path, tmp_path: Path) -> None:
    brief = write_cases(teaching_run, tmp_path / "brief", patients=1, conditions=["hypertension"], seed=2)
    full = write_cases(
        teaching_run, tmp_path / "full", 1, ["hypertension"], 2, CaseOptions(history_years=5, detail="full")
    )
    brief_text = next(p for p in brief if p.suffix == ".md" and p.name != "index.md").read_text()
    full_text = next(p for p in full if p.suffix == ".md" and p.name != "index.md").read_text()
    assert "The history starts in" in full_text and "The history starts in" not in brief_text
    assert "born in" in brief_text
    check_readable(tmp_path / "full")
    with pytest.raises(ValueError, match="detail"):
        CaseOptions(detail="huge")  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_same_draw_gives_the_same_bytes(teaching_run: Path, tmp_path: Path) -> None:
    first = write_cases(teaching_run, tmp_path / "a", patients=2, seed=3)
    second = write_cases(teaching_run, tmp_path / "b", patients=2, seed=3)
    assert [p.name for p in first] == [p.name for p in second]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))


@pytest.mark.slow
def test_conditions_by_name_or_module_and_a_seeded_draw(teaching_run: Path) -> None:
    run = RunRecord.open(teaching_run)
    assert [t.name for t in targets(run.library, ["type2_diabetes", "copd", "myocardial_infarction"])] == [
        "t2d",
        "copd",
        "myocardial_infarction",
    ]
    with pytest.raises(ValueError, match="did you mean 'copd'"):
        targets(run.library, ["cpod"])
    conditions = run.table("conditions")
    wanted = targets(run.library, ["hypertension"])
    first = [int(e["patient"]) for _, e in select(conditions, wanted, 5, seed=4)]
    assert first == [int(e["patient"]) for _, e in select(conditions, wanted, 5, seed=4)]
    assert first != [int(e["patient"]) for _, e in select(conditions, wanted, 5, seed=5)]
    diagnosed = set(
        conditions.loc[(conditions["code"] == wanted[0].code) & conditions["diagnosis_time"].notna(), "patient"]
    )
    assert set(first) <= diagnosed and len(set(first)) == 5


@pytest.mark.slow
def test_cli_cases(teaching_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["cases", str(teaching_run), "-n", "2", "--out", str(tmp_path / "c"), "-c", "copd"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 cases" in result.output and (tmp_path / "c" / "index.html").is_file()
    result = runner.invoke(app, ["cases", str(teaching_run), "-c", "cpod", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1 and "did you mean 'copd'" in result.output
    result = runner.invoke(app, ["cases", str(tmp_path), "--out", str(tmp_path / "e")])
    assert result.exit_code == 1 and "holds no manifest.json" in result.output


def test_terms_cover_every_code_of_the_shipped_terminology() -> None:
    shipped = pd.read_csv(REPO / "rules" / "terminology.csv", dtype=str)
    wanted = {(s, c) for s, c in zip(shipped["system"], shipped["code"], strict=True) if s != "CDCREC"}
    assert wanted - known_codes() == set(), "add a plain term to simulator/teaching/terms.csv"
    assert term("SNOMED", "999", "Something new (disorder)").text == "something new"
    assert (
        term("LOINC", "4548-4").text == "HbA1c"
        and quantity(7.1, "%") == "7.1%"
        and quantity(152, "mm[Hg]") == "152 mmHg"
    )


# --- the data dictionary -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_column_of_every_table_is_documented(teaching_run: Path) -> None:
    documented = data_dictionary()
    assert set(documented["type"]) <= set(dictionary.TYPES) and documented["description"].str.len().min() > 3
    assert not documented.duplicated(["table", "column"]).any()
    for table in WRITTEN:
        mine = documented.loc[documented["table"] == table, "column"].tolist()
        assert mine == list(pd.read_parquet(teaching_run / "parquet" / f"{table}.parquet").columns), table
        assert mine == list(pd.read_csv(teaching_run / "csv" / f"{table}.csv", nrows=0).columns), table
    assert set(documented["table"]) == set(WRITTEN)


@pytest.mark.slow
def test_the_dictionary_is_written_beside_the_csv_tables(teaching_run: Path) -> None:
    written = teaching_run / "csv" / "data_dictionary.csv"
    assert written.read_bytes() == DATA_DICTIONARY.read_bytes()
    manifest = json.loads((teaching_run / "manifest.json").read_text())
    assert manifest["files"]["csv/data_dictionary.csv"]["rows"] == len(data_dictionary())


def test_docs_data_dictionary_is_made_from_the_dictionary() -> None:
    doc = (REPO / "docs" / "data-dictionary.md").read_text()
    assert doc == dictionary.markdown(), "run: python -m simulator.teaching.dictionary docs/data-dictionary.md"


@pytest.mark.slow
def test_csv_tables_read_back_as_parquet(teaching_run: Path, tmp_path: Path) -> None:
    """A run with CSV tables only is read with the dictionary's types: codes keep their leading zeros."""
    (tmp_path / "run").mkdir()
    shutil.copy(teaching_run / "manifest.json", tmp_path / "run")
    (tmp_path / "run" / "csv").symlink_to(teaching_run / "csv")
    csv_run, parquet_run = RunRecord.open(tmp_path / "run"), RunRecord.open(teaching_run)
    assert csv_run.folder.name == "csv" and parquet_run.folder.name == "parquet"
    for name in ("immunizations", "medications", "patients"):
        from_csv, from_parquet = csv_run.table(name, [0, 1, 2]), parquet_run.table(name, [0, 1, 2])
        assert len(from_csv) == len(from_parquet) > 0
        for column in from_parquet.columns:
            left, right = from_csv[column].astype(object), from_parquet[column].astype(object)
            assert left.where(left.notna(), None).tolist() == right.where(right.notna(), None).tolist(), column


# --- the teaching example ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_teaching_example_answers_its_three_questions(teaching_run: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "teaching" / "classic_questions.py"), str(teaching_run / "csv")],
        capture_output=True,
        text=True,
        check=True,
    )
    for heading in ("Prevalence by age", "From onset to diagnosis", "Treatment cascade"):
        assert heading in result.stdout
    assert "hypertension" in result.stdout


# --- the acceptance test -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_twenty_cases_of_copd_diabetes_and_infarction_from_2000_patients(parquet_2000: Path, tmp_path: Path) -> None:
    run = parquet_2000
    out = tmp_path / "cases"
    write_cases(run, out, patients=20, conditions=["copd", "type2_diabetes", "myocardial_infarction"], seed=0)
    assert check_answers(run, out) == 20
    check_readable(out)
    answers = json.loads((out / "answers.json").read_text())
    codes = [q["facts"]["code"] for a in answers for q in a["questions"] if q["kind"] == "diagnosis"]
    assert set(codes) == {"13645005", "44054006", "22298006"}
