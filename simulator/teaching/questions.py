"""Teaching questions a case's record answers, with answers taken from the ground truth of the run: the
diagnosis and the results it was made on, the first treatment and how the long-term treatment was stepped
up, how long the disease was there before anyone noticed (the true onset is in the conditions table, not in
the FHIR record), what else was present but undiagnosed at the time, and how a stay ended.

Each answer carries its `facts` (row ids, codes, times, values) so that a test, or a marking script, can
check it against the tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from simulator.teaching.narrative import (
    PLACES,
    RULES_MODULES,
    Moment,
    Teller,
    age_words,
    capital,
    day,
    duration,
    listing,
    month,
    most_specific,
    procedures_clause,
    results,
    terms_of,
)
from simulator.teaching.patient import PatientRecord
from simulator.teaching.terms import quantity, row_term

SAME_TIME = pd.Timedelta(minutes=1)  # a treatment this close to the diagnosis was started at the diagnosis
ONE_STEP = pd.Timedelta(days=1)  # medications started within a day of each other are one step of treatment


@dataclass
class Question:
    kind: str
    question: str
    answer: str
    facts: dict = field(default_factory=dict)


def iso(t: pd.Timestamp | None) -> str | None:
    return None if t is None or pd.isna(t) else t.isoformat()


def confirming(record: PatientRecord, episode: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The readings and procedures the diagnosis was made on: those of the diagnosis encounter, up to the
    diagnosis, that the condition's module took (that any module but routine care took, when it took none;
    with the routine readings the condition is seen in, such as BMI for obesity)."""
    encounter, at = episode["diagnosis_encounter_id"], episode["diagnosis_time"]
    obs = record.observations
    obs = obs[(obs["encounter_id"] == encounter) & (obs["time"] <= at)]
    procedures = record.procedures
    procedures = procedures[(procedures["encounter_id"] == encounter) & (procedures["time"] <= at)]
    shown = obs["code"].isin(row_term(episode).shown_with)
    own = obs[(obs["module"] == episode["module"]) | shown]
    if own.empty:
        own = obs[~obs["module"].isin(RULES_MODULES)]
    return own, procedures[procedures["module"] == episode["module"]]


def evidence(record: PatientRecord, found: pd.DataFrame, done: pd.DataFrame) -> str:
    """'HbA1c 7.1% (upper limit of normal 5.7%) and spirometry (FEV1/FVC 53%)'."""
    said, rest = procedures_clause(done, found)
    readings = []
    for reading in results(rest):
        limit = record.upper_limits.get(reading.code)
        normal = f" (upper limit of normal {quantity(limit, reading.unit)})" if limit is not None else ""
        readings.append(f"{reading.label} {reading.value}{normal}")
    return listing([", ".join(readings), said])


def diagnosis_question(record: PatientRecord, episode: pd.Series, moments: list[Moment]) -> Question:
    found, done = confirming(record, episode)
    where = next(m for m in moments if episode["diagnosis_encounter_id"] in m.ids)
    on = evidence(record, found, done)
    complaint = Teller(record).complaint(where)
    if on:
        basis = f"It was made on {on}."
    elif complaint:
        basis = f"It was made on the symptoms ({complaint}); no result of its own was recorded."
    else:
        basis = "No result or symptom of its own was recorded at the diagnosis."
    encounter = where.encounters[where.encounters["id"] == episode["diagnosis_encounter_id"]].iloc[0]
    klass = str(encounter["encounter_class"])
    place = f"in {PLACES[klass]}" if klass in PLACES else f"at {row_term(encounter).phrase}"
    at = episode["diagnosis_time"]
    when = f"{day(at)} (age {age_words(record.age(at))}) {place}"
    answer = f"{capital(row_term(episode).text)}, diagnosed on {when}. {basis}"
    facts = {
        "condition_id": episode["id"],
        "code": str(episode["code"]),
        "diagnosis_time": iso(episode["diagnosis_time"]),
        "diagnosis_encounter_id": episode["diagnosis_encounter_id"],
        "results": [
            {"id": r["id"], "code": str(r["code"]), "value": float(r["value"]), "time": iso(r["time"])}
            for _, r in found.iterrows()
        ],
        "procedures": [{"id": r["id"], "code": str(r["code"]), "time": iso(r["time"])} for _, r in done.iterrows()],
    }
    return Question("diagnosis", "What was the diagnosis, and on which results was it made?", answer, facts)


def treatments(record: PatientRecord, episode: pd.Series) -> pd.DataFrame:
    """The medication courses started for the episode from its diagnosis to its end: for its Condition,
    or by its module."""
    m = record.medications
    end = episode["resolution_time"]
    mine = (m["reason_condition_id"] == episode["id"]) | (m["module"] == episode["module"])
    after = m["start_time"] >= episode["diagnosis_time"] - SAME_TIME
    before_end = True if pd.isna(end) else m["start_time"] <= end
    return m[mine & after & before_end]


