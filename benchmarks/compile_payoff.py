"""When ``--compile=true`` pays: compile time and the number of training steps after which it has paid for itself.

For each preset (and batch size), in one process, a plain training loop (``loss_terms``, backward, the model's
own optimizer, over the preset's DataLoader; as ``overhead.py``'s ``plain``) runs eager, then on a fresh copy of
the model with ``compile_step()`` (what ``cli.py fit --compile=true`` does: ``torch.compile`` of ``loss_terms``),
then eager again. Per step: wall time and CPU time of the training thread.

- ``eager`` / ``compiled``: median step after the first ``--warmup`` steps (eager: both eager runs pooled);
- ``compile``: the wall time of the compiled run's first ``--warmup`` steps minus that many compiled steps:
  tracing, Inductor's code generation and C++ compilation (its worker processes included, since it is wall time);
- ``pays after``: ``compile / (eager - compiled)`` steps (wall), or ``never`` when the compiled step is not faster.

    OMP_NUM_THREADS=1 python -m benchmarks.compile_payoff [--only=ram_mnist] [--ram_batches=20,128] [--steps=40]
        [--warmup=3] [--json=benchmarks/results/compile_payoff.json]

Inductor's caches are kept in a fresh temporary folder (``TORCHINDUCTOR_CACHE_DIR``), so every compile is cold, as a
user's first run is.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-cold-"))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import measure_training  # noqa: E402,F401  (common sets the quiet logging)
from attention_lightning.run import commands as experiment  # noqa: E402
from benchmarks.overhead import preset_batches, preset_flags  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(flags: dict[str, Any], steps: int, compile: bool) -> list[tuple[float, float]]:
    """(wall, thread CPU) seconds of each of ``steps`` training steps of a fresh model (data loading excluded)."""
    p = experiment.plan({**flags, "logger": "none"})
    pl.seed_everything(0, verbose=False)
    dm = experiment.build_datamodule(p)
    model = experiment.build_model(p, dm)
    if compile:
        model.compile_step()
    dm.setup("fit")
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    model.train()
    times = []
    while len(times) < steps:
        for batch in dm.train_dataloader():
            w, c = time.perf_counter(), time.thread_time()
            terms, _ = model.loss_terms(batch, "train")
            loss = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append((time.perf_counter() - w, time.thread_time() - c))
            if len(times) == steps:
                break
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="ram_mnist", help="comma-separated preset or model names")
    ap.add_argument("--ram_batches", default="20,128")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3, help="first steps of a run: the compiling ones, left out")
    ap.add_argument("--json", default="benchmarks/results/compile_payoff.json")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()}; load average at start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'preset':<20} {'batch':>5} {'eager ms':>9} {'compiled ms':>11} {'speed-up':>8} {'cpu speed-up':>12} "
          f"{'compile s':>9} {'pays after':>11}")
    rows = []
    for cfg, batch in preset_batches(only, args.ram_batches):
        flags, source = preset_flags(cfg, batch, args.steps, 1)
        if source != "real":
            print(f"{cfg.stem:<20} {batch:>5} (dataset not on disk: skipped)")
            continue
        eager = run(flags, args.steps, False)
        compiled = run(flags, args.steps, True)
        eager += run(flags, args.steps, False)
        e = [t for t in eager[args.warmup:args.steps] + eager[args.steps + args.warmup:]]
        c = compiled[args.warmup:]
        e_wall, c_wall = statistics.median(t[0] for t in e), statistics.median(t[0] for t in c)
        e_cpu, c_cpu = statistics.median(t[1] for t in e), statistics.median(t[1] for t in c)
        compile_s = sum(t[0] for t in compiled[:args.warmup]) - args.warmup * c_wall
        gain = e_wall - c_wall
        pays = compile_s / gain if gain > 0 else float("inf")
        print(f"{cfg.stem:<20} {batch:>5} {1000 * e_wall:>9.2f} {1000 * c_wall:>11.2f} {e_wall / c_wall:>7.2f}x "
              f"{e_cpu / c_cpu:>11.2f}x {compile_s:>9.1f} {('never' if pays == float('inf') else f'{pays:.0f}'):>11}",
              flush=True)
        rows.append({"preset": cfg.stem, "batch_size": batch, "eager_ms": 1000 * e_wall, "compiled_ms": 1000 * c_wall,
                     "eager_cpu_ms": 1000 * e_cpu, "compiled_cpu_ms": 1000 * c_cpu, "compile_s": compile_s,
                     "pays_after_steps": pays, "first_steps_s": [t[0] for t in compiled[:args.warmup]]})
    print("ms = median wall time of a training step (data loading out); speed-up = eager / compiled (wall, and "
          "thread CPU); compile = wall time of the compiled run's first steps beyond steady compiled steps; "
          "pays after = compile / (eager - compiled) steps")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"results": rows, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
