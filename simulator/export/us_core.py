"""The US Core 6.1.0 profile each resource declares (`meta.profile`), in one table the exporter, the docs and
the tests read, and what a profile asks of a resource beyond the base FHIR resource.

Profiles are named as in http://hl7.org/fhir/us/core/StructureDefinition/<name>. An Observation takes the
profile of its LOINC code where a vital-sign profile fixes that code, else the profile of its category. The
cause-of-death Observation (LOINC 69453-9) matches no US Core profile and declares none.
"""

from __future__ import annotations

VERSION = "6.1.0"

PATIENT = "us-core-patient"
ENCOUNTER = "us-core-encounter"
MEDICATION_REQUEST = "us-core-medicationrequest"
ALLERGY_INTOLERANCE = "us-core-allergyintolerance"
COVERAGE = "us-core-coverage"
CARE_PLAN = "us-core-careplan"
CARE_TEAM = "us-core-careteam"
GOAL = "us-core-goal"
DOCUMENT_REFERENCE = "us-core-documentreference"
PROVENANCE = "us-core-provenance"
ORGANIZATION = "us-core-organization"
LOCATION = "us-core-location"
PRACTITIONER = "us-core-practitioner"
PRACTITIONER_ROLE = "us-core-practitionerrole"
# Condition: by category (condition-category code)
CONDITION = {
    "encounter-diagnosis": "us-core-condition-encounter-diagnosis",
    "problem-list-item": "us-core-condition-problems-health-concerns",
}
DIAGNOSTIC_REPORT_LAB = "us-core-diagnosticreport-lab"
PROCEDURE = "us-core-procedure"
IMMUNIZATION = "us-core-immunization"
SMOKING_STATUS = "us-core-smokingstatus"
BLOOD_PRESSURE = "us-core-blood-pressure"  # the systolic and diastolic panel, LOINC 85354-9

# Observation: the vital-sign profiles by the LOINC code they fix (a systolic or diastolic reading without
# its pair is a plain vital sign).
OBSERVATION_BY_CODE = {
    "85354-9": BLOOD_PRESSURE,
    "8867-4": "us-core-heart-rate",
    "9279-1": "us-core-respiratory-rate",
    "8310-5": "us-core-body-temperature",
    "8302-2": "us-core-body-height",
    "29463-7": "us-core-body-weight",
    "39156-5": "us-core-bmi",
    "59408-5": "us-core-pulse-oximetry",
    "59576-9": "us-core-pediatric-bmi-for-age",  # BMI percentile per age and sex, 2-20 years
    "77606-2": "us-core-pediatric-weight-for-height",  # weight-for-length percentile, birth to 36 months
    "9843-4": "us-core-head-circumference",
}
# Observation: by category (observation-category code), for codes not above.
OBSERVATION_BY_CATEGORY = {
    "vital-signs": "us-core-vital-signs",
    "laboratory": "us-core-observation-lab",
    "exam": "us-core-observation-clinical-result",
    "survey": "us-core-observation-screening-assessment",
    "social-history": "us-core-simple-observation",
}

# Codings a profile requires besides the observable's own: the pulse oximetry profile's code carries
# both 59408-5 (its PulseOx slice) and 2708-6 (its O2Sat slice).
EXTRA_CODINGS: dict[str, tuple[dict[str, str], ...]] = {
    "59408-5": ({"system": "http://loinc.org", "code": "2708-6", "display": "Oxygen saturation in Arterial blood"},),
}


def observation_profile(code: str, category: str) -> str:
    """The profile of an Observation of this code and category (a vital-sign code outside the vital-signs
    category takes its category's profile)."""
    if category == "vital-signs" and code in OBSERVATION_BY_CODE:
        return OBSERVATION_BY_CODE[code]
    return OBSERVATION_BY_CATEGORY[category]
