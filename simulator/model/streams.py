"""Dense monitoring streams (rules/streams.yaml): which monitors record which vital signs in which settings, how
the signal varies between the charted readings, and the artefacts and dropouts real monitors show, each rate
with its source or stated as an assumption. `simulator.streams` reads it after the simulation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from simulator.model.schema import Code, Name, Strict
from simulator.model.sources import Sources, need_source, uncited

Positive = Annotated[float, Field(gt=0)]
Pair = Annotated[list[float], Field(min_length=2, max_length=2)]  # [low, high]
Share = Annotated[float, Field(ge=0, le=1)]
EncounterClass = Literal["emergency", "inpatient", "icu"]
ArtefactKind = Literal["motion", "probe_off", "flat_line", "dropout", "compression_low"]
# What the quality column says, strongest first: a sample in several episodes carries the first of them.
# warm_up: a CGM sensor's first hours, before it reports (not drawn: at the start of each sensor).
QUALITY_ORDER: tuple[str, ...] = ("dropout", "warm_up", "probe_off", "flat_line", "compression_low", "motion")
HomeDevice = Literal["cgm", "abpm"]
PRESSURE_CHANNELS = ("systolic_bp", "diastolic_bp")  # what a derived mean arterial pressure is taken from


class MdcCode(Strict):
    """An ISO/IEEE 11073-10101 (MDC) code: the numeric code and its reference identifier."""

    code: Annotated[str, Field(pattern=r"^\d{5,6}$")]
    display: Annotated[str, Field(pattern=r"^MDC_[A-Z0-9_]+$")]


class Variability(Strict):
    """The fast physiological variation around the charted course: an Ornstein-Uhlenbeck (AR(1)) process of
    standard deviation `sd` and correlation time `time_constant_s`; `shared` is the share of its variance
    that follows the device's common fluctuation (arousal, movement), which makes the channels co-vary, with
    the sign of `direction`."""

    sd: Annotated[float, Field(ge=0)]
    time_constant_s: Positive
    shared: Share = 0.0
    direction: Literal[1, -1] = 1
    source: Name


class Channel(Strict):
    """One monitored vital sign. `observable`: the rules/vital_signs.yaml observable whose charted readings
    anchor the stream (the stream passes through each of them); `derived`: mean arterial pressure, taken
    from the systolic and diastolic channels as DBP + (SBP - DBP) / 3, or the CGM's glucose (the file's `cgm`
    section makes its course), or an ambulatory pressure (the `abpm` section). `slow_time_constant_s`: the
    correlation time of the course between charted readings where the observable has none."""

    code: Code
    mdc: MdcCode | None = None  # left out where no ISO/IEEE 11073 code was verified
    unit: Annotated[str, Field(min_length=1)]
    decimals: Annotated[int, Field(ge=0, le=3)]
    limits: Pair
    observable: Name | None = None
    derived: Literal["mean_arterial_pressure", "cgm_glucose", "abpm"] | None = None
    slow_time_constant_s: Positive | None = None
    variability: Variability
    sensor_sd: Annotated[float, Field(ge=0)]
    sensor_source: Name
    motion_sd: Annotated[float, Field(ge=0)]
    motion_direction: Literal["both", "down"] = "both"

    @model_validator(mode="after")
    def _one_origin(self) -> Channel:
        if (self.observable is None) == (self.derived is None):
            raise ValueError("give exactly one of observable and derived")
        if self.limits[0] >= self.limits[1]:
            raise ValueError("limits: the lower limit must be below the upper one")
        return self


class Device(Strict):
    """The monitor of a setting: its FHIR Device type (left out where no SNOMED CT physical object code was
    verified, as in the HL7 CGM IG's Device) and name."""

    type: Code | None = None
    name: Annotated[str, Field(min_length=1)]
    source: Name


class Artefact(Strict):
    """Episodes of one kind: a Poisson process of `per_hour` episodes per monitored hour, each lasting a
    uniform draw between `duration_s` bounds, on the `channels` named (`device_wide`: one episode hits them
    all at once, as a patient's movement or a disconnected monitor does; else each channel has its own).
    probe_off: the value falls to a floor drawn in `floor` over `fall_s` seconds and stays flat there;
    compression_low: it falls by a share drawn in `depth` over `fall_s`. `hours`: episodes start only between
    these hours of the day (`per_hour` is then per hour of that window)."""

    per_hour: Annotated[float, Field(ge=0)]
    duration_s: Annotated[list[Positive], Field(min_length=2, max_length=2)]
    channels: list[Name] = Field(min_length=1)
    device_wide: bool = False
    floor: Pair | None = None
    depth: Pair | None = None
    fall_s: Positive | None = None
    hours: Pair | None = None
    source: Name

    @model_validator(mode="after")
    def _bounds(self) -> Artefact:
        if self.duration_s[0] > self.duration_s[1]:
            raise ValueError("duration_s: the shortest duration is above the longest")
        return self


class Setting(Strict):
    """Where streams are recorded: every encounter of `encounter_class`, or the home device `home` (its wear
    windows from the record: the file's `cgm` section), by one `device`, for `channels`. `artefacts`: the
    setting's own artefact rates instead of the file's (a home sensor fails otherwise than a bedside monitor)."""

    encounter_class: EncounterClass | None = None
    home: HomeDevice | None = None
    device: Device
    channels: list[Name] = Field(min_length=1)
    artefacts: dict[ArtefactKind, Artefact] | None = None

    @model_validator(mode="after")
    def _one_place(self) -> Setting:
        if (self.encounter_class is None) == (self.home is None):
            raise ValueError("give exactly one of encounter_class and home")
        return self


class Hypoglycaemia(Strict):
    """How a severe hypoglycaemia shows in a CGM: the condition whose onset is the trough, the capillary
    reading that gives its depth (`default_mg_dl` where none was recorded), the fall before it, the time held
    there and the recovery."""

    condition: Code
    reading: Code
    default_mg_dl: Positive
    fall_s: Positive
    hold_s: Positive
    recover_s: Positive
    source: Name


class Cgm(Strict):
    """Continuous glucose monitoring (docs/streams.md, Home devices): who wears a CGM (an `insulin` course
    started or a `diagnosed` condition), the wear windows, the device's reading interval, sensor life and
    warm-up, the course (the ADAG mean glucose of the latest `hba1c`, log-normal variability of coefficient
    of variation `cv`, `meal_share` of its variance from meals) and the sensor error (`mard`)."""

    insulin: list[Code] = Field(min_length=1)
    diagnosed: list[Code] = Field(default_factory=list)
    report_days: Positive
    report_source: Name
    interval_s: Annotated[float, Field(ge=1, le=3600)]
    sensor_days: Positive
    warm_up_s: Annotated[float, Field(ge=0)]
    device_source: Name
    hba1c: Code
    eag_slope: Positive
    eag_intercept: float
    eag_source: Name
    cv: Annotated[float, Field(gt=0, lt=1)]
    cv_source: Name
    meal_share: Share
    time_constant_s: Positive
    meal_hours: list[Annotated[float, Field(ge=0, lt=24)]] = Field(min_length=1)
    meal_jitter_s: Annotated[float, Field(ge=0)]
    meal_peak_s: Positive
    meal_size_sd: Annotated[float, Field(ge=0)]
    meal_source: Name
    mard: Annotated[float, Field(ge=0, lt=1)]
    mard_source: Name
    sensor_time_constant_s: Positive
    hypoglycaemia: Hypoglycaemia


class Abpm(Strict):
    """Ambulatory blood pressure monitoring: fitted at the visit of the `module`'s `state` from `from_year`
    on, for `duration_s`, a reading every `interval_s`; the daytime level is the visit's office readings less
    `office_offset` (systolic, diastolic), the night's (`night_hours`, UTC clock) lower by a dip drawn in
    `dip`; each reading varies around its level by its channel's variability SD."""

    module: Name
    state: Name
    from_year: Annotated[int, Field(ge=1900, le=2100)]
    from_source: Name
    duration_s: Positive
    interval_s: Annotated[float, Field(ge=60, le=3600)]
    interval_source: Name
    office_offset: Pair
    offset_source: Name
    night_hours: Pair
    dip: Pair
    dip_source: Name


class AtrialFibrillation(Strict):
    """The irregular heart rate of atrial fibrillation in the bedside streams: from the true onset of
    `condition`, `channel` gets a per-sample relative fluctuation of rr_cv / sqrt(beats_averaged)."""

    condition: Code
    channel: Name
    rr_cv: Annotated[float, Field(gt=0, lt=1)]
    beats_averaged: Annotated[int, Field(ge=1)]
    source: Name


class StreamRules(Strict):
    """The whole file. Fields are validated in this order, so each check reads the fields above it."""

    sources: Sources
    default_interval_s: Annotated[float, Field(ge=1, le=3600)]
    interval_source: Name
    segment_s: Annotated[float, Field(ge=60, le=86400)]
    shared_time_constant_s: Positive  # the correlation time of the fluctuation a device's channels share
    shared_source: Name
    channels: dict[Name, Channel] = Field(min_length=1)
    settings: dict[Name, Setting] = Field(min_length=1)
    artefacts: dict[ArtefactKind, Artefact]
    cgm: Cgm | None = None
    abpm: Abpm | None = None
    atrial_fibrillation: AtrialFibrillation | None = None

    @field_validator("interval_source", "shared_source")
    @classmethod
    def _cited(cls, source: str, info: ValidationInfo) -> str:
        need_source(source, info)
        return source

    @field_validator("channels")
    @classmethod
    def _channel_sources(cls, channels: dict[str, Channel], info: ValidationInfo) -> dict[str, Channel]:
        problems = []
        for name, channel in channels.items():
            cited = (channel.variability.source, channel.sensor_source)
            problems += uncited(info, *cited, where=f"{name}: ")
        if problems:
            raise ValueError("; ".join(problems))
        return channels

    @field_validator("settings")
    @classmethod
    def _known_channels(cls, settings: dict[str, Setting], info: ValidationInfo) -> dict[str, Setting]:
        channels = info.data.get("channels") or {}
        problems = uncited(info, *(s.device.source for s in settings.values()))
        for name, setting in settings.items():
            problems += _undeclared(name, setting.channels, channels)
            for kind, artefact in (setting.artefacts or {}).items():
                problems += _artefact_problems(f"{name}: {kind}", kind, artefact, channels)
                problems += uncited(info, artefact.source, where=f"{name}: ")
            derived = [c for c in setting.channels if c in channels and channels[c].derived == "mean_arterial_pressure"]
            missing = [i for i in PRESSURE_CHANNELS if derived and i not in setting.channels]
            problems += [f"{name}: {derived[0]} needs the channel '{i}'" for i in missing]
        if problems:
            raise ValueError("; ".join(problems))
        return settings

    @field_validator("artefacts")
    @classmethod
    def _artefact_channels(cls, artefacts: dict[str, Artefact], info: ValidationInfo) -> dict[str, Artefact]:
        channels = info.data.get("channels") or {}
        problems = uncited(info, *(a.source for a in artefacts.values()))
        for kind, artefact in artefacts.items():
            problems += _artefact_problems(kind, kind, artefact, channels)
        if problems:
            raise ValueError("; ".join(problems))
        return artefacts

    @field_validator("cgm")
    @classmethod
    def _cgm_cited(cls, cgm: Cgm | None, info: ValidationInfo) -> Cgm | None:
        if cgm is not None:
            cited = (cgm.report_source, cgm.device_source, cgm.eag_source, cgm.cv_source, cgm.meal_source)
            problems = uncited(info, *cited, cgm.mard_source, cgm.hypoglycaemia.source, where="cgm: ")
            if problems:
                raise ValueError("; ".join(problems))
        return cgm

    @field_validator("abpm")
    @classmethod
    def _abpm_cited(cls, abpm: Abpm | None, info: ValidationInfo) -> Abpm | None:
        if abpm is not None:
            cited = (abpm.from_source, abpm.interval_source, abpm.offset_source, abpm.dip_source)
            problems = uncited(info, *cited, where="abpm: ")
            if problems:
                raise ValueError("; ".join(problems))
        return abpm

    @field_validator("atrial_fibrillation")
    @classmethod
    def _af_channel(cls, af: AtrialFibrillation | None, info: ValidationInfo) -> AtrialFibrillation | None:
        if af is not None:
            problems = uncited(info, af.source, where="atrial_fibrillation: ")
            problems += _undeclared("atrial_fibrillation", [af.channel], info.data.get("channels") or {})
            if problems:
                raise ValueError("; ".join(problems))
        return af

    @model_validator(mode="after")
    def _home_sections(self) -> StreamRules:
        for home in ("cgm", "abpm"):
            if getattr(self, home) is None and any(s.home == home for s in self.settings.values()):
                raise ValueError(f"a setting is a {home}: give the {home} section")
        return self


def _artefact_problems(owner: str, kind: str, artefact: Artefact, channels: dict[str, Channel]) -> list[str]:
    """The problems of one artefact kind: undeclared channels, missing shape parameters."""
    problems = _undeclared(owner, artefact.channels, channels)
    if kind == "probe_off" and (artefact.floor is None or artefact.fall_s is None):
        problems.append(f"{owner}: give floor and fall_s")
    if kind == "compression_low" and (artefact.depth is None or artefact.fall_s is None):
        problems.append(f"{owner}: give depth and fall_s")
    return problems


def _undeclared(owner: str, names: list[str], channels: dict[str, Channel]) -> list[str]:
    """A problem for each of a setting's or artefact's channels that rules/streams.yaml does not declare."""
    return [f"{owner}: channel '{c}' is not declared" for c in names if c not in channels]
