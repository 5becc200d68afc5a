"""What a training step costs beyond the model's own math: a plain PyTorch loop against ``Trainer.fit``.

Each preset's training step is timed three ways in one process, the variants interleaved and repeated:

- ``plain``: a loop over the same module and DataLoader: ``loss_terms``, sum, ``zero_grad``, backward,
  ``optimizer.step`` (the optimizer of ``configure_optimizers``), nothing else;
- ``bench``: ``Trainer.fit`` as the other benchmarks build it (``common.measure_training``: no logger, no
  progress bar, no checkpointing, no validation);
- ``cli``: ``Trainer.fit`` as ``cli.py fit`` builds it, from the experiment's own builders (``plan``,
  ``build_datamodule``, ``build_model``, ``make_trainer``): CSV logger, progress bar, checkpointing,
  attention pictures (``--viz_images=8``), validation at each epoch end; and ``cli-noviz``, the same with
  ``--viz_images=0``.

A step is the time from one training batch's start to the next one's (data loading, forward, backward,
optimizer, logging, callbacks, progress bar), median over the steps of an epoch after ``--warmup``;
intervals that span an epoch end are left out of the median and counted in ``run`` (the whole ``fit``
divided by its steps, validation and pictures included). Times are the CPU time of the training thread
(everything here runs in it: one torch thread, ``num_workers=0``), which other processes on a shared machine
inflate far less than wall time; the wall-time ratio and the ratio of the fastest 10% of steps (``p10``)
are printed beside it. The progress bar is drawn into /dev/null. RAM runs at batch 20 (the paper's and
``configs/ram_mnist.yaml``'s) and 128; the other presets at their own batch. Presets whose dataset is not on
disk run on random tensors of its shape (``*``). PHAM presets time phase 1.

    OMP_NUM_THREADS=1 python -m benchmarks.overhead [--only=ram_mnist,han_vqa] [--steps=40] [--warmup=5]
        [--epochs=2] [--repeats=3] [--compile] [--paired] [--json=benchmarks/results/overhead.json]

``--paired [--host=bench] [--without=ModelSummary,...]``: instead of whole runs interleaved, ``cli`` hosts
``plain``: at the start of each of its training batches one step of ``plain`` (loading included) runs, timed on
its own and left out of ``cli``'s interval, so each ``cli`` step has a ``plain`` step beside it under the same
load; the ratio is the median of the per-pair ratios. ``--host=bench``: a bare ``Trainer.fit`` hosts ``plain``
instead (Lightning's own loop, nothing of ours); ``--without``: the cli Trainer without the named callbacks.

Targets: ``cli`` step within 10% of ``plain`` for RAM at batch 20, within 5% for every other
preset. ``--compile`` adds ``plain`` and ``cli`` with ``--compile=true`` (``AttentionModel.compile_step``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
import yaml

from benchmarks.common import StepTimer, measure_training  # noqa: F401  (common sets the quiet logging)
from attention_lightning.run import commands as experiment
from attention_lightning.run import folders as runs
from benchmarks.throughput import SHAPES, Synthetic

ROOT = Path(__file__).resolve().parents[1]
WALL, CPU = 0, 1  # which clock of ``clocks()``
# preset keys about the length of a run: each run here sets its own
RUN_KEYS = {"max_epochs", "max_time", "max_steps", "train_size", "val_size", "test_size", "phase"}


class Intervals(pl.Callback):
    """Start-to-start time of consecutive training batches within an epoch (the step as a user waits for it)."""

    def __init__(self) -> None:
        self.times: list[list[float]] = []
        self._last = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.times.append([])
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = clocks()
        if self._last is not None:
            self.times[-1].append(tuple(b - a for a, b in zip(self._last, now)))
        self._last = now


def endless(loader: Any, step: Any) -> Iterator[None]:
    """One training step (its batch's loading included) per ``next``, over as many epochs as asked for."""
    while True:
        for batch in loader:
            step(batch)
            yield


class Guests(pl.Callback):
    """Times a Trainer's steps (start to start of consecutive training batches) and, at the start of each, runs
    one step of every guest loop, timed on its own and left out of the Trainer's interval: step i of the
    Trainer and step i of each guest run back to back, under the same load, as one pair."""

    def __init__(self, guests: dict[str, Iterator[None]]) -> None:
        self.guests = guests
        self.pairs: list[list[dict[str, tuple[float, float]]]] = []  # per epoch, per step: variant -> (wall, cpu)
        self._last: tuple[float, float] | None = None
        self._pending: dict[str, tuple[float, float]] = {}

    @property
    def times(self) -> list[list[tuple[float, float]]]:
        """The host's intervals alone, as ``overhead.Intervals`` keeps them."""
        return [[p["host"] for p in epoch] for epoch in self.pairs]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.pairs.append([])
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = clocks()
        if self._last is not None:
            self.pairs[-1].append({"host": tuple(b - a for a, b in zip(self._last, now)), **self._pending})
        self._pending = {}
        for name, guest in self.guests.items():
            t0 = clocks()
            next(guest)
            self._pending[name] = tuple(b - a for a, b in zip(t0, clocks()))
        self._last = clocks()


def clocks() -> tuple[float, float]:
    """(wall, this thread's CPU) seconds: on a shared machine the CPU time is what the step itself cost."""
    return time.perf_counter(), time.thread_time()


def preset_batches(only: set[str], ram_batches: str) -> Iterator[tuple[Path, int]]:
    """(preset file, batch size) for every preset named in ``only`` (by file stem or model; all when empty): the
    preset's own batch size, or each of ``ram_batches`` (comma-separated) for RAM."""
    for cfg in sorted((ROOT / "configs").glob("*.yaml")):
        preset = yaml.safe_load(cfg.read_text())
        if only and cfg.stem not in only and preset.get("model") not in only:
            continue
        batches = [int(b) for b in ram_batches.split(",")] if preset["model"] == "ram" else [preset["batch_size"]]
        for batch in batches:
            yield cfg, batch


def preset_flags(cfg: Path, batch_size: int, steps: int, epochs: int) -> tuple[dict[str, Any], str]:
    """The preset's flags for a run of ``epochs`` epochs of ``steps`` batches (and one validation batch)."""
    flags = {k: v for k, v in yaml.safe_load(cfg.read_text()).items() if k not in RUN_KEYS}
    flags.update(batch_size=batch_size, num_workers=0, accelerator="cpu", seed=0)
    if flags.get("model") == "pham":
        flags["phase"] = 1  # later phases need the previous phase's checkpoint; timed by pham_phases.py
    if flags.get("data") in ("cluttered_mnist", "vqa_scenes"):
        flags.update(train_size=steps * batch_size, val_size=batch_size, test_size=batch_size)
    source = "real"
    try:
        experiment.build_datamodule(experiment.plan(flags)).setup("fit")
    except Exception:  # dataset not on disk: random tensors of its shape
        source = "synthetic"
    return flags, source


def datamodule(flags: dict[str, Any], source: str, steps: int) -> pl.LightningDataModule:
    if source == "real":
        return experiment.build_datamodule(experiment.plan(flags))
    dims, classes = SHAPES[flags["data"]]
    return SyntheticWithVal(dims, classes, flags["batch_size"], steps * flags["batch_size"])


class SyntheticWithVal(Synthetic):
    """Random images of a dataset's shape; validation is their first batch."""

    def val_dataloader(self):
        return self._loader(torch.utils.data.Subset(self.train_set, range(self.batch_size)), shuffle=False)


def run_plain(flags: dict[str, Any], source: str, steps: int, epochs: int, compile: bool) -> dict[str, float]:
    """The module's own math: loss terms, backward and the optimizer, in a bare loop over the DataLoader."""
    loader, step = plain_setup(flags, source, steps, compile)
    return timed_epochs(loader, epochs, step)


def plain_setup(flags: dict[str, Any], source: str, steps: int, compile: bool = False) -> tuple[Any, Any]:
    """The preset's training DataLoader and a bare training step (``plain_step``) of a fresh model."""
    p = experiment.plan({**flags, "logger": "none"})
    pl.seed_everything(0, verbose=False)
    dm = datamodule(flags, source, steps)
    model = experiment.build_model(p, dm)
    if compile:
        model.compile_step()
    dm.setup("fit")
    loader = dm.train_dataloader()
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt[0][0] if isinstance(opt, tuple) else opt
    model.train()
    return loader, lambda batch: plain_step(model, opt, batch)


def plain_step(model: pl.LightningModule, opt: torch.optim.Optimizer, batch: Any) -> None:
    """One training step of ``model``'s own math: its losses, backward, the optimizer."""
    terms, _ = model.loss_terms(batch, "train")
    loss = sum(terms.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bare_fit(model: pl.LightningModule, dm: pl.LightningDataModule, epochs: int, timer: Any) -> dict[str, Any]:
    """``Trainer.fit`` with nothing of ours: no logger, bar, checkpoints or validation; ``timer`` marks the steps."""
    trainer = pl.Trainer(max_epochs=epochs, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[timer], accelerator="cpu")
    t0 = clocks()
    trainer.fit(model, datamodule=dm)
    return {"times": timer.times, "run_s": [b - a for a, b in zip(t0, clocks())]}


def timed_epochs(loader: Any, epochs: int, step: Any) -> dict[str, Any]:
    """``step(batch)`` over ``epochs`` passes of ``loader``; per epoch, the (wall, CPU) seconds from the start of one
    batch to the start of the next (loading included), and the whole run's."""
    times: list[list[tuple[float, float]]] = []
    t_run = clocks()
    for _ in range(epochs):
        times.append([])
        last = None
        for batch in loader:
            now = clocks()
            if last is not None:
                times[-1].append(tuple(b - a for a, b in zip(last, now)))
            last = now
            step(batch)
    return {"times": times, "run_s": [b - a for a, b in zip(t_run, clocks())]}


def run_trainer(flags: dict[str, Any], source: str, steps: int, epochs: int, kind: str,
                compile: bool = False, timer: Any = None, without: frozenset[str] = frozenset()) -> dict[str, float]:
    """``Trainer.fit`` as the benchmarks (``bench``) or as ``cli.py fit`` (``cli``, ``cli-noviz``) build it; for
    ``cli``, without the callbacks whose class names are in ``without`` (to measure what they cost)."""
    timer = timer if timer is not None else Intervals()
    if kind == "bench":
        p = experiment.plan({**flags, "logger": "none"})
        pl.seed_everything(0, verbose=False)
        dm = datamodule(flags, source, steps)
        model = experiment.build_model(p, dm)
        return bare_fit(model, dm, epochs, timer)
    with tempfile.TemporaryDirectory() as root:
        cli_flags = {**flags, "logger": "csv", "default_root_dir": root, "max_epochs": epochs,
                     "viz_images": 0 if kind == "cli-noviz" else 8}
        if compile:
            cli_flags["compile"] = True
        p = experiment.plan(cli_flags)
        pl.seed_everything(p.cli["seed"], workers=True, verbose=False)
        p.trainer_kwargs.pop("default_root_dir", None)
        run_dir = runs.claim_new_run_dir(root, f"{p.model_name}-{p.data_name}")
        dm = datamodule(flags, source, steps)
        model = experiment.build_model(p, dm)
        if compile:
            model.compile_step()
        trainer = experiment.make_trainer(p, run_dir, [timer])
        trainer.callbacks = [c for c in trainer.callbacks if type(c).__name__ not in without]
        t0 = clocks()
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # the progress bar: drawn, not shown
            trainer.fit(model, datamodule=dm)
        return {"times": timer.times, "run_s": [b - a for a, b in zip(t0, clocks())]}


def step_ms(result: dict[str, Any], warmup: int, clock: int, q: float = 0.5) -> float:
    """Quantile ``q`` (median by default) of the start-to-start intervals (clock 0: wall, 1: CPU), without the
    first ``warmup`` of each epoch."""
    times = sorted(t[clock] for epoch in result["times"] for t in epoch[warmup:])
    return 1000 * times[min(len(times) - 1, int(q * len(times)))]


def paired(cfgs: list[Path], args: argparse.Namespace) -> None:
    """Per preset: ``cli`` hosting ``plain`` as a guest (``Guests``): step i of each back to back, the same load on
    both; medians of each one's step and of the per-pair ratio cli/plain, in thread CPU and wall time."""
    host = args.host
    print(f"{'preset':<20} {'batch':>5} {'clock':>5} {'plain ms':>9} {host + ' ms':>9} {host + '/plain':>11} "
          f"{'pairs':>5}  per round {host}/plain")
    rows = []
    without = frozenset(filter(None, args.without.split(",")))
    if without:
        print(f"cli without the callbacks {', '.join(sorted(without))}")
    for cfg in cfgs:
        preset = yaml.safe_load(cfg.read_text())
        batches = [int(b) for b in args.ram_batches.split(",")] if preset["model"] == "ram" else [preset["batch_size"]]
        for batch in batches:
            flags, source = preset_flags(cfg, batch, args.steps, args.epochs)
            rounds = []
            for _ in range(args.repeats):
                timer = Guests({"plain": endless(*plain_setup(flags, source, args.steps))})
                run_trainer(flags, source, args.steps, args.epochs, args.host, timer=timer, without=without)
                rounds.append([p for epoch in timer.pairs for p in epoch[args.warmup:]])
            pooled = [p for r in rounds for p in r]
            name = cfg.stem + ("*" if source == "synthetic" else "")
            row: dict[str, Any] = {"preset": cfg.stem, "batch_size": batch, "source": source, "pairs": len(pooled)}
            for clock, label in ((CPU, "cpu"), (WALL, "wall")):
                plain_ms = 1000 * statistics.median(p["plain"][clock] for p in pooled)
                cli_ms = 1000 * statistics.median(p["host"][clock] for p in pooled)
                ratio = statistics.median(p["host"][clock] / p["plain"][clock] for p in pooled)
                per_round = [statistics.median(p["host"][clock] / p["plain"][clock] for p in r) for r in rounds]
                row[label] = {"plain_ms": plain_ms, "cli_ms": cli_ms, "cli/plain": ratio, "per_round": per_round}
                print(f"{name:<20} {batch:>5} {label:>5} {plain_ms:>9.2f} {cli_ms:>9.2f} {ratio:>11.3f} {len(pooled):>5}  "
                      + " ".join(f"{x:.3f}" for x in per_round), flush=True)
            rows.append(row)
    print(f"pairs: step i of cli (Trainer.fit as cli.py fit builds it) and of plain back to back; {args.steps} batches x "
          f"{args.epochs} epochs per round, first {args.warmup} of each epoch left out, {args.repeats} rounds; ratios are "
          f"medians of per-pair ratios; cpu = time.thread_time of the training thread; * = random tensors of the "
          f"dataset's shape")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"mode": "paired", "host": host, "results": rows, "args": vars(args),
                                           "load_average_end": os.getloadavg()}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated preset or model names (e.g. ram_mnist,han)")
    ap.add_argument("--steps", type=int, default=40, help="training batches per epoch")
    ap.add_argument("--warmup", type=int, default=5, help="steps of each epoch left out of the median")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of all variants, interleaved; medians reported")
    ap.add_argument("--ram_batches", default="20,128", help="batch sizes for the RAM presets")
    ap.add_argument("--compile", action="store_true", help="also time plain and cli with compile_step()")
    ap.add_argument("--json", default="benchmarks/results/overhead.json")
    ap.add_argument("--paired", action="store_true", help="cli with plain stepped between its steps (pairs)")
    ap.add_argument("--host", default="cli", choices=["cli", "bench"],
                    help="with --paired: the Trainer that hosts plain: cli.py fit's, or a bare Trainer.fit (bench)")
    ap.add_argument("--without", default="", help="with --paired: callback classes (comma-separated) the cli Trainer "
                                                  "is built without, e.g. ModelSummary,AttentionLogger (what they cost)")
    args = ap.parse_args()
    if args.without and args.host != "cli":
        ap.error("--without leaves callbacks out of the cli Trainer; a bare one (--host=bench) has none of ours")
    only = set(filter(None, args.only.split(",")))
    if args.paired:
        experiment.cheap_cuda_probe()  # as cli.py fit does, for both sides of every pair
        print(f"torch threads: {torch.get_num_threads()}; load average at start: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        cfgs = [c for c in sorted((ROOT / "configs").glob("*.yaml"))
                if not only or c.stem in only or yaml.safe_load(c.read_text()).get("model") in only]
        return paired(cfgs, args)
    variants = ["plain", "bench", "cli", "cli-noviz"] + (["plain-compiled", "cli-compiled"] if args.compile else [])
    print(f"torch threads: {torch.get_num_threads()}; load average at start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    head = (f"{'preset':<20} {'batch':>5} " + " ".join(f"{v + ' ms':>12}" for v in variants)
            + f" {'bench/plain':>11} {'cli/plain':>9} {'noviz/plain':>11} {'run cli/noviz':>13}")
    print(head)
    rows = []
    for cfg, batch in preset_batches(only, args.ram_batches):
        flags, source = preset_flags(cfg, batch, args.steps, args.epochs)
        got: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for v in variants:
                if v.startswith("plain"):
                    r = run_plain(flags, source, args.steps, args.epochs, compile=v.endswith("compiled"))
                else:
                    r = run_trainer(flags, source, args.steps, args.epochs, v.replace("-compiled", ""),
                                    compile=v.endswith("compiled"))
                got[v].append(r)
        ms = {v: statistics.median(step_ms(r, args.warmup, CPU) for r in rs) for v, rs in got.items()}
        wall = {v: statistics.median(step_ms(r, args.warmup, WALL) for r in rs) for v, rs in got.items()}
        spread = {v: (min(step_ms(r, args.warmup, CPU) for r in rs), max(step_ms(r, args.warmup, CPU) for r in rs))
                  for v, rs in got.items()}
        low = {v: statistics.median(step_ms(r, args.warmup, CPU, 0.1) for r in rs) for v, rs in got.items()}
        run = {v: statistics.median(1000 * r["run_s"][CPU] / (args.steps * args.epochs) for r in rs)
               for v, rs in got.items()}
        name = cfg.stem + ("*" if source == "synthetic" else "")
        line = (f"{name:<20} {batch:>5} " + " ".join(f"{ms[v]:>12.2f}" for v in variants)
                + f" {ms['bench'] / ms['plain']:>11.3f} {ms['cli'] / ms['plain']:>9.3f}"
                f" {ms['cli-noviz'] / ms['plain']:>11.3f} {run['cli'] / run['cli-noviz']:>13.3f}"
                f" {wall['cli'] / wall['plain']:>14.3f} {low['cli'] / low['plain']:>12.3f}")
        if args.compile:
            line += (f"  compiled plain {ms['plain'] / ms['plain-compiled']:.2f}x, "
                     f"compiled cli {ms['plain'] / ms['cli-compiled']:.2f}x faster than eager plain")
        print(line, flush=True)
        rows.append({"preset": cfg.stem, "batch_size": batch, "source": source, "cpu_step_ms": ms, "wall_step_ms": wall, "cpu_step_ms_p10": low,
                     "step_ms_min_max": spread, "cpu_run_ms_per_step": run})
    print(f"step = median start-to-start CPU time (this thread) of training batches (data loading included), {args.steps} "
          f"batches x {args.epochs} epochs, first {args.warmup} of each epoch left out, median of {args.repeats} "
          f"interleaved rounds; run = whole fit / steps (validation of one batch per epoch and, for cli, the "
          f"attention pictures included); * = random tensors of the dataset's shape")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"variants": variants, "results": rows, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
