"""The validation report as a reader meets it: summary first, then a section per condition with readable row
labels and the misses marked with their noise, every target once in the full table, escaped HTML, and the
three files written all or none. The comparisons are made up around the shipped targets (no simulation)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import REPO

from simulator.fit import report
from simulator.fit.report import markdown, page, readable_rows, row_label, write_report
from simulator.fit.statistics import Z95, Comparison
from simulator.fit.validation import Validation
from simulator.model.targets import Target, TargetSet, load_targets

MISSED = "asthma_current/20-24/F/2021"  # 10.6%, no interval of its own
MISSED_SE = 0.004  # the simulated value's standard error; the value is put 4 of them above the target
OUT_OF_BOUNDS = "asthma.onset_multiplier = 2.5, outside [0.5, 2]"


@pytest.fixture(scope="module")
def targets() -> TargetSet:
    return load_targets(REPO / "rules" / "targets")


def _compared(t: Target, se: float, shift: float = 0.0, tolerance: float | None = None) -> Comparison:
    value = t.value + shift
    half = Z95 * se
    return Comparison(t, "compared", value, value - half, value + half, 1000, value * 1000, tolerance=tolerance)


def _validation(targets: TargetSet, comparisons: list[Comparison]) -> Validation:
    card = {
        "generator": "ehrsim test",
        "config": {"mode": "population", "seed": 3, "reference_date": "default"},
        "patients": 1000,
        "lifetime_patients": 500,
        "fits_older_than_their_module": [],
        "fits_outside_their_bounds": [OUT_OF_BOUNDS],
    }
    invariants = {"events_ordered": [], "nothing_after_death": []}
    return Validation(comparisons, None, None, invariants, 1000, [], card, targets.definitions)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def validation(targets: TargetSet) -> Validation:
    """Asthma (one row missed), life expectancy at birth, and rows shown but not compared."""
    comparisons = []
    for t in targets.targets:
        if t.measure == "asthma_current" and t.basis == "crude":
            shift = 4 * MISSED_SE if t.id == MISSED else 0.0
            comparisons.append(_compared(t, MISSED_SE, shift))
        elif t.measure == "life_expectancy_at_birth":
            comparisons.append(_compared(t, 0.3, tolerance=0.5))
        elif t.basis == "age-adjusted" and t.measure.startswith("asthma"):
            comparisons.append(Comparison(t, "age-adjusted", note="age-adjusted with no standard population named"))
        elif t.measure == "population_share_race_white_alone":
            comparisons.append(Comparison(t, "unsupported", note="race shares are an input"))
    assert next(c for c in comparisons if c.target.id == MISSED).passed is False
    assert sum(c.passed is False for c in comparisons) == 1
    return _validation(targets, comparisons)


@pytest.fixture(scope="module")
def html(validation: Validation) -> str:
    return page(validation)


def _row(html: str, target_id: str) -> str:
    """The section row of a target (the one with its id as anchor)."""
    match = re.search(rf'<tr id="{re.escape(target_id)}"[^>]*>.*?</tr>', html, re.S)
    assert match, target_id
    return match.group(0)


def test_the_summary_comes_before_the_condition_sections(validation: Validation, html: str) -> None:
    summary_at = html.index('<section id="summary">')
    sections = [html.index(f'id="section-{name}"') for name in ("population", "life-expectancy", "asthma")]
    full_table_at = html.index('<section id="all-targets">')
    assert summary_at < sections[0] < sections[1] < sections[2] < full_table_at  # definitions.yaml's order
    summary = html[summary_at : sections[0]]
    assert "Primary targets passed" in summary and "1 missed" in summary
    assert "by sampling alone" in summary and "Invariant violations" in summary
    assert "Life expectancy at birth" in summary and OUT_OF_BOUNDS in summary
    # the asthma plot sits in the asthma section, beside its rows
    asthma = html[sections[2] : full_table_at]
    assert asthma.count("data:image/png;base64,") == 1 and MISSED in asthma
    text = markdown(validation)
    assert text.index("## Summary") < text.index("## Misses") < text.index("### Asthma") < text.index("## Dataset")


def test_every_target_appears_once_in_the_full_table(validation: Validation, html: str) -> None:
    full = html[html.index('<section id="all-targets">') :]
    ids = re.findall(r'<td class="id">([^<]*)</td>', full)
    assert sorted(ids) == sorted(c.target.id for c in validation.comparisons)
    assert len(ids) == len(set(ids)) == len(validation.comparisons) == 36  # 30 + 2 asthma, 3 + 1 more
    compared = [c.target.id for c in validation.comparisons if c.status == "compared"]
    assert len(compared) == 33 and all(ids.count(i) == 1 for i in compared)
    text = markdown(validation)
    tables = text[text.index("## All targets") : text.index("## Clinical invariants")]
    assert all(tables.count(f"`{c.target.id}`") == 1 for c in validation.comparisons)


def test_a_missed_target_is_marked_with_its_distance_in_standard_errors(validation: Validation, html: str) -> None:
    row = _row(html, MISSED)
    assert 'class="miss"' in row and ">miss<" in row
    assert "+4.0 SE" in row  # 4 standard errors above the target
    assert "12.2 [11.4, 13.0]" in row and ">10.6<" in row  # its interval and the target, in percent
    passing = _row(html, "asthma_current/20-24/M/2021")
    assert 'class="pass"' in passing and "+0.0 SE" in passing
    misses = html[html.index("<h3>Misses") : html.index('id="section-')]
    assert misses.count('<tr class="miss">') == 1 and f'href="#{MISSED}"' in misses and "+4.0 SE" in misses
    text = markdown(validation)
    missed_line = next(line for line in text.splitlines() if f"`{MISSED}`" in line and "## " not in line)
    assert "**miss**" in text and "+4.0 SE" in missed_line


def test_row_labels_are_readable(targets: TargetSet, validation: Validation, html: str) -> None:
    by_id = targets.by_id()
    assert row_label(by_id[MISSED], targets.definitions) == "Current asthma, women 20-24, NHIS 2021"
    assert row_label(by_id["life_expectancy_at_age/65-65/F/2023"], targets.definitions) == (
        "Remaining life expectancy, females at 65, NVSR 2023"
    )
    assert row_label(by_id["population_share_of_total/0-4/M/2024"], targets.definitions) == (
        "Share of the population, boys 0-4, Census 2024 (Jul 1)"
    )
    everything = _validation(targets, [Comparison(t, "unsupported") for t in targets.targets])
    for row in readable_rows(everything):  # every shipped target: words, not ids, in a titled section
        assert row.label and "_" not in row.label and row.target.id not in row.label, row.label
        assert row.section in targets.definitions.sections, row.target.condition
    cells = [cell.strip() for cell in re.findall(r'<td title="[^"]*">([^<]*)', html)]  # the sections' rows
    assert sorted(cells) == sorted(row.label for row in readable_rows(validation))


def test_the_page_is_escaped(targets: TargetSet, validation: Validation) -> None:
    measures = dict(targets.definitions.measures)
    measures["asthma_current"] = measures["asthma_current"].model_copy(update={"label": "Asthma <b>now</b> & then"})
    definitions = targets.definitions.model_copy(update={"measures": measures})
    script = "<script>alert(1)</script>"
    noted = [replace(c, note=script) if c.target.id == MISSED else c for c in validation.comparisons]
    html = page(replace(validation, comparisons=noted, definitions=definitions))
    assert "Asthma &lt;b&gt;now&lt;/b&gt; &amp; then, women 20-24, NHIS 2021" in html
    assert "<b>now</b>" not in html and "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_page_is_self_contained(html: str) -> None:
    assert not re.search(r'(src|href)="(https?:)?//|<link|<script|@import|url\(', html)  # nothing to fetch
    assert html.count('src="data:image/png;base64,') == 1  # asthma's (life expectancy at birth is one band)


def test_the_report_is_written_all_or_nothing(validation: Validation, tmp_path: Path, monkeypatch) -> None:
    files = write_report(validation, tmp_path)
    assert [f.name for f in files] == ["report.json", "report.md", "report.html"]
    data = json.loads(files[0].read_text())
    assert len(data["comparisons"]) == len(validation.comparisons) and data["summary"]["failed_primary"] == [MISSED]
    before = {f.name: f.read_bytes() for f in files}
    (tmp_path / ".report.html.partial").mkdir()  # the page cannot be written: the other two stay as they were
    changed = replace(validation, comparisons=validation.comparisons[:-1])
    with pytest.raises(OSError):
        write_report(changed, tmp_path)
    assert {f.name: f.read_bytes() for f in files} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report.html.partial", *sorted(before)]
    calls = []  # through simulator/files.py, all three in one call
    monkeypatch.setattr(report, "write_all", lambda contents: calls.append(list(contents)) or list(contents))
    write_report(validation, tmp_path / "again")
    assert [[p.name for p in call] for call in calls] == [["report.json", "report.md", "report.html"]]
