"""Run integrity (issue 16): last.ckpt is the newest state, killed runs resume at the exact batch, one
metrics row per step, one folder per run, resumes that would change the experiment are refused, and every
fault ends in one line, exit status 2, with nothing half-written."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning import Callback

from attention_lightning import experiment
from attention_lightning.experiment import UserError
from tiny import tiny_flags

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(ROOT / "cli.py")]
RUN = Path("dham-cluttered_mnist") / "version_0"


def cli_args(flags):
    return [f"--{k}={json.dumps(v) if isinstance(v, (list, tuple)) else v}" for k, v in flags.items()]


def env(**extra):
    out = {**os.environ, "ATTENTION_LIGHTNING_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}
    return {k: v for k, v in out.items() if v is not None}


def rows(run_dir: Path):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def train_rows(run_dir: Path):
    return [(int(r["step"]), float(r["train/loss_step"])) for r in rows(run_dir) if r.get("train/loss_step")]


def val_rows(run_dir: Path):
    return [(int(r["epoch"]), float(r["val/acc"]), float(r["val/loss"])) for r in rows(run_dir) if r.get("val/acc")]


def step_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def wait_for(predicate, proc, timeout=240.0):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def one_error_line(out) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    return lines[0]


# 1. last.ckpt is the state at the end of the latest validation, improved or not


class WorseEveryEpoch(Callback):
    """Makes the monitored val/acc fall every epoch, so only epoch 0 is ever the best."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.callback_metrics["val/acc"] = torch.tensor(1.0 - 0.1 * trainer.current_epoch)


def test_last_ckpt_is_the_final_state_when_the_monitored_metric_gets_worse(tmp_path):
    summary = experiment.fit(tiny_flags("dham", max_epochs=3, limit_test_batches=0, default_root_dir=str(tmp_path)),
                             extra_callbacks=[WorseEveryEpoch()])
    steps_per_epoch = 32 // 8
    assert step_of(Path(summary["last_checkpoint"])) == 3 * steps_per_epoch == summary["global_step"]
    assert step_of(Path(summary["best_checkpoint"])) == steps_per_epoch, "best-*.ckpt still holds the best"


# 2 + 3. periodic mid-epoch saves; SIGKILL, resume at the exact batch, one metrics row per step

KILL_FLAGS = tiny_flags("dham", max_epochs=2, train_size=480, val_size=16, limit_test_batches=0,
                        log_every_n_steps=1, checkpoint_every_n_steps=5)


@pytest.mark.slow
def test_sigkill_after_a_periodic_save_resumes_at_the_exact_batch(tmp_path):
    steps_per_epoch, total = 480 // 8, 2 * 480 // 8
    whole = subprocess.run([*CLI, "fit", *cli_args({**KILL_FLAGS, "default_root_dir": str(tmp_path / "whole")})],
                           cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    root = tmp_path / "killed"
    cmd = [*CLI, "fit", *cli_args({**KILL_FLAGS, "default_root_dir": str(root)})]
    last = root / RUN / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # kill in the second epoch, after at least one mid-epoch save there
    assert wait_for(lambda: last.exists() and step_of(last) > steps_per_epoch, proc), proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = step_of(last)
    assert steps_per_epoch < saved < total and saved % 5 == 0, "a periodic save mid-epoch"
    resumed = subprocess.run([*cmd, "--resume=last"], cwd=ROOT, env=env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert step_of(last) == total

    killed_rows, whole_rows = train_rows(root / RUN), train_rows(tmp_path / "whole" / RUN)
    steps = [s for s, _ in killed_rows]
    assert steps == sorted(set(steps)) == list(range(total)), "exactly one row per logged step"
    # the resumed run drew the same batches with the same random numbers: identical losses and metrics
    assert [l for _, l in killed_rows] == pytest.approx([l for _, l in whole_rows], rel=1e-5, abs=1e-6)
    got, want = val_rows(root / RUN), val_rows(tmp_path / "whole" / RUN)
    assert [e for e, *_ in got] == [e for e, *_ in want] == [0, 1]
    assert [v for _, *vs in got for v in vs] == pytest.approx([v for _, *vs in want for v in vs], rel=1e-5, abs=1e-6)
    a = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "whole" / RUN / "checkpoints" / "last.ckpt", map_location="cpu",
                   weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not list(root.rglob("*.tmp"))
