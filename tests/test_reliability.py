"""Scale and reliability (issue 7): DDP, resume after SIGKILL, reproducibility, non-finite losses, safe loading."""
import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attention_lightning import registry
from attention_lightning.run import commands as experiment
from attention_lightning.run.plan import UserError
from attention_lightning.models.dham import DHAM
from tiny import TINY_FLAGS, RankCounts, RankTestCounts, tiny_flags

ROOT = Path(__file__).resolve().parents[1]
MODELS = [e.name for e in registry.models()]


def cli_args(flags):
    out = []
    for k, v in flags.items():
        out.append(f"--{k}={json.dumps(v) if isinstance(v, (list, tuple)) else v}")
    return out


def metrics_rows(run_dir: Path):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_every_model_has_tiny_flags():
    assert sorted(MODELS) == sorted(m for m in TINY_FLAGS if m in MODELS) and set(MODELS) <= set(TINY_FLAGS)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_ddp_spawn_bf16_logs_the_mean_over_ranks(name, tmp_path):
    flags = tiny_flags(name, strategy="ddp_spawn", accelerator="cpu", devices=2, precision="bf16-mixed",
                       max_epochs=1, limit_train_batches=2, limit_test_batches=0, val_size=16, batch_size=4,
                       default_root_dir=str(tmp_path))
    summary = experiment.fit(flags, extra_callbacks=[RankCounts(str(tmp_path))])
    counts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(c["total"] > 0 for c in counts)
    by_hand = sum(c["correct"] / c["total"] for c in counts) / 2
    logged = [float(r["val/acc"]) for r in metrics_rows(Path(summary["run_dir"])) if r.get("val/acc")]
    assert logged and logged[-1] == pytest.approx(by_hand, abs=1e-6)


@pytest.mark.slow
def test_ddp_test_counts_every_image_once_and_logs_without_warnings(tmp_path, capfd):
    # 3 processes, 10 test images: a padding sampler would score 12 (two twice)
    base = tiny_flags("cnn", accelerator="cpu", max_epochs=1, limit_train_batches=2, val_size=10, test_size=10,
                      batch_size=4, default_root_dir=str(tmp_path))
    one = experiment.fit({**base, "run_name": "one"})
    capfd.readouterr()
    three = experiment.fit({**base, "run_name": "three", "strategy": "ddp_spawn", "devices": 3},
                           extra_callbacks=[RankTestCounts(str(tmp_path))])
    err = capfd.readouterr().err
    shares = [json.loads((tmp_path / f"test{r}.json").read_text()) for r in range(3)]
    assert sorted(i for s in shares for i in s["indices"]) == list(range(10))
    assert sum(s["items"] for s in shares) == 10
    assert three["test"]["test/acc"] == pytest.approx(one["test"]["test/acc"], abs=1e-6)
    assert "sync_dist" not in err, err[-2000:]
    assert err.count("[digits]") <= 1, err[-2000:]


def test_same_seed_twice_gives_identical_validation_metrics(tmp_path):
    runs = []
    for i in range(2):
        flags = tiny_flags("dham", max_epochs=2, limit_test_batches=0, default_root_dir=str(tmp_path / str(i)))
        runs.append(metrics_rows(Path(experiment.fit(flags)["run_dir"])))
    val = [[(r["epoch"], r["val/acc"], r["val/loss"]) for r in rows if r.get("val/acc")] for rows in runs]
    assert len(val[0]) == 2 and val[0] == val[1]
    other = tiny_flags("dham", max_epochs=2, limit_test_batches=0, seed=1, default_root_dir=str(tmp_path / "s1"))
    rows = metrics_rows(Path(experiment.fit(other)["run_dir"]))
    assert [(r["epoch"], r["val/acc"], r["val/loss"]) for r in rows if r.get("val/acc")] != val[0]


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_last(tmp_path):
    flags = tiny_flags("dham", max_epochs=6, train_size=64, limit_test_batches=0, default_root_dir=str(tmp_path))
    cmd = [sys.executable, str(ROOT / "cli.py"), "fit", *cli_args(flags)]
    run_dir = tmp_path / "dham-cluttered_mnist" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read().decode()[-500:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = torch.load(last, map_location="cpu", weights_only=True)  # complete despite the kill
    assert killed["epoch"] < 5
    resumed = subprocess.run([*cmd, "--resume=last"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = torch.load(last, map_location="cpu", weights_only=True)
    steps_per_epoch = 64 // 8
    assert final["global_step"] == 6 * steps_per_epoch
    assert final["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 6
    assert not (tmp_path / "dham-cluttered_mnist" / "version_1").exists(), "resume must reuse the run directory"
    rows = metrics_rows(run_dir)
    assert max(int(r["epoch"]) for r in rows) == 5
    steps = [int(r["step"]) for r in rows]
    assert min(steps) < killed["global_step"] < max(steps), "the log continues across the kill"
    assert not list(run_dir.rglob("*.tmp")), "no half-written checkpoint is left behind"


def test_non_finite_loss_stops_with_the_step_and_term_and_saves_nothing_corrupt(tmp_path, monkeypatch):
    original = DHAM.loss_terms

    def poisoned(self, batch, stage):
        terms, logits = original(self, batch, stage)
        if stage == "train" and self.global_step >= 5:
            terms["ce"] = terms["ce"] * float("nan")
        return terms, logits

    monkeypatch.setattr(DHAM, "loss_terms", poisoned)
    flags = tiny_flags("dham", max_epochs=3, limit_test_batches=0, default_root_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"non-finite train loss at global step 5 .*ce=nan"):
        experiment.fit(flags)
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert ckpts, "the epoch before the failure was checkpointed"
    for c in ckpts:  # every file on disk is a complete checkpoint from before the failure
        state = torch.load(c, map_location="cpu", weights_only=True)
        assert state["global_step"] <= 5
        assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not list(tmp_path.rglob("*.tmp"))


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoints_load_without_running_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.ckpt"
    with open(bad, "wb") as f:
        pickle.dump({"attention_lightning": _Exploit(str(marker))}, f)
    with pytest.raises(UserError, match="cannot read checkpoint"):
        experiment.test({"ckpt": str(bad)})
    assert not marker.exists()


def test_resume_from_another_models_checkpoint_is_refused(tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"attention_lightning": {"model": "someone_else", "data": "cluttered_mnist", "data_kwargs": {}}}, other)
    with pytest.raises(UserError, match="was written by model 'someone_else', not 'dham'"):
        experiment.fit(tiny_flags("dham", resume=str(other), default_root_dir=str(tmp_path)))


def test_resume_with_nothing_to_resume(tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        experiment.fit(tiny_flags("dham", resume="last", default_root_dir=str(tmp_path)))
    with pytest.raises(UserError, match="no such checkpoint file"):
        experiment.fit(tiny_flags("dham", resume=str(tmp_path / "missing.ckpt"), default_root_dir=str(tmp_path)))


def test_bf16_mixed_on_cpu_trains_dham(tmp_path):
    summary = experiment.fit(tiny_flags("dham", precision="bf16-mixed", max_epochs=1, default_root_dir=str(tmp_path)))
    assert 0 <= summary["test"]["test/acc"] <= 1
