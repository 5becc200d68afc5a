"""Image coordinates shared by every block.

Convention (the one ``F.grid_sample(..., align_corners=False)`` uses): a location is (x, y) in
[-1, 1]^2 with the image center at 0; -1 is the outer edge of the first pixel and +1 the outer edge
of the last one, so pixel j of a width-W axis has its center at (2j + 1) / W - 1.
"""
from __future__ import annotations

import torch
from torch import Tensor


def pixel_centers(
    size: int, offset: float = 0.0, full: int | None = None, stride: int = 1, device=None, dtype=torch.float32
) -> Tensor:
    """Normalized centers of ``size`` cells, cell i sitting on pixel ``i * stride + offset`` of a ``full``-pixel axis.

    ``full`` defaults to ``size``. A valid (unpadded) convolution stack that shrinks an axis of W pixels
    to W - 2*o cells has cell i centered on input pixel i + o: pass ``offset=o, full=W``.
    """
    full = size if full is None else full
    j = torch.arange(size, device=device, dtype=dtype) * stride + offset  # (size,)
    return (2 * j + 1) / full - 1


def box_from_center(center: Tensor, half: Tensor) -> Tensor:
    """Boxes (x0, y0, x1, y1) in [-1, 1] coordinates from centers (..., 2) and half sizes (...,) or (..., 2)."""
    if half.dim() == center.dim() - 1:
        half = half.unsqueeze(-1).expand_as(center)
    return torch.cat([center - half, center + half], dim=-1)  # (..., 4)


def cell_extent(xs: Tensor, ys: Tensor) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1): outer edges of a regular grid of cells centered at ``xs`` (w,) and ``ys`` (h,) in [-1, 1]."""
    def edges(c: Tensor) -> tuple[float, float]:
        half = float(c[1] - c[0]) / 2 if len(c) > 1 else 1.0  # a single cell spans the whole axis
        return float(c[0]) - half, float(c[-1]) + half

    (x0, x1), (y0, y1) = edges(xs), edges(ys)
    return x0, y0, x1, y1
