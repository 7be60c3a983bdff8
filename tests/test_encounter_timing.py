"""When encounters happen and what they record at their start: clinic visits in clinic hours of the patient's
local time (rules/providers.yaml clinic_hours, the city's time_zone in rules/names.yaml), and the vital signs
every emergency, inpatient and ICU encounter records at triage or admission (rules/vital_signs.yaml
observe_at_start)."""

from __future__ import annotations

import math
import zoneinfo
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import simulator
from simulator.engine.compiler import start_labs, start_observations, state_observations
from simulator.engine.people import standard_utc_offset_days
from simulator.model.library import Library
from simulator.model.schema import WEEKDAYS

ACUTE = ("emergency", "inpatient", "icu")


@pytest.fixture(scope="module")
def cohort() -> simulator.Population:
    return simulator.generate(patients=600, seed=23, chunk_size=256)


@pytest.fixture(scope="module")
def acute_cohort() -> simulator.Population:
    """Enough emergency visits and hospital stays for their hours' shares (a few thousand of each)."""
    return simulator.generate(patients=3000, seed=7, chunk_size=1500)


def _starts(population: simulator.Population, classes: tuple[str, ...]) -> pd.DataFrame:
    events = population.events
    starts = events[(events["kind"] == "encounter_start") & events["encounter_class"].isin(classes)]
    place = population.patients.set_index("index")[["city", "state"]].rename(columns={"state": "us_state"})
    return starts.join(place, on="patient")


