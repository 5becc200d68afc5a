"""Run integrity (issue 16): last.ckpt is the newest state, killed runs resume at the exact batch, one
metrics row per step, one folder per run, resumes that would change the experiment are refused, and every
fault ends in one line, exit status 2, with nothing half-written."""
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning import Callback

from attention_lightning.run import commands as experiment
from attention_lightning.run.plan import UserError
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
    errors = [line for line in lines if line.startswith("error: ")]
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in out.stderr, out.stderr[-3000:]
    return errors[0]


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


# 4. a run folder is claimed atomically


@pytest.mark.slow
def test_two_runs_started_at_once_with_one_name_get_their_own_folders(tmp_path):
    flags = tiny_flags("dham", max_epochs=1, limit_test_batches=0, run_name="same", default_root_dir=str(tmp_path))
    procs = [subprocess.Popen([*CLI, "fit", *cli_args(flags)], cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    runs = sorted(d.name for d in (tmp_path / "same").iterdir())
    assert runs == ["version_0", "version_1"]
    for run in runs:  # each folder holds one whole run: its hparams, one epoch of rows, its own checkpoints
        d = tmp_path / "same" / run
        assert yaml.safe_load((d / "hparams.yaml").read_text())["crop_size"] == 28
        assert [int(r["epoch"]) for r in rows(d) if r.get("val/acc")] == [0]
        assert step_of(d / "checkpoints" / "last.ckpt") == 32 // 8


# 5. a resume that would change the experiment is refused; hparams.yaml is never rewritten


def test_resume_with_other_model_flags_is_refused_and_hparams_yaml_kept(tmp_path):
    flags = tiny_flags("dham", max_epochs=1, limit_test_batches=0, default_root_dir=str(tmp_path))
    run_dir = Path(experiment.fit(flags)["run_dir"])
    hparams = (run_dir / "hparams.yaml").read_bytes()
    with pytest.raises(UserError, match=r"--crop_size was 28, now 14.*start a new run without --resume") as info:
        experiment.fit({**flags, "crop_size": 14, "resume": "last"})
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"--seed was 0, now 3"):
        experiment.fit({**flags, "seed": 3, "resume": "last"})
    summary = experiment.fit({**flags, "max_epochs": 2, "resume": "last"})  # how long it trains may change
    assert summary["run_dir"] == str(run_dir) and summary["global_step"] == 2 * 32 // 8
    assert (run_dir / "hparams.yaml").read_bytes() == hparams


# 6. each command accepts only its own flags


@pytest.mark.parametrize("args,expected", [
    (["fit", "--ckpt=/missing.ckpt"], "--ckpt is a flag of `test`/`visualize`/`export`, not of `fit`; to continue a "
                                      "run use --resume=last"),
    (["fit", "--out=a.png"], "--out is a flag of `visualize`/`export`, not of `fit`"),
    (["fit", "--model=ram", "--", "--help"], "`--` is not a flag of `fit`"),
])
def test_each_command_accepts_only_its_own_flags(args, expected, tmp_path):
    out = subprocess.run([*CLI, *args, f"--default_root_dir={tmp_path}"], cwd=ROOT, env=env(), capture_output=True,
                         text=True, timeout=300)
    assert expected in one_error_line(out)
    assert not (tmp_path / "dham-cluttered_mnist").exists() and not (tmp_path / "ram-cluttered_mnist").exists()


def test_test_refuses_fit_flags(tmp_path):
    with pytest.raises(UserError, match=r"--resume is a flag of `fit`, not of `test`; test takes --ckpt"):
        experiment.plan({"resume": "last"}, command="test")
    with pytest.raises(UserError, match=r"--viz_images is a flag of `fit`, not of `visualize`"):
        experiment.plan({"viz_images": 2}, command="visualize")


# 7. every fault: one line on stderr, exit status 2, nothing half-written


@pytest.mark.parametrize("flag,expected", [
    ("--devices=0", "invalid Trainer flags"),
    ("--accelerator=mps", "invalid Trainer flags"),
])
def test_unusable_devices_are_one_line(flag, expected, tmp_path):
    out = subprocess.run([*CLI, "fit", *cli_args(tiny_flags("dham", max_epochs=1)), flag,
                          f"--default_root_dir={tmp_path}"], cwd=ROOT, env=env(), capture_output=True, text=True,
                         timeout=300)
    assert expected in one_error_line(out)
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("*.tmp"))


