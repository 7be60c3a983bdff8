"""Care plans, goals and care teams (rules/care_plans.yaml), clinical notes and provenance in the FHIR output
(simulator/export/care_plans.py, notes.py, provenance.py), on the fixture export (150 lifetimes, chunks of 64)
and the shipped one."""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from datetime import date, datetime
from pathlib import Path

import orjson
import pandas as pd
import pytest
from conftest import DATA, edited_rules_problems, read_ndjson
from fhir.resources.R4B import get_fhir_model_class

from simulator.export.directory import SHARED_TYPES
from simulator.export.ids import patient_of
from simulator.export.readable import without_semantic_tag
from simulator.model.checks import load_terminology
from simulator.model.library import Library
from simulator.model.parsing import LoadError
from simulator.model.schema import CODE_SYSTEMS

OWN = ("CareTeam", "Goal", "CarePlan", "DocumentReference", "Provenance")
ACUTE_NOTE = {"emergency": "34111-5", "inpatient": "18842-5", "icu": "18842-5"}
DAYS_PER_YEAR = 365.25


@pytest.fixture(scope="module")
def fhir(fixture_export: Path) -> dict[str, list[dict]]:
    return read_ndjson(fixture_export)


@pytest.fixture(scope="module")
def by_reference(fhir: dict) -> dict[str, dict]:
    return {f"{t}/{r['id']}": r for t, items in fhir.items() for r in items}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _years(since: str, until: str) -> float:
    return (_time(until) - _time(since + "T00:00:00Z")).total_seconds() / 86400 / DAYS_PER_YEAR


def _note(document: dict) -> str:
    return base64.b64decode(document["content"][0]["attachment"]["data"]).decode()


def _number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def test_every_planned_episode_has_a_care_plan_with_its_goals(
    fhir: dict, by_reference: dict, fixture_library: Library
) -> None:
    """Each diagnosed episode of a planned condition whose plan could start (at diagnosis, or at the plan's
    minimum age) before it resolved and before death has one plan, with the rules' goals, its status from the
    episode's course."""
    rules = fixture_library.care_plans
    plan_of = rules.plan_of()
    patients = {f"Patient/{p['id']}": p for p in fhir["Patient"]}
    expected = set()
    for condition in fhir["Condition"]:
        code = condition["code"]["coding"][0]["code"]
        if condition["category"][0]["coding"][0]["code"] != "encounter-diagnosis" or code not in plan_of:
            continue
        patient = patients[condition["subject"]["reference"]]
        start = max(
            _time(condition["recordedDate"]),
            _time(patient["birthDate"] + "T00:00:00Z")
            + pd.Timedelta(days=rules.plans[plan_of[code]].min_age * DAYS_PER_YEAR),
        )
        ends = [_time(t) for t in (condition.get("abatementDateTime"), patient.get("deceasedDateTime")) if t]
        if all(start <= end for end in ends):
            expected.add(f"Condition/{condition['id']}")
    plans = fhir["CarePlan"]
    addressed = Counter(plan["addresses"][0]["reference"] for plan in plans)
    assert len(addressed) > 50 and max(addressed.values()) == 1
    assert set(addressed) == expected
    statuses = Counter()
    for plan in plans:
        condition = by_reference[plan["addresses"][0]["reference"]]
        patient = patients[plan["subject"]["reference"]]
        status = (
            "completed"
            if "abatementDateTime" in condition
            else "revoked"
            if "deceasedDateTime" in patient
            else "active"
        )
        assert plan["status"] == status and plan["intent"] == "plan"
        statuses[status] += 1
        assert plan["category"][0]["coding"][0]["code"] == "assess-plan"
        assert plan["period"]["start"] >= condition["recordedDate"]
        rule = rules.plans[plan_of[condition["code"]["coding"][0]["code"]]]
        assert (
            plan["title"] == rule.title
            and without_semantic_tag(condition["code"]["coding"][0]["display"]) in plan["text"]["div"]
        )
        goals = [by_reference[g["reference"]] for g in plan["goal"]]
        assert [g["description"]["text"].split(" (")[0] for g in goals] == [g.description for g in rule.goals]
        for goal in goals:
            assert goal["subject"] == plan["subject"] and goal["addresses"] == plan["addresses"]
            assert goal["lifecycleStatus"] == {"revoked": "cancelled"}.get(status, status)
            assert goal["startDate"] == plan["period"]["start"][:10]
        team = by_reference[plan["careTeam"][0]["reference"]]
        assert team["subject"] == plan["subject"]
    assert statuses["completed"] > 10 and statuses["revoked"] > 10  # lifetimes: episodes resolve, patients die


