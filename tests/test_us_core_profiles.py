"""US Core 6.1.0 profiles of the FHIR output, checked offline on a run of the shipped modules:

- Medplum's validator (tests/servers/medplum/validate.mjs) finds no error in any resource, against base R4 and
  against each declared profile it has a definition of (US Core 5.0.1 and 7.0.0 definitions of the same name,
  the FHIR R4 vital-signs profiles); without node or the npm packages this skips, saying so (fails with CI=true);
- every resource of a type that has a US Core profile declares one in meta.profile;
- tests/data/us_core_must_support.csv, the mandatory and must-support elements of each US Core 6.1.0 profile the
  exporter uses (built from the profiles' StructureDefinitions, each row citing its profile page): in every
  resource declaring a profile each mandatory element is there, with its fixed or pattern value, and each
  must-support element is in at least one resource of the profile, unless the table says why the simulator
  never has it (absent_reason)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DATA, REPO, read_ndjson

import simulator

pytestmark = pytest.mark.slow  # a 120-patient run, Medplum's validator and a walk over every resource

SERVER_DIR = REPO / "tests" / "servers" / "medplum"
MUST_SUPPORT = DATA / "us_core_must_support.csv"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
PROFILE_PAGE = "https://hl7.org/fhir/us/core/STU6.1/StructureDefinition-{}.html"
SAMPLE = 100  # resources validated per type and per profile (Medplum parses a profile anew for each resource)
# Resource types with a US Core 6.1.0 profile (https://hl7.org/fhir/us/core/STU6.1/profiles-and-extensions.html)
US_CORE_TYPES = {
    "AllergyIntolerance", "CarePlan", "CareTeam", "Condition", "Coverage", "Device", "DiagnosticReport",
    "DocumentReference", "Encounter", "Goal", "Immunization", "Location", "Medication", "MedicationDispense",
    "MedicationRequest", "Observation", "Organization", "Patient", "Practitioner", "PractitionerRole", "Procedure",
    "Provenance", "QuestionnaireResponse", "RelatedPerson", "ServiceRequest", "Specimen",
}  # fmt: skip


@pytest.fixture(scope="module")
def us_core_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 patients of the shipped modules as ndjson."""
    out = tmp_path_factory.mktemp("us_core") / "run"
    simulator.generate(patients=120, seed=21, out=out, formats="ndjson")
    return out


@pytest.fixture(scope="module")
def resources(us_core_run: Path) -> dict[str, list[dict]]:
    return read_ndjson(us_core_run)


def _declared(resource: dict) -> list[str]:
    """The US Core profiles a resource declares, by name ('us-core-patient'), without any |version."""
    urls = (url.split("|")[0] for url in resource.get("meta", {}).get("profile", []))
    return [url[len(US_CORE) :] for url in urls if url.startswith(US_CORE)]


# --- Medplum's validator ----------------------------------------------------------------------------------


