"""Do the on-the-fly datamodules keep up with the models that consume them?

For each generated source (cluttered MNIST variants, VQA scenes), images/s of its training dataloader
(``num_workers`` as given, default 0 = the training process itself) against the training images/s of the model
that consumes it (a real Trainer step, data loading excluded). Target: ratio >= 5.

    python benchmarks/data.py [--batches=20] [--num_workers=0] [--json=benchmarks/results/data.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import measure_training
from attention_lightning.experiment import build_datamodule, plan

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--num_workers", type=int, default=0)
    ap.add_argument("--json", default="benchmarks/results/data.json")
    args = ap.parse_args()
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
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
