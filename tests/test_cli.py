"""The command line as a user meets it: real subprocesses for list and errors, experiment.fit for training."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attention_lightning import registry
from attention_lightning.run import commands as experiment

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(ROOT / "cli.py")]
TINY = {"train_size": 16, "val_size": 8, "test_size": 8, "batch_size": 8, "digits": "embedded", "logger": "csv",
        "enable_progress_bar": False, "enable_model_summary": False}


def run_cli(*args, cwd=None):
    env = {**os.environ, "ATTENTION_LIGHTNING_OFFLINE": "1"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300)


def test_list_prints_every_registered_name_with_a_description():
    out = run_cli("list")
    assert out.returncode == 0, out.stderr
    for e in registry.models() + registry.datamodules():
        assert any(line.split()[0] == e.name and e.description in line for line in out.stdout.splitlines())


@pytest.mark.parametrize("args,expected", [
    (["--model=nope"], "unknown model 'nope'. Valid models: "),
    (["--data=mnist_cluttered"], "unknown datamodule"),
    (["--lrr=1"], "unknown flag --lrr; did you mean --lr?"),
    (["--lr=abc"], "--lr='abc' has the wrong type: model expects float"),
    (["--logger=stdout"], "--logger='stdout' is not a logger; use one of"),
    (["--config=configs/none.yaml"], "--config=configs/none.yaml: no such file"),
])
def test_bad_flags_give_one_line_naming_the_valid_choices(args, expected):
    out = run_cli("fit", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.stderr


def test_fit_fast_dev_run_end_to_end_through_the_cli(tmp_path):
    out = run_cli("fit", "--fast_dev_run=1", f"--default_root_dir={tmp_path}", "--train_size=16", "--val_size=8",
                  "--batch_size=8", "--digits=embedded")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "run dir:" in out.stdout and "embedded (5000 digits" in out.stdout
    assert (tmp_path / "dham-cluttered_mnist" / "version_0").is_dir()


def test_fit_then_test_checkpoint(tmp_path):
    summary = experiment.fit({**TINY, "max_epochs": 1, "default_root_dir": str(tmp_path), "limit_train_batches": 2})
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0
    best = Path(summary["best_checkpoint"])
    assert best.is_file() and Path(summary["last_checkpoint"]).is_file()
    assert best.parent == tmp_path / "dham-cluttered_mnist" / "version_0" / "checkpoints"
    out = run_cli("test", f"--ckpt={best}", "--test_size=8")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test/acc:" in out.stdout
    # same checkpoint, same data: the CLI's test accuracy equals the one fit reported
    reported = float(next(l for l in out.stdout.splitlines() if l.startswith("test/acc:")).split()[1])
    assert reported == pytest.approx(summary["test"]["test/acc"], abs=1e-4)
    wrong = run_cli("test", f"--ckpt={best}", "--model=ram")
    assert wrong.returncode == 2 and "was written by model 'dham'" in wrong.stderr


def test_config_preset_is_loaded_and_flags_override_it(tmp_path):
    cfg = tmp_path / "preset.yaml"
    cfg.write_text(yaml.safe_dump({"model": "dham", "data": "cluttered_mnist", "lr": 0.01, "variant": "translated",
                                   "crop_size": 20}))
    p = experiment.plan({"config": str(cfg), "lr": 0.002})
    assert p.model_kwargs["lr"] == 0.002 and p.model_kwargs["crop_size"] == 20
    assert p.data_kwargs["variant"] == "translated"


def test_every_preset_in_configs_is_valid():
    for cfg in sorted((ROOT / "configs").glob("*.yaml")):
        p = experiment.plan({"config": str(cfg)})
        assert p.model_name and p.data_name, cfg
