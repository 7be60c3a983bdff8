"""The labs and vital signs that matter for a case, over the years and during a stay, as SVG.

What matters: the readings the index condition's module took (its labs first, then its vital signs,
systolic and diastolic pressure in one panel), then the labs other modules took, then the check-up's blood
pressure and BMI; over the years, only readings taken on at least three days, so that a chart shows a
course."""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from simulator.teaching.narrative import DIASTOLIC, RULES_MODULES, SYSTOLIC
from simulator.teaching.patient import PatientRecord
from simulator.teaching.terms import row_term, unit_text

MAX_PANELS = 4
FALLBACK_CODES = (SYSTOLIC, "39156-5")  # check-up blood pressure and BMI
COLORS = ("#1f5fa8", "#c0392b")


@dataclass(frozen=True)
class Panel:
    """One chart: the codes drawn in it (systolic and diastolic together), its title."""

    codes: tuple[str, ...]
    title: str


def panels_for(observations: pd.DataFrame, module: str, min_days: int) -> list[Panel]:
    """The charts that matter for a case of `module` among these readings, of codes read on at least
    `min_days` days (twice at least), at most MAX_PANELS."""
    if observations.empty:
        return []
    codes = observations["code"].astype(str)
    days = observations["time"].dt.floor("D").groupby(codes).nunique()
    counts = codes.groupby(codes).size()
    wanted = set(days[(days >= min_days) & (counts >= 2)].index)
    obs = observations[codes.isin(wanted)]
    own = obs["module"] == module
    lab = obs["category"] != "vital-signs"
    routine = obs["module"].isin(RULES_MODULES)
    groups = [obs[own & lab], obs[own & ~lab], obs[~own & lab & ~routine], obs[obs["code"].isin(FALLBACK_CODES)]]
    panels: list[Panel] = []
    for group in groups:
        counts = group.groupby("code", observed=True, sort=False).size().sort_values(ascending=False, kind="stable")
        for code in counts.index.astype(str):
            if code == DIASTOLIC or any(code in p.codes for p in panels) or len(panels) == MAX_PANELS:
                continue
            first = group[group["code"] == code].iloc[0]
            unit = unit_text(first["unit"])
            if code == SYSTOLIC:
                panels.append(Panel((SYSTOLIC, DIASTOLIC), "blood pressure (mmHg)"))
            else:
                label = row_term(first).text
                panels.append(Panel((code,), f"{label} ({unit})" if unit else label))
    return panels


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ehrsim"}):  # text as text; stable ids
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(n: int) -> tuple[Figure, list]:
    columns = 1 if n == 1 else 2
    rows = (n + columns - 1) // columns
    figure = Figure(figsize=(4.2 * columns, 2.4 * rows))
    figure.subplots_adjust(left=0.09, right=0.97, top=1 - 0.3 / rows, bottom=0.35 / rows, hspace=0.6, wspace=0.25)
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for extra in axes[n:]:
        extra.remove()
    return figure, axes[:n]


def _series(obs: pd.DataFrame, module: str, min_days: int) -> tuple[Figure, list[tuple[Axes, Panel, list]]] | None:
    """The figure for `obs` split into its panels, each with its (color, code, readings) series; None when
    no code of the module was read on at least `min_days` days."""
    panels = panels_for(obs, module, min_days=min_days)
    if not panels:
        return None
    figure, axes = _figure(len(panels))
    drawn = [
        (ax, panel, [(color, code, obs[obs["code"] == code]) for color, code in zip(COLORS, panel.codes, strict=False)])
        for ax, panel in zip(axes, panels, strict=True)
    ]
    return figure, drawn


def trends(
    record: PatientRecord,
    module: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    marks: list[tuple[pd.Timestamp, str]],
) -> str:
    """SVG of the readings that matter between `start` and `end`, with vertical lines at `marks`
    (diagnosis, index event) and the upper limit of normal where the run's reference data has one;
    '' when there is nothing to draw."""
    obs = record.observations
    found = _series(obs[(obs["time"] >= start) & (obs["time"] <= end)], module, min_days=3)
    if found is None:
        return ""
    figure, drawn = found
    for ax, panel, series in drawn:
        for color, code, readings in series:
            times = readings["time"].dt.tz_convert(None)
            ax.plot(times, readings["value"], marker="o", markersize=3, linewidth=1, color=color)
            limit = record.upper_limits.get(code)
            if limit is not None:
                ax.axhline(limit, color="#888", linestyle=":", linewidth=1)
                ax.annotate("upper limit of normal", (0.01, limit), xycoords=("axes fraction", "data"), fontsize=7)
        for t, label in marks:
            if start <= t <= end:
                ax.axvline(t.tz_convert(None), color="#e67e22", linewidth=1, linestyle="--")
                where = (t.tz_convert(None), 0.98)
                ax.annotate(
                    f" {label}", where, xycoords=("data", "axes fraction"), fontsize=7, va="top", color="#e67e22"
                )
        ax.set_title(panel.title, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        locator = AutoDateLocator(minticks=2, maxticks=6)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.grid(alpha=0.3)
    return _svg(figure)


def stay_chart(record: PatientRecord, module: str, start: pd.Timestamp, end: pd.Timestamp) -> str:
    """SVG of the readings the module took during a stay (hours since arrival), of codes read at least
    twice; '' when none was."""
    obs = record.observations
    found = _series(obs[(obs["time"] >= start) & (obs["time"] <= end) & (obs["module"] == module)], module, 1)
    if found is None:
        return ""
    figure, drawn = found
    for ax, panel, series in drawn:
        for color, _, readings in series:
            hours = (readings["time"] - start).dt.total_seconds() / 3600
            ax.plot(hours, readings["value"], marker="o", markersize=2, linewidth=1, color=color)
        ax.set_title(panel.title, fontsize=9, loc="left")
        ax.set_xlabel("hours since arrival", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _svg(figure)
