"""FHIR R4 text of the streams: a Device per monitored stay and, per channel, one Observation with
valueSampledData for each segment of the stay (rules/streams.yaml `segment_s`), coded with LOINC and the
ISO/IEEE 11073 MDC code, in UCUM units, pointing to the patient, the encounter and the device. The values
are written as the monitor reported them (artefacts included: the record cannot tell them apart); a dropout
is the SampledData error mark "E"."""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.export.fhir_text import ID_SYSTEM, LOINC, SNOMED, TERMINOLOGY, UCUM, dumps
from simulator.export.ids import fhir_datetime_text, resource_ids
from simulator.model.streams import Channel, Device

MDC = "urn:iso:std:iso:11073:10101"
_CATEGORY = {
    code: [{"coding": [{"system": TERMINOLOGY + "observation-category", "code": code, "display": display}]}]
    for code, display in (("vital-signs", "Vital Signs"), ("laboratory", "Laboratory"))
}


def device_lines(device_id: str, device: Device, patient_id: str, is_ended: bool) -> str:
    """The Device resource of one stay's monitor, as an ndjson line."""
    resource = {
        "resourceType": "Device",
        "id": device_id,
        "identifier": [{"system": ID_SYSTEM + "device", "value": device_id}],
        "status": "inactive" if is_ended else "active",
        "deviceName": [{"name": device.name, "type": "user-friendly-name"}],
        **(
            {"type": {"coding": [{"system": SNOMED, "code": device.type.code, "display": device.type.display}]}}
            if device.type is not None
            else {}
        ),
        "patient": {"reference": f"Patient/{patient_id}"},
    }
    return dumps(resource) + "\n"


def _data_text(values: np.ndarray, decimals: int) -> str:
    """SampledData.data: the values in units of the factor 10^-decimals, space-separated, "E" where missing."""
    missing = np.isnan(values)
    scaled = np.round(np.where(missing, 0.0, values) * 10**decimals).astype(np.int64).astype(str)
    return " ".join(np.where(missing, "E", scaled).tolist())


def segment_lines(
    seed: int,
    patient: int,
    key: int,
    refs: tuple[str, str | None, str],
    channel: Channel,
    start_ms: int,
    interval_s: float,
    values: np.ndarray,
    per_segment: int,
    category: str = "vital-signs",
) -> list[str]:
    """One Observation line per segment of `per_segment` samples of a channel's `values`; `key` identifies the
    stay and channel (the segment number is added to it for the ids); `refs`: patient, encounter (None for a
    home device) and device ids; `category`: vital-signs, or laboratory (a CGM's glucose, as the HL7 CGM IG)."""
    patient_id, encounter_id, device_id = refs
    n_segments = -(-len(values) // per_segment)
    first = np.arange(n_segments) * per_segment
    count = np.minimum(per_segment, len(values) - first)
    starts = start_ms + np.round(first * interval_s * 1000.0).astype(np.int64)
    ends = starts + np.round(count * interval_s * 1000.0).astype(np.int64)
    times = fhir_datetime_text(pd.DatetimeIndex(np.concatenate([starts, ends]).astype("datetime64[ms]"), tz="UTC"))
    texts = times.to_pylist()
    ids = resource_ids(seed, np.full(n_segments, patient), "StreamSegment", key + np.arange(n_segments))
    coding = [{"system": LOINC, "code": channel.code.code, "display": channel.code.display}]
    if channel.mdc is not None:
        coding.append({"system": MDC, "code": channel.mdc.code, "display": channel.mdc.display})
    code = {"coding": coding, "text": channel.code.display}
    encounter = {"encounter": {"reference": f"Encounter/{encounter_id}"}} if encounter_id is not None else {}
    sampled = {
        "origin": {"value": 0, "unit": channel.unit, "system": UCUM, "code": channel.unit},
        "period": interval_s * 1000.0,
        **({"factor": 10.0**-channel.decimals} if channel.decimals else {}),
        "lowerLimit": channel.limits[0],
        "upperLimit": channel.limits[1],
        "dimensions": 1,
    }
    lines = []
    for s in range(n_segments):
        data = _data_text(values[first[s] : first[s] + count[s]], channel.decimals)
        resource = {
            "resourceType": "Observation",
            "id": ids[s],
            "status": "final",
            "category": _CATEGORY[category],
            "code": code,
            "subject": {"reference": f"Patient/{patient_id}"},
            **encounter,
            "effectivePeriod": {"start": texts[s], "end": texts[n_segments + s]},
            "device": {"reference": f"Device/{device_id}"},
            "valueSampledData": {**sampled, "data": data},
        }
        lines.append(dumps(resource) + "\n")
    return lines
