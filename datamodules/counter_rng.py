"""A counter-based random source for datasets made on the fly: item i's numbers are a hash of
(data_seed, split, i, position), so any batch of items is drawn at once, in any order, in any worker or
rank, with the same result.

Train items also mix in one draw of torch's RNG per item, so a train index gives a new item every epoch
while a run still repeats under the same ``--seed`` (Lightning seeds torch, and each DataLoader worker's
torch RNG, from it). The hash is splitmix64's finalizer, applied to uint64 arrays with wrapping arithmetic.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on a uint64 array."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class ItemStreams:
    """One stream of uniforms per item: ``uniform(start, n)`` is (B, n), positions start .. start + n - 1."""

    def __init__(self, data_seed: int, split: str, indices: Sequence[int]) -> None:
        idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)  # (B,)
        with np.errstate(over="ignore"):
            h = mix(np.full(len(idx), data_seed, dtype=np.uint64) + GOLDEN)
            h = mix(h ^ np.uint64(SPLIT_IDS[split]))
            h = mix(h ^ idx)
            if split == "train":  # one torch draw per item: a new item every epoch, repeatable under --seed
                h = mix(h ^ torch.randint(0, 2**62, (len(idx),)).numpy().astype(np.uint64))
        self.keys = h  # (B,)

    def __len__(self) -> int:
        return len(self.keys)

    def bits(self, start: int, n: int) -> np.ndarray:
        """(B, n) uint64 hashes of positions start .. start + n - 1 of each item's stream."""
        pos = np.arange(start + 1, start + n + 1, dtype=np.uint64) * GOLDEN  # (n,)
        with np.errstate(over="ignore"):
            return mix(self.keys[:, None] + pos[None, :])

    def uniform(self, start: int, n: int) -> np.ndarray:
        """(B, n) float64 uniforms in [0, 1) (53 random bits each)."""
        return (self.bits(start, n) >> np.uint64(11)).astype(np.float64) / 2.0**53

    def normal(self, start: int, n: int) -> np.ndarray:
        """(B, n) float32 standard normals (Box-Muller on positions start .. start + 2 * ceil(n / 2) - 1).

        Computed in float32 from 24-bit uniforms (half the time of float64 on a 120x120 noise canvas; the
        largest |value| is sqrt(2 ln 2^24) = 5.8)."""
        half = (n + 1) // 2
        u = (self.bits(start, 2 * half) >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)  # (B, 2 * half)
        r = np.sqrt(np.float32(-2.0) * np.log1p(-u[:, :half]))  # 1 - u lies in (0, 1]: the log stays finite
        theta = np.float32(2.0 * np.pi) * u[:, half:]
        out = np.empty((len(u), 2 * half), dtype=np.float32)
        np.multiply(r, np.cos(theta), out=out[:, :half])
        np.multiply(r, np.sin(theta), out=out[:, half:])
        return out[:, :n]


def pick(u: np.ndarray, n) -> np.ndarray:
    """Integers uniform in 0 .. n - 1 from uniforms ``u`` (n broadcasts against u)."""
    return np.minimum((u * n).astype(np.int64), np.asarray(n, dtype=np.int64) - 1)
