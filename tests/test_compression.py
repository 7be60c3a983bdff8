"""`--compress gzip|zstd`: the Bulk ndjson compressed, the same bytes whatever the chunk size, decompressing
to the bytes of an uncompressed run, named so in both manifests."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import zstandard
from conftest import FIXTURE_LIBRARY
from typer.testing import CliRunner

import simulator
from simulator.cli import app
from simulator.export.compression import BLOCK_BYTES, Compressor

RUN = {"patients": 60, "seed": 5, "mode": "lifetime", "formats": "ndjson", **FIXTURE_LIBRARY}
DECOMPRESS = {
    ".gz": gzip.decompress,
    ".zst": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}


def _ndjson(out: Path) -> dict[str, bytes]:
    """The run's ndjson files by type, decompressed."""
    files = {}
    for path in sorted((out / "fhir").glob("*.ndjson*")):
        data = path.read_bytes()
        files[path.name.split(".")[0]] = DECOMPRESS[path.suffix](data) if path.suffix in DECOMPRESS else data
    return files


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "out"
    simulator.generate(out=out, chunk_size=25, **RUN)
    return out


@pytest.mark.parametrize(("compress", "suffix"), [("gzip", ".gz"), ("zstd", ".zst")])
def test_a_compressed_run_decompresses_to_the_bytes_of_the_plain_run(
    plain: Path, tmp_path: Path, compress: str, suffix: str
) -> None:
    out = tmp_path / "out"
    simulator.generate(out=out, chunk_size=25, compress=compress, **RUN)
    names = sorted(p.name for p in (out / "fhir").iterdir())
    assert names and all(n.endswith(".ndjson" + suffix) for n in names if n != "manifest.json")
    assert _ndjson(out) == _ndjson(plain)
    bulk = json.loads((out / "fhir" / "manifest.json").read_text())
    assert {Path(o["url"]).name for o in bulk["output"]} == set(names) - {"manifest.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["compress"] == compress
    assert {f"fhir/{n}" for n in names} == {n for n in manifest["files"] if n.startswith("fhir/")}
    patients = manifest["files"][f"fhir/Patient.ndjson{suffix}"]
    assert patients["bytes"] == (out / "fhir" / f"Patient.ndjson{suffix}").stat().st_size
    assert patients["resources"] == RUN["patients"]


def test_gzip_is_the_same_bytes_whatever_the_chunk_size_with_no_name_and_no_time(tmp_path: Path) -> None:
    runs = {}
    for chunk_size in (7, 60):
        runs[chunk_size] = tmp_path / str(chunk_size)
        simulator.generate(out=runs[chunk_size], chunk_size=chunk_size, compress="gzip", **RUN)
    first = {p.name: p.read_bytes() for p in (runs[7] / "fhir").glob("*.gz")}
    second = {p.name: p.read_bytes() for p in (runs[60] / "fhir").glob("*.gz")}
    assert first == second
    header = first["Patient.ndjson.gz"][:10]
    assert header[3] == 0 and header[4:8] == b"\0\0\0\0"  # no file name or other flags, modification time 0


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_the_compressor_gives_the_same_bytes_however_the_pieces_are_cut(compress: str) -> None:
    rng = random.Random(3)
    data = b"".join(b'{"resourceType":"Observation","id":"%d"}\n' % rng.randrange(10**9) for _ in range(80_000))
    assert len(data) > 2 * BLOCK_BYTES
    outputs = set()
    for cuts in ([], [1, 2, BLOCK_BYTES - 2, BLOCK_BYTES + 5], sorted(rng.sample(range(len(data)), 50))):
        compressor = Compressor(compress)
        bounds = [0, *cuts, len(data)]
        pieces = [compressor.write(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
        outputs.add(b"".join(pieces) + compressor.finish())
    assert len(outputs) == 1
    assert DECOMPRESS[".gz" if compress == "gzip" else ".zst"](outputs.pop()) == data


def test_an_unknown_compression_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", "-n", "5", "--out", str(tmp_path / "o"), "--compress", "zip"])
    assert result.exit_code == 2 and "--compress: gzip or zstd" in result.output
    assert not (tmp_path / "o").exists()


def test_a_dry_run_estimates_the_compressed_size(tmp_path: Path) -> None:
    sizes = {}
    for option in ([], ["--compress", "gzip"]):
        args = ["generate", "-n", "20", "--out", str(tmp_path / "o"), "--dry-run", "-q", *option]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        line = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["ndjson"])
        number, unit = line.split()[2:4]
        sizes[bool(option)] = float(number) * {"kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    assert sizes[True] < sizes[False] / 4
