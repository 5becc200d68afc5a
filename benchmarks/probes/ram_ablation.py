"""RAM ablation on the embedded real digits: which choices make the greedy policy learn fast per epoch.

Trains RAM (28x28 digits, 6 glimpses of 8x8, batch 128) with a plain loop over the model's own rollout
and losses, one thread, and after every epoch writes greedy and Monte-Carlo validation accuracy to a CSV.
Validation digits are the same 400 (10%) that ``cluttered_mnist`` holds out of the 4,000 embedded train
digits; the 1,000 embedded test digits are only read with ``--test`` (final runs, never for choosing).

    python -m benchmarks.probes.ram_ablation run --configs old,new --seeds 0,1,2 --epochs 40 --test
    python -m benchmarks.probes.ram_ablation table                 # the markdown table from the CSV

An epoch is one pass over the 3,600 training digits (28 steps of 128) unless ``--epoch_images`` says otherwise:
``--epoch_images=54000`` makes an epoch as long as the port's on full MNIST (422 steps of 128; the embedded
digits are dealt again in a fresh order whenever they run out), so epoch counts compare at equal steps.

Each config is the old default (``old``) with one change; ``new`` is ``configs/ram_mnist.yaml`` (the new
defaults with inputs normalized by MNIST's mean and std); ``port`` is the most used port's choices; ``new/std=0.05``
(any ``key=value`` after slashes) is the preset with those changes.
"""
from __future__ import annotations

import argparse
import csv
import inspect
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from attention_lightning.models.ram import RAM
from datamodules.digits import load_embedded

RESULTS = Path(__file__).resolve().parents[1] / "results" / "ram_ablation.csv"
PRESET = Path(__file__).resolve().parents[2] / "configs" / "ram_mnist.yaml"
MNIST_NORM = dict(input_mean=0.1307, input_std=0.3081)
# the earlier defaults (the paper's setting with Adam): learned l_0, linear locator, no clamping,
# REINFORCE into the core with weight 0.1, lr 1e-3 decayed linearly to 0, inputs in [0, 1]
OLD = dict(first_location="learned", locator_hidden=0, clamp=False, detach_policy=False, reinforce_weight=0.1,
           std=0.1, lr=1e-3, lr_decay=True, input_mean=0.0, input_std=1.0, reward="correct")
# the most used port's choices, expressed in this model's flags
PORT = dict(first_location="random", locator_hidden=128, clamp=True, detach_policy=True, reinforce_weight=0.01,
            std=0.05, lr=3e-4, lr_decay=False, **MNIST_NORM, reward="correct")
CONFIGS: dict[str, dict] = {
    "old": OLD,
    "new": {},  # configs/ram_mnist.yaml's model settings (filled in by preset())
    "port": PORT,
    "random_l0": {**OLD, "first_location": "random"},
    "locator_hidden": {**OLD, "locator_hidden": 128},
    "clamp": {**OLD, "clamp": True},
    "detach_policy": {**OLD, "detach_policy": True},
    "rw0.01": {**OLD, "reinforce_weight": 0.01},
    "rw0.03": {**OLD, "reinforce_weight": 0.03},
    "std0.05": {**OLD, "std": 0.05},
    "std0.2": {**OLD, "std": 0.2},
    "no_lr_decay": {**OLD, "lr_decay": False},
    "lr3e-4": {**OLD, "lr": 3e-4},
    "normalized": {**OLD, **MNIST_NORM},
    "prob_reward": {**OLD, "reward": "prob"},
}
FIELDS = ["config", "seed", "epoch", "split", "greedy", "mc", "seconds"]


def preset() -> dict:
    """The model settings of ``configs/ram_mnist.yaml`` (the new defaults plus input normalization)."""
    keys = set(inspect.signature(RAM).parameters) - {"num_classes", "in_channels", "image_size"}
    return {k: v for k, v in yaml.safe_load(PRESET.read_text()).items() if k in keys}


def config(name: str) -> dict:
    """A config's model settings: a name of ``CONFIGS``, or ``new/key=value/...`` for the preset with changes."""
    base, *changes = name.split("/")
    settings = dict(preset() if base == "new" else CONFIGS[base])
    for change in changes:
        key, value = change.split("=", 1)
        settings[key] = yaml.safe_load(value)
    return settings


