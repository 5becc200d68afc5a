"""PHAM's recurrent attention blocks F, R, C and the EIG score (Rangrej & Clark, BMVC 2021).

F extracts features of a glimpse and its location, R updates the hidden state, C gives p(y | h_t).
Every normalization here is per sample (GroupNorm / LayerNorm, no BatchNorm), so a glimpse gets
exactly the same features whether F sees it alone or among all cells of the grid, in training and
in eval mode alike. All blocks act on the last dimension and broadcast over any leading ones, so the
lookahead scores every (z sample, cell) pair in one batched call.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def _groups(channels: int) -> int:
    """Groups for GroupNorm: up to 8, dividing ``channels``."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class GlimpseFeatures(nn.Module):
    """F: f = LayerNorm(LeakyReLU(CNN(glimpse) + Linear(location))), features of size ``features``.

    The CNN stacks valid 3x3 convs until the map is 2x2 (or smaller), then one conv covering what
    is left, so a ``g x g`` glimpse becomes one ``features`` vector. ``channels`` gives the widths of the
    3x3 convs (the last width repeats when more convs are needed, e.g. for 16x16 glimpses).
    """

    def __init__(self, in_channels: int, glimpse_size: int, channels: Sequence[int], features: int) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels=[] must list at least one width, e.g. [64, 128, 256]")
        n_conv = max(0, (glimpse_size - 2) // 2)
        layers, c, side = [], in_channels, glimpse_size
        for i in range(n_conv):
            out = int(channels[min(i, len(channels) - 1)])
            layers += [nn.Conv2d(c, out, 3), nn.LeakyReLU(), nn.GroupNorm(_groups(out), out)]
            c, side = out, side - 2
        layers.append(nn.Conv2d(c, features, side))  # (M, features, 1, 1)
        self.cnn = nn.Sequential(*layers)
        self.where = nn.Linear(2, features)
        self.norm = nn.LayerNorm(features)
        self.features = features

    def what(self, glimpses: Tensor) -> Tensor:
        """Content features (..., features) of glimpses (..., C, g, g), before the location is added."""
        lead = glimpses.shape[:-3]
        out = self.cnn(glimpses.reshape(-1, *glimpses.shape[-3:]))  # (M, features, 1, 1)
        return out.reshape(*lead, self.features)

    def combine(self, what: Tensor, locations: Tensor) -> Tensor:
        """Glimpse features (..., features) from content features (..., features) and locations (..., 2) in [-1, 1]."""
        return self.norm(F.leaky_relu(what + self.where(locations)))

    def forward(self, glimpses: Tensor, locations: Tensor) -> Tensor:
        """Features (..., features) of glimpses (..., C, g, g) at (x, y) locations (..., 2)."""
        return self.combine(self.what(glimpses), locations)


class Recurrent(nn.Module):
    """R: h_t = LayerNorm(LeakyReLU(W_f f_t + W_h h_{t-1})); broadcasts f (..., F) against h (..., H)."""

    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.from_f = nn.Linear(features, hidden)
        self.from_h = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.hidden = hidden

    def forward(self, f: Tensor, h: Tensor) -> Tensor:
        return self.norm(F.leaky_relu(self.from_f(f) + self.from_h(h)))  # (..., hidden)


class Classifier(nn.Module):
    """C: logits of p(y | h_t); dropout acts on the trained path only, never in ``lookahead``."""

    def __init__(self, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, num_classes)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(self.dropout(h))  # (..., K)

    def lookahead(self, h: Tensor) -> Tensor:
        """Deterministic logits (..., K) for the lookahead (no dropout, whatever the mode)."""
        return self.linear(h)


def information_gain(lookahead_logits: Tensor, prior_logits: Tensor, visited: Tensor) -> Tensor:
    """EIG per cell (B, N): KL[p(y | f~(l), h_t) || p(y | h_t)] averaged over z samples; -inf on visited cells.

    ``lookahead_logits`` (B, S, N, K) for S z samples and N cells, ``prior_logits`` (B, K), ``visited`` (B, N) bool.
    """
    # classes first: on CPU a log-softmax over a short last dimension (K ~ 10) is many times slower than over
    # the leading one, and this runs on B * S * N rows at every step
    log_p = lookahead_logits.float().movedim(-1, 0).log_softmax(0)      # (K, B, S, N)
    log_q = prior_logits.float().log_softmax(-1).T[:, :, None, None]    # (K, B, 1, 1)
    kl = (log_p.exp() * (log_p - log_q)).sum(0).mean(1)                 # (B, N)
    return kl.masked_fill(visited, float("-inf"))


def random_scores(visited: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform random scores (B, N) with -inf on visited cells: their argmax is a random unvisited cell."""
    u = torch.rand(visited.shape, device=visited.device, generator=generator)
    return u.masked_fill(visited, float("-inf"))
