"""The check of each rule kind, implemented once: `CHECKS[kind](tables, rule) -> Finding`, the records the
check looked at and one row per violation (patient, time, what, detail). The rule (a model of
simulator/model/audit.py) carries the parameters, so rules are data and kinds are code. Checks work a table
at a time, never a patient at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from simulator.audit.tables import AuditTables
from simulator.model import audit as rules
from simulator.model.calendar import SYSTEM_URIS
from simulator.model.schema import WEEKDAYS

VIOLATION_COLUMNS = ["patient", "time", "what", "detail"]
YEAR = pd.Timedelta(days=365.25)
EPSILON = 1e-9  # float slack on tolerances that are exact decimal steps


class Finding(NamedTuple):
    """What a check found: `checked` records (rows, pairs or encounters, as the kind says) and `violations`
    (columns VIOLATION_COLUMNS: patient index, time of the offending record, what is wrong, detail)."""

    checked: int
    violations: pd.DataFrame


Check = Callable[[AuditTables, Any], Finding]
CHECKS: dict[str, Check] = {}


def check(kind: str) -> Callable[[Check], Check]:
    """Register the check of a rule kind."""

    def register(function: Check) -> Check:
        CHECKS[kind] = function
        return function

    return register


def violations(
    patient: pd.Series, time: pd.Series, what: str | np.ndarray, detail: pd.Series | np.ndarray
) -> pd.DataFrame:
    """Violation rows (all arguments aligned by position)."""
    return pd.DataFrame(
        {"patient": patient.to_numpy(), "time": time.array, "what": what, "detail": np.asarray(detail)},
        columns=VIOLATION_COLUMNS,
    )


def combine(findings: list[Finding]) -> Finding:
    """One finding of several parts (tables, pairs of columns, drug groups)."""
    return Finding(sum(f.checked for f in findings), pd.concat([f.violations for f in findings], ignore_index=True))


# Text for details, as object arrays so that they add up by position whatever the index of what they join.
def _text(times: pd.Series, unit: str, missing: str = "none") -> np.ndarray:
    naive = times.dt.tz_localize(None).to_numpy().astype(f"datetime64[{unit}]")
    if not len(naive):
        return np.array([], dtype=object)
    text = np.char.replace(np.datetime_as_string(naive), "T", " ")
    return np.where(np.isnat(naive), missing, text).astype(object)


def day(times: pd.Series, missing: str = "none") -> np.ndarray:
    return _text(times, "D", missing)


def minute(times: pd.Series) -> np.ndarray:
    """Times to the minute, in the zone they are in (UTC in the tables)."""
    return _text(times, "m")


def number(values: pd.Series | np.ndarray, decimals: int = 1) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.where(np.isnan(values), "none", np.char.mod(f"%.{decimals}f", values)).astype(object)


def completed_years(birth: pd.Series, at: pd.Series) -> np.ndarray:
    """Age in whole years at `at` (as a clinic or laboratory records it)."""
    years = at.dt.year.to_numpy() - birth.dt.year.to_numpy()
    birthday_ahead = at.dt.month.to_numpy() * 100 + at.dt.day.to_numpy() < (
        birth.dt.month.to_numpy() * 100 + birth.dt.day.to_numpy()
    )
    return years - birthday_ahead


def readings(tables: AuditTables, code: str) -> pd.DataFrame:
    """Observations of one LOINC code, one per patient and time, in patient and time order."""
    obs = tables["observations"]
    found = obs.loc[obs["code"] == code, ["patient", "time", "value"]]
    return found.drop_duplicates(["patient", "time"]).sort_values(["patient", "time"], kind="stable")


def consecutive(frame: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Whether each row follows a row of the same patient (frame in patient and time order), and the rows
    shifted by one (the previous reading)."""
    previous = frame.shift(1)
    return (frame["patient"].to_numpy() == previous["patient"].to_numpy()), previous


# The time column of a coded table (the others have `time`).
TIME_OF = {"medications": "start_time", "conditions": "diagnosis_time"}


