"""Training throughput of every registered model at its presets: images/s and peak memory, after warm-up.

Each preset in configs/ runs a few real ``Trainer.fit`` steps (forward, backward, optimizer; data loading
excluded from the timing) on the current device. Presets whose dataset is not on disk (CIFAR, SVHN, CINIC-10,
Tiny ImageNet offline) run on random tensors of the dataset's shape, marked 'synthetic'.

    python -m benchmarks.throughput [--steps=10] [--batch_size=N] [--compile] [--only=ram,dham_mnist120]
        [--json=benchmarks/results/throughput.json] [--accelerator=gpu --precision=bf16-mixed]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import measure_training
from attention_lightning.run.plan import UserError, build_datamodule, plan
from datamodules.base import BaseDataModule, DatasetError

ROOT = Path(__file__).resolve().parents[1]
# shape and classes of the folder/torchvision datasets, for synthetic stand-ins
SHAPES = {"svhn": ((3, 32, 32), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100),
          "cinic10": ((3, 32, 32), 10), "tiny_imagenet": ((3, 64, 64), 200)}


class Synthetic(BaseDataModule):
    """Random images of a dataset's shape (for timing only)."""

    def __init__(self, dims, num_classes, batch_size, n) -> None:
        super().__init__(batch_size, 0, False)
        self.dims, self.num_classes = tuple(dims), num_classes
        g = torch.Generator().manual_seed(0)
        self.train_set = TensorDataset(torch.rand(n, *dims, generator=g), torch.randint(0, num_classes, (n,), generator=g))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=False)


def presets(only):
    for cfg in sorted((ROOT / "configs").glob("*.yaml")):
        flags = yaml.safe_load(cfg.read_text())
        if not only or flags.get("model") in only or cfg.stem in only:
            yield cfg, flags


def measure_preset(cfg: Path, flags: dict[str, Any], args: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Time one preset (eager, and compiled if asked); returns its JSON row and its table line."""
    flags = {**flags, "accelerator": args["accelerator"], "precision": args["precision"], "num_workers": 0}
    if args["batch_size"]:
        flags["batch_size"] = args["batch_size"]
    bs = int(flags.get("batch_size", 32))
    n = (args["steps"] + args["warmup"] + 1) * bs
    if flags.get("data") in ("cluttered_mnist", "vqa_scenes"):
        flags["train_size"] = n
    dm, source = None, "real"
    try:
        p = plan(flags)
        dm = build_datamodule(p)
        dm.setup("fit")
    except (UserError, DatasetError, RuntimeError, FileNotFoundError):
        dims, classes = SHAPES[flags["data"]]
        dm, source = Synthetic(dims, classes, bs, n), "synthetic"
    if flags.get("phase") in (2, 3, "all"):
        flags["phase"] = 1  # later phases need the previous phase's checkpoint; timed by pham_phases.py
    r = measure_training(flags, steps=args["steps"], warmup=args["warmup"], datamodule=dm)
    row = {"preset": cfg.stem, "model": flags["model"], "data": flags["data"], "source": source, **r}
    line = (f"{cfg.stem:<24} {flags['model']:<6} {flags['data'] + ('*' if source == 'synthetic' else ''):<16} "
            f"{r['batch_size']:>5} {r['images_per_s']:>9.1f} {r['step_ms']:>8.1f} {r['peak_mem_mb']:>8.0f}")
    if args["compile"]:
        c = measure_training(flags, steps=args["steps"], warmup=args["warmup"] + 2, datamodule=dm, compile=True)
        row["compiled"] = c
        line += f"  {c['images_per_s']:>14.1f} {c['images_per_s'] / r['images_per_s']:>8.2f}x"
    return row, line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch_size", type=int, default=None, help="override every preset's batch size")
    ap.add_argument("--compile", action="store_true", help="also time with torch.compile on each model's loss_terms")
    ap.add_argument("--only", default="", help="comma-separated model or preset names (e.g. ram,dham_mnist120)")
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--precision", default="32-true")
    ap.add_argument("--json", default="benchmarks/results/throughput.json")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    results = []
    head = f"{'preset':<24} {'model':<6} {'data':<16} {'batch':>5} {'img/s':>9} {'step ms':>8} {'peak MB':>8}"
    print(head + ("  compiled img/s  speed-up" if args.compile else ""))
    # each preset runs in a fresh process: its peak memory is its own (process RSS on CPU cannot be reset) and
    # no allocator or compile cache carries over from the preset before
    spawn = multiprocessing.get_context("spawn")
    for cfg, flags in presets(only):
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            row, line = pool.submit(measure_preset, cfg, flags, vars(args)).result()
        print(line, flush=True)
        results.append(row)
    device = "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() and args.accelerator != "cpu" else "cpu"
    print(f"device: {device}; * = synthetic tensors of the dataset's shape (dataset not on disk); "
          f"peak MB = {'max CUDA memory allocated' if device != 'cpu' else 'peak RSS of the process that ran the preset'} "
          f"(with --compile: of both runs)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"device": device, "results": results}, indent=2))


if __name__ == "__main__":
    main()
