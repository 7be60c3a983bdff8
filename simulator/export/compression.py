"""Compressed Bulk ndjson (`--compress gzip|zstd`): `fhir/<Type>.ndjson.gz` or `.ndjson.zst`.

The bytes are deterministic: one compressor per file for the whole run, at a fixed level, fed in blocks of
a fixed size whatever the sizes of the pieces written (the chunk size, the slices of patients), so the
same seed gives the same compressed bytes at any chunk size. gzip is written by hand around raw deflate
(RFC 1952: no file name, modification time 0, OS byte 255 "unknown"), as Bulk Data clients and servers
read it with any gzip library; zstd uses the `zstandard` package (`pip install "ehrsim[zstd]"`), one
thread, with a content checksum.
"""

from __future__ import annotations

import struct
import zlib
from typing import Protocol

from simulator.errors import ConfigError

SUFFIXES = {"gzip": ".gz", "zstd": ".zst"}  # --compress -> the suffix after .ndjson
GZIP_LEVEL = 6  # zlib's default level (Z_DEFAULT_COMPRESSION), fixed: another level gives other bytes
ZSTD_LEVEL = 3  # zstd's default level
BLOCK_BYTES = 1 << 20  # the compressor is always fed whole blocks of this size (and the rest at the end)
# RFC 1952 header: magic, deflate, no flags, mtime 0, no extra flags, OS 255 (unknown)
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class _Codec(Protocol):
    def compress(self, data: bytes | memoryview) -> bytes: ...

    def flush(self) -> bytes: ...


class _Gzip:
    """One gzip member: the header, raw deflate of everything written, then CRC-32 and size."""

    def __init__(self) -> None:
        self.deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.crc = 0
        self.size = 0
        self.header = GZIP_HEADER

    def compress(self, data: bytes | memoryview) -> bytes:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        out, self.header = self.header + self.deflate.compress(data), b""
        return out

    def flush(self) -> bytes:
        tail = self.deflate.flush() + struct.pack("<II", self.crc, self.size & 0xFFFFFFFF)
        return self.header + tail


class _Zstd:
    """One zstd frame (no content size, as it is not known in advance; with a checksum)."""

    def __init__(self) -> None:
        import zstandard

        self.stream = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, threads=0).compressobj()

    def compress(self, data: bytes | memoryview) -> bytes:
        return self.stream.compress(data)

    def flush(self) -> bytes:
        return self.stream.flush()


def check_compression(compress: str | None) -> str | None:
    """`compress` if it is None, "gzip" or "zstd" (with its package installed), else ConfigError."""
    if compress is None:
        return None
    if compress not in SUFFIXES:
        raise ConfigError("compress", f"gzip or zstd (got {compress!r})")
    if compress == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "compress", 'zstd needs the zstandard package: pip install "ehrsim[zstd]" (or use gzip)'
            ) from None
    return compress


class Compressor:
    """Compresses the pieces of one file in fixed blocks: `write` returns the compressed bytes ready so
    far (often none), `finish` the rest."""

    def __init__(self, compress: str):
        self.codec: _Codec = _Gzip() if compress == "gzip" else _Zstd()
        self.pending = bytearray()

    def write(self, data: bytes | memoryview) -> bytes:
        view = memoryview(data).cast("B")
        out = []
        if self.pending:
            taken = BLOCK_BYTES - len(self.pending)
            self.pending += view[:taken]
            view = view[taken:]
            if len(self.pending) < BLOCK_BYTES:
                return b""
            out.append(self.codec.compress(bytes(self.pending)))
            self.pending.clear()
        whole = len(view) - len(view) % BLOCK_BYTES
        for start in range(0, whole, BLOCK_BYTES):
            out.append(self.codec.compress(view[start : start + BLOCK_BYTES]))
        self.pending += view[whole:]
        return b"".join(out)

    def finish(self) -> bytes:
        last = self.codec.compress(bytes(self.pending)) if self.pending else b""
        self.pending.clear()
        return last + self.codec.flush()
