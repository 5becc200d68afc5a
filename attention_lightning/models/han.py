"""HAN / AdaHAN: hard attention by feature presence for visual question answering.

Malinowski, Doersch, Santoro, Battaglia, "Learning Visual Question Answering by Bootstrapping Hard
Attention", ECCV 2018.

Pipeline for a batch of images (B, 3, H, W) and padded questions (B, L) with lengths (B,):

1. A CNN encodes the image to a grid (B, C, H', W') (3x3 convs by default; ``--encoder_kernels`` equal to
   ``--encoder_strides`` cut patches instead, e.g. 8px patches of a 24px scene = one cell per place of its
   3x3 lattice, configs/han_vqa.yaml; 16px patches of a 96px scene, its 6x6 lattice, configs/han_vqa_6x6.yaml); an
   LSTM (or GRU, or ``bow``: summed (position, word) embeddings) encodes the question to (B, C).
2. The question vector is broadcast to every cell and summed with the cell's projected image feature
   plus a learned per-cell position embedding (``--fusion=film`` also scales the image feature by
   question-dependent channel gains), then ReLU and a 1x1 conv give the fused feature of each cell
   (B, N = H'W', C). ``--fusion=gate`` keeps only the gains (no sum, no position embedding, no biases).
3. Presence of a cell = L2 norm of its fused feature (``nn.selection.presence``).
4. Selection (``--selection``):
   - ``topk`` (HAN): the ``--k`` cells of largest presence (an int, or a float in (0, 1] = fraction of N).
   - ``adaptive`` (AdaHAN): the cells whose softmax of presence over the N cells exceeds ``--threshold``
     (default 1/N); the count differs per example; the ``--min_cells`` cells of largest presence are always
     kept (default 1, the top cell; a floor above 1 is ours); ``--adaptive_scores=zscore`` (ours) thresholds the
     softmax of each example's z-scored presence instead of the raw presence, so the count is scale-free.
   - ``soft`` baseline: every cell, weighted by the softmax of presence.
   - ``none`` baseline: every cell, weight 1.
5. The answer head (``--head``) reads the selected cells, each as [fused feature, its product with the
   question vector, its (x, y) center in [-1, 1] (cell j of W' at (2j + 1)/W' - 1, the grid's own
   align_corners=False convention)], and the question:
   - ``set``: a per-cell MLP g([cell, cell * q, xy, q]), summed over the cells (weighted by the soft
     weights for ``soft``) and scaled by the fixed 1/sqrt(N) (a sum, not a mean, so it can count); an MLP
     over [sum, question] gives the answer logits.
   - ``pairs``: a relation network (Santoro et al. 2017) over ordered pairs of selected cells (self-pairs
     included): sum_ij w_i w_j g([u_i, u_j, q]) scaled by the fixed 1/N, then the same MLP over [sum, q].
     This is the paper's "RN + HAN" on CLEVR, where hard attention is what makes the quadratic head
     affordable: k = 4 cells give 16 pairs, all 36 cells of a 6x6 grid give 1296.
   - ``flat`` (ours): no weight sharing across cells: the kept cells, in grid order (row by row, column by
     column with ``--slot_order=column``, or both one after the other with ``both``), fill a fixed number of
     slots (k under top-k, else N; twice that for ``both``), each
     [cell, cell * q, xy] times its weight, flattened into one MLP with the question. With every cell kept it
     is the plain no-attention VQA model (an MLP over the whole grid); with top-k the same MLP reads k slots,
     whichever places the kept cells come from.
   Cross-entropy trains everything.

Deviations from the paper, each for a measured reason on the synthetic scenes:
- The xy centers, the cell * question product and the learned per-cell position embedding are ours: the
  per-cell set head treats cells independently, so without positions left/right (relate) questions stayed
  at chance, and in short CPU runs counting rose faster with the product.
- ``--fusion=film`` (question-dependent channel gains on top of the paper's sum) and ``--fusion=gate``
  (the gains alone) are ours; ``sum`` is the paper's. ``gate`` with ``--encoder_norm=none`` (no BatchNorm,
  no biases) gives a blank cell's fused feature, hence its presence, exactly zero: on the earlier 48px 6x6
  preset an untrained HAN with the ``film``/``sum`` fusion kept occupied cells among its top 4 at their base
  rate (18-26% vs 20%), with ``gate`` 99%. It did not make that preset learn, though: with ``gate`` and the
  pairs head nothing beat the prior in 3,000 steps, while ``film`` with BatchNorm and the set head learned
  exist and count (the 96px 6x6 presets now use those).
- ``--rnn=bow`` (one embedding per (position, word) pair, summed, then a linear layer) is ours; the paper
  encodes the question with an LSTM. On the templated questions of the 6x6 preset the LSTM was the
  bottleneck: counting one colour with every cell kept stayed at the prior for 1,000+ steps with the LSTM
  and reached 44% (prior 24%) after 250 steps with bow.
- ``--blind`` (the image zeroed before the encoder) is a baseline of ours: the same model answering from
  the question alone, so the gain from looking is measured at equal steps and parameters.

What happens to the unselected cells (``topk``/``adaptive``): they are dropped before the answer head.
``pack_cells`` gathers only the selected cells into a padded (B, M, C + 2) tensor (M = largest count in
the batch; padding slots get weight 0), so the head never sees an unselected cell and the answer does
not depend on its feature at all. Gradients: the choice of cells (top-k / threshold on presence) is a
discrete, non-differentiable step and passes no gradient. The loss reaches both encoders only through
the selected cells' fused features (the gather's backward scatters into those cells); an unselected
cell's fused feature gets exactly zero gradient. The encoders still learn to rank cells because the
features that help answering are those whose norms the selection reads ("bootstrapping"). With ``soft``
the gradient also flows through the softmax weights into presence.

``--presence_grad=true`` (ours, topk/adaptive only) adds a straight-through gradient to the presence of the
*kept* cells (``nn.selection.presence_gradient``): the forward pass is unchanged (weights exactly 1), and the
loss's gradient with respect to a kept cell's weight reaches its presence, so the ranking is trained
directly instead of only through the kept features. Measured (``docs/studies/vqa_6x6.md``, the 6x6 scenes with
the set head, encoder trained first on each cell's contents and frozen, ``benchmarks.probes.vqa_probe
--oracle_encoder``): topk's exist accuracy 0.62-0.69 -> 0.87-0.93 after 1,500-2,000 steps; trained end to end
from pixels, no difference at 4,000 steps and test 63.5% vs 57.8% at 10,000 (exist 79.5% vs 62.3%; all cells:
81.5%). Off by default (the paper's HAN).

Metrics: accuracy; accuracy per question type (``val/acc_<type>``, ``test/acc_<type>``, for batches with a
``qtype``; types in ``QTYPE_NAMES`` order); and the fraction of cells attended per example (cells that reach
the head; 1 for soft/none), logged as ``{stage}/attended_mean`` and ``{stage}/attended_std`` over the epoch.
"""
from __future__ import annotations