def test_goal_targets_follow_the_rules(fhir: dict, by_reference: dict, fixture_library: Library) -> None:
    """HbA1c below 7%, 8% from 65 at the plan's start; blood pressure below 130/80; body weight at most 95%
    of the latest weight before the plan, due in 6 months."""
    weights = defaultdict(list)
    for observation in fhir["Observation"]:
        if observation["code"]["coding"][0]["code"] == "29463-7":
            weights[observation["subject"]["reference"]].append(
                (observation["effectiveDateTime"], observation["valueQuantity"]["value"])
            )
    seen = Counter()
    for plan in fhir["CarePlan"]:
        birth = by_reference[plan["subject"]["reference"]]["birthDate"]
        start = plan["period"]["start"]
        for goal in (by_reference[g["reference"]] for g in plan["goal"]):
            for target in goal["target"]:
                code = target["measure"]["coding"][0]["code"]
                quantity = target["detailQuantity"]
                if code == "4548-4":
                    older = _years(birth, start) >= 65
                    assert (quantity["value"], quantity["comparator"], quantity["code"]) == (
                        8.0 if older else 7.0,
                        "<",
                        "%",
                    )
                    seen[f"hba1c {older}"] += 1
                elif code in ("8480-6", "8462-4"):
                    assert quantity["value"] == {"8480-6": 130, "8462-4": 80}[code] and quantity["code"] == "mm[Hg]"
                    seen["bp"] += 1
                else:
                    assert code == "29463-7" and quantity["comparator"] == "<="
                    before = [(at, value) for at, value in weights[plan["subject"]["reference"]] if at <= start]
                    last = max(at for at, _ in before)
                    # two visits at one instant (a follow-up delay drawn below zero) give two latest weights
                    assert quantity["value"] in {round(value * 0.95, 1) for at, value in before if at == last}
                    due = date.fromisoformat(target["dueDate"])
                    assert abs((due - date.fromisoformat(start[:10])).days - 182.6) <= 1.5
                    seen["weight"] += 1
    assert min(seen.values()) > 0 and set(seen) == {"hba1c True", "hba1c False", "bp", "weight"}


def test_care_team_names_the_patient_and_their_primary_care_practitioner(
    fhir: dict, by_reference: dict, fixture_library: Library
) -> None:
    roles = fixture_library.care_plans.care_team_roles
    teams = fhir["CareTeam"]
    assert Counter(t["subject"]["reference"] for t in teams) == Counter(
        {p["subject"]["reference"]: 1 for p in fhir["CarePlan"]}
    )
    for team in teams:
        patient = by_reference[team["subject"]["reference"]]
        me, doctor = team["participant"]
        assert me["member"] == team["subject"] and me["role"][0]["coding"][0]["code"] == roles["patient"].code
        assert doctor["role"][0]["coding"][0]["code"] == roles["primary_care_provider"].code
        assert doctor["member"] == patient["generalPractitioner"][0]
        assert doctor["onBehalfOf"] == patient["managingOrganization"] == team["managingOrganization"][0]
        assert team["status"] == ("inactive" if "deceasedDateTime" in patient else "active")


