"""DHAM: differentiable hard attention module (a Spatial Transformer restricted to shift and scale).

A short conv head without pooling ends in one map; its spatial softmax is a pmf over positions whose
expectation gives the translation (tx, ty) and whose expected L1/L2 distance from it, times a factor,
gives the half size s of a square crop. A bilinear sampler cuts that crop (default 28x28) out of the
input image and a small CNN classifies it. Only cross-entropy trains the head: the gradient reaches it
through the sampler (d crop / d (tx, ty, s)) and the moments. Works on any input size.
"""
from __future__ import annotations

from typing import Any, Dict, Literal, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attention import Attention
from ..nn.affine_crop import affine_crop
from ..nn.coords import box_from_center, cell_extent, pixel_centers
from ..nn.spatial_softmax import PmfMoments, pmf_moments, spatial_softmax
from ..registry import register_model
from .base import AttentionModel


Padding = Literal["same", "valid"]


class AttentionHead(nn.Module):
    """Conv layers without pooling ending in one logit map; ``padding='same'|'valid'``.

    ``stride`` > 1 applies to the first conv only (a cheaper, coarser map on large inputs); map cell i
    then sits on input pixel ``i * stride + offset``, which the moments use, so the crop stays aligned.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], kernel_size: int, padding: Padding,
                 stride: int = 1) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"--head_kernel={kernel_size} must be odd so each map cell has a centre pixel")
        if stride < 1:
            raise ValueError(f"--head_stride={stride} must be at least 1")
        r = kernel_size // 2
        pad = {"same": r, "valid": 0}[padding]
        layers, c, widths = [], in_channels, list(channels) + [1]
        for i, out in enumerate(widths):
            layers.append(nn.Conv2d(c, out, kernel_size, stride=stride if i == 0 else 1, padding=pad))
            if i < len(widths) - 1:
                layers += [nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        self.net = nn.Sequential(*layers)
        self.stride = stride
        # map cell i is centred on input pixel i * stride + offset: the first conv's window centre is at
        # input pixel stride*i - pad + r; each later unpadded conv moves it by r cells (r*stride pixels)
        later = 0 if padding == "same" else (len(widths) - 1) * r * stride
        self.offset = r - pad + later

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).squeeze(1)  # (B, H - 2*offset, W - 2*offset)

    def cell_centers(self, map_size: Tuple[int, int], image_size: Tuple[int, int], device=None) -> Tuple[Tensor, Tensor]:
        """Normalized x (w',) and y (h',) centres of the map's cells in an image of ``image_size`` (H, W)."""
        (mh, mw), (h, w) = map_size, image_size
        return (pixel_centers(mw, self.offset, w, self.stride, device=device),
                pixel_centers(mh, self.offset, h, self.stride, device=device))


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
    """Differentiable hard attention: a conv head's spatial softmax places a shift/scale crop that a CNN classifies.

    Arguments:
        num_classes: number of classes (from the data).
        in_channels: image channels (from the data).
        head_channels: widths of the head's hidden conv layers (the head ends in one map).
        head_kernel: odd kernel size of the head's convs, in pixels.
        head_padding: ``same`` keeps the map's size, ``valid`` trims ``head_kernel // 2`` per conv and side.
        head_stride: stride of the head's first conv (a coarser, cheaper map on large images).
        crop_size: side of the crop the classifier sees, in pixels.
        scale_norm: distance the crop's size is read from: ``l1`` or ``l2`` spread of the pmf around its mean.
        scale_factor: crop half size = scale_factor x spread, in [-1, 1] image units (its initial value if learned).
        learn_scale_factor: train the scale factor (as a log) with the rest of the model.
        classifier_channels: widths of the classifier's conv-pool blocks.
        classifier_hidden: width of the classifier's hidden linear layer.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
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
        crop_size: int = 28,
        scale_norm: Literal["l1", "l2"] = "l2",
        scale_factor: float = 2.0,
        learn_scale_factor: bool = True,
        classifier_channels: Sequence[int] = (32, 64),
        classifier_hidden: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(num_classes, lr, weight_decay)
        self.check_positive(crop_size=crop_size, scale_factor=scale_factor, lr=lr)
        self.head = AttentionHead(in_channels, head_channels, head_kernel, head_padding, head_stride)
        log_factor = torch.tensor(float(scale_factor)).log()
        if learn_scale_factor:
            self.log_scale_factor = nn.Parameter(log_factor)
        else:
            self.register_buffer("log_scale_factor", log_factor)
        self.classifier = SmallCNN(in_channels, classifier_channels, classifier_hidden, num_classes)

    def locate(self, images: Tensor) -> Tuple[PmfMoments, Tensor]:
        """The attention pmf with its moments, and the crop half size s (B,), for (B, C, H, W) images."""
        h, w = images.shape[-2:]
        if min(h, w) <= 2 * self.head.offset + self.head.stride:
            raise ValueError(
                f"image {h}x{w} is too small for a valid-padded head that trims {self.head.offset} pixels per side; "
                f"use --head_padding=same or a smaller --head_kernel"
            )
        logits = self.head(images)  # (B, h', w')
        xs, ys = self.head.cell_centers(logits.shape[-2:], (h, w), logits.device)
        moments = pmf_moments(spatial_softmax(logits), xs, ys, self.hparams.scale_norm)
        half = self.log_scale_factor.exp() * moments.spread  # (B,)
        return moments, half

    def crop(self, images: Tensor) -> Tuple[Tensor, PmfMoments, Tensor]:
        moments, half = self.locate(images)
        view = affine_crop(images, moments.center, half, self.hparams.crop_size)  # (B, C, crop, crop)
        return view, moments, half

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.crop(images)[0])  # (B, K)

    def loss_terms(self, batch: Any, stage: str) -> Tuple[Dict[str, Tensor], Tensor]:
        images, labels = self.inputs(batch), self.targets(batch)
        view, moments, half = self.crop(images)
        logits = self.classifier(view)
        if stage != "test":
            for name, v in (("s", half), ("tx", moments.center[:, 0]), ("ty", moments.center[:, 1])):
                self.log(f"{stage}/{name}_mean", v.mean().detach(), on_step=False, on_epoch=True)
                self.log(f"{stage}/{name}_std", v.std().detach() if v.numel() > 1 else v.new_zeros(()),
                         on_step=False, on_epoch=True)
        return {"ce": F.cross_entropy(logits, labels)}, logits

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