def validate(*args: str, stdin: str | None = None) -> dict:
    """validate.mjs's report on its arguments (or on stdin); skips (fails with CI=true) without node or the
    npm packages, as tests/test_load.py does."""
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not (SERVER_DIR / "node_modules" / "@medplum" / "core").is_dir():
        missing = "its npm packages are not installed"
    if missing:
        message = f"Medplum's validator cannot run: {missing} (`npm ci` in {SERVER_DIR}; .ci/run installs both)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI=true, so this fails instead of skipping")
        pytest.skip(message)
    done = subprocess.run(
        ["node", "validate.mjs", *args], cwd=SERVER_DIR, input=stdin, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _checks(report: dict) -> dict[str, dict]:
    """'base Patient', 'profiles <url>', 'extensions <url>' -> that check's tally."""
    groups = ("base", "profiles", "extensions")
    return {f"{group} {key}": entry for group in groups for key, entry in report[group].items()}


def _issues(report: dict, severity: str) -> dict[str, list[str]]:
    """The issues of one severity, by check, for checks that had any."""
    count = "errors" if severity == "error" else "warnings"
    return {
        name: [
            f"{i['expression']}: {i['text']} ({i['count']}x, e.g. {i['example']})"
            for i in entry["issues"]
            if i["severity"] == severity
        ]
        for name, entry in _checks(report).items()
        if entry[count]
    }


def _errors_by_resource(report: dict) -> dict[str, list[str]]:
    """check -> ids of the resources with an error there (as the issues' examples)."""
    return {
        name: sorted({i["example"].split("/")[1] for i in entry["issues"] if i["severity"] == "error"})
        for name, entry in _checks(report).items()
    }


def _reading(resources: dict[str, list[dict]], loinc: str) -> dict:
    return next(o for o in resources["Observation"] if o["code"]["coding"][0]["code"] == loinc)


def _declare(resource: dict, profile: str, **changes: object) -> dict:
    """A copy declaring only the profile, with changes (None: without that element)."""
    copy = {**resource, "meta": {"profile": [US_CORE + profile]}, **changes}
    return {k: v for k, v in copy.items() if v is not None}


def test_medplum_finds_no_error_against_r4_and_the_declared_profiles(us_core_run: Path) -> None:
    report = validate("--sample", str(SAMPLE), str(us_core_run / "fhir"))
    print(json.dumps({"warnings": _issues(report, "warning"), "not covered": report["not_covered"]}, indent=1))
    assert set(report["base"]) >= {"Patient", "Encounter", "Observation", "Condition"}
    assert "us-core-patient" in report["definitions"] and "us-core-smokingstatus" in report["definitions"]
    checked = {key.rsplit("/", 1)[1] for key in [*report["profiles"], *report["extensions"]]}
    expected = {"us-core-patient", "us-core-blood-pressure", "us-core-medicationrequest", "us-core-race"}
    assert expected <= checked, checked
    assert all(entry["validated"] == min(entry["resources"], SAMPLE) for entry in _checks(report).values())
    assert _issues(report, "error") == {}


def test_the_validator_reports_what_breaks_a_profile(resources: dict[str, list[dict]]) -> None:
    """Harness check: each broken copy fails its own check, the original passes; from stdin as a JSON array."""
    patient = resources["Patient"][0]
    pressure = _reading(resources, "85354-9")
    race = next(e for e in patient["extension"] if e["url"] == US_CORE + "us-core-race")
    without_text = [{**race, "extension": [e for e in race["extension"] if e["url"] != "text"]}]
    items = [
        _declare(patient, "us-core-patient", id="fine"),
        _declare(patient, "us-core-patient", id="no-name", name=None),
        _declare(patient, "us-core-patient", id="race-without-text", extension=without_text),
        _declare(pressure, "us-core-blood-pressure", id="no-diastolic", component=pressure["component"][:1]),
        _declare(_reading(resources, "8867-4"), "us-core-body-weight|6.1.0", id="heart-rate-as-weight"),
    ]
    failing = _errors_by_resource(validate(stdin=json.dumps(items)))
    assert failing[f"profiles {US_CORE}us-core-patient"] == ["no-name"]
    assert failing[f"extensions {US_CORE}us-core-race"] == ["race-without-text"]
    assert failing[f"profiles {US_CORE}us-core-blood-pressure"] == ["no-diastolic"]
    assert failing["profiles http://hl7.org/fhir/StructureDefinition/bodyweight"] == ["heart-rate-as-weight"]
    assert failing["base Patient"] == failing["base Observation"] == []


def test_the_table_checks_inside_slices_where_medplum_does_not(resources: dict[str, list[dict]]) -> None:
    """Medplum walks a blood-pressure component or a typed value[x] with the base definitions, so it passes
    mmHg for mm[Hg] or a quantity without its system; the table check does not."""
    pressure, weight = _reading(resources, "85354-9"), _reading(resources, "29463-7")
    systolic, *others = pressure["component"]
    mmhg = {**systolic, "valueQuantity": {**systolic["valueQuantity"], "code": "mmHg"}}
    no_system = {k: v for k, v in weight["valueQuantity"].items() if k != "system"}
    items = [
        _declare(pressure, "us-core-blood-pressure", id="mmHg", component=[mmhg, *others]),
        _declare(weight, "us-core-body-weight", id="no-system", valueQuantity=no_system),
    ]
    assert not any(_errors_by_resource(validate(stdin=json.dumps(items))).values())
    found = check_table({"Observation": items}, _table())
    assert found.mismatched == {
        "us-core-blood-pressure": {"Observation.component:systolic.valueQuantity.code": ["mmHg"]}
    }
    assert found.missing == {"us-core-body-weight": {"Observation.valueQuantity.system": ["no-system"]}}


# --- declared profiles ------------------------------------------------------------------------------------


def _is_cause_of_death(resource: dict) -> bool:
    return any(c.get("code") == "69453-9" for c in resource.get("code", {}).get("coding", []))


def test_every_resource_of_a_us_core_type_declares_a_profile_of_its_type(resources: dict[str, list[dict]]) -> None:
    types = _profile_types()
    undeclared: Counter[str] = Counter()
    mistyped: Counter[tuple[str, str]] = Counter()
    for resource_type, items in resources.items():
        if resource_type not in US_CORE_TYPES:
            continue
        for resource in items:
            names = _declared(resource)
            # the cause-of-death Observation (LOINC 69453-9) matches no US Core profile (docs/fhir.md)
            undeclared[resource_type] += not names and not _is_cause_of_death(resource)
            mistyped.update((resource_type, n) for n in names if types.get(n, resource_type) != resource_type)
    assert +undeclared == {}, f"resources declaring no US Core profile, by type: {dict(undeclared)}"
    assert +mistyped == {}, f"profiles declared on a resource of another type: {dict(mistyped)}"


# --- the must-support table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Element:
    """A row of tests/data/us_core_must_support.csv."""

    profile: str
    path: str  # the ElementDefinition id: Type.a.b, with value[x] for a choice and a:slice for a slice
    min: int
    must_support: bool
    pattern: tuple[str, ...]  # alternatives: 'system|code' ('system|' any code), or a value (an extension's url)
    absent_reason: str


def _table() -> list[Element]:
    with MUST_SUPPORT.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        Element(
            profile=row["profile"],
            path=row["path"],
            min=int(row["min"]),
            must_support=row["must_support"] == "yes",
            pattern=tuple(row["pattern"].split(";")) if row["pattern"] else (),
            absent_reason=row["absent_reason"],
        )
        for row in rows
    ]


