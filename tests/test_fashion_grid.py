"""The full-size grid: equal budgets per task, the task's data untouched by presets, claims, paired differences."""
import math
import subprocess
import sys

import pytest

from attention_lightning.run import plan as planning
from benchmarks import fashion_grid as grid


def test_every_method_of_a_task_trains_on_the_same_number_of_images_at_full_size():
    seen = {}
    for task, method, seed in grid.cells():
        f = grid.cell_flags(task, method, seed)
        phases = 3 if f["model"] == "pham" else 1
        images = f["train_size"] * f["max_epochs"] * phases
        seen.setdefault(task, set()).add(images)
        assert images == grid.TASKS[task].images >= 500_000 and f["digits"] == "fashion" and f["test_size"] == 10000
        assert f["val_size"] == 6000 and f["seed"] == seed
    assert all(len(v) == 1 for v in seen.values()), seen
    required = {(t, s) for t, m, s in grid.cells() if t in ("cluttered100", "translated60", "rgb32")}
    assert {s for _, s in required} == {0, 1, 2}


def test_the_task_sets_the_data_and_the_preset_only_the_model():
    # the paper's CNN preset is written for cluttered 100x100: on the DHAM canvas it must not bring its clutter
    f = grid.cell_flags("dham120", "cnn", 0)
    assert f["variant"] == "dham" and f["canvas_size"] == 120 and "clutter" not in f and "scale_range" not in f
    assert f["kernel_size"] == 10 and f["stride"] == 5 and f["head"] == "flatten"
    assert grid.cell_flags("dham120_noisy", "dham", 0)["snr"] == 2.0
    assert grid.cell_flags("cluttered100", "ram_random", 1)["location_policy"] == "random"
    assert "location_policy" not in grid.cell_flags("cluttered100", "ram", 1)


@pytest.mark.parametrize("task,method", sorted({(t, m) for t, m, _ in grid.cells()}))
def test_each_cell_is_a_valid_command(task, method):
    flags = grid.cell_flags(task, method, 0)
    p = planning.plan({k: v for k, v in flags.items()})
    assert p.data_kwargs["digits"] == "fashion" and p.trainer_kwargs["max_epochs"] == grid.VALIDATIONS
    assert grid.command_line(flags).startswith("python cli.py fit --model=")


def record(task, method, seed, acc, steps=None):
    return {"task": task, "method": method, "seed": seed, "test_acc": acc, "acc_steps": steps or [acc],
            "macs_per_image": 1e6}


def test_paired_differences_use_only_the_seeds_both_methods_have():
    records = [record("c", "a", 0, 0.80), record("c", "b", 0, 0.70), record("c", "a", 1, 0.90),
               record("c", "b", 1, 0.60), record("c", "a", 2, 0.99)]  # seed 2 has no partner
    mean, se, n = grid.paired(records, "c", "a", "b")
    assert n == 2 and mean == pytest.approx(0.20)
    assert se == pytest.approx(math.sqrt(((0.1 - 0.2) ** 2 + (0.3 - 0.2) ** 2) / 1 / 2))
    steps = [record("r", "pham_eig", 0, 0, [0.2, 0.5, 0.6]), record("r", "pham_random", 0, 0, [0.2, 0.3, 0.4])]
    assert grid.paired(steps, "r", "pham_eig", "pham_random", step=1)[0] == pytest.approx(0.2)
    assert grid.paired(steps, "r", "pham_eig", "pham_random", step=5)[2] == 0


def test_pham_gives_two_result_rows_from_one_model():
    flags = grid.cell_flags("rgb32", "pham", 0)
    test = {**{f"test/acc_eig_t{t}": 0.1 * t for t in range(1, 8)},
            **{f"test/acc_random_t{t}": 0.05 * t for t in range(1, 8)}, "test/acc": 0.7}
    result = {"test": test, "train_images": 500_000, "macs_per_image": 1.0, "wall_s": 1.0, "train_images_per_s": 1.0,
              "test_images_per_s": 1.0, "peak_mem_mb": 1.0, "checkpoint": "x", "pixels_seen": [0.0625] * 7}
    eig, rnd = grid.records_of("rgb32", "pham", 0, flags, result)
    assert (eig["method"], rnd["method"]) == ("pham_eig", "pham_random")
    assert eig["test_acc"] == pytest.approx(0.7) and rnd["test_acc"] == pytest.approx(0.35)
    assert eig["images_seen"] == rnd["images_seen"] >= 500_000
    for key in ("task", "method", "seed", "digits", "test_acc", "images_seen", "command"):
        assert key in eig


def test_a_cell_is_claimed_by_one_live_process_and_freed_when_it_dies(tmp_path):
    assert grid.claim("x", tmp_path) and not grid.claim("x", tmp_path)
    grid.release("x", tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "claims" / "y").write_text(str(dead.pid))  # a worker that was killed
    assert grid.claim("y", tmp_path)
