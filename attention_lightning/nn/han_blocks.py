"""Building blocks of HAN (Malinowski et al., 2018): the question encoder (an LSTM, a GRU or a bag of words over
word ids), the heads that answer from the selected cells, the grid's cell centres and its conv arithmetic.

Plain ``nn.Module``s: HAN (``attention_lightning.models.han``) wires them, with its image encoder, and chooses the
cells.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence

from .coords import pixel_centers


def conv_out(size: int, stride: int, kernel: int = 3) -> int:
    """Output length of a ``kernel`` conv with padding ``conv_padding(kernel)`` and ``stride`` on an axis of ``size``."""
    return (size + 2 * conv_padding(kernel) - kernel) // stride + 1


def conv_padding(kernel: int) -> int:
    """Odd kernels pad kernel // 2 ('same' at stride 1); even kernels pad 0 (kernel == stride cuts patches)."""
    return kernel // 2 if kernel % 2 else 0


def cell_centers(h: int, w: int, device=None, dtype=None) -> Tensor:
    """Centers (h * w, 2) of an (h, w) grid's cells as (x, y) in [-1, 1], row-major."""
    ys, xs = pixel_centers(h, device=device, dtype=dtype), pixel_centers(w, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(h * w, 2)  # (N, 2)


class QuestionEncoder(nn.Module):
    """Word embeddings and an LSTM/GRU (the last hidden state of each question's true length), or ``bow``: a
    sum of one embedding per (position, word) pair through a linear layer, i.e. a linear function of which
    word fills which slot: order is kept (a word's own embedding plus a position's would sum to the same
    vector for any order), and no recurrence has to learn to carry a word to the end (B, C)."""

    max_length = 24  # bow: positions with their own table; later words share the last one

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, rnn: Literal["lstm", "gru", "bow"]) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        if rnn == "bow":
            self.rnn = None
            self.embed = nn.Embedding(self.max_length * vocab_size, embed_dim)  # row = position * V + word
            self.out = nn.Linear(embed_dim, hidden)
        else:
            self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
            self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[rnn](embed_dim, hidden, batch_first=True)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if self.rnn is None:
            at = torch.arange(tokens.shape[1], device=tokens.device).clamp(max=self.max_length - 1)  # (L,)
            x = self.embed(at * self.vocab_size + tokens) * (tokens != 0)[..., None]  # (B, L, E), padding adds 0
            return self.out(x.sum(1))  # (B, C)
        x = self.embed(tokens)  # (B, L, E)
        packed = pack_padded_sequence(x, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        h = h[0] if isinstance(h, tuple) else h  # (1, B, C)
        return h[-1]  # (B, C)


class SetHead(nn.Module):
    """Answer head over a weighted set of cells: sum_i w_i g([cell_i, cell_i * q, xy_i, q]), then f([sum, q])."""

    def __init__(self, cell_dim: int, question_dim: int, hidden: int, num_classes: int, num_cells: int) -> None:
        super().__init__()
        if cell_dim != question_dim:
            raise ValueError(f"cell features ({cell_dim}) and the question ({question_dim}) must have one width")
        self.scale = num_cells ** -0.5  # a fixed scale (not a mean), so the sum still counts
        self.g = nn.Sequential(nn.Linear(2 * cell_dim + 2 + question_dim, hidden), nn.ReLU(inplace=True),
                               nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.f = nn.Sequential(nn.Linear(hidden + question_dim, hidden), nn.ReLU(inplace=True),
                               nn.Linear(hidden, num_classes))

    def forward(self, cells: Tensor, xy: Tensor, weights: Tensor, question: Tensor) -> Tensor:
        qs = question[:, None].expand(-1, cells.shape[1], -1)  # (B, M, C)
        # the product cell * question lets g match a cell against the question's words in one layer
        h = self.g(torch.cat([cells, cells * qs, xy, qs], dim=-1))  # (B, M, hidden)
        pooled = (h * weights[..., None]).sum(dim=1) * self.scale  # (B, hidden)
        return self.f(torch.cat([pooled, question], dim=-1))  # (B, K)


class PairHead(nn.Module):
    """Relation-network head over a weighted set of cells: sum_ij w_i w_j g([u_i, u_j, q]), then f([sum, q]),
    where u_i = [cell_i, cell_i * q, xy_i]; g's first layer is applied per cell and summed per pair."""

    def __init__(self, cell_dim: int, question_dim: int, hidden: int, num_classes: int, num_cells: int) -> None:
        super().__init__()
        if cell_dim != question_dim:
            raise ValueError(f"cell features ({cell_dim}) and the question ({question_dim}) must have one width")
        self.scale = 1.0 / num_cells  # a fixed scale over up to N^2 pairs (not a mean), so the sum still counts
        self.first = nn.Linear(2 * cell_dim + 2, hidden)
        self.second = nn.Linear(2 * cell_dim + 2, hidden, bias=False)
        self.question = nn.Linear(question_dim, hidden, bias=False)
        self.g = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.f = nn.Sequential(nn.Linear(hidden + question_dim, hidden), nn.ReLU(inplace=True),
                               nn.Linear(hidden, num_classes))

    def forward(self, cells: Tensor, xy: Tensor, weights: Tensor, question: Tensor) -> Tensor:
        u = torch.cat([cells, cells * question[:, None], xy], dim=-1)  # (B, M, 2C + 2)
        q = self.question(question)[:, None, None]  # (B, 1, 1, hidden)
        h = F.relu(self.first(u)[:, :, None] + self.second(u)[:, None] + q)  # (B, M, M, hidden)
        w = weights[:, :, None] * weights[:, None]  # (B, M, M)
        pooled = (self.g(h) * w[..., None]).sum(dim=(1, 2)) * self.scale  # (B, hidden)
        return self.f(torch.cat([pooled, question], dim=-1))  # (B, K)


class FlatHead(nn.Module):
    """Answer head without weight sharing across cells: the kept cells, in the order given, fill ``num_slots`` slots
    of [cell, cell * q, xy] (weighted; empty slots zero), flattened into one MLP with the question.

    The plain no-attention VQA model (an MLP over the whole feature grid, as a CNN's fully connected layer reads
    its last map) when every cell is kept (slots = N cells, slot i = cell i); with top-k (slots = k) each slot
    holds the i-th kept cell wherever it is, so the MLP reads k cells instead of N.
    """

    def __init__(self, cell_dim: int, question_dim: int, hidden: int, num_classes: int, num_slots: int) -> None:
        super().__init__()
        if cell_dim != question_dim:
            raise ValueError(f"cell features ({cell_dim}) and the question ({question_dim}) must have one width")
        self.num_slots = num_slots
        self.slots = nn.Linear(num_slots * (2 * cell_dim + 2), hidden)
        self.f = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                               nn.Linear(hidden, num_classes))
        self.question = nn.Linear(question_dim, hidden, bias=False)

    def forward(self, cells: Tensor, xy: Tensor, weights: Tensor, question: Tensor) -> Tensor:
        m = cells.shape[1]
        if m > self.num_slots:
            raise ValueError(f"{m} cells reached a flat head of {self.num_slots} slots")
        u = torch.cat([cells, cells * question[:, None], xy], dim=-1) * weights[..., None]  # (B, M, 2C + 2)
        u = F.pad(u, (0, 0, 0, self.num_slots - m))  # (B, S, 2C + 2), slots past the kept cells zero
        return self.f(self.slots(u.flatten(1)) + self.question(question))  # (B, K)
