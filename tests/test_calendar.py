"""rules/calendar.yaml: every vaccine, drug, lab method and procedure code the shipped library emits is dated
(with a cited source), timeless or undated with a reason; the model's checks and look-ups."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from conftest import edited_rules_problems

from simulator.days import days_since_epoch
from simulator.model.calendar import SYSTEM_URIS
from simulator.model.library import Library
from simulator.model.schema import CODE_SYSTEMS

CVX, LOINC = CODE_SYSTEMS["CVX"], CODE_SYSTEMS["LOINC"]


def emitted(library: Library) -> dict[tuple[str, str], str]:
    """(calendar system, code) -> display of every code of the kinds the calendar dates: immunizations and
    procedures of the modules' states, medications (and the dosing file's products), observables, lab panels,
    the smoking status observation and the streams' channels."""
    codes: dict[tuple[str, str], str] = {}
    for module in library.modules:
        for state in module.states.values():
            codes |= {("cvx", c.code): c.display for c in state.immunization}
            codes |= {("snomed", c.code): c.display for c in state.procedure}
        codes |= {("rxnorm", m.code.code): m.code.display for m in module.medications.values()}
        codes |= {("loinc", o.code.code): o.code.display for o in module.observables.values()}
    codes |= {("rxnorm", code): dosing.product for code, dosing in library.medication_dosing.dosing.items()}
    codes |= {("loinc", panel.code.code): panel.code.display for panel in library.lab_panels.panels}
    codes[("loinc", library.smoking_status.code.code)] = library.smoking_status.code.display
    codes |= {("loinc", c.code.code): c.code.display for c in library.streams.channels.values()}
    eras = [e for system, code in codes for e in library.calendar.eras(SYSTEM_URIS[system], code)]
    return codes | {(e.system, e.code): e.display for e in eras}  # and the era's alternatives recorded before them


def listed(library: Library) -> dict[tuple[str, str], str]:
    calendar = library.calendar
    return {(e.system, e.code): e.display for e in (*calendar.introduced, *calendar.timeless, *calendar.undated)}


def test_every_emitted_code_is_dated_timeless_or_undated(shipped_library: Library) -> None:
    codes, calendar = emitted(shipped_library), listed(shipped_library)
    missing = sorted(set(codes) - set(calendar))
    stale = sorted(set(calendar) - set(codes))
    assert missing == [], f"codes the library emits that rules/calendar.yaml does not list: {missing}"
    assert stale == [], f"codes rules/calendar.yaml lists that the library does not emit: {stale}"
    wrong = [f"{key}: {calendar[key]!r} != {codes[key]!r}" for key in codes if calendar[key] != codes[key]]
    assert wrong == [], f"displays differ from the modules': {wrong}"
    undated = shipped_library.calendar.undated
    assert len(undated) < len(shipped_library.calendar.introduced) / 4, f"{len(undated)} codes undated"


def test_every_source_is_cited(shipped_library: Library) -> None:
    """Each source dates an entry or is named in a note or reason, where it backs a statement."""
    calendar = shipped_library.calendar
    used = {e.source for e in calendar.introduced} | {s.source for e in calendar.introduced for s in e.by_age}
    notes = [e.note or "" for e in calendar.introduced] + [e.why for e in (*calendar.timeless, *calendar.undated)]
    named = set(re.findall(r"[a-z][a-z0-9_]*", " ".join(notes)))
    assert set(calendar.sources) - used - named == set()


def test_year_of_looks_up_by_system_uri_and_exact_code(shipped_library: Library) -> None:
    calendar = shipped_library.calendar
    assert calendar.year_of(CVX, "03") == 1971  # MMR: the CVX code keeps its leading zero
    assert calendar.year_of(CVX, "3") is None
    assert calendar.year_of(LOINC, "98979-8") == 2021  # CKD-EPI 2021
    assert calendar.year_of(LOINC, "29463-7") is None  # body weight: timeless
    assert calendar.year_of("http://example.org/other", "03") is None
    assert set(SYSTEM_URIS.values()) <= set(CODE_SYSTEMS.values())


