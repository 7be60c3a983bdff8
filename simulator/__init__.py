"""ehrsim: a synthetic EHR simulator driven by calibrated disease-progression modules.

import simulator
pop = simulator.generate(patients=10_000, seed=42)
pop.patients, pop.events
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ehrsim")
except PackageNotFoundError:  # a checkout that was never installed
    __version__ = "0.0.0+checkout"

from simulator.library import Library, load_library  # noqa: E402
from simulator.loading import LoadError  # noqa: E402
from simulator.run import Population, RunConfig, Simulator, generate  # noqa: E402

__all__ = ["Library", "LoadError", "Population", "RunConfig", "Simulator", "generate", "load_library"]
