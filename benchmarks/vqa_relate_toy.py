"""Can HAN's set head learn "is A left of B ?" when each cell's contents and the question's words are given exactly?

No images and no question encoder: a cell is a learned embedding of its contents (empty, or one of the
colour-shape pairs), the question a linear map of one-hot (colour A, shape A, colour B, shape B), fused with
FiLM and the sum as in ``--fusion=film``; scenes as in the 6x6 preset (5-9 objects with distinct pairs on a
6x6 lattice, A and B in different columns). Prints held-out accuracy every 500 steps. A diagnostic for issue
17.2 (benchmarks/README.md, "VQA 6x6"): in the full model relate stays at its prior even with an oracle encoder.

    OMP_NUM_THREADS=1 python benchmarks/vqa_relate_toy.py --steps 3000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention_lightning.models.han import SetHead, cell_centers  # noqa: E402

GRID, COLOURS, SHAPES = 6, 4, 4


def scenes(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cell contents (B', N) (0 empty, 1 + pair), questions (B', 16) and answers (B',) (1: A left of B);
    rows whose A and B share a column are dropped."""
    pairs, cells = COLOURS * SHAPES, GRID * GRID
    n = torch.randint(5, 10, (batch,), generator=gen)                       # objects per scene
    pair = torch.rand(batch, pairs, generator=gen).argsort(1)[:, :9]        # (B, 9) distinct pairs, first n real
    place = torch.rand(batch, cells, generator=gen).argsort(1)[:, :9]       # (B, 9) distinct places
    real = torch.arange(9)[None] < n[:, None]
    contents = torch.zeros(batch, cells, dtype=torch.long).scatter(1, place, torch.where(real, 1 + pair, 0))
    a, b = pair[:, 0], pair[:, 1]                                           # A and B: the first two objects
    col_a, col_b = place[:, 0] % GRID, place[:, 1] % GRID
    words = [F.one_hot(v, k) for v, k in ((a // SHAPES, COLOURS), (a % SHAPES, SHAPES),
                                          (b // SHAPES, COLOURS), (b % SHAPES, SHAPES))]
    keep = col_a != col_b
    return contents[keep], torch.cat(words, 1).float()[keep], (col_a < col_b).long()[keep]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    held_out = [scenes(256, torch.Generator().manual_seed(10_000 + i)) for i in range(4)]
    cell_embed = nn.Embedding(1 + COLOURS * SHAPES, a.width)
    question = nn.Linear(COLOURS + SHAPES + COLOURS + SHAPES, a.width)
    head = SetHead(a.width, a.width, a.width, 2, GRID * GRID)
    xy = cell_centers(GRID, GRID)  # (N, 2) row-major, as HAN's cells

    def logits(contents: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        q = question(words)                                                  # (B, C)
        cells = F.relu(cell_embed(contents) * (1 + q[:, None]) + q[:, None])  # (B, N, C), FiLM and sum
        return head(cells, xy.expand(len(contents), -1, -1), torch.ones(contents.shape), q)

    opt = torch.optim.Adam([*cell_embed.parameters(), *question.parameters(), *head.parameters()], lr=1e-3)
    for step in range(1, a.steps + 1):
        contents, words, answer = scenes(a.batch_size, gen)
        loss = F.cross_entropy(logits(contents, words), answer)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == a.steps:
            with torch.no_grad():
                hit = sum((logits(c, w).argmax(-1) == y).sum().item() for c, w, y in held_out)
            total = sum(len(y) for _, _, y in held_out)
            print(f"step {step}: loss {loss.item():.3f} held-out accuracy {hit / total:.3f}", flush=True)


if __name__ == "__main__":
    main()
