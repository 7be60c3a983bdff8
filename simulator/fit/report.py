"""The validation report: report.json (numbers for machines), report.md and one self-contained report.html
(plots embedded as base64 PNG), the last two rendered from the jinja2 templates in templates/.

The HTML reads top-down like a dashboard: the summary (targets compared and passed, misses against the number
sampling alone explains, invariants, life expectancy, fits), one section per condition (definitions.yaml
`sections`) with each measure's rows beside its plot, and every target in one table last."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from simulator.files import write_all
from simulator.fit.statistics import RELATIVE_TOLERANCE, Comparison
from simulator.fit.validation import Validation
from simulator.model.targets import OPEN_AGE, Definitions, Target

TOLERANCE_TEXT = (
    f"pass: the target lies inside the simulated 95% interval (Wilson, from the cohort size), or the simulated "
    f"value inside the target's interval, or within {RELATIVE_TOLERANCE:.0%} relative of the target; life "
    f"expectancy within its measure's absolute tolerance (definitions.yaml)"
)
# data systems a row's label names when its source cites one ("NHIS 2021"), the first found in this order
SURVEYS = ("NHANES", "NHIS", "BRFSS", "NIS", "EPIC", "Census", "NVSR")
ADULT_AGE = 18
_AGE_ADJUSTED_TWIN = re.compile(r"_age_(adjusted|standardized)$")


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def comparison_record(c: Comparison) -> dict:
    t = c.target
    return {
        "id": t.id,
        "measure": t.measure,
        "age": t.band,
        "sex": t.sex,
        "role": t.role,
        "status": c.status,
        "target": _num(t.value),
        "target_ci": [_num(t.ci_lo), _num(t.ci_hi)] if t.ci_lo is not None else None,
        "simulated": _num(c.simulated),
        "simulated_ci": [_num(c.lo), _num(c.hi)],
        "difference": _num(c.difference),
        "n": c.n,
        "count": _num(c.count),  # numerator (prevalence, share) or sum of ages at death (life expectancy)
        "passed": c.passed,
        "note": c.note,
        "source": t.source,
    }


def _expected_misses(comparisons: list[Comparison]) -> float:
    """How many of these an unbiased model misses on average at this cohort size, by sampling alone."""
    return sum(m for c in comparisons if math.isfinite(m := c.chance_of_missing))


def summary(v: Validation) -> dict:
    compared = [c for c in v.comparisons if c.status == "compared"]
    primary = [c for c in compared if c.target.role == "primary"]
    e0 = next((c for c in compared if c.target.measure == "life_expectancy_at_birth" and c.target.sex == "all"), None)
    pyramid = [c for c in primary if c.target.measure == "population_share_of_total"]
    ex = [c for c in primary if c.target.measure == "life_expectancy_at_age" and c.passed is not None]
    calibrated = [c for c in compared if c.target.id in set(v.calibration_targets)]
    return {
        "targets": len(v.comparisons),
        "compared": len(compared),
        "compared_primary": len(primary),
        "passed_primary": sum(1 for c in primary if c.passed),
        "failed_primary": [c.target.id for c in primary if c.passed is False],
        "calibration_targets": len(calibrated),
        "passed_calibration": sum(1 for c in calibrated if c.passed),
        "failed_calibration": [c.target.id for c in calibrated if c.passed is False],
        # sampling alone: how many a model without bias would fail at this cohort size (mean over cohorts)
        "calibration_misses_expected_without_bias": _num(_expected_misses(calibrated)),
        "pyramid_passed": f"{sum(1 for c in pyramid if c.passed)} of {len(pyramid)}",
        "not_covered": sorted({c.target.measure for c in v.comparisons if c.status == "not covered"}),
        "life_expectancy_at_birth": {"simulated": _num(e0.simulated), "target": e0.target.value} if e0 else None,
        "life_expectancy_at_age": {  # e(x) at the targets' ages, both sexes and each sex
            "passed": sum(1 for c in ex if c.passed),
            "compared": len(ex),
            "max_abs_difference": _num(max((abs(c.difference) for c in ex), default=math.nan)),
        },
        "pyramid_max_abs_difference": _num(max((abs(c.difference) for c in pyramid), default=math.nan)),
        "invariant_violations": sum(len(x) for x in v.invariants.values()),
        "audit_violations": v.audit.violations if v.audit else None,
        "tolerance": TOLERANCE_TEXT,
    }


def report_data(v: Validation) -> dict:
    labs = [
        {**lab, "groups": {g: {k: s[k] for k in s if k != "values"} for g, s in lab["groups"].items()}}
        for lab in v.labs
    ]
    return {
        "summary": summary(v),
        "comparisons": [comparison_record(c) for c in v.comparisons],
        "labs": labs,
        "invariants": {"patients_checked": v.invariant_patients, "violations": v.invariants},
        "audit": v.audit.to_dict() if v.audit else None,
        "dataset_card": v.card,
    }


def life_expectancy_lines(s: dict) -> list[str]:
    """The summary's life expectancy lines: at birth, and e(x) at the targets' ages."""
    lines = []
    if s["life_expectancy_at_birth"]:
        e0 = s["life_expectancy_at_birth"]
        lines.append(f"Life expectancy at birth: {e0['simulated']:.2f} years (target {e0['target']:.2f}).")
    ex = s["life_expectancy_at_age"]
    if ex["compared"]:
        lines.append(
            f"Life expectancy at later ages (e(x), life tables): {ex['passed']} of {ex['compared']} within their"
            f" tolerance; largest difference {ex['max_abs_difference']:.2f} years."
        )
    return lines


# --- readable rows ---------------------------------------------------------------------------------------


def measure_label(measure: str, definitions: Definitions) -> str:
    """The measure's `label` (definitions.yaml); an age-adjusted twin shown without a definition of its own
    (`X_age_adjusted`) takes X's; else its name spelt out."""
    for name in (measure, _AGE_ADJUSTED_TWIN.sub("", measure)):
        if name in definitions.measures and definitions.measures[name].label:
            return definitions.measures[name].label
    return measure.replace("_", " ").capitalize()


