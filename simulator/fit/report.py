"""The validation report: report.json (numbers for machines), report.md and one self-contained
report.html (plots embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from simulator.files import write_all
from simulator.fit.statistics import RELATIVE_TOLERANCE, Comparison
from simulator.fit.validation import Validation
from simulator.model.targets import OPEN_AGE, Target

TOLERANCE_TEXT = (
    f"pass: the target lies inside the simulated 95% interval (Wilson, from the cohort size), or the simulated "
    f"value inside the target's interval, or within {RELATIVE_TOLERANCE:.0%} relative of the target; life "
    f"expectancy within its measure's absolute tolerance (definitions.yaml)"
)


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
        "calibration_misses_expected_without_bias": _num(
            sum(m for c in calibrated if math.isfinite(m := c.chance_of_missing))
        ),
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
        "dataset_card": v.card,
    }


# --- plots -----------------------------------------------------------------------------------------------


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _measure_plot(measure: str, rows: list[Comparison]) -> str:
    """Simulated (with 95% interval) vs target, by age band, one series per sex."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    bands = sorted({(c.target.age_lo, c.target.age_hi, c.target.band) for c in rows})
    x_of = {b[2]: i for i, b in enumerate(bands)}
    for k, sex in enumerate(("all", "M", "F")):
        mine = [c for c in rows if c.target.sex == sex]
        if not mine:
            continue
        x = np.array([x_of[c.target.band] for c in mine]) + (k - 1) * 0.22
        sim = np.array([c.simulated for c in mine])
        err = np.array([[c.simulated - c.lo for c in mine], [c.hi - c.simulated for c in mine]])
        ax.errorbar(x, sim, yerr=err, fmt="o", color=f"C{k}", label=f"simulated ({sex})", capsize=3)
        ax.scatter(x, [c.target.value for c in mine], marker="x", s=60, color=f"C{k}", label=f"target ({sex})")
    ax.set_xticks(range(len(bands)), [b[2] for b in bands])
    first = rows[0].target
    ax.set_xlabel("age" if first.age_lo == first.age_hi else "age band")
    ax.set_ylabel("years" if first.unit == "years" else "prevalence" if first.value <= 1 else "value")
    ax.set_title(measure)
    ax.legend(fontsize=7, ncol=3)
    return _png(fig)


def _is_pyramid_bar(t: Target) -> bool:
    """One sex, one age band (not the sex's share of the whole population)."""
    return t.sex != "all" and not (t.age_lo == 0 and t.age_hi >= OPEN_AGE)


