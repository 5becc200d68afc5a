"""CNN: the full-image baseline that every hard attention model should beat per pixel looked at.

Conv-BN-ReLU-maxpool blocks over the whole image, a global average pool, and an MLP; cross-entropy trains
it. Pooling rounds up (``ceil_mode``) and the global pool takes any map size, so one model works for any
image size and number of channels. It looks at everything, and says so: its ``Attention`` is one box over
the whole image.

``--kernel_size=10 --stride=5 --pool=false --head=flatten --conv_channels=[8] --hidden=256`` is the
convolutional baseline of Mnih et al. 2014 (sec. 4.1: one layer of 8 10x10 filters with stride 5, a fully
connected layer of 256 ReLU units), with batch norm after the convolution (ours) and Adam.
"""
from __future__ import annotations

from typing import Any, Literal
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
    """(B, C, H, W) images -> (B, K) logits: conv(-pool) blocks, then a global average pool (any image size) or
    a flattened map (``image_size`` fixed), then an MLP."""

    def __init__(self, in_channels: int, channels: Sequence[int], hidden: int, num_classes: int,
                 dropout: float, kernel_size: int = 3, stride: int = 1, pool: bool = True,
                 flatten_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        layers, c = [], in_channels
        pad = kernel_size // 2 if stride == 1 else 0  # 'same' for the default 3x3, 'valid' for strided filters
        for out in channels:
            layers += [nn.Conv2d(c, out, kernel_size, stride=stride, padding=pad), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c = out
        if flatten_size is None:
            self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, C)
        else:
            self.features = nn.Sequential(*layers, nn.Flatten())  # (B, C * h * w)
            with torch.no_grad():
                c = self.features(torch.zeros(1, in_channels, *flatten_size)).shape[1]
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
        image_size: (H, W) of the images (from the data; used by the flatten head only).
        conv_channels: widths of the conv-pool blocks (each halves the map, rounding up).
        kernel_size: side of every convolution's filters.
        stride: stride of every convolution (1: 'same' padding; more: no padding).
        pool: a 2x2 max-pool after every convolution.
        head: global_pool (average over the map: any image size) or flatten (the whole map: one image size).
        hidden: width of the MLP's hidden layer.
        dropout: dropout before the last linear layer, in [0, 1).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: Sequence[int] | None = None,
        conv_channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 3,
        stride: int = 1,
        pool: bool = True,
        head: Literal["global_pool", "flatten"] = "global_pool",
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
        self.check_positive(kernel_size=kernel_size, stride=stride)
        flatten_size = None
        if head == "flatten":
            if image_size is None:
                raise ValueError("--head=flatten needs the image size from the data; use --head=global_pool "
                                 "for a model that takes any size")
            flatten_size = (int(image_size[-2]), int(image_size[-1]))
        if image_size is not None and kernel_size > min(image_size[-2:]):
            raise ValueError(f"--kernel_size={kernel_size} exceeds the {list(image_size)} image; use a smaller "
                             f"--kernel_size")
        self.net = ConvNet(in_channels, conv_channels, hidden, num_classes, dropout, kernel_size, stride, pool,
                           flatten_size)

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