def who(t: Target) -> str:
    """The row's people in words: 'women 20-24', 'adults 18+', 'girls 5-9', 'ages 15-19', 'females at 65'."""
    if t.age_lo == t.age_hi:  # an exact age (life expectancy at x; 0 is birth, which its measure says)
        sexes = {"all": "both sexes", "M": "males", "F": "females"}[t.sex]
        return f"{sexes} at {t.age_lo}" if t.age_lo else sexes
    if t.age_lo >= ADULT_AGE:
        people = {"all": "adults", "M": "men", "F": "women"}[t.sex]
    elif t.age_hi < ADULT_AGE:
        people = {"all": "children", "M": "boys", "F": "girls"}[t.sex]
    else:
        people = {"all": "ages", "M": "males", "F": "females"}[t.sex]
    if t.age_lo == 0 and t.age_hi >= OPEN_AGE:
        return "all ages" if t.sex == "all" else f"{people}, all ages"
    return f"{people} {t.band}"


def source_year(t: Target) -> str:
    """The survey its source cites and the row's year ('NHIS 2021'), or the year alone."""
    survey = next((s for s in SURVEYS if re.search(rf"\b{s}\b", t.source)), "")
    return f"{survey} {t.year}".strip()


def row_label(t: Target, definitions: Definitions) -> str:
    """'Current asthma, women 20-24, NHIS 2021' (and ', age-adjusted' for such a row)."""
    parts = [measure_label(t.measure, definitions), who(t), source_year(t)]
    if t.basis == "age-adjusted":
        parts.append("age-adjusted")
    return ", ".join(p for p in parts if p)


def shown_as(t: Target) -> tuple[float, str]:
    """The factor and unit the report shows a target's values in: years, rates per 1,000 person-years
    (the rows' `per N` units are per person-year once loaded), else fractions as percent."""
    if t.unit == "years":
        return 1.0, "years"
    if t.unit.startswith("per "):
        return 1000.0, "per 1,000 person-years"
    return 100.0, "percent"


