"""The cross-method leaderboard: its measures on hand-computed cases, and the whole smoke grid end to end."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from attention_lightning.attention import Attention
from benchmarks import leaderboard as lb


def test_pixels_seen_is_the_union_of_full_resolution_boxes():
    # a 4x4 image; step 1 looks at the top-left 2x2 pixels, step 2 at the same place again, step 3 at the right half
    images = torch.zeros(1, 1, 4, 4)
    boxes = torch.tensor([[[-1.0, -1.0, 0.0, 0.0], [-0.5, -0.5, 0.5, 0.5]],    # finest scale first; the second
                          [[-1.0, -1.0, 0.0, 0.0], [-1.0, -1.0, 1.0, 1.0]],    # (coarser) box must not count
                          [[0.0, -1.0, 1.0, 1.0], [-1.0, -1.0, 1.0, 1.0]]])[None]  # (1, T=3, S=2, 4)
    att = Attention(images=images, probs=torch.full((1, 3, 2), 0.5), boxes=boxes)
    assert lb.pixels_seen(att, full_res_only=True) == pytest.approx([4 / 16, 4 / 16, 12 / 16])
    assert lb.pixels_seen(att, full_res_only=False) == [1.0, 1.0, 1.0]


def test_mean_and_standard_error_over_seeds():
    mean, se = lb._mean_se([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7)
    assert se == pytest.approx(0.2 / math.sqrt(3))  # sample std 0.2 over sqrt(n)
    assert math.isnan(lb._mean_se([0.5])[1])


def test_pham_cell_gives_a_row_per_policy():
    record = {"task": "rgb32", "method": "pham", "seed": 0, "macs_per_image": 1.0, "train_images_per_s": 1.0,
              "test_images_per_s": 1.0, "peak_mem_mb": 1.0, "steps": 3, "batch_size": 8, "command": "c",
              "pixels_seen": [0.1, 0.2],
              "test": {"test/acc": 0.5, "test/acc_eig_t1": 0.3, "test/acc_eig_t2": 0.6,
                       "test/acc_random_t1": 0.2, "test/acc_random_t2": 0.4}}
    rows = {r["method"]: r for r in lb.rows_of(record)}
    assert rows["pham_eig"]["acc_steps"] == [0.3, 0.6] and rows["pham_eig"]["acc"] == 0.6
    assert rows["pham_random"]["acc_steps"] == [0.2, 0.4] and rows["pham_random"]["acc"] == 0.4


def test_every_cell_of_a_task_has_the_same_budget(tmp_path):
    budget = lb.BUDGETS["cpu"]
    for task in lb.TASKS.values():
        images = set()
        for method in lb.METHODS.values():
            if task.name not in method.tasks:
                continue
            flags = lb.cell_flags(task, method, 0, budget, "data", tmp_path, {})
            phases = 3 if method.model == "pham" else 1
            images.add(flags["max_steps"] * phases * flags["batch_size"])
        assert len(images) == 1, (task.name, images)


@pytest.mark.slow
def test_smoke_grid_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "lb"
    assert lb.main(["--budget=smoke", "--isolate=false", f"--out={out}"]) == 0
    expected = {(t, m.name) for m in lb.METHODS.values() for t in m.tasks}
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == len(expected) * len(lb.BUDGETS["smoke"].seeds)
    with open(out / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    methods = {(r["task"], r["method"]) for r in rows}
    for task, method in expected:
        if method == "pham":
            assert {(task, "pham_eig"), (task, "pham_random")} <= methods
        else:
            assert (task, method) in methods
    for r in rows:
        assert 0.0 <= float(r["acc"]) <= 1.0
        assert int(r["seeds"]) == 2 and math.isfinite(float(r["acc_se"]))  # error bars from two seeds
        assert 0.0 < float(r["pixels_seen"]) <= 1.0
        assert float(r["macs_per_image"]) > 0 and float(r["train_images_per_s"]) > 0
        assert r["command"].startswith("python cli.py fit --model=")
    glimpse_rows = [r for r in rows if r["method"] in ("ram", "ram_random", "pham_eig")]
    assert glimpse_rows and all(float(r["pixels_seen"]) < 1.0 for r in glimpse_rows)
    for name in ("leaderboard.md", "accuracy_vs_glimpses.png", "accuracy_vs_pixels.png"):
        assert (out / name).stat().st_size > 0
    # a killed grid resumes: finished cells are kept, only the missing one is run again
    runs_before = sorted(p.name for p in (out / "runs").iterdir())
    removed = cells[0]
    first = json.loads(removed.read_text())
    removed.unlink()
    capsys.readouterr()
    assert lb.main(["--budget=smoke", "--isolate=false", f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("done earlier") == len(cells) - 1
    assert removed.is_file() and json.loads(removed.read_text())["command"] == first["command"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == runs_before


@pytest.mark.slow
def test_wandb_logging_gives_a_run_per_cell_and_a_summary_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "lb"
    assert lb.main(["--budget=smoke", "--isolate=false", "--tasks=translated60", "--methods=ram", "--logger=wandb",
                    f"--out={out}"]) == 0
    cell_runs = sorted((out / "runs").glob("*/version_0/wandb/offline-run-*/*.wandb"))
    assert len(cell_runs) == len(lb.BUDGETS["smoke"].seeds)  # one run per cell, none shared
    summary = list(out.glob("wandb/offline-run-*"))  # the summary run lives with the results
    assert len(summary) == 1
    assert list(summary[0].glob("files/media/table/leaderboard/*.table.json"))
    assert len(list(summary[0].glob("files/media/images/leaderboard/*.png"))) == 2
