"""A record told in plain sentences, the way a clinician summarises a history: "At 54 (May 2011), at a
follow-up visit, HbA1c was 7.1% and fasting glucose 140 mg/dL. Type 2 diabetes was diagnosed and she
started metformin 500 mg extended-release."

The record is cut into moments (an encounter; a stay, that is emergency, ward and intensive care
encounters that follow each other; a long-term medication stopped; a death), each told in one or two
sentences. `brief` tells the moments that change the story (a diagnosis that is not a minor illness, a
long-term medication started or stopped, a stay, a death) and sums up the rest (minor illnesses, follow-up
visits with the range of their results, vaccines); `full` tells every moment but routine check-ups."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import pandas as pd

from simulator.teaching.patient import ACUTE_CLASSES, LONG_COURSE_DAYS, PatientRecord
from simulator.teaching.terms import Term, number, quantity, row_term, with_unit

Detail = Literal["brief", "full"]
DETAILS: tuple[Detail, ...] = ("brief", "full")
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"
RULES_MODULES = ("wellness", "vital_signs", "immunizations", "influenza_vaccination")  # routine care, no story
ADULT_YEARS = 18
MAX_REPEATS = 3  # a moment's readings of one code are all told up to this many ('281, then 2338 ng/L')
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PLACES = {"emergency": "the emergency department", "inpatient": "hospital", "icu": "intensive care"}


# --- words -------------------------------------------------------------------------------------------------


def listing(items: Iterable[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return items[0] if items else ""
    return ", ".join(items[:-1]) + " and " + items[-1]


def count_words(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def times(n: int) -> str:
    return "once" if n == 1 else "twice" if n == 2 else f"{count_words(n)} times"


def capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def month(t: pd.Timestamp) -> str:
    return t.strftime("%B %Y")


def day(t: pd.Timestamp) -> str:
    return f"{t.day} {t.strftime('%B %Y')}"


def age_words(years: float) -> str:
    """'52', '7 months', 'a few days old', 'birth'."""
    if years >= 2:
        return str(int(years))
    months = int(years * 12)
    if months >= 1:
        return f"{months} month{'s' if months > 1 else ''}"
    return "a few days old" if years * 365.25 >= 2 else "birth"


def duration(delta: pd.Timedelta) -> str:
    """'5 hours', '3 days', '2 weeks', '4 months', '4.2 years'."""
    hours = delta.total_seconds() / 3600
    if hours < 48:
        n = max(1, round(hours))
        return f"{n} hour{'s' if n != 1 else ''}"
    days = hours / 24
    if days < 21:
        return f"{round(days)} days"
    if days < 120:
        return f"{round(days / 7)} weeks"
    if days < 730:
        return f"{round(days / 30.44)} months"
    return f"{days / 365.25:.1f} years"


def most_specific(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows whose term does not begin another row's term: 'chronic kidney disease' gives way to
    'chronic kidney disease stage 3'."""
    texts = [row_term(row).text for _, row in frame.iterrows()]
    keep = [not any(other.startswith(text + " ") for other in texts) for text in texts]
    return frame[pd.Series(keep, index=frame.index, dtype=bool)]


def terms_of(frame: pd.DataFrame) -> list[Term]:
    """The terms of a table's rows, each code once, in order, the most specific ones (`most_specific`)."""
    seen: dict[str, Term] = {}
    for _, row in most_specific(frame).iterrows():
        seen.setdefault(str(row["code"]), row_term(row))
    return list(seen.values())


def phrases(frame: pd.DataFrame) -> str:
    return listing(t.phrase for t in terms_of(frame))


def labels(frame: pd.DataFrame) -> str:
    return listing(t.text for t in terms_of(frame))


class Reading(NamedTuple):
    """A result as said: 'HbA1c' '7.1%' (blood pressure: under the systolic code)."""

    label: str
    value: str
    code: str
    unit: str


def results(observations: pd.DataFrame) -> list[Reading]:
    """The readings by code, in order: each code's values ('281, then 2338 ng/L'; only the first of more
    than MAX_REPEATS), systolic and diastolic pressure read together."""
    out = []
    for code, rows in observations.groupby("code", sort=False, observed=True):
        code = str(code)
        if code == DIASTOLIC:
            continue
        if code == SYSTOLIC:
            diastolic = observations[observations["code"] == DIASTOLIC].set_index("time")["value"]
            values = [
                f"{number(v)}/{number(diastolic[t])}" if t in diastolic.index else number(v)
                for t, v in zip(rows["time"], rows["value"], strict=True)
            ]
            label, unit = ("blood pressure", "mm[Hg]") if len(diastolic) else (row_term(rows.iloc[0]).text, "mm[Hg]")
        else:
            values = [number(v) for v in rows["value"]]
            label, unit = row_term(rows.iloc[0]).text, rows["unit"].iloc[0]
        shown = values[:1] if len(values) > MAX_REPEATS else values
        out.append(Reading(label, with_unit(", then ".join(shown), unit), code, str(unit)))
    return out