@dataclass(frozen=True)
class Row:
    """One target as the report shows it: its readable label, its section and its values in display units."""

    comparison: Comparison
    label: str
    section: str

    @property
    def target(self) -> Target:
        return self.comparison.target

    @property
    def miss(self) -> bool:
        return self.comparison.passed is False

    @property
    def result(self) -> str:
        c = self.comparison
        if c.passed is not None:
            return "pass" if c.passed else "miss"
        return "no value" if c.status == "compared" else "not compared"  # the note says why

    @property
    def note(self) -> str:
        """The comparison's note; for a row not compared, why (its status when the note is empty)."""
        c = self.comparison
        return c.note or ("" if c.status == "compared" else c.status)

    @property
    def unit(self) -> str:
        return shown_as(self.target)[1]

    @property
    def people(self) -> str:
        return who(self.target)

    def _fmt(self, x: float | None, sign: bool = False) -> str:
        if x is None or not math.isfinite(x):
            return ""
        factor, unit = shown_as(self.target)
        digits = 2 if unit == "years" or abs(self.target.value * factor) < 10 else 1
        return f"{x * factor:{'+' if sign else ''}.{digits}f}"

    @property
    def target_text(self) -> str:
        t = self.target
        interval = f" [{self._fmt(t.ci_lo)}, {self._fmt(t.ci_hi)}]" if t.ci_lo is not None else ""
        return self._fmt(t.value) + interval

    @property
    def simulated_text(self) -> str:
        c = self.comparison
        if not math.isfinite(c.simulated):
            return ""
        return f"{self._fmt(c.simulated)} [{self._fmt(c.lo)}, {self._fmt(c.hi)}]"

    @property
    def difference_text(self) -> str:
        return self._fmt(self.comparison.difference, sign=True)

    @property
    def standard_errors(self) -> float | None:
        """How many standard errors of the simulated value it lies from the target (signed)."""
        c = self.comparison
        se = c.standard_error
        return c.difference / se if c.passed is not None and math.isfinite(se) and se > 0 else None

    @property
    def standard_errors_text(self) -> str:
        z = self.standard_errors
        return "" if z is None else f"{z:+.1f} SE"


@dataclass(frozen=True)
class Block:
    """One measure of a section (with its age-adjusted twin: the measures of one label), its rows beside
    its plot in the HTML."""

    label: str
    counts: str
    rows: tuple[Row, ...]

    @property
    def key(self) -> str:
        return self.rows[0].target.measure

    @property
    def unit(self) -> str:
        return self.rows[0].unit

    @property
    def plotted(self) -> list[Comparison]:
        """The compared crude primary rows, plotted by age band when they span two bands or more."""
        rows = [
            r.comparison
            for r in self.rows
            if r.target.role == "primary" and r.target.basis == "crude" and r.comparison.passed is not None
        ]
        return rows if len({c.target.band for c in rows}) >= 2 else []


@dataclass(frozen=True)
class Tally:
    """Primary targets of a group: compared, passed, missed, and the misses sampling alone explains."""

    compared: int
    passed: int
    missed: int
    expected_misses: float

    @classmethod
    def of(cls, rows: list[Row]) -> Tally:
        primary = [r.comparison for r in rows if r.target.role == "primary" and r.comparison.passed is not None]
        passed = sum(1 for c in primary if c.passed)
        return cls(len(primary), passed, len(primary) - passed, _expected_misses(primary))


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]

    @property
    def anchor(self) -> str:
        return "section-" + re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")

    @property
    def rows(self) -> list[Row]:
        return [r for b in self.blocks for r in b.rows]

    @property
    def groups(self) -> list[list[Block]]:
        """What the page shows side by side: a plotted block alone, consecutive unplotted ones in one table."""
        groups: list[list[Block]] = []
        for block in self.blocks:
            if block.plotted or not groups or groups[-1][0].plotted:
                groups.append([block])
            else:
                groups[-1].append(block)
        return groups

    @property
    def tally(self) -> Tally:
        return Tally.of(self.rows)


