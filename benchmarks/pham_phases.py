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

``--against=DIR`` times another source tree's phases in the same run (e.g. a worktree of an older commit:
``git worktree add ../old 8665b53``): each repeat runs this tree's script and then DIR's
``benchmarks/pham_phases.py`` in fresh processes, one after the other, and the table gives both medians and
the speed-up (DIR's step time over this tree's), phase by phase.

``--interleave`` times the model's own step instead (``loss_terms``, backward, Adam; no Trainer) in one
long-lived worker process per tree (``benchmarks/pham_step.py``), this tree's and ``--against``'s if given,
from the same phase-1 weights and images: each of ``--repeats`` rounds asks every worker for ``--steps``
steps of phase 1, 2 and 3 in turn (the trees' order alternating between rounds), after ``--warmup`` steps
each. It reports medians of thread CPU time (what a loaded shared machine does not inflate) beside wall time,
on the first canvas of ``--sizes``, on the CPU. ``--pieces`` splits this tree's phase-2 step the same way: the
whole step beside the Partial VAE's flow, its decoder and the decoder's 3x3 convs alone, on the step's B*T rows.

    OMP_NUM_THREADS=1 python -m benchmarks.pham_phases [--sizes=32,64] [--steps=10] [--warmup=3]
        [--repeats=1] [--batch_size=64] [--config=configs/pham_digits32.yaml]
        [--json=benchmarks/results/pham_phases.json] [--accelerator=cpu] [--against=../old] [--interleave | --pieces]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml

from benchmarks.common import measure_training
from attention_lightning.run import commands as experiment

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


def against(args: argparse.Namespace, other: Path) -> None:
    """Alternate this tree's script and ``other``'s, one process each per repeat, and print both and the speed-up."""
    script = Path("benchmarks") / "pham_phases.py"
    if not (other / script).is_file():
        raise SystemExit(f"--against={other}: no {script} there; pass the root of a source tree of this "
                         f"project (e.g. a worktree of the commit to compare with)")
    trees = {"this": ROOT, "against": other.resolve()}
    config = Path(args.config).resolve()
    # a preset inside this tree is read from each tree's own copy (the other tree may not know newer flags)
    config = config.relative_to(ROOT) if config.is_relative_to(ROOT) else config
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, tree in trees.items():
                out = Path(tmp) / f"{name}_{r}.json"
                # a tree from before benchmarks/ became a package runs the script by its path
                run = ["-m", "benchmarks.pham_phases"] if (tree / "benchmarks" / "__init__.py").is_file() \
                    else [str(tree / script)]
                cmd = [sys.executable, *run, f"--sizes={args.sizes}",
                       f"--config={config}", f"--steps={args.steps}", f"--warmup={args.warmup}",
                       "--repeats=1", f"--batch_size={args.batch_size}", f"--accelerator={args.accelerator}",
                       f"--json={out}"]
                done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{tree / script} failed:\n{done.stderr[-2000:]}")
                runs[name].append(json.loads(out.read_text()))
                print(f"repeat {r + 1}/{args.repeats}: {name} ({tree}) done", flush=True)
    rows = []
    print(f"{'canvas':>6} {'phase':>5} {'this ms':>9} {'against ms':>10} {'speed-up':>8}   "
          f"(medians of {args.repeats} alternating runs; speed-up = against / this)")
    for i, size in enumerate(int(s) for s in args.sizes.split(",") if s):
        for phase in PHASES:
            key = f"phase{phase}_step_ms"
            ms = {name: [run["results"][i][key] for run in runs[name]] for name in trees}
            med = {name: statistics.median(v) for name, v in ms.items()}
            rows.append({"canvas": size, "phase": phase, "this_ms": med["this"], "against_ms": med["against"],
                         "speedup": med["against"] / med["this"], "this_runs_ms": ms["this"],
                         "against_runs_ms": ms["against"]})
            print(f"{size:>6} {phase:>5} {med['this']:>9.1f} {med['against']:>10.1f} "
                  f"{med['against'] / med['this']:>7.2f}x", flush=True)
    out = {"device": runs["this"][0]["device"], "threads": runs["this"][0]["threads"], "config": Path(args.config).name,
           "against": str(trees["against"]), "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
           "batch_size": args.batch_size, "results": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


def interleave(args: argparse.Namespace) -> None:
    """Time the model step of this tree (and of ``--against``) in worker processes, round by round."""
    trees = {"this": ROOT}
    if args.against:
        other = Path(args.against).resolve()
        if not (other / "attention_lightning" / "models" / "pham.py").is_file():
            raise SystemExit(f"--against={other}: no attention_lightning/models/pham.py there; pass the root of a "
                             f"source tree of this project (e.g. a worktree of the commit to compare with)")
        trees["against"] = other
    size = int(args.sizes.split(",")[0])
    preset = yaml.safe_load(Path(args.config).read_text())
    model_kwargs = {k: v for k, v in preset.items()
                    if k not in RUN_KEYS | DATA_KEYS | {"model", "batch_size", "seed"}}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        flags = phase_flags(Path(args.config), size, args.batch_size, 1, "cpu")
        weights = save_phase1_weights(flags, Path(tmp) / "phase1.pt")
        workers = {}
        for name, tree in trees.items():
            cmd = [sys.executable, str(ROOT / "benchmarks" / "pham_step.py"), f"--model={json.dumps(model_kwargs)}",
                   f"--weights={weights}", f"--size={size}", f"--batch_size={args.batch_size}"]
            workers[name] = subprocess.Popen(cmd, cwd=tree, env={**env, "PYTHONPATH": str(tree)}, text=True,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            workers[name].stdout.readline()  # ready

        def ask(name: str, phase: int, steps: int) -> dict[str, Any]:
            w = workers[name]
            w.stdin.write(f"{phase} {steps}\n")
            w.stdin.flush()
            line = w.stdout.readline()
            if not line:
                raise SystemExit(f"the worker of {trees[name]} stopped (its error is above)")
            return json.loads(line)

        times = {(name, k): {"cpu_ms": [], "wall_ms": []} for name in trees for k in PHASES}
        for name in trees:
            for k in PHASES:
                ask(name, k, args.warmup)
        for r in range(args.repeats):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for k in PHASES:
                for name in order:
                    got = ask(name, k, args.steps)
                    for key in ("cpu_ms", "wall_ms"):
                        times[name, k][key] += got[key]
            print(f"round {r + 1}/{args.repeats} done", flush=True)
        for w in workers.values():
            w.stdin.close()
            w.wait()
    med = {key: {m: statistics.median(v) for m, v in t.items()} for key, t in times.items()}
    rows = []
    head = f"{'phase':>5} {'this cpu ms':>11} {'this wall ms':>12}"
    if args.against:
        head += f" {'against cpu ms':>14} {'against wall ms':>15} {'cpu speed-up':>12} {'wall speed-up':>13}"
    print(head + f"   (canvas {size}, batch {args.batch_size}, medians of {args.repeats} x {args.steps} steps)")
    for k in PHASES:
        row = {"phase": k, "this_cpu_ms": med["this", k]["cpu_ms"], "this_wall_ms": med["this", k]["wall_ms"]}
        line = f"{k:>5} {row['this_cpu_ms']:>11.1f} {row['this_wall_ms']:>12.1f}"
        if args.against:
            a = med["against", k]
            row.update(against_cpu_ms=a["cpu_ms"], against_wall_ms=a["wall_ms"],
                       cpu_speedup=a["cpu_ms"] / row["this_cpu_ms"], wall_speedup=a["wall_ms"] / row["this_wall_ms"])
            line += (f" {a['cpu_ms']:>14.1f} {a['wall_ms']:>15.1f} {row['cpu_speedup']:>11.2f}x"
                     f" {row['wall_speedup']:>12.2f}x")
        rows.append(row)
        print(line, flush=True)
    out = {"device": "cpu", "threads": 1, "config": Path(args.config).name, "canvas": size,
           "batch_size": args.batch_size, "against": str(trees.get("against")), "steps": args.steps,
           "warmup": args.warmup, "repeats": args.repeats, "date": time.strftime("%Y-%m-%d"),
           "results": rows, "runs": {f"{n}_phase{k}": t for (n, k), t in times.items()}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


def pieces(args: argparse.Namespace) -> None:
    """Thread CPU time of this tree's phase-2 step and of its Partial VAE's pieces on the step's B*T rows."""
    from attention_lightning.models.pham import PHAM
    torch.set_num_threads(1)
    size = int(args.sizes.split(",")[0])
    preset = yaml.safe_load(Path(args.config).read_text())
    kwargs = {k: v for k, v in preset.items() if k not in RUN_KEYS | DATA_KEYS | {"model", "batch_size", "seed"}}
    kwargs.update(num_classes=10, in_channels=3, image_size=size)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        path = Path(tmp) / "phase1.pt"
        torch.save(PHAM(**kwargs, phase=1).state_dict(), path)
        model = PHAM(**kwargs, phase=2, init_from=str(path))
        model.setup("fit")
    model.log = lambda *a, **k: None  # no Trainer
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    b, steps, vae = args.batch_size, model.hparams.steps, model.vae
    images, labels = torch.rand(b, 3, size, size), torch.randint(0, 10, (b,))
    rows = b * steps
    h, eps, z = torch.randn(rows, model.rnn.hidden), torch.randn(rows, 1, vae.latent), torch.randn(rows, 1, vae.latent)
    cells = torch.stack([torch.randperm(model.grid.cells)[:steps] for _ in range(rows)])  # (B*T, T)
    convs = [m for m in vae.decoder.body if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    maps = [torch.randn(rows, m.in_channels, *model.grid.shape).contiguous(memory_format=torch.channels_last)
            .requires_grad_() for m in convs]

    def step() -> None:
        terms, _ = model.loss_terms((images, labels), "train")
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()

    def flow() -> None:
        with vae.encoder.masks_applied():
            z, log_q = vae.encoder(h, 1, eps)
        (z.sum() + log_q.sum()).backward()

    def conv3x3() -> None:
        for m, x in zip(convs, maps):
            m(x).sum().backward()

    parts = {"phase-2 step": step, f"flow, {rows} rows": flow,
             f"decoder, {rows} rows": lambda: vae.decoder(z, cells).sum().backward(),
             "  of which its 3x3 convs": conv3x3}
    times: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(args.warmup):
        for f in parts.values():
            f()
    for _ in range(args.repeats):  # interleaved: each round times every piece once
        for k, f in parts.items():
            c = time.thread_time()
            f()
            times[k].append(1e3 * (time.thread_time() - c))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"thread CPU ms, medians of {args.repeats} rounds (canvas {size}, batch {b}, {Path(args.config).name})")
    for k, v in med.items():
        print(f"{k:>26} {v:8.1f}  {v / med['phase-2 step']:5.0%}")
    out = {"device": "cpu", "threads": 1, "config": Path(args.config).name, "canvas": size, "batch_size": b,
           "repeats": args.repeats, "date": time.strftime("%Y-%m-%d"), "median_cpu_ms": med, "runs_cpu_ms": times}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


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
    ap.add_argument("--against", default=None,
                    help="another source tree to time in the same run, alternating with this one")
    ap.add_argument("--interleave", action="store_true",
                    help="time the model's own step in one worker per tree, round by round, in thread CPU time")
    ap.add_argument("--pieces", action="store_true",
                    help="this tree's phase-2 step beside its flow, decoder and 3x3 convs alone, in thread CPU time")
    args = ap.parse_args()
    if args.interleave:
        return interleave(args)
    if args.pieces:
        return pieces(args)
    if args.against:
        return against(args, Path(args.against))
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
