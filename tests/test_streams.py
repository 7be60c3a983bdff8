"""Dense monitoring streams (issue 32 part 4, docs/streams.md): samples on the interval asked for, a course
through the charted vital signs (so heart rate follows the clinical state), correlated physiological
variability, artefacts and dropouts at the rates of rules/streams.yaml flagged in the quality column and in
truth, FHIR Devices and valueSampledData Observations that validate, the same output whatever the chunking,
and a run without streams unchanged. Home CGM: 5-minute readings around the HbA1c-implied mean, a trough at
each severe hypoglycaemia, none before the device's date; atrial fibrillation: an irregular heart rate, listed
in truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from conftest import FIXTURE_LIBRARY, edited_rules_problems
from fhir.resources.R4B import get_fhir_model_class
from typer.testing import CliRunner

import simulator
from simulator.cli import app
from simulator.engine.people import standard_utc_offset_days
from simulator.errors import ConfigError
from simulator.export.streams.home import abpm_samples, abpm_visits, cgm_samples, cgm_windows
from simulator.export.streams.signals import QUALITY, Charted, Irregular, ou_path, stay_samples
from simulator.model.checks import load_terminology
from simulator.model.library import Library, default_rules_dir
from simulator.model.loading import load, load_library
from simulator.model.streams import StreamRules

HOUR = 3600.0
RULES = load(default_rules_dir() / "streams.yaml", StreamRules, "rules/streams.yaml")
ICU = tuple(RULES.settings["icu"].channels)
SLOW = {"heart_rate": 21600.0, "respiratory_rate": 21600.0, "oxygen_saturation": 21600.0, "body_temperature": 21600.0}
SLOW |= {"systolic_bp": 7200.0, "diastolic_bp": 7200.0}
LEVEL = {"heart_rate": 90.0, "respiratory_rate": 18.0, "oxygen_saturation": 96.0, "systolic_bp": 120.0}
LEVEL |= {"diastolic_bp": 70.0, "body_temperature": 37.0}


def _charted(stay_s: float, every_s: float, slope: float = 0.0, seed: int = 0) -> dict[str, Charted]:
    """Hourly readings of every observed channel around its level (heart rate falling by `slope` per hour)."""
    t = np.arange(0.0, stay_s, every_s)
    noise = np.random.default_rng(seed).normal(0.0, 1.0, len(t))
    readings = {name: Charted(t, level + noise) for name, level in LEVEL.items()}
    readings["heart_rate"] = Charted(t, LEVEL["heart_rate"] + 30.0 - slope * t / HOUR + 3.0 * noise)
    return readings


def _samples(
    stay_s: float,
    step_s: float,
    seed: int = 1,
    rules: StreamRules = RULES,
    irregular: Irregular | None = None,
    **kwargs,
):
    charted = _charted(stay_s, HOUR, **kwargs)
    rng = np.random.default_rng([seed, 62, 0, 0])
    return stay_samples(rules, ICU, stay_s, step_s, charted, SLOW, rng, irregular)


@pytest.mark.parametrize("step_s", [1.0, 60.0, 3600.0])
def test_samples_are_on_the_interval(step_s: float) -> None:
    samples = _samples(6 * HOUR, step_s)
    assert samples.t_s[0] == 0.0 and samples.t_s[-1] < 6 * HOUR
    assert np.allclose(np.diff(samples.t_s), step_s)
    assert samples.value.shape == (len(ICU), len(samples.t_s))


def test_the_stream_passes_through_the_charted_readings() -> None:
    """At each charted time the clean heart-rate stream is the reading give or take the fast variability."""
    stay_s = 48 * HOUR
    samples = _samples(stay_s, 60.0, slope=1.0)
    charted = _charted(stay_s, HOUR, slope=1.0)["heart_rate"]
    at = np.searchsorted(samples.t_s, charted.t_s)
    clean = samples.quality[0, at] == 0
    difference = samples.value[0, at][clean] - charted.value[clean]
    assert abs(np.median(difference)) < 1.5
    assert np.median(np.abs(difference)) < 4.0  # fast SD 3 and sensor SD 1
    # and it follows the course: the first hours are faster than the last
    hour = int(HOUR / 60.0)
    assert np.nanmean(samples.value[0, :hour]) - np.nanmean(samples.value[0, -hour:]) > 35


def test_variability_is_autocorrelated_and_shared() -> None:
    """The fast part is AR(1), not independent noise, and heart rate, respiratory rate and pressure co-vary."""
    assert (
        np.corrcoef(
            ou_path(20000, 60.0, 120.0, np.random.default_rng(3))[:-1],
            ou_path(20000, 60.0, 120.0, np.random.default_rng(3))[1:],
        )[0, 1]
        > 0.5
    )
    quiet = RULES.model_copy(update={"artefacts": {}})
    samples = _samples(200 * HOUR, 60.0, rules=quiet)
    fast = samples.value - pd.DataFrame(samples.value.T).rolling(121, center=True, min_periods=1).mean().to_numpy().T
    heart, breathing, spo2 = (fast[ICU.index(name)] for name in ("heart_rate", "respiratory_rate", "oxygen_saturation"))
    assert np.corrcoef(heart[:-1], heart[1:])[0, 1] > 0.3
    assert np.corrcoef(heart, breathing)[0, 1] > 0.1
    assert np.corrcoef(heart, spo2)[0, 1] < 0.0


def test_artefacts_come_at_the_rules_rates_and_are_flagged() -> None:
    """Over 2,000 monitored hours: episodes of each kind per hour as rules/streams.yaml says (within 4 standard
    errors of a Poisson count), every flagged sample inside an episode of its kind, dropouts empty, probe-off
    SpO2 at its floor."""
    stay_s = 2000 * HOUR
    samples = _samples(stay_s, 60.0)
    episodes = pd.DataFrame([e.__dict__ for e in samples.episodes])
    for kind, artefact in RULES.artefacts.items():
        rows = episodes[episodes["kind"] == kind]
        groups = 1 if artefact.device_wide else len([c for c in ICU if c in artefact.channels])
        per_channel = len(rows) / len([c for c in ICU if c in artefact.channels])
        expected = artefact.per_hour * stay_s / HOUR
        assert abs(per_channel - expected) < 4 * np.sqrt(expected / groups) + 1, kind
    for i, channel in enumerate(ICU):
        mine = episodes[episodes["channel"] == channel]
        for code, kind in enumerate(QUALITY):
            flagged = samples.t_s[samples.quality[i] == code]
            if kind == "ok":
                continue
            spans = mine[mine["kind"] == kind]
            inside = np.zeros(len(flagged), bool)
            for start, end in zip(spans["start_s"], spans["end_s"], strict=True):
                inside |= (flagged >= start) & (flagged < end)
            assert inside.all(), (channel, kind)
    assert np.isnan(samples.value[samples.quality == QUALITY.index("dropout")]).all()
    assert not np.isnan(samples.value[samples.quality != QUALITY.index("dropout")]).any()
    spo2 = samples.value[ICU.index("oxygen_saturation")][
        samples.quality[ICU.index("oxygen_saturation")] == QUALITY.index("probe_off")
    ]
    assert len(spo2) > 50 and np.median(spo2) <= 75
    share = (samples.quality != 0).mean()
    assert 0.005 < share < 0.06  # about 2-3% of samples carry a flag


def test_atrial_fibrillation_makes_the_heart_rate_irregular() -> None:
    """From the onset on, the minute-to-minute change of the heart rate is far larger than in sinus rhythm."""
    af = RULES.atrial_fibrillation
    relative_sd = af.rr_cv / np.sqrt(af.beats_averaged)
    quiet = RULES.model_copy(update={"artefacts": {}})
    onset_s = 24 * HOUR
    irregular = Irregular("heart_rate", onset_s, relative_sd, np.random.default_rng(5))
    samples = _samples(48 * HOUR, 60.0, rules=quiet, irregular=irregular)
    heart = samples.value[ICU.index("heart_rate")]
    sinus, fibrillating = np.diff(heart[samples.t_s < onset_s]), np.diff(heart[samples.t_s >= onset_s])
    assert fibrillating.std() > 2.5 * sinus.std()
    same = _samples(48 * HOUR, 60.0, rules=quiet)  # the other channels draw what they drew without it
    assert np.array_equal(same.value[1:], samples.value[1:])
    assert np.array_equal(same.value[0][samples.t_s < onset_s], heart[samples.t_s < onset_s])


def _insulin_events(hypo: str = "2024-03-01 03:00") -> pd.DataFrame:
    """One patient on insulin glargine since 2015 with HbA1c readings and a severe hypoglycaemia (onset, then
    the emergency visit's capillary glucose 45 minutes later)."""
    times = ["2014-06-01", "2015-02-01", "2023-01-01", hypo, str(pd.Timestamp(hypo) + pd.Timedelta(minutes=45))]
    return pd.DataFrame(
        {
            "patient": [0] * 5,
            "time": pd.to_datetime(times, format="ISO8601").tz_localize("UTC"),
            "kind": pd.Categorical(
                ["observation", "medication_start", "observation", "condition_onset", "observation"]
            ),
            "code": pd.Categorical(["4548-4", "285018", "4548-4", "302866003", "41653-7"]),
            "value": [8.0, np.nan, 7.5, np.nan, 33.0],
        }
    )


END_MS = int(pd.Timestamp("2024-07-01", tz="UTC").value // 1_000_000)
NEW_YORK_S = -5 * 3600.0  # a patient's standard UTC offset: home devices follow their local clock
G6_MS = int(pd.Timestamp("2018-03-01", tz="UTC").value // 1_000_000)


def test_cgm_windows_follow_insulin_the_device_date_and_the_hypoglycaemia() -> None:
    """The last 14 days of the record and the 14 days around the hypoglycaemia; none before the device."""
    windows = cgm_windows(_insulin_events(), {0: END_MS}, RULES.cgm, G6_MS)
    assert [(w.end_ms - w.start_ms) / 86_400_000 for w in windows] == [14.0, 14.0]
    assert windows[-1].end_ms == END_MS and len(windows[0].hypo_ms) == 1 and windows[0].hypo_mg_dl[0] == 33.0
    early = cgm_windows(_insulin_events("2016-03-01 03:00"), {0: END_MS}, RULES.cgm, G6_MS)
    assert len(early) == 1 and early[0].start_ms >= G6_MS  # a hypoglycaemia before the G6 is not streamed
    assert cgm_windows(_insulin_events(), {0: G6_MS - 1}, RULES.cgm, G6_MS) == []  # a record ending before it


def test_cgm_readings_every_5_minutes_around_the_hba1c_with_a_hypoglycaemia_trough() -> None:
    cgm = RULES.cgm
    wear = cgm_windows(_insulin_events(), {0: END_MS}, cgm, G6_MS)[0]
    samples, shown = cgm_samples(RULES, RULES.settings["cgm"], wear, np.random.default_rng(2), 0.0)
    assert np.allclose(np.diff(samples.t_s), cgm.interval_s) and cgm.interval_s == 300
    glucose, ok = samples.value[0], samples.quality[0] == 0
    mean = cgm.eag_slope * 7.5 + cgm.eag_intercept  # ADAG, the latest HbA1c 7.5%: 168.5 mg/dL
    assert abs(np.mean(glucose[ok]) / mean - 1) < 0.15
    assert 0.2 < np.std(glucose[ok]) / np.mean(glucose[ok]) < 0.45  # CV around the consensus 36% limit
    onset_s = (wear.hypo_ms[0] - wear.start_ms) / 1000.0
    near = np.abs(samples.t_s - onset_s) <= 900
    assert np.nanmin(glucose[near]) < 54
    assert shown == [("severe_hypoglycaemia", onset_s, onset_s + cgm.hypoglycaemia.hold_s)]
    warm = samples.quality[0] == QUALITY.index("warm_up")
    assert warm[: int(cgm.warm_up_s / 300)].all() and np.isnan(glucose[warm]).all()
    assert warm.sum() == 2 * cgm.warm_up_s / 300  # two 10-day sensors in 14 days


def test_compression_lows_come_at_night_and_are_flagged() -> None:
    """Over a long wear: compression lows start only between midnight and 8 on the patient's clock (New York's
    standard time here, UTC-5), read low, and are flagged."""
    cgm, setting = RULES.cgm, RULES.settings["cgm"]
    artefact = setting.artefacts["compression_low"]
    busy = setting.model_copy(update={"artefacts": {"compression_low": artefact.model_copy(update={"per_hour": 0.5})}})
    wear = cgm_windows(_insulin_events(), {0: END_MS}, cgm, G6_MS)[-1]
    samples, _ = cgm_samples(RULES, busy, wear, np.random.default_rng(3), NEW_YORK_S)
    lows = [e for e in samples.episodes if e.kind == "compression_low"]
    assert len(lows) > 20
    clock = ((wear.start_ms / 1000.0 + NEW_YORK_S + np.array([e.start_s for e in lows])) % 86400) / 3600
    assert ((clock >= 0) & (clock < 8)).all()
    flagged = samples.quality[0] == QUALITY.index("compression_low")
    assert flagged.any() and np.nanmedian(samples.value[0][flagged]) < np.nanmedian(samples.value[0][~flagged])


def test_abpm_records_24_hours_every_30_minutes_with_nocturnal_dipping() -> None:
    """A recording from each hypertension confirmation visit since 2015: 48 readings, the day around the office
    reading less 5 mm Hg, the night (23-7 on the patient's clock, New York's here) 10-20% lower."""
    abpm, setting = RULES.abpm, RULES.settings["abpm"]
    visit_times = ["2012-05-01 15:00", "2020-05-01 15:00"]  # the first before ABPM was recommended
    times = pd.to_datetime([t for t in visit_times for _ in range(2)], format="ISO8601").tz_localize("UTC")
    events = pd.DataFrame(
        {
            "patient": [0] * 4,
            "time": times,
            "kind": pd.Categorical(["observation"] * 4),
            "code": pd.Categorical(["8480-6", "8462-4"] * 2),
            "value": [150.0, 95.0, 150.0, 95.0],
            "module": pd.Categorical(["hypertension"] * 4),
            "state": pd.Categorical(["htn_confirmation_visit"] * 4),
        }
    )
    visits = abpm_visits(events, {0: END_MS}, abpm, ("8480-6", "8462-4"))
    assert len(visits) == 1 and visits[0].office == (150.0, 95.0)
    ratios = []
    for seed in range(40):
        samples = abpm_samples(RULES, setting, visits[0], np.random.default_rng(seed), NEW_YORK_S)
        assert len(samples.t_s) == 48 and np.allclose(np.diff(samples.t_s), 1800)
        hour = ((visits[0].start_ms / 1000 + NEW_YORK_S + samples.t_s) % 86400) / 3600
        night = (hour >= 23) | (hour < 7)
        systolic = samples.value[0]
        day = np.nanmean(systolic[~night])
        assert abs(day - 145) < 10
        ratios.append(np.nanmean(systolic[night]) / day)
    assert 0.8 < np.mean(ratios) < 0.9  # dipping 10-20%


def test_bad_stream_rules_say_where(tmp_path: Path) -> None:
    edit = ("channels: [heart_rate, respiratory_rate", "channels: [heart_rat, respiratory_rate")
    rules, modules = FIXTURE_LIBRARY["rules_dir"], FIXTURE_LIBRARY["modules_dir"]
    problems = edited_rules_problems(tmp_path, rules, {"streams.yaml": edit}, modules)
    assert [(p.file.endswith("streams.yaml"), p.line > 1) for p in problems] == [(True, True)], problems
    assert "channel 'heart_rat' is not declared" in problems[0].message


def test_bad_stream_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="between 1 and 3600"):
        simulator.generate(10, out=tmp_path / "a", streams="icu", stream_interval=0.5)
    with pytest.raises(ConfigError, match="unknown setting 'nicu'"):
        simulator.generate(10, out=tmp_path / "b", streams="icu,nicu")
    with pytest.raises(ConfigError, match="output folder"):
        simulator.generate(10, streams="icu")


def test_the_cli_refuses_a_bad_interval_in_one_line(tmp_path: Path) -> None:
    args = ["generate", "-n", "5", "-o", str(tmp_path / "out"), "--streams", "icu", "--stream-interval", "0.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "stream_interval" in result.stderr and "between 1 and 3600" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


# --- a run with streams ----------------------------------------------------------------------------------

RUN = {"patients": 600, "seed": 7, "mode": "lifetime", "formats": "ndjson"}


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("streams") / "run"
    simulator.generate(**RUN, out=out, chunk_size=200, streams="icu,ward,ed,cgm,abpm", stream_interval=300)
    return out


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "run"
    simulator.generate(**RUN, out=out, chunk_size=200)
    return out


def _ndjson(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_a_run_without_streams_is_unchanged(streamed: Path, plain: Path) -> None:
    """Every file of the plain run is the same bytes in the streamed run, except the manifests that list more."""
    assert not (plain / "streams").exists() and not (plain / "truth").exists()
    manifest = orjson.loads((plain / "manifest.json").read_bytes())
    assert "streams" not in manifest and not any(name.startswith("streams/") for name in manifest["files"])
    for path in sorted((plain / "fhir").glob("*.ndjson")):
        assert path.read_bytes() == (streamed / "fhir" / path.name).read_bytes(), path.name


def test_the_streams_are_listed_and_sampled_on_the_interval(streamed: Path) -> None:
    manifest = orjson.loads((streamed / "manifest.json").read_bytes())
    assert manifest["streams"] == {"settings": ["icu", "ward", "ed", "cgm", "abpm"], "interval_s": 300.0}
    for name in ("streams/streams.parquet", "truth/stream_artefacts.parquet", "truth/stream_events.parquet"):
        assert name in manifest["files"], name
    bulk = orjson.loads((streamed / "fhir" / "manifest.json").read_bytes())
    assert any(o["url"].endswith("Observation.streams.ndjson") and o["type"] == "Observation" for o in bulk["output"])
    rows = pd.read_parquet(streamed / "streams" / "streams.parquet")
    assert list(rows.columns) == ["patient", "encounter", "device", "code", "time", "value", "quality"]
    steps = rows.groupby(["device", "code"], observed=True)["time"].diff().dropna().dt.total_seconds()
    abpm = rows["encounter"].isna() & rows["code"].isin(["8480-6", "8462-4"]).to_numpy()
    assert (steps[~abpm] == 300.0).all() and (steps[abpm] == 1800.0).all()  # an ABPM reads every 30 minutes
    assert set(rows["quality"].astype(str)) <= set(QUALITY)


def test_home_devices_follow_the_patients_local_clock(streamed: Path) -> None:
    """CGM compression lows start between midnight and 8 on each wearer's clock, the standard UTC offset of their
    city's time zone (as the kernel's clinic hours), in every zone of the run's wearers."""
    zones = {(c.city, c.state, c.zip): c.time_zone for c in load_library().names.cities}
    address = {p["id"]: p["address"][0] for p in _ndjson(streamed / "fhir" / "Patient.ndjson")}
    owner = {
        d["id"]: d["patient"]["reference"].removeprefix("Patient/")
        for d in _ndjson(streamed / "fhir" / "Device.ndjson")
    }
    lows = pd.read_parquet(streamed / "truth" / "stream_artefacts.parquet").query("kind == 'compression_low'")
    where = [address[owner[device]] for device in lows["device"]]
    zone = [zones[(a["city"], a["state"], a["postalCode"])] for a in where]
    offset_h = np.array([standard_utc_offset_days(z, 2024) * 24 for z in zone])
    start = lows["start"].dt
    clock = (start.hour + start.minute / 60 + offset_h) % 24
    assert len(set(zone)) >= 3 and len(lows) > 20
    assert ((clock >= 0) & (clock < 8)).all()


def test_streams_agree_with_the_charted_vitals(streamed: Path) -> None:
    """Each charted heart rate of a streamed stay is close to the stream sample nearest it."""
    events = simulator.generate(**{k: v for k, v in RUN.items() if k != "formats"}).events
    rows = pd.read_parquet(streamed / "streams" / "streams.parquet")
    heart = rows[(rows["code"] == "8867-4") & (rows["quality"] == "ok")].sort_values("time")
    heart = heart.astype({"encounter": np.int32})  # bedside rows only (home devices have no encounter)
    charted = events[(events["kind"] == "observation") & (events["code"] == "8867-4")].sort_values("time")
    charted = charted[["patient", "encounter", "time", "value"]].astype({"encounter": np.int32})
    charted["time"] = charted["time"].dt.as_unit("ms")
    near = pd.merge_asof(
        charted,
        heart[["patient", "encounter", "time", "value"]],
        on="time",
        by=["patient", "encounter"],
        tolerance=pd.Timedelta(seconds=150),
        direction="nearest",
        suffixes=("", "_stream"),
    ).dropna()
    assert len(near) > 200
    assert np.corrcoef(near["value"], near["value_stream"])[0, 1] > 0.8
    assert (near["value"] - near["value_stream"]).abs().median() < 6


def test_heart_rate_follows_septic_shock_into_recovery(streamed: Path) -> None:
    """ICU stays are septic shock from pneumonia: the stream's heart rate in the first 6 hours of the stay is
    above that of its last 6 hours (treatment brings the illness effects down), as in the charted readings."""
    rows = pd.read_parquet(streamed / "streams" / "streams.parquet")
    devices = _ndjson(streamed / "fhir" / "Device.ndjson")
    icu = {d["id"] for d in devices if d["deviceName"][0]["name"] == "ICU bedside monitor"}
    heart = rows[rows["device"].isin(icu) & (rows["code"] == "8867-4") & (rows["quality"] == "ok")].copy()
    stay = heart.groupby("device", observed=True)["time"]
    heart["from_start"] = heart["time"] - stay.transform("min")
    heart["to_end"] = stay.transform("max") - heart["time"]
    six = pd.Timedelta(hours=6)
    first = heart[heart["from_start"] < six].groupby("device", observed=True)["value"].mean()
    last = heart[heart["to_end"] < six].groupby("device", observed=True)["value"].mean()
    fall = (first - last).dropna()
    assert len(fall) >= 8
    assert fall.mean() > 4.0  # about 12/min in the charted readings of 138 stays


def test_the_truth_lists_every_flagged_sample(streamed: Path) -> None:
    rows = pd.read_parquet(streamed / "streams" / "streams.parquet")
    truth = pd.read_parquet(streamed / "truth" / "stream_artefacts.parquet")
    assert {"motion", "probe_off", "flat_line", "dropout", "warm_up"} <= set(truth["kind"])
    flagged = rows[rows["quality"] != "ok"]
    joined = flagged.merge(truth, on=["patient", "encounter", "device", "code"], suffixes=("", "_episode"))
    joined = joined[(joined["time"] >= joined["start"]) & (joined["time"] < joined["end"])]
    covered = joined[joined["kind"] == joined["quality"].astype(str)][["device", "code", "time"]].drop_duplicates()
    assert len(covered) == len(flagged)
    assert rows.loc[rows["quality"] == "dropout", "value"].isna().all()


def test_stream_fhir_resources_validate_and_point_to_the_record(streamed: Path) -> None:
    devices = _ndjson(streamed / "fhir" / "Device.ndjson")
    observations = _ndjson(streamed / "fhir" / "Observation.streams.ndjson")
    encounters = {e["id"] for e in _ndjson(streamed / "fhir" / "Encounter.ndjson")}
    patients = {p["id"] for p in _ndjson(streamed / "fhir" / "Patient.ndjson")}
    device_ids = {d["id"] for d in devices}
    for device in devices[:50]:
        get_fhir_model_class("Device").model_validate(device)
        assert device["patient"]["reference"].split("/")[1] in patients
    cgm = [o for o in observations if o["code"]["coding"][0]["code"] == "99504-3"]
    assert cgm and cgm[0]["valueSampledData"]["origin"]["unit"] == "mg/dL"
    abpm = [o for o in observations if "encounter" not in o and o["code"]["coding"][0]["code"] != "99504-3"]
    assert abpm and abpm[0]["valueSampledData"]["period"] == 1_800_000
    for observation in observations[:: max(1, len(observations) // 200)] + cgm[:20] + abpm[:20]:
        get_fhir_model_class("Observation").model_validate(observation)
        assert "encounter" not in observation or observation["encounter"]["reference"].split("/")[1] in encounters
        assert observation["device"]["reference"].split("/")[1] in device_ids
        sampled = observation["valueSampledData"]
        assert sampled["period"] in (300_000, 1_800_000) and sampled["dimensions"] == 1
        assert sampled["origin"]["system"] == "http://unitsofmeasure.org"
        glucose = observation["code"]["coding"][0]["code"] == "99504-3"  # no MDC code verified
        systems = {"http://loinc.org"} | (set() if glucose else {"urn:iso:std:iso:11073:10101"})
        assert {c["system"] for c in observation["code"]["coding"]} == systems
        assert 1 <= len(sampled["data"].split()) <= 12  # an hour at 300 s


def test_cgm_and_atrial_fibrillation_in_a_run(streamed: Path) -> None:
    """CGM readings only from the G6's date, in range, with each streamed hypoglycaemia a trough below 54 mg/dL;
    each atrial fibrillation period streamed has a more irregular heart rate than the sinus stays."""
    rows = pd.read_parquet(streamed / "streams" / "streams.parquet")
    shown = pd.read_parquet(streamed / "truth" / "stream_events.parquet")
    glucose = rows[rows["code"] == "99504-3"]
    assert len(glucose) and glucose["encounter"].isna().all()
    assert glucose["time"].min() >= pd.Timestamp("2018-03-01", tz="UTC")
    low = []
    for _, hypo in shown[shown["kind"] == "severe_hypoglycaemia"].iterrows():
        since = glucose["time"] - hypo["start"]
        near = (since >= -pd.Timedelta(minutes=15)) & (since <= pd.Timedelta(minutes=30))
        low.append(glucose.loc[near & (glucose["device"] == hypo["device"]), "value"].min() < 54)
    assert not low or np.mean(low) >= 0.7  # the capillary reading is below 54 in 94% of events
    heart = rows[(rows["code"] == "8867-4") & (rows["quality"] == "ok")].sort_values(["device", "time"])
    heart = heart.assign(step=heart.groupby("device", observed=True)["value"].diff().abs())
    af = shown[shown["kind"] == "atrial_fibrillation"]
    assert len(af) >= 3 and (af["code"] == "8867-4").all()
    in_af = heart.merge(af[["device", "start", "end"]], on="device")
    in_af = in_af[(in_af["time"] >= in_af["start"]) & (in_af["time"] < in_af["end"])]
    sinus = heart[~heart["device"].isin(set(af["device"]))]
    assert in_af["step"].median() > 1.5 * sinus["step"].median()


@pytest.mark.slow
def test_streams_do_not_depend_on_the_chunking(streamed: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    simulator.generate(**RUN, out=out, chunk_size=150, streams="icu,ward,ed,cgm,abpm", stream_interval=300)
    for name in ("Device.ndjson", "Observation.streams.ndjson"):
        assert (out / "fhir" / name).read_bytes() == (streamed / "fhir" / name).read_bytes(), name
    names = ("streams/streams.parquet", "truth/stream_artefacts.parquet", "truth/stream_events.parquet")
    for name in names:  # row groups follow the chunks; equals() first: assert_frame_equal takes minutes on 10M rows
        mine, theirs = pd.read_parquet(out / name), pd.read_parquet(streamed / name)
        if not mine.equals(theirs):
            pd.testing.assert_frame_equal(mine, theirs, obj=name)


def test_the_stream_rules_use_the_terminology(shipped_library: Library) -> None:
    rules = shipped_library.streams
    assert set(rules.settings) == {"icu", "ward", "ed", "cgm", "abpm"}
    terminology = load_terminology(shipped_library.rules_dir)
    assert terminology is not None
    codes = [c.code for c in rules.channels.values()] + [
        s.device.type for s in rules.settings.values() if s.device.type
    ]
    codes += [*rules.cgm.insulin, *rules.cgm.diagnosed, rules.cgm.hba1c, rules.atrial_fibrillation.condition]
    codes += [rules.cgm.hypoglycaemia.condition, rules.cgm.hypoglycaemia.reading]
    for code in codes:
        assert terminology.get((code.system, code.code)) == code.display, code
