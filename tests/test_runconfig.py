"""``config.yaml`` in every run folder: the run's resolved flags as a preset that reruns it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attention_lightning.run import commands as experiment
from attention_lightning.run.runconfig import CONFIG_FILE, read_header
from tests.tiny import tiny_flags

ROOT = Path(__file__).resolve().parents[1]


def values(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.slow
def test_a_run_reruns_from_its_config_with_the_same_metrics(tmp_path):
    """A run resumed once (1 epoch, then on to 2) and the rerun of its config.yaml through the CLI, from scratch in
    another root, log the same metrics.csv on the CPU."""
    first = experiment.fit(tiny_flags("dham", max_epochs=1, default_root_dir=str(tmp_path / "a")))
    run_dir = Path(first["run_dir"])
    config = run_dir / CONFIG_FILE
    assert values(config)["max_epochs"] == 1
    experiment.fit(tiny_flags("dham", max_epochs=2, default_root_dir=str(tmp_path / "a"), resume="last"))
    saved = values(config)
    assert saved["max_epochs"] == 2  # a resumed run records the flags it continued with
    assert {"model": "dham", "data": "cluttered_mnist", "seed": 0, "precision": "32-true", "devices": 1,
            "accelerator": "cpu", "digits": "embedded", "canvas_size": 40, "head_channels": [4],
            "crop_size": 28}.items() <= saved.items()  # given flags, defaults and resolved values
    assert not {"resume", "default_root_dir", "config", "data_facts", "num_classes"} & set(saved)
    assert "--resume=last" in read_header(config)["command"] and read_header(config)["preset"] == "none"
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "fit", f"--config={config}",
                           f"--default_root_dir={tmp_path / 'b'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rerun = tmp_path / "b" / "dham-cluttered_mnist" / "version_0"
    assert (rerun / "metrics.csv").read_text() == (run_dir / "metrics.csv").read_text()
    assert values(rerun / CONFIG_FILE) == saved
    assert read_header(rerun / CONFIG_FILE)["preset"] == str(config)
    assert not (tmp_path / "a" / "dham-cluttered_mnist" / "version_1").exists()  # the old root is left alone


def test_hparams_yaml_is_not_a_preset_but_config_yaml_is(tmp_path):
    """The plan of a config.yaml written for tiny flags routes every key (hparams.yaml holds data_facts, no flag)."""
    from attention_lightning.run.runconfig import render, run_config

    p = experiment.plan({**tiny_flags("cnn"), "logger": "none", "config": None})
    dm = experiment.build_datamodule(p)
    model = experiment.build_model(p, dm)
    path = tmp_path / CONFIG_FILE
    path.write_text(render(run_config(p, model, dm), "python cli.py fit", None))
    again = experiment.plan({"config": str(path)})
    assert (again.model_name, again.data_name) == (p.model_name, p.data_name)
    assert again.model_kwargs["conv_channels"] == [4, 8] and again.data_kwargs["canvas_size"] == 40
    assert again.trainer_kwargs["num_sanity_val_steps"] == 0 and again.cli["seed"] == 0
    assert "in_channels" not in again.model_kwargs  # facts are left to the data
