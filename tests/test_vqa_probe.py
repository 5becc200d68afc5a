"""benchmarks/probes/vqa_probe.py's oracle-encoder diagnostic: the per-cell labels and the frozen encoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attention_lightning.run.plan import build_datamodule, build_model, load_config, plan
from benchmarks.probes import vqa_probe as probe
from datamodules.scenes import Scene, Scenes

ROOT = Path(__file__).resolve().parents[1]


def _scene(colour, shape, place) -> Scene:
    n = len(colour)
    return Scene(np.array(colour), np.array(shape), np.zeros(n, dtype=np.int64), np.array(place),
                 np.zeros((n, 2)), np.ones(n), np.zeros((0, 3)))


def test_cell_labels_name_each_places_colour_shape_pair_and_leave_empty_places_zero():
    # 3x3 lattice, 4 shapes: label = 1 + colour * 4 + shape at the object's place, 0 elsewhere
    scenes = Scenes.stack([_scene([2, 0], [3, 1], [8, 0]), _scene([1], [0], [4])])  # scene 2 padded to 2 slots
    labels = probe.cell_labels(scenes, grid=3, num_shapes=4)
    assert labels.tolist() == [[1 + 0 * 4 + 1, 0, 0, 0, 0, 0, 0, 0, 1 + 2 * 4 + 3],
                               [0, 0, 0, 0, 1 + 1 * 4 + 0, 0, 0, 0, 0]]  # the padding slot (place 0) is not an object


def _tiny_han(**overrides):
    flags = load_config(str(ROOT / "configs" / "han_vqa.yaml"))
    flags.update(train_size=4096, val_size=64, logger="none", **overrides)
    pl_plan = plan(flags)
    dm = build_datamodule(pl_plan)
    dm.setup("fit")
    return build_model(pl_plan, dm), dm


def test_oracle_encoder_learns_the_cells_contents_then_stays_frozen():
    torch.manual_seed(0)
    model, dm = _tiny_han()
    acc = probe.oracle_encoder(model, dm, steps=150, batch_size=64)
    assert acc > 0.6  # 1 + 16 classes on the occupied cells: chance is ~1/16
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    before = [p.clone() for p in model.image_encoder.parameters()]
    batch = next(iter(dm.train_dataloader()))
    opt = model.configure_optimizers()
    torch.nn.functional.cross_entropy(model(*model.inputs(batch)), batch.answer).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.image_encoder.parameters()))
    assert model.fuse.weight.grad is not None  # the rest of the model still trains


def test_oracle_encoder_refuses_a_grid_that_is_not_the_scenes_lattice():
    model, dm = _tiny_han(encoder_kernels=[3, 3], encoder_strides=[2, 2])  # 24 px -> a 6x6 grid, lattice 3x3
    with pytest.raises(ValueError, match="lattice"):
        probe.oracle_encoder(model, dm, steps=1, batch_size=8)
