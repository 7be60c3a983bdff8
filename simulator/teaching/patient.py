"""One patient's record, as the tables of a written run hold it, with what every part of a case asks of
it: age at a time, pronouns, stays (an emergency visit, the admission and intensive care that follow it),
the episodes that were minor, the medication courses that were long."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from simulator.days import DAYS_PER_YEAR
from simulator.teaching.record import RunRecord

CLINICAL_TABLES = ("encounters", "conditions", "medications", "observations", "procedures", "immunizations", "symptoms")
TIME_OF = {"encounters": "start_time", "conditions": "onset_time", "medications": "start_time"}  # others: `time`
ACUTE_CLASSES = ("emergency", "inpatient", "icu")
CLASS_RANK = {"wellness": 0, "ambulatory": 1, "emergency": 2, "inpatient": 3, "icu": 4}
MINOR_DAYS = 60  # an episode resolved within this many days of its onset, never in hospital, is a minor illness
LONG_COURSE_DAYS = 90  # a medication course this long (or still taken) is a long-term treatment
STAY_GAP = pd.Timedelta(hours=1)  # encounters this close in time belong to one stay


@dataclass(frozen=True)
class Pronouns:
    subject: str
    possessive: str
    object: str


PRONOUNS = {"M": Pronouns("he", "his", "him"), "F": Pronouns("she", "her", "her")}


@dataclass
class PatientRecord:
    """A patient's row of `patients` and rows of each clinical table, sorted by time; `end` is the end of
    the record (death, or the run's reference date)."""

    person: pd.Series
    tables: dict[str, pd.DataFrame]
    end: pd.Timestamp
    origin: str = ""  # race and ethnicity as words: 'White, Not Hispanic or Latino'
    upper_limits: dict[str, float] = field(default_factory=dict)  # LOINC code -> upper limit of normal

    encounters = property(lambda self: self.tables["encounters"])
    conditions = property(lambda self: self.tables["conditions"])
    medications = property(lambda self: self.tables["medications"])
    observations = property(lambda self: self.tables["observations"])
    procedures = property(lambda self: self.tables["procedures"])
    immunizations = property(lambda self: self.tables["immunizations"])
    symptoms = property(lambda self: self.tables["symptoms"])
    deaths = property(lambda self: self.tables["deaths"])

    @property
    def index(self) -> int:
        return int(self.person["index"])

    @property
    def id(self) -> str:
        return str(self.person["id"])

    @property
    def name(self) -> str:
        return f"{self.person['given_name']} {self.person['family_name']}"

    @property
    def sex(self) -> str:
        return str(self.person["sex"])

    @property
    def pronouns(self) -> Pronouns:
        return PRONOUNS[self.sex]

    @property
    def birth(self) -> pd.Timestamp:
        return self.person["birth_time"]

    @property
    def death(self) -> pd.Timestamp | None:
        death = self.person["death_time"]
        return None if pd.isna(death) else death

    def age(self, t: pd.Timestamp) -> float:
        """Age in years at `t`."""
        return (t - self.birth).total_seconds() / 86_400 / DAYS_PER_YEAR

    def stays(self) -> list[pd.DataFrame]:
        """Runs of emergency, inpatient and intensive care encounters that follow each other (the next starts
        within an hour of the end of the one before), each in order."""
        acute = self.encounters[self.encounters["encounter_class"].isin(ACUTE_CLASSES)]
        runs: list[list[int]] = []
        last_end = None
        for position, (start, end) in enumerate(zip(acute["start_time"], acute["end_time"], strict=True)):
            if last_end is not None and not pd.isna(last_end) and start - last_end <= STAY_GAP:
                runs[-1].append(position)
            else:
                runs.append([position])
            last_end = end if pd.isna(last_end) or pd.isna(end) else max(end, last_end)
        return [acute.iloc[run] for run in runs]

    @cached_property
    def minor_ids(self) -> frozenset[str]:
        """The ids of the minor episodes: resolved within MINOR_DAYS of onset, diagnosed outside the emergency
        department and hospital and never the reason of a stay there."""
        c = self.conditions
        short = c[(c["resolution_time"] - c["onset_time"]).dt.days <= MINOR_DAYS]
        acute = self.encounters[self.encounters["encounter_class"].isin(ACUTE_CLASSES)]
        in_hospital = short["diagnosis_encounter_id"].isin(set(acute["id"])) | short["id"].isin(
            set(acute["reason_condition_id"].dropna())
        )
        return frozenset(short.loc[~in_hospital, "id"])

    def is_minor(self, episode: pd.Series) -> bool:
        return episode["id"] in self.minor_ids

    def minor(self, episodes: pd.DataFrame) -> np.ndarray:
        """Which of these episodes are minor (`minor_ids`), as a boolean array."""
        return episodes["id"].isin(self.minor_ids).to_numpy(dtype=bool)

    def is_long_course(self, course: pd.Series) -> bool:
        stop = course["stop_time"]
        return pd.isna(stop) or (stop - course["start_time"]).days >= LONG_COURSE_DAYS

    def active_at(self, t: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The episodes diagnosed before `t` and not resolved by then (minor ones left out), and the
        medication courses taken at `t`."""
        c = self.conditions
        known = c[(c["diagnosis_time"] < t) & ~(c["resolution_time"] <= t)]
        known = known[~self.minor(known)]
        m = self.medications
        taken = m[(m["start_time"] < t) & ~(m["stop_time"] <= t)]
        return known, taken


def patient_records(run: RunRecord, indexes: Iterable[int]) -> dict[int, PatientRecord]:
    """The records of these patients (by index), each table read once for all of them."""
    wanted = sorted({int(i) for i in indexes})
    patients = run.table("patients", wanted)
    tables = {name: run.table(name, wanted) for name in (*CLINICAL_TABLES, "deaths")}
    for name, frame in tables.items():
        tables[name] = frame.sort_values(["patient", TIME_OF.get(name, "time")], kind="stable")
    library = run.library
    limits = {code: limit.limit for code, limit in library.observation_reference.upper_limits.items()}
    words = {c.name: c.code.display for c in (*library.demographics.race, *library.demographics.ethnicity)}
    records = {}
    for _, person in patients.iterrows():
        index = int(person["index"])
        own = {name: frame[frame["patient"] == index].reset_index(drop=True) for name, frame in tables.items()}
        end = person["death_time"] if not pd.isna(person["death_time"]) else run.reference_time
        race, ethnicity = str(person["race"]), str(person["ethnicity"])
        origin = f"{words.get(race, race)}, {words.get(ethnicity, ethnicity)}"
        records[index] = PatientRecord(person, own, max(end, person["birth_time"]), origin, limits)
    return records
