"""Copying patients' blocks of event rows between the kernel's buffers in compiled loops (a gather by row
index arrays cost a quarter of a kernel call)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def copy_blocks(
    source: np.ndarray, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray, out_starts: np.ndarray
) -> None:
    """out[out_starts[i] : out_starts[i] + lengths[i]] = source[starts[i] : starts[i] + lengths[i]], for each i."""
    for i in range(starts.shape[0]):
        out[out_starts[i] : out_starts[i] + lengths[i]] = source[starts[i] : starts[i] + lengths[i]]
