"""Differentiable crop by an axis-aligned affine transform (the bilinear sampler of Spatial Transformer
Networks, Jaderberg et al. 2015), restricted to translation and isotropic scale as DHAM uses it.

A crop of center (tx, ty) and half size s (all in [-1, 1] image coordinates, see ``coords``) maps output
pixel centers onto the input square [tx - s, tx + s] x [ty - s, ty + s]; outside the image reads zero.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def crop_theta(center: Tensor, half: Tensor) -> Tensor:
    """Affine matrices (B, 2, 3) [[s, 0, tx], [0, s, ty]] from centers (B, 2) and half sizes (B,) or (B, 2)."""
    if half.dim() == 1:
        half = half.unsqueeze(1).expand(-1, 2)
    theta = center.new_zeros(center.shape[0], 2, 3)
    theta[:, 0, 0] = half[:, 0]
    theta[:, 1, 1] = half[:, 1]
    theta[:, :, 2] = center
    return theta


def affine_crop(images: Tensor, center: Tensor, half: Tensor, out_size: int | tuple[int, int]) -> Tensor:
    """Bilinear crop of (B, C, H, W) images to (B, C, h, w), differentiable in images, center and size."""
    oh, ow = (out_size, out_size) if isinstance(out_size, int) else out_size
    b, c = images.shape[:2]
    theta = crop_theta(center, half).to(images.dtype)
    grid = F.affine_grid(theta, [b, c, oh, ow], align_corners=False)  # (B, h, w, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, C, h, w)