@check("introduction_year")
def introduction_year(tables: AuditTables, rule: rules.IntroductionYearRule) -> Finding:
    """Coded rows of `rule.tables` dated before the first day their code could be in a record (the calendar's
    date, by the patient's age where it depends on age). Codes the calendar does not date are not checked."""
    if tables.calendar is None:
        raise ValueError("the introduction_year rule needs the library's calendar (rules/calendar.yaml)")
    findings = []
    for name in rule.tables:
        frame = tables[name]
        time = frame[TIME_OF.get(name, "time")]
        first = np.full(len(frame), np.datetime64("NaT"), dtype="datetime64[D]")
        for key, rows in frame.groupby(["system", "code"], observed=True, sort=False).indices.items():
            entry = tables.calendar.entry(str(key[0]), str(key[1]))
            if entry is None:
                continue
            if entry.by_age:
                birth = tables.patient_column("birth_time", frame["patient"].iloc[rows])
                age = ((time.iloc[rows] - birth) / YEAR).to_numpy()
                first[rows] = np.array([entry.on(a) for a in age], dtype="datetime64[D]")
            else:
                first[rows] = np.datetime64(entry.on(), "D")
        first = pd.Series(pd.to_datetime(first).tz_localize("UTC"), index=frame.index)
        dated = first.notna() & time.notna()
        early = dated & (time < first)
        bad = frame[early]
        detail = bad["code"].astype(str) + " " + bad["display"].astype(str) + " on " + day(time[early])
        detail = detail + "; first possible " + day(first[early])
        what = f"{name} before introduction"
        findings.append(Finding(int(dated.sum()), violations(bad["patient"], time[early], what, detail)))
    return combine(findings)


def ckd_epi(creatinine: np.ndarray, age: np.ndarray, female: np.ndarray, eq: rules.CkdEpiCoefficients) -> np.ndarray:
    """eGFR (mL/min/1.73 m2) by the CKD-EPI creatinine equation with `eq`'s coefficients."""
    kappa = np.where(female, eq.kappa["F"], eq.kappa["M"])
    alpha = np.where(female, eq.alpha["F"], eq.alpha["M"])
    ratio = creatinine / kappa
    return (
        eq.scale
        * np.minimum(ratio, 1.0) ** alpha
        * np.maximum(ratio, 1.0) ** eq.exponent_above
        * eq.age_factor**age
        * np.where(female, eq.female_factor, 1.0)
    )


@check("derived_egfr")
def derived_egfr(tables: AuditTables, rule: rules.DerivedEgfrRule) -> Finding:
    """Adult eGFR readings against the equation of the creatinine taken at the same time."""
    egfr = readings(tables, rule.egfr).merge(
        readings(tables, rule.creatinine), on=["patient", "time"], how="left", suffixes=("", "_creatinine")
    )
    age = completed_years(tables.patient_column("birth_time", egfr["patient"]), egfr["time"])
    egfr = egfr[age >= rule.minimum_age_years].assign(age=age[age >= rule.minimum_age_years])
    female = tables.patient_column("sex", egfr["patient"]).astype(str).to_numpy() == "F"
    expected = ckd_epi(egfr["value_creatinine"].to_numpy(), egfr["age"].to_numpy(), female, rule.equation)
    alone = egfr["value_creatinine"].isna().to_numpy()
    off = ~alone & (np.abs(egfr["value"].to_numpy() - expected) > rule.tolerance + EPSILON)
    what = np.where(alone, "eGFR without a creatinine", "eGFR differs from its equation")
    sex = np.where(female, "F", "M")
    detail = (
        "eGFR "
        + number(egfr["value"], 0)
        + " with creatinine "
        + number(egfr["value_creatinine"], 2)
        + " at "
        + egfr["age"].astype(str).to_numpy()
        + " "
        + sex
        + "; equation "
        + number(expected, 0)
    )
    bad = alone | off
    return Finding(len(egfr), violations(egfr["patient"][bad], egfr["time"][bad], what[bad], detail[bad]))


