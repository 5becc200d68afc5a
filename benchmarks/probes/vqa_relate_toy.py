"""Can HAN's set head learn "is A left of B ?" when each cell's contents and the question's words are given exactly?

No images: a cell is a learned embedding of its contents (empty, or one of the colour-shape pairs), the question
a linear map of one-hot (colour A, shape A, colour B, shape B[, the word left/right]) or, with ``--bow``, the
question's text through HAN's bag-of-words encoder; fused with FiLM and the sum as in ``--fusion=film``; scenes
as in the 6x6 preset (5-9 objects with distinct pairs on a 6x6 lattice, A and B in different columns). Prints
held-out accuracy every 500 steps. A diagnostic of the VQA 6x6 study (docs/studies/vqa_6x6.md):

    OMP_NUM_THREADS=1 python -m benchmarks.probes.vqa_relate_toy --steps 3000               # "left of" only: learns
    OMP_NUM_THREADS=1 python -m benchmarks.probes.vqa_relate_toy --steps 6000 --sides both  # yes/no XOR the word
    OMP_NUM_THREADS=1 python -m benchmarks.probes.vqa_relate_toy --steps 4000 --bow [--question_scale 0.1]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from attention_lightning.models.han import QuestionEncoder, SetHead, cell_centers
from datamodules.questions import Tokenizer, question_words, relate_text
from datamodules.scenes import COLOURS as COLOUR_NAMES, SHAPES as SHAPE_NAMES

GRID, COLOURS, SHAPES = 6, 4, 4
TOKENS = Tokenizer(question_words(GRID))


def scenes(batch: int, gen: torch.Generator, sides: str = "left", bow: bool = False
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cell contents (B', N) (0 empty, 1 + pair), questions (B', 16 or 18 one-hot; with ``bow`` (B', 10) token
    ids) and answers (B',) (1: yes); rows whose A and B share a column are dropped. ``sides='both'`` asks
    "left of" or "right of" at random, so the answer is (A left of B) XOR (the word is right)."""
    pairs, cells = COLOURS * SHAPES, GRID * GRID
    n = torch.randint(5, 10, (batch,), generator=gen)                       # objects per scene
    pair = torch.rand(batch, pairs, generator=gen).argsort(1)[:, :9]        # (B, 9) distinct pairs, first n real
    place = torch.rand(batch, cells, generator=gen).argsort(1)[:, :9]       # (B, 9) distinct places
    real = torch.arange(9)[None] < n[:, None]
    contents = torch.zeros(batch, cells, dtype=torch.long).scatter(1, place, torch.where(real, 1 + pair, 0))
    a, b = pair[:, 0], pair[:, 1]                                           # A and B: the first two objects
    col_a, col_b = place[:, 0] % GRID, place[:, 1] % GRID
    right = torch.randint(0, 2, (batch,), generator=gen) if sides == "both" else torch.zeros(batch, dtype=torch.long)
    answer = ((col_a < col_b) ^ right.bool()).long()  # (B,)
    keep = col_a != col_b
    if bow:
        colour, shape = list(COLOUR_NAMES), list(SHAPE_NAMES)
        text = [relate_text(colour[x // SHAPES], shape[x % SHAPES], "right" if w else "left", colour[y // SHAPES],
                            shape[y % SHAPES]) for x, y, w in zip(a.tolist(), b.tolist(), right.tolist())]
        words = torch.tensor([TOKENS.encode(t) for t in text])  # (B, 10): one template, one length
    else:
        parts = [(a // SHAPES, COLOURS), (a % SHAPES, SHAPES), (b // SHAPES, COLOURS), (b % SHAPES, SHAPES)]
        parts += [(right, 2)] if sides == "both" else []
        words = torch.cat([F.one_hot(v, k) for v, k in parts], 1).float()
    return contents[keep], words[keep], answer[keep]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sides", choices=("left", "both"), default="left", help="both: left/right word, answer XOR")
    p.add_argument("--bow", action="store_true", help="encode the question's text with HAN's bow encoder")
    p.add_argument("--question_scale", type=float, default=1.0, help="multiply the bow question code by this")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    held_out = [scenes(256, torch.Generator().manual_seed(10_000 + i), a.sides, a.bow) for i in range(4)]
    cell_embed = nn.Embedding(1 + COLOURS * SHAPES, a.width)
    if a.bow:
        encoder = QuestionEncoder(len(TOKENS), 32, a.width, "bow")  # the presets' embed_dim

        def question(words: torch.Tensor) -> torch.Tensor:
            return encoder(words, (words != 0).sum(1)) * a.question_scale  # (B, C)
        params = list(encoder.parameters())
    else:
        question = nn.Linear(2 * (COLOURS + SHAPES) + 2 * (a.sides == "both"), a.width)
        params = list(question.parameters())
    head = SetHead(a.width, a.width, a.width, 2, GRID * GRID)
    xy = cell_centers(GRID, GRID)  # (N, 2) row-major, as HAN's cells

    def logits(contents: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        q = question(words)                                                  # (B, C)
        cells = F.relu(cell_embed(contents) * (1 + q[:, None]) + q[:, None])  # (B, N, C), FiLM and sum
        return head(cells, xy.expand(len(contents), -1, -1), torch.ones(contents.shape), q)

    opt = torch.optim.Adam([*cell_embed.parameters(), *params, *head.parameters()], lr=1e-3)
    for step in range(1, a.steps + 1):
        contents, words, answer = scenes(a.batch_size, gen, a.sides, a.bow)
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