def test_notes_for_acute_encounters_and_adult_wellness_visits(fixture_export: Path, fhir: dict) -> None:
    encounters = pd.read_parquet(fixture_export / "parquet" / "encounters.parquet")
    patients = pd.read_parquet(fixture_export / "parquet" / "patients.parquet").set_index("id")
    birth = pd.Series(patients["birth_time"].reindex(encounters["patient_id"]).to_numpy(), index=encounters.index)
    age = (encounters["start_time"] - birth).dt.total_seconds() / 86400
    klass = encounters["encounter_class"].astype(str)
    wanted = klass.isin(list(ACUTE_NOTE)) | ((klass == "wellness") & (age / DAYS_PER_YEAR >= 18))
    notes = {d["context"]["encounter"][0]["reference"].split("/")[1]: d for d in fhir["DocumentReference"]}
    assert len(notes) == len(fhir["DocumentReference"])
    assert set(notes) == set(encounters.loc[wanted, "id"])
    for row in encounters[wanted].itertuples():
        document = notes[row.id]
        code = document["type"]["coding"][0]["code"]
        if row.encounter_class in ACUTE_NOTE:
            assert code == (ACUTE_NOTE[row.encounter_class] if pd.notna(row.end_time) else "34117-2")
        else:
            assert code == "11506-3"
        assert document["status"] == "current" and document["category"][0]["coding"][0]["code"] == "clinical-note"
        assert document["author"][0]["reference"] == f"Practitioner/{row.practitioner_id}"
        assert document["custodian"]["reference"] == f"Organization/{row.organization_id}"
        assert document["content"][0]["attachment"]["contentType"].startswith("text/plain")
    assert Counter(ACUTE_NOTE.get(k, "11506-3") for k in klass[wanted]).keys() >= {"34111-5", "18842-5", "11506-3"}


@pytest.mark.parametrize("cohort", ["fixture_export", pytest.param("teaching_run", marks=pytest.mark.slow)])
def test_notes_say_what_their_encounter_recorded(cohort: str, request: pytest.FixtureRequest) -> None:
    """Every measurement, lab (flagged high where the Observation is), symptom, medication started and
    procedure of the encounter is in its note, in plain words (the shipped modules record symptoms in
    encounters that have notes, the fixture's do not)."""
    fhir = read_ndjson(request.getfixturevalue(cohort))
    by_reference = {f"{t}/{r['id']}": r for t, items in fhir.items() for r in items}
    notes = {d["context"]["encounter"][0]["reference"]: _note(d) for d in fhir["DocumentReference"]}
    checked = Counter()
    for observation in fhir["Observation"]:
        note = notes.get(observation.get("encounter", {}).get("reference"))
        if note is None or "valueCodeableConcept" in observation:
            continue
        name = without_semantic_tag(observation["code"]["coding"][0]["display"])
        if observation["code"]["coding"][0]["system"] == "http://snomed.info/sct":  # a symptom
            assert f"{name} (severity " in note.split("Reported symptoms: ")[1]
            checked["symptom"] += 1
            continue
        parts = observation.get("component") or [observation]
        for part in parts:
            phrase = f"{part['code']['coding'][0]['display']} {_number(part['valueQuantity']['value'])}"
            assert phrase in note, (phrase, note)
            checked[observation["category"][0]["coding"][0]["code"]] += 1
        if observation.get("interpretation", [{}])[0].get("coding", [{}])[0].get("code") == "H":
            assert f"{phrase} " in note and "(high)" in note.split(phrase)[1][:20]
            checked["high"] += 1
    for kind, key in (("MedicationRequest", "medicationCodeableConcept"), ("Procedure", "code")):
        for resource in fhir[kind]:
            note = notes.get(resource.get("encounter", {}).get("reference"))
            if note is not None:
                assert without_semantic_tag(resource[key]["coding"][0]["display"]) in note.split("Plan: ")[1]
                checked[kind] += 1
    for reference, note in notes.items():
        encounter = by_reference[reference]
        reason = (encounter.get("reasonCode") or encounter["type"])[0]["coding"][0]["display"]
        assert f". Reason for visit: {without_semantic_tag(reason)}." in note
    assert set(checked) >= {"vital-signs", "laboratory", "high", "MedicationRequest", "Procedure"}
    assert cohort == "fixture_export" or checked["symptom"] > 0