@check("derived_bmi")
def derived_bmi(tables: AuditTables, rule: rules.DerivedBmiRule) -> Finding:
    """BMI readings taken with a weight and a height, against weight / height^2 within their rounding."""
    key = ["patient", "time"]
    both = (
        readings(tables, rule.bmi)
        .merge(readings(tables, rule.weight).rename(columns={"value": "weight"}), on=key)
        .merge(readings(tables, rule.height).rename(columns={"value": "height"}), on=key)
    )
    metres = both["height"] / 100
    computed = both["weight"] / metres**2
    steps = rule.steps
    tolerance = steps.bmi / 2 + computed * (steps.weight / 2 / both["weight"] + steps.height / both["height"])
    bad = (both["value"] - computed).abs() > tolerance + EPSILON
    b = both[bad]
    detail = (
        "BMI "
        + number(b["value"])
        + " with weight "
        + number(b["weight"])
        + " kg and height "
        + number(b["height"])
        + " cm; weight / height^2 = "
        + number(computed[bad], 2)
    )
    return Finding(len(both), violations(b["patient"], b["time"], "BMI differs from weight / height^2", detail))


@check("derived_sum")
def derived_sum(tables: AuditTables, rule: rules.DerivedSumRule) -> Finding:
    """Calculated results taken with all their terms, against the sum of coefficient x term (floored) within
    the rounding of the result and of each term; a result missing a term is a violation too."""
    both = readings(tables, rule.result).reset_index(drop=True)
    for i, code in enumerate(rule.terms):
        both = both.merge(
            readings(tables, code).rename(columns={"value": f"term{i}"}), on=["patient", "time"], how="left"
        )
    terms = [coefficient * both[f"term{i}"] for i, coefficient in enumerate(rule.terms.values())]
    computed = sum(terms[1:], terms[0]).clip(lower=rule.floor)
    tolerance = rule.step / 2 * (1 + sum(abs(c) for c in rule.terms.values()))
    bad = ~((both["value"] - computed).abs() <= tolerance + EPSILON)
    b = both[bad]
    detail = "reported " + number(b["value"]) + ", calculated " + number(computed[bad])
    return Finding(len(both), violations(b["patient"], b["time"], f"{rule.result} differs from its terms", detail))


@check("adult_height_stable")
def adult_height_stable(tables: AuditTables, rule: rules.AdultHeightRule) -> Finding:
    """Consecutive adult heights: a rise beyond the tolerance, or a loss beyond tolerance + loss with age."""
    height = readings(tables, rule.height)
    age = completed_years(tables.patient_column("birth_time", height["patient"]), height["time"])
    height = height[age >= rule.from_age_years].reset_index(drop=True)
    same, previous = consecutive(height)
    years = (height["time"] - previous["time"]) / YEAR
    change = height["value"] - previous["value"]
    bad = same & (
        (change > rule.tolerance_cm + EPSILON) | (-change > rule.tolerance_cm + rule.loss_cm_per_year * years)
    )
    detail = (
        number(previous["value"][bad])
        + " cm on "
        + day(previous["time"][bad])
        + ", then "
        + number(height["value"][bad])
        + " cm "
        + number(years[bad], 1)
        + " years later"
    )
    return Finding(
        int(same.sum()), violations(height["patient"][bad], height["time"][bad], "adult height changed", detail)
    )


@check("hba1c_pace")
def hba1c_pace(tables: AuditTables, rule: rules.GlycatedHemoglobinPaceRule) -> Finding:
    """Consecutive HbA1c results: repeated too soon, or moved further than the kinetics allow."""
    a1c = readings(tables, rule.hba1c).reset_index(drop=True)
    same, previous = consecutive(a1c)
    days = ((a1c["time"] - previous["time"]).dt.total_seconds() / 86_400).to_numpy()
    change = (a1c["value"] - previous["value"]).to_numpy()
    lowest, highest = rule.steady_state_pct
    room = np.where(change < 0, previous["value"] - lowest, highest - previous["value"]).clip(min=0)
    allowed = (1 - 0.5 ** (np.where(same, days, 0) / rule.half_time_days)) * room + rule.analytical_share * previous[
        "value"
    ]
    soon = same & (days < rule.min_repeat_days)
    fast = same & (np.abs(change) > allowed + EPSILON)
    what = np.where(
        soon & fast, "repeated too soon and changed too fast", np.where(soon, "repeated too soon", "changed too fast")
    )
    bad = soon | fast
    detail = (
        number(previous["value"][bad])
        + "% then "
        + number(a1c["value"][bad])
        + "% "
        + number(days[bad], 0)
        + " days later (at most "
        + number(allowed[bad], 1)
        + " points of change)"
    )
    return Finding(int(same.sum()), violations(a1c["patient"][bad], a1c["time"][bad], what[bad], detail))


