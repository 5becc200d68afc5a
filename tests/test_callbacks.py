"""AttentionLogger: pictures reach wandb (offline), TensorBoard and CSV run dirs; no logger, no callback."""
import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from PIL import Image

from attention_lightning import experiment
from attention_lightning.attention import Attention
from attention_lightning.callbacks import KEY, AttentionLogger, _cut, draw_attention, first_items
from attention_lightning.experiment import UserError
from tests.tiny import tiny_flags

QUICK = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 0,
         "viz_every_n_steps": 1, "viz_images": 3}


def attention_loggers(trainer):
    return [c for c in trainer.callbacks if isinstance(c, AttentionLogger)]


def test_csv_run_dir_gets_a_png_per_step_and_validation_epoch(tmp_path):
    s = experiment.fit(tiny_flags("dham", logger="csv", default_root_dir=str(tmp_path), **QUICK))
    pngs = sorted(p.name for p in (Path(s["run_dir"]) / "attention").glob("*.png"))
    # steps 1 and 2 by viz_every_n_steps=1; the validation epoch ends at step 2 with the same weights: not redrawn
    assert pngs == ["epoch0-step1.png", "epoch0-step2.png"]
    with Image.open(Path(s["run_dir"]) / "attention" / pngs[0]) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 3 * 150  # 3 rows of panels


def test_viz_images_0_draws_nothing_and_viz_every_n_steps_0_only_at_validation(tmp_path):
    off = experiment.fit(tiny_flags("dham", logger="csv", default_root_dir=str(tmp_path / "off"),
                                    **{**QUICK, "viz_images": 0}))
    assert not (Path(off["run_dir"]) / "attention").exists()
    val = experiment.fit(tiny_flags("dham", logger="csv", default_root_dir=str(tmp_path / "val"),
                                    **{**QUICK, "viz_every_n_steps": 0, "max_epochs": 2}))
    assert sorted(p.name for p in (Path(val["run_dir"]) / "attention").glob("*.png")) == [
        "epoch0-step2.png", "epoch1-step4.png"]


def test_tensorboard_event_file_holds_the_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = experiment.fit(tiny_flags("ram", logger="tensorboard", default_root_dir=str(tmp_path), **QUICK))
    acc = EventAccumulator(s["run_dir"], size_guidance={"images": 0})
    acc.Reload()
    assert KEY in acc.Tags()["images"]
    events = acc.Images(KEY)
    assert [e.step for e in events] == [1, 2]
    assert events[0].width > 300 and events[0].encoded_image_string[:4] == b"\x89PNG"


