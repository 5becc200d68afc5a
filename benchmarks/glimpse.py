"""Benchmark the batched RAM glimpse sensor against a naive per-sample loop (Mnih et al. 2014 sensor).

    python -m benchmarks.glimpse [--device=cpu|cuda] [--image=60] [--size=12] [--repeats=5]

The naive reference loops over the batch and the scales in Python and area-averages each patch with two
small matrices of pixel coverage (exact for any real location, zero outside), as a per-sample port would.
Prints both timings (ms per call) and the ratio, for batch 32/128/512 and depth 1/3/4, and the sensor's
time with its cell geometry in float32 instead of the default float64 (slow on most consumer GPUs),
with the largest difference that makes.
"""
from __future__ import annotations

import argparse
import time

import torch

from attention_lightning.nn.glimpse import glimpse


def coverage(lo: torch.Tensor, cell: float, n: int) -> torch.Tensor:
    """(g, n): length of cell [lo_k, lo_k + cell] inside pixel [j, j + 1), for g cells starting at lo (g,)."""
    j = torch.arange(n, dtype=lo.dtype, device=lo.device)
    return (torch.minimum(lo[:, None] + cell, j + 1) - torch.maximum(lo[:, None], j)).clamp(min=0)


def naive_glimpse(images: torch.Tensor, loc: torch.Tensor, size: int, depth: int, scale: float) -> torch.Tensor:
    b, c, h, w = images.shape
    out = images.new_zeros(b, depth * c, size, size)
    k = torch.arange(size, dtype=images.dtype, device=images.device)
    for n in range(b):
        u = (loc[n, 0] + 1) * w / 2
        v = (loc[n, 1] + 1) * h / 2
        for d in range(depth):
            side = size * scale**d
            cell = side / size
            wy = coverage(v - side / 2 + k * cell, cell, h)  # (g, H)
            wx = coverage(u - side / 2 + k * cell, cell, w)  # (g, W)
            out[n, d * c:(d + 1) * c] = wy @ images[n] @ wx.T / cell**2  # (C, g, g)
    return out


def timed(fn, repeats: int, device: str) -> float:
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image", type=int, default=60, help="square image side in pixels")
    parser.add_argument("--size", type=int, default=12, help="glimpse size in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"device={args.device} threads={torch.get_num_threads()} image={args.image}x{args.image} "
          f"glimpse={args.size} scale=2")
    print(f"{'batch':>6} {'depth':>6} {'batched ms':>11} {'naive ms':>10} {'ratio':>7} {'max |diff|':>11}"
          f" {'f32 geom ms':>12} {'f64/f32':>8} {'f32 |diff|':>11}")
    for batch in (32, 128, 512):
        for depth in (1, 3, 4):
            images = torch.rand(batch, 1, args.image, args.image, device=args.device)
            loc = torch.rand(batch, 2, device=args.device) * 2.4 - 1.2  # some partly outside
            fast = timed(lambda: glimpse(images, loc, args.size, depth, 2.0), args.repeats, args.device)
            slow = timed(lambda: naive_glimpse(images, loc, args.size, depth, 2.0), max(1, args.repeats // 2),
                         args.device)
            diff = (glimpse(images, loc, args.size, depth, 2.0) - naive_glimpse(images, loc, args.size, depth, 2.0))
            f32 = timed(lambda: glimpse(images, loc, args.size, depth, 2.0, geometry=torch.float32), args.repeats,
                        args.device)
            d32 = glimpse(images, loc, args.size, depth, 2.0, geometry=torch.float32) - glimpse(
                images, loc, args.size, depth, 2.0)
            print(f"{batch:>6} {depth:>6} {fast:>11.2f} {slow:>10.2f} {slow / fast:>6.1f}x "
                  f"{diff.abs().max().item():>11.2e} {f32:>12.3f} {fast / f32:>7.2f}x {d32.abs().max().item():>11.2e}")


if __name__ == "__main__":
    main()
