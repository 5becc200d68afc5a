"""DHAM on the noisy 120x120 digits: validation accuracy every few steps, for deciding head settings fast.

Trains with a plain loop (one thread, the preset's data and batch size, Adam at the model's lr) and prints
greedy validation accuracy and the mean crop half size every ``--every`` steps. Model settings are
``key=value`` pairs on top of ``configs/dham_noisy120.yaml``'s model settings:

    python -m benchmarks.probes.dham_noisy --steps 300 --every 50 head_pool=4 head_stride=1
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from attention_lightning.models.dham import DHAM
from benchmarks.common import key_values
from datamodules.cluttered_mnist import ClutteredMNIST

PRESET = Path(__file__).resolve().parents[2] / "configs" / "dham_noisy120.yaml"
DATA_KEYS = ("variant", "canvas_size", "scale_range", "snr", "batch_size", "digits")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--val_size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="model or data settings as key=value")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    preset = yaml.safe_load(PRESET.read_text())
    preset.update(key_values(a.overrides))
    data = {k: preset[k] for k in DATA_KEYS if k in preset}
    dm = ClutteredMNIST(train_size=a.steps * preset["batch_size"], val_size=a.val_size, **data)
    dm.setup()
    skip = set(DATA_KEYS) | {"model", "data", "train_size", "max_epochs", "val_size"}
    model = DHAM(**{k: v for k, v in preset.items() if k not in skip})
    opt = model.configure_optimizers()
    xv, yv = next(iter(torch.utils.data.DataLoader(dm.val_set, batch_size=a.val_size)))
    start = time.perf_counter()
    for step, (x, y) in enumerate(dm.train_dataloader(), 1):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.every == 0:
            model.eval()
            with torch.no_grad():
                moments, half = model.locate(xv)
                acc = (model.classifier(model.crop(xv)[0]).argmax(-1) == yv).float().mean().item()
            model.train()
            x_mean, x_std = moments.center[:, 0].mean().item(), moments.center[:, 0].std().item()
            print(f"step {step}: loss {loss.item():.3f} val acc {acc:.3f} half {half.mean().item():.3f} "
                  f"center x {x_mean:+.2f}+-{x_std:.2f} "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
