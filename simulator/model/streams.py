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
ArtefactKind = Literal["motion", "probe_off", "flat_line", "dropout"]
# What the quality column says, strongest first: a sample in several episodes carries the first of them.
QUALITY_ORDER: tuple[str, ...] = ("dropout", "probe_off", "flat_line", "motion")
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
    from the systolic and diastolic channels as DBP + (SBP - DBP) / 3. `slow_time_constant_s`: the
    correlation time of the course between charted readings where the observable has none."""

    code: Code
    mdc: MdcCode
    unit: Annotated[str, Field(min_length=1)]
    decimals: Annotated[int, Field(ge=0, le=3)]
    limits: Pair
    observable: Name | None = None
    derived: Literal["mean_arterial_pressure"] | None = None
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
    """The monitor of a setting: its FHIR Device type and name."""

    type: Code
    name: Annotated[str, Field(min_length=1)]
    source: Name


class Setting(Strict):
    """Where streams are recorded: every encounter of `encounter_class`, by one `device`, for `channels`."""

    encounter_class: EncounterClass
    device: Device
    channels: list[Name] = Field(min_length=1)


class Artefact(Strict):
    """Episodes of one kind: a Poisson process of `per_hour` episodes per monitored hour, each lasting a
    uniform draw between `duration_s` bounds, on the `channels` named (`device_wide`: one episode hits them
    all at once, as a patient's movement or a disconnected monitor does; else each channel has its own).
    probe_off: the value falls to a floor drawn in `floor` over `fall_s` seconds and stays flat there."""

    per_hour: Annotated[float, Field(ge=0)]
    duration_s: Annotated[list[Positive], Field(min_length=2, max_length=2)]
    channels: list[Name] = Field(min_length=1)
    device_wide: bool = False
    floor: Pair | None = None
    fall_s: Positive | None = None
    source: Name

    @model_validator(mode="after")
    def _bounds(self) -> Artefact:
        if self.duration_s[0] > self.duration_s[1]:
            raise ValueError("duration_s: the shortest duration is above the longest")
        return self


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
            derived = [c for c in setting.channels if c in channels and channels[c].derived]
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
            problems += _undeclared(kind, artefact.channels, channels)
            if kind == "probe_off" and (artefact.floor is None or artefact.fall_s is None):
                problems.append("probe_off: give floor and fall_s")
        if problems:
            raise ValueError("; ".join(problems))
        return artefacts


def _undeclared(owner: str, names: list[str], channels: dict[str, Channel]) -> list[str]:
    """A problem for each of a setting's or artefact's channels that rules/streams.yaml does not declare."""
    return [f"{owner}: channel '{c}' is not declared" for c in names if c not in channels]
