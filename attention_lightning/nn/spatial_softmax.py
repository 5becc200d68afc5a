"""Spatial softmax and its moments: the attention pmf of DHAM.

A map of logits (B, H, W) becomes a pmf over cell positions; its expectation is a translation and its
expected L1 or L2 distance from that expectation is a scale, both in [-1, 1] image coordinates
(see ``coords``). Computed in float32 whatever the autocast dtype: the softmax over thousands of cells
and the moments are where half precision loses the location.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .coords import pixel_centers


class PmfMoments(NamedTuple):
    pmf: Tensor     # (B, H, W), sums to 1 per image
    center: Tensor  # (B, 2) expected (x, y)
    spread: Tensor  # (B,) expected L1 or L2 distance from the center


def spatial_softmax(logits: Tensor) -> Tensor:
    """Softmax over all positions of each map: (B, H, W) logits -> (B, H, W) pmf, in float32."""
    b, h, w = logits.shape
    return F.softmax(logits.float().reshape(b, h * w), dim=1).reshape(b, h, w)


def pmf_moments(
    pmf: Tensor, xs: Tensor, ys: Tensor, norm: str = "l2", eps: float = 1e-8
) -> PmfMoments:
    """Expected position and expected distance from it under ``pmf`` (B, H, W).

    ``xs`` (W,) and ``ys`` (H,) are the normalized coordinates of the columns and rows.
    ``norm='l1'`` gives E|x - tx| + |y - ty|, ``'l2'`` gives E sqrt((x - tx)^2 + (y - ty)^2).
    """
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm={norm!r} is not supported; use norm='l1' or norm='l2'")
    pmf = pmf.float()
    px = pmf.sum(dim=1)  # (B, W) marginal over columns
    py = pmf.sum(dim=2)  # (B, H) marginal over rows
    tx = (px * xs).sum(dim=1)  # (B,)
    ty = (py * ys).sum(dim=1)  # (B,)
    dx = xs.view(1, 1, -1) - tx.view(-1, 1, 1)  # (B, 1, W)
    dy = ys.view(1, -1, 1) - ty.view(-1, 1, 1)  # (B, H, 1)
    if norm == "l1":
        dist = dx.abs() + dy.abs()  # (B, H, W)
    else:
        # eps inside the root keeps the gradient finite where a cell sits exactly on the center
        dist = torch.sqrt(dx.square() + dy.square() + eps)  # (B, H, W)
    spread = (pmf * dist).flatten(1).sum(dim=1)  # (B,)
    return PmfMoments(pmf, torch.stack([tx, ty], dim=1), spread)


def spatial_softmax_moments(
    logits: Tensor, norm: str = "l2", offset: float = 0.0, full_size: tuple[int, int] | None = None, stride: int = 1
) -> PmfMoments:
    """Spatial softmax of (B, H, W) logits and its moments in the coordinates of an image of ``full_size``.

    Map cell (i, j) sits on input pixel (i * stride + offset, j * stride + offset): ``offset`` is the
    first cell's pixel (valid convolutions lose pixels at the border); with 'same' padding and stride 1
    it is 0 and ``full_size`` is the map's own size.
    """
    _, h, w = logits.shape
    fh, fw = full_size if full_size is not None else (h, w)
    xs = pixel_centers(w, offset, fw, stride, device=logits.device)
    ys = pixel_centers(h, offset, fh, stride, device=logits.device)
    return pmf_moments(spatial_softmax(logits), xs, ys, norm)