def test_every_clinic_visit_starts_in_clinic_hours_of_local_standard_time(
    cohort: simulator.Population, shipped_library: Library
) -> None:
    hours = shipped_library.providers.clinic_hours
    zones = {(c.city, c.state): c.time_zone for c in shipped_library.names.cities}
    visits = _starts(cohort, tuple(hours.encounter_classes))
    assert len(visits) > 10_000
    places = zip(visits["city"], visits["us_state"], strict=True)
    offset_days = [standard_utc_offset_days(zones[place], 2024) for place in places]
    local = (visits["time"].dt.tz_localize(None) + pd.to_timedelta(offset_days, unit="D")).dt.round("ms")
    minutes = local.dt.hour * 60 + local.dt.minute + local.dt.second / 60
    working = local.dt.day_of_week.isin([WEEKDAYS.index(d) for d in hours.weekdays])
    assert working.all()
    assert (minutes >= hours.minutes(hours.opens) - 0.01).all()
    assert (minutes < hours.minutes(hours.closes)).all()
    # booked slots spread over the day (every quarter hour is used), not bunched at opening
    booked = (minutes - hours.minutes(hours.opens)) % hours.slot_minutes == 0
    slots = ((minutes[booked] - hours.minutes(hours.opens)) // hours.slot_minutes).value_counts(normalize=True)
    n_slots = (hours.minutes(hours.closes) - hours.minutes(hours.opens)) // hours.slot_minutes
    assert len(slots) == n_slots
    assert slots.max() < 2.0 / n_slots


def test_clinic_visits_are_in_office_hours_in_local_time_with_daylight_saving(
    cohort: simulator.Population, shipped_library: Library
) -> None:
    """The audit's rule (08:00-18:00 local time, zoneinfo): the standard-time window holds in summer too."""
    zones = {(c.city, c.state): c.time_zone for c in shipped_library.names.cities}
    visits = _starts(cohort, ("wellness", "ambulatory"))
    for (city, state), group in visits.groupby(["city", "us_state"]):
        local = group["time"].dt.tz_convert(zones[(city, state)])
        minutes = local.dt.hour * 60 + local.dt.minute
        assert ((minutes >= 8 * 60) & (minutes < 18 * 60)).all(), city
        assert (local.dt.day_of_week < 5).all(), city


def test_deferral_is_a_few_days_at_most(cohort: simulator.Population) -> None:
    """The newborn visit (scheduled at birth) waits for the next clinic slot: within four days of birth."""
    events = cohort.events
    newborn = events[(events["kind"] == "encounter_start") & (events["state"] == "visit_newborn")]
    births = cohort.patients.set_index("index")["birth_time"]
    delay = newborn["time"].to_numpy() - births.reindex(newborn["patient"]).to_numpy()
    assert len(newborn) > 0
    assert (delay >= pd.Timedelta(0)).all()
    assert (delay < pd.Timedelta(days=4)).all()


def _local_hours(events: pd.DataFrame, library: Library) -> pd.Series:
    """Each event's time of day in hours, in the local standard time of the patient's city."""
    zones = {(c.city, c.state): c.time_zone for c in library.names.cities}
    places = zip(events["city"], events["us_state"], strict=True)
    offset_days = [standard_utc_offset_days(zones[place], 2024) for place in places]
    local = events["time"].dt.tz_localize(None) + pd.to_timedelta(offset_days, unit="D")
    return (local - local.dt.normalize()) / pd.Timedelta(hours=1)


def test_emergency_arrivals_follow_the_day_and_night_shares(
    acute_cohort: simulator.Population, shipped_library: Library
) -> None:
    """providers.yaml encounter_hours: 64% of emergency arrivals between 06:00 and 18:00, the rest at night,
    evenly within each (wsha_ed_hours); before the rule every hour had the same share (50% by day)."""
    hours = _local_hours(_starts(acute_cohort, ("emergency",)), shipped_library)
    assert len(hours) > 500
    assert abs(((hours >= 6) & (hours < 18)).mean() - 0.64) < 0.05
    assert abs(((hours >= 8) & (hours < 20)).mean() - (0.64 * 10 / 12 + 0.36 * 2 / 12)) < 0.05
    night = hours[(hours < 6) | (hours >= 18)]
    assert abs((night < 6).mean() - 0.5) < 0.1  # evenly within the night block


def test_inpatient_stays_end_in_discharge_hours(acute_cohort: simulator.Population, shipped_library: Library) -> None:
    """Every inpatient stay that does not end in death ends between 08:00 and 20:00 local standard time,
    13% before noon and 42.2% before 15:00 (florida_discharge_times)."""
    events = acute_cohort.events
    starts = _starts(acute_cohort, ("inpatient",))[["patient", "encounter", "city", "us_state"]]
    ends = events[events["kind"] == "encounter_end"].merge(starts, on=["patient", "encounter"])
    deaths = events[events["kind"] == "death"][["patient", "time"]]
    ends = ends.merge(deaths, on="patient", how="left", suffixes=("", "_death"))
    discharges = ends[ends["time"] != ends["time_death"]]
    hours = _local_hours(discharges, shipped_library)
    assert len(hours) > 200
    assert ((hours >= 8 - 1e-6) & (hours < 20)).all()
    assert abs((hours < 12).mean() - 0.13) < 0.06
    assert abs((hours < 15).mean() - 0.422) < 0.08


def test_emergency_arrival_is_deferred_less_than_a_day(acute_cohort: simulator.Population) -> None:
    """The arrival moves forward to the drawn time of day, never back, by less than a day: a pneumonia's
    emergency visit starts 1-3 days after its onset (assumption_care_delay), plus the deferral."""
    events = acute_cohort.events
    onsets = events[(events["kind"] == "condition_onset") & (events["state"] == "cap_onset")]
    visits = events[(events["kind"] == "encounter_start") & (events["state"] == "cap_ed_visit")]
    pairs = pd.merge_asof(
        visits.sort_values("time")[["patient", "time"]],
        onsets.sort_values("time")[["patient", "time"]].rename(columns={"time": "onset"}),
        left_on="time",
        right_on="onset",
        by="patient",
    )
    assert len(pairs) > 20
    delay = pairs["time"] - pairs["onset"]
    assert (delay >= pd.Timedelta(days=1)).all()
    assert (delay <= pd.Timedelta(days=4)).all()
    # a myocardial infarction goes straight to the emergency department: its onset moves with the arrival
    mi_onsets = events[(events["kind"] == "condition_onset") & (events["state"] == "mi_onset")]
    mi_visits = events[(events["kind"] == "encounter_start") & (events["state"] == "mi_emergency")]
    assert len(mi_visits) > 10
    same_instant = mi_visits[["patient", "time"]].merge(mi_onsets[["patient", "time"]].drop_duplicates())
    assert len(same_instant) == len(mi_visits)


def test_wellness_joins_follow_the_booked_visit(cohort: simulator.Population) -> None:
    """What modules record in a wellness visit they joined happens at the visit's (booked) start."""
    events = cohort.events
    starts = events[(events["kind"] == "encounter_start") & (events["encounter_class"] == "wellness")]
    start_of = starts.set_index(["patient", "encounter"])["time"]
    joined = events[(events["module"] != "wellness") & events["encounter"].ge(0)]
    joined = joined.join(start_of.rename("visit_start"), on=["patient", "encounter"], how="inner")
    assert len(joined) > 100
    assert (joined["time"] >= joined["visit_start"]).all()


def test_every_acute_encounter_records_vital_signs_at_its_start(
    cohort: simulator.Population, shipped_library: Library
) -> None:
    events = cohort.events
    acute = _starts(cohort, ACUTE)
    assert len(acute) > 50
    observables = {o: m.observables[o] for m in shipped_library.modules for o in m.observables}
    calendar = shipped_library.calendar
    oximetry = pd.Timestamp(calendar.introduced_on("http://loinc.org", "59408-5"), tz="UTC")
    for encounter_class in ACUTE:
        codes = {observables[name].code.code for name in start_observations(shipped_library, encounter_class)}
        assert {"8867-4", "9279-1", "8480-6", "8462-4", "8310-5", "59408-5"} <= codes
        starts = acute[acute["encounter_class"] == encounter_class][["patient", "encounter", "time"]]
        readings = events[(events["kind"] == "observation") & events["code"].isin(codes)]
        at_start = readings.merge(starts, on=["patient", "encounter", "time"])
        per_encounter = at_start.groupby(["patient", "encounter"])["code"].nunique()
        assert len(per_encounter) == len(starts), encounter_class
        # a dated code (pulse oximetry 1983, the pain score 2001, the Glasgow coma score 1974) is recorded from
        # its calendar date on: before it, one code fewer each
        when = starts.set_index(["patient", "encounter"])["time"].reindex(per_encounter.index)
        dates = [calendar.introduced_on("http://loinc.org", code) for code in codes]
        expected = sum(np.asarray(when >= pd.Timestamp(d or "1800-01-01", tz="UTC")) for d in dates)
        assert (per_encounter.to_numpy() == expected).all(), encounter_class
        assert (when < oximetry).any() and (when >= oximetry).any()


def test_a_state_that_observes_a_start_vital_itself_reads_it_once(shipped_library: Library) -> None:
    """pneumonia_sepsis's emergency visit observes the vital signs itself: each is read once, in its order,
    after the start observations and admission labs it does not observe itself (the pain score of
    modules/acute_scores.yaml, modules/laboratory.yaml labs_at_start)."""
    state = shipped_library.module("pneumonia_sepsis").states["cap_ed_visit"]
    observed = state_observations(shipped_library, state)
    assert len(observed) == len(set(observed))
    labs = start_labs(shipped_library, "emergency")  # laboratory.yaml's and blood_count.yaml's panels
    at_start = [*start_observations(shipped_library, "emergency"), *labs]  # the pain score is not observed by it
    assert observed == [*(name for name in at_start if name not in state.observe), *state.observe]


def test_sepsis_shows_in_the_triage_heart_rate(shipped_library: Library) -> None:
    """Readings at the start are the observable's model: an attribute set before the encounter shifts them."""
    population = simulator.generate(patients=4000, seed=5, chunk_size=2000)
    events = population.events
    emergency = events[(events["kind"] == "encounter_start") & (events["encounter_class"] == "emergency")]
    rates = events[(events["kind"] == "observation") & (events["code"] == "8867-4")]
    triage = rates.merge(emergency[["patient", "encounter", "time", "module"]], on=["patient", "encounter", "time"])
    septic = triage[triage["module_y"] == "pneumonia_sepsis"]["value"]
    other = triage[triage["module_y"] != "pneumonia_sepsis"]["value"]
    assert len(septic) > 20 and len(other) > 100
    assert septic.mean() > other.mean() + 5


def test_city_zones_stay_within_an_hour_of_their_standard_offset(shipped_library: Library) -> None:
    """Why a 09:00-17:00 standard-time window is inside 08:00-18:00 local time: since 1920, daylight saving
    and the zones' own history moved each city's clock by at most an hour from its standard offset."""
    for time_zone in sorted({c.time_zone for c in shipped_library.names.cities}):
        zone = zoneinfo.ZoneInfo(time_zone)
        standard = timedelta(days=standard_utc_offset_days(time_zone, 2024))
        t = datetime(1920, 1, 1, tzinfo=UTC)
        while t.year < 2031:
            assert abs(t.astimezone(zone).utcoffset() - standard) <= timedelta(hours=1), (time_zone, t)
            t += timedelta(days=5)


def test_standard_offsets() -> None:
    assert standard_utc_offset_days("America/New_York", 2024) == -5 / 24
    assert standard_utc_offset_days("America/Phoenix", 2024) == -7 / 24
    assert standard_utc_offset_days("Australia/Sydney", 2024) == 10 / 24  # daylight saving in January there


def test_hospital_stays_repeat_their_vital_signs(cohort: simulator.Population, shipped_library: Library) -> None:
    """While a ward or ICU stay is open its start observations are repeated every observe_every_hours from the
    start (vital_signs.yaml: 6 hours on the ward, hourly in the ICU), and none after it ends."""
    events = cohort.events
    starts = _starts(cohort, ("inpatient", "icu"))[["patient", "encounter", "time", "encounter_class"]]
    ends = events[events["kind"] == "encounter_end"][["patient", "encounter", "time"]]
    stays = starts.merge(ends, on=["patient", "encounter"], suffixes=("", "_end"))
    rates = events[(events["kind"] == "observation") & (events["code"] == "8867-4")]
    readings = rates.merge(stays, on=["patient", "encounter"], suffixes=("", "_start"))
    assert len(readings) > len(stays)
    vital_signs = shipped_library.module("vital_signs")
    for encounter_class, group in readings.groupby("encounter_class"):
        every = pd.Timedelta(hours=vital_signs.observe_every_hours[encounter_class])
        since = group["time"] - group["time_start"]
        assert ((since / every - (since / every).round()).abs() < 1e-6).all(), encounter_class
        assert (group["time"] <= group["time_end"]).all(), encounter_class
        per_stay = group.groupby(["patient", "encounter"]).size()
        length = (
            group.groupby(["patient", "encounter"])["time_end"].first()
            - group.groupby(["patient", "encounter"])["time_start"].first()
        )
        expected = (length / every).apply(math.floor) + 1
        assert (per_stay.to_numpy() >= expected.to_numpy() - 1).all(), encounter_class
        assert (per_stay.to_numpy() <= expected.to_numpy()).all(), encounter_class
