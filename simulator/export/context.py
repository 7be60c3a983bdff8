"""What the exporters take from the run besides its patient and event tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from simulator.export.directory import Directory, build_directory
from simulator.export.history import RecordWindow
from simulator.model.library import Library
from simulator.model.messiness import Messiness
from simulator.model.reference_data import ObservationReference
from simulator.model.schema import CODE_SYSTEMS


@dataclass(frozen=True)
class ExportContext:
    """The run's seed (resource ids derive from it) and `request` (the command the Bulk manifest
    records); from the library: condition codes (for encounter reasons), the displays of the CDC race
    and ethnicity codes, and the UCUM units and lab reference ranges observations are written with; and the
    run's provider `directory` (sized to its `patients`); the `library` for the rest of the rules data;
    `history`: the window of each record (`--history YEARS`; None: the whole life); `messiness`: the
    messy-data profile the written tables get (`simulator.export.messiness`; None: clean)."""

    seed: int
    request: str
    condition_codes: dict[str, tuple[str, str, str]]
    displays: dict[str, str]
    observation_reference: ObservationReference
    directory: Directory
    library: Library
    history: RecordWindow | None = None
    messiness: Messiness | None = None

    @classmethod
    def from_library(
        cls,
        library: Library,
        seed: int,
        request: str,
        patients: int,
        history_years: float | None = None,
        world_end: date | None = None,
        messiness: Messiness | None = None,
    ) -> ExportContext:
        """The context of a run; `history_years` (with `world_end`, the day the simulated world ends) keeps
        the last years of each record; `messiness` corrupts the tables written."""
        conditions = {
            name: (CODE_SYSTEMS[c.code.system], c.code.code, c.code.display)
            for module in library.modules
            for name, c in module.conditions.items()
        }
        categories = [*library.demographics.race, *library.demographics.ethnicity]
        displays = {c.code.code: c.code.display for c in categories}
        directory = build_directory(library, seed, patients)
        history = None
        if history_years is not None:
            if world_end is None:
                raise ValueError("a record window needs the end of the simulated world")
            history = RecordWindow(history_years, np.datetime64(world_end, "ms"), library.history)
        return cls(
            seed, request, conditions, displays, library.observation_reference, directory, library, history, messiness
        )
