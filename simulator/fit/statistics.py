"""The targets' statistics computed on a simulated cohort and compared with the published figures.

How definitions.yaml says: crude, at the reference date, among the living, on the row's own age band and
sex; age-adjusted rows by direct adjustment to their source's standard population; rates per person-year
of a lifetime cohort. Each comparison carries its interval (the source's, else Wilson) and the miss
a model without bias would make by sampling alone.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import special

from simulator.days import DAYS_PER_YEAR
from simulator.fit.cohort import ACTIVE, DIAGNOSED, EVER, EVER_DIAGNOSED, Cohort, Vocabulary, _same_events
from simulator.model.targets import (
    OPEN_AGE,
    AllCriterion,
    AnyCriterion,
    ConditionCriterion,
    Criterion,
    Measure,
    ObservationCriterion,
    Target,
    TargetSet,
)

if TYPE_CHECKING:
    pass


RELATIVE_TOLERANCE = 0.10
Z95 = 1.959963984540054
RATE_GROUP = 5  # years: age groups of the lifetime cohort's event rates
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_STATUS_BITS = {
    "active": ACTIVE,
    "diagnosed": DIAGNOSED,
    "ever": EVER,
    "ever_diagnosed": EVER_DIAGNOSED,
}


def meets(criterion: Criterion, cohort: Cohort, vocabulary: Vocabulary, absent: set[str]) -> np.ndarray | None:
    """Whether each patient meets the criterion; None when none of its names is loaded (names
    not loaded are added to `absent`)."""
    n = len(cohort)
    if isinstance(criterion, AnyCriterion | AllCriterion):
        members = criterion.any if isinstance(criterion, AnyCriterion) else criterion.all
        children = [meets(c, cohort, vocabulary, absent) for c in members]
        present = [c for c in children if c is not None]
        if not present:
            return None
        combine = np.logical_or if isinstance(criterion, AnyCriterion) else np.logical_and
        return combine.reduce(present)
    if isinstance(criterion, ConditionCriterion):
        keys, missing = vocabulary.resolve("conditions", criterion.conditions)
        absent.update(missing)
        if not keys:
            return None
        status = np.bitwise_or.reduce([cohort.conditions[k] for k in keys])
        if criterion.status == "undiagnosed":
            return np.logical_or.reduce([(cohort.conditions[k] & (ACTIVE | DIAGNOSED)) == ACTIVE for k in keys])
        return (status & _STATUS_BITS[criterion.status]) != 0
    if isinstance(criterion, ObservationCriterion):
        keys, missing = vocabulary.resolve("observables", [criterion.observation])
        absent.update(missing)
        if not keys:
            return None
        with np.errstate(invalid="ignore"):
            return _OPS[criterion.op](cohort.observations[keys[0]], criterion.value)
    keys, missing = vocabulary.resolve("medications", criterion.medications)
    absent.update(missing)
    return np.logical_or.reduce([cohort.medications[k] for k in keys]) if keys else np.zeros(n, bool)


@dataclass
class Comparison:
    """A target next to its simulated value; `passed` None when not compared."""

    target: Target
    status: Literal["compared", "not covered", "unsupported", "age-adjusted", "no lifetime cohort"]
    simulated: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    n: int = 0
    count: float = 0.0
    note: str = ""
    tolerance: float | None = None  # absolute; None: RELATIVE_TOLERANCE or the intervals

    @property
    def difference(self) -> float:
        return self.simulated - self.target.value

    @property
    def standard_error(self) -> float:
        return (self.hi - self.lo) / (2 * Z95)

    @property
    def passed(self) -> bool | None:
        if self.status != "compared" or not math.isfinite(self.simulated):
            return None
        t = self.target
        if self.tolerance is not None:
            return bool(abs(self.difference) <= self.tolerance)
        inside_sim = self.lo <= t.value <= self.hi
        inside_target = t.ci_lo is not None and t.ci_hi is not None and t.ci_lo <= self.simulated <= t.ci_hi
        return bool(abs(self.difference) <= RELATIVE_TOLERANCE * abs(t.value) or inside_sim or inside_target)

    @property
    def chance_of_missing(self) -> float:
        """The probability that a model without bias fails this target by sampling alone: its simulated
        value drawn around the target with this comparison's standard error, against the pass test."""
        se = self.standard_error
        if self.passed is None or not se > 0:
            return math.nan
        t = self.target
        if self.tolerance is not None:
            below = above = self.tolerance
        else:
            below = above = max(RELATIVE_TOLERANCE * abs(t.value), Z95 * se)
            if t.ci_lo is not None and t.ci_hi is not None:
                below, above = max(below, t.value - t.ci_lo), max(above, t.ci_hi - t.value)
        return float(special.ndtr(-below / se) + special.ndtr(-above / se))