from typing import Any, Literal
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from ..attention import Attention
from ..batches import VQABatch
from ..nn.han_blocks import FlatHead, PairHead, QuestionEncoder, SetHead, cell_centers, conv_out, conv_padding
from ..nn.selection import Mode, Selection, pack_cells, presence, presence_gradient, resolve_k, select
from ..registry import register_model
from .base import AttentionModel, as_flags


class ImageEncoder(nn.Module):
    """Conv-BN-ReLU layers (no pooling) from (B, C_in, H, W) to a grid (B, C, H', W').

    Kernels default to 3x3 (padding 1); an even kernel equal to its stride (e.g. ``--encoder_kernels=[8, 1]``
    with ``--encoder_strides=[8, 1]``) cuts the image into non-overlapping patches, one grid cell per patch,
    so a cell can be aligned with one place of the scene.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], strides: Sequence[int],
                 kernels: Sequence[int] | None = None, norm: str = "batch") -> None:
        super().__init__()
        kernels = [3] * len(channels) if kernels is None else list(kernels)
        if len(channels) != len(strides) or len(kernels) != len(channels) or not channels:
            raise ValueError(f"--encoder_channels {list(channels)}, --encoder_strides {list(strides)} and "
                             f"--encoder_kernels {kernels} must be non-empty and of equal length")
        layers, c = [], in_channels
        batch = norm == "batch"  # without it, no biases either: a blank (zero) patch gives exactly zero
        for out, s, k in zip(channels, strides, kernels):
            layers += [nn.Conv2d(c, out, k, stride=s, padding=conv_padding(k), bias=batch),
                       nn.BatchNorm2d(out) if batch else nn.Identity(), nn.ReLU(inplace=True)]
            c = out
        self.net = nn.Sequential(*layers)
        self.strides, self.kernels = tuple(strides), tuple(kernels)
        self.out_channels = c

    def grid_size(self, h: int, w: int) -> tuple[int, int]:
        for s, k in zip(self.strides, self.kernels):
            h, w = conv_out(h, s, k), conv_out(w, s, k)
        return h, w

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)  # (B, C, H', W')


QTYPE_NAMES = ("exist", "query", "count", "relate")  # what ``qtype`` indexes in vqa_scenes batches
HEADS = {"set": SetHead, "pairs": PairHead, "flat": FlatHead}


@register_model("han", "HAN/AdaHAN: question-fused CNN grid, keep top-k or adaptive cells by L2 presence, set head")
class HAN(AttentionModel):
    """HAN / AdaHAN: the cells of largest presence reach the answer head, the rest are dropped.

    Arguments:
        num_classes: number of answers.
        vocab_size: question vocabulary size (token 0 is padding).
        in_channels: image channels.
        image_size: (H, W) of the images, in pixels.
        selection: topk (HAN), adaptive (AdaHAN), soft (softmax weights) or none (every cell, weight 1).
        k: cells kept by topk: a count (int) or a fraction of the grid's cells (float in (0, 1]).
        threshold: adaptive keeps cells whose softmax of presence exceeds this (default 1/number of cells).
        min_cells: adaptive always keeps this many cells of largest presence, and more where the threshold says
            (default 1: the paper's AdaHAN, with the top cell kept so no example has nothing).
        adaptive_scores: what adaptive's softmax reads: presence (the paper's) or zscore (each example's presence
            minus its mean over its std: the count of kept cells no longer shrinks as presence grows in scale).
        encoder_channels: channels of each conv layer of the image encoder.
        encoder_strides: stride of each conv layer.
        encoder_kernels: kernel of each conv layer (default 3s; kernel == stride cuts patches).
        embed_dim: word embedding width.
        fusion_dim: width of the fused cell features and of the question vector.
        head_hidden: hidden width of the answer head.
        rnn: question encoder: lstm, gru, or bow (word-at-position embeddings summed; no recurrence).
        fusion: sum (the paper's: image feature + question), film (also question-dependent channel gains) or
            gate (only the gains: a cell with a zero image feature has a zero fused feature).
        encoder_norm: batch (conv-BN-ReLU) or none (conv-ReLU without biases: a blank patch encodes to zero).
        head: set (per-cell MLP, summed), pairs (relation network over pairs of selected cells) or flat (one MLP
            over the kept cells in slots: no weight sharing across cells).
        blind: answer from the question alone: the image is zeroed before the encoder (a baseline).
        presence_grad: topk/adaptive: a straight-through gradient from the kept cells' weights to their
            presence (the forward pass is unchanged); off is the paper's HAN.
        slot_order: the order in which the kept cells fill the flat head's slots: row (grid order, row by row),
            column (column by column: left to right, so under topk/adaptive, for a left/right question, the slots'
            order says which object is left) or both (twice the slots: the kept cells in row order, then again in
            column order, so the order gives away above/below as well as left/right). With none/soft every cell has
            its own slot(s) and the order only relabels them. Only the flat head reads slots by position.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
    """

    def __init__(
        self,
        num_classes: int = 18,
        vocab_size: int = 64,
        in_channels: int = 3,
        image_size: Sequence[int] = (48, 48),
        selection: Mode = "topk",
        k: int | float = 0.25,
        threshold: float | None = None,
        min_cells: int = 1,
        adaptive_scores: Literal["presence", "zscore"] = "presence",
        encoder_channels: Sequence[int] = (32, 64, 64),
        encoder_strides: Sequence[int] = (2, 2, 1),
        encoder_kernels: Sequence[int] | None = None,
        embed_dim: int = 32,
        fusion_dim: int = 128,
        head_hidden: int = 128,
        rnn: Literal["lstm", "gru", "bow"] = "lstm",
        fusion: Literal["sum", "film", "gate"] = "sum",
        encoder_norm: Literal["batch", "none"] = "batch",
        head: Literal["set", "pairs", "flat"] = "set",
        blind: bool = False,
        presence_grad: bool = False,
        slot_order: Literal["row", "column", "both"] = "row",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(num_classes, lr, weight_decay)
        self.check_positive(lr=lr, embed_dim=embed_dim, fusion_dim=fusion_dim, head_hidden=head_hidden)
        self.image_encoder = ImageEncoder(in_channels, encoder_channels, encoder_strides, encoder_kernels, encoder_norm)
        self.grid_hw = self.image_encoder.grid_size(int(image_size[0]), int(image_size[-1]))
        self.num_cells = self.grid_hw[0] * self.grid_hw[1]
        with as_flags(k="k"):
            self.k = resolve_k(k, self.num_cells) if selection == "topk" else None
        if presence_grad and selection not in ("topk", "adaptive"):
            raise ValueError(f"--presence_grad=true needs --selection=topk or adaptive (got {selection}: soft already "
                             f"passes a gradient to presence, none has no selection)")
        if slot_order != "row" and head != "flat":
            raise ValueError(f"--slot_order={slot_order} orders the slots of --head=flat (got --head={head}, which sums "
                             f"over cells, so the order cannot matter); pass --slot_order=row")
        if min_cells != 1 and selection != "adaptive":
            raise ValueError(f"--min_cells={min_cells} is adaptive's floor (got --selection={selection}); pass "
                             f"--min_cells=1")
        if adaptive_scores != "presence" and selection != "adaptive":
            raise ValueError(f"--adaptive_scores={adaptive_scores} is what adaptive thresholds (got --selection="
                             f"{selection}); pass --adaptive_scores=presence")
        if isinstance(min_cells, bool) or not isinstance(min_cells, int) or not 1 <= min_cells <= self.num_cells:
            raise ValueError(f"--min_cells={min_cells!r} must be a cell count between 1 and the {self.num_cells} cells "
                             f"of the feature grid")
        if threshold is not None and not 0.0 <= threshold < 1.0:
            raise ValueError(f"--threshold={threshold} must be in [0, 1) (a softmax value; default 1/{self.num_cells})")
        self.question_encoder = QuestionEncoder(vocab_size, embed_dim, fusion_dim, rnn)
        gate = fusion == "gate"  # no biases, no position embedding, no added question: blank stays zero
        self.project = nn.Conv2d(self.image_encoder.out_channels, fusion_dim, 1, bias=not gate)
        # a learned embedding per cell, added to the image features, so presence can depend on where a cell is
        self.position = None if gate else nn.Parameter(0.1 * torch.randn(fusion_dim, *self.grid_hw))
        self.film = nn.Linear(fusion_dim, fusion_dim) if fusion in ("film", "gate") else None
        self.fuse = nn.Conv2d(fusion_dim, fusion_dim, 1, bias=not gate)
        # the orders the kept cells fill the flat head's slots in, as permutations of the row-major cells (orders, N):
        # none for row order (the cells as they are), column by column, or both (row order, then column order)
        row, column = torch.arange(self.num_cells), torch.arange(self.num_cells).view(self.grid_hw).t().reshape(-1)
        perms = {"row": None, "column": column[None], "both": torch.stack([row, column])}[slot_order]
        self.register_buffer("slot_perm", perms, persistent=False)
        # the flat head has one slot per cell it can receive (k under top-k, else every cell) in each order
        size = (self.k if head == "flat" and selection == "topk" else self.num_cells) * (1 if perms is None else len(perms))
        self.head = HEADS[head](fusion_dim, fusion_dim, head_hidden, num_classes, size)
        # fraction of cells attended: running mean of f and f^2 per stage, for the epoch's mean and spread
        self.attended = nn.ModuleDict({f"{s}_{m}": MeanMetric() for s in ("train", "val", "test") for m in ("mean", "sq")})
        # accuracy per question type: a mean of 'correct' weighted by 'is of this type', per stage and type
        self.type_acc = nn.ModuleDict({f"{s}_{q}": MeanMetric() for s in ("val", "test") for q in QTYPE_NAMES})

    # --- batches are VQABatch (datamodules.vqa_scenes) ---------------------------------------------
    def targets(self, batch: VQABatch) -> Tensor:
        return batch.answer

    def inputs(self, batch: VQABatch) -> tuple[Tensor, Tensor, Tensor]:
        return batch.image, batch.question, batch.length

    # --- the model ---------------------------------------------------------------------------
    def encode(self, images: Tensor, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Fused cell features (B, N, C), row-major over the (H', W') grid, and the question vector (B, C)."""
        if self.hparams.blind:  # the question-only baseline: same model, nothing to see
            images = torch.zeros_like(images)
        grid = self.image_encoder(images)  # (B, C', H', W')
        if tuple(grid.shape[-2:]) != self.grid_hw:
            raise ValueError(f"images {tuple(images.shape[-2:])} give a {tuple(grid.shape[-2:])} grid, but the model "
                             f"was built for {self.grid_hw}; pass --image_size matching the data")
        q = self.question_encoder(tokens, lengths)  # (B, C)
        v = self.project(grid)  # (B, C, H', W')
        if self.position is not None:
            v = v + self.position
        if self.film is not None:  # question-dependent channel gains (film: as well as the paper's sum)
            v = v * (1 + self.film(q))[:, :, None, None]
        if self.hparams.fusion != "gate":
            v = v + q[:, :, None, None]
        fused = self.fuse(F.relu(v))  # (B, C, H', W')
        return fused.flatten(2).transpose(1, 2), q  # (B, N, C), (B, C)

    def cell_xy(self, device, dtype) -> Tensor:
        """Cell centers (N, 2) as (x, y) in [-1, 1], row-major."""
        return cell_centers(*self.grid_hw, device=device, dtype=dtype)

    def choose(self, cells: Tensor) -> Selection:
        """The selection (mask and weights over the N cells) from the fused cells' presence."""
        scores = presence(cells)  # (B, N)
        hp = self.hparams
        sel = select(scores, hp.selection, self.k, hp.threshold, hp.min_cells, hp.adaptive_scores == "zscore")
        return presence_gradient(sel, scores) if self.hparams.presence_grad else sel

    def answer(self, cells: Tensor, q: Tensor, sel: Selection) -> Tensor:
        """Logits (B, K) from the selected cells only (hard modes) or all cells weighted (soft/none)."""
        xy = self.cell_xy(cells.device, cells.dtype).expand(cells.shape[0], -1, -1)  # (B, N, 2)
        if self.hparams.selection in ("topk", "adaptive"):
            both, mask, w = torch.cat([cells, xy], dim=-1), sel.mask, sel.weights  # (B, N, C + 2), (B, N), (B, N)
            if self.slot_perm is None:  # row order: the kept cells as they come, padded to the batch's largest count
                packed, _, order = pack_cells(both, mask, sel.count)  # (B, M, C + 2)
                weights = torch.gather(w, 1, order)  # (B, M): 1 kept, 0 padding
            else:  # each order fills its own block of slots (padded to its full size, so blocks never shift)
                size = self.num_cells if sel.count is None else sel.count  # k under top-k, every cell under adaptive
                parts = [pack_cells(both[:, perm], mask[:, perm], size) for perm in self.slot_perm]  # one per order
                packed = torch.cat([part[0] for part in parts], dim=1)  # (B, orders * size, C + 2)
                weights = torch.cat([torch.gather(w[:, perm], 1, part[2]) for perm, part in zip(self.slot_perm, parts)],
                                    dim=1)  # (B, orders * size)
            return self.head(packed[..., :-2], packed[..., -2:], weights.to(cells.dtype), q)
        w = sel.weights.to(cells.dtype)  # (B, N)
        if self.slot_perm is not None:  # every cell has a slot per order: a fixed relabelling (and copy) of the slots
            cells, xy, w = (torch.cat([t[:, perm] for perm in self.slot_perm], dim=1) for t in (cells, xy, w))
        return self.head(cells, xy, w, q)

    def forward(self, images: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        cells, q = self.encode(images, tokens, lengths)
        return self.answer(cells, q, self.choose(cells))  # (B, K)

    def loss_terms(self, batch: Any, stage: str) -> tuple[dict[str, Tensor], Tensor]:
        cells, q = self.encode(*self.inputs(batch))
        sel = self.choose(cells)
        logits = self.answer(cells, q, sel)
        frac = sel.mask.float().mean(dim=1)  # (B,) fraction of cells attended
        self.attended[f"{stage}_mean"].update(frac.detach())
        self.attended[f"{stage}_sq"].update(frac.detach() ** 2)
        if stage != "train":
            correct = (logits.detach().argmax(-1) == self.targets(batch)).float()  # (B,)
            for i, name in enumerate(QTYPE_NAMES):  # over question types, not over the batch
                self.type_acc[f"{stage}_{name}"].update(correct, weight=(batch.qtype == i).float())
        return {"ce": F.cross_entropy(logits, self.targets(batch))}, logits

    def _log_attended(self, stage: str) -> None:
        m_mean, m_sq = self.attended[f"{stage}_mean"], self.attended[f"{stage}_sq"]
        if m_mean.update_count == 0:
            return
        mean, sq = m_mean.compute(), m_sq.compute()
        self.log(f"{stage}/attended_mean", mean)
        self.log(f"{stage}/attended_std", (sq - mean ** 2).clamp(min=0).sqrt())
        m_mean.reset()
        m_sq.reset()

    def _log_type_acc(self, stage: str) -> None:
        """``{stage}/acc_<type>`` for each question type seen this epoch."""
        for name in QTYPE_NAMES:
            metric = self.type_acc[f"{stage}_{name}"]
            if metric.update_count:
                value = metric.compute()
                if torch.isfinite(value):  # a type never asked has weight 0 and no accuracy
                    self.log(f"{stage}/acc_{name}", value)
            metric.reset()

    def on_train_epoch_end(self) -> None:
        self._log_attended("train")

    def on_validation_epoch_end(self) -> None:
        self._log_attended("val")
        self._log_type_acc("val")

    def on_test_epoch_end(self) -> None:
        self._log_attended("test")
        self._log_type_acc("test")

    @torch.no_grad()
    def attention(self, batch: Any) -> Attention:
        images, tokens, lengths = self.inputs(batch)
        cells, q = self.encode(images, tokens, lengths)
        sel = self.choose(cells)
        probs = self.answer(cells, q, sel).softmax(-1)  # (B, K)
        h, w = self.grid_hw
        soft = self.hparams.selection == "soft"
        maps = (sel.weights if soft else sel.mask.float()).reshape(-1, 1, h, w)  # (B, 1, H', W')
        return Attention(
            images=images, probs=probs[:, None], maps=maps, labels=self.targets(batch),
            captions=list(batch.text), map_title="soft weights" if soft else "selected cells",
        )
