"""The multi-scale glimpse sensor of the Recurrent Attention Model (Mnih, Heess, Graves, Kavukcuoglu,
"Recurrent Models of Visual Attention", NIPS 2014, sec. 3 and Fig. 1A).

A glimpse at location l = (x, y) in [-1, 1]^2 (image centre 0, see ``coords``) is ``depth`` square
patches centred at l, patch i being ``size * scale**i`` pixels on a side, each reduced to
``size x size`` cells by area averaging; outside the image reads zero.

Exact definition. The image is a piecewise-constant function on the plane: pixel (r, c) covers
[c, c + 1) x [r, r + 1) in pixel units and everything outside [0, W) x [0, H) is 0. Location l maps to
the pixel-unit point (u, v) = ((x + 1) W / 2, (y + 1) H / 2), so -1 and +1 are the outer image edges
(the ``align_corners=False`` convention). Patch i is the square of side s_i = size * scale**i centred
at (u, v), cut into size x size cells of side s_i / size, and each output value is the integral of the
image over its cell divided by the cell's area. A location that does not put cell edges on pixel edges
(any real l is allowed) therefore weights each pixel by the fraction of it that the cell covers: no
rounding and no point sampling, and the output is continuous in l. When the edges do fall on pixel
edges it is the plain mean of the covered pixels (at depth 1 with a pixel-aligned centre, the image
slice itself).

Computation: one integral image S (a double cumsum, in float64 so that differences of large sums keep
1e-12 precision) per image; S of a piecewise-constant image is exactly bilinear between integer
points, and extends outside the image by clamping the coordinates (zero image outside), so one
``grid_sample(align_corners=True, padding_mode='border')`` gathers S at every cell corner of every
scale and four-corner differences give the cell integrals. Cost: O(H W) per image plus
O(depth * size^2) per glimpse, batched, and differentiable w.r.t. the image.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def patch_sides(size: int, depth: int, scale: float) -> list[float]:
    """Side in pixels of each of the ``depth`` patches: ``size * scale**i``."""
    return [size * scale**i for i in range(depth)]


def _check(size: int, depth: int, scale: float) -> None:
    if size < 1:
        raise ValueError(f"glimpse size {size} must be at least 1 pixel; use --glimpse_size >= 1")
    if depth < 1:
        raise ValueError(f"glimpse depth {depth} must be at least 1; use --depth >= 1")
    if not scale > 0:
        raise ValueError(f"glimpse scale {scale} must be positive; use e.g. --scale=2")


def glimpse(images: Tensor, loc: Tensor, size: int, depth: int = 1, scale: float = 2.0) -> Tensor:
    """Area-averaged multi-scale glimpses (B, depth*C, size, size) of (B, C, H, W) images at ``loc`` (B, 2).

    ``loc`` is (x, y) in [-1, 1] image coordinates (any real value: patches may lie partly or fully
    outside, where the image reads 0). Channels are ordered scale-major: the C channels of the finest
    patch first. Differentiable w.r.t. ``images`` (and ``loc``, piecewise); computed in float64, returned
    in ``images.dtype``.
    """
    _check(size, depth, scale)
    b, c, h, w = images.shape
    if loc.shape != (b, 2):
        raise ValueError(f"locations must be (B, 2) = ({b}, 2) (x, y) pairs, got {tuple(loc.shape)}")
    with torch.autocast(device_type=images.device.type, enabled=False):
        x = images.double()
        integral = F.pad(x.cumsum(-1).cumsum(-2), (1, 0, 1, 0))  # (B, C, H+1, W+1), S[r, c] = sum of x[:r, :c]
        opts = dict(device=images.device, dtype=torch.float64)
        sides = torch.tensor(patch_sides(size, depth, scale), **opts)  # (D,) pixels
        edges = torch.arange(size + 1, **opts) / size - 0.5  # (g+1,) cell edges, in units of the patch side
        loc = loc.double()
        u = (loc[:, 0] + 1) * (w / 2)  # (B,) centre in pixel units
        v = (loc[:, 1] + 1) * (h / 2)
        eu = u[:, None, None] + sides[None, :, None] * edges  # (B, D, g+1) x of the cell edges, pixels
        ev = v[:, None, None] + sides[None, :, None] * edges  # (B, D, g+1)
        # align_corners=True puts integral index j at -1 + 2j/W; 'border' clamps to [0, W], which is S outside
        gx = (eu * (2 / w) - 1)[:, :, None, :].expand(-1, -1, size + 1, -1)  # (B, D, g+1 rows, g+1 cols)
        gy = (ev * (2 / h) - 1)[:, :, :, None].expand(-1, -1, -1, size + 1)  # (B, D, g+1, g+1)
        grid = torch.stack([gx, gy], dim=-1).reshape(b, depth * (size + 1), size + 1, 2)  # (B, D*(g+1), g+1, 2)
        s = F.grid_sample(integral, grid, mode="bilinear", padding_mode="border", align_corners=True)
        s = s.view(b, c, depth, size + 1, size + 1)  # (B, C, D, g+1, g+1) S at every cell corner
        cell = s[..., 1:, 1:] - s[..., :-1, 1:] - s[..., 1:, :-1] + s[..., :-1, :-1]  # (B, C, D, g, g) integrals
        cell = cell / (sides / size).square().view(1, 1, depth, 1, 1)  # means over each cell
        out = cell.transpose(1, 2).reshape(b, depth * c, size, size)  # (B, D*C, g, g)
    return out.to(images.dtype)


def glimpse_boxes(loc: Tensor, size: int, depth: int, scale: float, image_size: Tuple[int, int]) -> Tensor:
    """Boxes (..., depth, 4) as (x0, y0, x1, y1) in [-1, 1] coordinates of the patches at ``loc`` (..., 2)."""
    h, w = image_size
    sides = loc.new_tensor(patch_sides(size, depth, scale))  # (D,) pixels
    half = torch.stack([sides / w, sides / h], dim=-1)  # (D, 2) half side in normalized units (2 s / W / 2)
    centre = loc.unsqueeze(-2)  # (..., 1, 2)
    return torch.cat([centre - half, centre + half], dim=-1)  # (..., D, 4)


class GlimpseSensor(nn.Module):
    """``glimpse`` with its geometry fixed: (B, C, H, W), (B, 2) -> (B, depth*C, size, size)."""

    def __init__(self, size: int, depth: int = 1, scale: float = 2.0) -> None:
        super().__init__()
        _check(size, depth, scale)
        self.size, self.depth, self.scale = size, depth, scale

    def forward(self, images: Tensor, loc: Tensor) -> Tensor:
        return glimpse(images, loc, self.size, self.depth, self.scale)

    def boxes(self, loc: Tensor, image_size: Tuple[int, int]) -> Tensor:
        """Patch boxes (..., depth, 4) in [-1, 1] coordinates for locations (..., 2)."""
        return glimpse_boxes(loc, self.size, self.depth, self.scale, image_size)

    def extra_repr(self) -> str:
        return f"size={self.size}, depth={self.depth}, scale={self.scale}"