def _counts(measures: list[str], definitions: Definitions) -> str:
    """What the first defined of these measures counts (or why it is not simulated)."""
    defined = [definitions.measures[m] for m in measures if m in definitions.measures]
    return (defined[0].counts or defined[0].reason) if defined else ""


def _sections(rows: list[Row], definitions: Definitions) -> list[Section]:
    """The rows by section (definitions.yaml `sections`, then unlisted conditions in file order), each
    section's rows by measure label in file order."""
    titles = [*definitions.sections, *dict.fromkeys(r.section for r in rows)]
    out = []
    for title in dict.fromkeys(titles):
        mine = [r for r in rows if r.section == title]
        blocks = []
        for label in dict.fromkeys(measure_label(r.target.measure, definitions) for r in mine):
            chosen = tuple(r for r in mine if measure_label(r.target.measure, definitions) == label)
            counts = _counts(list(dict.fromkeys(r.target.measure for r in chosen)), definitions)
            blocks.append(Block(label, counts, chosen))
        if blocks:
            out.append(Section(title, tuple(blocks)))
    return out


def readable_rows(v: Validation) -> list[Row]:
    """Every target of the validation (file order) with its label and section."""
    section_of = {c: title for title, conditions in v.definitions.sections.items() for c in conditions}
    return [
        Row(
            c,
            row_label(c.target, v.definitions),
            section_of.get(c.target.condition, c.target.condition.replace("_", " ").capitalize()),
        )
        for c in v.comparisons
    ]


def _context(v: Validation) -> dict:
    """What both templates show."""
    s = summary(v)
    rows = readable_rows(v)
    misses = [r for r in rows if r.miss and r.target.role == "primary"]
    misses.sort(key=lambda r: -abs(r.standard_errors or 0.0))
    by_sex = [r for r in rows if r.target.measure == "life_expectancy_at_birth" and r.comparison.passed is not None]
    config = v.card.get("config", {})
    return {
        "s": s,
        "rows": rows,
        "sections": _sections(rows, v.definitions),
        "misses": misses,
        "primary": Tally.of(rows),
        "shown_only": sum(1 for r in rows if r.comparison.status != "compared"),
        "life_expectancy": by_sex,
        "life_expectancy_lines": life_expectancy_lines(s),
        "stale_fits": v.card.get("fits_older_than_their_module", []),
        "fits_outside_bounds": v.card.get("fits_outside_their_bounds", []),
        "run": {
            "generator": v.card.get("generator", ""),
            "mode": config.get("mode", ""),
            "seed": config.get("seed", ""),
            "reference_date": config.get("reference_date", ""),
            "patients": v.card.get("patients", 0),
            "lifetime_patients": v.card.get("lifetime_patients", 0),
        },
        "invariants": v.invariants,
        "invariant_patients": v.invariant_patients,
        "audit": v.audit,
        "card": json.dumps(v.card, indent=2, default=str),
        "tolerance": TOLERANCE_TEXT,
    }


# --- plots -----------------------------------------------------------------------------------------------

