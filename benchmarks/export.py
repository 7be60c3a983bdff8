"""FHIR and table export throughput: resources written per second (export alone) and
patient-lifetimes per second end to end (kernel + tables + export), per output format; optionally a whole
`generate` run in one process against the same run on a Dask cluster.

    python benchmarks/export.py                      # 10,000 patients: ndjson plain, gzip, zstd, then every format
    python benchmarks/export.py --patients 2000 --formats ndjson,bundles --formats ndjson+gzip
    python benchmarks/export.py --patients 2000 --formats ndjson --dask local:2

A run is `formats` or `formats+gzip` / `formats+zstd` (the ndjson compressed). The kernel is warmed up
(compiled or loaded from Numba's cache) before timing. Export time is the time spent in the exporter for
every chunk; end-to-end time is the whole run. `--dask` times `simulator.generate` (ndjson, the run's
whole time, cluster start included) in one process and on the cluster, in parts of `--chunk-size`.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import simulator
from simulator.engine.run import RunConfig, Simulator
from simulator.export import parse_formats
from simulator.export.context import ExportContext
from simulator.export.writers import Export
from simulator.tables.chunks import chunks

# The goals of issue 34 on the 2-core machine, printed beside the figures reached (tests never time anything).
GOAL_RESOURCES_PER_S = 500_000  # FHIR resources written per second, export alone (ndjson, and bundles alike)
GOAL_PATIENTS_PER_S = 1_000  # patients per second end to end to ndjson


def run(patients: int, formats: tuple[str, ...], chunk_size: int, threads: int | None, compress: str | None) -> dict:
    sim = Simulator.build(RunConfig(patients=patients, seed=1, chunk_size=chunk_size, threads=threads))
    out = Path(tempfile.mkdtemp(prefix="ehrsim-export-"))
    try:
        context = ExportContext.from_library(sim.library, sim.config.seed, "benchmark", sim.config.patients)
        export = Export(out, formats, context, compress=compress)
        export_s = 0.0
        started = time.perf_counter()
        events = 0
        for chunk in chunks(sim):
            t0 = time.perf_counter()
            export.write(chunk.patients, chunk.events)
            export_s += time.perf_counter() - t0
            events += len(chunk.events)
        t0 = time.perf_counter()
        export.close()
        export.publish(b"{}")  # the files in place (the real run manifest is api.run's)
        export_s += time.perf_counter() - t0
        total_s = time.perf_counter() - started
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    resources = sum(export.resource_counts.values())
    return {
        "formats": ",".join(formats) + (f"+{compress}" if compress else ""),
        "patients": patients,
        "events": events,
        "resources": resources,
        "export_s": export_s,
        "total_s": total_s,
        "resources_per_s": resources / export_s if export_s else 0.0,
        "patients_per_s": patients / total_s if total_s else 0.0,
        "mb": size / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--formats", action="append", help="formats of one run (repeatable)")
    parser.add_argument("--chunk-size", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dask", help="also time generate in one process and on this cluster (local:N or an address)")
    args = parser.parse_args()
    runs = args.formats or [
        "ndjson",
        "ndjson+gzip",
        "ndjson+zstd",
        "bundles",
        "csv,parquet",
        "ndjson,bundles,csv,parquet",
    ]
    header = (
        f"{'formats':28} {'patients':>9} {'resources':>10} {'export s':>9} {'resources/s':>12} "
        f"{'total s':>8} {'patients/s':>11} {'MB':>7}"
    )
    print(header)
    for spec in runs:
        formats, _, compress = spec.partition("+")
        r = run(args.patients, parse_formats(formats), args.chunk_size, args.threads, compress or None)
        print(
            f"{r['formats']:28} {r['patients']:>9,} {r['resources']:>10,} {r['export_s']:>9.2f} "
            f"{r['resources_per_s']:>12,.0f} {r['total_s']:>8.2f} {r['patients_per_s']:>11,.0f} {r['mb']:>7.1f}"
        )
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    print(
        f"goals (issue 34): {GOAL_RESOURCES_PER_S:,} resources/s written, {GOAL_PATIENTS_PER_S:,} patients/s end to "
        "end with ndjson; CSV and Parquet no slower than ndjson"
    )
    if args.dask:
        for where in (None, args.dask):
            print(
                f"{where or 'one process':28} {generate_rate(args.patients, args.chunk_size, where):>9,.0f} patients/s"
            )


def generate_rate(patients: int, chunk_size: int, dask: str | None) -> float:
    """Patients per second of a whole `generate` run to ndjson (on `dask`, cluster start included)."""
    out = Path(tempfile.mkdtemp(prefix="ehrsim-dask-")) / "out"
    try:
        started = time.perf_counter()
        simulator.generate(patients, 1, out=out, chunk_size=chunk_size, dask=dask)
        return patients / (time.perf_counter() - started)
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
