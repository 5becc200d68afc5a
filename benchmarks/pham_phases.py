"""PHAM's phase-2 and phase-3 training steps against its phase-1 step (target: phase 3 costs no more than
about 3x phase 1).

Phase 1 trains F, R, C on random glimpses; phase 2 adds the Partial VAE's ELBO (flow encoder and decoder
over every step of the episode, F, R, C frozen); phase 3 trains everything and adds the EIG lookahead
that picks each next glimpse. So phase 2 - phase 1 is the ELBO's cost and phase 3 - phase 2 (roughly) the
lookahead's and the extra backward through F, R, C. The three are timed in one run, from the same weights
(a phase-1 model saved to a temporary file and loaded by each through ``--init_from``), with real
``Trainer.fit`` steps (forward, backward, optimizer; data loading excluded; median after warm-up).

The model sizes come from a preset (default ``configs/pham_digits32.yaml``; ``configs/pham_svhn.yaml`` has
the paper's sizes) and run at each canvas side in ``--sizes`` (32: 8x8 glimpses, stride 4; 64: 16x16,
stride 8; both a 7x7 grid) on the embedded digits drawn on an RGB canvas: step time depends on the input's
shape, not its content, so no dataset is needed. On a shared machine, pin the threads
(``OMP_NUM_THREADS=1``) and compare ratios taken in the same run; ``--repeats`` alternates the phases
several times and reports the medians.

    OMP_NUM_THREADS=1 python benchmarks/pham_phases.py [--sizes=32,64] [--steps=10] [--warmup=3]
        [--repeats=1] [--batch_size=64] [--config=configs/pham_digits32.yaml]
        [--json=benchmarks/results/pham_phases.json] [--accelerator=cpu]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml

from common import measure_training
from attention_lightning import experiment

ROOT = Path(__file__).resolve().parents[1]
PHASES = (1, 2, 3)
# preset keys about the run or the data, not the model's size: each run here sets its own
RUN_KEYS = {"phase", "init_from", "max_epochs", "train_size", "val_size", "test_size"}
DATA_KEYS = {"data", "data_dir", "variant", "channels", "canvas_size", "digits", "download", "val_fraction"}


def phase_flags(config: Path, size: int, batch_size: int, steps: int, accelerator: str) -> dict[str, Any]:
    """Flags of the preset's model on a ``size``-pixel canvas of embedded digits, with data for ``steps`` batches."""
    preset = yaml.safe_load(config.read_text())
    if preset.get("model") != "pham":
        raise SystemExit(f"--config={config} is a preset for --model={preset.get('model')}; pass a PHAM preset "
                         f"(e.g. configs/pham_digits32.yaml)")
    # the preset's model; the data is always embedded digits on an RGB canvas of the asked size
    flags = {k: v for k, v in preset.items() if k not in RUN_KEYS and k not in DATA_KEYS}
    flags.update(data="cluttered_mnist", variant="translated", channels=3, canvas_size=size, batch_size=batch_size,
                 train_size=(steps + 1) * batch_size, val_size=batch_size, test_size=batch_size, digits="embedded",
                 num_workers=0, accelerator=accelerator)
    return flags


def save_phase1_weights(flags: dict[str, Any], path: Path) -> str:
    """Build the phase-1 model the flags describe (seed 0) and save its state_dict: every phase starts from it."""
    p = experiment.plan({"logger": "none", **flags, "phase": 1})
    pl.seed_everything(0, verbose=False)
    model = experiment.build_model(p, experiment.build_datamodule(p))
    torch.save(model.state_dict(), path)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32,64", help="comma-separated canvas sides")
    ap.add_argument("--config", default=str(ROOT / "configs" / "pham_digits32.yaml"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="alternate phases 1, 2, 3 this many times")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "pham_phases.json"))
    args = ap.parse_args()
    config = Path(args.config)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = []
    print(f"{'canvas':>6} {'batch':>5} {'phase 1 ms':>11} {'phase 2 ms':>11} {'phase 3 ms':>11} {'2/1':>6} "
          f"{'3/1':>6}   (target 3/1 <= ~3)")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            flags = phase_flags(config, size, args.batch_size, args.steps + args.warmup, args.accelerator)
            weights = save_phase1_weights(flags, Path(tmp) / f"phase1_{size}.pt")
            times: dict[int, list] = {1: [], 2: [], 3: []}
            for _ in range(args.repeats):
                for phase in PHASES:
                    r = measure_training({**flags, "phase": phase, "init_from": weights},
                                         steps=args.steps, warmup=args.warmup)
                    times[phase].append(r["step_ms"])
            ms = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"canvas": size, "batch_size": args.batch_size,
                         **{f"phase{k}_step_ms": v for k, v in ms.items()},
                         "ratio": ms[3] / ms[1], "ratio_2_1": ms[2] / ms[1],
                         **{f"phase{k}_runs_ms": v for k, v in times.items()}})
            print(f"{size:>6} {args.batch_size:>5} {ms[1]:>11.1f} {ms[2]:>11.1f} {ms[3]:>11.1f} "
                  f"{ms[2] / ms[1]:>6.2f} {ms[3] / ms[1]:>6.2f}", flush=True)
    out = {"device": "cuda:" + torch.cuda.get_device_name() if args.accelerator != "cpu" and torch.cuda.is_available()
           else "cpu", "threads": torch.get_num_threads(), "config": config.name, "steps": args.steps,
           "warmup": args.warmup, "repeats": args.repeats, "results": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