def data(val_fraction: float = 0.1):
    """Train, val (held out of train like ``cluttered_mnist``) and test digits as float (N, 1, 28, 28) in [0, 1]."""
    d = load_embedded()
    n = len(d.train_labels)
    perm = torch.from_numpy(np.random.default_rng(12345).permutation(n))
    n_val = max(1, int(round(n * val_fraction)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    f = lambda x: x.float()[:, None] / 255.0  # noqa: E731
    return ((f(d.train_images[train_idx]), d.train_labels[train_idx]), (f(d.train_images[val_idx]), d.train_labels[val_idx]),
            (f(d.test_images), d.test_labels))


@torch.no_grad()
def evaluate(model: RAM, x: torch.Tensor, y: torch.Tensor, mc: int) -> tuple[float, float]:
    """Greedy accuracy and accuracy of the class probabilities averaged over ``mc`` sampled rollouts."""
    model.eval()
    greedy = (model(x).argmax(-1) == y).float().mean().item()
    probs = model.rollout(x.repeat(mc, 1, 1, 1), sample=True).logits[:, -1].softmax(-1)
    probs = probs.view(mc, len(y), -1).mean(0)
    model.train()
    return greedy, (probs.argmax(-1) == y).float().mean().item()


def batches(n: int, batch_size: int, epoch_images: int, gen: torch.Generator):
    """Index batches for one epoch of ``epoch_images`` images (or one pass over ``n``): fresh orders of all n."""
    total = epoch_images or n
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-total // n))])[:total]
    return order.split(batch_size)


def run(name: str, seed: int, epochs: int, batch_size: int, test: bool, out: Path, epoch_images: int = 0) -> None:
    torch.manual_seed(seed)
    (xt, yt), (xv, yv), (xs, ys) = data()
    settings = {"glimpses": 6, "glimpse_size": 8, "depth": 1, **config(name)}
    model = RAM(num_classes=10, image_size=(28, 28), **settings)
    steps_per_epoch = -(-(epoch_images or len(yt)) // batch_size)
    conf = model.optimizer_for(epochs * steps_per_epoch)
    opt, sched = (conf, None) if isinstance(conf, torch.optim.Optimizer) else (conf["optimizer"], conf["lr_scheduler"]["scheduler"])
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    rows: list[dict] = []
    for epoch in range(1, epochs + 1):
        for idx in batches(len(yt), batch_size, epoch_images, gen):
            terms = model.episode_losses(model.rollout(xt[idx], sample=True), yt[idx])
            loss = sum(terms.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        g, m = evaluate(model, xv, yv, model.hparams.mc_samples)
        rows.append(dict(config=name, seed=seed, epoch=epoch, split="val", greedy=g, mc=m,
                         seconds=round(time.perf_counter() - start, 1)))
        if test and epoch in (5, 10, 20, 40):
            g, m = evaluate(model, xs, ys, model.hparams.mc_samples)
            rows.append(dict(config=name, seed=seed, epoch=epoch, split="test", greedy=g, mc=m,
                             seconds=round(time.perf_counter() - start, 1)))
        print(f"{name} seed {seed} epoch {epoch}: val greedy {rows[-1]['greedy']:.3f} mc {rows[-1]['mc']:.3f} "
              f"({rows[-1]['seconds']}s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    with out.open("a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)


def table(path: Path, split: str, epochs: list[int]) -> str:
    """Markdown table: mean +- standard error over seeds of greedy / MC accuracy (%) at each epoch count."""
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    names = list(dict.fromkeys(r["config"] for r in rows))
    head = "| config | seeds | " + " | ".join(f"{e} ep greedy / MC" for e in epochs) + " |"
    lines = [head, "|" + "---|" * (2 + len(epochs))]
    for name in names:
        cells, seeds = [], set()
        for e in epochs:
            sel = [r for r in rows if r["config"] == name and int(r["epoch"]) == e]
            seeds |= {r["seed"] for r in sel}
            if not sel:
                cells.append("")
                continue
            parts = []
            for key in ("greedy", "mc"):
                v = 100 * np.array([float(r[key]) for r in sel])
                se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
                parts.append(f"{v.mean():.1f}" + (f" ± {se:.1f}" if len(v) > 1 else ""))
            cells.append(" / ".join(parts))
        lines.append(f"| {name} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--configs", default="old,new")
    r.add_argument("--seeds", default="0")
    r.add_argument("--epochs", type=int, default=40)
    r.add_argument("--batch_size", type=int, default=128)
    r.add_argument("--test", action="store_true", help="also evaluate the test digits at 5/10/20/40 epochs")
    r.add_argument("--out", type=Path, default=RESULTS)
    r.add_argument("--epoch_images", type=int, default=0,
                   help="training images per epoch (default: one pass over the digits; 54000: the port's MNIST epoch)")
    t = sub.add_parser("table")
    t.add_argument("--csv", type=Path, default=RESULTS)
    t.add_argument("--split", default="val")
    t.add_argument("--epochs", default="5,10,20,40")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.cmd == "run":
        for name in a.configs.split(","):
            if name.split("/")[0] not in CONFIGS:
                raise SystemExit(f"unknown config {name!r}; use one of {', '.join(CONFIGS)}")
        for name in a.configs.split(","):
            for seed in (int(s) for s in a.seeds.split(",")):
                run(name, seed, a.epochs, a.batch_size, a.test, a.out, a.epoch_images)
    else:
        print(table(a.csv, a.split, [int(e) for e in a.epochs.split(",")]))


if __name__ == "__main__":
    main()
