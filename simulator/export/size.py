"""How much a run will write: a pilot of its first patients written to a temporary folder, scaled up."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from simulator.engine.run import Simulator
from simulator.export.context import ExportContext
from simulator.export.writers import FOLDERS, Export
from simulator.tables.chunks import chunk_tables

PILOT_PATIENTS = 100  # a size estimate writes this many patients to a temporary folder and scales up


@dataclass(frozen=True)
class SizeEstimate:
    """The bytes a run would write per format, scaled from a pilot of its first patients, and the bytes
    free on the disk it would write to."""

    bytes_by_format: dict[str, int]
    pilot_patients: int
    free_bytes: int

    @property
    def total(self) -> int:
        return sum(self.bytes_by_format.values())

    def describe(self) -> str:
        """'about 4.6 GB (ndjson 4.6 GB, parquet 42 MB), estimated from its first 100 patients'"""
        parts = ", ".join(f"{kind} {human_bytes(n)}" for kind, n in self.bytes_by_format.items())
        return f"about {human_bytes(self.total)} ({parts}), estimated from its first {self.pilot_patients} patients"

    def shortfall(self, out: Path) -> str | None:
        """A warning when the disk of `out` has less free space than the run needs."""
        if self.total <= self.free_bytes:
            return None
        free, total = human_bytes(self.free_bytes), human_bytes(self.total)
        return f"warning: {free} free on the disk of {out}/, less than the {total} of this run: it will stop when full"


def human_bytes(n: float) -> str:
    """Bytes in SI units: '460 kB', '4.6 GB'."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 999.5:
            return f"{n:.0f} {unit}" if unit == "B" or n >= 9.95 else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB" if n < 9.95 else f"{n:.0f} TB"


def estimate_size(
    sim: Simulator,
    out: Path,
    formats: tuple[str, ...],
    bundle_method: str,
    base_url: str | None,
    context: ExportContext,
    compress: str | None = None,
) -> SizeEstimate:
    """Write the run's first PILOT_PATIENTS patients to a temporary folder, in its formats, and scale the bytes
    up to the whole run with its expected decedents (the files' fixed parts too: an estimate, slightly high
    for Parquet, which compresses better at length). Per-patient output varies a lot (coefficient of
    variation 0.67 in bytes per patient for the shipped modules), so 100 patients give about +-15 %."""
    n = min(PILOT_PATIENTS, sim.config.patients)
    with tempfile.TemporaryDirectory(prefix="ehrsim-pilot-") as folder:
        writer = Export(Path(folder), formats, context, bundle_method, base_url, compress)  # type: ignore[arg-type]
        try:
            chunk = chunk_tables(sim, 0, n)
            writer.write(chunk.patients, chunk.events)
            files = writer.close()
        finally:
            writer.abort()
    # a population run's decedents (`--decedents`) are records beyond its patients: about the life tables'
    # deaths in the window (the pilot's living patients stand in for their size)
    decedents = sim.config.patients * sim.people_tables.deaths * sim.config.decedent_years
    scale = (sim.config.patients + decedents) / n if n else 1.0
    by_format = {
        kind: round(scale * sum(f["bytes"] for name, f in files.items() if name.startswith(FOLDERS[kind] + "/")))
        for kind in formats
    }
    existing = next(folder for folder in (out, *out.parents) if folder.exists())
    return SizeEstimate(by_format, n, shutil.disk_usage(existing).free)