def _in_use_from(tables: AuditTables, codes: list[str]) -> pd.Timestamp | None:
    """The first day any of these LOINC codes could be in a record (the calendar's earliest date among them);
    None when one of them is not dated (always in use) or the calendar is not known."""
    if tables.calendar is None:
        return None
    days = [tables.calendar.introduced_on(SYSTEM_URIS["loinc"], code) for code in codes]
    if None in days:
        return None
    return pd.Timestamp(min(days), tz="UTC")  # type: ignore[type-var]


@check("required_observations")
def required_observations(tables: AuditTables, rule: rules.RequiredObservationsRule) -> Finding:
    """Encounters of the rule's classes lacking an observation of a required group, where the group's method
    was in use (rules/calendar.yaml: no oxygen saturation is required before pulse oximetry)."""
    encounters = tables["encounters"]
    acute = encounters[encounters["encounter_class"].astype(str).isin(rule.encounter_classes)]
    group_of = {code: name for name, codes in rule.required.items() for code in codes}
    obs = tables["observations"]
    wanted = obs["encounter_id"].isin(acute["id"]) & obs["code"].isin(list(group_of))
    taken = pd.DataFrame(
        {
            "encounter_id": obs["encounter_id"][wanted].to_numpy(),
            "group": obs["code"][wanted].astype(str).map(group_of).to_numpy(),
        }
    ).drop_duplicates()
    present = (
        pd.crosstab(taken["encounter_id"], taken["group"])
        .reindex(index=acute["id"], columns=list(rule.required), fill_value=0)
        .to_numpy()
        > 0
    )
    missing = pd.Series("", index=acute.index)
    for i, (name, codes) in enumerate(rule.required.items()):
        since = _in_use_from(tables, codes)
        if since is not None:
            present[:, i] |= (acute["start_time"] < since).to_numpy()
        missing = missing + np.where(present[:, i], "", name + ", ")
    bad = (~present).any(axis=1)
    a = acute[bad]
    detail = a["encounter_class"].astype(str) + " encounter without " + missing[bad].str.removesuffix(", ")
    return Finding(len(acute), violations(a["patient"], a["start_time"], "required observations missing", detail))


@check("nothing_after_death")
def nothing_after_death(tables: AuditTables, rule: rules.NothingAfterDeathRule) -> Finding:
    """Records of dead patients dated after death, or left open (or ending) after it."""
    findings = []
    for name in dict.fromkeys([*rule.events, *rule.open_records]):
        frame = tables[name]
        death = tables.patient_column("death_time", frame["patient"])
        dead = death.notna()
        found = []
        for column in rule.events.get(name, []):
            late = dead & (frame[column] > death)
            found.append(
                violations(
                    frame["patient"][late],
                    frame[column][late],
                    f"{name} {column} after death",
                    minute(frame[column][late]) + "; died " + minute(death[late]),
                )
            )
        if name in rule.open_records:
            end = frame[rule.open_records[name]]
            still = dead & (end.isna() | (end > death))
            found.append(
                violations(
                    frame["patient"][still],
                    death[still],
                    f"{name} open after death",
                    rule.open_records[name] + " " + minute(end[still]) + "; died " + minute(death[still]),
                )
            )
        findings.append(Finding(int(dead.sum()), pd.concat(found, ignore_index=True)))
    return combine(findings)


