"""Case files for teaching: `cases/<patient id>.html` and `.md` for patients of a written run who had a
condition diagnosed.

A case is built around the patient's index condition (its most recent diagnosed episode) and index event:
the most serious stay for it (intensive care, then a ward, then the emergency department; the latest of
equals), or else the visit where it was diagnosed. It holds a one-screen summary at the index event, the
history before it told in sentences (`narrative`), the course of the index event, what came after, charts of
the readings that matter (`plots`) and questions answered from the ground truth (`questions`); all the
answers, with their facts, also go to `cases/answers.json`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from simulator.files import write_all
from simulator.model.library import Library
from simulator.model.parsing import suggest
from simulator.model.schema import DiseaseModule
from simulator.teaching import plots
from simulator.teaching.narrative import (
    ADULT_YEARS,
    DETAILS,
    Detail,
    Moment,
    Teller,
    capital,
    count_words,
    day,
    follow_up,
    labels,
    listing,
    minor_illnesses,
    moments,
    month,
    number,
    results,
    terms_of,
    vaccines,
)
from simulator.teaching.patient import CLASS_RANK, PatientRecord, patient_records
from simulator.teaching.questions import Question, questions
from simulator.teaching.record import RunRecord
from simulator.teaching.terms import quantity, row_term

# Without --condition, cases are drawn in turn from these conditions (those the run's library declares):
# acute and chronic, medical and respiratory, the ones a course on common disease starts with.
DEFAULT_CONDITIONS = (
    "myocardial_infarction",
    "copd",
    "t2d",
    "heart_failure",
    "stroke",
    "pneumonia",
    "asthma",
    "atrial_fibrillation",
    "ckd",
    "hypertension",
    "t1d",
)
SENTENCES_PER_PARAGRAPH = 4
AFTERWARDS_MOMENTS = 6  # moments told after the index event; the rest are counted
KEY_RESULTS = 8  # at most this many key results in the summary, taken within KEY_RESULTS_YEARS of the index event
KEY_RESULTS_YEARS = pd.Timedelta(days=5 * 365.25)


@dataclass(frozen=True)
class CaseOptions:
    """`history_years`: how far back before the index event the history goes (None: from birth);
    `detail`: `brief` (the moments that change the story, the rest summed up) or `full` (every moment)."""

    history_years: float | None = None
    detail: Detail = "brief"

    def __post_init__(self) -> None:
        if self.detail not in DETAILS:
            raise ValueError(f"detail must be one of {', '.join(DETAILS)} (got {self.detail!r})")
        if self.history_years is not None and self.history_years <= 0:
            raise ValueError(f"history years must be positive (got {self.history_years})")


@dataclass(frozen=True)
class Target:
    """A condition cases are drawn for: its name in its module, and its code."""

    name: str
    module: str
    code: str


def main_condition(module: DiseaseModule) -> str:
    """The condition a module is about: the one its encounters are most often for, else the one named
    as the module, else the first it declares."""
    reasons = Counter(
        state.encounter.reason
        for state in module.states.values()
        if state.encounter is not None and state.encounter.reason in module.conditions
    )
    if reasons:
        best = max(reasons.values())
        return next(name for name in module.conditions if reasons.get(name) == best)
    return module.name if module.name in module.conditions else next(iter(module.conditions))


def targets(library: Library, names: Sequence[str] | None) -> list[Target]:
    """The conditions asked for, by condition name or module name (its main condition); ValueError for
    a name that is neither."""
    declared = {name: (m.name, c.code.code) for m in library.modules for name, c in m.conditions.items()}
    modules = {m.name: m for m in library.modules if m.conditions}
    if names is None:
        return [Target(n, *declared[n]) for n in DEFAULT_CONDITIONS if n in declared]
    found = []
    for name in names:
        if name in declared:
            found.append(Target(name, *declared[name]))
        elif name in modules:
            main = main_condition(modules[name])
            found.append(Target(main, *declared[main]))
        else:
            raise ValueError(
                f"no condition or module named '{name}'{suggest(name, {*declared, *modules})}; "
                f"conditions: {', '.join(sorted(declared))}"
            )
    return found


def select(conditions: pd.DataFrame, wanted: list[Target], n: int, seed: int) -> list[tuple[Target, pd.Series]]:
    """Up to `n` (condition, episode) pairs, one per patient, drawn at random (`seed`) from the patients
    with a diagnosed episode of each condition in turn; the episode is the patient's most recent diagnosed one
    whose diagnosing encounter the record holds (a record written with `--history` carries episodes diagnosed
    before its window without it)."""
    rng = np.random.default_rng(seed)
    pools = []
    for target in wanted:
        diagnosed = conditions["diagnosis_time"].notna() & conditions["diagnosis_encounter_id"].notna()
        episodes = conditions[(conditions["code"].astype(str) == target.code) & diagnosed]
        latest = episodes.sort_values("diagnosis_time", kind="stable").drop_duplicates("patient", keep="last")
        latest = latest.sort_values("patient", kind="stable")
        pools.append([latest.iloc[i] for i in rng.permutation(len(latest))])
    chosen: list[tuple[Target, pd.Series]] = []
    taken: set[int] = set()
    while len(chosen) < n and any(pools):
        for target, pool in zip(wanted, pools, strict=True):
            while pool and int(pool[0]["patient"]) in taken:
                pool.pop(0)
            if pool and len(chosen) < n:
                episode = pool.pop(0)
                taken.add(int(episode["patient"]))
                chosen.append((target, episode))
    return chosen


@dataclass
class Figure:
    caption: str
    svg: str
    file: str = ""


@dataclass
class Case:
    """Everything a case file shows."""

    patient_id: str
    patient_index: int
    title: str
    condition: str
    summary: list[tuple[str, str]]
    history: list[str]
    course: list[str]
    afterwards: list[str]
    questions: list[Question]
    figures: list[Figure] = field(default_factory=list)


def index_event(record: PatientRecord, found: list[Moment], episode: pd.Series) -> Moment:
    """The most serious stay of the episode's module from its diagnosis to its end (latest of equals), or
    the visit where it was diagnosed."""
    until = episode["resolution_time"] if not pd.isna(episode["resolution_time"]) else record.end
    since = episode["diagnosis_time"] - pd.Timedelta(days=1)
    stays = [m for m in found if m.is_stay and episode["module"] in m.modules and since <= m.start <= until]
    if stays:
        return max(stays, key=lambda m: (max(CLASS_RANK[str(c)] for c in m.encounters["encounter_class"]), m.start))
    return next(m for m in found if episode["diagnosis_encounter_id"] in m.ids)


def _person(record: PatientRecord, at: pd.Timestamp) -> str:
    age = record.age(at)
    adult = age >= ADULT_YEARS
    noun = {"M": "man" if adult else "boy", "F": "woman" if adult else "girl"}[record.sex]
    return f"{int(age)}-year-old {noun}" if age >= 2 else f"{int(age * 12)}-month-old {noun}"


def a_or_an(words: str) -> str:
    """The article of words that start with a number: 'an' for 8, 11, 18 and 80 to 89 ('an 80-year-old')."""
    number = words.split("-")[0]
    return "an" if number.startswith("8") or number in ("11", "18") else "a"


def summary(record: PatientRecord, index: Moment, episode: pd.Series) -> list[tuple[str, str]]:
    """The one-screen summary at the index event."""
    at = index.start
    who = f"{record.name}, {_person(record, at)} (born {day(record.birth)}); {record.origin}"
    first = index.encounters.iloc[0]
    c = record.conditions
    known_reason = c.loc[c["id"] == first["reason_condition_id"], "diagnosis_time"] < at  # not the new diagnosis
    reason = row_term(first, "reason_").text if known_reason.any() else ""
    if len(index.symptoms):
        complaint = capital(labels(index.symptoms)) + (f" ({reason})" if reason else "")
    else:
        complaint = capital(reason) if reason else "Symptoms not recorded"
    known, taken = record.active_at(at)
    known = known[known["id"] != episode["id"]]
    named = [t.text for t in terms_of(known)]  # a stage of a disease stands for the disease
    problems = [
        f"{row_term(r).text} (since {r['diagnosis_time'].year})"
        for _, r in known.iterrows()
        if row_term(r).text in named
    ]
    medications = [f"{row_term(r).text} (since {month(r['start_time'])})" for _, r in taken.iterrows()]
    return [
        ("Patient", who),
        ("Presenting problem", f"{complaint}, at {row_term(first).phrase}, {day(at)}"),
        ("Active problems", listing(problems) or "none recorded"),
        ("Medications", listing(medications) or "none"),
        ("Key results", ", ".join(key_results(record, index, episode["module"])) or "none in the 5 years before"),
    ]


def key_results(record: PatientRecord, index: Moment, module: str) -> list[str]:
    """Each lab's latest reading up to the end of the first encounter of the index event (the index module's
    labs first), then blood pressure and BMI: 'HbA1c 7.9% (high, March 2023)'."""
    first_end = index.encounters["end_time"].iloc[0]
    cutoff = index.start if pd.isna(first_end) else first_end
    obs = record.observations
    obs = obs[(obs["time"] <= cutoff) & (obs["time"] >= index.start - KEY_RESULTS_YEARS)]
    labs = obs[obs["category"] != "vital-signs"]
    labs = pd.concat([labs[labs["module"] == module], labs[labs["module"] != module]])
    vitals = obs[obs["code"].isin(plots.FALLBACK_CODES + (plots.DIASTOLIC,))]
    items = []
    for frame in (labs, vitals):
        latest = frame.sort_values("time", kind="stable").groupby("code", observed=True, sort=False).tail(1)
        latest = latest.set_index("code").loc[list(dict.fromkeys(frame["code"]))].reset_index() if len(frame) else frame
        for reading in results(latest):
            row = latest[latest["code"] == reading.code].iloc[0]
            limit = record.upper_limits.get(reading.code)
            flag = "high, " if limit is not None and float(row["value"]) >= limit else ""
            items.append(f"{reading.label} {reading.value} ({flag}{month(row['time'])})")
    return items[:KEY_RESULTS]


def paragraphs(sentences: list[str]) -> list[str]:
    sentences = [s for s in sentences if s]
    return [
        " ".join(sentences[i : i + SENTENCES_PER_PARAGRAPH]) for i in range(0, len(sentences), SENTENCES_PER_PARAGRAPH)
    ]


def history(record: PatientRecord, found: list[Moment], index: Moment, options: CaseOptions) -> list[str]:
    """The history before the index event, from birth or `history_years` before it."""
    at = index.start
    start = record.birth
    if options.history_years is not None:
        start = max(start, at - pd.Timedelta(days=options.history_years * 365.25))
    opening = f"{record.name} was born in {record.birth.year}."
    if start > record.birth:
        known, _ = record.active_at(start)
        found_terms = terms_of(known)
        had = listing(t.text for t in found_terms if not t.is_status)
        was = listing(t.phrase for t in found_terms if t.is_status)
        state = listing([f"had {had}" if had else "", f"was {was}" if was else ""])
        when = f"The history starts in {month(start)}, at {int(record.age(start))}"
        opening = f"{when}, when {record.pronouns.subject} {state}." if state else f"{when}."
    teller = Teller(record)
    adult_from = record.birth + pd.Timedelta(days=ADULT_YEARS * 365.25)
    before = [m for m in found if start <= m.start < at]
    told = [m for m in before if (m.changes_story(record) if options.detail == "brief" else not m.is_routine())]
    childhood = [teller.tell(m) for m in told if m.start < adult_from]
    adulthood = [teller.tell(m) for m in told if m.start >= adult_from]
    child_vaccines, adult_vaccines = vaccines(record, start, at)
    if options.detail == "full":
        return [*paragraphs([opening, child_vaccines, *childhood]), *paragraphs([*adulthood, adult_vaccines])]
    c = record.conditions
    episodes = c[(c["diagnosis_time"] >= start) & (c["diagnosis_time"] < at)]
    visits = [m for m in before if m not in told]
    follow_ups = [
        follow_up(
            record, visits, module, f"From {episodes.loc[episodes['module'] == module, 'diagnosis_time'].min().year}"
        )
        for module in dict.fromkeys(str(m) for m in episodes["module"])
    ]
    return [
        *paragraphs(
            [
                opening,
                child_vaccines,
                minor_illnesses(record, episodes[episodes["diagnosis_time"] < adult_from], "As a child"),
            ]
        ),
        *paragraphs(childhood),
        *paragraphs(adulthood),
        *paragraphs(
            [minor_illnesses(record, episodes[episodes["diagnosis_time"] >= adult_from], "As an adult"), adult_vaccines]
        ),
        *paragraphs(follow_ups),
    ]


def course(record: PatientRecord, index: Moment) -> list[str]:
    """The index event: presentation, results, what was done, how it ended; for a stay, the range of the
    readings taken more than twice."""
    sentences = [Teller(record).tell(index, exact=True)]
    if index.is_stay:
        ranges = []
        for _, readings in index.observations.groupby("code", observed=True, sort=False):
            if len(readings) >= 3:
                row = readings.iloc[0]
                label = row_term(row).text
                low, high = number(readings["value"].min()), quantity(readings["value"].max(), row["unit"])
                ranges.append(f"{label} from {low} to {high}")
        if ranges:
            first, *rest = ranges
            sentences.append(f"During the stay {listing([first.replace(' from ', ' ranged from ', 1), *rest])}.")
    return paragraphs(sentences)


def afterwards(
    record: PatientRecord, found: list[Moment], index: Moment, episode: pd.Series, options: CaseOptions
) -> list[str]:
    """What came after the index event, to the end of the record (the first AFTERWARDS_MOMENTS moments
    told, the rest counted)."""
    teller = Teller(record)
    after = index.end if index.end is not None else index.start
    later = [m for m in found if m.start > after]
    told = [m for m in later if (m.changes_story(record) if options.detail == "brief" else not m.is_routine())]
    sentences = []
    if options.detail == "brief":
        visits = [m for m in later if m not in told]
        sentences.append(follow_up(record, visits, str(episode["module"]), "Afterwards"))
    sentences += [teller.tell(m) for m in told[:AFTERWARDS_MOMENTS]]
    if len(told) > AFTERWARDS_MOMENTS:
        rest = told[AFTERWARDS_MOMENTS:]
        more = f"{count_words(len(rest))} more like these"
        sentences.append(f"The record holds {more}, the last in {month(rest[-1].start)}.")
    he = record.pronouns.subject
    if record.death is None:
        sentences.append(f"At the end of the record ({day(record.end)}) {he} was {int(record.age(record.end))}.")
    elif len(record.deaths) and not any(len(m.death) for m in [index, *told[:AFTERWARDS_MOMENTS]]):
        death = record.deaths.iloc[0]
        sentences.append(
            f"{capital(teller.death_clause(death))} at {int(record.age(death['time']))} ({month(death['time'])})."
        )
    return paragraphs(sentences)


def build_case(record: PatientRecord, episode: pd.Series, options: CaseOptions = CaseOptions()) -> Case:
    """The case of `record` about `episode` (a row of its conditions)."""
    found = moments(record)
    index = index_event(record, found, episode)
    name = row_term(episode).text
    article = row_term(episode).phrase
    person = _person(record, index.start)
    case = Case(
        patient_id=record.id,
        patient_index=record.index,
        title=f"{capital(a_or_an(person))} {person} with {article}",
        condition=name,
        summary=summary(record, index, episode),
        history=history(record, found, index, options),
        course=course(record, index),
        afterwards=afterwards(record, found, index, episode, options),
        questions=questions(record, episode, index, found),
    )
    start = record.birth
    if options.history_years is not None:
        start = max(start, index.start - pd.Timedelta(days=options.history_years * 365.25))
    marks = [(episode["diagnosis_time"], "diagnosis"), (index.start, "index event")]
    if index.start == episode["diagnosis_time"]:
        marks = marks[:1]
    trend = plots.trends(record, str(episode["module"]), start, record.end, marks)
    if trend:
        case.figures.append(Figure("The readings that matter, over the years (dashed: diagnosis, index event)", trend))
    if index.is_stay and index.end is not None:
        stay = plots.stay_chart(record, str(episode["module"]), index.start, index.end)
        if stay:
            case.figures.append(Figure("During the stay", stay))
    return case


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("simulator.teaching", "templates"),
        autoescape=select_autoescape(["html.j2"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def write_cases(
    run_dir: str | Path,
    out: str | Path,
    patients: int = 20,
    conditions: Sequence[str] | None = None,
    seed: int = 0,
    options: CaseOptions = CaseOptions(),
) -> list[Path]:
    """Write up to `patients` case files (HTML, Markdown and their charts as SVG) for patients of the run in
    `run_dir` with the `conditions` (names of conditions or modules; default DEFAULT_CONDITIONS, in turn),
    drawn with `seed`; then index.html, index.md and answers.json. Returns the files written."""
    run = RunRecord.open(run_dir)
    wanted = targets(run.library, conditions)
    table = run.table("conditions")
    chosen = select(table, wanted, patients, seed)
    if not chosen:
        names = ", ".join(t.name for t in wanted)
        raise ValueError(f"no patient of {run_dir} had {names} diagnosed; try a larger run or another condition")
    records = patient_records(run, [int(e["patient"]) for _, e in chosen])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = _environment()
    files: dict[Path, str] = {}
    cases = []
    for target, episode in chosen:
        case = build_case(records[int(episode["patient"])], episode, options)
        for position, figure in enumerate(case.figures, 1):
            figure.file = f"{case.patient_id}-{position}.svg"
            files[out / figure.file] = figure.svg
        context = {"case": case, "target": target, "run": run.manifest, "options": options}
        files[out / f"{case.patient_id}.html"] = env.get_template("case.html.j2").render(context)
        files[out / f"{case.patient_id}.md"] = env.get_template("case.md.j2").render(context)
        cases.append(case)
    context = {"cases": cases, "run": run.manifest, "run_dir": str(run_dir), "options": options}
    files[out / "index.html"] = env.get_template("cases_index.html.j2").render(context)
    files[out / "index.md"] = env.get_template("cases_index.md.j2").render(context)
    answers = [
        {
            "patient_id": c.patient_id,
            "patient_index": c.patient_index,
            "title": c.title,
            "questions": [asdict(q) for q in c.questions],
        }
        for c in cases
    ]
    files[out / "answers.json"] = json.dumps(answers, indent=2) + "\n"
    return write_all(files)
