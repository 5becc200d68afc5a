"""Export folders (``attention_lightning.run.export``) and loading them (``attention_lightning.from_pretrained``), offline.

Models are built straight from the tiny flags (no training) where the weights do not matter; the end-to-end tests
train a tiny run first and are marked slow.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import attention_lightning
from attention_lightning import registry
from attention_lightning.run import commands as experiment
from attention_lightning.attention import draw_attention, first_items
from attention_lightning.run.export import (CARD, CONFIG, PICTURE, WEIGHTS, check_out, export, export_model, model_card,
                                            sha256)
from attention_lightning.run.pretrained import PretrainedError, from_pretrained
from tests.tiny import tiny_flags

MODELS = [e.name for e in registry.models()]


def built(name: str, **extra):
    """A tiny model of ``name`` on its tiny data (initial weights), the datamodule, and 4 test items."""
    p = experiment.plan({**tiny_flags(name, **extra), "logger": "none"})
    torch.manual_seed(0)
    dm = experiment.build_datamodule(p)
    model = experiment.build_model(p, dm).eval()
    dm.setup("test")
    return p, dm, model, first_items(dm.test_dataloader(), 4)


def outputs(model, batch):
    """Logits and the attention of ``model`` on ``batch``, from the same torch seed."""
    torch.manual_seed(123)
    with torch.no_grad():
        _, logits = model.loss_terms(batch, "test")
    torch.manual_seed(123)
    return logits, draw_attention(model, batch)


def same_attention(a, b) -> None:
    for field in ("images", "probs", "boxes", "maps", "views", "labels"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            assert torch.equal(x, y), field
    assert a.captions == b.captions and a.map_extent == b.map_extent


@pytest.mark.parametrize("name", MODELS)
def test_export_then_load_gives_identical_logits_and_attention(name, tmp_path):
    p, dm, model, batch = built(name)
    with torch.no_grad():  # weights unlike a fresh model's, so a load that dropped them would show
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    out = export_model(model, tmp_path / "export", p.data_name, dm, batch)
    assert sorted(q.name for q in out.iterdir()) == sorted([WEIGHTS, CONFIG, CARD, PICTURE])
    loaded = from_pretrained(out)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.data_config["num_classes"] == registry.data_facts(dm).num_classes
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    logits, att = outputs(model, batch)
    logits2, att2 = outputs(loaded, batch)
    assert logits.shape[0] == 4 and torch.equal(logits, logits2)
    same_attention(att, att2)


def test_config_records_arguments_and_data_facts(tmp_path):
    p, dm, model, batch = built("han")
    out = export_model(model, tmp_path / "han", p.data_name, dm, batch)
    config = json.loads((out / CONFIG).read_text())
    assert config["model"] == "han" and config["args"]["k"] == model.hparams.k
    assert set(config["args"]) == set(model.hparams)  # every constructor argument
    data = config["data"]
    assert data["name"] == "vqa_scenes" and data["vocabulary"][:2] == ["<pad>", "<unk>"]
    assert len(data["vocabulary"]) == model.hparams.vocab_size and data["class_names"] == list(dm.answers)
    assert data["image_size"] == [dm.hparams.canvas_size] * 2 and data["in_channels"] == 3
    assert config["files"] == {n: sha256(out / n) for n in (CARD, PICTURE, WEIGHTS)}
    card = (out / CARD).read_text()
    header = card.split("---")[1]
    assert "library_name: attention-lightning" in header and "- vqa_scenes" in header and "- accuracy" in header
    assert "visual-question-answering" in header and "Malinowski" in card and f"]({PICTURE})" in card


@pytest.mark.parametrize("digits,hub", [("fashion", "zalando-datasets/fashion_mnist"), ("embedded", "ylecun/mnist"),
                                        ("auto", None)])
def test_card_names_the_dataset_the_objects_come_from(exported, digits, hub):
    config = json.loads((exported[0] / CONFIG).read_text())
    config["data"]["flags"]["digits"] = digits
    header = model_card(config, {}, with_picture=False).split("---")[1]
    listed = header.split("datasets:\n", 1)[1].split("metrics:", 1)[0].split()
    assert listed == ["-", "cluttered_mnist"] + (["-", hub] if hub else [])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    p, dm, model, batch = built("cnn")
    return export_model(model, tmp_path_factory.mktemp("exp") / "cnn", p.data_name, dm, batch), batch


@pytest.mark.parametrize("damage, named", [
    (lambda d: (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:-1] + b"\x01"), f"{WEIGHTS} was changed"),
    (lambda d: (d / PICTURE).unlink(), f"{PICTURE} is missing"),
    (lambda d: (d / WEIGHTS).unlink(), f"{WEIGHTS} is missing"),
    (lambda d: (d / CARD).write_text((d / CARD).read_text() + "\nedited\n"), f"{CARD} was changed"),
    (lambda d: (d / CONFIG).write_text((d / CONFIG).read_text().replace('"hidden": 16', '"hidden": 17')),
     f"{CONFIG} was changed"),
    (lambda d: (d / CONFIG).unlink(), f"no {CONFIG}"),
])
def test_a_changed_or_missing_file_stops_with_one_line_naming_it(exported, tmp_path, damage, named):
    folder = shutil.copytree(exported[0], tmp_path / "copy")
    from_pretrained(folder)  # intact: loads
    damage(folder)
    with pytest.raises(PretrainedError, match=named) as e:
        from_pretrained(folder)
    assert "\n" not in str(e.value)


def test_nothing_in_the_folder_is_unpickled(exported, monkeypatch):
    folder, batch = exported
    expected = outputs(from_pretrained(folder), batch)[0]

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading an export")

    for owner, name in ((torch, "load"), (torch.serialization, "load"), (pickle, "load"), (pickle, "loads"),
                        (pickle, "Unpickler")):
        monkeypatch.setattr(owner, name, refuse)
    with pytest.raises(AssertionError):  # the patch is live: a checkpoint could not be read now
        torch.load(folder / WEIGHTS)
    loaded = attention_lightning.from_pretrained(str(folder))
    assert torch.equal(outputs(loaded, batch)[0], expected)


def test_hub_id_offline_is_one_clear_line(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PretrainedError, match="cannot fetch someone/no-such-model from the Hugging Face Hub") as e:
        from_pretrained("someone/no-such-model")
    assert "\n" not in str(e.value)
    with pytest.raises(PretrainedError, match="no such folder"):
        from_pretrained("not a folder")


def test_out_must_be_new_empty_or_a_previous_export(exported, tmp_path):
    ckpt = tmp_path / "x.ckpt"
    check_out(tmp_path / "new", False, ckpt)
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", False, ckpt)
    check_out(exported[0], False, ckpt)  # a previous export is replaced
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(experiment.UserError, match="not empty and holds no previous export.*--overwrite=true"):
        check_out(tmp_path / "busy", False, ckpt)
    check_out(tmp_path / "busy", True, ckpt)
    with pytest.raises(experiment.UserError, match="is a file"):
        check_out(tmp_path / "busy" / "notes.txt", True, ckpt)
    with pytest.raises(experiment.UserError, match="holds the working folder or the checkpoint"):
        check_out(tmp_path, True, ckpt)


def test_a_failed_export_leaves_the_previous_one(exported, tmp_path, monkeypatch):
    folder = shutil.copytree(exported[0], tmp_path / "prev")
    before = {q.name: q.read_bytes() for q in folder.iterdir()}
    p, dm, model, batch = built("cnn")
    monkeypatch.setattr("attention_lightning.run.export.model_card", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export_model(model, folder, p.data_name, dm, batch)
    assert {q.name: q.read_bytes() for q in folder.iterdir()} == before
    assert [q.name for q in tmp_path.iterdir()] == ["prev"]  # no temporary folder left


@pytest.mark.slow
def test_cli_export_of_a_run_then_test_and_visualize_pretrained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = experiment.fit(tiny_flags("dham", max_epochs=1, default_root_dir=str(tmp_path / "runs")))
    run_dir = Path(summary["run_dir"])
    s = export({"ckpt": str(run_dir.parent), "out": "exp"})
    assert Path(s["checkpoint"]) == Path(summary["best_checkpoint"])
    card = (tmp_path / "exp" / CARD).read_text()
    assert f"| test/acc | {summary['test']['test/acc']:.4f} |" in card
    assert f"value: {summary['test']['test/acc']:.4f}" in card and "Seed: 0." in card
    assert "python cli.py fit " in card and "--canvas_size=40" in card and "max_epochs 1" in card
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(experiment.UserError, match="not empty"):
        export({"ckpt": str(run_dir.parent), "out": "busy"})
    assert [q.name for q in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    by_ckpt = experiment.test({"ckpt": summary["best_checkpoint"]})["test"]
    by_export = experiment.test({"pretrained": "exp"})["test"]
    assert by_export == by_ckpt and by_export["test/acc"] == summary["test"]["test/acc"]
    drawn = experiment.visualize({"pretrained": "exp", "out": "att.png", "num_images": 2})
    assert Path(drawn["out"]).stat().st_size > 0 and drawn["images"] == 2
    with pytest.raises(experiment.UserError, match="not both"):
        experiment.test({"pretrained": "exp", "ckpt": summary["best_checkpoint"]})


def test_pham_final_stage_is_exported_and_loads(tmp_path):
    """A checkpoint of an earlier stage of ``--phase=all`` resolves to the final stage's; phase 3 loads."""
    from attention_lightning.run.export import resolve_checkpoint
    from attention_lightning.run.checkpoints import CKPT_KEY

    for k in (1, 2, 3):
        folder = tmp_path / f"runs/pham-cluttered_mnist-phase{k}/version_0/checkpoints"
        folder.mkdir(parents=True)
        meta = {"model": "pham", "data": "cluttered_mnist", "data_kwargs": {}, "flags": {"model": {"phase": k}}}
        torch.save({CKPT_KEY: meta}, folder / ("last.ckpt" if k < 3 else "best-epoch0-step4.ckpt"))
    first = tmp_path / "runs/pham-cluttered_mnist-phase1/version_0/checkpoints/last.ckpt"
    path, note = resolve_checkpoint(str(first))
    assert path == tmp_path / "runs/pham-cluttered_mnist-phase3/version_0/checkpoints/best-epoch0-step4.ckpt"
    assert "final stage (phase3)" in note
    assert resolve_checkpoint(str(path)) == (path, None)
    shutil.rmtree(tmp_path / "runs/pham-cluttered_mnist-phase3")
    with pytest.raises(experiment.UserError, match="final stage .* has no checkpoint"):
        resolve_checkpoint(str(first))
    small = {"steps": 3, "eig_samples": 2, "feature_size": 16, "hidden_size": 16, "latent_size": 8,
             "glimpse_channels": [8, 8, 8], "flow_hidden": [16], "flow_transforms": 2, "decoder_layers": 2}
    p, dm, model, batch = built("pham", phase=3, init_from=str(first), **small)  # read only when training starts
    loaded = from_pretrained(export_model(model, tmp_path / "pham3", p.data_name, dm, batch))
    assert loaded.hparams.phase == 3 and torch.equal(outputs(loaded, batch)[0], outputs(model, batch)[0])


def test_export_is_a_command_with_its_own_flags_and_help():
    text = experiment.help_text("export", {})
    assert "usage: python cli.py export" in text
    for flag in ("--ckpt", "--out", "--overwrite", "--num_images", "--split"):
        assert f"\n  {flag} " in text
    assert "model.safetensors, config.json, README.md, attention.png" in text
    with pytest.raises(experiment.UserError, match="--resume is a flag of `fit`, not of `export`"):
        experiment.plan({"resume": "last"}, command="export")
    with pytest.raises(experiment.UserError, match="export needs --out=DIR"):
        export({"ckpt": "x.ckpt"})
