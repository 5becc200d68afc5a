"""A worker that times PHAM's own training step (``loss_terms``, backward, Adam) of phases 1, 2 and 3.

``benchmarks.pham_phases --interleave`` starts one of these per source tree (``PYTHONPATH`` = the tree, so
this file imports nothing of the project at module level) and asks each in turn for a few steps, so two
trees are timed in the same run, round by round. It reads requests from stdin, one a line:
``PHASE STEPS`` (e.g. ``2 3``), and answers each with one JSON line ``{"phase", "cpu_ms", "wall_ms"}``: the
thread CPU time (``time.thread_time``) and wall time of every step. One torch thread.

    PYTHONPATH=TREE python benchmarks/pham_step.py --model='{"feature_size": 128, ...}' --weights=phase1.pt
        [--size=32] [--batch_size=64]
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
import warnings

import torch


def build(model_kwargs: dict, weights: str, size: int, phase: int):
    """The tree's PHAM of the given sizes for ``phase``, from the phase-1 ``weights``, with its Adam."""
    from attention_lightning.models.pham import PHAM
    known = inspect.signature(PHAM.__init__).parameters
    kwargs = {k: v for k, v in model_kwargs.items() if k in known}  # an older tree may lack newer options
    model = PHAM(num_classes=10, in_channels=3, image_size=size, **kwargs, phase=phase,
                 init_from=weights if phase > 1 else None)
    if phase == 1:
        model.load_state_dict(torch.load(weights, weights_only=True))
    model.setup("fit")
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return model, opt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the model's keyword arguments as JSON")
    ap.add_argument("--weights", required=True, help="a phase-1 state_dict every phase starts from")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch_size", type=int, default=64)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")  # self.log without a Trainer
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = torch.rand(args.batch_size, 3, args.size, args.size)  # (B, 3, H, W): the step's cost is its shape's
    labels = torch.randint(0, 10, (args.batch_size,))
    models = {k: build(json.loads(args.model), args.weights, args.size, k) for k in (1, 2, 3)}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        phase, steps = (int(x) for x in line.split())
        model, opt = models[phase]
        cpu, wall = [], []
        for _ in range(steps):
            c, w = time.thread_time(), time.perf_counter()
            terms, _ = model.loss_terms((images, labels), "train")
            opt.zero_grad()
            sum(terms.values()).backward()
            opt.step()
            cpu.append(1e3 * (time.thread_time() - c))
            wall.append(1e3 * (time.perf_counter() - w))
        print(json.dumps({"phase": phase, "cpu_ms": cpu, "wall_ms": wall}), flush=True)


if __name__ == "__main__":
    main()
