"""Loading a written run into a FHIR server: `load_run(LoadConfig(run_dir, server))`, the `ehrsim load`
command. It reads the run's files (never the engine), so it loads any run, made here or elsewhere."""

from simulator.load.loader import CHECKPOINT, REPORT, LoadConfig, LoadReport, load_run
from simulator.load.source import RunReadError

__all__ = ["CHECKPOINT", "REPORT", "LoadConfig", "LoadReport", "RunReadError", "load_run"]