@check("prior_course")
def prior_course(tables: AuditTables, rule: rules.PriorCourseRule) -> Finding:
    """Courses of `rule.courses` that start without a course of `rule.requires` started `min_days` before and
    still running (a course without a stop runs to the end of the record). Checked: the courses of `courses`."""
    meds = tables["medications"].assign(code=lambda m: m["code"].astype(str))
    courses = meds[meds["code"].isin(rule.courses.members)].reset_index(drop=True)
    courses = courses.assign(course=courses.index)
    required = meds.loc[meds["code"].isin(rule.requires.members), ["patient", "start_time", "stop_time"]]
    required = required.rename(columns={"start_time": "prior_start", "stop_time": "prior_stop"})
    pairs = courses[["course", "patient", "start_time"]].merge(required, on="patient")
    in_time = (pairs["prior_start"] <= pairs["start_time"] - pd.Timedelta(days=rule.min_days)) & (
        pairs["prior_stop"].isna() | (pairs["prior_stop"] >= pairs["start_time"])
    )
    bad = courses[~courses["course"].isin(pairs.loc[in_time, "course"])]
    detail = bad["display"].astype(str) + " started " + day(bad["start_time"])
    what = f"started without {rule.min_days:g} days of the required course before it"
    return Finding(len(courses), violations(bad["patient"], bad["start_time"], what, detail))


@check("course_monitoring")
def course_monitoring(tables: AuditTables, rule: rules.CourseMonitoringRule) -> Finding:
    """Courses of `rule.courses` with a gap longer than `max_gap_days` without a reading of `rule.observation`
    while they run (from the code's introduction; a course without a stop runs to the patient's last
    encounter). Checked: the courses that run while the code is in use."""
    meds = tables["medications"].assign(code=lambda m: m["code"].astype(str))
    courses = meds[meds["code"].isin(rule.courses.members)].reset_index(drop=True)
    last_visit = tables["encounters"].groupby("patient")["start_time"].max()
    since = _in_use_from(tables, [rule.observation])
    start = courses["start_time"] if since is None else courses["start_time"].clip(lower=since)
    end = courses["stop_time"].fillna(courses["patient"].map(last_visit))
    courses = courses.assign(course=courses.index, start=start, end=end)[lambda c: c["end"] > c["start"]]
    obs = tables["observations"]
    taken = obs.loc[obs["code"].astype(str) == rule.observation, ["patient", "time"]]
    pairs = courses[["course", "patient", "start", "end"]].merge(taken, on="patient")
    pairs = pairs[(pairs["time"] >= pairs["start"]) & (pairs["time"] <= pairs["end"])]
    marks = [pairs[["course", "time"]], *(courses[["course", b]].rename(columns={b: "time"}) for b in ("start", "end"))]
    times = pd.concat([m.astype({"time": "datetime64[us, UTC]"}) for m in marks], ignore_index=True)
    times = times.sort_values(["course", "time"], kind="stable")
    gap_days = times.groupby("course")["time"].diff().dt.total_seconds() / 86400.0
    longest = gap_days.groupby(times["course"]).max()
    bad = courses[courses["course"].map(longest) > rule.max_gap_days]
    detail = (
        bad["display"].astype(str)
        + " "
        + day(bad["start_time"])
        + " to "
        + day(bad["stop_time"], "open")
        + ": "
        + bad["course"].map(longest).round().astype(int).astype(str)
        + " days without "
        + rule.observation
    )
    what = f"monitoring reading more than {rule.max_gap_days:g} days apart"
    return Finding(len(courses), violations(bad["patient"], bad["start_time"], what, detail))


