"""DHAM: differentiable hard attention module (a Spatial Transformer restricted to shift and scale).

A short conv head without pooling ends in one map; its spatial softmax is a pmf over positions whose
expectation gives the translation (tx, ty) and whose expected L1/L2 distance from it, times a factor,
gives the half size s of a square crop. A bilinear sampler cuts that crop (default 28x28) out of the
input image and a small CNN classifies it. Only cross-entropy trains the head: the gradient reaches it
through the sampler (d crop / d (tx, ty, s)) and the moments. Works on any input size.

On noisy inputs (``configs/dham_noisy120.yaml``) three options matter: ``head_pool`` averages the
input before the head, so a randomly initialized head already responds more to the digit than to the
noise; ``crop_antialias`` reads a zoomed-out crop from a mean-pooled pyramid, so the classifier sees
the digit with the noise averaged out before the crop has learned to zoom in (the bilinear sampler
point-samples the noise at full strength, which left the model at chance); and ``head_padding='valid'``,
because a 'same'-padded head's border cells read zero padding where every other cell reads noise, which
sets them apart, and runs locked onto the image's edge. A low ``pmf_temperature`` there sharpened the pmf
onto single cells before the head had found the digit, and the crop, whose size is the pmf's spread,
shrank to a few pixels.
"""
from __future__ import annotations

from typing import Any, Literal
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attention import Attention
from ..nn.affine_crop import affine_crop
from ..nn.coords import box_from_center, cell_extent, pixel_centers
from ..nn.spatial_softmax import PmfMoments, pmf_moments, spatial_softmax
from ..registry import register_model
from .base import AttentionModel, linear_decay


Padding = Literal["same", "valid"]


class AttentionHead(nn.Module):
    """Conv layers without pooling ending in one logit map; ``padding='same'|'valid'``.

    ``stride`` > 1 applies to the first conv only (a cheaper, coarser map on large inputs); ``pool`` > 1
    first averages the input over ``pool`` x ``pool`` blocks (noise falls by the factor ``pool``, the map
    and its cost by ``pool``^2). Map cell i then sits on input pixel ``i * stride + offset`` (``stride`` and
    ``offset`` here counting the pooling), which the moments use, so the crop stays aligned.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], kernel_size: int, padding: Padding,
                 stride: int = 1, pool: int = 1) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"--head_kernel={kernel_size} must be odd so each map cell has a center pixel")
        if stride < 1:
            raise ValueError(f"--head_stride={stride} must be at least 1")
        if pool < 1:
            raise ValueError(f"--head_pool={pool} must be at least 1")
        r = kernel_size // 2
        pad = {"same": r, "valid": 0}[padding]
        layers, c, widths = [], in_channels, list(channels) + [1]
        for i, out in enumerate(widths):
            layers.append(nn.Conv2d(c, out, kernel_size, stride=stride if i == 0 else 1, padding=pad))
            if i < len(widths) - 1:
                layers += [nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        self.net = nn.Sequential(*layers)
        self.pool = pool
        self.stride = stride * pool
        # map cell i is centered on pooled pixel i * stride + o: the first conv's window center is at pooled
        # pixel stride*i - pad + r; each later unpadded conv moves it by r cells (r*stride pooled pixels).
        # Pooled pixel j averages input pixels j*pool .. j*pool + pool - 1, centered on j*pool + (pool - 1)/2.
        later = 0 if padding == "same" else (len(widths) - 1) * r * stride
        offset = (r - pad + later) * pool + (pool - 1) / 2  # a half pixel when pool is even
        self.offset: int | float = int(offset) if offset == int(offset) else offset

    def forward(self, images: Tensor) -> Tensor:
        if self.pool > 1:
            images = F.avg_pool2d(images, self.pool)  # (B, C, H // pool, W // pool)
        return self.net(images).squeeze(1)  # (B, h', w')

    def cell_centers(self, map_size: tuple[int, int], image_size: tuple[int, int], device=None) -> tuple[Tensor, Tensor]:
        """Normalized x (w',) and y (h',) centers of the map's cells in an image of ``image_size`` (H, W)."""
        (mh, mw), (h, w) = map_size, image_size
        return (pixel_centers(mw, self.offset, w, self.stride, device=device),
                pixel_centers(mh, self.offset, h, self.stride, device=device))