def _profile_types() -> dict[str, str]:
    return {e.profile: e.path.split(".")[0] for e in _table()}


def _matches(value: object, pattern: tuple[str, ...]) -> bool:
    """Whether a value is one of the pattern's alternatives: a coded value with that system (and code), or a
    primitive (or an extension with that url)."""
    for alternative in pattern:
        system, bar, code = alternative.partition("|")
        if not bar:
            if value == alternative or (isinstance(value, dict) and value.get("url") == alternative):
                return True
        elif isinstance(value, dict):
            codings = value.get("coding", [value])  # a CodeableConcept; a Coding or Identifier itself
            if any(c.get("system") == system and (not code or c.get("code") == code) for c in codings):
                return True
    return False


class Walker:
    """The values at the table's paths in a resource, slices picked out by their pattern and their children's."""

    def __init__(self, elements: list[Element]) -> None:
        self.by_path = {e.path: e for e in elements}
        self.children: dict[str, list[Element]] = defaultdict(list)
        for element in elements:
            self.children[element.path.rsplit(".", 1)[0]].append(element)
        self.split: dict[str, tuple[str, str, bool]] = {}  # path -> (parent path, element name, is a slice)

    def in_slice(self, slice_path: str, value: object) -> bool:
        element = self.by_path.get(slice_path)
        if element and element.pattern and not _matches(value, element.pattern):
            return False
        for child in self.children[slice_path]:
            values = _step(value, child.path.rsplit(".", 1)[1])
            if child.pattern and not (values and all(_matches(v, child.pattern) for v in values)):
                return False
        return True

    def groups(self, resource: dict, path: str, memo: dict[str, list[object]]) -> list[list[object]]:
        """For each value of the path's parent in the resource, the values at the path under it."""
        if path not in self.split:
            parent, step = path.rsplit(".", 1)
            name, _, slice_name = step.partition(":")
            self.split[path] = (parent, name, bool(slice_name))
        parent, name, is_slice = self.split[path]
        parents = [resource] if "." not in parent else self.values(resource, parent, memo)
        found = [_step(p, name) for p in parents]
        return [[v for v in group if self.in_slice(path, v)] for group in found] if is_slice else found

    def values(self, resource: dict, path: str, memo: dict[str, list[object]]) -> list[object]:
        if path not in memo:
            memo[path] = [v for group in self.groups(resource, path, memo) for v in group]
        return memo[path]


