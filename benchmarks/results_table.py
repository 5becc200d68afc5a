"""README's results table, generated from the result files under ``benchmarks/results/``.

    python -m benchmarks.results_table            # print the table
    python -m benchmarks.results_table --write    # rewrite README's block between the markers
    python -m benchmarks.results_table --check    # exit 1 if README's block differs from the files

A study's result file (``benchmarks/results/studies/<experiment>.json``) holds one experiment:

    order        its place in the table (int)
    experiment   short name: model, data, the setting that matters
    metric       what the number is ("test acc"), unit ("%" or "" for a fraction), decimals
    seeds        {seed: value}: the headline number of each seed, as measured
    summary      {"mean", "se", "n"}: only where the per-seed values were not kept (never both)
    baseline     the same keys (name, seeds or summary) for the baseline it is compared with; optional
    paper        the paper's figure for the same experiment, or "figures only"
    budget       steps/epochs/images and the machine, in a few words
    command      the command that made it; preset: configs/<name>.yaml; study: docs/studies/<name>.md
    details      anything else measured alongside (per-type accuracies, curves), free-form

A cell of a grid (``benchmarks/results/<grid>/<task>__<method>__s<seed>.json``) holds one run: at least task,
method, seed, digits, test_acc (a fraction), images_seen and command; ``grid_rows`` makes one row per
(task, method), mean ± s.e. over its seeds. Each table is a list of ``Row``; ``TABLES`` names the README block
(``<!-- NAME:start -->`` ... ``<!-- NAME:end -->``) each is written to.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
MAX_CELL = 120  # characters, so the table stays a table of numbers
HEADER = ("experiment", "ours (mean ± s.e.)", "baseline", "paper", "seeds · budget", "preset · study")


@dataclass(frozen=True)
class Row:
    experiment: str
    result: str
    baseline: str
    paper: str
    runs: str
    links: str


def mean_se(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, standard error of the mean (sample std / sqrt(n); 0 for one value) and n."""
    v = list(values)
    if not v:
        raise ValueError("mean_se of no values")
    se = statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return statistics.fmean(v), se, len(v)


def number(part: dict[str, Any], unit: str, decimals: int) -> tuple[str, int]:
    """``"95.1 ± 0.6%"`` (or the single value) of a part holding ``seeds`` or ``summary``, and its n."""
    if ("seeds" in part) == ("summary" in part):
        raise ValueError(f"a result needs exactly one of 'seeds' and 'summary': {sorted(part)}")
    if "seeds" in part:
        mean, se, n = mean_se(float(x) for x in part["seeds"].values())
    else:
        mean, se, n = part["summary"]["mean"], part["summary"]["se"], part["summary"]["n"]
    fmt = f"{{:.{decimals}f}}"
    text = fmt.format(mean) if n == 1 else f"{fmt.format(mean)} ± {fmt.format(se)}"
    return text + unit, n


def seed_list(part: dict[str, Any]) -> str:
    seeds = list(part["seeds"]) if "seeds" in part else part["summary"].get("seed_list", [])
    if not seeds:
        return f"{part['summary']['n']} seeds"
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def study_row(result: dict[str, Any]) -> Row:
    """The table row of one study's result file."""
    unit, decimals = result.get("unit", "%"), result.get("decimals", 1)
    ours, _ = number(result, unit, decimals)
    baseline = "-"
    if "baseline" in result:
        base, _ = number(result["baseline"], unit, decimals)
        baseline = f"{result['baseline']['name']}: {base}"
    links = f"[preset]({result['preset']}) · [study]({result['study']})" if result.get("preset") else \
        f"[study]({result['study']})"
    return Row(experiment=result["experiment"], result=f"**{ours}** {result['metric']}", baseline=baseline,
               paper=result.get("paper", "-"), runs=f"{seed_list(result)} · {result['budget']}", links=links)


STUDY_KEYS = {"order", "experiment", "metric", "paper", "budget", "command", "study"}


