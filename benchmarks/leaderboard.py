"""One comparison across methods: every model and baseline on shared tasks, at equal training budgets.

Runs a fixed grid of (task x method x seed). Every cell of a task trains for the same number of steps at the
same batch size (so the same number of training images), is tested on the same test split, and is
measured the same way. Results go to ``--out``:

- ``cells/<task>__<method>__s<seed>.json``: one finished cell (its exact command, test metrics, timings);
  a killed grid run resumes where it left off, since finished cells are never redone;
- ``leaderboard.md`` and ``leaderboard.csv``: mean and standard error over seeds per (task, method);
- ``accuracy_vs_glimpses.png`` and ``accuracy_vs_pixels.png``: one line per method, error bars from seeds.

    python -m benchmarks.leaderboard --budget=smoke                      # whole grid, minutes on a CPU
    python -m benchmarks.leaderboard --budget=cpu --tasks=translated60,rgb32
    python -m benchmarks.leaderboard --budget=paper --accelerator=gpu --devices=4 --precision=bf16-mixed
    python -m benchmarks.leaderboard --budget=cpu --logger=wandb          # one wandb run per cell + a summary
    srun python -m benchmarks.leaderboard --budget=paper --isolate=false --accelerator=gpu --devices=4 \
        --num_nodes=2 --strategy=ddp        # inside a SLURM allocation: every cell trains on all its GPUs

Methods: ``cnn`` (full image, every pixel), ``dham``, ``ram``, ``ram_random`` (RAM's sensor and core with
random locations, no policy learning), ``pham`` (one trained model, tested with its EIG policy ``pham_eig``
and with random cells ``pham_random``), and on the VQA scenes ``han`` (top-k), ``adahan`` and ``han_all``
(``--selection=none``: every cell, no attention).

What is measured, per cell:
- test accuracy of the best-validation checkpoint (validation picks the checkpoint, never the test split);
- accuracy after each glimpse (sequential models);
- fraction of image pixels seen at full resolution: the union of the full-resolution glimpse boxes (RAM's
  finest scale, PHAM's cells) over the image, averaged over test images; 1 for models that read every pixel
  (the CNN, DHAM's attention head, HAN's encoder);
- multiply-adds per image of one inference pass (``attention()``), counted by ``torch.utils.flop_counter``
  (matrix products and convolutions; sampling and elementwise work are not counted);
- training images/s (training batches only), inference images/s (the test loop; PHAM's runs both policies),
  peak memory (the cell's process peak RSS on CPU, ``max_memory_allocated`` on GPU).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

ROOT = Path(__file__).resolve().parents[1]

# --- the grid ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    data: dict[str, Any]          # datamodule flags
    kind: str = "image"           # "image" or "vqa"
    paper: str = ""               # the papers' figure for this task, if any


DIGITS = {"data": "cluttered_mnist"}
TASKS: dict[str, Task] = {t.name: t for t in (
    Task("translated60", "translated MNIST 60x60", {**DIGITS, "variant": "translated", "canvas_size": 60},
         paper="RAM 1.84% error (Mnih et al. 2014, Table 1b)"),
    Task("cluttered60", "cluttered MNIST 60x60, 4 pieces",
         {**DIGITS, "variant": "cluttered", "canvas_size": 60, "clutter": 4},
         paper="RAM 5.23% error, 8 glimpses (Mnih et al. 2014, Table 2a)"),
    Task("cluttered100", "cluttered MNIST 100x100, 8 pieces",
         {**DIGITS, "variant": "cluttered", "canvas_size": 100, "clutter": 8},
         paper="RAM 10.83% error, 8 glimpses (Mnih et al. 2014, Table 2b)"),
    Task("dham120", "scaled MNIST on 120x120 (DHAM)", {**DIGITS, "variant": "dham", "canvas_size": 120}),
    Task("rgb32", "32x32 RGB", {}),  # resolved at run time: CIFAR-10 when on disk, else a labelled stand-in
    Task("vqa", "synthetic VQA scenes", {"data": "vqa_scenes"}, kind="vqa"),
)}

# method -> (model name, flags, the tasks it applies to). Model sizes come from presets where one fits.
IMAGE_TASKS = ("translated60", "cluttered60", "cluttered100", "dham120", "rgb32")


@dataclass(frozen=True)
class Method:
    name: str
    model: str
    tasks: Sequence[str]
    flags: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, str] = field(default_factory=dict)  # task -> configs/<preset>.yaml (model flags only)
    rows: Sequence[str] = ()  # result rows this cell gives (default: the method's name)


RAM_PRESETS = {"translated60": "ram_translated60", "cluttered60": "ram_cluttered60",
               "cluttered100": "ram_cluttered100", "dham120": "ram_cluttered100", "rgb32": "ram_mnist"}
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("cnn", "cnn", IMAGE_TASKS, presets={"translated60": "cnn_cluttered60", "cluttered60": "cnn_cluttered60",
                                               "cluttered100": "cnn_cluttered60", "dham120": "cnn_mnist120",
                                               "rgb32": "cnn_cifar10"}),
    Method("dham", "dham", IMAGE_TASKS, presets={t: "dham_mnist120" for t in IMAGE_TASKS}),
    Method("ram", "ram", IMAGE_TASKS, presets=RAM_PRESETS),
    Method("ram_random", "ram", IMAGE_TASKS, flags={"location_policy": "random"}, presets=RAM_PRESETS),
    Method("pham", "pham", IMAGE_TASKS, flags={"phase": "all"}, presets={t: "pham_digits32" for t in IMAGE_TASKS},
           rows=("pham_eig", "pham_random")),
    Method("han", "han", ("vqa",), flags={"selection": "topk"}, presets={"vqa": "han_vqa"}),
    Method("adahan", "han", ("vqa",), flags={"selection": "adaptive"}, presets={"vqa": "adahan_vqa"}),
    Method("han_all", "han", ("vqa",), flags={"selection": "none"}, presets={"vqa": "han_vqa"}),
)}

# per-task overrides a model needs to fit the image (e.g. a crop no larger than a 32px canvas)
TASK_MODEL_FLAGS: dict[tuple, dict[str, Any]] = {
    ("dham", "rgb32"): {"crop_size": 16},
    ("ram", "rgb32"): {"depth": 2, "glimpses": 7},
    ("ram_random", "rgb32"): {"depth": 2, "glimpses": 7},
}


@dataclass(frozen=True)
class Budget:
    name: str
    steps: int            # training steps per cell (PHAM: split equally over its three phases)
    batch_size: int
    validations: int      # validation passes per cell (sets the epoch length of on-the-fly sources)
    val_size: int
    test_size: int
    seeds: Sequence[int]
    small_models: bool = False  # shrink every model (smoke: checks the machinery, not accuracy)


BUDGETS = {
    "smoke": Budget("smoke", steps=3, batch_size=8, validations=1, val_size=16, test_size=32, seeds=(0, 1),
                    small_models=True),
    "cpu": Budget("cpu", steps=150, batch_size=64, validations=3, val_size=500, test_size=1000, seeds=(0, 1, 2)),
    "paper": Budget("paper", steps=100_000, batch_size=128, validations=50, val_size=5000, test_size=10000,
                    seeds=(0, 1, 2)),
}

# the smallest sizes of each model, for --budget=smoke
SMALL: dict[str, dict[str, Any]] = {
    "cnn": {"conv_channels": [4, 8], "hidden": 16},
    "dham": {"head_channels": [4], "classifier_channels": [4, 8], "classifier_hidden": 16},
    "ram": {"glimpse_hidden": 16, "location_hidden": 16, "hidden_size": 32, "mc_samples": 2},
    "pham": {"feature_size": 16, "hidden_size": 32, "latent_size": 8, "glimpse_channels": [8, 8, 8],
             "flow_transforms": 1, "flow_hidden": [16], "eig_samples": 2, "steps": 3},
    "han": {"encoder_channels": [8, 8], "fusion_dim": 16, "head_hidden": 16},
}


# --- flags of one cell ------------------------------------------------------------------------------------

def _preset_model_flags(preset: str, model: str) -> dict[str, Any]:
    """The model's own flags from ``configs/<preset>.yaml`` (data and trainer flags of a preset are not used)."""
    import yaml

    from attention_lightning import registry
    from attention_lightning.signature import parameters

    values = yaml.safe_load((ROOT / "configs" / f"{preset}.yaml").read_text()) or {}
    accepted = parameters(registry.get_model(model).cls)
    return {k: v for k, v in values.items() if k in accepted}


