"""CNN: the full-image baseline that every hard attention model should beat per pixel looked at.

Conv-BN-ReLU-maxpool blocks over the whole image, a global average pool, and an MLP; cross-entropy trains
it. Pooling rounds up (``ceil_mode``) and the global pool takes any map size, so one model works for any
image size and number of channels. It looks at everything, and says so: its ``Attention`` is one box over
the whole image.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attention import Attention
from ..registry import register_model
from .base import AttentionModel

FULL_IMAGE = (-1.0, -1.0, 1.0, 1.0)  # (x0, y0, x1, y1) of the whole image in [-1, 1] coordinates


class ConvNet(nn.Module):
    """(B, C, H, W) images of any size -> (B, K) logits: conv-pool blocks, global average pool, MLP."""

    def __init__(self, in_channels: int, channels: Sequence[int], hidden: int, num_classes: int,
                 dropout: float) -> None:
        super().__init__()
        layers, c = [], in_channels
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.mlp = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(hidden, num_classes))

    def forward(self, images: Tensor) -> Tensor:
        return self.mlp(self.features(images))  # (B, K)


@register_model("cnn", "Full-image CNN baseline: conv-pool blocks over the whole image, global pool, MLP")
class CNN(AttentionModel):
    """A CNN that sees the whole image: the no-attention baseline for image classification.

    Arguments:
        num_classes: number of classes (from the data).
        in_channels: image channels (from the data).
        conv_channels: widths of the conv-pool blocks (each halves the map, rounding up).
        hidden: width of the MLP's hidden layer.
        dropout: dropout before the last linear layer, in [0, 1).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
    """

    ignores_facts = ("image_size",)  # global pooling takes any image size

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        conv_channels: Sequence[int] = (32, 64, 128),
        hidden: int = 128,
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(num_classes, lr, weight_decay)
        self.check_positive(lr=lr, hidden=hidden, num_classes=num_classes, in_channels=in_channels)
        if not conv_channels:
            raise ValueError("--conv_channels must list at least one width, e.g. [32, 64, 128]")
        if not 0 <= dropout < 1:
            raise ValueError(f"--dropout={dropout} must be in [0, 1)")
        self.net = ConvNet(in_channels, conv_channels, hidden, num_classes, dropout)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)  # (B, K)

    def loss_terms(self, batch: Any, stage: str) -> tuple[dict[str, Tensor], Tensor]:
        logits = self(self.inputs(batch))  # (B, K)
        return {"ce": F.cross_entropy(logits, self.targets(batch))}, logits

    @torch.no_grad()
    def attention(self, batch: Any) -> Attention:
        images = self.inputs(batch)
        b = images.shape[0]
        box = images.new_tensor(FULL_IMAGE).expand(b, 1, 1, 4)  # (B, T=1, S=1, 4) the whole image
        return Attention(images=images, probs=self(images).softmax(-1)[:, None], boxes=box,
                         labels=self.targets(batch), map_title="whole image")
