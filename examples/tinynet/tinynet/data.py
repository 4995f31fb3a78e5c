"""Two interleaved half-moons, generated deterministically (no downloads)."""

from __future__ import annotations

import numpy as np


def two_moons(n: int, *, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points in 2-D (float32) and their class (int64): the upper moon is 0, the lower moon is 1."""
    rng = np.random.default_rng(seed)
    half = n // 2
    t_upper = rng.uniform(0.0, np.pi, half)
    t_lower = rng.uniform(0.0, np.pi, n - half)
    upper = np.stack([np.cos(t_upper), np.sin(t_upper)], axis=1)
    lower = np.stack([1.0 - np.cos(t_lower), 0.5 - np.sin(t_lower)], axis=1)
    x = np.concatenate([upper, lower]) + rng.normal(0.0, noise, (n, 2))
    y = np.concatenate([np.zeros(half), np.ones(n - half)])
    order = rng.permutation(n)
    return x[order].astype(np.float32), y[order].astype(np.int64)
