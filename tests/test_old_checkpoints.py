"""Checkpoints the current model code cannot take (issue 12): `test` and `visualize` fail with one line that
says why and what to pass, and the flags it names make them load."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attention_lightning.run import commands as experiment
from attention_lightning.run.plan import UserError
from tests.tiny import tiny_flags

ROOT = Path(__file__).resolve().parents[1]
LEGACY = {"locator_hidden": 0, "clamp": False, "detach_policy": False}  # RAM before these were flags


@pytest.fixture(scope="module")
def old_ram(tmp_path_factory):
    """A real RAM checkpoint trained as RAM was before the locator flags existed (a linear locator, no clamping,
    no detaching), with those arguments removed from its saved hyperparameters, as such a checkpoint has them."""
    root = tmp_path_factory.mktemp("old_ram")
    summary = experiment.fit(tiny_flags("ram", **LEGACY, logger="none", max_epochs=1, limit_train_batches=1,
                                        limit_val_batches=1, limit_test_batches=0, default_root_dir=str(root)))
    ckpt = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    assert "locator.weight" in ckpt["state_dict"]  # the linear locator's layout
    for name in LEGACY:
        del ckpt["hyper_parameters"][name]
    path = root / "old.ckpt"
    torch.save(ckpt, path)
    return path


def test_cli_test_of_an_old_ram_checkpoint_fails_with_one_line_naming_the_keys_and_the_flags(old_ram):
    env = {**os.environ, "ATTENTION_LIGHTNING_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "test", f"--ckpt={old_ram}"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load checkpoint {old_ram} into model 'ram'"), done.stderr
    assert "missing keys locator.0.weight" in lines[0] and "unexpected keys locator.weight, locator.bias" in lines[0]
    assert lines[0].endswith("pass --locator_hidden=0 --clamp=false --detach_policy=false")


def test_the_flags_the_error_names_load_the_old_checkpoint_for_test_and_visualize(old_ram, tmp_path):
    with pytest.raises(UserError, match="pass --locator_hidden=0 --clamp=false --detach_policy=false"):
        experiment.visualize({"ckpt": str(old_ram), "out": str(tmp_path / "a.png"), "num_images": 2})
    result = experiment.test({"ckpt": str(old_ram), **LEGACY})
    assert 0.0 <= result["test"]["test/acc"] <= 1.0
    s = experiment.visualize({"ckpt": str(old_ram), "out": str(tmp_path / "a.png"), "num_images": 2, **LEGACY})
    assert s["images"] == 2 and (tmp_path / "a.png").is_file()


def test_a_model_flag_that_changes_the_layout_is_named_with_the_checkpoints_value(old_ram):
    with pytest.raises(UserError) as info:
        experiment.test({"ckpt": str(old_ram), **LEGACY, "hidden_size": 32})
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "other shapes for glimpse_net.what_out.weight" in message and "drop --hidden_size (the checkpoint has 256)" in message


def test_a_checkpoint_whose_state_is_not_a_model_fails_with_one_line(old_ram, tmp_path):
    ckpt = torch.load(old_ram, map_location="cpu", weights_only=True)
    del ckpt["state_dict"]
    broken = tmp_path / "broken.ckpt"
    torch.save(ckpt, broken)
    with pytest.raises(UserError, match=f"cannot load checkpoint {broken} into model 'ram': KeyError") as info:
        experiment.test({"ckpt": str(broken), **LEGACY})
    assert len(str(info.value).splitlines()) == 1
