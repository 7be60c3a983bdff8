"""The run's provider directory: the organizations, locations and practitioners every patient's care
names, and who each patient and encounter is seen by.

The directory is shared by all patients (its resources are written once, before any patient's) and
depends only on the run's seed, its number of patients and the library, never on the chunk size: each
patient's providers are a pure function of the patient's row.

STUB (interface only): one clinic, one location and one practitioner for everyone, as before. The
interface is what the exporters use: `resources`, `patient_providers` and `encounter_providers`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.export.fhir_text import ID_SYSTEM, TERMINOLOGY

_NS = uuid.UUID("6f1d5a4e-8c0b-4c55-9b0e-6a3f0e1c7d21")  # ehrsim's namespace for shared resources


def shared_id(name: str) -> str:
    """A stable id for a shared resource, from its name in the directory."""
    return str(uuid.uuid5(_NS, name))


# The shared resource types, in the order they load in (what is referenced first).
SHARED_TYPES = ("Organization", "Location", "Practitioner", "PractitionerRole")
# Encounter columns naming who saw the patient (each a shared resource's id).
ENCOUNTER_PROVIDER_COLUMNS = ("practitioner_id", "location_id", "organization_id")
# Patient columns: the patient's primary care practitioner and clinic (organization).
PATIENT_PROVIDER_COLUMNS = ("general_practitioner_id", "clinic_id")

_ORGANIZATION_ID = shared_id("organization")
_LOCATION_ID = shared_id("location")
_PRACTITIONER_ID = shared_id("practitioner")
_ADDRESS = {"line": ["1 Example Street"], "city": "Springfield", "state": "IL", "postalCode": "62701", "country": "US"}


@dataclass(frozen=True)
class Directory:
    """Shared resources by type, in the order they load in (what is referenced first), with literal
    `Type/id` references between them."""

    resources: dict[str, list[dict]]

    def patient_providers(self, patients: pd.DataFrame) -> pd.DataFrame:
        """One row per patient (same index as `patients`): PATIENT_PROVIDER_COLUMNS."""
        n = len(patients)
        return pd.DataFrame(
            {
                "general_practitioner_id": np.full(n, _PRACTITIONER_ID, dtype=object),
                "clinic_id": np.full(n, _ORGANIZATION_ID, dtype=object),
            },
            index=patients.index,
        )

    def encounter_providers(self, encounters: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
        """One row per encounter (same index as `encounters`): ENCOUNTER_PROVIDER_COLUMNS, from the
        encounter's class and the patient (`encounters.patient` is `patients.index`)."""
        n = len(encounters)
        return pd.DataFrame(
            {
                "practitioner_id": np.full(n, _PRACTITIONER_ID, dtype=object),
                "location_id": np.full(n, _LOCATION_ID, dtype=object),
                "organization_id": np.full(n, _ORGANIZATION_ID, dtype=object),
            },
            index=encounters.index,
        )


def build_directory(seed: int, n_patients: int) -> Directory:
    """The directory of a run of `n_patients` with `seed`."""
    organization = {
        "resourceType": "Organization",
        "id": _ORGANIZATION_ID,
        "identifier": [{"system": ID_SYSTEM + "organization", "value": "ehrsim-clinic"}],
        "active": True,
        "type": [
            {
                "coding": [
                    {"system": TERMINOLOGY + "organization-type", "code": "prov", "display": "Healthcare Provider"}
                ]
            }
        ],
        "name": "ehrsim Synthetic Clinic",
        "telecom": [{"system": "phone", "value": "555-0100", "use": "work"}],
        "address": [_ADDRESS],
    }
    location = {
        "resourceType": "Location",
        "id": _LOCATION_ID,
        "identifier": [{"system": ID_SYSTEM + "location", "value": "ehrsim-clinic-main"}],
        "status": "active",
        "name": "ehrsim Synthetic Clinic, main site",
        "address": _ADDRESS,
        "managingOrganization": {"reference": f"Organization/{_ORGANIZATION_ID}"},
    }
    practitioner = {
        "resourceType": "Practitioner",
        "id": _PRACTITIONER_ID,
        "identifier": [{"system": ID_SYSTEM + "practitioner", "value": "ehrsim-clinician-1"}],
        "active": True,
        "name": [{"use": "official", "family": "Clinician", "given": ["Synthetic"], "prefix": ["Dr."]}],
    }
    return Directory({"Organization": [organization], "Location": [location], "Practitioner": [practitioner]})
