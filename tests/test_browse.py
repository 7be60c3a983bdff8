"""The cohort browser (`ehrsim browse`), tested in a real browser: Playwright driving Debian's Chromium
(/usr/bin/chromium, `apt-get install -y chromium`; never `playwright install`, whose download is not
reachable here). The page must load with no console error, list the cohort, narrow it with the filters,
show a patient's timeline and charts, and open the FHIR JSON of a resource; and the files it reads must
hold what the run wrote."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pandas as pd
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from typer.testing import CliRunner

from simulator.cli import app
from simulator.teaching.browse import write_browser

CHROMIUM = Path("/usr/bin/chromium")
FHIR_PATIENTS = 20


def _script_data(path: Path, call: str) -> object:
    """The JSON a data script passes to ehrsimData.<call>(...) (after the patient index, if any)."""
    text = path.read_bytes()
    assert text.startswith(f"ehrsimData.{call}(".encode()) and text.endswith(b");\n")
    body = text[len(f"ehrsimData.{call}(") : -3]
    return orjson.loads(body if call == "index" else body[body.index(b",") + 1 :])


pytestmark = pytest.mark.slow  # a 300-patient run and a real browser: the full tier


@pytest.fixture(scope="module")
def tables(teaching_run: Path) -> dict[str, pd.DataFrame]:
    names = ("patients", "encounters", "conditions", "observations")
    return {name: pd.read_parquet(teaching_run / "parquet" / f"{name}.parquet") for name in names}


@pytest.fixture(scope="module")
def browse_page(teaching_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_browser(teaching_run, tmp_path_factory.mktemp("browse") / "browse", fhir_patients=FHIR_PATIENTS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: apt-get update && apt-get install -y chromium (see .ci/run)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, browse_page: Path) -> Iterator[Page]:
    """The page, opened from file://; the test fails on any console error or uncaught exception."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(browse_page.as_uri())
    opened.wait_for_selector("#list .row")
    yield opened
    context.close()
    assert errors == []


def _open_patient(page: Page, patient_id: str) -> None:
    page.fill("#search", patient_id)
    page.click("#list .row")
    page.wait_for_selector("#timeline .mark")


def _ages(patients: pd.DataFrame, reference: str) -> pd.Series:
    end = patients["death_time"].fillna(pd.Timestamp(reference, tz="UTC"))
    return ((end - patients["birth_time"]).dt.total_seconds() / 86_400 / 365.25).round(1)


def test_the_page_lists_the_cohort(page: Page, tables: dict[str, pd.DataFrame]) -> None:
    patients = tables["patients"]
    assert page.inner_text("#count") == f"{len(patients)} of {len(patients)} patients"
    rows = page.locator("#list .row")
    assert 5 < rows.count() < len(patients), "only the rows in view are rendered"
    first = patients.iloc[0]
    assert rows.first.get_attribute("data-index") == "0"
    assert rows.first.locator(".name").inner_text() == f"{first['given_name']} {first['family_name']}"
    page.locator("#list").evaluate("list => list.scrollTop = 200 * 60")
    page.wait_for_selector('#list .row[data-index="200"]')


def test_filters_narrow_the_list(page: Page, tables: dict[str, pd.DataFrame], teaching_run: Path) -> None:
    patients, conditions, encounters = tables["patients"], tables["conditions"], tables["encounters"]
    page.select_option("#sex", "F")
    assert page.inner_text("#count").startswith(f"{(patients['sex'] == 'F').sum()} of ")
    page.select_option("#sex", "")
    reference = json.loads((teaching_run / "manifest.json").read_text())["config"]["reference_date"]
    page.fill("#age-min", "65")
    assert page.inner_text("#count").startswith(f"{(_ages(patients, reference) >= 65).sum()} of ")
    page.fill("#age-min", "")
    diagnosed = conditions[(conditions["code"] == "38341003") & conditions["diagnosis_time"].notna()]
    option = page.locator("#condition option", has_text="hypertension (").get_attribute("value")
    page.select_option("#condition", option)
    assert page.inner_text("#count").startswith(f"{diagnosed['patient'].nunique()} of ")
    page.select_option("#condition", "")
    page.select_option("#klass", label=page.locator("#klass option", has_text="inpatient").inner_text())
    admitted = encounters.loc[encounters["encounter_class"] == "inpatient", "patient"].nunique()
    assert page.inner_text("#count").startswith(f"{admitted} of ")
    page.select_option("#klass", "")
    family = str(patients["family_name"].iloc[3])
    page.fill("#search", family.lower())
    named = (patients["given_name"] + " " + patients["family_name"]).str.lower().str.contains(family.lower()).sum()
    assert page.inner_text("#count").startswith(f"{named} of ")


