"""The multi-scale glimpse sensor of the Recurrent Attention Model (Mnih, Heess, Graves, Kavukcuoglu,
"Recurrent Models of Visual Attention", NIPS 2014, sec. 3 and Fig. 1A).

A glimpse at location l = (x, y) in [-1, 1]^2 (image center 0, see ``coords``) is ``depth`` square
patches centered at l, patch i being ``size * scale**i`` pixels on a side, each reduced to
``size x size`` cells by area averaging; outside the image reads zero.

Exact definition. The image is a piecewise-constant function on the plane: pixel (r, c) covers
[c, c + 1) x [r, r + 1) in pixel units and everything outside [0, W) x [0, H) is 0. Location l maps to
the pixel-unit point (u, v) = ((x + 1) W / 2, (y + 1) H / 2), so -1 and +1 are the outer image edges
(the ``align_corners=False`` convention). Patch i is the square of side s_i = size * scale**i centered
at (u, v), cut into size x size cells of side s_i / size, and each output value is the integral of the
image over its cell divided by the cell's area. A location that does not put cell edges on pixel edges
(any real l is allowed) therefore weights each pixel by the fraction of it that the cell covers: no
rounding and no point sampling, and the output is continuous in l. When the edges do fall on pixel
edges it is the plain mean of the covered pixels (at depth 1 with a pixel-aligned center, the image
slice itself).

Computation, local to each glimpse (cost independent of the image size). For scale i the patch's
left edge x0 = u - s_i / 2 is split into an integer window offset floor(x0) and a fraction; only the
window of ceil(s_i) + 2 pixels per axis starting at that offset is gathered from each image (one
batched ``gather``; indices are clamped and the pixels that fall outside the image get weight 0). The
cell integral is separable: cell (r, q) = sum_jk a_rj * x_jk * b_qk, where a_rj (b_qk) is the length
of row cell r (column cell q) inside window pixel j (k), i.e. clamp(e_{r+1} - j, 0, 1) -
clamp(e_r - j, 0, 1) with e the cell edges relative to the window. That is exact for any cell width
(integer or not, e.g. scale 1.5) and any real location, and is two small batched matmuls per scale:
O(C * size * s_i^2) per glimpse, whatever H and W are. Weights are formed in float64 (``geometry``) and applied in
the image's precision (at least float32; float64 images stay float64); all sums are local, so no large
totals are differenced. Differentiable w.r.t. the image (the gather's backward scatters into it).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from .precision import autocast_off


def patch_sides(size: int, depth: int, scale: float) -> list[float]:
    """Side in pixels of each of the ``depth`` patches: ``size * scale**i``."""
    return [size * scale**i for i in range(depth)]


def _check(size: int, depth: int, scale: float) -> None:
    if size < 1:
        raise ValueError(f"glimpse size={size} must be at least 1 pixel; use size >= 1")
    if depth < 1:
        raise ValueError(f"glimpse depth={depth} must be at least 1; use depth >= 1")
    if not scale > 0:
        raise ValueError(f"glimpse scale={scale} must be positive; use e.g. scale=2")


def _window(start: Tensor, cell: float, size: int, extent: int) -> tuple[Tensor, Tensor]:
    """Window offsets (...,) and cell weights (..., size, n) along an axis of ``extent`` pixels.

    ``size`` cells of width ``cell`` start at ``start`` (...,) (pixel units, the geometry dtype; any leading
    shape, e.g. (B,) for one axis or (B, 2) for both axes of a square image at once). The patch touches
    at most ceil(size * cell) + 1 pixels from floor(start); the window is that many (or the whole axis,
    if shorter), shifted to lie inside the image, so it holds every in-image pixel the patch touches.
    Weight [k, j] is the length of cell k inside window pixel j (pixels); parts of a cell outside the
    image fall outside the window and so read 0.
    """
    n = min(math.ceil(size * cell) + 1, extent)
    start = start.nan_to_num(nan=math.inf)  # a NaN location reads 0, like one far outside
    offset = start.floor().clamp(0, extent - n)  # (...,) integral
    cells = torch.arange(size + 1, device=start.device, dtype=start.dtype)  # (g+1,)
    edges = (start - offset).unsqueeze(-1) + cell * cells  # (..., g+1) cell edges relative to the window
    pixels = torch.arange(n, device=start.device, dtype=start.dtype)  # (n,)
    part = (edges.unsqueeze(-1) - pixels).clamp(0, 1)  # (..., g+1, n) length of [0, e_k) inside pixel j
    return offset.long(), part[..., 1:, :] - part[..., :-1, :]  # (...,), (..., g, n)


def glimpse(images: Tensor, loc: Tensor, size: int, depth: int = 1, scale: float = 2.0,
            geometry: torch.dtype = torch.float64) -> Tensor:
    """Area-averaged multi-scale glimpses (B, depth*C, size, size) of (B, C, H, W) images at ``loc`` (B, 2).

    ``loc`` is (x, y) in [-1, 1] image coordinates (any real value: patches may lie partly or fully
    outside, where the image reads 0). Channels are ordered scale-major: the C channels of the finest
    patch first. Differentiable w.r.t. ``images`` (and ``loc``, piecewise); sums in
    ``images.dtype`` promoted to at least float32, returned in ``images.dtype``. ``geometry`` is the dtype
    the cell edges are formed in: float64 keeps sub-pixel edges exact to ~1e-12 at any image size;
    float32 (error ~1e-5 px at a few hundred px) exists for benchmarks/glimpse.py to compare costs.
    """
    _check(size, depth, scale)
    b, c, h, w = images.shape
    if loc.shape != (b, 2):
        raise ValueError(f"locations must be (B, 2) = ({b}, 2) (x, y) pairs, got {tuple(loc.shape)}")
    dtype = torch.promote_types(images.dtype, torch.float32)
    with autocast_off(images.device.type):
        flat = images.to(dtype).reshape(b, c, h * w)  # (B, C, H*W)
        loc = loc.to(geometry)
        if h == w:  # both axes alike: one pass over (B, 2)
            center = (loc + 1) * (w / 2)  # (B, 2) center in pixel units, (u, v)
        else:
            u = (loc[:, 0] + 1) * (w / 2)  # (B,) center in pixel units
            v = (loc[:, 1] + 1) * (h / 2)
        outs = []
        for side in patch_sides(size, depth, scale):
            if h == w:
                o, wts = _window(center - side / 2, side / size, size, w)  # (B, 2), (B, 2, g, n)
                wts = wts.to(dtype)
                ox, oy, wx, wy = o[:, 0], o[:, 1], wts[:, 0], wts[:, 1]
            else:
                ox, wx = _window(u - side / 2, side / size, size, w)  # (B,), (B, g, nx)
                oy, wy = _window(v - side / 2, side / size, size, h)  # (B,), (B, g, ny)
            nx, ny = wx.shape[-1], wy.shape[-1]
            starts = (oy * w + ox)[:, None] + w * torch.arange(ny, device=images.device)  # (B, ny) row starts
            index = starts[:, :, None] + torch.arange(nx, device=images.device)  # (B, ny, nx) flat pixel index
            window = flat.gather(2, index.view(b, 1, ny * nx).expand(b, c, -1)).view(b, c, ny, nx)  # (B, C, ny, nx)
            wy, wx = wy.to(dtype).unsqueeze(1), wx.to(dtype).unsqueeze(1)  # (B, 1, g, n)
            outs.append(wy @ window @ wx.transpose(-1, -2) / (side / size) ** 2)  # (B, C, g, g) cell means
        out = outs[0] if depth == 1 else torch.stack(outs, 1).reshape(b, depth * c, size, size)  # (B, D*C, g, g)
    return out.to(images.dtype)


def glimpse_boxes(loc: Tensor, size: int, depth: int, scale: float, image_size: tuple[int, int]) -> Tensor:
    """Boxes (..., depth, 4) as (x0, y0, x1, y1) in [-1, 1] coordinates of the patches at ``loc`` (..., 2)."""
    h, w = image_size
    sides = loc.new_tensor(patch_sides(size, depth, scale))  # (D,) pixels
    half = torch.stack([sides / w, sides / h], dim=-1)  # (D, 2) half side in normalized units (2 s / W / 2)
    center = loc.unsqueeze(-2)  # (..., 1, 2)
    return torch.cat([center - half, center + half], dim=-1)  # (..., D, 4)


class GlimpseSensor(nn.Module):
    """``glimpse`` with its geometry fixed: (B, C, H, W), (B, 2) -> (B, depth*C, size, size)."""

    def __init__(self, size: int, depth: int = 1, scale: float = 2.0) -> None:
        super().__init__()
        _check(size, depth, scale)
        self.size, self.depth, self.scale = size, depth, scale

    def forward(self, images: Tensor, loc: Tensor) -> Tensor:
        return glimpse(images, loc, self.size, self.depth, self.scale)

    def boxes(self, loc: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Patch boxes (..., depth, 4) in [-1, 1] coordinates for locations (..., 2)."""
        return glimpse_boxes(loc, self.size, self.depth, self.scale, image_size)

    def extra_repr(self) -> str:
        return f"size={self.size}, depth={self.depth}, scale={self.scale}"
