"""AttentionLogger: pictures reach wandb (offline: overlays, tables, animations, facts), TensorBoard and CSV run dirs,
identical to viz's; no logger, no callback."""
import contextlib
import json
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml
from PIL import Image

from attention_lightning import viz
from attention_lightning.run import commands as experiment
from attention_lightning.attention import Attention, cut_batch, draw_attention, first_items
from attention_lightning.viz.logger import ACC_KEY, KEY, STEPS_KEY, AttentionLogger, log_run_config, render, run_facts
from attention_lightning.run.plan import UserError
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
        assert im.format == "PNG" and im.width > 300
        assert im.height >= 3 * (viz.TITLE + viz.MIN_PANEL + viz.GAP)  # 3 rows of panels


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


def wandb_records(path: Path):
    """The protobuf records of an offline run's ``.wandb`` file (a LevelDB-style log of 32 KiB blocks, each record
    split in pieces with a 7-byte header: CRC, little-endian length, piece type), read with wandb's own schema."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, parts = 7, 32768, []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # too short for a header: padding up to the next block
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # zeros to the end of the block
            pos += left
            continue
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def offline_run(tmp_path, monkeypatch):
    """Environment for an offline wandb run kept under tmp_path."""
    for var, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_CACHE_DIR", "wandb_cache"), ("WANDB_CONFIG_DIR", "wandb_config"),
                     ("WANDB_DATA_DIR", "wandb_data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def finished_records(log: Path, timeout: float = 60.0) -> list:
    """The records of a ``.wandb`` file once wandb's service has written all of it (the last record is the run's
    exit). ``finish()`` can return before the service process has flushed the file: on a loaded machine the test
    read a file without its final history rows, or cut inside a record."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = list(wandb_records(log))
            if records and records[-1].WhichOneof("record_type") == "exit":
                return records
        except DecodeError:  # a record still being written
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{log} has no exit record {timeout:.0f} s after the run finished")
        time.sleep(0.2)


def read_run(run: Path) -> tuple[dict, list[dict], list]:
    """(config, history rows as {key: value}, artifact records) of a finished offline run directory."""
    (log,) = run.glob("*.wandb")
    config, rows, artifacts = {}, [], []
    for r in finished_records(log):
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):  # read the config wherever wandb put it: the run record or config records
            updates = (r.run.config if kind == "run" else r.config).update
            config.update({item.key: json.loads(item.value_json) for item in updates})
        elif kind == "history":
            row: dict = {}
            for item in r.history.item:
                keys = list(item.nested_key) or [item.key]
                node = row
                for k in keys[:-1]:
                    node = node.setdefault(k, {})
                node[keys[-1]] = json.loads(item.value_json)
            rows.append(row)
        elif kind == "artifact":
            artifacts.append(r.artifact)
    return config, rows, artifacts