def mip_crop(images: Tensor, center: Tensor, half: Tensor, out_size: int) -> Tensor:
    """Anti-aliased ``affine_crop``: (B, C, H, W) -> (B, C, out, out), sampled from a mean-pooled pyramid.

    Output pixels of a crop of half size s lie ``step = s * max(H, W) / out_size`` input pixels apart. Level j
    of the pyramid is the image mean-pooled over 2^j x 2^j blocks (levels exist while H and W divide by 2^j);
    the crop is read at level log2(step), clamped to the pyramid, blending the two nearest levels linearly
    (trilinear mipmapping), so a zoomed-out crop averages the pixels it covers (noise falls with the zoom)
    instead of point-sampling them. At step <= 1 it is ``affine_crop``. Differentiable in images, center and s.
    """
    h, w = images.shape[-2:]
    levels = [images]
    while h % 2 ** len(levels) == 0 and w % 2 ** len(levels) == 0 and min(h, w) // 2 ** len(levels) >= 2:
        levels.append(F.avg_pool2d(levels[-1], 2))  # (B, C, H / 2^j, W / 2^j)
    crops = torch.stack([affine_crop(x, center, half, out_size) for x in levels])  # (L, B, C, out, out)
    step = half.float() * max(h, w) / out_size  # (B,) input pixels between output pixels
    level = torch.log2(step.clamp_min(1e-6)).clamp(0, len(levels) - 1)  # (B,)
    j = torch.arange(len(levels), device=images.device, dtype=level.dtype)[:, None]  # (L, 1)
    weight = (1 - (level[None] - j).abs()).clamp_min(0)  # (L, B) hat functions: two neighbours sum to 1
    return (weight[:, :, None, None, None].to(crops.dtype) * crops).sum(0)  # (B, C, out, out)


class SmallCNN(nn.Module):
    """Classifier of the crop: conv-pool blocks then an MLP."""

    def __init__(self, in_channels: int, channels: Sequence[int], hidden: int, num_classes: int) -> None:
        super().__init__()
        layers, c = [], in_channels
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(3), nn.Flatten())
        self.mlp = nn.Sequential(nn.Linear(c * 9, hidden), nn.ReLU(inplace=True), nn.Dropout(0.2), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.features(x))


