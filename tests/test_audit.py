"""`ehrsim audit`: each rule kind finds a violation injected into tiny hand-made tables and passes the clean
case; the rules file is checked like every rules file; the command audits a written run (Parquet or CSV, in
blocks or whole), prints a table, writes nothing into the run and fails cleanly on a folder that is not one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import simulator
from simulator.audit.checks import CHECKS, Finding, ckd_epi
from simulator.audit.report import AuditReport, audit_cohort, audit_run
from simulator.audit.tables import COLUMNS, AuditTables, city_time_zones
from simulator.cli import app
from simulator.model.audit import KIND_NAMES, AuditRules, NothingAfterDeathRule
from simulator.model.library import Library
from simulator.model.loading import load_library
from simulator.model.parsing import LoadError

DATA = Path(__file__).parent / "data"
SHIPPED_RULES = Path(__file__).parent.parent / "rules"


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def times(*texts: str) -> pd.Series:
    return pd.Series([utc(t) if t else pd.NaT for t in texts], dtype="datetime64[us, UTC]")


# Patient 0: a woman born 1950-03-01 in Chicago; patient 1: a man born 1980-06-15 in El Paso, Texas (Mountain
# time, while Texas is Central), who died 2020-01-01.
PATIENTS = pd.DataFrame(
    {
        "index": [0, 1],
        "id": ["p-0", "p-1"],
        "birth_time": times("1950-03-01", "1980-06-15"),
        "sex": ["F", "M"],
        "state": ["IL", "TX"],
        "city": ["Chicago", "El Paso"],
        "death_time": times("", "2020-01-01"),
    }
)


def observations(*rows: tuple[int, str, str, float], encounter: str = "e-0") -> pd.DataFrame:
    """Observation rows (patient, time, LOINC code, value), all in one encounter."""
    patient, time, code, value = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "patient": list(patient),
            "time": times(*time),
            "system": "http://loinc.org",
            "code": list(code),
            "display": list(code),
            "value": list(value),
            "encounter_id": encounter,
        }
    )


def medications(*rows: tuple[int, str, str, str]) -> pd.DataFrame:
    """Medication courses (patient, RxNorm code, start, stop or '')."""
    patient, code, start, stop = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "patient": list(patient),
            "start_time": times(*start),
            "stop_time": times(*stop),
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "code": list(code),
            "display": [f"product {c}" for c in code],
            "encounter_id": "e-0",
        }
    )


def encounters(*rows: tuple[int, str, str, str, str]) -> pd.DataFrame:
    """Encounters (patient, id, class, start, end or '')."""
    patient, ids, kind, start, end = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "patient": list(patient),
            "id": list(ids),
            "start_time": times(*start),
            "end_time": times(*end),
            "encounter_class": list(kind),
        }
    )


def run_check(library: Library, rule_id: str, calendar_library: Library | None = None, **frames) -> Finding:
    """The rule `rule_id` of `library` checked against PATIENTS and `frames`."""
    rule = library.audit.rules[rule_id]
    zones = city_time_zones(library.names)
    tables = AuditTables({"patients": PATIENTS, **frames}, (calendar_library or library).calendar, zones)
    return CHECKS[rule.kind](tables, rule)


def whats(finding: Finding) -> list[str]:
    return finding.violations["what"].tolist()


# --- the rule kinds, each on hand-made tables ------------------------------------------------------------


def test_introduction_year_dates_codes_by_age(shipped_library: Library, fixture_library: Library) -> None:
    meds = medications(
        (0, "285018", "1999-06-01", ""), (1, "285018", "2001-01-05", ""), (0, "313782", "1900-01-01", "")
    )
    shots = pd.DataFrame(
        {
            "patient": [0, 1, 0],
            "time": times("2005-10-01", "2005-10-01", "2021-10-01"),  # at 55 (before 2010-02) / at 25 / at 71
            "system": "http://hl7.org/fhir/sid/cvx",
            "code": "140",
            "display": "Influenza, seasonal, injectable, preservative free",
            "encounter_id": "e-0",
        }
    )
    empty = {name: observations((0, "2000-01-01", "8302-2", 1.0)).iloc[:0] for name in ("procedures", "observations")}
    found = run_check(
        shipped_library, "introduction_year", fixture_library, medications=meds, immunizations=shots, **empty
    )
    # the fixture calendar: insulin glargine from 2000; influenza vaccine from 1960, at 0.5-65 from 2010-02
    assert found.checked == 5  # acetaminophen is undated: not checked
    assert sorted(whats(found)) == ["immunizations before introduction"] * 2 + ["medications before introduction"]
    assert set(found.violations["patient"]) == {0, 1}
    assert "first possible 2010-02-01" in found.violations["detail"].iloc[0]


def test_ckd_epi_2021_gives_the_published_values(shipped_library: Library) -> None:
    eq = shipped_library.audit.rules["derived_egfr"].equation
    # 142 x (1.0/0.9)^-1.200 x 0.9938^50 = 91.7; 142 x 1 x 0.9938^60 x 1.012 = 99.0 (Inker 2021, NKF calculator)
    values = ckd_epi(np.array([1.0, 0.7]), np.array([50, 60]), np.array([False, True]), eq)
    assert values == pytest.approx([91.7, 99.0], abs=0.1)


def test_derived_egfr(shipped_library: Library) -> None:
    eq = shipped_library.audit.rules["derived_egfr"].equation
    right = round(float(ckd_epi(np.array([0.9]), np.array([70]), np.array([True]), eq)[0]))  # patient 0 at 70
    obs = observations(
        (0, "2020-06-01 09:00", "2160-0", 0.9),
        (0, "2020-06-01 09:00", "98979-8", right),
        (0, "2021-06-01 09:00", "2160-0", 0.9),
        (0, "2021-06-01 09:00", "98979-8", right + 6),
        (0, "2022-06-01 09:00", "98979-8", 80),  # no creatinine with it
        (1, "1995-06-01 09:00", "98979-8", 150),  # at 14: not an adult, not checked
    )
    found = run_check(shipped_library, "derived_egfr", observations=obs)
    assert found.checked == 3
    assert sorted(whats(found)) == ["eGFR differs from its equation", "eGFR without a creatinine"]


def test_derived_bmi(shipped_library: Library) -> None:
    obs = observations(
        (0, "2020-01-01", "29463-7", 70.0),
        (0, "2020-01-01", "8302-2", 175.0),
        (0, "2020-01-01", "39156-5", 22.9),  # 70 / 1.75^2 = 22.857
        (0, "2021-01-01", "29463-7", 70.0),
        (0, "2021-01-01", "8302-2", 175.0),
        (0, "2021-01-01", "39156-5", 23.5),
        (1, "2021-01-01", "39156-5", 30.0),  # no weight and height with it: not checked
    )
    found = run_check(shipped_library, "derived_bmi", observations=obs)
    assert found.checked == 2
    assert len(found.violations) == 1 and found.violations["time"].iloc[0] == utc("2021-01-01")


def test_adult_height_stable(shipped_library: Library) -> None:
    obs = observations(
        (0, "1960-01-01", "8302-2", 130.0),  # at 9 and 11: growth, not checked
        (0, "1962-01-01", "8302-2", 142.0),
        (0, "1980-06-01", "8302-2", 165.0),  # at 30
        (0, "1981-06-01", "8302-2", 165.5),
        (0, "1982-06-01", "8302-2", 168.5),  # 3 cm taller a year later
        (0, "2025-06-01", "8302-2", 165.0),  # at 75: 3.5 cm lost in 43 years is aging
        (0, "2026-06-01", "8302-2", 161.0),  # 4 cm in a year is not
    )
    found = run_check(shipped_library, "adult_height_stable", observations=obs)
    assert found.checked == 4
    assert found.violations["time"].tolist() == [utc("1982-06-01"), utc("2026-06-01")]


def test_hba1c_pace(shipped_library: Library) -> None:
    obs = observations(
        (0, "2020-01-01", "4548-4", 8.0),
        (0, "2020-03-31", "4548-4", 6.0),  # -2 in 90 days: physiological
        (0, "2020-04-10", "4548-4", 6.1),  # 10 days later: repeated too soon
        (1, "2010-01-01", "4548-4", 9.0),
        (1, "2010-02-01", "4548-4", 5.0),  # -4 in 31 days: at most about 3.4
    )
    found = run_check(shipped_library, "hba1c_pace", observations=obs)
    assert found.checked == 3
    assert whats(found) == ["repeated too soon", "changed too fast"]


def test_acute_vitals(shipped_library: Library) -> None:
    visits = encounters(
        (0, "ed", "emergency", "2020-01-01 10:00", "2020-01-01 14:00"),
        (0, "icu", "icu", "2020-01-01 14:00", "2020-01-03 10:00"),
        (0, "well", "wellness", "2020-02-03 15:00", "2020-02-03 15:20"),
    )
    vitals = ("8867-4", "9279-1", "8480-6", "8310-5", "59408-5")
    before_oximetry = encounters((0, "ed-1975", "emergency", "1975-01-01 10:00", "1975-01-01 14:00"))
    obs = pd.concat(
        [
            observations(*((0, "2020-01-01 10:05", code, 1.0) for code in vitals), encounter="ed"),
            observations((0, "2020-01-01 14:05", "8867-4", 90.0), encounter="icu"),
            observations(*((0, "1975-01-01 10:05", code, 1.0) for code in vitals[:4]), encounter="ed-1975"),
        ],
        ignore_index=True,
    )
    visits = pd.concat([visits, before_oximetry], ignore_index=True)
    found = run_check(shipped_library, "acute_vitals", encounters=visits, observations=obs)
    assert found.checked == 3  # the wellness visit is not acute; in 1975 no SpO2 is asked for (pulse oximetry: 1983)
    assert found.violations["detail"].tolist() == [
        "icu encounter without respiratory_rate, blood_pressure, temperature, oxygen_saturation"
    ]


def test_nothing_after_death(shipped_library: Library) -> None:
    rule = shipped_library.audit.rules["nothing_after_death"]
    narrow = NothingAfterDeathRule.model_validate(
        {**rule.model_dump(), "events": {"observations": ["time"], "encounters": ["start_time"]}}
    )
    tables = AuditTables(
        {
            "patients": PATIENTS,
            "observations": observations((1, "2019-06-01", "8867-4", 80.0), (1, "2020-02-01", "8867-4", 80.0)),
            "encounters": encounters(
                (1, "e-1", "inpatient", "2019-12-30", "2020-01-05"),  # ends after death
                (0, "e-2", "inpatient", "2019-12-30", ""),  # open, but patient 0 lives
            ),
            "medications": medications(
                (1, "314076", "2019-01-01", ""),  # still taken by a dead man
                (1, "197361", "2019-01-01", "2019-12-01"),
                (0, "197361", "2019-01-01", ""),
            ),
        }
    )
    found = CHECKS[narrow.kind](tables, narrow)
    assert found.checked == 2 + 1 + 2  # the dead patient's observations, encounters and courses
    assert sorted(whats(found)) == [
        "encounters open after death",
        "medications open after death",
        "observations time after death",
    ]


def test_death_in_hospital(shipped_library: Library) -> None:
    stays = encounters(
        (1, "e-1", "inpatient", "2019-12-28", "2020-01-01"),  # the terminal stay: ends at death, expired
        (1, "e-2", "emergency", "2019-12-31", "2020-01-02"),  # died during it, but it goes on
        (1, "e-3", "icu", "2019-12-30", "2020-01-01"),  # ends at death, sent home
        (1, "e-4", "ambulatory", "2019-12-31", "2020-01-02"),  # not a hospital encounter
        (1, "e-5", "inpatient", "2019-11-01", "2019-11-05"),  # ended before death
        (0, "e-6", "inpatient", "2019-12-30", ""),  # patient 0 lives
    ).assign(discharge_disposition=["exp", None, "home", None, "home", None])
    found = run_check(shipped_library, "death_in_hospital", encounters=stays)
    assert found.checked == 3
    assert sorted(whats(found)) == ["hospital death not as expired", "hospital death not at the encounter's end"]
    unwritten = stays.drop(columns="discharge_disposition")
    unwritten = run_check(shipped_library, "death_in_hospital", encounters=unwritten)
    assert whats(unwritten) == ["hospital death not at the encounter's end"]  # a run written without dispositions


def test_duplicate_drug_class_and_product(shipped_library: Library) -> None:
    meds = medications(
        (0, "314076", "2015-01-01", "2020-01-01"),  # lisinopril
        (0, "979492", "2018-01-01", ""),  # losartan while on lisinopril: dual RAS blockade
        (1, "1373463", "2012-01-01", "2019-01-01"),  # canagliflozin, then a switch to dapagliflozin
        (1, "1488569", "2019-01-01", ""),
        (1, "308191", "2016-03-01", "2016-03-11"),  # amoxicillin, then a second course during the first
        (1, "308191", "2016-03-05", "2016-03-15"),
    )
    classes = run_check(shipped_library, "duplicate_drug_class", medications=meds)
    assert classes.checked == 4
    assert whats(classes) == ["two drugs of renin_angiotensin_blockers at once"]
    products = run_check(shipped_library, "duplicate_product", medications=meds)
    assert products.checked == 6
    assert products.violations["time"].tolist() == [utc("2016-03-05")]


def test_add_on_only_after_the_maximum_metformin_dose(shipped_library: Library) -> None:
    meds = medications(
        (0, "860975", "2010-01-01", "2011-01-01"),  # metformin 500 mg, raised to 2,000 mg a day
        (0, "861004", "2011-01-01", ""),
        (0, "310490", "2011-06-01", ""),  # glipizide five months later: fine
        (1, "861004", "2012-01-01", "2015-01-01"),
        (1, "1373463", "2012-02-01", ""),  # canagliflozin a month after titration: too early
        (1, "285018", "2016-01-01", ""),  # glargine after metformin stopped: no metformin course running
    )
    finding = run_check(shipped_library, "add_on_after_maximum_metformin", medications=meds)
    assert finding.checked == 3
    assert finding.violations["patient"].tolist() == [1, 1]
    assert sorted(finding.violations["time"]) == [utc("2012-02-01"), utc("2016-01-01")]


def test_warfarin_courses_have_their_inr_checked(shipped_library: Library) -> None:
    meds = medications(
        (0, "855332", "2005-01-01", "2005-03-01"),  # INR every 4 weeks: fine
        (1, "855332", "2010-01-01", ""),  # running to the last encounter, unchecked for two months
        (0, "855332", "1970-01-01", "1982-12-31"),  # before the INR (1983): nothing to check
    )
    inr = observations(
        (0, "2005-01-08", "6301-6", 2.1),
        (0, "2005-02-05", "6301-6", 2.6),
        (0, "2005-02-26", "6301-6", 2.9),
        (1, "2010-01-20", "6301-6", 2.4),
    )
    visits = encounters((0, "e-0", "ambulatory", "2005-02-26", ""), (1, "e-1", "ambulatory", "2010-03-30", ""))
    finding = run_check(shipped_library, "warfarin_inr", medications=meds, observations=inr, encounters=visits)
    assert finding.checked == 2
    assert finding.violations["patient"].tolist() == [1]
    assert whats(finding) == ["monitoring reading more than 35 days apart"]


def test_visit_hours_in_local_time(shipped_library: Library) -> None:
    visits = encounters(
        (0, "a", "wellness", "2024-01-08 15:00", ""),  # Monday 09:00 in Chicago (CST)
        (0, "b", "ambulatory", "2024-01-08 13:00", ""),  # Monday 07:00: too early
        (0, "c", "ambulatory", "2024-01-13 16:00", ""),  # a Saturday
        (0, "d", "ambulatory", "2024-07-08 13:30", ""),  # Monday 08:30 in Chicago (CDT, summer time)
        (1, "e", "ambulatory", "2024-07-08 13:30", ""),  # 07:30 in El Paso (names.yaml: Mountain time)
        (1, "f", "emergency", "2024-07-08 09:00", ""),  # emergencies come at any hour
    )
    found = run_check(shipped_library, "visit_hours", encounters=visits)
    assert found.checked == 5
    assert sorted(found.violations["detail"]) == [
        "Monday 2024-01-08 07:00 local time (America/Chicago)",
        "Monday 2024-07-08 07:30 local time (America/Denver)",
        "Saturday 2024-01-13 10:00 local time (America/Chicago)",
    ]


def test_time_order_birth_and_encounter_bounds(shipped_library: Library) -> None:
    visits = encounters(
        (0, "e-0", "ambulatory", "2020-01-01 10:00", "2020-01-01 10:30"),
        (0, "e-1", "ambulatory", "2020-02-01 10:00", "2020-02-01 09:00"),  # ends before it starts
    )
    obs = observations(
        (0, "2020-01-01 10:10", "8867-4", 70.0),
        (0, "2020-01-01 11:00", "8867-4", 70.0),  # after its encounter ended
        (0, "1940-01-01 10:00", "8867-4", 70.0),  # before birth
    )
    frames = {"encounters": visits, "observations": obs}
    order = run_check(shipped_library, "encounter_and_course_order", **frames, **_empty("medications", "conditions"))
    assert whats(order) == ["encounters end_time before start_time"]
    birth = run_check(shipped_library, "not_before_birth", **frames, **_empty(*COLUMNS))
    assert whats(birth) == ["observations before birth"]
    within = run_check(shipped_library, "within_encounter", **frames, **_empty(*COLUMNS))
    assert within.checked == 3
    assert within.violations["time"].tolist() == [utc("2020-01-01 11:00"), utc("1940-01-01 10:00")]


def _empty(*names: str) -> dict[str, pd.DataFrame]:
    """Empty tables with the audit's columns (datetimes typed), for checks that read several tables."""
    frames = {}
    for name in names:
        if name in ("patients", "encounters", "observations"):
            continue
        frame = pd.DataFrame({c: pd.Series(dtype="string") for c in COLUMNS[name]}).assign(
            patient=pd.Series(dtype="int64")
        )
        for column in COLUMNS[name]:
            if column == "time" or column.endswith("_time"):
                frame[column] = pd.Series(dtype="datetime64[us, UTC]")
        frames[name] = frame
    return frames


