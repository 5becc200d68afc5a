"""The run machinery under an adversarial user: each case ends as it should (the run continues exactly) or in
one line naming the problem and the fix, with nothing in the run folders written or removed before that line.

Most cases share one finished two-epoch run (``base``), copied per test; fits are tiny and in-process."""
import errno
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

from attention_lightning.run import commands as experiment
from attention_lightning.run import checkpoints, folders, resume
from attention_lightning.run.commands import Interrupted, UserError
from tiny import tiny_flags

ROOT = Path(__file__).resolve().parents[1]
NAME = "ram-cluttered_mnist"


def load_cli():
    spec = importlib.util.spec_from_file_location("cli_under_test", ROOT / "cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flags_at(root: Path, **extra):
    return tiny_flags("ram", **{"max_epochs": 2, "limit_test_batches": 0, "log_every_n_steps": 1,
                                "default_root_dir": str(root), **extra})


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, and every folder (as b'')."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"") for p in sorted(root.rglob("*"))}


def epoch_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv
    with open(run_dir / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("train/acc_epoch") or r.get("val/acc")]


class CopyAfterFirstEpoch(Callback):
    """Keeps the state at the end of epoch 0 as ``checkpoints/epoch0.ckpt`` (a checkpoint behind last.ckpt)."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            d = Path(trainer.default_root_dir) / "checkpoints"
            shutil.copy(d / "last.ckpt", d / "epoch0.ckpt")


class SendSignal(Callback):
    """Sends ``signum`` to this process at a hook (``batch`` of ``epoch`` for train batches), once."""

    def __init__(self, signum, hook, epoch=0, batch=0):
        self.signum, self.hook, self.epoch, self.batch, self.sent = signum, hook, epoch, batch, False

    def _maybe(self, hook, trainer, batch_idx=0):
        if not self.sent and hook == self.hook and trainer.current_epoch == self.epoch and batch_idx == self.batch \
                and not trainer.sanity_checking:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def setup(self, trainer, pl_module, stage):
        self._maybe("setup", trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._maybe("train_batch", trainer, batch_idx)

    def on_validation_start(self, trainer, pl_module):
        self._maybe("validation", trainer)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.hook == "test_batch" and not self.sent and batch_idx == self.batch:  # any epoch: test comes after
            self.sent = True
            os.kill(os.getpid(), self.signum)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished two-epoch run (8 steps, a row per step) with ``epoch0.ckpt`` at step 4."""
    root = tmp_path_factory.mktemp("base")
    summary = experiment.fit(flags_at(root), extra_callbacks=[CopyAfterFirstEpoch()])
    return root, Path(summary["run_dir"])


@pytest.fixture
def run(base, tmp_path):
    """A copy of ``base``: (root, run folder)."""
    root, run_dir = base
    shutil.copytree(root, tmp_path / "root")
    return tmp_path / "root", tmp_path / "root" / run_dir.relative_to(root)


# 1. resume on another number of processes


def test_resume_on_another_number_of_processes_is_refused_before_anything_is_touched(run):
    root, run_dir = run
    before = snapshot(root)
    with pytest.raises(UserError, match=r"trained with 1 process\(es\), this run would use 2 process\(es\).*resume "
                                        r"with the checkpoint's --devices"):
        experiment.fit(flags_at(root, max_epochs=3, resume=str(run_dir / "checkpoints" / "epoch0.ckpt"),
                                strategy="ddp_spawn", accelerator="cpu", devices=2))
    assert snapshot(root) == before


# 2. a word without dashes


def test_words_without_dashes_stop_before_any_work(tmp_path, monkeypatch, capsys):
    cli = load_cli()
    monkeypatch.setattr(sys, "argv", ["cli.py", "fit", "--model=ram", f"--default_root_dir={tmp_path}", "lr=0.5"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1
    assert err[0] == "error: `lr=0.5` is not a flag of `fit`: write flags as --name=value; did you mean --lr=0.5?"
    assert not list(tmp_path.iterdir())
    assert cli.unconsumed(["fit", "--lr", "0.5", "--compile", "--x=1", "-y=2"]) is None  # fire's other forms
    assert cli.unconsumed(["fit", "--lr", "0.5", "extra"]) == "extra"


# 3. run names are names


@pytest.mark.parametrize("name", ["../../escape", "/tmp/absolute", "a/b", "..", ".", "x" * 256])
def test_run_names_are_names_not_paths(name):
    with pytest.raises(UserError, match=r"is not a folder name .*pass --default_root_dir=DIR"):
        experiment.plan({"run_name": name})


# 4. a corrupt newest state never sends --resume=last to another run


def test_corrupt_newest_state_stops_resume_last_naming_the_valid_one(run):
    root, run_dir = run
    newer = run_dir.parent / "version_1"
    shutil.copytree(run_dir, newer)
    (newer / "checkpoints" / "last.ckpt").write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    before = snapshot(root)
    with pytest.raises(UserError) as info:
        experiment.fit(flags_at(root, max_epochs=3, resume="last"))
    line = str(info.value)
    assert f"{newer / 'checkpoints' / 'last.ckpt'} is not a readable checkpoint (truncated or corrupt)" in line
    assert f"--resume={run_dir / 'checkpoints' / 'last.ckpt'}" in line and "\n" not in line
    assert snapshot(root) == before
    shutil.rmtree(newer / "checkpoints")
    with pytest.raises(UserError, match=r"version_1 holds no saved state .* pass --resume=.*version_0"):
        resume.find_resume(str(root), NAME, "last")


# 5. a resume that fails keeps every metrics row


def test_failed_resume_keeps_every_metrics_row(run):
    root, run_dir = run
    before = snapshot(root)
    with pytest.raises(UserError, match="invalid Trainer flags"):
        experiment.fit(flags_at(root, resume=str(run_dir / "checkpoints" / "epoch0.ckpt"), accelerator="gpu"))
    assert snapshot(root) == before


# 6. epoch means after a mid-epoch resume count the batches before it; 8. Ctrl-C in the last validation


def test_mid_epoch_resume_gives_the_epoch_means_of_an_uninterrupted_run(base, tmp_path):
    root = tmp_path / "root"
    with pytest.raises(Interrupted, match=r"stopped by Ctrl-C in epoch 0 at step 2: saved"):
        experiment.fit(flags_at(root), extra_callbacks=[SendSignal(signal.SIGINT, "train_batch", 0, 2)])
    run_dir = root / NAME / "version_0"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    experiment.fit(flags_at(root, resume="last"))
    expected, got = epoch_rows(base[1]), epoch_rows(run_dir)
    assert len(got) == len(expected) == 4
    for a, b in zip(expected, got):
        for key in ("train/acc_epoch", "train/loss_epoch", "val/acc", "val/loss"):
            assert (a[key] == b[key] == "") or float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), key


def test_ctrl_c_in_the_last_validation_stops_before_test(tmp_path):
    flags = tiny_flags("ram", max_epochs=1, default_root_dir=str(tmp_path))
    with pytest.raises(Interrupted, match=r"stopped by Ctrl-C in epoch 1 at step 4: saved .*last.ckpt; continue "
                                          r"with: python cli.py fit .*--resume="):
        experiment.fit(flags, extra_callbacks=[SendSignal(signal.SIGINT, "validation", 0)])
    last = tmp_path / NAME / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4


# 7. SIGUSR1 during start-up and during the test after training (which stops, requeues; the requeued run only tests)


def slurm_env(monkeypatch, tmp_path, scontrol: bool = True) -> Path:
    """SLURM's variables for a one-task job 4242; with ``scontrol``, a fake one on PATH that logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.log"
    if scontrol:
        (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
        (bin_dir / "scontrol").chmod(0o755)
    for k, v in dict(SLURM_JOB_ID="4242", SLURM_JOB_NAME="job", SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1",
                     SLURM_NNODES="1", SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_CPUS_PER_TASK="1",
                     PATH=f"{bin_dir}:{os.environ['PATH']}" if scontrol else str(bin_dir)).items():
        monkeypatch.setenv(k, v)
    return calls


def test_sigusr1_during_start_up_saves_requeues_and_says_so(tmp_path, monkeypatch):
    calls = slurm_env(monkeypatch, tmp_path)
    got = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))  # without the fix: not a killed pytest
    try:
        with pytest.raises(Interrupted, match=r"stopped by SLURM pre-emption \(SIGUSR1\) in epoch 0 at step 0: "
                                              r"saved .*; requeued SLURM job 4242"):
            experiment.fit(tiny_flags("ram", max_epochs=1, default_root_dir=str(tmp_path / "runs"), accelerator="cpu",
                                      devices=1, num_nodes=1),
                           extra_callbacks=[SendSignal(signal.SIGUSR1, "setup")])
        assert signal.getsignal(signal.SIGUSR1) is not None and not got
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert calls.read_text().split() == ["requeue", "4242"]
    last = tmp_path / "runs" / NAME / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 0


def test_sigusr1_during_final_test_requeues_and_the_requeued_run_only_tests(tmp_path, monkeypatch):
    calls = slurm_env(monkeypatch, tmp_path)
    flags = tiny_flags("ram", max_epochs=1, default_root_dir=str(tmp_path / "runs"), accelerator="cpu", devices=1,
                       num_nodes=1, batch_size=4)  # 4 test batches: the signal comes before the first
    previous = signal.signal(signal.SIGUSR1, lambda s, f: None)
    try:
        with pytest.raises(Interrupted, match=r"stopped by SLURM pre-emption \(SIGUSR1\) during test: training "
                                              r"finished and saved .*best-epoch0-step8\.ckpt; requeued SLURM job "
                                              r"4242 \(it continues with --resume=last\)"):
            experiment.fit(flags, extra_callbacks=[SendSignal(signal.SIGUSR1, "test_batch")])
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert calls.read_text().split() == ["requeue", "4242"]
    run = tmp_path / "runs" / NAME / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    requeued = experiment.fit({**flags, "resume": "last"})  # what the requeued job runs
    assert requeued["global_step"] == 8 and "test/acc" in requeued["test"]  # nothing more trained; tested
    assert Path(requeued["run_dir"]) == run


def test_sigusr1_during_final_test_without_scontrol_says_how_to_test(tmp_path, monkeypatch):
    slurm_env(monkeypatch, tmp_path, scontrol=False)
    previous = signal.signal(signal.SIGUSR1, lambda s, f: None)
    try:
        with pytest.raises(Interrupted, match=r"during test: training finished and saved .*\.ckpt; not requeued: "
                                              r"scontrol failed .*; test it with: python cli.py test --ckpt=.*\.ckpt$"):
            experiment.fit(tiny_flags("ram", max_epochs=1, default_root_dir=str(tmp_path / "runs"),
                                      accelerator="cpu", devices=1, num_nodes=1, batch_size=4),
                           extra_callbacks=[SendSignal(signal.SIGUSR1, "test_batch")])
    finally:
        signal.signal(signal.SIGUSR1, previous)


# 9. empty and impossible values


@pytest.mark.parametrize("flags,expected", [
    ({"resume": ""}, r"--resume='' is empty"),
    ({"default_root_dir": ""}, r"--default_root_dir='' is empty"),
    ({"run_name": " "}, r"--run_name=' ' is empty"),
    ({"resume": True}, r"--resume=True needs a value: --resume=last or --resume=PATH"),
])
def test_empty_values_are_refused(flags, expected):
    with pytest.raises(UserError, match=expected):
        experiment.plan({"model": "ram", **flags})


@pytest.mark.parametrize("flags,expected", [
    ({"canvas_size": 0}, r"--canvas_size=0 must be a side of at least 1 pixel; leave it out for the translated "
                         r"variant's 60"),
    ({"canvas_size": -5}, r"--canvas_size=-5 must be a side of at least 1 pixel"),
    ({"model": "cnn", "canvas_size": 10}, r"28px, larger than the 10px canvas; use a --canvas_size >= 28"),
])
def test_impossible_canvas_sizes_are_one_line_before_setup(flags, expected):
    p = experiment.plan({**tiny_flags(flags.get("model", "ram")), **flags})
    with pytest.raises(UserError, match=expected):
        experiment.build_datamodule(p)


# 10. a failed start leaves no folder


def test_failed_starts_leave_no_folder(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    with pytest.raises(UserError, match=r"--digits=mnist but MNIST is not under"):
        experiment.fit(tiny_flags("ram", digits="mnist", data_dir=str(tmp_path / "none"), max_epochs=1,
                                  default_root_dir=str(root)))
    assert not root.exists() or not list(root.rglob("version_*"))
    with pytest.raises(UserError, match=r"invalid Trainer flags"):
        experiment.fit(tiny_flags("ram", accelerator="tpu", default_root_dir=str(root)))
    assert not root.exists() or not list(root.rglob("version_*"))
    for k in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(UserError, match=r"--logger=wandb: no W&B credentials"):
        experiment.fit(tiny_flags("ram", logger="wandb", default_root_dir=str(root)))
    assert not root.exists() or not list(root.rglob("version_*"))


def test_disk_full_before_start_leaves_no_folder_and_no_empty_hparams(tmp_path, monkeypatch):
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    def full(self, params):
        open(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), "w").close()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ExperimentWriter, "log_hparams", full)
    with pytest.raises(UserError, match=r"the disk is full; .*then start the run again \(it saved no last.ckpt"):
        experiment.fit(tiny_flags("ram", max_epochs=1, default_root_dir=str(tmp_path)))
    assert not list(tmp_path.rglob("version_*")) and not list(tmp_path.rglob("hparams.yaml"))


# tracebacks that are now one line


def test_zero_byte_checkpoint_is_one_line_everywhere(tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    for command, flags in ((experiment.test, {"ckpt": str(empty)}),
                           (experiment.visualize, {"ckpt": str(empty), "out": str(tmp_path / "a.png")}),
                           (experiment.fit, tiny_flags("ram", resume=str(empty), default_root_dir=str(tmp_path)))):
        with pytest.raises(UserError, match=r"cannot read checkpoint .*empty.ckpt: .*the file is empty.*pass another"):
            command(flags)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.ckpt"]


def test_another_models_weights_to_resume_are_one_line_and_write_nothing(run, tmp_path):
    root, run_dir = run
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["state_dict"] = {f"other.{k}": v for k, v in ckpt["state_dict"].items()}
    for where in (run_dir / "checkpoints" / "other.ckpt", tmp_path / "outside.ckpt"):
        torch.save(ckpt, where)
        before = snapshot(root)
        with pytest.raises(UserError, match=r"--resume: cannot load checkpoint .* into model 'ram': .*missing keys"):
            experiment.fit(flags_at(root, max_epochs=3, resume=str(where)))
        assert snapshot(root) == before


def test_write_protected_checkpoints_folder_is_one_line(tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    def denied(self, path, mode="rb", *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(LocalFileSystem, "_open", denied)  # what a write-protected folder does to Lightning's save
    with pytest.raises(PermissionError):
        checkpoints.AtomicCheckpointIO().save_checkpoint({"a": 1}, tmp_path / "x.ckpt")
    with pytest.raises(UserError, match=r"cannot write to .*version_0: permission denied; .*start the run again"):
        experiment.fit(tiny_flags("ram", max_epochs=1, default_root_dir=str(tmp_path)))
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.ckpt"))


@pytest.fixture
def read_only(tmp_path):
    """A tmpfs to remount read-only (needs root to mount)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_only_folders_are_named_for_what_was_asked(run, read_only):
    root, run_dir = run
    shutil.copytree(root, read_only / "root")
    subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
    ro_run = read_only / "root" / run_dir.relative_to(root)
    with pytest.raises(UserError, match=r"--resume: cannot write to the run folder .*version_0 \(read-only"):
        experiment.fit(flags_at(read_only / "root", max_epochs=3, resume="last"))
    with pytest.raises(UserError, match=r"--out=.*a.png: cannot write into .*ro \(read-only"):
        experiment.visualize({"ckpt": str(ro_run / "checkpoints" / "last.ckpt"), "out": str(read_only / "a.png")})


def test_disk_full_hint_names_what_can_be_continued(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for has_last, expected in ((False, "then start the run again"), (True, "then continue it with --resume=")):
        if has_last:
            torch.save({"global_step": 3}, tmp_path / "checkpoints" / "last.ckpt")
        with pytest.raises(UserError, match=expected), folders.run_faults(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_hparams_of_a_resumed_run_stay_as_written(run):
    root, run_dir = run
    hparams = (run_dir / "hparams.yaml").read_bytes()
    experiment.fit(flags_at(root, max_epochs=3, resume=str(run_dir / "checkpoints" / "epoch0.ckpt")))
    assert (run_dir / "hparams.yaml").read_bytes() == hparams
    steps = [int(r["step"]) for r in epoch_rows(run_dir) if r.get("train/acc_epoch")]
    assert steps == [3, 7, 11], "epoch 1's rows were logged again from the step-4 checkpoint, once"


def test_a_second_process_training_in_one_run_folder_is_refused(run):
    root, run_dir = run
    before = snapshot(root)
    with folders.run_lock(run_dir), pytest.raises(UserError, match=r"version_0 is in use by another process training"):
        experiment.fit(flags_at(root, max_epochs=3, resume="last"))  # the lock stands for a run still training
    assert snapshot(root) == before
