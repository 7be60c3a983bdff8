"""ehrsim: a synthetic EHR simulator driven by calibrated disease-progression modules.

import simulator
pop = simulator.generate(patients=10_000, seed=42)
pop.patients, pop.events
"""

from simulator.api import ExportConfig, Population, audit, calibrate, generate, run, validate
from simulator.engine.run import RunConfig, Simulator
from simulator.model.library import Library
from simulator.model.loading import load_library
from simulator.model.parsing import LoadError
from simulator.version import __version__

__all__ = [
    "__version__",
    "ExportConfig",
    "Library",
    "LoadError",
    "Population",
    "RunConfig",
    "Simulator",
    "audit",
    "calibrate",
    "generate",
    "load_library",
    "run",
    "validate",
]
