"""Counter-based random numbers: a SplitMix64 stream per (seed, patient, stream), and the draws of the
distributions the modules use. Numba-compiled; the reference implementation calls the same functions."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53
STREAM_PEOPLE, STREAM_EVENTS = 0, 1


@njit(cache=True, inline="always", _nrt=False)
def _mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, _nrt=False)
def stream_state(seed: int, index: int, stream: int) -> np.uint64:
    """Starting state of the stream for (seed, patient index, stream number)."""
    z = _mix(np.uint64(seed) + GOLDEN)
    z = _mix(z ^ (np.uint64(index) * GOLDEN + np.uint64(0x632BE59BD9B4E019)))
    return _mix(z + np.uint64(stream) * GOLDEN)


@njit(cache=True, inline="always", _nrt=False)
def next_u64(rng: np.ndarray) -> np.uint64:
    rng[0] += GOLDEN
    return _mix(rng[0])


@njit(cache=True, inline="always", _nrt=False)
def uniform(rng: np.ndarray) -> float:
    """Uniform on [0, 1)."""
    return float(next_u64(rng) >> np.uint64(11)) * TO_UNIT


@njit(cache=True, _nrt=False)
def normal(rng: np.ndarray) -> float:
    """Standard normal by Box-Muller (one of the pair; two uniforms per call)."""
    u1 = 1.0 - uniform(rng)
    u2 = uniform(rng)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@njit(cache=True, _nrt=False)
def exponential(rng: np.ndarray) -> float:
    """Standard exponential (mean 1)."""
    return -math.log(1.0 - uniform(rng))


@njit(cache=True, _nrt=False)
def gamma(rng: np.ndarray, shape: float) -> float:
    """Gamma(shape, 1) by Marsaglia-Tsang; shape < 1 by the u**(1/shape) boost."""
    boost = 1.0
    if shape < 1.0:
        boost = uniform(rng) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    k = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = normal(rng)
        v = (1.0 + k * x) ** 3
        if v <= 0.0:
            continue
        u = uniform(rng)
        if math.log(1.0 - u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v * boost