@check("overlapping_courses")
def overlapping_courses(tables: AuditTables, rule: rules.OverlappingCoursesRule) -> Finding:
    """Pairs of a patient's medication courses in one group (or of one product) that overlap in time; a
    course without a stop runs to the end of the record. Checked: the courses in a group (or all)."""
    meds = tables["medications"].sort_values(["patient", "start_time"], kind="stable").reset_index(drop=True)
    meds = meds.assign(course=meds.index, code=meds["code"].astype(str), display=meds["display"].astype(str))
    keyed = []
    if rule.groups:
        group_of = {code: name for name, group in rule.groups.items() for code in group.members}
        grouped = meds[meds["code"].isin(group_of)]
        keyed.append(
            grouped.assign(
                key=grouped["code"].map(group_of), what="two drugs of " + grouped["code"].map(group_of) + " at once"
            )
        )
    if rule.same_product:
        keyed.append(meds.assign(key=meds["code"], what="two courses of one product at once"))
    findings = []
    for courses in keyed:
        pairs = courses.merge(courses, on=["patient", "key"], suffixes=("", "_2"))
        pairs = pairs[pairs["course"] < pairs["course_2"]]
        overlap = (pairs["stop_time_2"].isna() | (pairs["start_time"] < pairs["stop_time_2"])) & (
            pairs["stop_time"].isna() | (pairs["start_time_2"] < pairs["stop_time"])
        )
        p = pairs[overlap]
        detail = (
            p["display"]
            + " "
            + day(p["start_time"])
            + " to "
            + day(p["stop_time"], "open")
            + " and "
            + p["display_2"]
            + " "
            + day(p["start_time_2"])
            + " to "
            + day(p["stop_time_2"], "open")
        )
        findings.append(Finding(len(courses), violations(p["patient"], p["start_time_2"], p["what"], detail)))
    return combine(findings)


@check("visit_hours")
def visit_hours(tables: AuditTables, rule: rules.VisitHoursRule) -> Finding:
    """Encounters of the rule's classes starting outside working days and hours, in the local time of the
    patient's address (the city's zone in rules/names.yaml; patients of a city without one are not checked)."""
    encounters = tables["encounters"]
    visits = encounters[encounters["encounter_class"].astype(str).isin(rule.encounter_classes)]
    state = tables.patient_column("state", visits["patient"]).astype(str)
    city = tables.patient_column("city", visits["patient"]).astype(str)
    zone = (city + ", " + state).map(tables.time_zones).dropna()
    open_days = [WEEKDAYS.index(d) for d in rule.weekdays]
    opens, closes = (int(t[:2]) * 60 + int(t[3:]) for t in (rule.opens, rule.closes))
    findings = [Finding(len(zone), violations(visits["patient"][:0], visits["start_time"][:0], "", []))]
    for name, index in zone.groupby(zone).groups.items():
        visit = visits.loc[index]
        local = visit["start_time"].dt.tz_convert(str(name))
        minutes = local.dt.hour * 60 + local.dt.minute
        weekday = local.dt.day_of_week
        bad = ~weekday.isin(open_days) | (minutes < opens) | (minutes >= closes)
        names = np.array([d.capitalize() for d in WEEKDAYS], dtype=object)[weekday[bad].to_numpy()]
        detail = names + " " + minute(local[bad]) + f" local time ({name})"
        what = "visit outside clinic hours"
        findings.append(Finding(0, violations(visit["patient"][bad], visit["start_time"][bad], what, detail)))
    return combine(findings)


@check("time_order")
def time_order(tables: AuditTables, rule: rules.TimeOrderRule) -> Finding:
    """Rows whose `after` time is earlier than their `before` time."""
    findings = []
    for pair in rule.pairs:
        frame = tables[pair.table]
        before, after = frame[pair.before], frame[pair.after]
        both = before.notna() & after.notna()
        bad = both & (after < before)
        detail = pair.before + " " + minute(before[bad]) + ", " + pair.after + " " + minute(after[bad])
        what = f"{pair.table} {pair.after} before {pair.before}"
        findings.append(Finding(int(both.sum()), violations(frame["patient"][bad], after[bad], what, detail)))
    return combine(findings)


@check("not_before_birth")
def not_before_birth(tables: AuditTables, rule: rules.NotBeforeBirthRule) -> Finding:
    """Times of records earlier than the patient's birth."""
    findings = []
    for name, columns in rule.columns.items():
        frame = tables[name]
        birth = tables.patient_column("birth_time", frame["patient"])
        for column in columns:
            times = frame[column]
            dated = times.notna()
            bad = dated & (times < birth)
            detail = column + " " + minute(times[bad]) + "; born " + minute(birth[bad])
            findings.append(
                Finding(int(dated.sum()), violations(frame["patient"][bad], times[bad], f"{name} before birth", detail))
            )
    return combine(findings)


