"""The one structure through which every model shows what it looked at, and how to ask a model for it.

Each model implements ``attention(batch) -> Attention``; the dashboards, ``cli.py visualize`` and the
notebooks draw from it and never from model internals. All geometry is in [-1, 1] image coordinates,
(x, y) order, image center at 0 (``attention_lightning.nn.coords``). ``first_items`` picks the items to
show from a loader and ``draw_attention`` runs the model on them without changing its state.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    import pytorch_lightning as pl


@dataclass
class Attention:
    images: Tensor                    # (B, C, H, W) the inputs, as the model received them
    probs: Tensor                     # (B, T, K) class probabilities after each of T steps (T = 1 for one-shot models)
    boxes: Tensor | None = None    # (B, T, S, 4) (x0, y0, x1, y1) boxes looked at in step t, S per step (e.g. scales)
    maps: Tensor | None = None     # (B, T, h, w) non-negative map over the image per step (pmf, EIG, mask), any h, w
    views: Tensor | None = None    # (B, T, C', h', w') what the model saw in step t (a crop, a glimpse)
    labels: Tensor | None = None   # (B,) ground truth, when the batch has it
    captions: list[str] = field(default_factory=list)  # optional per-image text (e.g. a question)
    map_title: str = "attention"      # what ``maps`` shows, for legends
    # (x0, y0, x1, y1) in [-1, 1] covered by ``maps``: the outer edges of its first and last cells, which need not
    # be the image's edges (e.g. PHAM's grid cells are centered at glimpse centers); None = the whole image
    map_extent: tuple[float, float, float, float] | None = None

    @property
    def steps(self) -> int:
        return self.probs.shape[1]

    def prediction(self) -> tuple[Tensor, Tensor]:
        """Final predicted class (B,) and its probability (B,)."""
        conf, pred = self.probs[:, -1].max(dim=-1)
        return pred, conf

    def step_accuracy(self) -> Tensor | None:
        """Accuracy after each step (T,), or None without labels."""
        if self.labels is None:
            return None
        return (self.probs.argmax(-1) == self.labels[:, None]).float().mean(0)

    def detach_cpu(self) -> Attention:
        """A copy with every tensor detached, in float32, on the CPU (safe to draw in another thread)."""
        def conv(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            t = t.detach().cpu()
            return t.float() if t.is_floating_point() else t

        return Attention(
            images=conv(self.images), probs=conv(self.probs), boxes=conv(self.boxes), maps=conv(self.maps),
            views=conv(self.views), labels=conv(self.labels), captions=list(self.captions), map_title=self.map_title,
            map_extent=self.map_extent,
        )


def first_items(loader: Any, n: int) -> Any:
    """The first ``n`` items of a DataLoader's (map-style) dataset as one batch made by its ``collate_fn``.

    Independent of the loader's batch size and workers; an iterable dataset gives its first batch, cut to ``n``.
    """
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        idx = list(range(min(n, len(dataset))))
        if not idx:
            raise ValueError("the validation split is empty: nothing to draw; use a larger --val_size")
        items = dataset.__getitems__(idx) if hasattr(dataset, "__getitems__") else [dataset[i] for i in idx]
        collate = getattr(loader, "collate_fn", None) or torch.utils.data.default_collate
        return collate(items)
    return cut_batch(next(iter(loader)), n)


def cut_batch(batch: Any, n: int) -> Any:
    """The first ``n`` items of a collated batch (tensors, dicts, and lists of tensors or of per-item values)."""
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, dict):
        return {k: cut_batch(v, n) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        if all(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in batch):
            return type(batch)(cut_batch(v, n) for v in batch)  # a structure: (images, labels)
        return batch[:n]  # per-item values: e.g. question strings
    return batch


def draw_attention(pl_module: pl.LightningModule, batch: Any, trainer: pl.Trainer | None = None) -> Attention:
    """``pl_module.attention(batch)`` in eval mode, without gradients, on the module's device; returns it on the CPU.

    Each submodule's train/eval mode and the torch RNG (CPU and the module's GPU) are restored afterwards;
    with a ``trainer``, the batch gets its precision plugin's input conversion and forward context.
    """
    modes = [(m, m.training) for m in pl_module.modules()]
    devices = [pl_module.device] if pl_module.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            pl_module.eval()
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            precision = getattr(trainer, "precision_plugin", None) if trainer is not None else None
            if precision is not None:
                batch = precision.convert_input(batch)
            context = precision.forward_context() if precision is not None else contextlib.nullcontext()
            with torch.no_grad(), context:
                return pl_module.attention(batch).detach_cpu()
        finally:
            for m, training in modes:
                m.training = training