def wilson(k: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return min(centre - half, p), max(centre + half, p)  # contains p also when rounding says otherwise


def in_band(age_years: np.ndarray, sex: np.ndarray, target: Target) -> np.ndarray:
    """Whether each age (whole years) and sex falls in the target's band."""
    age = np.floor(age_years)
    mask = (age >= target.age_lo) & (age <= target.age_hi if target.age_hi < OPEN_AGE else True)
    if target.sex != "all":
        mask &= sex == "MF".index(target.sex)
    return mask


def band_mask(cohort: Cohort, target: Target) -> np.ndarray:
    return in_band(cohort.age_years, cohort.sex, target)


def compare(
    target: Target, measure: Measure, cohort: Cohort, vocabulary: Vocabulary, lifetime: Cohort | None = None
) -> Comparison:
    """The simulated statistic of one target, computed the way the target counts."""
    if target.basis != "crude" and not target.standard:
        return Comparison(target, "age-adjusted", note="age-adjusted with no standard population named: not compared")
    if measure.statistic == "unsupported":
        return Comparison(target, "unsupported", note=measure.reason)
    if target.standard:
        return age_adjusted(target, measure, cohort, vocabulary)
    if measure.statistic == "life_expectancy":
        if lifetime is None:
            return Comparison(target, "no lifetime cohort")
        chosen = np.ones(len(lifetime), bool) if target.sex == "all" else lifetime.sex == "MF".index(target.sex)
        ages = (lifetime.death_t[chosen] - lifetime.birth_t[chosen]) / DAYS_PER_YEAR
        alive = int(np.isnan(ages).sum())
        ages = ages[~np.isnan(ages)]
        ages = ages[ages >= target.age_lo] - target.age_lo  # years lived after x by those alive at x
        if len(ages) == 0:
            note = f"no member of the lifetime cohort reached {target.age_lo}"
            return Comparison(target, "compared", math.nan, note=note)
        mean, half = float(ages.mean()), Z95 * float(ages.std(ddof=1) if len(ages) > 1 else 0) / math.sqrt(len(ages))
        note = f"{alive} members still alive at the horizon were left out" if alive else ""
        total = float(ages.sum())
        return Comparison(target, "compared", mean, mean - half, mean + half, len(ages), total, note, measure.tolerance)
    if measure.statistic in ("rate", "event_share"):
        if lifetime is None:
            return Comparison(target, "no lifetime cohort")
        if measure.statistic == "event_share":
            return event_share(target, measure, lifetime, vocabulary)
        return rate(target, measure, cohort, lifetime, vocabulary)
    living = cohort.alive
    if measure.statistic == "share":
        band = band_mask(cohort, target) & living
        n, k = int(living.sum()), float(band.sum())
        return Comparison(target, "compared", k / n if n else math.nan, *wilson(k, n), n, k)
    masks = prevalence_masks(measure, cohort, vocabulary)
    if isinstance(masks, str):
        return Comparison(target, "not covered", note=masks)
    hit, counted, note = masks
    band = band_mask(cohort, target) & living & counted
    n, k = int(band.sum()), float((hit & band).sum())
    return Comparison(target, "compared", k / n if n else math.nan, *wilson(k, n), n, k, note)


def prevalence_masks(
    measure: Measure, cohort: Cohort, vocabulary: Vocabulary
) -> tuple[np.ndarray, np.ndarray, str] | str:
    """(who meets the numerator, who is counted: meets `among` and has a reading of `measured`, note)
    over the whole cohort, or why the measure is not covered."""
    absent: set[str] = set()
    hit = meets(measure.numerator, cohort, vocabulary, absent) if measure.numerator else None
    counted = np.ones(len(cohort), bool)
    if measure.among is not None:
        counted &= meets(measure.among, cohort, vocabulary, absent)
    note = f"not in the loaded modules: {', '.join(sorted(absent))}" if absent else ""
    if hit is None:
        return note
    if measure.measured:
        keys, _ = vocabulary.resolve("observables", [measure.measured])
        if not keys:
            return f"observable '{measure.measured}' is not loaded"
        counted &= ~np.isnan(cohort.observations[keys[0]])
    return hit, counted, note


def age_adjusted(target: Target, measure: Measure, cohort: Cohort, vocabulary: Vocabulary) -> Comparison:
    """Direct age adjustment: the prevalence of each of the standard's age groups, weighted by the
    group's share of the standard population; the interval from the groups' binomial variances."""
    if measure.statistic != "prevalence":
        return Comparison(target, "unsupported", note="age adjustment is defined for prevalence rows only")
    masks = prevalence_masks(measure, cohort, vocabulary)
    if isinstance(masks, str):
        return Comparison(target, "not covered", note=masks)
    hit, counted, note = masks
    counted = counted & cohort.alive
    value = variance = count = 0.0
    people = 0
    for lo, hi, weight in target.groups:
        group = band_mask(cohort, replace(target, age_lo=lo, age_hi=hi)) & counted
        n, k = int(group.sum()), float((hit & group).sum())
        if n == 0:
            return Comparison(target, "compared", math.nan, note=f"no one counted at ages {lo}-{hi}")
        p = k / n
        value += weight * p
        variance += weight**2 * p * (1 - p) / n
        count, people = count + k, people + n
    half = Z95 * math.sqrt(variance)
    note = "; ".join(filter(None, [f"age-adjusted to {target.standard}", note]))
    return Comparison(target, "compared", value, max(value - half, 0.0), min(value + half, 1.0), people, count, note)


def _by_age_group(sex: np.ndarray, age: np.ndarray, n_groups: int) -> np.ndarray:
    """Counts by sex and RATE_GROUP-year age group (the last group open-ended)."""
    counts = np.zeros((2, n_groups))
    group = np.minimum(age // RATE_GROUP, n_groups - 1).astype(np.int64)
    np.add.at(counts, (sex.astype(np.int64), group), 1.0)
    return counts


def rate(target: Target, measure: Measure, cohort: Cohort, lifetime: Cohort, vocabulary: Vocabulary) -> Comparison:
    """Events per person-year in the band: the lifetime cohort's rates by age group and sex (events
    over person-years lived there), weighted by the living cohort's people of each age and sex in
    the band, i.e. the crude rate of the living population if it had the simulated rates."""
    assert measure.events is not None
    keys, missing = vocabulary.resolve("conditions", measure.events.reasons)
    if not keys:
        return Comparison(target, "not covered", note=f"not in the loaded modules: {', '.join(missing)}")
    rows, t = lifetime.events[measure.events.key]
    followed = np.isfinite(lifetime.death_t[rows])  # members alive at the horizon give no person-years
    rows, t = rows[followed], t[followed]
    n_groups = OPEN_AGE // RATE_GROUP + 1
    lived = (lifetime.death_t - lifetime.birth_t) / DAYS_PER_YEAR
    starts = np.arange(n_groups) * RATE_GROUP
    person_years = np.zeros((2, n_groups))
    for s in (0, 1):
        years = lived[np.isfinite(lived) & (lifetime.sex == s)]
        person_years[s] = np.clip(years[:, None] - starts[None, :], 0, RATE_GROUP).sum(axis=0)
    events = _by_age_group(lifetime.sex[rows], (t - lifetime.birth_t[rows]) / DAYS_PER_YEAR, n_groups)
    band = band_mask(cohort, target) & cohort.alive
    weights = _by_age_group(cohort.sex[band], np.floor(cohort.age_years[band]), n_groups)
    weights /= max(weights.sum(), 1.0)
    if (person_years[weights > 0] <= 0).any():
        return Comparison(target, "compared", math.nan, note="the lifetime cohort has no person-years at some ages")
    safe = np.where(person_years > 0, person_years, 1.0)
    value = float((weights * events / safe).sum())
    half = Z95 * math.sqrt(float((weights**2 * events / safe**2).sum()))  # Poisson event counts
    count = float(events[weights > 0].sum())
    note = f"{int(count)} events in the lifetime cohort at these ages" + (
        f"; not loaded: {', '.join(missing)}" if missing else ""
    )
    return Comparison(target, "compared", value, max(value - half, 0.0), value + half, int(band.sum()), count, note)


def event_share(target: Target, measure: Measure, lifetime: Cohort, vocabulary: Vocabulary) -> Comparison:
    """Share of the lifetime cohort's `among_events` at the band's ages that are also `events` (the
    same event: same member and time)."""
    assert measure.events is not None and measure.among_events is not None
    keys, missing = vocabulary.resolve("conditions", measure.among_events.reasons)
    if not keys:
        return Comparison(target, "not covered", note=f"not in the loaded modules: {', '.join(missing)}")
    rows, t = lifetime.events[measure.among_events.key]
    whole = in_band((t - lifetime.birth_t[rows]) / DAYS_PER_YEAR, lifetime.sex[rows], target)
    hit = _same_events(rows, t, *lifetime.events[measure.events.key]) & whole
    n, k = int(whole.sum()), float(hit.sum())
    return Comparison(
        target, "compared", k / n if n else math.nan, *wilson(k, n), n, k, "events of the lifetime cohort"
    )


def compare_all(
    targets: TargetSet, cohort: Cohort, vocabulary: Vocabulary, lifetime: Cohort | None = None
) -> list[Comparison]:
    unsupported = Measure(statistic="unsupported")
    measures = targets.definitions.measures
    return [compare(t, measures.get(t.measure, unsupported), cohort, vocabulary, lifetime) for t in targets.targets]