@check("within_encounter")
def within_encounter(tables: AuditTables, rule: rules.WithinEncounterRule) -> Finding:
    """Events that name an encounter of the run but fall outside its start and end."""
    encounters = tables["encounters"]
    ids = pd.Index(encounters["id"])
    findings = []
    for event in rule.events:
        frame = tables[event.table]
        position = ids.get_indexer(frame[event.encounter])
        known = (position >= 0) & frame[event.time].notna().to_numpy()
        named, position = frame[known], position[known]
        start = pd.Series(encounters["start_time"].array[position], index=named.index)
        end = pd.Series(encounters["end_time"].array[position], index=named.index)
        time = named[event.time]
        bad = (time < start) | (end.notna() & (time > end))
        detail = event.time + " " + minute(time[bad]) + "; encounter " + minute(start[bad]) + " to " + minute(end[bad])
        what = f"{event.table} outside its encounter"
        findings.append(Finding(len(named), violations(named["patient"][bad], time[bad], what, detail)))
    return combine(findings)


@check("death_in_hospital")
def death_in_hospital(tables: AuditTables, rule: rules.DeathInHospitalRule) -> Finding:
    """Encounters of the rule's classes that a dead patient was in at death (started before it, not ended
    before it) and that do not end at the death time with the rule's disposition (where the run has one)."""
    encounters = tables["encounters"]
    death = tables.patient_column("death_time", encounters["patient"])
    start, end = encounters["start_time"], encounters["end_time"]
    during = (
        encounters["encounter_class"].isin(rule.encounter_classes).to_numpy()
        & death.notna().to_numpy()
        & (start < death).to_numpy()
        & (end.isna() | (end >= death)).to_numpy()
    )
    wrong_end = during & (end != death).to_numpy()
    written = "discharge_disposition" in encounters
    disposition = encounters.get("discharge_disposition", pd.Series(None, index=encounters.index, dtype=object))
    bad = wrong_end | (during & (disposition.astype(object) != rule.disposition).to_numpy() & written)
    detail = (
        "ends "
        + minute(end[bad])
        + ", disposition "
        + disposition[bad].fillna("none").astype(str).to_numpy()
        + "; died "
        + minute(death[bad])
    )
    what = np.where(wrong_end[bad], "hospital death not at the encounter's end", "hospital death not as expired")
    return Finding(int(during.sum()), violations(encounters["patient"][bad], death[bad], what, detail))


@check("decedents")
def decedents(tables: AuditTables, rule: rules.DecedentsRule) -> Finding:
    """Decedents without a death time or a cause of death (a run written before decedents has none)."""
    patients = tables["patients"]
    if "is_decedent" not in patients:
        return Finding(0, violations(patients["index"][:0], patients["birth_time"][:0], "", []))
    dead = patients[patients["is_decedent"].astype(bool).to_numpy()]
    bad = dead["death_time"].isna().to_numpy() | dead["death_cause_code"].isna().to_numpy()
    detail = np.where(dead["death_time"].isna(), "no death time", "no cause of death")[bad]
    found = violations(dead["index"][bad], dead["birth_time"][bad], "decedent without a death", detail)
    return Finding(len(dead), found)


def _observations_with_value(tables: AuditTables) -> pd.DataFrame:
    obs = tables["observations"]
    return obs[obs["value"].notna().to_numpy()]


@check("value_present")
def value_present(tables: AuditTables, rule: rules.ObservationValuesRule) -> Finding:
    """Observations written without a value."""
    obs = tables["observations"]
    bad = obs["value"].isna()
    detail = obs["code"][bad].astype(str) + " " + obs["display"][bad].astype(str)
    return Finding(len(obs), violations(obs["patient"][bad], obs["time"][bad], "observation without a value", detail))