def _step(node: object, name: str) -> list[object]:
    """The values of a node's element (value[x]: valueQuantity, valueString, ...), arrays flattened."""
    if not isinstance(node, dict):
        return []
    if name.endswith("[x]"):
        stem = name[:-3]
        values = [v for k, v in node.items() if k.startswith(stem) and k[len(stem) : len(stem) + 1].isupper()]
    elif name in node:
        values = [node[name]]
    else:
        return []
    return [x for v in values for x in (v if isinstance(v, list) else [v])]


@dataclass
class Findings:
    missing: dict[str, dict[str, list[str]]]  # profile -> path -> ids of resources lacking a mandatory element
    mismatched: dict[str, dict[str, list[str]]]  # profile -> path -> ids with a value off its fixed value/pattern
    never_present: dict[str, list[str]]  # profile -> must-support paths in no resource and with no absent_reason
    present_but_listed_absent: dict[str, list[str]]  # profile -> paths given an absent_reason yet present
    resources: Counter[str]  # profile -> resources declaring it


def check_table(resources: dict[str, list[dict]], table: list[Element]) -> Findings:
    """Every resource declaring a profile of the table against that profile's rows."""
    by_profile: dict[str, list[Element]] = defaultdict(list)
    for element in table:
        by_profile[element.profile].append(element)
    walkers = {profile: Walker(elements) for profile, elements in by_profile.items()}
    found = Findings(defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list)), {}, {}, Counter())
    seen: dict[str, set[str]] = defaultdict(set)
    for items in resources.values():
        for resource in items:
            for profile in _declared(resource):
                if profile not in walkers:
                    continue
                found.resources[profile] += 1
                walker = walkers[profile]
                memo: dict[str, list[object]] = {}
                for element in by_profile[profile]:
                    groups = walker.groups(resource, element.path, memo)
                    memo[element.path] = values = [v for group in groups for v in group]
                    if values:
                        seen[profile].add(element.path)
                    if element.min and any(len(group) < element.min for group in groups):
                        found.missing[profile][element.path].append(resource["id"])
                    is_slice = walker.split[element.path][2]  # a slice's pattern picks its members
                    if element.pattern and not is_slice and not all(_matches(v, element.pattern) for v in values):
                        found.mismatched[profile][element.path].append(resource["id"])
    for profile in found.resources:
        ms = [e for e in by_profile[profile] if e.must_support]
        found.never_present[profile] = [e.path for e in ms if e.path not in seen[profile] and not e.absent_reason]
        found.present_but_listed_absent[profile] = [e.path for e in ms if e.path in seen[profile] and e.absent_reason]
    return found


def _summary(groups: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, str]]:
    return {
        profile: {path: f"{len(ids)} resources, e.g. {ids[0]}" for path, ids in paths.items()}
        for profile, paths in groups.items()
        if paths
    }