@pytest.mark.slow
def test_wandb_offline_run_holds_one_image_per_example_and_the_step_accuracy(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    try:
        s = experiment.fit(tiny_flags("ram", logger="wandb", default_root_dir=str(tmp_path), **QUICK))
    finally:
        wandb.finish()
    runs = list(Path(s["run_dir"]).glob("wandb/offline-run-*"))
    assert len(runs) == 1, list(Path(s["run_dir"]).rglob("*"))[:20]
    media = runs[0] / "files" / "media" / "images" / "attention"
    images = sorted(media.glob("images_*.png"))
    accuracy = sorted(media.glob("step_accuracy_*.png"))
    assert len(images) == 2 * 3  # two events (steps 1, 2) x three examples
    assert len(accuracy) == 2
    with Image.open(images[0]) as im:
        assert im.format == "PNG" and im.width > 300


def test_no_callback_without_a_logger_and_flags_reach_it(tmp_path):
    run = tmp_path / "r" / "version_0"
    p = experiment.plan(tiny_flags("dham", logger="none"))
    assert attention_loggers(experiment.make_trainer(p, run)) == []
    p = experiment.plan(tiny_flags("dham", logger="csv", viz_every_n_steps=7, viz_images=5))
    (cb,) = attention_loggers(experiment.make_trainer(p, run))
    assert (cb.every_n_steps, cb.num_images) == (7, 5)
    for bad in ({"viz_images": -1}, {"viz_every_n_steps": -1}, {"viz_every_n_steps": 1.5}):
        with pytest.raises(UserError, match=f"--{next(iter(bad))}="):
            experiment.make_trainer(experiment.plan(tiny_flags("dham", logger="csv", **bad)), run)


@pytest.mark.slow
def test_logging_attention_does_not_change_what_a_seeded_run_trains(tmp_path):
    flags = {"max_epochs": 2, "limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 0}
    a = experiment.fit(tiny_flags("dham", logger="none", default_root_dir=str(tmp_path / "a"), **flags))
    b = experiment.fit(tiny_flags("dham", logger="csv", viz_every_n_steps=1, viz_images=4, default_root_dir=str(tmp_path / "b"),
                                  **flags))
    assert len(list((Path(b["run_dir"]) / "attention").glob("*.png"))) == 4
    wa = torch.load(a["last_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    wb = torch.load(b["last_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# --- pieces ----------------------------------------------------------------------------------
class Toy(nn.Module):
    """Records the mode and grad state attention() ran in; draws a random number."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(2)
        self.frozen = nn.Linear(2, 2)
        self.seen = {}

    @property
    def device(self):
        return torch.device("cpu")

    def transfer_batch_to_device(self, batch, device, idx):
        return batch

    def attention(self, batch):
        self.seen = {"training": self.bn.training, "grad": torch.is_grad_enabled()}
        torch.rand(3)
        x = batch[0]
        return Attention(images=x, probs=torch.full((x.shape[0], 1, 2), 0.5, requires_grad=True))


def test_draw_attention_runs_in_eval_without_grad_and_restores_modes_and_rng():
    model = Toy()
    model.train()
    model.frozen.eval()  # a frozen part stays in eval after the drawing
    torch.manual_seed(1)
    expected = torch.rand(4)
    torch.manual_seed(1)
    att = draw_attention(model, (torch.zeros(2, 1, 4, 4), torch.zeros(2)))
    assert model.seen == {"training": False, "grad": False}
    assert model.training and model.bn.training and not model.frozen.training
    assert torch.equal(torch.rand(4), expected)
    assert not att.probs.requires_grad


def test_first_items_ignores_the_batch_size_and_pads_like_the_loader():
    from datamodules.vqa_scenes import collate

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return {"image": torch.full((3, 2, 2), float(i)), "question": torch.arange(1, i + 2), "answer": i,
                    "qtype": 0, "text": f"q{i}"}

    loader = torch.utils.data.DataLoader(Items(), batch_size=2, collate_fn=collate)
    batch = first_items(loader, 5)
    assert batch.image[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert batch.question.shape == (5, 5) and batch.text == ["q0", "q1", "q2", "q3", "q4"]
    assert first_items(loader, 50).answer.tolist() == list(range(10))  # a short split gives what it has
    plain = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(7.0)), batch_size=3)
    assert first_items(plain, 4)[0].tolist() == [0, 1, 2, 3]


def test_cut_slices_tensors_dicts_and_per_item_lists():
    batch = {"x": torch.arange(4), "text": ["a", "b", "c", "d"], "pair": [torch.arange(4), torch.arange(4) * 2]}
    out = _cut(batch, 2)
    assert out["x"].tolist() == [0, 1] and out["text"] == ["a", "b"] and out["pair"][1].tolist() == [0, 2]


def test_only_rank_zero_draws(tmp_path):
    for zero in (False, True):
        cb = AttentionLogger(every_n_steps=1)
        files = SimpleNamespace(log_dir=str(tmp_path))  # a logger that takes PNGs
        trainer = SimpleNamespace(is_global_zero=zero, global_step=1, loggers=[files], datamodule=None,
                                  val_dataloaders=None)
        with pytest.warns(UserWarning, match="no validation images") if zero else contextlib.nullcontext():
            cb.log_attention(trainer, None)
        assert cb._failed is zero  # rank 0 went looking for images (there are none here); others did nothing