@pytest.mark.parametrize("cohort", ["fixture_export", pytest.param("shipped_export", marks=pytest.mark.slow)])
def test_provenance_targets_every_resource_of_the_record_exactly_once(
    cohort: str, request: pytest.FixtureRequest
) -> None:
    """One Provenance per encounter (its resources; author its practitioner for its organization, recorded
    at its end) and one per patient (the rest; author the clinic); each names its patient first."""
    folder = request.getfixturevalue(cohort) / "fhir"
    lines = {path.stem: path.read_bytes().splitlines() for path in folder.glob("*.ndjson")}
    owner: dict[str, str] = {}  # resource -> its patient
    resources: dict[str, dict] = {}
    for kind, items in lines.items():
        if kind in SHARED_TYPES or kind == "Provenance":
            continue
        for line in items:
            resource = orjson.loads(line)
            reference = f"{kind}/{resource['id']}"
            owner[reference], resources[reference] = patient_of(line), resource
    targeted = Counter()
    for line in lines["Provenance"]:
        provenance = orjson.loads(line)
        targets = [t["reference"] for t in provenance["target"]]
        targeted.update(targets)
        assert {owner[t] for t in targets} == {patient_of(line)}
        agent = provenance["agent"][0]
        assert agent["type"]["coding"][0]["code"] == "author"
        encounters = [t for t in targets if t.startswith("Encounter/")]
        if encounters:  # an encounter's
            (encounter,) = encounters
            period = resources[encounter]["period"]
            assert provenance["recorded"] == period.get("end", period["start"])
            assert agent["who"]["reference"] == resources[encounter]["participant"][0]["individual"]["reference"]
            assert agent["onBehalfOf"] == resources[encounter]["serviceProvider"]
            for target in targets:
                resource = resources[target]
                named = resource.get("encounter") or resource.get("context", {}).get("encounter", [None])[0]
                assert target == encounter or named == {"reference": encounter}, target
        else:  # the patient's
            assert f"Patient/{patient_of(line)}" in targets and agent["who"]["reference"].startswith("Organization/")
    assert targeted.keys() == owner.keys() and set(targeted.values()) == {1}


@pytest.mark.parametrize("cohort", ["fixture_export", pytest.param("shipped_export", marks=pytest.mark.slow)])
def test_samples_validate_with_fhir_resources(cohort: str, request: pytest.FixtureRequest) -> None:
    resources = read_ndjson(request.getfixturevalue(cohort))
    for kind in OWN:
        items = resources[kind]
        assert items, kind
        model = get_fhir_model_class(kind)
        for item in items[:: max(1, len(items) // 100)]:
            model.model_validate(item)
            assert item["meta"]["profile"] == [
                f"http://hl7.org/fhir/us/core/StructureDefinition/us-core-{kind.lower()}"
            ]


def test_shipped_plans_use_the_modules_codes_and_the_terminology(shipped_library: Library) -> None:
    rules = shipped_library.care_plans
    declared = {c.code.code: c.code.display for module in shipped_library.modules for c in module.conditions.values()}
    terminology = load_terminology(shipped_library.rules_dir)
    assert terminology is not None
    codes = [*rules.care_team_roles.values()]
    for plan in rules.plans.values():
        for condition in plan.conditions:
            assert declared.get(condition.code) == condition.display, condition
        codes += plan.conditions
        codes += [t.measure for g in plan.goals for t in g.targets] + [
            t.concept for g in plan.goals for t in g.targets if t.concept
        ]
    for code in codes:
        if (code.system, code.code) in terminology:
            assert terminology[(code.system, code.code)] == code.display, code
    assert all(CODE_SYSTEMS[c.system] for c in codes)


def test_a_bad_care_plan_rule_is_reported_with_its_line(tmp_path: Path) -> None:
    rules = DATA / "fixture" / "rules"
    edits = {"care_plans.yaml": ("source: ada_2024_glycemic", "source: ada_2042_glycemic")}
    problems = edited_rules_problems(tmp_path, rules, edits, DATA / "fixture" / "modules")
    text = (rules / "care_plans.yaml").read_text()
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.strip() == "plans:")
    message = str(LoadError(problems))
    assert "care_plans.yaml:" in message and "ada_2042_glycemic" in message and "is not a key of sources" in message
    assert int(message.split("care_plans.yaml:")[1].split(":")[0]) >= line