def load_studies(folder: Path = RESULTS / "studies") -> list[dict[str, Any]]:
    """Every study's result file, in table order; a file lacking a key is an error naming the file and the key."""
    results = []
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text())
        missing = STUDY_KEYS - set(result)
        if missing:
            raise ValueError(f"{path}: add {', '.join(sorted(missing))} (see benchmarks/results_table.py for the keys)")
        results.append(result)
    return sorted(results, key=lambda r: r["order"])


def grid_rows(cells: Iterable[dict[str, Any]], study: str = "", title: str = "{task}: {method}") -> list[Row]:
    """One row per (task, method) of a grid's cells: test accuracy mean ± s.e. over the seeds, in %.

    A (task, method) whose cells differ in ``images_seen`` or ``digits`` is an error: its seeds are not one
    experiment. Rows come in the cells' first-seen order of task, then method."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        missing = {"task", "method", "seed", "digits", "test_acc", "images_seen", "command"} - set(cell)
        if missing:
            raise ValueError(f"grid cell {cell.get('task')}/{cell.get('method')} lacks {sorted(missing)}")
        groups[(cell["task"], cell["method"])].append(cell)
    rows = []
    for (task, method), group in groups.items():
        for key in ("images_seen", "digits"):
            if len({str(c[key]) for c in group}) > 1:
                raise ValueError(f"grid cells of {task}/{method} differ in {key}: {sorted({str(c[key]) for c in group})}")
        seeds = {c["seed"]: 100 * float(c["test_acc"]) for c in sorted(group, key=lambda c: c["seed"])}
        ours, _ = number({"seeds": seeds}, "%", 1)
        budget = f"{int(group[0]['images_seen']):,} images, {group[0]['digits']}"
        rows.append(Row(experiment=title.format(task=task, method=method), result=f"**{ours}** test acc",
                        baseline="-", paper="-", runs=f"{seed_list({'seeds': seeds})} · {budget}",
                        links=f"[study]({study})" if study else "-"))
    return rows


def load_cells(folder: Path) -> list[dict[str, Any]]:
    """The cells of a grid: every ``<task>__<method>__s<seed>.json`` in ``folder``."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*__*__s*.json"))]


