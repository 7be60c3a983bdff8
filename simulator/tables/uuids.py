"""The one UUID formatter of patient and resource ids: 128 bits -> version-4-shaped UUID text, a column at
a time, through fixed-width ASCII byte arrays that become Arrow strings without a Python object per row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# the two hex digits of each byte value, as two ASCII bytes
_HEX_PAIRS = np.frombuffer(b"".join(f"{b:02x}".encode() for b in range(256)), np.uint16)
# the 8-4-4-4-12 groups of a UUID: (first hex digit, last hex digit + 1, first character)
_GROUPS = ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24))


def ascii_text(chars: np.ndarray, missing: np.ndarray | None = None) -> pa.LargeStringArray:
    """An (n, width) array of ASCII bytes -> an Arrow string array over the same bytes (no copy
    per row); rows where `missing` is true are null."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    valid = None if missing is None or not missing.any() else pa.py_buffer(np.packbits(~missing, bitorder="little"))
    data = pa.py_buffer(np.ascontiguousarray(chars))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), data, valid)


def uuid_strings(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Two uint64 columns (the high and low 64 bits) -> UUID strings (object array), with the version (4)
    and variant (RFC 4122) bits set as `uuid.UUID(int=..., version=4)` sets them."""
    n = len(high)
    raw = np.empty((n, 16), np.uint8)
    raw[:, :8] = high.astype(">u8").view(np.uint8).reshape(n, 8)
    raw[:, 8:] = low.astype(">u8").view(np.uint8).reshape(n, 8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = _HEX_PAIRS[raw].view(np.uint8)  # (n, 32)
    chars = np.full((n, 36), ord("-"), np.uint8)
    for first, last, at in _GROUPS:
        chars[:, at : at + last - first] = hexed[:, first:last]
    return ascii_text(chars).to_numpy(zero_copy_only=False).astype(object, copy=False)