def test_a_patient_shows_a_timeline_charts_and_fhir_json(page: Page, tables: dict[str, pd.DataFrame]) -> None:
    patients, encounters, observations = tables["patients"], tables["encounters"], tables["observations"]
    with_labs = observations[(observations["category"] == "laboratory") & (observations["patient"] < FHIR_PATIENTS)]
    patient = patients[patients["index"] == with_labs["patient"].iloc[0]].iloc[0]
    _open_patient(page, str(patient["id"]))
    assert page.inner_text("#p-name") == f"{patient['given_name']} {patient['family_name']}"
    own = encounters[encounters["patient"] == patient["index"]]
    assert page.locator('#timeline rect[data-kind="encounters"]').count() == len(own)
    page.wait_for_selector(".chart svg circle")
    assert page.locator(".chart").count() >= 1
    whole = page.inner_text("#window")
    page.click('button[data-zoom="1"]')
    page.wait_for_function(f"document.getElementById('window').textContent !== {json.dumps(whole)}")
    page.click('button[data-zoom="all"]')
    page.wait_for_function(f"document.getElementById('window').textContent === {json.dumps(whole)}")
    box = page.locator("#timeline").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + 30)
    page.mouse.wheel(0, -300)  # zooms in around the pointer
    page.wait_for_function(f"document.getElementById('window').textContent !== {json.dumps(whole)}")
    page.click('button[data-zoom="all"]')
    top = page.locator('#timeline rect[data-kind="encounters"]').last  # drawn last: on top of the others
    row = int(top.get_attribute("data-row"))  # the encounter's row in the patient's record (table order)
    top.click()
    page.wait_for_selector("#json-pane:not([hidden])")
    resource = json.loads(page.inner_text("#json"))
    assert resource["resourceType"] == "Encounter" and resource["id"] == own["id"].iloc[row]
    page.locator(".chart svg circle").last.click()
    page.wait_for_function("JSON.parse(document.getElementById('json').textContent).resourceType === 'Observation'")
    reading = json.loads(page.inner_text("#json"))
    row = observations[observations["id"] == reading["id"]]
    assert len(row) == 1 and row["patient"].iloc[0] == patient["index"]


def test_a_patient_beyond_the_fhir_cap_shows_the_table_row(page: Page, tables: dict[str, pd.DataFrame]) -> None:
    patient = tables["patients"].iloc[-1]
    _open_patient(page, str(patient["id"]))
    page.locator('#timeline rect[data-kind="encounters"]').last.click()
    page.wait_for_selector("#json-pane:not([hidden])")
    assert "--fhir-patients" in page.inner_text("#json-note")
    row = json.loads(page.inner_text("#json"))
    assert row["table"] == "encounters" and row["id"] in set(tables["encounters"]["id"])


def test_the_data_files_hold_the_run(browse_page: Path, teaching_run: Path, tables: dict[str, pd.DataFrame]) -> None:
    data = browse_page.parent / "data"
    index = _script_data(data / "index.js", "index")
    patients = tables["patients"]
    assert [p[0] for p in index["patients"]] == patients["id"].tolist()
    assert index["run"]["fhir_patients"] == FHIR_PATIENTS and len(list((data / "fhir").glob("*.js"))) == FHIR_PATIENTS
    record = _script_data(data / "patients" / "7.js", "patient")
    assert len(record["encounters"]) == (tables["encounters"]["patient"] == 7).sum()
    assert len(record["observations"]) == (tables["observations"]["patient"] == 7).sum()
    ndjson = [line for path in (teaching_run / "fhir").glob("*.ndjson") for line in path.read_bytes().splitlines()]
    for index in (3, FHIR_PATIENTS - 1):  # the last one too: files are read only until past it
        resources = _script_data(data / "fhir" / f"{index}.js", "fhir")
        patient_id = patients.loc[patients["index"] == index, "id"].iloc[0]
        own = f'"reference":"Patient/{patient_id}"'.encode()
        written = [
            line
            for line in ndjson
            if own in line or line.startswith(b'{"resourceType":"Patient","id":"' + patient_id.encode())
        ]
        assert sorted(orjson.dumps(r) for r in resources) == sorted(
            orjson.dumps(orjson.loads(line)) for line in written
        )
        assert {r["resourceType"] for r in resources} >= {"Patient", "Encounter", "Observation"}


def test_a_new_browser_replaces_an_old_one_and_nothing_else(teaching_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "browse"
    write_browser(teaching_run, out, fhir_patients=0)
    (out / "data" / "patients" / "stale.js").write_text("old")
    write_browser(teaching_run, out, fhir_patients=0)
    assert not (out / "data" / "patients" / "stale.js").exists() and not (out / "data" / "fhir").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an ehrsim browser"):
        write_browser(teaching_run, mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_cli_browse(teaching_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["browse", str(teaching_run), "--out", str(tmp_path / "b"), "--fhir-patients", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "index.html" in result.output and (tmp_path / "b" / "data" / "fhir" / "1.js").is_file()
    result = CliRunner().invoke(app, ["browse", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "holds no manifest.json" in result.output


def test_a_2000_patient_cohort_opens_filters_and_shows_a_patient(
    browser: Browser, parquet_2000: Path, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """The acceptance cohort: 2,000 patients (Parquet only; no FHIR JSON embedded). The time to the first
    rows is recorded (`-rP` or the JUnit XML shows it), never asserted."""
    index = write_browser(parquet_2000, tmp_path / "browse", fhir_patients=0)
    patients = pd.read_parquet(parquet_2000 / "parquet" / "patients.parquet")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    started = time.perf_counter()
    page.goto(index.as_uri())
    page.wait_for_selector("#list .row")
    record_property("first_rows_s", round(time.perf_counter() - started, 3))
    assert page.inner_text("#count") == f"{len(patients):,} of {len(patients):,} patients"  # decedents included
    page.select_option("#sex", "M")
    assert page.inner_text("#count").startswith(f"{(patients['sex'] == 'M').sum():,} of ")
    page.select_option("#sex", "")
    _open_patient(page, str(patients["id"].iloc[1234]))
    assert page.inner_text("#p-name") == f"{patients['given_name'].iloc[1234]} {patients['family_name'].iloc[1234]}"
    context.close()
    assert errors == []