def render(rows: list[Row]) -> str:
    """The markdown table; a cell over ``MAX_CELL`` characters is an error naming the row and the file to shorten."""
    for row in rows:
        for name, cell in zip(HEADER, astuple(row)):
            if len(cell) > MAX_CELL:
                raise ValueError(f"{row.experiment}: the {name!r} cell has {len(cell)} characters (at most {MAX_CELL}); "
                                 f"shorten it in its result file and keep the story in the study")
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(astuple(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


FASHION_STUDY = "docs/studies/fashion_full_size.md"
# per task of the full-size grid: the attention model the row leads with, then its baselines, and the preset
FASHION_LEADS = {
    "cluttered100": ("RAM, cluttered 100x100, 8 pieces", "ram", ("ram_random", "cnn"), "configs/ram_cluttered100.yaml"),
    "cluttered60": ("RAM, cluttered 60x60, 4 pieces", "ram", ("ram_random", "cnn"), "configs/ram_cluttered60.yaml"),
    "translated60": ("RAM, translated 60x60", "ram", ("ram_random", "cnn"), "configs/ram_translated60.yaml"),
    "centered28": ("RAM, 28x28", "ram", ("ram_random", "cnn"), "configs/ram_mnist.yaml"),
    "rgb32": ("PHAM EIG, 32x32 RGB, acc at glimpse 7", "pham_eig", ("pham_random", "cnn"),
              "configs/pham_digits32.yaml"),
    "dham120": ("DHAM, 120x120, 28x28 crop", "dham", ("cnn",), "configs/dham_mnist120.yaml"),
    "dham120_noisy": ("DHAM, 120x120 in noise (std 0.5)", "dham", ("cnn",), "configs/dham_noisy120.yaml"),
}
SHORT = {"ram_random": "random loc.", "cnn": "CNN", "pham_random": "random", "ram": "RAM", "dham": "DHAM"}
PAPER_MNIST = {"cluttered100": "10.83% err. (MNIST)", "cluttered60": "5.23% err. (MNIST)",
               "translated60": "1.84% err. (MNIST)", "centered28": "1.29% err. (MNIST)",
               "rgb32": "EIG > random (SVHN, CIFAR...)", "dham120": "figures only", "dham120_noisy": "figures only"}


def fashion_rows(cells: Iterable[dict[str, Any]]) -> list[Row]:
    """One row per task of the full-size Fashion-MNIST grid that has its lead method: the lead's test accuracy
    (RAM: greedy, then 10-episode MC), its baselines', the seeds and the images every method trained on."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        groups[(cell["task"], cell["method"])].append(cell)

    def acc(task: str, method: str, key: str = "test_acc") -> str | None:
        group = [c for c in groups.get((task, method), []) if key in c]
        if not group:
            return None
        text, _ = number({"seeds": {c["seed"]: 100 * float(c[key]) for c in group}}, "%", 1)
        return text

    rows = []
    for task, (title, lead, baselines, preset) in FASHION_LEADS.items():
        if (task, lead) not in groups:
            continue
        group = groups[(task, lead)]
        images = {int(c["images_seen"]) for c in group}
        if len(images) > 1:
            raise ValueError(f"grid cells of {task}/{lead} differ in images_seen: {sorted(images)}")
        mc = acc(task, lead, "test_acc_mc")
        result = f"**{acc(task, lead)}**" + (f" (MC {mc})" if mc else "")
        base = [f"{SHORT[b]} {acc(task, b)}" for b in baselines if acc(task, b)]
        seeds = sorted(c["seed"] for c in group)
        runs = f"{seed_list({'seeds': dict.fromkeys(seeds)})} · {images.pop():,} images"
        rows.append(Row(experiment=f"{title}", result=result, baseline=" · ".join(base) or "-",
                        paper=PAPER_MNIST[task], runs=runs, links=f"[preset]({preset}) · [study]({FASHION_STUDY})"))
    return rows


# README block name -> how its rows are made
TABLES: dict[str, Callable[[], list[Row]]] = {
    "fashion": lambda: fashion_rows(load_cells(RESULTS / "fashion")),
    "results": lambda: [study_row(r) for r in load_studies()],
}


def block(text: str, name: str) -> tuple[int, int]:
    """Start and end offsets of the text between README's ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"README.md has no '{start.strip()}' ... '{end}' block; add the two markers where the table goes")
    return i + len(start), j


def claims_table() -> str:
    """The full-size grid's claims as paired differences over seeds (percentage points), with each side's MACs."""
    from benchmarks import fashion_grid

    lines = ["| claim | difference (points) | seeds | MMACs per image |", "|---|---|---|---|"]
    for r in fashion_grid.claims(load_cells(RESULTS / "fashion")):
        if not r["seeds"]:
            lines.append(f"| {r['claim']} | not run yet | 0 | - |")
            continue
        diff = f"{100 * r['diff']:+.1f}" + ("" if r["seeds"] < 2 else f" ± {100 * r['se']:.1f}")
        macs = " vs ".join("-" if m is None else f"{m / 1e6:.2f}" for m in (r["macs_a"], r["macs_b"]))
        lines.append(f"| {r['claim']} | {diff} | {r['seeds']} | {macs} |")
    return "\n".join(lines) + "\n"


def cells_table() -> str:
    """Every cell of the full-size grid that has finished: accuracy, MACs, pixels seen, time."""
    lines = ["| task | method | seed | test acc | MC acc | acc after glimpse 1 / 2 / 4 / last | pixels seen | "
             "MMACs/img | train img/s | fit wall h |", "|---|---|---|---|---|---|---|---|---|---|"]
    cells = load_cells(RESULTS / "fashion")
    for c in cells:
        steps = c.get("acc_steps") or []
        picks = " / ".join(f"{100 * steps[t]:.1f}" for t in (0, 1, 3, len(steps) - 1) if t < len(steps)) \
            if len(steps) > 1 else "-"
        mc = f"{100 * c['test_acc_mc']:.1f}" if "test_acc_mc" in c else "-"
        pixels = c.get("pixels_seen") or [1.0]
        lines.append(f"| {c['task']} | {c['method']} | {c['seed']} | {100 * c['test_acc']:.1f} | {mc} | {picks} | "
                     f"{pixels[-1]:.3f} | {c['macs_per_image'] / 1e6:.2f} | {c['train_images_per_s']:.0f} | "
                     f"{c['wall_s'] / 3600:.2f}{'*' if c.get('resumed') else ''} |")
    if any(c.get("resumed") for c in cells):
        lines.append("\n\\* resumed after its worker was stopped: the wall time after the resume.")
    return "\n".join(lines) + "\n"


def cost_line(cells: Iterable[dict[str, Any]] | None = None) -> str:
    """The CPU the full-size grid's finished runs cost: one line, for beside its tables."""
    cells = load_cells(RESULTS / "fashion") if cells is None else cells
    runs = {c["command"]: c for c in cells}  # PHAM's two policies share one run
    measured = [c["cpu_s"] for c in runs.values() if c.get("cpu_s") is not None]
    walls = [c["wall_s"] for c in runs.values() if c.get("cpu_s") is None]
    hours = (sum(measured) + sum(walls)) / 3600
    resumed = sum(1 for c in runs.values() if c.get("resumed"))
    line = f"CPU spent on the {len(runs)} finished runs: {'at least ' if resumed else ''}{hours:.1f} CPU-hours"
    if walls:
        line += (f" ({len(measured)} runs by their process's user + system time, {len(walls)} recorded before "
                 "that was kept, counted by their training wall time: one thread on shared cores, so more than its CPU)")
    if resumed:
        line += (f"; {resumed} run{'s' if resumed > 1 else ''} resumed after a stop "
                 f"count{'' if resumed > 1 else 's'} only the part after it")
    return line + ".\n"


# file -> {block name -> its generated text}
DOCS: dict[Path, dict[str, Callable[[], str]]] = {
    README: {name: (lambda rows=rows: render(rows())) for name, rows in TABLES.items()},
    ROOT / FASHION_STUDY: {"claims": claims_table, "cells": cells_table, "cost": lambda: cost_line()},
}


def generated(text: str, blocks: dict[str, Callable[[], str]] | None = None) -> str:
    """``text`` with every generated block (README's tables by default) made anew from the result files."""
    for name, make in (DOCS[README] if blocks is None else blocks).items():
        i, j = block(text, name)
        text = text[:i] + make() + text[j:]
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the generated blocks of README.md and the studies")
    ap.add_argument("--check", action="store_true", help="exit 1 when a generated block differs from the files")
    args = ap.parse_args(argv)
    if not (args.write or args.check):
        for rows in TABLES.values():
            print(render(rows()))
        return 0
    stale = []
    for path, blocks in DOCS.items():
        text = path.read_text()
        try:
            new = generated(text, blocks)
        except ValueError as e:
            print(f"{path.relative_to(ROOT)}: {e}")
            return 2
        if new == text:
            print(f"{path.relative_to(ROOT)}: already up to date")
        elif args.write:
            tmp = path.with_suffix(".md.tmp")
            tmp.write_text(new)
            tmp.replace(path)  # all or nothing: a failed write leaves the file as it was
            print(f"{path.relative_to(ROOT)}: rewritten")
        else:
            stale.append(str(path.relative_to(ROOT)))
    if stale:
        print(f"{', '.join(stale)} differ from benchmarks/results/: run python -m benchmarks.results_table --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