def steps(courses: pd.DataFrame) -> list[pd.DataFrame]:
    """Courses in steps: each step the courses started within ONE_STEP of its first."""
    found: list[pd.DataFrame] = []
    for start in courses["start_time"].sort_values().unique():
        if not found or start - found[-1]["start_time"].min() > ONE_STEP:
            found.append(courses[(courses["start_time"] >= start) & (courses["start_time"] - start <= ONE_STEP)])
    return found


def medication_facts(courses: pd.DataFrame) -> list[dict]:
    return [{"id": r["id"], "code": str(r["code"]), "time": iso(r["start_time"])} for _, r in courses.iterrows()]


def treatment_questions(record: PatientRecord, episode: pd.Series) -> list[Question]:
    courses = treatments(record, episode)
    name = row_term(episode).text
    asked = f"What was the first treatment for {name}?"
    if courses.empty:
        return [
            Question(
                "first_treatment", asked, "None: no medication for it was started in the record.", {"medications": []}
            )
        ]
    first = steps(courses)[0]
    gap = first["start_time"].min() - episode["diagnosis_time"]
    when = "at the diagnosis" if gap <= SAME_TIME else f"{duration(gap)} after the diagnosis"
    he = capital(record.pronouns.subject)
    answer = f"{he} started {listing(t.phrase for t in terms_of(first))} on {day(first['start_time'].min())}, {when}."
    found = [Question("first_treatment", asked, answer, {"medications": medication_facts(first)})]
    long_term = courses[courses.apply(record.is_long_course, axis=1)]
    stepped = steps(long_term) if len(long_term) else []
    if len(stepped) >= 2:
        said = [f"{listing(t.text for t in terms_of(step))} ({month(step['start_time'].min())})" for step in stepped]
        facts = {"steps": [medication_facts(step) for step in stepped]}
        question = f"How was the long-term treatment of {name} stepped up?"
        found.append(Question("treatment_steps", question, capital(", then ".join(said)) + ".", facts))
    return found


def delay_question(record: PatientRecord, episode: pd.Series) -> Question:
    onset, diagnosed = episode["onset_time"], episode["diagnosis_time"]
    gap = diagnosed - onset
    how_long = capital(duration(gap)) if gap > SAME_TIME else "None"
    answer = (
        f"{how_long}: the true onset (ground truth, not in the record) was on {day(onset)}, "
        f"the diagnosis on {day(diagnosed)}."
    )
    facts = {
        "condition_id": episode["id"],
        "onset_time": iso(onset),
        "diagnosis_time": iso(diagnosed),
        "years": round(gap.total_seconds() / 86_400 / 365.25, 2),
    }
    question = f"How long had {row_term(episode).text} been present before it was diagnosed?"
    return Question("diagnostic_delay", question, answer, facts)


def missed_question(record: PatientRecord, at: pd.Timestamp) -> Question:
    """The conditions present at `at` (true onset before it, not resolved) that were not diagnosed by then."""
    c = record.conditions
    present = c[(c["onset_time"] <= at) & ~(c["resolution_time"] <= at)]
    missed = most_specific(present[~(present["diagnosis_time"] <= at)])
    items = []
    for _, row in missed.iterrows():
        later = row["diagnosis_time"]
        told = "never diagnosed" if pd.isna(later) else f"diagnosed in {month(later)}"
        items.append(f"{row_term(row).text} (present since {month(row['onset_time'])}, {told})")
    answer = capital(listing(items)) + "." if items else "None: every condition present then had been diagnosed."
    conditions = [
        {
            "id": r["id"],
            "code": str(r["code"]),
            "onset_time": iso(r["onset_time"]),
            "diagnosis_time": iso(r["diagnosis_time"]),
        }
        for _, r in missed.iterrows()
    ]
    question = f"Which conditions did {record.pronouns.subject} have then that had not been diagnosed yet?"
    return Question("undiagnosed", question, answer, {"at": iso(at), "conditions": conditions})


def outcome_question(record: PatientRecord, moment: Moment) -> Question | None:
    """How a stay ended (None for a visit)."""
    if not moment.is_stay:
        return None
    he = capital(record.pronouns.subject)
    died = len(moment.death) > 0
    if died:
        death = moment.death.iloc[0]
        after = duration(death["time"] - moment.start)
        answer = f"{capital(Teller(record).death_clause(death))} on {day(death['time'])}, {after} after arriving."
    elif moment.end is None:
        answer = f"{he} was still in hospital at the end of the record."
    else:
        answer = f"{he} went home on {day(moment.end)}, {duration(moment.end - moment.start)} after arriving."
    facts = {"encounter_ids": list(moment.encounters["id"]), "end_time": iso(moment.end), "died": died}
    return Question("outcome", "How did the stay end?", answer, facts)


def questions(record: PatientRecord, episode: pd.Series, index: Moment, moments: list[Moment]) -> list[Question]:
    """The questions of a case whose index condition is `episode` and index event `index`."""
    found = [
        diagnosis_question(record, episode, moments),
        *treatment_questions(record, episode),
        delay_question(record, episode),
        missed_question(record, index.start),
    ]
    outcome = outcome_question(record, index)
    return found + ([outcome] if outcome else [])