@check("duplicate_records")
def duplicate_records(tables: AuditTables, rule: rules.DuplicateRecordsRule) -> Finding:
    """Observations that repeat an earlier one of the patient from the same step of the same module: same code,
    time, value, unit, module and state (two modules may take the same reading at one visit)."""
    obs = tables["observations"]
    keys = [obs["patient"], obs["code"].astype(str), obs["time"], obs["value"], obs["unit"].astype(str)]
    keys += [obs["module"].astype(str), obs["state"].astype(str)]
    bad = pd.DataFrame({str(i): k.to_numpy() for i, k in enumerate(keys)}).duplicated().to_numpy()
    detail = obs["code"][bad].astype(str) + " " + number(obs["value"][bad], 2) + " " + obs["unit"][bad].astype(str)
    return Finding(len(obs), violations(obs["patient"][bad], obs["time"][bad], "observation recorded twice", detail))


@check("unit_consistency")
def unit_consistency(tables: AuditTables, rule: rules.UnitConsistencyRule) -> Finding:
    """Observations in another unit than the one most readings of their code have."""
    obs = tables["observations"]
    code, unit = obs["code"].astype(str), obs["unit"].astype(str)
    counts = pd.DataFrame({"code": code, "unit": unit}).value_counts()
    usual = counts.reset_index().drop_duplicates("code").set_index("code")["unit"]  # value_counts sorts by count
    bad = unit.to_numpy() != usual.reindex(code.to_numpy()).to_numpy()
    detail = code[bad] + " in " + unit[bad] + ", usually " + usual.reindex(code[bad].to_numpy()).to_numpy()
    return Finding(len(obs), violations(obs["patient"][bad], obs["time"][bad], "observation in another unit", detail))


@check("plausible_values")
def plausible_values(tables: AuditTables, rule: rules.PlausibleValuesRule) -> Finding:
    """Readings of the rule's codes, in the range's unit, outside the range."""
    obs = _observations_with_value(tables)
    findings = []
    for code, limits in rule.ranges.items():
        rows = obs[((obs["code"].astype(str) == code) & (obs["unit"].astype(str) == limits.unit)).to_numpy()]
        value = rows["value"]
        bad = (value < limits.low) | (value > limits.high)
        detail = code + " " + number(value[bad], 1) + f" {limits.unit} (plausible {limits.low:g} to {limits.high:g})"
        what = "implausible value"
        findings.append(Finding(len(rows), violations(rows["patient"][bad], rows["time"][bad], what, detail)))
    return combine(findings)


@check("timely_entry")
def timely_entry(tables: AuditTables, rule: rules.TimelyEntryRule) -> Finding:
    """Observations issued more than `max_days` after they were taken (a run without issued times writes each
    result issued when taken: none is late)."""
    obs = tables["observations"]
    if "issued_time" not in obs:
        return Finding(len(obs), violations(obs["patient"][:0], obs["time"][:0], "", []))
    # a CSV run's issued_time is read as text: the data dictionary lists the columns of a clean run
    issued = pd.to_datetime(obs["issued_time"], utc=True, format="ISO8601")
    late = (issued - obs["time"]) > pd.Timedelta(days=rule.max_days)
    detail = "taken " + minute(obs["time"][late]) + ", issued " + minute(issued[late])
    return Finding(len(obs), violations(obs["patient"][late], obs["time"][late], "result entered late", detail))


@check("known_codes")
def known_codes(tables: AuditTables, rule: rules.KnownCodesRule) -> Finding:
    """Codes outside the library's terminology, or written with another display than its own."""
    if tables.terminology is None:
        raise ValueError("the known_codes rule needs the library's terminology (rules/terminology.csv)")
    findings = []
    for name in rule.tables:
        frame = tables[name]
        keys = list(zip(frame["system"].astype(str), frame["code"].astype(str), strict=True))
        official = np.array([tables.terminology.get(key) for key in keys], dtype=object)
        display = frame["display"].astype(str).to_numpy(dtype=object)
        unknown = pd.isna(official)
        bad = unknown | (display != official)
        what = np.where(unknown, "code outside the terminology", "display differs from the terminology")[bad]
        detail = frame["code"].astype(str).to_numpy(dtype=object)[bad] + " " + display[bad]
        time = frame[TIME_OF.get(name, "time")]
        findings.append(Finding(len(frame), violations(frame["patient"][bad], time[bad], what, detail)))
    return combine(findings)
