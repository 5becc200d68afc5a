"""Does a trained RAM's learned policy help its own classifier? Swap where it looks, keep its weights.

For each checkpoint, on the validation split (never the test split), the greedy accuracy after the last glimpse:

- ``own``: the model's policy, as trained;
- ``random``: the same weights, every location drawn uniformly on the canvas (mean over ``--draws`` draws);
- ``center``: every glimpse at the canvas center;

and where the learned policy looks: the share of its locations within 0.1 of the canvas edge (max(|x|, |y|) > 0.9)
per glimpse. If ``random`` matches or beats ``own``, the learned policy adds nothing to its classifier.

    OMP_NUM_THREADS=1 python -m benchmarks.probes.ram_where_it_looks CKPT [CKPT ...] [--images=6000] [--draws=3]
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from attention_lightning.run.commands import checkpoint_plan, load_trained
from attention_lightning.run.plan import build_datamodule


@torch.no_grad()
def measure(model: torch.nn.Module, loader: Iterable[Any], draws: int, seed: int = 0) -> dict[str, Any]:
    """Accuracy of ``model`` (a RAM) with its own, random and center locations, and its locations near the edge."""
    steps = model.hparams.glimpses
    right = {"own": 0.0, "random": 0.0, "center": 0.0}
    near_edge = torch.zeros(steps)  # (T,)
    seen = 0
    gen = torch.Generator().manual_seed(seed)
    for batch in loader:
        x, y = model.inputs(batch), model.targets(batch)
        b = x.shape[0]
        own = model.rollout(x, sample=False)
        right["own"] += float((own.logits[:, -1].argmax(-1) == y).sum())
        near_edge += (own.locations.abs().amax(-1) > 0.9).float().sum(0)  # (T,)
        for _ in range(draws):
            loc = torch.rand(b, steps, 2, generator=gen) * 2 - 1  # (B, T, 2) uniform on the canvas
            logits = model.rollout(x, sample=False, locations=loc).logits[:, -1]
            right["random"] += float((logits.argmax(-1) == y).sum()) / draws
        center = model.rollout(x, sample=False, locations=x.new_zeros(b, steps, 2))
        right["center"] += float((center.logits[:, -1].argmax(-1) == y).sum())
        seen += b
    return {"val_images": seen, **{f"val_acc_{k}": v / seen for k, v in right.items()},
            "near_edge_per_glimpse": [round(float(v) / seen, 3) for v in near_edge]}


def probe(ckpt: Path, images: int, draws: int, batch_size: int = 250) -> dict[str, Any]:
    """``measure`` on the validation split of the checkpoint's own data."""
    path, p = checkpoint_plan("visualize", {"ckpt": str(ckpt), "val_size": images, "batch_size": batch_size})
    dm = build_datamodule(p)
    dm.setup("validate")
    model = load_trained(p, path).eval()
    return {"checkpoint": str(ckpt), "policy": model.hparams.location_policy,
            **measure(model, dm.val_dataloader(), draws)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpts", nargs="+", type=Path)
    ap.add_argument("--images", type=int, default=6000, help="validation images to use")
    ap.add_argument("--draws", type=int, default=3, help="random-location draws per image")
    args = ap.parse_args(argv)
    for ckpt in args.ckpts:
        print(json.dumps(probe(ckpt, args.images, args.draws)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
