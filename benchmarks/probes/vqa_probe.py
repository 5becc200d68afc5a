"""HAN / AdaHAN on a VQA scenes preset: validation accuracy per question type every few steps.

A plain training loop (one thread, the preset's data, model and batch size, Adam at the model's lr) that prints,
every ``--every`` steps, validation accuracy overall and per question type beside the per-question-type prior
(the best a model can do from the question's type alone, measured on the training items seen) and the fraction
of cells attended. For deciding task and model settings fast; the reported figures come from ``cli.py fit``.
Settings are ``key=value`` pairs on top of the preset:

    python -m benchmarks.probes.vqa_probe --config configs/han_vqa_6x6.yaml --steps 1500 --every 250 selection=none

``--oracle_encoder=N`` first trains the image encoder alone for N steps with each grid cell's contents as its
label (empty, or which colour-shape pair sits in the place), then freezes it: a diagnostic that separates
learning what is in a cell (the encoder, from the answers alone) from learning which cells to read and how
(selection and head). It needs an encoder whose grid is the scene's lattice (the patch presets).
"""
from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict

import numpy as np
import torch
import torch.nn as nn

from attention_lightning.models.han import QTYPE_NAMES
from attention_lightning.run.plan import build_datamodule, build_model, load_config, plan
from benchmarks.common import key_values


def cell_labels(scenes, grid: int, num_shapes: int) -> torch.Tensor:
    """Label of each place (B, grid * grid), row-major: 0 empty, else 1 + colour * num_shapes + shape."""
    b, m = scenes.colour.shape
    rows, slots = np.nonzero(np.arange(m)[None] < scenes.count[:, None])  # the real objects
    labels = np.zeros((b, grid * grid), dtype=np.int64)
    labels[rows, scenes.place[rows, slots]] = 1 + scenes.colour[rows, slots] * num_shapes + scenes.shape[rows, slots]
    return torch.from_numpy(labels)


def labelled(data, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, S, S) of items start .. start + size of a VQAScenes split, and their cell labels (B, N)."""
    streams = data.streams(range(start, start + size))
    scenes = data.phrased(streams)
    images = torch.from_numpy(data.gen.render_batch(scenes, streams))
    return images, cell_labels(scenes, data.gen.grid, data.gen.num_shapes)


def oracle_encoder(model, dm, steps: int, batch_size: int) -> float:
    """Train ``model.image_encoder`` (and a throwaway 1x1 classifier) on the cells' contents, then freeze it.

    Returns the validation accuracy on occupied cells (colour and shape both right)."""
    gen, encoder = dm.train_set.gen, model.image_encoder
    if model.grid_hw != (gen.grid, gen.grid):
        raise ValueError(f"--oracle_encoder needs the encoder's grid {model.grid_hw} to be the scenes' "
                         f"{gen.grid}x{gen.grid} lattice (e.g. encoder_kernels=[16,1] encoder_strides=[16,1] at 96 px)")
    classify = nn.Conv2d(encoder.out_channels, 1 + len(gen.combos), 1)
    opt = torch.optim.Adam([*encoder.parameters(), *classify.parameters()], lr=1e-3)
    for step in range(steps):
        images, labels = labelled(dm.train_set, step * batch_size, batch_size)
        loss = nn.functional.cross_entropy(classify(encoder(images)).flatten(2), labels)  # over (B, classes, N)
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)  # a stale gradient would let the model's Adam move the frozen encoder
    encoder.eval().requires_grad_(False)
    images, labels = labelled(dm.val_set, 0, 512)
    with torch.no_grad():
        pred = classify(encoder(images)).flatten(2).argmax(1)  # (B, N)
    occupied = labels > 0
    return (pred[occupied] == labels[occupied]).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/han_vqa_6x6.yaml")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--val_size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--oracle_encoder", type=int, default=0, help="steps of per-cell supervision, then freeze")
    p.add_argument("overrides", nargs="*", help="model or data settings as key=value")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    flags = load_config(a.config)
    flags.update(key_values(a.overrides))
    flags.update(train_size=a.steps * flags.get("batch_size", 64), val_size=a.val_size, logger="none")
    pl_plan = plan(flags)
    dm = build_datamodule(pl_plan)
    dm.setup("fit")
    model = build_model(pl_plan, dm)
    if a.oracle_encoder:
        acc = oracle_encoder(model, dm, a.oracle_encoder, flags.get("batch_size", 64))
        print(f"oracle encoder: {a.oracle_encoder} steps of per-cell labels, occupied-cell accuracy {acc:.3f}, frozen")
    opt = model.configure_optimizers()  # Adam at the model's lr
    val = list(dm.val_dataloader())
    prior: dict[int, Counter] = defaultdict(Counter)  # question type -> answer counts on the training items seen
    start = time.perf_counter()
    for step, batch in enumerate(dm.train_dataloader(), 1):
        for t, y in zip(batch.qtype.tolist(), batch.answer.tolist()):
            prior[t][y] += 1
        loss = torch.nn.functional.cross_entropy(model(*model.inputs(batch)), batch.answer)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.every == 0 or step == a.steps:
            model.eval()
            hit, seen, prior_hit, attended = Counter(), Counter(), Counter(), []
            with torch.no_grad():
                for vb in val:
                    cells, q = model.encode(*model.inputs(vb))
                    sel = model.choose(cells)
                    pred = model.answer(cells, q, sel).argmax(-1)
                    attended.append(sel.mask.float().mean(1))
                    for t, y, yh in zip(vb.qtype.tolist(), vb.answer.tolist(), pred.tolist()):
                        seen[t] += 1
                        hit[t] += y == yh
                        prior_hit[t] += prior[t].most_common(1)[0][0] == y if prior[t] else 0
            model.train()
            if a.oracle_encoder:
                model.image_encoder.eval()  # frozen, BatchNorm statistics included
            per = " ".join(f"{QTYPE_NAMES[t]} {hit[t] / seen[t]:.3f}/{prior_hit[t] / seen[t]:.3f}" for t in sorted(seen))
            total = sum(hit.values()) / sum(seen.values())
            print(f"step {step}: loss {loss.item():.3f} val {total:.3f} [{per}] (acc/prior) "
                  f"attended {torch.cat(attended).mean().item():.3f} ({time.perf_counter() - start:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
