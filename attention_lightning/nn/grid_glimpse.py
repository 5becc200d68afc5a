"""Glimpses on a regular grid of overlapping square cells (PHAM: Rangrej & Clark, BMVC 2021).

A ``g x g`` glimpse slides over an ``H x W`` image with stride ``s``: cell (i, j) covers rows
``i*s .. i*s+g-1`` and columns ``j*s .. j*s+g-1``; the grid has ``gh = (H-g)//s + 1`` rows and
``gw = (W-g)//s + 1`` columns, cells numbered row-major (``k = i*gw + j``). The paper's sizes follow from
the image side: 32px -> 8x8 glimpses, stride 4, a 7x7 grid; 64px -> 16x16, stride 8, 7x7.
Locations are in [-1, 1] image coordinates, (x, y) order, image center at 0 (``coords.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class GlimpseGrid:
    """Geometry of a grid of ``size`` x ``size`` glimpses with stride ``stride`` on an image of ``image`` (H, W)."""

    image: tuple[int, int]
    size: int
    stride: int

    def __post_init__(self) -> None:
        h, w = self.image
        if self.size < 1 or self.stride < 1:
            raise ValueError(f"glimpse_size={self.size} and glimpse_stride={self.stride} must be at least 1")
        if self.size > min(h, w):
            raise ValueError(f"glimpse_size={self.size} exceeds image {h}x{w}; use glimpse_size <= {min(h, w)}")

    @property
    def shape(self) -> tuple[int, int]:
        """Grid rows and columns (gh, gw)."""
        h, w = self.image
        return (h - self.size) // self.stride + 1, (w - self.size) // self.stride + 1

    @property
    def cells(self) -> int:
        gh, gw = self.shape
        return gh * gw

    def centers(self, device=None) -> Tensor:
        """Cell centers (N, 2) as (x, y) in [-1, 1], row-major cell order."""
        h, w = self.image
        gh, gw = self.shape
        # the center of a glimpse starting at pixel p is at pixel p + (g-1)/2, i.e. normalized (2p + g)/W - 1
        ys = (2 * torch.arange(gh, device=device) * self.stride + self.size) / h - 1  # (gh,)
        xs = (2 * torch.arange(gw, device=device) * self.stride + self.size) / w - 1  # (gw,)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx, yy], dim=-1).reshape(-1, 2).float()  # (N, 2)

    def boxes(self, device=None) -> Tensor:
        """Cell boxes (N, 4) as (x0, y0, x1, y1) in [-1, 1]."""
        h, w = self.image
        half = torch.tensor([self.size / w, self.size / h], device=device)  # (2,)
        c = self.centers(device)
        return torch.cat([c - half, c + half], dim=-1)  # (N, 4)


def grid_for(image_size: int | Sequence[int], glimpse_size: int | None = None,
             glimpse_stride: int | None = None) -> GlimpseGrid:
    """The grid for an image side (or (H, W)); defaults: glimpse = side // 4, stride = glimpse // 2."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    size = int(glimpse_size) if glimpse_size is not None else max(1, min(h, w) // 4)
    stride = int(glimpse_stride) if glimpse_stride is not None else max(1, size // 2)
    return GlimpseGrid((h, w), size, stride)


def all_glimpses(images: Tensor, grid: GlimpseGrid) -> Tensor:
    """Every cell's glimpse of (B, C, H, W) images as (B, N, C, g, g), row-major cells (one unfold, no loop)."""
    g, s = grid.size, grid.stride
    windows = images.unfold(2, g, s).unfold(3, g, s)  # (B, C, gh, gw, g, g), a view
    b, c, gh, gw = windows.shape[:4]
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(b, gh * gw, c, g, g)  # (B, N, C, g, g)


def glimpses_at(images: Tensor, cells: Tensor, grid: GlimpseGrid) -> Tensor:
    """The glimpse of cell ``cells[b]`` (B,) of image b of (B, C, H, W) images, as (B, C, g, g)."""
    g, s = grid.size, grid.stride
    gw = grid.shape[1]
    windows = images.unfold(2, g, s).unfold(3, g, s)  # (B, C, gh, gw, g, g), a view
    batch = torch.arange(images.shape[0], device=images.device)
    return windows[batch, :, cells // gw, cells % gw]  # (B, C, g, g)
