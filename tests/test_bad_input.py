"""Issue 7's list of bad inputs, each through the path a user takes (experiment.fit, as `cli.py fit` calls it):
one clear UserError line that names the fix, raised before anything is trained or written."""
from pathlib import Path

import pytest

from attention_lightning.run import commands as experiment
from attention_lightning.run.plan import UserError
from datamodules.tiny_datasets import make_cinic10
from tiny import tiny_flags

FAST = {"fast_dev_run": 1, "logger": "none", "enable_progress_bar": False, "enable_model_summary": False}


def fails(flags, match, tmp_path):
    with pytest.raises(UserError, match=match) as info:
        experiment.fit({**FAST, "default_root_dir": str(tmp_path), **flags})
    message = str(info.value)
    assert "\n" not in message.strip() and "Traceback" not in message
    assert not list(Path(tmp_path).rglob("*.ckpt")), "nothing is written for a run that cannot start"
    return message


def test_unknown_model(tmp_path):
    fails({"model": "nope"}, r"unknown model 'nope'.*Valid models: .*dham", tmp_path)


def test_unknown_datamodule(tmp_path):
    fails({"data": "cluttered_mnst"}, r"unknown datamodule 'cluttered_mnst'. Did you mean cluttered_mnist", tmp_path)


def test_unknown_flag(tmp_path):
    fails({"glimpse_sise": 4, "model": "ram"}, r"unknown flag --glimpse_sise; did you mean --glimpse_size", tmp_path)


def test_flag_of_the_wrong_type(tmp_path):
    fails({"max_epochs": "many"}, r"--max_epochs='many' has the wrong type: trainer expects", tmp_path)


def test_missing_dataset_folder(tmp_path):
    message = fails({"data": "cinic10", "data_dir": str(tmp_path / "nowhere")}, r"cinic10|CINIC", tmp_path)
    assert "train" in message and "valid" in message, "names the expected layout"


def test_corrupt_image_file_names_the_file(tmp_path):
    root = make_cinic10(tmp_path / "data", per_class=1)
    victim = sorted((root / "train").rglob("*.png"))[0]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    fails({"data": "cinic10", "data_dir": str(root), "batch_size": 64}, victim.name, tmp_path)


def test_glimpse_larger_than_the_image(tmp_path):
    fails({**tiny_flags("ram"), **FAST, "glimpse_size": 80, "depth": 1}, r"--glimpse_size", tmp_path)


def test_k_larger_than_the_number_of_cells(tmp_path):
    fails({**tiny_flags("han"), **FAST, "selection": "topk", "k": 100000}, r"--k", tmp_path)


@pytest.mark.parametrize("phase", [2, 3])
def test_later_pham_phase_without_the_previous_checkpoint(phase, tmp_path):
    fails({**tiny_flags("pham"), **FAST, "phase": phase}, r"--init_from", tmp_path)


def test_resume_with_nothing_to_resume(tmp_path):
    fails({"resume": "last"}, r"nothing to resume", tmp_path)