def test_the_must_support_table_is_well_formed() -> None:
    table = _table()
    assert len({(e.profile, e.path) for e in table}) == len(table)
    for element in table:
        assert element.path.split(".")[0][0].isupper() and element.min >= 0, element
        assert element.must_support or element.min, f"{element}: neither mandatory nor must-support"
        if ":" in element.path.rsplit(".", 1)[-1]:  # a slice: its members are told apart by patterns
            children = [e for e in table if e.profile == element.profile and e.path.rsplit(".", 1)[0] == element.path]
            assert element.pattern or any(c.pattern for c in children), f"{element.path}: no pattern picks its members"
    with MUST_SUPPORT.open(newline="") as f:
        sources = {(row["profile"], row["source"]) for row in csv.DictReader(f)}
    assert all(source == PROFILE_PAGE.format(profile) for profile, source in sources)


def test_mandatory_and_must_support_elements_of_the_declared_profiles(resources: dict[str, list[dict]]) -> None:
    found = check_table(resources, _table())
    assert found.resources, "no resource declares a profile of the must-support table"
    print(json.dumps(dict(found.resources), indent=1))
    missing, mismatched = _summary(found.missing), _summary(found.mismatched)
    never = {profile: paths for profile, paths in found.never_present.items() if paths}
    stale = {profile: paths for profile, paths in found.present_but_listed_absent.items() if paths}
    assert not missing, f"mandatory elements missing: {json.dumps(missing, indent=1)}"
    assert not mismatched, f"values off the profile's fixed value or pattern: {json.dumps(mismatched, indent=1)}"
    assert not never, (
        "must-support elements in no resource of their profile (emit them, or give them an absent_reason in "
        f"{MUST_SUPPORT.name}): {json.dumps(never, indent=1)}"
    )
    assert not stale, f"elements with an absent_reason are there (clear it): {json.dumps(stale, indent=1)}"


def test_the_table_check_finds_what_is_missing() -> None:
    """Harness check of the table walk on hand-made resources: a missing mandatory element, a value off its
    pattern, a slice told apart by its child's pattern, and must-support elements present or not."""
    table = [
        Element("p", "Coverage.status", 1, True, (), ""),
        Element("p", "Coverage.class", 0, True, (), ""),
        Element("p", "Coverage.class:plan", 0, True, (), ""),
        Element("p", "Coverage.class:plan.type", 1, False, ("http://x|plan",), ""),
        Element("p", "Coverage.class:plan.value", 1, True, (), ""),
        Element("p", "Coverage.value[x]", 0, True, (), ""),
        Element("p", "Coverage.kind", 0, True, ("a", "b"), ""),
        Element("p", "Coverage.period", 0, True, (), "never simulated"),
    ]
    plan = {"type": {"coding": [{"system": "http://x", "code": "plan"}]}}
    group = {"type": {"coding": [{"system": "http://x", "code": "group"}]}}
    declared = {"resourceType": "Coverage", "meta": {"profile": [US_CORE + "p|6.1.0"]}}
    items = [
        {**declared, "id": "1", "status": "active", "class": [group], "valueString": "v", "kind": "a", "period": {}},
        {**declared, "id": "2", "class": [plan, {**group, "value": "g"}], "kind": "c"},
        {"resourceType": "Coverage", "id": "3"},  # no profile: not checked
    ]
    found = check_table({"Coverage": items}, table)
    assert found.resources == Counter({"p": 2})
    assert _summary(found.missing) == {
        "p": {"Coverage.status": "1 resources, e.g. 2", "Coverage.class:plan.value": "1 resources, e.g. 2"}
    }
    assert _summary(found.mismatched) == {"p": {"Coverage.kind": "1 resources, e.g. 2"}}
    assert found.never_present == {"p": ["Coverage.class:plan.value"]}  # the plan class has no value
    assert found.present_but_listed_absent == {"p": ["Coverage.period"]}
    found = check_table({"Coverage": [items[0]]}, table)
    assert found.never_present == {"p": ["Coverage.class:plan", "Coverage.class:plan.value"]}
    assert _summary(found.missing) == _summary(found.mismatched) == {}