def test_wandb_without_credentials_fails_fast_without_a_prompt(tmp_path):
    out = subprocess.run([*CLI, "fit", *cli_args(tiny_flags("dham", max_epochs=1, logger="wandb")),
                          f"--default_root_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL,
                         env=env(WANDB_MODE=None, WANDB_API_KEY=None, WANDB_SILENT=None, HOME=str(tmp_path),
                                 NETRC=str(tmp_path / "none")))
    line = one_error_line(out)
    assert "wandb login" in line and "WANDB_MODE=offline" in line


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (real ENOSPC); needs root to mount."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_disk_full_is_one_line_and_leaves_no_tmp(small_disk):
    big = tiny_flags("dham", max_epochs=2, head_channels=[64], classifier_channels=[64, 64], classifier_hidden=256)
    out = subprocess.run([*CLI, "fit", *cli_args(big), f"--default_root_dir={small_disk}"], cwd=ROOT, env=env(),
                         capture_output=True, text=True, timeout=600)
    line = one_error_line(out)
    assert "the disk is full" in line and "--default_root_dir" in line
    assert not list(small_disk.rglob("*.tmp"))


def test_read_only_folder_is_one_line(small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    out = subprocess.run([*CLI, "fit", *cli_args(tiny_flags("dham", max_epochs=1)),
                          f"--default_root_dir={small_disk}"], cwd=ROOT, env=env(), capture_output=True, text=True,
                         timeout=300)
    assert "read-only" in one_error_line(out)


@pytest.mark.slow
def test_ctrl_c_saves_prints_the_resume_command_and_the_command_continues(tmp_path):
    flags = tiny_flags("dham", max_epochs=2, train_size=480, limit_test_batches=0, log_every_n_steps=1,
                       checkpoint_every_n_steps=5, default_root_dir=str(tmp_path))
    last = tmp_path / RUN / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([*CLI, "fit", *cli_args(flags)], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert wait_for(last.exists, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    line = one_error_line(out)
    assert "stopped by Ctrl-C" in line and f"--resume={last}" in line
    saved = step_of(last)
    assert 0 < saved < 2 * 480 // 8 and not list(tmp_path.rglob("*.tmp"))
    command = line.split("continue with: ", 1)[1]
    assert command.startswith("python cli.py fit ")
    resumed = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=ROOT, env=env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [s for s, _ in train_rows(tmp_path / RUN)]
    assert steps == list(range(2 * 480 // 8)), "continued where it stopped, one row per step"


# 8. the resolved digit source is recorded


def test_hparams_record_the_digit_source_used_not_auto(tmp_path):
    summary = experiment.fit(tiny_flags("dham", digits="auto", max_epochs=1, limit_train_batches=1,
                                        limit_test_batches=0, default_root_dir=str(tmp_path)))
    recorded = yaml.safe_load((Path(summary["run_dir"]) / "hparams.yaml").read_text())
    assert recorded["digits"] == summary["digits"].split()[0] in ("mnist", "embedded")


# 10. SLURM pre-emption: SIGUSR1 mid-epoch, requeue, resume with the sbatch script's flags


@pytest.mark.slow
def test_slurm_preemption_loses_no_finished_step(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.log"
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    (bin_dir / "scontrol").chmod(0o755)
    slurm = dict(SLURM_JOB_ID="4242", SLURM_JOB_NAME="attention-lightning", SLURM_NTASKS="1",
                 SLURM_NTASKS_PER_NODE="1", SLURM_NNODES="1", SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0",
                 SLURM_CPUS_PER_TASK="1", PATH=f"{bin_dir}:{os.environ['PATH']}")
    # three epochs of 60 steps; a periodic save at step 65 tells the test that the run is mid-epoch 1 (no sleep:
    # on a fast machine a fixed wait outlasted the whole run), with more than 50 steps left for the signal
    flags = tiny_flags("dham", max_epochs=3, train_size=480, limit_test_batches=0, log_every_n_steps=1,
                       checkpoint_every_n_steps=65, default_root_dir=str(tmp_path), accelerator="cpu", devices=1,
                       num_nodes=1)
    cmd = [*CLI, "fit", *cli_args(flags)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(**slurm), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    metrics = tmp_path / RUN / "metrics.csv"
    last = tmp_path / RUN / "checkpoints" / "last.ckpt"
    assert wait_for(lambda: last.exists() and step_of(last) >= 65, proc)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=300)
    assert calls.is_file() and calls.read_text().split() == ["requeue", "4242"], err[-2000:]
    saved = step_of(last)
    before = [s for s, _ in train_rows(tmp_path / RUN)]
    assert 65 <= saved < 3 * 480 // 8, "saved where the signal came, before the end"
    assert before == list(range(saved)), "every step it finished is saved (and logged) with the checkpoint"
    requeued = subprocess.run([*cmd, "--resume=last"], cwd=ROOT, env=env(**slurm, SLURM_RESTART_COUNT="1"),
                              capture_output=True, text=True, timeout=600)
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert [s for s, _ in train_rows(tmp_path / RUN)] == list(range(3 * 480 // 8))
    assert metrics.is_file() and not list(tmp_path.rglob("*.tmp"))