def results_clause(readings: list[Reading], *, verb: bool) -> str:
    """'HbA1c was 7.1% and fasting glucose 140 mg/dL' (verb) or 'HbA1c 7.1%, fasting glucose 140 mg/dL'."""
    if not readings:
        return ""
    if not verb:
        return ", ".join(f"{r.label} {r.value}" for r in readings)
    first, rest = readings[0], readings[1:]
    return listing([f"{first.label} was {first.value}", *(f"{r.label} {r.value}" for r in rest)])


def procedures_clause(procedures: pd.DataFrame, observations: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """'spirometry (FEV1/FVC 53%, FEV1 2.22 L)': each procedure with the exam readings its module state took
    when it is that state's only procedure; returns the readings left to tell."""
    said = []
    left = observations
    for _, row in procedures.drop_duplicates("code").iterrows():
        own_state = procedures["state"] == row["state"]
        exam = (
            left[(left["state"] == row["state"]) & (left["category"] == "exam")]
            if own_state.sum() == 1
            else left.iloc[0:0]
        )
        readings = results_clause(results(exam), verb=False)
        said.append(row_term(row).phrase + (f" ({readings})" if readings else ""))
        left = left.drop(exam.index)
    return listing(said), left


# --- moments -----------------------------------------------------------------------------------------------


@dataclass(eq=False)  # moments are compared by identity
class Moment:
    """What happened at one encounter or stay, or at one time outside encounters (a medication stopped,
    a death)."""

    start: pd.Timestamp
    end: pd.Timestamp | None
    encounters: pd.DataFrame
    diagnoses: pd.DataFrame
    resolutions: pd.DataFrame
    starts: pd.DataFrame
    stops: pd.DataFrame
    observations: pd.DataFrame
    procedures: pd.DataFrame
    symptoms: pd.DataFrame
    immunizations: pd.DataFrame
    death: pd.DataFrame
    is_stay: bool = field(init=False)

    def __post_init__(self) -> None:
        self.is_stay = bool(self.encounters["encounter_class"].isin(ACUTE_CLASSES).any())

    @property
    def modules(self) -> set[str]:
        return {str(m) for m in self.encounters["module"]}

    @property
    def ids(self) -> set[str]:
        return set(self.encounters["id"])

    def findings(self) -> pd.DataFrame:
        """The readings the story needs: those a module took (not routine care), and the routine readings
        a condition diagnosed here is seen in (BMI for obesity)."""
        shown = {code for t in terms_of(self.diagnoses) for code in t.shown_with}
        obs = self.observations
        return obs[~obs["module"].isin(RULES_MODULES) | obs["code"].isin(shown)]

    def changes_story(self, record: PatientRecord) -> bool:
        """Whether `brief` tells it: a first diagnosis of what is not a minor illness, a long-term medication
        started or stopped, a stay, a death."""
        if self.is_stay or len(self.stops) or len(self.death):
            return True
        if any(record.is_long_course(row) for _, row in self.starts.iterrows()):
            return True
        if self.diagnoses.empty:
            return False
        c = record.conditions
        known = set(c.loc[c["diagnosis_time"] < self.start, "code"].astype(str))
        new = self.diagnoses[~self.diagnoses["code"].astype(str).isin(known)]
        return bool((~record.minor(new)).any())

    def is_routine(self) -> bool:
        """Nothing but routine care (check-up measurements, vaccines): not a moment of the story."""
        return (
            self.diagnoses.empty
            and self.resolutions.empty
            and self.starts.empty
            and self.stops.empty
            and self.procedures.empty
            and self.death.empty
            and self.symptoms.empty
            and self.findings().empty
            and not self.is_stay
        )


def moments(record: PatientRecord) -> list[Moment]:
    """The record cut into moments, in time order: each encounter or stay with what happened in it, each
    long-term course stopped outside one, the death."""
    encounters = record.encounters
    key = dict(zip(encounters["id"], encounters["id"], strict=True))
    for stay in record.stays():
        key.update(dict.fromkeys(stay["id"], stay["id"].iloc[0]))
    symptoms = record.symptoms  # each in the encounter it was presented at (clinical_tables._symptoms)

    def by_key(frame: pd.DataFrame, column: str = "encounter_id") -> dict[str, pd.DataFrame]:
        return dict(tuple(frame.groupby(frame[column].map(key), sort=False))) if len(frame) else {}

    diagnosed = record.conditions[record.conditions["diagnosis_time"].notna()]
    parts = {
        "diagnoses": by_key(diagnosed, "diagnosis_encounter_id"),
        "starts": by_key(record.medications),
        "observations": by_key(record.observations),
        "procedures": by_key(record.procedures),
        "symptoms": by_key(symptoms),
        "immunizations": by_key(record.immunizations),
        "death": by_key(record.deaths),
    }
    empty = {
        "diagnoses": record.conditions.iloc[0:0],
        "resolutions": record.conditions.iloc[0:0],
        "starts": record.medications.iloc[0:0],
        "stops": record.medications.iloc[0:0],
        "observations": record.observations.iloc[0:0],
        "procedures": record.procedures.iloc[0:0],
        "symptoms": record.symptoms.iloc[0:0],
        "immunizations": record.immunizations.iloc[0:0],
        "death": record.deaths.iloc[0:0],
    }
    found = []
    for first, group in encounters.groupby(encounters["id"].map(key), sort=False):
        end = None if group["end_time"].isna().any() else group["end_time"].max()
        pieces = {name: parts[name].get(first, empty[name]) for name in parts}
        found.append(Moment(group["start_time"].min(), end, group, **{**empty, **pieces}))
    found += _ends(record, empty)
    nothing = encounters.iloc[0:0]
    deaths = record.deaths
    if len(deaths) and deaths["encounter_id"].isna().all():
        at = deaths["time"].iloc[0]
        found.append(Moment(at, at, nothing, **{**empty, "death": deaths}))
    return sorted(found, key=lambda m: m.start)


def _ends(record: PatientRecord, empty: dict[str, pd.DataFrame]) -> list[Moment]:
    """Moments of long-term courses stopped and of long-lasting conditions resolved (not at death; an
    acute event's end is no news), those within a day of each other together."""
    meds, c = record.medications, record.conditions
    death = record.death if record.death is not None else record.end + pd.Timedelta(days=1)
    stops = meds[meds["stop_time"].notna() & (meds["stop_time"] < death)]
    stops = stops[stops.apply(record.is_long_course, axis=1)] if len(stops) else stops
    resolved = c[c["resolution_time"].notna() & c["diagnosis_time"].notna() & (c["resolution_time"] < death)]
    resolved = resolved[(resolved["resolution_time"] - resolved["onset_time"]).dt.days >= LONG_COURSE_DAYS]
    resolved = resolved[[not row_term(row).is_status for _, row in resolved.iterrows()]] if len(resolved) else resolved
    times = sorted([*stops["stop_time"], *resolved["resolution_time"]])
    found: list[Moment] = []
    nothing = record.encounters.iloc[0:0]
    for at in times:
        if found and at - found[-1].start <= pd.Timedelta(days=1):
            continue
        window = (at, at + pd.Timedelta(days=1))
        these = {
            "stops": stops[stops["stop_time"].between(*window)],
            "resolutions": resolved[resolved["resolution_time"].between(*window)],
        }
        found.append(Moment(at, at, nothing, **{**empty, **these}))
    return found


# --- sentences ---------------------------------------------------------------------------------------------


@dataclass
class Teller:
    """Tells the moments of one record."""

    record: PatientRecord

    @property
    def he(self) -> str:
        return self.record.pronouns.subject

    @property
    def his(self) -> str:
        return self.record.pronouns.possessive

    def lead(self, moment: Moment, *, exact: bool = False) -> str:
        """'At 52 (March 2009), at a follow-up visit,' or 'On 4 May 2023 (age 67)': the start of a sentence."""
        age = age_words(self.record.age(moment.start))
        intro = f"On {day(moment.start)} (age {age})" if exact else f"At {age} ({month(moment.start)})"
        if moment.is_stay or moment.encounters.empty:
            return intro
        return f"{intro}, at {row_term(moment.encounters.iloc[0]).phrase},"

    def presentation(self, moment: Moment) -> str:
        """'he came to the emergency department with a cough, from his COPD', 'she presented with a cough'."""
        complaint = self.complaint(moment)
        if not moment.is_stay:
            return f"{self.he} presented with {complaint}" if complaint else ""
        first = moment.encounters.iloc[0]
        klass = str(first["encounter_class"])
        text = f"{self.he} {'came to' if klass == 'emergency' else 'was admitted to'} {PLACES[klass]}"
        diagnosed = set(moment.diagnoses["code"].astype(str))
        reason = first["reason_code"]
        because = not pd.isna(reason) and str(reason) not in diagnosed
        if complaint:
            text += f" with {complaint}"
        if because:
            text += f"{' from' if complaint else ' because of'} {self.his} {row_term(first, 'reason_').text}"
        return text

    def findings(self, moment: Moment) -> str:
        """What was seen: the presentation, the readings, the procedures (with the readings they gave)."""
        done, rest = procedures_clause(moment.procedures, moment.findings())
        readings = results(rest)
        presented = self.presentation(moment)
        if presented and readings:
            seen = f"{presented}: {results_clause(readings, verb=False)}"
        else:
            seen = presented or results_clause(readings, verb=True)
        return "; ".join(p for p in (seen, f"{self.he} had {done}" if done else "") if p)

    def diagnosis(self, moment: Moment) -> list[str]:
        """'type 2 diabetes was diagnosed', 'obesity was diagnosed again', 'he was recorded as a smoker'."""
        found = terms_of(moment.diagnoses)
        disorders = [t for t in found if not t.is_status]
        status = [t for t in found if t.is_status]
        clauses = []
        if disorders:
            c = self.record.conditions
            earlier = set(c.loc[c["diagnosis_time"] < moment.start, "code"].astype(str))
            again = set(moment.diagnoses["code"].astype(str)) <= earlier
            verb = "was" if len(disorders) == 1 else "were"
            clauses.append(f"{listing(t.text for t in disorders)} {verb} diagnosed{' again' if again else ''}")
        if status:
            clauses.append(f"{self.he} was recorded as {listing(t.phrase for t in status)}")
        return clauses

    def stay_course(self, moment: Moment) -> str:
        """'he was admitted for 8 days, 7 days of it in intensive care'."""
        encounters = moment.encounters
        admitted = encounters[encounters["encounter_class"].isin(("inpatient", "icu"))]
        if admitted.empty:
            return ""
        if moment.end is None:
            return f"{self.he} was still in hospital at the end of the record"
        stay = duration(moment.end - admitted["start_time"].min())
        from_emergency = encounters["encounter_class"].iloc[0] == "emergency"
        text = f"{self.he} was admitted for {stay}" if from_emergency else f"{self.he} stayed {stay}"
        icu = admitted[admitted["encounter_class"] == "icu"]
        if len(icu) and len(icu) < len(admitted):
            text += f", {duration((icu['end_time'] - icu['start_time']).sum())} of it in intensive care"
        return text

    def treatment(self, moment: Moment) -> list[str]:
        """'he started metformin', 'glipizide was added' (to a long-term medication of the same module),
        'he was treated with prednisone' (a short course)."""
        starts = moment.starts
        if starts.empty:
            return []
        is_long = starts.apply(self.record.is_long_course, axis=1) if len(starts) else starts["id"].isna()
        taken = self.record.medications
        before = taken[(taken["start_time"] < moment.start) & ~(taken["stop_time"] <= moment.start)]
        before = before[before.apply(self.record.is_long_course, axis=1)] if len(before) else before
        long_courses = starts[is_long]
        added = long_courses[long_courses["module"].isin(set(before["module"]))]
        new = long_courses.drop(added.index)
        short = starts[~is_long]
        clauses = [f"{self.he} started {phrases(new)}" if len(new) else ""]
        if len(added):
            clauses.append(f"{phrases(added)} {'was' if len(terms_of(added)) == 1 else 'were'} added")
        if len(short):
            clauses.append(f"{self.he} was treated with {phrases(short)}")
        return [c for c in clauses if c]

    def death_clause(self, death: pd.Series) -> str:
        if pd.isna(death["code"]) or row_term(death).is_unspecific:
            return f"{self.he} died"
        return f"{self.he} died of {row_term(death).text}"

    def actions(self, moment: Moment) -> str:
        """What was done: diagnoses, admission, treatment, stops, and how a stay ended."""
        clauses = [*self.diagnosis(moment), self.stay_course(moment), *self.treatment(moment)]
        if len(moment.resolutions):
            clauses.append(f"{self.his} {labels(moment.resolutions)} resolved")
        if len(moment.stops):
            verb = "was" if len(terms_of(moment.stops)) == 1 else "were"
            clauses.append(f"{self.his} {labels(moment.stops)} {verb} stopped")
        if len(moment.death):
            clauses.append(self.death_clause(moment.death.iloc[0]))
        elif moment.end is not None and moment.is_stay:
            clauses.append(f"{self.he} went home")
        return listing(clauses)

    def tell(self, moment: Moment, *, exact: bool = False) -> str:
        """The moment in one or two sentences ('' when nothing in it is worth a sentence)."""
        found, done = self.findings(moment), self.actions(moment)
        if not found and not done:
            return ""
        lead = self.lead(moment, exact=exact)
        if found and done:
            return f"{lead} {found}. {capital(done)}."
        return f"{lead} {found or done}."

    def complaint(self, moment: Moment) -> str:
        """'wheezing, a cough and shortness of breath' (the symptoms of the moment), or ''."""
        return phrases(moment.symptoms)


# --- summaries ---------------------------------------------------------------------------------------------


def minor_illnesses(record: PatientRecord, episodes: pd.DataFrame, when: str) -> str:
    """'As a child he was seen for otitis media (three times) and a sore throat (once).'"""
    minor = episodes[record.minor(episodes)]
    if minor.empty:
        return ""
    counts = minor.groupby("code", sort=False, observed=True).size().sort_values(ascending=False, kind="stable")
    first = minor.drop_duplicates("code")
    first = first.set_index(first["code"].astype(str))
    items = [f"{row_term(first.loc[str(code)]).text} ({times(int(n))})" for code, n in counts.items()]
    return f"{when} {record.pronouns.subject} was seen for {listing(items)}."


def follow_up(record: PatientRecord, visits: list[Moment], module: str, since: str) -> str:
    """'From 2016 she had 23 visits for type 2 diabetes; her HbA1c ranged from 6.6 to 8.2% (the last 7.4%,
    March 2023)', over the visits of `module` among `visits`; '' for fewer than two, or a module whose
    conditions were all minor."""
    episodes = record.conditions[(record.conditions["module"] == module) & record.conditions["diagnosis_time"].notna()]
    major = episodes[~record.minor(episodes)]
    own = [m for m in visits if module in m.modules and not m.is_stay]
    if major.empty or len(own) < 2:
        return ""
    encounters = pd.concat([m.encounters for m in own])
    reasons = encounters["reason_code"].dropna()
    if len(reasons):
        about = row_term(encounters[encounters["reason_code"] == reasons.mode().iloc[0]].iloc[0], "reason_").text
    else:
        about = terms_of(major)[0].text
    labs = pd.concat([m.observations for m in own])
    labs = labs[(labs["module"] == module) & (labs["category"] != "vital-signs")]
    ranges = []
    for _, readings in labs.groupby("code", sort=False, observed=True):
        if len(readings) >= 2:
            last = readings.iloc[-1]
            low, high = number(readings["value"].min()), quantity(readings["value"].max(), last["unit"])
            latest = f"the last {quantity(last['value'], last['unit'])}, {month(last['time'])}"
            if low == number(readings["value"].max()):
                ranges.append(f"{row_term(last).text} {'' if ranges else 'was '}{high} each time")
            else:
                ranges.append(f"{row_term(last).text} {'' if ranges else 'ranged '}from {low} to {high} ({latest})")
    text = f"{since} {record.pronouns.subject} had {count_words(len(own))} visits for {about}"
    if ranges:
        text += f"; {record.pronouns.possessive} " + ", ".join(ranges)
    return text + "."


def vaccines(record: PatientRecord, start: pd.Timestamp, end: pd.Timestamp) -> tuple[str, str]:
    """A sentence on childhood immunizations and one on adult vaccines, given within [start, end)."""
    given = record.immunizations[(record.immunizations["time"] >= start) & (record.immunizations["time"] < end)]
    adult_from = record.birth + pd.Timedelta(days=ADULT_YEARS * 365.25)
    child, adult = given[given["time"] < adult_from], given[given["time"] >= adult_from]
    he = record.pronouns.subject
    childhood = f"{capital(he)} had the routine childhood immunizations ({len(child)} doses)." if len(child) else ""
    items = []
    for _, doses in adult.groupby("code", sort=False, observed=True):
        name = row_term(doses.iloc[0]).text
        years = doses["time"].dt.year
        if len(doses) > 3:
            items.append(f"{name} {count_words(len(doses))} times ({years.min()} to {years.max()})")
        else:
            items.append(f"{name} ({', '.join(str(y) for y in years)})")
    return childhood, f"As an adult {he} had {listing(items)}." if items else ""
