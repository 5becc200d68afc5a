"""The one structure through which every model shows what it looked at.

Each model implements ``attention(batch) -> Attention``; the dashboards, ``cli.py visualize`` and the
notebooks draw from it and never from model internals. All geometry is in [-1, 1] image coordinates,
(x, y) order, image centre at 0 (``attention_lightning.nn.coords``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from torch import Tensor


@dataclass
class Attention:
    images: Tensor                    # (B, C, H, W) the inputs, as the model received them
    probs: Tensor                     # (B, T, K) class probabilities after each of T steps (T = 1 for one-shot models)
    boxes: Optional[Tensor] = None    # (B, T, S, 4) (x0, y0, x1, y1) boxes looked at in step t, S per step (e.g. scales)
    maps: Optional[Tensor] = None     # (B, T, h, w) non-negative map over the image per step (pmf, EIG, mask), any h, w
    views: Optional[Tensor] = None    # (B, T, C', h', w') what the model saw in step t (a crop, a glimpse)
    labels: Optional[Tensor] = None   # (B,) ground truth, when the batch has it
    captions: List[str] = field(default_factory=list)  # optional per-image text (e.g. a question)
    map_title: str = "attention"      # what ``maps`` shows, for legends
    # (x0, y0, x1, y1) in [-1, 1] covered by ``maps``: the outer edges of its first and last cells, which need not
    # be the image's edges (e.g. PHAM's grid cells are centred at glimpse centres); None = the whole image
    map_extent: Optional[Tuple[float, float, float, float]] = None

    @property
    def steps(self) -> int:
        return self.probs.shape[1]

    def prediction(self) -> tuple[Tensor, Tensor]:
        """Final predicted class (B,) and its probability (B,)."""
        conf, pred = self.probs[:, -1].max(dim=-1)
        return pred, conf

    def step_accuracy(self) -> Optional[Tensor]:
        """Accuracy after each step (T,), or None without labels."""
        if self.labels is None:
            return None
        return (self.probs.argmax(-1) == self.labels[:, None]).float().mean(0)

    def detach_cpu(self) -> "Attention":
        """A copy with every tensor detached, in float32, on the CPU (safe to draw in another thread)."""
        def conv(t: Optional[Tensor]) -> Optional[Tensor]:
            if t is None:
                return None
            t = t.detach().cpu()
            return t.float() if t.is_floating_point() else t

        return Attention(
            images=conv(self.images), probs=conv(self.probs), boxes=conv(self.boxes), maps=conv(self.maps),
            views=conv(self.views), labels=conv(self.labels), captions=list(self.captions), map_title=self.map_title,
            map_extent=self.map_extent,
        )