# --- the rules file ----------------------------------------------------------------------------------------


def test_every_kind_has_one_check() -> None:
    assert set(CHECKS) == set(KIND_NAMES)


def test_the_shipped_rules_name_what_the_run_holds(shipped_library: Library) -> None:
    """Columns are among those the audit reads; drug groups are the modules' products with their displays;
    every state and city addresses are drawn from has a time zone."""
    rules = shipped_library.audit.rules
    for rule in rules.values():
        for table, column in rule.named_columns():
            assert column in COLUMNS[table], (table, column)
    dosing = shipped_library.medication_dosing.dosing
    for group in rules["duplicate_drug_class"].groups.values():
        for code, member in group.members.items():
            assert dosing[code].product == member.display
    zones = city_time_zones(shipped_library.names)
    assert len(zones) == len(shipped_library.names.cities)


def test_a_bad_rule_is_reported_at_its_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(DATA / "fixture" / "rules", rules)
    doc = yaml.safe_load((rules / "audit.yaml").read_text())
    doc["rules"]["hba1c_pace"]["min_repeat_dayz"] = doc["rules"]["hba1c_pace"].pop("min_repeat_days")
    doc["rules"]["visit_hours"]["kind"] = "visit_hour"
    (rules / "audit.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(LoadError) as caught:
        load_library(DATA / "fixture" / "modules", rules)
    text = "\n".join(str(p) for p in caught.value.problems)
    assert "audit.yaml:" in text
    assert "rules.hba1c_pace.min_repeat_dayz: unknown key 'min_repeat_dayz' (did you mean 'min_repeat_days'?)" in text
    assert "rules.visit_hours: kind must be one of" in text


def test_the_model_validates_the_shipped_file() -> None:
    assert AuditRules.model_validate(yaml.safe_load((SHIPPED_RULES / "audit.yaml").read_text())).rules


# --- a written run ---------------------------------------------------------------------------------------


def test_audit_of_a_shipped_run(shipped_export: Path, shipped_library: Library) -> None:
    report = simulator.audit(shipped_export)
    again = simulator.audit(shipped_export, examples=1)  # simulator.audit stays the function
    assert isinstance(report, AuditReport) and [r.id for r in report.rules] == [r.id for r in again.rules]
    assert [r.id for r in report.rules] == list(shipped_library.audit.rules)
    decedents = json.loads((shipped_export / "manifest.json").read_text())["counts"]["decedents"]
    assert report.patients == 40 + decedents and decedents > 0
    by_id = {r.id: r for r in report.rules}
    assert by_id["nothing_after_death"].checked > 0 and by_id["nothing_after_death"].violations == 0  # decedents
    assert by_id["within_encounter"].checked > 1000 and by_id["introduction_year"].checked > 0
    assert by_id["duplicate_drug_class"].violations == 0  # heart_failure.yaml ARNI and SGLT2 rules
    for r in report.rules:
        assert r.violations >= 0 and len(r.examples) <= min(3, r.violations)
        assert len({e["patient_id"] for e in r.examples}) == len(r.examples)


def test_blocks_and_csv_give_the_same_counts(fixture_export: Path, tmp_path: Path) -> None:
    whole = audit_run(fixture_export).table()
    assert whole["checked"].sum() > 0
    pd.testing.assert_frame_equal(audit_run(fixture_export, block_patients=40).table(), whole)
    csv_run = tmp_path / "csv_run"
    csv_run.mkdir()
    shutil.copy(fixture_export / "manifest.json", csv_run)
    shutil.copytree(fixture_export / "csv", csv_run / "csv")
    pd.testing.assert_frame_equal(audit_run(csv_run).table(), whole)


def test_cli_audit_prints_a_table_and_writes_only_the_json(fixture_export: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(fixture_export) for p in fixture_export.rglob("*"))
    report_file = tmp_path / "audit.json"
    result = CliRunner().invoke(app, ["audit", str(fixture_export), "--examples", "2", "--json", str(report_file)])
    assert result.exit_code == 0, result.output
    for rule_id in load_library(DATA / "fixture" / "modules", DATA / "fixture" / "rules").audit.rules:
        assert rule_id in result.output
    assert "violations of" in result.output and "patients" in result.output
    written = json.loads(report_file.read_text())
    assert written["patients"] == 150 and {"checked", "violations", "rate", "examples"} <= set(written["rules"][0])
    assert sorted(p.relative_to(fixture_export) for p in fixture_export.rglob("*")) == before
    strict = CliRunner().invoke(app, ["audit", str(fixture_export), "--strict"])
    assert strict.exit_code == (1 if written["violations"] else 0)


def test_cli_audit_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 1
    assert "holds no manifest.json" in result.output and "Traceback" not in result.output


def test_a_rule_naming_a_column_the_audit_does_not_read(fixture_export: Path, fixture_library: Library) -> None:
    rules = fixture_library.audit.model_dump()
    rules["rules"]["encounter_and_course_order"]["pairs"][0]["after"] = "finish_time"
    with pytest.raises(ValueError, match="encounters has no column finish_time"):
        audit_run(fixture_export, rules=AuditRules.model_validate(rules))


# --- every generated cohort of the shipped library passes the audit -----------------------------------------


def _failing(report: AuditReport) -> dict[str, tuple[int, list[dict[str, str]]]]:
    return {r.id: (r.violations, r.examples[:2]) for r in report.rules if r.violations}


@pytest.mark.slow
@pytest.mark.parametrize("cohort", ["shipped_population", "shipped_lifetime"])
def test_generated_cohorts_break_no_audit_rule(cohort: str, request: pytest.FixtureRequest, shipped_library) -> None:
    """The shared cohorts of the shipped modules (3,000 living patients, 1,000 lifetimes with their deaths): 0
    violations of every rule of rules/audit.yaml, warnings included, and every rule checks something."""
    population = request.getfixturevalue(cohort)
    report = audit_cohort(shipped_library, population.patients, population.events, population.manifest["seed"])
    assert _failing(report) == {}
    unchecked = {r.id for r in report.rules if r.checked == 0}
    # a birth cohort holds no decedents (a population run's extra records of the deaths in its window), and is
    # born after apixaban's approval (2012): no warfarin course to monitor
    assert unchecked <= ({"nothing_after_death"} if cohort == "shipped_population" else {"decedents", "warfarin_inr"})


@pytest.mark.slow
def test_written_runs_break_no_audit_rule(teaching_run: Path, shipped_export: Path) -> None:
    """What `ehrsim audit` reads: the Parquet tables of the shared written runs."""
    for run in (teaching_run, shipped_export):
        assert _failing(simulator.audit(run)) == {}, run


def test_observable_limits_lie_inside_the_plausible_ranges(shipped_library: Library) -> None:
    """No observable can be drawn beyond the range `plausible_values` checks its code against (limits up to
    90/min once gave a newborn's wellness visit a respiratory rate of 85/min in 10,000 patients)."""
    ranges = {
        code: bounds
        for rule in shipped_library.audit.rules.values()
        if rule.kind == "plausible_values"
        for code, bounds in rule.ranges.items()  # type: ignore[attr-defined]
    }
    checked = []
    for module in shipped_library.modules:
        for name, observable in module.observables.items():
            bounds = ranges.get(observable.code.code)
            if bounds is None:
                continue
            assert observable.unit == bounds.unit and observable.limits is not None, (module.name, name)
            assert bounds.low <= observable.limits[0] and observable.limits[1] <= bounds.high, (module.name, name)
            checked.append(observable.code.code)
    assert {"8867-4", "9279-1", "8310-5", "59408-5"} <= set(checked)
