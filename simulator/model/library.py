"""A Library: every validated module and rules file of a run, and where the shipped ones live."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from simulator.model.allergies_coverage import Allergies, CoverageRules
from simulator.model.audit import AuditRules
from simulator.model.calendar import Calendar
from simulator.model.care_plans import CarePlans
from simulator.model.fitted import Declared
from simulator.model.medication_dosing import MedicationDosing
from simulator.model.parsing import Located
from simulator.model.providers import Providers
from simulator.model.record_rules import HistoryRules, LabPanels, Languages, SmokingStatus
from simulator.model.reference_data import ObservationReference
from simulator.model.schema import BackgroundShare, Demographics, DiseaseModule, Mortality, Names
from simulator.model.streams import StreamRules

# The rules files every library has, each read into the Library field of its name.
RULES_FILES = {
    "demographics.yaml": Demographics,
    "mortality.yaml": Mortality,
    "names.yaml": Names,
    "observation_reference.yaml": ObservationReference,
    "medication_dosing.yaml": MedicationDosing,
    "care_plans.yaml": CarePlans,
    "providers.yaml": Providers,
    "smoking_status.yaml": SmokingStatus,
    "lab_panels.yaml": LabPanels,
    "languages.yaml": Languages,
    "allergies.yaml": Allergies,
    "coverage.yaml": CoverageRules,
    "audit.yaml": AuditRules,
    "calendar.yaml": Calendar,
    "history.yaml": HistoryRules,
    "streams.yaml": StreamRules,
}


def data_root() -> Path:
    """Where the default modules/ and rules/ live: inside the installed wheel, else the checkout."""
    package = Path(__file__).parent.parent
    packaged = package / "_data"
    if (packaged / "modules").is_dir():
        return packaged
    return package.parent


def default_modules_dir() -> Path:
    return data_root() / "modules"


def default_rules_dir() -> Path:
    return data_root() / "rules"


@dataclass(frozen=True)
class Library:
    """Every validated file of a run, with the parsed documents (for error positions) and hashes."""

    modules: tuple[DiseaseModule, ...]
    demographics: Demographics
    mortality: Mortality
    names: Names
    observation_reference: ObservationReference  # UCUM units and lab reference ranges
    medication_dosing: MedicationDosing  # dose, schedule and route of each RxNorm product
    care_plans: CarePlans  # care plans of chronic conditions, care team and clinical note codes
    providers: Providers  # sizes and codes of the provider directory
    smoking_status: SmokingStatus  # how smoking status is recorded (FHIR Observation)
    lab_panels: LabPanels  # which lab results are reported together
    languages: Languages  # the languages patients speak, by ethnicity
    allergies: Allergies  # reported allergies by allergen, age and sex
    coverage: CoverageRules  # health insurance payer by age
    audit: AuditRules  # clinical consistency rules `ehrsim audit` checks a written run against
    calendar: Calendar  # when each vaccine, drug, lab method and procedure came into use
    history: HistoryRules  # what a record exported with --history carries from before its window
    streams: StreamRules  # dense monitoring streams: channels, devices, artefact rates (`--streams`)
    rules_dir: Path
    documents: dict[str, Located] = field(repr=False)
    file_sha256: dict[str, str]  # every input file, as modules/... or rules/... (from its root) -> SHA-256
    data_sha256: dict[str, str] = field(default_factory=dict)  # module name -> digest of its parsed data
    # module name -> {path: the module file's numbers there} where a fitted file replaced them
    sourced_numbers: dict[str, dict[str, list[float]]] = field(default_factory=dict, repr=False)
    calibration: dict[str, Declared] = field(default_factory=dict, repr=False)  # declarations by module
    background_share: BackgroundShare | None = None  # rules' fitted background mortality share

    def module(self, name: str) -> DiseaseModule:
        for module in self.modules:
            if module.name == name:
                return module
        raise KeyError(name)

    def document(self, module_name: str) -> Located:
        return self.documents[module_name]


def module_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if p.name not in RULES_FILES)


def data_sha256(data: object) -> str:
    """Digest of a parsed YAML document's data: comments and layout do not change it, values do."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()