SEX_NAMES = {"all": "both sexes", "M": "male", "F": "female"}


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _measure_plot(block: Block) -> str:
    """Simulated (with 95% interval) vs target, by age band, one series per sex."""
    import matplotlib.pyplot as plt

    rows = block.plotted
    factor, unit = shown_as(rows[0].target)
    fig, ax = plt.subplots(figsize=(5.6, 3.0))
    bands = sorted({(c.target.age_lo, c.target.age_hi, c.target.band) for c in rows})
    x_of = {b[2]: i for i, b in enumerate(bands)}
    for k, sex in enumerate(("all", "M", "F")):
        mine = [c for c in rows if c.target.sex == sex]
        if not mine:
            continue
        x = np.array([x_of[c.target.band] for c in mine]) + (k - 1) * 0.22
        sim = np.array([c.simulated for c in mine]) * factor
        err = np.array([[c.simulated - c.lo for c in mine], [c.hi - c.simulated for c in mine]]) * factor
        ax.errorbar(x, sim, yerr=err, fmt="o", color=f"C{k}", label=f"simulated, {SEX_NAMES[sex]}", capsize=3)
        target = [c.target.value * factor for c in mine]
        ax.scatter(x, target, marker="x", s=60, color=f"C{k}", label=f"target, {SEX_NAMES[sex]}")
    ax.set_xticks(range(len(bands)), [b[2] for b in bands])
    first = rows[0].target
    ax.set_xlabel("age" if first.age_lo == first.age_hi else "age band")
    ax.set_ylabel(unit)
    ax.set_title(block.label, fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    return _png(fig)


def _is_pyramid_bar(t: Target) -> bool:
    """One sex, one age band (not the sex's share of the whole population)."""
    return t.sex != "all" and not (t.age_lo == 0 and t.age_hi >= OPEN_AGE)


def _pyramid_plot(block: Block) -> str:
    import matplotlib.pyplot as plt

    rows = [c for c in block.plotted if _is_pyramid_bar(c.target)]
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    for sex, sign, color in (("M", -1, "C0"), ("F", 1, "C1")):
        mine = sorted((c for c in rows if c.target.sex == sex), key=lambda c: c.target.age_lo)
        y = [c.target.age_lo for c in mine]
        shares = [sign * 100 * c.simulated for c in mine]
        ax.barh(y, shares, height=4, color=color, alpha=0.6, label=f"simulated, {SEX_NAMES[sex]}")
        ax.scatter([sign * 100 * c.target.value for c in mine], y, marker="|", s=120, color="k")
    ax.set_xlabel("percent of the living population (male left, female right); | Census 2024")
    ax.set_ylabel("age band start")
    ax.set_title(block.label, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def _lab_plot(lab: dict) -> str:
    import matplotlib.pyplot as plt

    groups = [g for g in ("none", "undiagnosed", "diagnosed", "resolved") if g in lab["groups"]]
    fig, ax = plt.subplots(figsize=(5.5, 3))
    ax.boxplot([lab["groups"][g]["values"] for g in groups], showfliers=False)
    ax.set_xticks(range(1, len(groups) + 1), [f"{g}\n(n={lab['groups'][g]['n']})" for g in groups])
    ax.set_title(f"latest {lab['observation']} by {lab['condition']} status (adults)", fontsize=10)
    return _png(fig)


def _plots(sections: list[Section]) -> dict[str, str]:
    """Each plotted block's PNG (base64), by its key."""
    blocks = [b for section in sections for b in section.blocks if b.plotted]
    return {b.key: (_pyramid_plot if b.key == "population_share_of_total" else _measure_plot)(b) for b in blocks}


# --- documents ---------------------------------------------------------------------------------------------


def _markdown_cell(text: object) -> str:
    """A value as one cell of a Markdown table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("simulator.fit", "templates"),
        autoescape=select_autoescape(["html.j2"]),  # the page is escaped; Markdown is not HTML
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = _markdown_cell
    return env


def markdown(v: Validation) -> str:
    return _environment().get_template("report.md.j2").render(_context(v))


def page(v: Validation) -> str:
    """One self-contained HTML page: plots inline, styles inline, nothing fetched."""
    import matplotlib

    matplotlib.use("Agg")
    context = _context(v)
    labs = [{**lab, "plot": _lab_plot(lab)} for lab in v.labs if lab["groups"]]
    template = _environment().get_template("report.html.j2")
    return template.render(context, plots=_plots(context["sections"]), labs=labs)


def write_report(v: Validation, directory: Path) -> list[Path]:
    """report.json, report.md and report.html in `directory` (all three or none)."""
    directory.mkdir(parents=True, exist_ok=True)
    return write_all(
        {
            directory / "report.json": json.dumps(report_data(v), indent=2, default=str),
            directory / "report.md": markdown(v),
            directory / "report.html": page(v),
        }
    )
