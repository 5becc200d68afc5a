"""A trained HAN / AdaHAN checkpoint's test accuracy split finer than the logged per-type figures.

For each question type, and for relate questions by relation word (left / right / above / below) and count
questions by answer, it prints the accuracy, the number of items, and the mean number of cells the model kept;
the items are the checkpoint's own test split (datamodule flags may be overridden, e.g. ``--test_size``).

    python -m benchmarks.probes.vqa_by_question --ckpt runs/NAME/.../checkpoints/best-...ckpt [key=value ...]

Used for ``--relate_axes=xy`` (docs/studies/vqa_6x6.md): with the flat head's slots in column order, "left of" is given away by
the slots' order and "above" is not, so the two are reported apart.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from attention_lightning.run.commands import checkpoint_plan
from attention_lightning.models.han import QTYPE_NAMES
from attention_lightning.run.plan import build_datamodule
from attention_lightning.run.checkpoints import load_model
from benchmarks.common import key_values

RELATE_WORDS = ("left", "right", "above", "below")


def group_of(qtype: str, text: str, answer: str) -> str:
    """The finer group of one question: its type, plus the relation word (relate) or the answer (count)."""
    if qtype == "relate":
        return "relate " + next(w for w in RELATE_WORDS if f" {w} " in text)
    return f"count = {answer}" if qtype == "count" else qtype


@torch.no_grad()
def by_question(ckpt: str, flags: dict) -> dict[str, tuple[float, int, float]]:
    """{group: (accuracy, items, mean cells kept)} over the checkpoint's test split, types first."""
    path, p = checkpoint_plan("test", {"ckpt": ckpt, **flags})
    dm = build_datamodule(p)
    dm.setup("test")
    model = load_model(p, path).eval()
    hits, cells = defaultdict(list), defaultdict(list)
    for batch in dm.test_dataloader():
        encoded, q = model.encode(*model.inputs(batch))
        sel = model.choose(encoded)
        right = model.answer(encoded, q, sel).argmax(-1) == batch.answer  # (B,)
        kept = sel.mask.sum(1)  # (B,)
        for i, text in enumerate(batch.text):  # grouping strings, not tensor work
            qtype = QTYPE_NAMES[int(batch.qtype[i])]
            answer = dm.answers[int(batch.answer[i])]
            for group in dict.fromkeys((qtype, group_of(qtype, text, answer))):
                hits[group].append(float(right[i]))
                cells[group].append(float(kept[i]))
    return {g: (sum(h) / len(h), len(h), sum(cells[g]) / len(h)) for g, h in sorted(hits.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True)
    args, rest = p.parse_known_args()
    table = by_question(args.ckpt, key_values(rest))
    print(f"{'group':<16} {'acc':>6} {'items':>6} {'cells kept':>10}")
    for group, (acc, n, kept) in table.items():
        print(f"{group:<16} {acc:6.3f} {n:6d} {kept:10.2f}")


if __name__ == "__main__":
    main()
