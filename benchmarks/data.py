"""Do the datamodules keep up with the models that consume them?

For each generated source (cluttered MNIST variants, VQA scenes), images/s of its training dataloader
(``num_workers`` as given, default 0 = the training process itself) against the training images/s of the model
that consumes it (a real Trainer step, data loading excluded). Target: ratio >= 5.

For the folder sets (CINIC-10, Tiny ImageNet; small generated folders in the published layout), images/s of
passes over the training split decoding the files (``--cache=false``) and from the packed cache, with 0 and 2
workers, beside the training images/s of the PHAM preset that consumes them (phase 1). The two paths' passes
alternate (five each after a warm-up); "x files" is the median of the back-to-back pairs' ratios, so a load
that changes during the run moves both sides of each pair alike. Targets: cached >= 10x the file path and
>= 5x the consumer.

    python -m benchmarks.data [--batches=20] [--num_workers=0] [--json=benchmarks/results/data.json]
    python -m benchmarks.data --folders [--per_class=500] [--json=benchmarks/results/data_folders.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import measure_training
from attention_lightning.run.plan import build_datamodule, load_config, plan
from datamodules.tiny_datasets import make_cinic10, make_tiny_imagenet

FOLDERS = [
    # (datamodule, the preset that consumes it, writer of a small folder in the published layout)
    ("cinic10", "configs/pham_cinic10.yaml", lambda root, n: make_cinic10(root, per_class=n)),
    ("tiny_imagenet", "configs/pham_tiny_imagenet.yaml", lambda root, n: make_tiny_imagenet(root, 10, n)),
]

CASES = [
    # (label, datamodule flags, the model that consumes it)
    ("cluttered_mnist/dham 120", {"data": "cluttered_mnist", "variant": "dham"}, {"model": "dham"}),
    ("cluttered_mnist/translated 60", {"data": "cluttered_mnist", "variant": "translated"},
     {"model": "ram", "glimpse_size": 12, "depth": 3, "glimpses": 6}),
    ("cluttered_mnist/cluttered 60", {"data": "cluttered_mnist", "variant": "cluttered"},
     {"model": "ram", "glimpse_size": 12, "depth": 3, "glimpses": 6}),
    ("cluttered_mnist/cluttered 100", {"data": "cluttered_mnist", "variant": "cluttered", "canvas_size": 100,
                                       "clutter": 8}, {"model": "ram", "glimpse_size": 12, "depth": 4, "glimpses": 8}),
    ("vqa_scenes", {"data": "vqa_scenes"}, {"model": "han"}),
]


def loader_rate(flags, batches: int) -> float:
    p = plan(flags)
    dm = build_datamodule(p)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    next(it)  # worker start-up is not throughput
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        x = next(it)
        n += len(x[1]) if isinstance(x, (list, tuple)) else len(next(iter(x.values())))
    return n / (time.perf_counter() - t0)


def pass_rates(flag_sets: list[dict], passes: int = 5) -> list[list[float]]:
    """Images/s of whole passes over the training split, for each flag set: passes alternate between the sets
    (A, B, A, B, ...) after one warm-up pass each (workers, page cache, mapping), so that whatever else the
    machine runs slows every set alike; returns each set's list of rates, in order."""
    loaders = []
    for flags in flag_sets:
        dm = build_datamodule(plan(flags))
        dm.setup("fit")
        loaders.append(dm.train_dataloader())
        for _ in loaders[-1]:
            pass
    rates: list[list[float]] = [[] for _ in loaders]
    for _ in range(passes):
        for k, loader in enumerate(loaders):
            n, t0 = 0, time.perf_counter()
            for x, y in loader:
                n += len(y)
            rates[k].append(n / (time.perf_counter() - t0))
    return rates


def folders(args) -> list:
    """Cold (decoding files) vs cached loading of the folder sets, beside their PHAM preset's training speed."""
    rows = []
    print(f"{'source':<14} {'workers':>7} {'files img/s':>12} {'cached img/s':>13} {'x files':>8} "
          f"{'PHAM img/s':>11} {'x PHAM':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, preset, make in FOLDERS:
            data_dir = str(make(Path(tmp) / name, args.per_class))
            base = {"data": name, "data_dir": data_dir, "batch_size": args.batch_size, "model": "pham"}
            t0 = time.perf_counter()
            packing = build_datamodule(plan({**base, "cache": True}))
            packing.setup("fit")
            pack_s = time.perf_counter() - t0
            model_flags = {**load_config(preset), **base, "phase": 1, "cache": True}
            model_flags.pop("max_epochs", None)
            train = measure_training(model_flags, steps=args.steps, warmup=2)["images_per_s"]
            for workers in (0, 2):
                files_rates, cached_rates = pass_rates([{**base, "cache": False, "num_workers": workers},
                                                        {**base, "cache": True, "num_workers": workers}])
                cold, cached = float(np.median(files_rates)), float(np.median(cached_rates))
                # the ratio of each back-to-back pair, then their median: robust to load that changes over time
                ratio = float(np.median([c / f for f, c in zip(files_rates, cached_rates)]))
                rows.append({"source": name, "num_workers": workers, "train_images": len(packing.train_set),
                             "files_images_per_s": cold, "cached_images_per_s": cached, "pair_ratio": ratio,
                             "files_rates": files_rates, "cached_rates": cached_rates, "pack_s": pack_s,
                             "pham_preset": preset, "pham_train_images_per_s": train})
                print(f"{name:<14} {workers:>7} {cold:>12.0f} {cached:>13.0f} {ratio:>8.1f} "
                      f"{train:>11.1f} {cached / train:>7.0f}", flush=True)
            print(f"{'':<14} (first setup packed {len(packing.train_set) + len(packing.val_set) + len(packing.test_set)}"
                  f" images in {pack_s:.1f} s; train split {len(packing.train_set)} images)")
    print("targets: cached >= 10x files and >= 5x PHAM (batch "
          f"{args.batch_size}, phase 1, data loading excluded from PHAM's step)")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--num_workers", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--folders", action="store_true", help="benchmark the folder sets and their cache instead")
    ap.add_argument("--per_class", type=int, default=500,
                    help="--folders: images per class and split (at 200 a Tiny ImageNet pass took ~60 ms: noisy ratios)")
    args = ap.parse_args()
    if args.folders:
        rows = folders(args)
        out = Path(args.json or "benchmarks/results/data_folders.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2))
        return
    rows = []
    print(f"{'source':<32} {'data img/s':>11} {'model':<6} {'train img/s':>12} {'ratio':>7}")
    for label, data_flags, model_flags in CASES:
        base = {**data_flags, "batch_size": args.batch_size, "train_size": (args.batches + 2) * args.batch_size}
        if data_flags["data"] == "cluttered_mnist":
            base["digits"] = "embedded"
        data = loader_rate({**base, "num_workers": args.num_workers, "model": model_flags["model"]}, args.batches)
        train = measure_training({**base, **model_flags, "train_size": (args.steps + 4) * args.batch_size},
                                 steps=args.steps)["images_per_s"]
        rows.append({"source": label, "data_images_per_s": data, "model": model_flags["model"],
                     "train_images_per_s": train, "ratio": data / train})
        print(f"{label:<32} {data:>11.0f} {model_flags['model']:<6} {train:>12.0f} {data / train:>7.1f}", flush=True)
    print(f"target: every ratio >= 5 (num_workers={args.num_workers}; each worker adds a generator process)")
    out = Path(args.json or "benchmarks/results/data.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