def _pyramid_plot(rows: list[Comparison]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for sex, sign, color in (("M", -1, "C0"), ("F", 1, "C1")):
        mine = sorted((c for c in rows if c.target.sex == sex), key=lambda c: c.target.age_lo)
        y = [c.target.age_lo for c in mine]
        ax.barh(y, [sign * c.simulated for c in mine], height=4, color=color, alpha=0.6, label=f"simulated {sex}")
        ax.scatter([sign * c.target.value for c in mine], y, marker="|", s=120, color="k")
    ax.set_xlabel("share of the living population (male left, female right); | Census 2024")
    ax.set_ylabel("age band start")
    ax.legend(fontsize=8)
    return _png(fig)


def _lab_plot(lab: dict) -> str:
    import matplotlib.pyplot as plt

    groups = [g for g in ("none", "undiagnosed", "diagnosed", "resolved") if g in lab["groups"]]
    fig, ax = plt.subplots(figsize=(5.5, 3))
    ax.boxplot([lab["groups"][g]["values"] for g in groups], showfliers=False)
    ax.set_xticks(range(1, len(groups) + 1), [f"{g}\n(n={lab['groups'][g]['n']})" for g in groups])
    ax.set_title(f"latest {lab['observation']} by {lab['condition']} status (adults)")
    return _png(fig)


# --- documents ---------------------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 3) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _rows(v: Validation) -> list[list[str]]:
    out = []
    for c in v.comparisons:
        if c.status != "compared":
            continue
        t = c.target
        digits = 2 if t.value > 1 else 3
        target = _fmt(t.value, digits)
        if t.ci_lo is not None:  # an interval may start at 0
            target += f" [{_fmt(t.ci_lo, digits)}, {_fmt(t.ci_hi, digits)}]"
        sim = f"{_fmt(c.simulated, digits)} [{_fmt(c.lo, digits)}, {_fmt(c.hi, digits)}]"
        verdict = {True: "pass", False: "FAIL", None: ""}[c.passed]
        out.append([t.id, t.role, sim, target, _fmt(c.difference, digits), str(c.n), verdict, c.note])
    return out


def _expected_misses(s: dict) -> str:
    return (
        f"A model without bias would fail {s['calibration_misses_expected_without_bias']:.1f} of the calibration"
        " targets on average at this cohort size, by sampling alone."
    )


HEADER = ["target", "role", "simulated [95% CI]", "target", "difference", "n", "result", "note"]


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


def markdown(v: Validation) -> str:
    s = summary(v)
    lines = [
        "# ehrsim validation report",
        "",
        f"{s['passed_primary']} of {s['compared_primary']} primary targets pass ({TOLERANCE_TEXT}).",
        f"Calibration targets (those the modules' declarations answer to): {s['passed_calibration']} of"
        f" {s['calibration_targets']} pass; population pyramid: {s['pyramid_passed']} bands pass.",
        _expected_misses(s),
        *life_expectancy_lines(s),
        f"Largest pyramid difference: {_fmt(s['pyramid_max_abs_difference'], 4)} (share of the population).",
        f"Invariant violations: {s['invariant_violations']} (on {v.invariant_patients:,} patients).",
        f"Measures not covered by the loaded modules: {', '.join(s['not_covered']) or 'none'}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(v)]
    lines += ["", "## Dataset card", "", "```json", json.dumps(v.card, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def page(v: Validation) -> str:
    """One self-contained HTML page."""
    s = summary(v)
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>ehrsim validation report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:2px 5px}.FAIL{color:#b00;font-weight:bold}</style>",
        "</head><body><h1>ehrsim validation report</h1>",
        f"<p>{s['passed_primary']} of {s['compared_primary']} primary targets pass. {esc(TOLERANCE_TEXT)}.</p>",
        f"<p>Calibration targets: {s['passed_calibration']} of {s['calibration_targets']} pass; population"
        f" pyramid: {s['pyramid_passed']} bands pass. {esc(_expected_misses(s))}</p>",
    ]
    parts += [f"<p>{esc(line)}</p>" for line in life_expectancy_lines(s)]
    parts.append(f"<p>Measures not covered by the loaded modules: {esc(', '.join(s['not_covered']) or 'none')}</p>")
    parts.append("<h2>Targets</h2><table><tr>" + "".join(f"<th>{h}</th>" for h in HEADER) + "</tr>")
    for r in _rows(v):
        parts.append("<tr>" + "".join(f"<td class='{esc(x)}'>{esc(x)}</td>" for x in r) + "</tr>")
    parts.append("</table><h2>By age band and sex</h2>")
    compared = [c for c in v.comparisons if c.status == "compared" and c.target.role == "primary"]
    measures = sorted({c.target.measure for c in compared} - {"population_share_of_total", "life_expectancy_at_birth"})
    for measure in measures:
        image = _measure_plot(measure, [c for c in compared if c.target.measure == measure])
        parts.append(f"<img src='data:image/png;base64,{image}'>")
    pyramid = [c for c in compared if c.target.measure == "population_share_of_total" and _is_pyramid_bar(c.target)]
    if pyramid:
        parts.append(f"<h2>Age/sex pyramid</h2><img src='data:image/png;base64,{_pyramid_plot(pyramid)}'>")
    if v.labs:
        parts.append("<h2>Labs and vital signs by disease state</h2>")
        parts += [f"<img src='data:image/png;base64,{_lab_plot(lab)}'>" for lab in v.labs if lab["groups"]]
    parts.append(f"<h2>Clinical invariants</h2><p>{v.invariant_patients:,} patients checked.</p><ul>")
    for name, violations in v.invariants.items():
        parts.append(f"<li>{esc(name)}: {'ok' if not violations else esc('; '.join(violations))}</li>")
    parts.append("</ul><h2>Dataset card</h2><pre>" + esc(json.dumps(v.card, indent=2, default=str)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(v: Validation, directory: Path) -> list[Path]:
    """report.json, report.md and report.html in `directory` (all three or none)."""
    import matplotlib

    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    return write_all(
        {
            directory / "report.json": json.dumps(report_data(v), indent=2, default=str),
            directory / "report.md": markdown(v),
            directory / "report.html": page(v),
        }
    )
