"""Training-step logging through ``TrainLog`` shows what Lightning's ``self.log`` showed: same metrics.csv
columns, same step and epoch values, same progress-bar keys."""
import csv
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl

from attention_lightning.run import commands as experiment
from attention_lightning.models.base import AttentionModel

from tiny import TINY_FLAGS, tiny_flags


def read_metrics(run_dir: str):
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def fit_rows(tmp_path: Path, name: str, model: str, **extra):
    # 4 steps per epoch, 2 epochs, the logger writing every 3rd step: the writes fall at different batches of
    # the two epochs; pictures off (they do not touch metrics.csv)
    flags = tiny_flags(model, default_root_dir=str(tmp_path / name), max_epochs=2, log_every_n_steps=3,
                       limit_test_batches=0, **extra)
    if model == "han":
        flags.update(train_size=32, val_size=16, test_size=16)
    summary = experiment.fit(flags)
    return read_metrics(summary["run_dir"])


def by_step(rows):
    """{(epoch, step): {column: value}} of the non-empty cells."""
    out = {}
    for row in rows:
        cells = {k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")}
        out.setdefault((row["epoch"], row["step"]), {}).update(cells)
    return out


@pytest.mark.parametrize("model", sorted(TINY_FLAGS))
def test_metrics_csv_has_lightnings_keys_and_values(tmp_path, monkeypatch, model):
    ours = fit_rows(tmp_path, "ours", model)
    with monkeypatch.context() as m:  # the reference: every call through Lightning's own self.log
        m.setattr(AttentionModel, "log", pl.LightningModule.log)
        ref = fit_rows(tmp_path, "ref", model)
    assert set(ours[0]) == set(ref[0])
    assert {"train/loss_step", "train/loss_epoch", "train/acc_step", "train/acc_epoch"} <= set(ours[0])
    got, want = by_step(ours), by_step(ref)
    assert got.keys() == want.keys()
    for at, cells in want.items():
        assert got[at].keys() == cells.keys(), at
        for k, v in cells.items():
            assert math.isclose(got[at][k], v, rel_tol=1e-5, abs_tol=1e-6), (at, k, got[at][k], v)


def test_step_values_written_only_when_the_logger_writes(tmp_path):
    rows = fit_rows(tmp_path, "ours", "ram")
    steps = sorted(int(r["step"]) for r in rows if r.get("train/loss_step"))
    # 8 optimizer steps (4 per epoch); Lightning's logger writes step values after its 3rd and 6th (steps 2 and 5)
    assert steps == [2, 5]
    epochs = [r for r in rows if r.get("train/loss_epoch")]
    assert [int(r["epoch"]) for r in epochs] == [0, 1]
    # every training term of RAM has its epoch curve, including the one the model logs itself
    for key in ("train/ce_epoch", "train/baseline_epoch", "train/reinforce_epoch", "train/reward_epoch"):
        assert all(r.get(key) for r in epochs), key


class Grab(pl.Callback):
    """The progress bar's and the callbacks' metrics when training ends."""

    def __init__(self) -> None:
        self.pbar, self.callback = {}, {}

    def on_train_end(self, trainer, pl_module):
        self.pbar = {k: float(v) for k, v in trainer.progress_bar_metrics.items()}
        self.callback = {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_progress_bar_and_callback_metrics_keep_their_keys_and_values(monkeypatch):
    flags = tiny_flags("ram", logger="none", max_epochs=1, log_every_n_steps=3, limit_test_batches=0)
    ours = Grab()
    experiment.fit(flags, extra_callbacks=[ours])
    with monkeypatch.context() as m:
        m.setattr(AttentionModel, "log", pl.LightningModule.log)
        ref = Grab()
        experiment.fit(flags, extra_callbacks=[ref])
    assert {"train/loss_step", "train/acc_step", "train/loss_epoch", "train/acc_epoch", "val/loss",
            "val/acc"} <= set(ours.pbar)
    assert ours.pbar.keys() == ref.pbar.keys()
    # callbacks see the plain names too (e.g. a monitor on train/loss), holding the epoch values at the end
    assert {"train/loss", "train/reward", "train/acc"} <= set(ours.callback)
    assert ours.callback.keys() == ref.callback.keys()
    # step values refresh when the logger writes (every log_every_n_steps), not every step: compare the rest
    for k, v in ref.callback.items():
        if k.endswith("_step"):
            continue
        assert math.isclose(ours.callback[k], v, rel_tol=1e-5, abs_tol=1e-6), (k, ours.callback[k], v)


def test_a_default_run_written_to_a_file_is_quiet_and_prints_a_line_per_epoch(tmp_path):
    """Issue 13.4, as a user sees it with ``python cli.py fit > log``: no product tip, no deprecation line from
    Lightning's own code, no messages about our own callbacks, no carriage-return redraws or cursor escapes;
    one progress line per train epoch and per validation, showing the version number."""
    import os
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "ATTENTION_LIGHTNING_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(root / "cli.py"), "fit", "--max_epochs=2", "--train_size=32",
                          "--val_size=16", "--test_size=16", "--batch_size=16", "--viz_images=0",
                          f"--default_root_dir={tmp_path}"], cwd=root, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    both = out.stdout + out.stderr
    for noise in ("Tip:", "litlogger", "litmodels", "LeafSpec", "is deprecated", "will override existing callbacks",
                  "multiple `ModelCheckpoint`", "You have overridden", "\r", "\x1b["):
        assert noise not in both, f"{noise!r} in the run's output"
    progress = [line for line in out.stdout.splitlines() if line.startswith(("train epoch", "val   epoch"))]
    assert [line.split(":")[0] for line in progress] == [
        "val   epoch 0 step 2", "train epoch 0 step 2", "val   epoch 1 step 4", "train epoch 1 step 4"]
    assert all(" v_num=0 " in f"{line} " for line in progress)
