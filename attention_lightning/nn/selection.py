"""Cell selection by feature presence: the hard attention of HAN and AdaHAN.

Malinowski, Doersch, Santoro, Battaglia, "Learning Visual Question Answering by Bootstrapping Hard
Attention", ECCV 2018. The presence of a grid cell is the L2 norm of its (question-fused) feature.
HAN keeps the k cells of largest presence; AdaHAN keeps every cell whose softmax of presence over all
cells exceeds a threshold (1/number of cells by default), so the count varies per example (at least
``min_count`` cells, the top ones: 1 by default). ``soft``
(softmax weights over all cells) and ``none`` (every cell, weight 1) are the paper's baselines.

Cells are flattened row-major: cell n of an (H', W') grid is row n // W', column n % W'. Variable
counts are carried by boolean masks (B, N) so a minibatch needs no per-example code; ``pack_cells``
moves the selected cells to the front of a padded (B, M, D) tensor, M the largest count in the batch.

Under ``torch.compile``: top-k keeps exactly k cells in every example, so its ``Selection.count`` is k and
``pack_cells(..., max_count=k)`` sizes the packed tensor without reading anything back from the device
(no graph break). AdaHAN's count depends on the data; the method needs it, so ``pack_cells`` reads the
batch's largest count back (one device sync and one graph break per call), or packs into all N cells with
``max_count=N`` (no break, the head then runs on N padded cells instead of M).
"""
from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor

Mode = Literal["topk", "adaptive", "soft", "none"]
SELECTIONS = get_args(Mode)


class Selection(NamedTuple):
    mask: Tensor     # (B, N) bool, the cells that reach the answer head
    weights: Tensor  # (B, N) float, each cell's weight in the head: 1/0 for hard modes, softmax for soft
    count: int | None = None  # the number of cells every example keeps, where the method fixes it (top-k)


def presence(cells: Tensor) -> Tensor:
    """L2 norm of each cell's feature: (B, N, C) -> (B, N), in float32."""
    return cells.float().norm(dim=-1)


def resolve_k(k: int | float, num_cells: int) -> int:
    """The number of cells kept: an int k as is, a float in (0, 1] as that fraction of ``num_cells`` (at least 1)."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ValueError(f"k={k!r} must be a cell count (int >= 1) or a fraction of cells (float in (0, 1])")
    if isinstance(k, float):
        if not 0.0 < k <= 1.0:
            raise ValueError(f"k={k} as a float is a fraction of the {num_cells} cells and must be in (0, 1]; "
                             f"pass an int for a count")
        return max(1, int(round(k * num_cells)))
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    if k > num_cells:
        raise ValueError(f"k={k} exceeds the {num_cells} cells of the feature grid; use k <= {num_cells} "
                         f"or a fraction such as k=0.25")
    return k


def topk_select(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Indices (B, k) of the k largest scores per row of (B, N), in decreasing order, and the mask (B, N)."""
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the {scores.shape[1]} cells of the grid")
    idx = scores.topk(k, dim=1).indices  # (B, k)
    mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, idx, True)  # (B, N)
    return idx, mask


def standardize(scores: Tensor) -> Tensor:
    """Each row of (B, N) scores as z-scores: minus the row's mean, over its std (rows of equal scores give 0s)."""
    s = scores.float()
    return (s - s.mean(dim=1, keepdim=True)) / s.std(dim=1, keepdim=True).clamp_min(1e-6)  # (B, N)


def adaptive_select(scores: Tensor, threshold: float | None = None, min_count: int = 1) -> Tensor:
    """Mask (B, N) of cells whose softmax over the row exceeds ``threshold`` (default 1/N).

    The ``min_count`` cells of largest score are always kept (default 1, the paper's AdaHAN plus the guarantee
    that no example is left with nothing: with equal scores every softmax value is exactly 1/N and none exceeds
    the default threshold); a larger floor keeps at least that many, and more where the softmax singles them out.
    """
    n = scores.shape[1]
    threshold = 1.0 / n if threshold is None else threshold
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold={threshold} must be in [0, 1) (a softmax value; default 1/{n})")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or not 1 <= min_count <= n:
        raise ValueError(f"min_count={min_count!r} must be a cell count between 1 and the {n} cells of the grid")
    probs = scores.float().softmax(dim=1)  # (B, N)
    mask = probs > threshold
    # argmax for the default floor: the cell it has always kept, ties included (e.g. a blank image's zero presence)
    top = scores.argmax(dim=1, keepdim=True) if min_count == 1 else scores.topk(min_count, dim=1).indices  # (B, floor)
    return mask.scatter(1, top, True)


def select(scores: Tensor, mode: Mode, k: int | None = None, threshold: float | None = None,
           min_count: int = 1, zscore: bool = False) -> Selection:
    """The selection of ``mode`` (topk | adaptive | soft | none) over presence ``scores`` (B, N); ``min_count`` is
    adaptive's floor (the cells of largest presence it always keeps); ``zscore``: adaptive thresholds the softmax
    of each row's z-scores instead of the raw presence, so how many cells pass depends on the shape of the row's
    presence, not on its scale (which otherwise grows in training until the softmax keeps one cell)."""
    if mode == "topk":
        if k is None:
            raise ValueError("mode='topk' needs k (a count or a fraction of cells)")
        mask = topk_select(scores, k)[1]
        return Selection(mask, mask.to(scores.dtype), k)
    if mode == "adaptive":
        mask = adaptive_select(standardize(scores) if zscore else scores, threshold, min_count)
        return Selection(mask, mask.to(scores.dtype))
    if mode == "soft":
        return Selection(torch.ones_like(scores, dtype=torch.bool), scores.softmax(dim=1))
    if mode == "none":
        return Selection(torch.ones_like(scores, dtype=torch.bool), torch.ones_like(scores))
    raise ValueError(f"mode={mode!r} is not supported; use one of {', '.join(SELECTIONS)}")


def presence_gradient(selection: Selection, scores: Tensor) -> Selection:
    """A hard selection whose weights pass a gradient to the presence ``scores`` (B, N) (straight-through).

    Forward, nothing changes: a kept cell's weight is still exactly 1 (``1 + (s - s)`` with the second ``s``
    detached) and a dropped cell's 0. Backward, the gradient of the loss with respect to a kept cell's weight
    reaches that cell's presence, as if the cell were weighted by its presence: a kept cell that helps the
    answer is pushed up the ranking, one that hurts is pushed down. Dropped cells still get no gradient.
    """
    return selection._replace(weights=selection.weights * (1 + (scores - scores.detach())))


def pack_cells(cells: Tensor, mask: Tensor, max_count: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Selected cells moved to the front: (B, N, D), (B, N) -> cells (B, M, D), valid (B, M), indices (B, M).

    M is ``max_count`` if given (at least every row's count: e.g. ``Selection.count``, or N), else the
    largest count in the batch, read back from the device; row b holds its selected cells in grid order
    followed by padding (valid False, copies of some cell that the caller must zero out or weight by 0).
    """
    n = mask.shape[1]
    if max_count is not None and not 1 <= max_count <= n:
        raise ValueError(f"max_count={max_count} must be between 1 and the {n} cells of the mask")
    m = int(mask.sum(dim=1).max().item()) if max_count is None else max_count
    order = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :m]  # (B, M)
    valid = torch.gather(mask, 1, order)  # (B, M)
    packed = torch.gather(cells, 1, order[..., None].expand(-1, -1, cells.shape[-1]))  # (B, M, D)
    return packed, valid, order