@register_model("dham", "Differentiable hard attention: conv head -> spatial softmax -> shift/scale crop -> CNN")
class DHAM(AttentionModel):
    """Differentiable hard attention: one shift/scale crop located by a spatial softmax, then a small CNN.

    Arguments:
        num_classes: number of classes.
        in_channels: image channels.
        head_channels: widths of the attention head's hidden conv layers (before the final 1-channel map).
        head_kernel: odd kernel size of every head conv.
        head_padding: same (map as large as the input) or valid (border cells dropped).
        head_stride: stride of the head's first conv (a coarser, cheaper map).
        head_pool: average the input over head_pool x head_pool blocks before the head (1: no pooling).
        crop_size: side in pixels of the crop the classifier reads.
        crop_antialias: read the crop from a mean-pooled pyramid at the crop's zoom (no aliasing of noise).
        scale_norm: l1 or l2 expected distance from the pmf's center, which sets the crop size.
        pmf_temperature: the head's logits are divided by it (its last conv starts multiplied by it: same initial pmf).
        scale_factor: crop half size = scale_factor x the pmf's expected distance ([-1, 1] coordinates).
        learn_scale_factor: train the scale factor (else a fixed buffer).
        classifier_channels: widths of the classifier's conv-pool blocks.
        classifier_hidden: width of the classifier's hidden layer.
        lr: Adam learning rate.
        lr_decay: anneal the learning rate linearly to 0 over training.
        weight_decay: L2 weight decay.
    """

    ignores_facts = ("image_size",)  # the head and the crop work on any image size

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        head_channels: Sequence[int] = (16,),
        head_kernel: int = 5,
        head_padding: Padding = "same",
        head_stride: int = 2,
        head_pool: int = 1,
        crop_size: int = 28,
        crop_antialias: bool = False,
        scale_norm: Literal["l1", "l2"] = "l2",
        pmf_temperature: float = 1.0,
        scale_factor: float = 2.0,
        learn_scale_factor: bool = True,
        classifier_channels: Sequence[int] = (32, 64),
        classifier_hidden: int = 128,
        lr: float = 1e-3,
        lr_decay: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(num_classes, lr, weight_decay)
        self.check_positive(crop_size=crop_size, scale_factor=scale_factor, lr=lr, pmf_temperature=pmf_temperature)
        self.head = AttentionHead(in_channels, head_channels, head_kernel, head_padding, head_stride, head_pool)
        with torch.no_grad():  # the same initial pmf whatever the temperature (see locate)
            self.head.net[-1].weight.mul_(pmf_temperature)
            self.head.net[-1].bias.mul_(pmf_temperature)
        log_factor = torch.tensor(float(scale_factor)).log()
        if learn_scale_factor:
            self.log_scale_factor = nn.Parameter(log_factor)
        else:
            self.register_buffer("log_scale_factor", log_factor)
        self.classifier = SmallCNN(in_channels, classifier_channels, classifier_hidden, num_classes)

    def locate(self, images: Tensor) -> tuple[PmfMoments, Tensor]:
        """The attention pmf with its moments, and the crop half size s (B,), for (B, C, H, W) images."""
        h, w = images.shape[-2:]
        if min(h, w) <= 2 * self.head.offset + self.head.stride:
            raise ValueError(
                f"image {h}x{w} is too small for a valid-padded head that trims {self.head.offset} pixels per side; "
                f"use --head_padding=same or a smaller --head_kernel"
            )
        # dividing by the temperature (the last conv starts multiplied by it) leaves the initial pmf as it
        # was, while each Adam step moves the logits 1/temperature times as far: the pmf can sharpen faster
        logits = self.head(images) / self.hparams.pmf_temperature  # (B, h', w')
        xs, ys = self.head.cell_centers(logits.shape[-2:], (h, w), logits.device)
        moments = pmf_moments(spatial_softmax(logits), xs, ys, self.hparams.scale_norm)
        half = self.log_scale_factor.exp() * moments.spread  # (B,)
        return moments, half

    def crop(self, images: Tensor) -> tuple[Tensor, PmfMoments, Tensor]:
        moments, half = self.locate(images)
        crop = mip_crop if self.hparams.crop_antialias else affine_crop
        view = crop(images, moments.center, half, self.hparams.crop_size)  # (B, C, crop, crop)
        return view, moments, half

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.crop(images)[0])  # (B, K)

    def loss_terms(self, batch: Any, stage: str) -> tuple[dict[str, Tensor], Tensor]:
        images, labels = self.inputs(batch), self.targets(batch)
        view, moments, half = self.crop(images)
        logits = self.classifier(view)
        if stage != "test":
            for name, v in (("s", half), ("tx", moments.center[:, 0]), ("ty", moments.center[:, 1])):
                self.log(f"{stage}/{name}_mean", v.mean().detach(), on_step=False, on_epoch=True)
                self.log(f"{stage}/{name}_std", v.std().detach() if v.numel() > 1 else v.new_zeros(()),
                         on_step=False, on_epoch=True)
        return {"ce": F.cross_entropy(logits, labels)}, logits

    def configure_optimizers(self):
        opt = super().configure_optimizers()
        if not self.hparams.lr_decay:
            return opt
        return linear_decay(opt, self.planned_steps())

    @torch.no_grad()
    def attention(self, batch: Any) -> Attention:
        images = self.inputs(batch)
        view, moments, half = self.crop(images)
        probs = self.classifier(view).softmax(-1)
        box = box_from_center(moments.center, half)  # (B, 4)
        extent = cell_extent(*self.head.cell_centers(moments.pmf.shape[-2:], images.shape[-2:]))
        return Attention(
            images=images, probs=probs[:, None], boxes=box[:, None, None], maps=moments.pmf[:, None],
            views=view[:, None], labels=self.targets(batch), map_title="pmf",
            map_extent=extent,
        )