@pytest.mark.slow
def test_wandb_offline_run_holds_overlays_a_table_an_animation_and_the_data_facts(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    offline_run(tmp_path, monkeypatch)
    try:
        s = experiment.fit(tiny_flags("ram", logger="wandb", default_root_dir=str(tmp_path), **QUICK))
    finally:
        wandb.finish()
    (run,) = Path(s["run_dir"]).glob("wandb/offline-run-*")
    config, rows, artifacts = read_run(run)
    facts = config["data_facts"]
    assert facts["digit_source"].startswith("embedded") and facts["split_sizes"] == {"train": 32, "val": 16, "test": 16}

    drawn = [r for r in rows if KEY in r]
    assert [r["trainer/global_step"] for r in drawn] == [1, 2]  # steps 1 and 2; validation at step 2 not redrawn
    for r in drawn:
        assert r[KEY]["count"] == 3 and r[STEPS_KEY]["_type"] == "video-file" and ACC_KEY in r
    files = run / "files"
    boxes = sorted(files.glob("media/metadata/boxes2D/attention/images_*.json"))
    assert len(boxes) == 2 * 3  # two drawings x three examples
    for path in boxes:
        data = json.loads(path.read_text())
        assert len(data["box_data"]) == 3 * 2  # 3 glimpses of 2 scales
        assert sorted({b["class_id"] for b in data["box_data"]}) == [1, 2, 3]
        for b in data["box_data"]:
            assert b["box_caption"].startswith(f"{b['class_id']}: ") and 0 <= b["scores"]["p_label"] <= 1
            assert 0 <= b["position"]["minX"] <= b["position"]["maxX"] <= 1
    gifs = sorted(files.glob("media/videos/attention/steps_*.gif"))
    assert len(gifs) == 2
    with Image.open(gifs[0]) as im:
        assert im.format == "GIF" and im.n_frames == 3  # one frame per glimpse
    assert len(list(files.glob("media/images/attention/step_accuracy_*.png"))) == 2

    tables = [a for a in artifacts if a.type == "run_table"]
    assert len(tables) == 2
    (entry,) = [c for c in tables[-1].manifest.contents if c.path.endswith(".table.json")]
    table = json.loads(Path(entry.local_path).read_text())
    cols = table["columns"]
    assert cols[:6] == ["image", "label", "prediction", "confidence", "correct", "caption"]
    assert cols[6:] == ["per_step", "pred@1", "conf@1", "pred@2", "conf@2", "pred@3", "conf@3"]
    assert len(table["data"]) == 3
    for row in table["data"]:
        cell = dict(zip(cols, row))
        assert cell["image"]["_type"] == "image-file" and "boxes" in cell["image"]
        assert cell["correct"] == (cell["label"] == cell["prediction"]) and cell["prediction"] == cell["pred@3"]
        assert cell["confidence"] == pytest.approx(cell["conf@3"]) and cell["per_step"].count(" > ") == 2


def test_wandb_masks_hold_each_steps_map_as_levels(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger

    from attention_lightning.viz.logger import _to_wandb
    from tests.test_viz import fake

    offline_run(tmp_path, monkeypatch)
    att = fake("pham", b=2, steps=3)  # maps (2, 3, 4, 4) over the whole 32x32 image, one box per step
    lg = WandbLogger(save_dir=str(tmp_path), project="t")
    try:
        _to_wandb(lg, att, None, 7, render(att, 8, None, ["accuracy", "steps_gif"]))
    finally:
        lg.experiment.finish()
    (run,) = tmp_path.glob("wandb/offline-run-*")
    config, rows, _ = read_run(run)
    (row,) = [r for r in rows if KEY in r]
    assert row["trainer/global_step"] == 7
    masks = {}
    for path in (run / "files" / "media" / "images" / "mask" / "attention").glob("*.png"):
        with Image.open(path) as im:
            masks[path.name] = np.asarray(im)
    assert len(masks) == 2 * 3  # a mask per image and step
    side = viz.upscaled_uint8(att).shape[1]  # 32 px enlarged to 128
    expected = [viz.map_levels(att, i, t, side, side) for i in range(2) for t in range(3)]
    for m in masks.values():
        assert any(np.array_equal(m, e) for e in expected)
    labels = json.dumps(config["_wandb"])
    assert "EIG step 3" in labels and "step 3" in labels  # each map step and each box step is a toggle


def test_csv_picture_is_the_grid_viz_draws_from_the_checkpoint(tmp_path):
    """The csv picture of the last step equals viz's picture of the last checkpoint's attention drawn here (the
    drawing at the end of the last training step sees the final weights)."""
    from attention_lightning.models.dham import DHAM

    s = experiment.fit(tiny_flags("dham", logger="csv", default_root_dir=str(tmp_path), **QUICK))
    model = DHAM.load_from_checkpoint(s["last_checkpoint"], map_location="cpu", weights_only=True)
    dm = experiment.build_datamodule(experiment.plan(tiny_flags("dham")))
    dm.setup("validate")
    att = draw_attention(model, first_items(dm.val_dataloader(), 3))
    here = np.asarray(viz.attention_grid(att, 3, dm.class_names))
    with Image.open(Path(s["run_dir"]) / "attention" / "epoch0-step2.png") as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), here)


def test_data_facts_reach_the_run_config_from_facts_or_what_the_datamodule_has(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    from attention_lightning.facts import DataFacts

    class WithFacts:
        def facts(self):
            return DataFacts(num_classes=10, in_channels=1, image_size=(28, 28),
                             provenance={"digit_source": "mnist", "data_dir": Path("/d"), "split_sizes": {"train": 5}})

    lg = CSVLogger(str(tmp_path), name="a")
    facts = log_run_config(SimpleNamespace(datamodule=WithFacts(), is_global_zero=True, loggers=[lg]))
    lg.save()
    saved = yaml.safe_load((Path(lg.log_dir) / "hparams.yaml").read_text())["data_facts"]
    assert saved == facts == {"num_classes": 10, "in_channels": 1, "image_size": [28, 28], "digit_source": "mnist",
                              "data_dir": "/d", "split_sizes": {"train": 5}}
    old = SimpleNamespace(num_classes=3, dims=(1, 4, 4), digit_source="synthetic", hparams={"data_dir": "data"},
                          train_set=[0] * 6, val_set=[0] * 2, test_set=None)
    assert run_facts(old) == {"num_classes": 3, "dims": [1, 4, 4], "digit_source": "synthetic", "data_dir": "data",
                              "split_sizes": {"train": 6, "val": 2}}
    assert run_facts(None) is None


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


def test_cut_batch_slices_tensors_dicts_and_per_item_lists():
    batch = {"x": torch.arange(4), "text": ["a", "b", "c", "d"], "pair": [torch.arange(4), torch.arange(4) * 2]}
    out = cut_batch(batch, 2)
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


def test_png_bytes_decode_to_the_same_pixels():
    import io

    from attention_lightning.viz.files import png_bytes

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(png_bytes(rgb))) as im:
        assert im.format == "PNG" and im.mode == "RGB" and np.array_equal(np.asarray(im), rgb)
