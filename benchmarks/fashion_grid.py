"""The papers' tasks at full size on real images: Fashion-MNIST objects, every method at one training budget.

Each cell (task x method x seed) trains with ``cli.py fit`` on the full training split (54,000 images; 6,000
held out for validation, which picks the checkpoint), for the same number of training images for every method
of a task (``IMAGES``), and is tested on all 10,000 official test images. A finished cell is a JSON file
``benchmarks/results/fashion/<task>__<method>__s<seed>.json`` holding its exact command and measurements;
the README's table is generated from these files (``python -m benchmarks.results_table``).

    python -m benchmarks.fashion_grid list                  # every cell, in the order they run, and what is done
    nohup python -m benchmarks.fashion_grid run > grid0.log 2>&1 &   # one worker per core; start two
    python -m benchmarks.fashion_grid run --cells=cluttered100__ram__s0   # one cell
    python -m benchmarks.fashion_grid claims                # the paired differences with their standard errors

Workers take the next cell nobody has claimed (a claim is a file made atomically, freed when its process is
gone), so any number of them can run at once; a killed cell continues from its last checkpoint
(``--resume=last``) when a worker takes it again. Fashion-MNIST is read as ``--digits=fashion`` reads it
(``datamodules/fashion.py``; ``apt-get install dataset-fashion-mnist`` provides it offline).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from benchmarks import leaderboard

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "fashion"
IMAGES = 500_000          # training images per cell, equal for every method of a task (a task may set more)
VALIDATIONS = 5           # validation passes per cell (every 100,000 images)
VAL_SIZE = 6000           # the held-out part of the 60,000 training images
TEST_SIZE = 10000         # every official test image


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    data: dict[str, Any]  # datamodule flags
    paper: str            # the paper's MNIST figure for this task, for orientation
    images: int = IMAGES  # training images of each cell (with PHAM: a multiple of 15, its 3 phases x 5 epochs)


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("centered28", "28x28, centred", {"variant": "translated", "canvas_size": 28},
         "RAM 1.29% error on MNIST (Mnih et al. 2014, Table 1a)"),
    Task("translated60", "translated 60x60", {"variant": "translated", "canvas_size": 60},
         "RAM 1.84% error on MNIST (Table 1b)"),
    Task("cluttered60", "cluttered 60x60, 4 pieces", {"variant": "cluttered", "canvas_size": 60, "clutter": 4},
         "RAM 5.23% error on MNIST, 8 glimpses (Table 2a)"),
    Task("cluttered100", "cluttered 100x100, 8 pieces", {"variant": "cluttered", "canvas_size": 100, "clutter": 8},
         "RAM 10.83% error on MNIST, 8 glimpses (Table 2b)"),
    Task("dham120", "scaled on 120x120 (DHAM)", {"variant": "dham", "canvas_size": 120},
         "DHAM: figures only"),
    Task("dham120_noisy", "scaled on 120x120, noise std 0.5", {"variant": "dham", "canvas_size": 120, "snr": 2.0},
         "DHAM: figures only"),
    Task("rgb32", "32x32 RGB, translated", {"variant": "translated", "canvas_size": 32, "channels": 3},
         "PHAM: EIG above random on SVHN/CIFAR/CINIC/TinyImageNet (Rangrej & Clark 2021, Fig. 3)", images=504_000),
)}


@dataclass(frozen=True)
class Method:
    name: str
    model: str
    preset: dict[str, str]          # task -> configs/<preset>.yaml (its model flags are used)
    flags: dict[str, Any]
    rows: Sequence[str] = ()        # result files one trained cell gives (default: the method's name)


PAPER_CNN = "cnn_ram_paper"       # Mnih et al. 2014's convolutional baseline
RAM_PRESET = {"centered28": "ram_mnist", "translated60": "ram_translated60", "cluttered60": "ram_cluttered60",
              "cluttered100": "ram_cluttered100"}
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ram", "ram", RAM_PRESET, {}),
    Method("ram_random", "ram", RAM_PRESET, {"location_policy": "random"}),
    Method("cnn", "cnn", {**{t: PAPER_CNN for t in RAM_PRESET}, "dham120": PAPER_CNN, "dham120_noisy": PAPER_CNN,
                          "rgb32": "cnn_cifar10"}, {}),
    Method("dham", "dham", {"dham120": "dham_mnist120", "dham120_noisy": "dham_noisy120"}, {}),
    Method("pham", "pham", {"rgb32": "pham_digits32"}, {"phase": "all"}, rows=("pham_eig", "pham_random")),
)}

# the order cells run in: every task at seed 0 (cluttered 100x100 first, then the long PHAM cell), then seeds 1
# and 2 of the tasks whose claims need error bars, then the other tasks' seeds
ORDER = [("cluttered100", "ram"), ("cluttered100", "ram_random"), ("cluttered100", "cnn"), ("rgb32", "pham"),
         ("translated60", "ram"), ("translated60", "ram_random"), ("translated60", "cnn"), ("rgb32", "cnn"),
         ("cluttered60", "ram"), ("cluttered60", "ram_random"), ("cluttered60", "cnn"),
         ("dham120", "dham"), ("dham120", "cnn"), ("dham120_noisy", "dham"), ("dham120_noisy", "cnn"),
         ("centered28", "ram"), ("centered28", "ram_random"), ("centered28", "cnn")]
SEEDED_FIRST = ("cluttered100", "translated60", "rgb32")
SEEDS = (0, 1, 2)


def cells() -> list[tuple[str, str, int]]:
    """Every (task, method, seed) of the grid, in the order workers take them."""
    first = [(t, m, 0) for t, m in ORDER]
    needed = [(t, m, s) for s in SEEDS[1:] for t, m in ORDER if t in SEEDED_FIRST]
    rest = [(t, m, s) for s in SEEDS[1:] for t, m in ORDER if t not in SEEDED_FIRST]
    return first + needed + rest


def cell_name(task: str, method: str, seed: int) -> str:
    return f"{task}__{method}__s{seed}"


def result_paths(task: str, method: str, seed: int, out: Path = OUT) -> list[Path]:
    rows = METHODS[method].rows or (method,)
    return [out / f"{cell_name(task, row, seed)}.json" for row in rows]


def cell_flags(task: str, method: str, seed: int, out: Path = OUT) -> dict[str, Any]:
    """The flags of one cell's ``cli.py fit``: the method's preset's model flags and batch size, the task's data,
    the budget. (The preset's own data flags are not used: the task sets the data.)"""
    import yaml

    m, t = METHODS[method], TASKS[task]
    preset = m.preset[task]
    per_phase = 3 if m.model == "pham" else 1  # --phase=all trains three times with the same Trainer flags
    epoch = t.images // (VALIDATIONS * per_phase)
    batch = (yaml.safe_load((ROOT / "configs" / f"{preset}.yaml").read_text()) or {}).get("batch_size", 64)
    root = out / "runs"
    return {
        "model": m.model, **leaderboard._preset_model_flags(preset, m.model), **m.flags,
        "data": "cluttered_mnist", "digits": "fashion", **t.data, "batch_size": batch,
        "train_size": epoch, "max_epochs": VALIDATIONS, "val_size": VAL_SIZE, "test_size": TEST_SIZE, "seed": seed,
        "viz_images": 0, "enable_progress_bar": False, "logger": "csv",
        "default_root_dir": str(root.relative_to(ROOT)) if root.is_relative_to(ROOT) else str(root),
        "run_name": cell_name(task, method, seed),
    }


def command_line(flags: dict[str, Any]) -> str:
    """The command that runs a cell by hand (its flags in order: preset, data, budget)."""
    return leaderboard.command_line({k: v for k, v in flags.items() if k not in ("enable_progress_bar",)})


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def records_of(task: str, method: str, seed: int, flags: dict[str, Any], result: dict[str, Any]) -> list[dict]:
    """The result files of one trained cell: one per method row (PHAM: EIG and random on the same weights)."""
    test = result["test"]
    per_phase = 3 if METHODS[method].model == "pham" else 1
    base = {
        "task": task, "seed": seed, "digits": "fashion", "budget": f"{TASKS[task].images} training images",
        "images_seen": flags["train_size"] * flags["max_epochs"] * per_phase, "command": command_line(flags),
        "preset": f"configs/{METHODS[method].preset[task]}.yaml", "resumed": bool(result.get("resumed")),
        "timed_train_images": result["train_images"], "batch_size": flags["batch_size"],
        "macs_per_image": result["macs_per_image"], "wall_s": result["wall_s"],
        "train_images_per_s": result["train_images_per_s"], "test_images_per_s": result["test_images_per_s"],
        "peak_mem_mb": result["peak_mem_mb"], "device": result.get("device", "cpu"), "cpu_s": result.get("cpu_s"),
        "threads": result.get("threads"), "cpu": platform.processor() or platform.machine(),
        "commit": git_commit(), "date": datetime.date.today().isoformat(), "test_images": flags["test_size"],
        "val_images": VAL_SIZE, "checkpoint": result["checkpoint"],
    }
    pixels = result["pixels_seen"]
    if METHODS[method].model == "pham":
        out = []
        for policy in ("eig", "random"):
            steps = sorted(int(k.rsplit("_t", 1)[1]) for k in test if k.startswith(f"test/acc_{policy}_t"))
            per_step = [test[f"test/acc_{policy}_t{t}"] for t in steps]
            out.append({**base, "method": f"pham_{policy}", "test_acc": per_step[-1], "acc_steps": per_step,
                        "pixels_seen": pixels[:len(per_step)], "trained_as": "pham (one model, two policies)"})
        return out
    steps = sorted(int(k.rsplit("_t", 1)[1]) for k in test if k.startswith("test/acc_t"))
    record = {**base, "method": method, "test_acc": test["test/acc"],
              "acc_steps": [test[f"test/acc_t{t}"] for t in steps] or [test["test/acc"]],
              "pixels_seen": pixels}
    if "test/acc_mc" in test:
        record["test_acc_mc"] = test["test/acc_mc"]
    return [record]


# --- claiming cells --------------------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(name: str, out: Path = OUT) -> bool:
    """Take a cell for this process; False when a live process holds it. A dead holder's claim is taken over."""
    folder = out / "claims"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(path.read_text() or "0")
            except (OSError, ValueError):
                holder = 0
            if holder and _alive(holder):
                return False
            path.unlink(missing_ok=True)  # its process is gone: free it and try once more
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def release(name: str, out: Path = OUT) -> None:
    (out / "claims" / name).unlink(missing_ok=True)


def started(flags: dict[str, Any]) -> bool:
    """Whether this cell's run has a checkpoint to continue from."""
    root = Path(flags["default_root_dir"])
    root = root if root.is_absolute() else ROOT / root
    return any((root / flags["run_name"]).glob("version_*/checkpoints/last.ckpt"))


def run_one(task: str, method: str, seed: int, out: Path = OUT) -> list[Path]:
    """Train and test one cell in a child process (its own peak memory) and write its result files."""
    flags = cell_flags(task, method, seed, out)
    resumed = started(flags)
    if resumed:
        flags["resume"] = "last"
    print(f"{datetime.datetime.now():%H:%M:%S} {cell_name(task, method, seed)}: {command_line(flags)}", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.fashion_grid", "_cell", json.dumps(flags)],
                          cwd=ROOT, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise RuntimeError(f"cell {cell_name(task, method, seed)} failed (exit {proc.returncode}); rerun: "
                           f"{command_line(flags)}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["resumed"] = resumed
    result["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)  # the cell process: user + system s
    flags.pop("resume", None)
    paths = []
    for record, path in zip(records_of(task, method, seed, flags, result), result_paths(task, method, seed, out)):
        leaderboard.write_json(path, record)
        paths.append(path)
    return paths


def _cell_in_this_process(flags: dict[str, Any]) -> dict[str, Any]:
    import torch

    result = leaderboard.run_cell(flags, flags.get("logger", "csv"))
    result["threads"] = torch.get_num_threads()
    result["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return result


def run(names: Sequence[str], out: Path = OUT) -> int:
    todo = [c for c in cells() if not names or cell_name(*c) in names]
    failures = 0
    for task, method, seed in todo:
        name = cell_name(task, method, seed)
        if all(p.is_file() for p in result_paths(task, method, seed, out)) or not claim(name, out):
            continue
        try:
            t0 = time.time()
            paths = run_one(task, method, seed, out)
            print(f"{datetime.datetime.now():%H:%M:%S} {name}: done in {time.time() - t0:.0f} s -> "
                  f"{', '.join(str(p.relative_to(ROOT)) for p in paths)}", flush=True)
        except RuntimeError as e:
            failures += 1
            print(f"error: {e}", flush=True)
        finally:
            release(name, out)
    return 1 if failures else 0


# --- the claims as paired differences ---------------------------------------------------------------------------

def load_records(out: Path = OUT) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*__*__s*.json"))]


def mean_se(values: Sequence[float]) -> tuple[float, float, int]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else math.nan
    return mean, se, n


def paired(records: list[dict[str, Any]], task: str, a: str, b: str, key: str = "test_acc",
           step: int | None = None) -> tuple[float, float, int]:
    """Mean and standard error over seeds of (a - b) on ``task``, from the seeds both have."""
    by = {(r["method"], r["seed"]): r for r in records if r["task"] == task}
    diffs = []
    for (method, seed), r in by.items():
        if method == a and (b, seed) in by:
            other = by[(b, seed)]
            if step is None:
                diffs.append(r[key] - other[key])
            elif len(r["acc_steps"]) > step and len(other["acc_steps"]) > step:
                diffs.append(r["acc_steps"][step] - other["acc_steps"][step])
    return mean_se(diffs)


CLAIMS = [  # (what, task, a, b, step index or None)
    ("RAM vs the CNN, cluttered 100x100", "cluttered100", "ram", "cnn", None),
    ("RAM vs the CNN, cluttered 60x60", "cluttered60", "ram", "cnn", None),
    ("RAM vs random locations, cluttered 100x100", "cluttered100", "ram", "ram_random", None),
    ("RAM vs random locations, translated 60x60", "translated60", "ram", "ram_random", None),
    ("RAM vs random locations, cluttered 60x60", "cluttered60", "ram", "ram_random", None),
    ("EIG vs random glimpses at t = 2", "rgb32", "pham_eig", "pham_random", 1),
    ("EIG vs random glimpses at t = 3", "rgb32", "pham_eig", "pham_random", 2),
    ("EIG vs random glimpses at t = 4", "rgb32", "pham_eig", "pham_random", 3),
    ("DHAM vs the CNN, 120x120", "dham120", "dham", "cnn", None),
    ("DHAM vs the CNN, 120x120 with noise", "dham120_noisy", "dham", "cnn", None),
]


def claims(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each claim's paired accuracy difference (percentage points) and the two methods' MACs per image."""
    rows = []
    for what, task, a, b, step in CLAIMS:
        mean, se, n = paired(records, task, a, b, step=step)
        macs = {m: next((r["macs_per_image"] for r in records if r["task"] == task and r["method"] == m), None)
                for m in (a, b)}
        rows.append({"claim": what, "task": task, "a": a, "b": b, "diff": mean, "se": se, "seeds": n,
                     "macs_a": macs[a], "macs_b": macs[b]})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["list", "run", "claims", "_cell"])
    ap.add_argument("flags", nargs="?", help=argparse.SUPPRESS)
    ap.add_argument("--cells", default="", help="comma-separated cell names (default: every cell)")
    args = ap.parse_args(argv)
    if args.command == "_cell":  # a child process running one cell: its result is the last line
        print(json.dumps(_cell_in_this_process(json.loads(args.flags)), default=str))
        return 0
    if args.command == "list":
        for task, method, seed in cells():
            done = all(p.is_file() for p in result_paths(task, method, seed))
            print(f"{cell_name(task, method, seed):32s} {'done' if done else '-'}  "
                  f"{command_line(cell_flags(task, method, seed))}")
        return 0
    if args.command == "claims":
        for r in claims(load_records()):
            if r["seeds"]:
                err = f" +- {100 * r['se']:.1f}" if r["seeds"] > 1 else " (one seed, no error bar)"
                print(f"{r['claim']}: {100 * r['diff']:+.1f}{err} points over {r['seeds']} seed(s); "
                      f"MMACs/image {r['macs_a'] / 1e6:.2f} vs {r['macs_b'] / 1e6:.2f}")
            else:
                print(f"{r['claim']}: not run yet")
        return 0
    return run([c for c in args.cells.split(",") if c])


if __name__ == "__main__":
    raise SystemExit(main())