def _preset_data_flags(preset: str) -> dict[str, Any]:
    """A VQA preset's data flags (the scene set is part of the task)."""
    import yaml

    from attention_lightning import registry
    from attention_lightning.signature import parameters

    values = yaml.safe_load((ROOT / "configs" / f"{preset}.yaml").read_text()) or {}
    accepted = parameters(registry.get_datamodule("vqa_scenes").cls)
    return {k: v for k, v in values.items() if k in accepted}


def resolve_rgb32(data_dir: str) -> dict[str, Any]:
    """CIFAR-10 when its torchvision folder is on disk; else digits on a 32x32 RGB canvas (a stand-in)."""
    if (Path(data_dir) / "cifar-10-batches-py").is_dir():
        return {"data": "cifar10", "data_dir": data_dir, "title": "CIFAR-10"}
    return {"data": "cluttered_mnist", "variant": "translated", "canvas_size": 32, "channels": 3,
            "title": "stand-in: MNIST digits on a 32x32 RGB canvas (no CIFAR-10 on disk)"}


def cell_flags(task: Task, method: Method, seed: int, budget: Budget, data_dir: str, out: Path,
               extra: dict[str, Any]) -> dict[str, Any]:
    """Every flag of one cell's ``cli.py fit``."""
    data = dict(task.data)
    if task.name == "rgb32":
        data = {k: v for k, v in resolve_rgb32(data_dir).items() if k != "title"}
    if task.kind == "vqa":
        data.update(_preset_data_flags("han_vqa"))
    flags: dict[str, Any] = {"model": method.model, **data}
    if method.presets.get(task.name):
        flags.update(_preset_model_flags(method.presets[task.name], method.model))
    flags.update(method.flags)
    flags.update(TASK_MODEL_FLAGS.get((method.name, task.name), {}))
    if budget.small_models:
        flags.update(SMALL.get(method.model, {}))
    steps = budget.steps
    if method.model == "pham":
        steps = max(1, budget.steps // 3)  # --phase=all runs three fits with the same Trainer flags
    flags.update({
        "seed": seed, "batch_size": budget.batch_size, "max_steps": steps, "max_epochs": -1,
        "val_size": budget.val_size, "test_size": budget.test_size, "num_sanity_val_steps": 0,
        "default_root_dir": str(out / "runs"), "run_name": f"{task.name}-{method.name}-s{seed}",
    })
    if flags["data"] in ("cluttered_mnist", "vqa_scenes"):  # on-the-fly sources: the epoch length sets the
        flags["train_size"] = max(budget.batch_size,  # number of validations per cell
                                  steps * budget.batch_size // max(1, budget.validations))
    if flags["data"] == "cluttered_mnist":
        flags["data_dir"] = data_dir
    else:
        flags.pop("val_size", None)
        flags.pop("test_size", None)
    flags.update(extra)
    return flags


def command_line(flags: dict[str, Any]) -> str:
    """The ``cli.py fit`` command that runs a cell by hand."""
    parts = ["python", "cli.py", "fit"]
    for k, v in flags.items():
        if isinstance(v, (list, tuple)):
            v = "[" + ",".join(str(x) for x in v) + "]"
        parts.append(f"--{k}={v}")
    return " ".join(shlex.quote(p) for p in parts)


# --- measuring one cell -----------------------------------------------------------------------------------

class _Timer:
    """Wall time of training batches and of the test loop (a Lightning callback made on demand)."""

    @staticmethod
    def make():
        import pytorch_lightning as pl
        import torch

        class Timer(pl.Callback):
            def __init__(self) -> None:
                self.train_s, self.train_images, self.test_s, self.test_images = 0.0, 0, 0.0, 0
                self._t = 0.0

            def _now(self, pl_module) -> float:
                if pl_module.device.type == "cuda":
                    torch.cuda.synchronize(pl_module.device)
                return time.perf_counter()

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                self._t = self._now(pl_module)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                self.train_s += self._now(pl_module) - self._t
                self.train_images += len(pl_module.targets(batch))

            def on_test_epoch_start(self, trainer, pl_module) -> None:
                self.test_images, self._t = 0, self._now(pl_module)

            def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
                self.test_images += len(pl_module.targets(batch))

            def on_test_epoch_end(self, trainer, pl_module) -> None:
                self.test_s = self._now(pl_module) - self._t

        return Timer()


def pixels_seen(att, full_res_only: bool) -> list[float]:
    """Mean fraction of the image's pixels inside the union of the full-resolution boxes after each step (T,).

    ``att.boxes`` is (B, T, S, 4) in [-1, 1] coordinates; the first box of a step is its finest scale. Models
    without boxes, or that read every pixel elsewhere (``full_res_only=False``), see everything.
    """
    import torch

    steps = att.probs.shape[1]
    if att.boxes is None or not full_res_only:
        return [1.0] * steps
    b, _, h, w = att.images.shape
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1  # (H,) pixel centers
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1  # (W,)
    seen = torch.zeros(b, h, w, dtype=torch.bool)
    out = []
    for t in range(steps):
        box = att.boxes[:, t, 0].float()  # (B, 4)
        inside_x = (xs[None] >= box[:, 0:1]) & (xs[None] <= box[:, 2:3])  # (B, W)
        inside_y = (ys[None] >= box[:, 1:2]) & (ys[None] <= box[:, 3:4])  # (B, H)
        seen |= inside_y[:, :, None] & inside_x[:, None, :]  # (B, H, W)
        out.append(float(seen.float().mean()))
    return out


# models whose boxes are all they read at full resolution (others read every pixel somewhere)
GLIMPSE_ONLY = ("ram", "pham")


def inference_profile(ckpt: str, model_name: str, flags: dict[str, Any]) -> dict[str, Any]:
    """Multiply-adds per image and pixels seen per step, from a checkpoint on a batch of the test split."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from attention_lightning import registry
    from attention_lightning.attention import first_items
    from attention_lightning.run import commands as experiment

    p = experiment.plan({**flags, "logger": "none"})
    dm = experiment.build_datamodule(p)
    model = registry.get_model(model_name).cls.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    model.eval()
    dm.setup("test")
    batch = first_items(dm.test_dataloader(), 32)
    n = len(model.targets(batch))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        att = model.attention(batch)
    return {"macs_per_image": counter.get_total_flops() / 2 / n,
            "pixels_seen": pixels_seen(att, model_name in GLIMPSE_ONLY)}


def run_cell(flags: dict[str, Any], logger: str) -> dict[str, Any]:
    """Train and test one cell in this process; returns its measurements."""
    import torch

    from attention_lightning.run import commands as experiment

    timer = _Timer.make()
    t0 = time.perf_counter()
    summary = experiment.fit({**flags, "logger": logger}, extra_callbacks=[timer])
    wall = time.perf_counter() - t0
    if logger == "wandb":  # one wandb run per cell: close it before the next cell (or the summary) starts
        import wandb

        wandb.finish()
    ckpt = summary.get("best_checkpoint") or summary.get("last_checkpoint")
    profile = inference_profile(ckpt, flags["model"], flags)
    cuda = torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "test": {k: float(v) for k, v in (summary.get("test") or {}).items()},
        "train_images_per_s": timer.train_images / timer.train_s if timer.train_s else None,
        "test_images_per_s": timer.test_images / timer.test_s if timer.test_s else None,
        "train_images": timer.train_images, "wall_s": wall, "peak_mem_mb": peak,
        "peak_mem_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "checkpoint": ckpt, "digits": summary.get("digits"), **profile,
    }


# --- the grid run -----------------------------------------------------------------------------------------

def cell_id(task: str, method: str, seed: int) -> str:
    return f"{task}__{method}__s{seed}"


def write_json(path: Path, data: Any) -> None:
    """Atomically: a killed run leaves the old file or the new one."""
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def global_rank() -> int:
    """This process's rank in a multi-process launch (srun, torchrun), else 0."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def run_grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    budget = BUDGETS[args.budget]
    out = Path(args.out)
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    extra = {k: v for k, v in (("accelerator", args.accelerator), ("devices", args.devices),
                                ("num_nodes", args.num_nodes), ("precision", args.precision),
                                ("strategy", args.strategy)) if v is not None}
    extra.update({"enable_progress_bar": False, "enable_model_summary": False, "viz_images": 0})
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    methods = args.methods.split(",") if args.methods else list(METHODS)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(budget.seeds)
    for name in tasks:
        if name not in TASKS:
            raise SystemExit(f"error: unknown task {name!r}; tasks: {', '.join(TASKS)}")
    for name in methods:
        if name not in METHODS:
            raise SystemExit(f"error: unknown method {name!r}; methods: {', '.join(METHODS)}")
    plan = [(TASKS[t], METHODS[m], s) for t in tasks for m in methods if t in METHODS[m].tasks for s in seeds]
    records = []
    for i, (task, method, seed) in enumerate(plan):
        path = cells_dir / f"{cell_id(task.name, method.name, seed)}.json"
        if path.is_file():
            records.append(json.loads(path.read_text()))
            print(f"[{i + 1}/{len(plan)}] {path.stem}: done earlier", flush=True)
            continue
        flags = cell_flags(task, method, seed, budget, args.data_dir, out, extra)
        print(f"[{i + 1}/{len(plan)}] {path.stem}: {command_line(flags)}", flush=True)
        if args.isolate:
            result = _run_isolated(flags, args.logger, task.name)
        else:
            os.environ["WANDB_RUN_GROUP"] = task.name
            result = run_cell(flags, args.logger)
        record = {"task": task.name, "method": method.name, "seed": seed, "budget": budget.name,
                  "steps": flags["max_steps"] * (3 if method.model == "pham" else 1),
                  "batch_size": budget.batch_size, "command": command_line(flags),
                  "data": flags["data"], **result}
        if global_rank() == 0:  # every rank trained the cell; one writes it
            write_json(path, record)
        records.append(record)
    return records


def _run_isolated(flags: dict[str, Any], logger: str, group: str) -> dict[str, Any]:
    """One cell in a fresh process, so its peak memory is its own."""
    env = {**os.environ, "WANDB_RUN_GROUP": group}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.leaderboard", "--_cell", json.dumps(flags), "--logger", logger],
        env=env, capture_output=True, text=True, cwd=str(ROOT),
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"error: cell {flags['run_name']} failed (exit {proc.returncode}); "
                         f"rerun its command to see why: {command_line(flags)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the table and the plots ------------------------------------------------------------------------------

def _mean_se(values: Sequence[float]) -> tuple:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var / len(vals))


def rows_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The result rows of a cell: one per method, two for PHAM (its EIG and random policies)."""
    test = record["test"]
    pixels = record["pixels_seen"]
    base = {k: record[k] for k in ("task", "seed", "macs_per_image", "train_images_per_s", "test_images_per_s",
                                   "peak_mem_mb", "steps", "batch_size", "command")}
    if record["method"] == "pham":
        rows = []
        for policy in ("eig", "random"):
            steps = sorted(int(k.rsplit("_t", 1)[1]) for k in test if k.startswith(f"test/acc_{policy}_t"))
            per_step = [test[f"test/acc_{policy}_t{t}"] for t in steps]
            rows.append({**base, "method": f"pham_{policy}", "acc": per_step[-1] if per_step else float("nan"),
                         "acc_steps": per_step, "pixels_steps": pixels[:len(per_step)]})
        return rows
    steps = sorted(int(k.rsplit("_t", 1)[1]) for k in test if k.startswith("test/acc_t"))
    per_step = [test[f"test/acc_t{t}"] for t in steps] or [test.get("test/acc", float("nan"))]
    return [{**base, "method": record["method"], "acc": test.get("test/acc", float("nan")),
             "acc_steps": per_step, "pixels_steps": pixels[:len(per_step)] or [1.0]}]


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error over seeds per (task, method)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        for row in rows_of(record):
            groups.setdefault((row["task"], row["method"]), []).append(row)
    table = []
    for (task, method), rows in groups.items():
        acc, acc_se = _mean_se([r["acc"] for r in rows])
        n_steps = min(len(r["acc_steps"]) for r in rows)
        per_step = [_mean_se([r["acc_steps"][t] for r in rows]) for t in range(n_steps)]
        pixels = [sum(r["pixels_steps"][t] for r in rows) / len(rows) for t in range(n_steps)]
        table.append({
            "task": task, "method": method, "seeds": len(rows), "acc": acc, "acc_se": acc_se,
            "acc_steps": [m for m, _ in per_step], "acc_steps_se": [s for _, s in per_step],
            "pixels_steps": pixels, "pixels_seen": pixels[-1] if pixels else 1.0,
            "macs_per_image": _mean_se([r["macs_per_image"] for r in rows])[0],
            "train_images_per_s": _mean_se([r["train_images_per_s"] for r in rows])[0],
            "test_images_per_s": _mean_se([r["test_images_per_s"] for r in rows])[0],
            "peak_mem_mb": max(r["peak_mem_mb"] for r in rows),
            "steps": rows[0]["steps"], "batch_size": rows[0]["batch_size"],
            "images_seen": rows[0]["steps"] * rows[0]["batch_size"], "command": rows[0]["command"],
        })
    order = {t: i for i, t in enumerate(TASKS)}
    method_order = ["cnn", "dham", "ram", "ram_random", "pham_eig", "pham_random", "han", "adahan", "han_all"]
    table.sort(key=lambda r: (order.get(r["task"], 99),
                              method_order.index(r["method"]) if r["method"] in method_order else 99))
    return table


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def write_tables(table: list[dict[str, Any]], out: Path, budget: Budget) -> None:
    cols = ["task", "method", "seeds", "acc", "acc_se", "acc_steps", "acc_steps_se", "pixels_seen",
            "macs_per_image", "train_images_per_s", "test_images_per_s", "peak_mem_mb", "steps", "batch_size",
            "images_seen", "command"]
    with open(out / "leaderboard.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in table:
            w.writerow([json.dumps(r[c]) if isinstance(r[c], list) else r[c] for c in cols])
    lines = [f"Budget `{budget.name}`: {budget.steps} training steps x batch {budget.batch_size} per cell "
             f"(= {budget.steps * budget.batch_size} images; PHAM: a third per phase), seeds "
             f"{', '.join(map(str, budget.seeds))}; test accuracy of the best-validation checkpoint, "
             "mean +- standard error over seeds.", "",
             "| task | method | test acc | acc after each glimpse | pixels seen | MMACs/img | train img/s | "
             "infer img/s | peak MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        steps = " / ".join(_fmt(a, ".3f") for a in r["acc_steps"]) if len(r["acc_steps"]) > 1 else "-"
        acc = f"{_fmt(r['acc'], '.3f')} +- {_fmt(r['acc_se'], '.3f')}"
        lines.append(f"| {r['task']} | {r['method']} | {acc} | {steps} | {_fmt(r['pixels_seen'], '.3f')} | "
                     f"{_fmt(r['macs_per_image'] / 1e6, '.2f')} | {_fmt(r['train_images_per_s'], '.0f')} | "
                     f"{_fmt(r['test_images_per_s'], '.0f')} | {_fmt(r['peak_mem_mb'], '.0f')} |")
    papers = [f"- {t.name}: {t.paper}" for t in TASKS.values() if t.paper and any(r["task"] == t.name for r in table)]
    if papers:
        lines += ["", "Papers' figures for the same tasks (full training, not this budget):", *papers]
    (out / "leaderboard.md").write_text("\n".join(lines) + "\n")


def write_plots(table: list[dict[str, Any]], out: Path) -> list[Path]:
    """Accuracy against glimpses and against the fraction of pixels seen: a panel per task, a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if any(r["task"] == t for r in table)]
    paths = []
    for kind, xlabel in (("glimpses", "glimpses (steps)"), ("pixels", "fraction of pixels seen at full resolution")):
        fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for r in (r for r in table if r["task"] == task):
                ys, es = r["acc_steps"], [0 if math.isnan(e) else e for e in r["acc_steps_se"]]
                xs = list(range(1, len(ys) + 1)) if kind == "glimpses" else r["pixels_steps"]
                ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, label=r["method"])
            ax.set_title(task, fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel("test accuracy", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"accuracy_vs_{kind}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def log_summary_to_wandb(table: list[dict[str, Any]], plots: list[Path], budget: Budget, out: Path) -> None:
    """A summary run: the table as a ``wandb.Table`` and the plots as images (cells are runs of their own)."""
    import wandb

    wandb.finish()  # no cell's run may take the summary
    run = wandb.init(project="attention-lightning", name=f"leaderboard-{budget.name}", job_type="leaderboard",
                     group="leaderboard", config={"budget": budget.__dict__}, dir=str(out))
    cols = ["task", "method", "seeds", "acc", "acc_se", "pixels_seen", "macs_per_image", "train_images_per_s",
            "test_images_per_s", "peak_mem_mb", "images_seen", "command"]
    run.log({"leaderboard/table": wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in table]),
             **{f"leaderboard/{p.stem}": wandb.Image(str(p)) for p in plots}})
    run.finish()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=list(BUDGETS), default="smoke")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results/leaderboard-<budget>)")
    ap.add_argument("--tasks", default="", help=f"comma-separated subset of {', '.join(TASKS)}")
    ap.add_argument("--methods", default="", help=f"comma-separated subset of {', '.join(METHODS)}")
    ap.add_argument("--seeds", default="", help="comma-separated seeds (default: the budget's)")
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--logger", choices=["csv", "tensorboard", "wandb", "none"], default="csv")
    ap.add_argument("--isolate", type=lambda s: s.lower() in ("1", "true", "yes"), default=True,
                    help="run each cell in its own process (its own peak memory); false: in this process")
    for name in ("accelerator", "devices", "num_nodes", "precision", "strategy"):
        ap.add_argument(f"--{name}", default=None, type=int if name in ("devices", "num_nodes") else str)
    ap.add_argument("--_cell", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._cell:  # a child process running one cell: print its result as the last line
        print(json.dumps(run_cell(json.loads(args._cell), args.logger), default=str))
        return 0
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"leaderboard-{args.budget}")
    budget = BUDGETS[args.budget]
    records = run_grid(args)
    if global_rank() != 0:
        return 0
    table = summarize(records)
    out = Path(args.out)
    write_tables(table, out, budget)
    plots = write_plots(table, out)
    if args.logger == "wandb":
        log_summary_to_wandb(table, plots, budget, out)
    print((out / "leaderboard.md").read_text())
    print(f"wrote {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}, {', '.join(str(p) for p in plots)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
