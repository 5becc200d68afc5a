"""Batch types that a datamodule and a model agree on by type, not by spelling keys alike."""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class VQABatch(NamedTuple):
    """A batch of scenes with one question each (``datamodules.vqa_scenes`` makes it, ``models.han`` reads it).

    A NamedTuple, so the DataLoader's pinning and Lightning's device transfer keep its type.
    """

    image: Tensor     # (B, C, H, W) float32 in [0, 1]
    question: Tensor  # (B, L) token ids, padded with 0
    length: Tensor    # (B,) question lengths in tokens
    answer: Tensor    # (B,) answer index (the class)
    qtype: Tensor     # (B,) question type index
    text: list[str]   # the B questions as strings