def test_influenza_vaccine_is_dated_by_age(shipped_library: Library) -> None:
    """Recommended for 65 and older from 1960, then age group by age group until universal in 2010."""
    calendar = shipped_library.calendar
    by_age = {age: calendar.year_of(CVX, "140", age) for age in (0.7, 3, 10, 30, 55, 70)}
    assert by_age == {0.7: 2004, 3: 2006, 10: 2009, 30: 2010, 55: 2000, 70: 1960}
    assert calendar.year_of(CVX, "140") == min(by_age.values())
    assert str(calendar.introduced_on(CVX, "140", 30)) == "2010-02-01"


def test_the_era_decides_what_a_record_contains(shipped_library: Library) -> None:
    """Before a code's date the record holds the era's alternative (calendar `before`), or nothing."""
    calendar = shipped_library.calendar

    def given(code: str, day: str, age: float, system: str = CVX) -> str | None:
        entry = calendar.in_use(system, code, days_since_epoch(date.fromisoformat(day)), age)
        return None if entry is None else entry.code

    assert given("08", "1930-06-01", 0.0) is None  # hepatitis B at birth: nothing before 1991
    assert given("08", "1995-06-01", 0.0) == "08"
    assert [given("133", day, 0.5) for day in ("1995-01-01", "2005-01-01", "2011-01-01")] == [None, "100", "133"]
    assert [given("20", day, 0.5) for day in ("1940-01-01", "1960-01-01", "2000-01-01")] == [None, "01", "20"]
    assert [given("10", day, 0.5) for day in ("1960-01-01", "1980-01-01", "2000-01-01")] == [None, "02", "10"]
    assert given("187", "2010-01-01", 65) == "121" and given("187", "2010-01-01", 55) is None  # live zoster: 60+
    assert given("140", "2005-01-01", 30) is None and given("140", "2005-01-01", 70) == "140"  # by age
    egfr = [given("98979-8", day, 50, LOINC) for day in ("2000-01-01", "2007-01-01", "2015-01-01", "2022-01-01")]
    assert egfr == [None, "33914-3", "62238-1", "98979-8"]
    assert given("29463-7", "1900-01-01", 50, LOINC) is None and not calendar.eras(LOINC, "29463-7")  # timeless


def test_every_dated_code_says_what_comes_before_it(shipped_library: Library) -> None:
    """An alternative is itself dated (with its own source) and earlier; every chain ends in nothing."""
    calendar = shipped_library.calendar
    for entry in calendar.introduced:
        chain = calendar.eras(SYSTEM_URIS[entry.system], entry.code)
        assert chain[-1].before == "nothing"
        assert all(newer.on() > older.on() for newer, older in zip(chain, chain[1:], strict=False))


def test_the_fixture_calendar_loads(fixture_library: Library) -> None:
    calendar = fixture_library.calendar
    assert calendar.year_of(CODE_SYSTEMS["RxNorm"], "285018") == 2000
    assert calendar.year_of(CVX, "140", 30) == 2010 and calendar.year_of(CVX, "140", 70) == 1960
    assert {e.code for e in calendar.timeless} == {"29463-7"} and len(calendar.undated) == 1


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    source: label_lantus", "    source: label_lantis", "rxnorm 285018: source 'label_lantis' is not a key"),
        ("    year: 2000\n", "    year: 1700\n", "greater than or equal to 1800"),
        ('    code: "313782"', '    code: "285018"', "rxnorm 285018: listed twice"),
        ('    code: "285018"', "    code: 285018", "valid string"),
        ("year: 2010, month: 2", "year: 1950, month: 2", "by_age year 1950 is before the code's year"),
        ('code: "861007"}', 'code: "861008"}', "rxnorm 860975: before rxnorm 861008 is not a dated entry"),
        ("    year: 1995\n", "    year: 2001\n", "rxnorm 860975: before rxnorm 861007 is not dated earlier"),
    ],
)
def test_a_bad_entry_is_reported_with_its_line(
    tmp_path: Path, bare_rules: Path, old: str, new: str, message: str
) -> None:
    [problem] = edited_rules_problems(tmp_path, bare_rules, {"calendar.yaml": (old, new)}, [])
    assert problem.file.endswith("calendar.yaml") and problem.line > 1
    assert message in problem.message, str(problem)
