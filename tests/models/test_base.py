"""The contract every model shares (models/base.py): facts in, choices checked, nn errors said as flags."""
from typing import Literal, Optional

import pytest
import torch

from attention_lightning.models.base import AttentionModel, as_flags, build_model, choices


class Toy(AttentionModel):
    """A linear classifier of flattened images, to exercise the base class.

    Arguments:
        num_classes: classes.
        in_channels: image channels.
        image_size: (H, W).
        mode: a choice.
        lr: learning rate.
        weight_decay: weight decay.
    """

    registry_name = "toy"

    def __init__(self, num_classes: int = 3, in_channels: int = 1, image_size=(4, 4),
                 mode: Literal["a", "b"] = "a", lr: float = 0.1, weight_decay: float = 0.0) -> None:
        super().__init__(num_classes, lr, weight_decay)
        self.linear = torch.nn.Linear(in_channels * image_size[0] * image_size[1], num_classes)

    def loss_terms(self, batch, stage):
        logits = self.linear(self.inputs(batch).flatten(1))
        return {"ce": torch.nn.functional.cross_entropy(logits, self.targets(batch))}, logits


class NoSize(Toy):
    ignores_facts = ("image_size",)

    def __init__(self, num_classes: int = 3, in_channels: int = 1, lr: float = 0.1, weight_decay: float = 0.0) -> None:
        super().__init__(num_classes, in_channels, (2, 2), "a", lr, weight_decay)


def test_every_constructor_argument_is_a_hyperparameter():
    model = Toy(num_classes=5, mode="b", lr=0.5)
    assert dict(model.hparams) == {"num_classes": 5, "in_channels": 1, "image_size": (4, 4), "mode": "b",
                                   "lr": 0.5, "weight_decay": 0.0}
    opt = model.configure_optimizers()
    assert opt.param_groups[0]["lr"] == 0.5


def test_literal_choices_are_checked_at_construction():
    assert choices(Literal["x", 1]) == ("x", 1) and choices(Optional[Literal["y"]]) == ("y",) and choices(int) == ()  # noqa: UP045 (the typing form users may write)
    with pytest.raises(ValueError, match=r"^--mode='c' is not supported; use one of a, b$"):
        Toy(mode="c")


def test_build_model_takes_facts_and_flags_win():
    model = build_model(Toy, {"num_classes": 4, "in_channels": 2, "image_size": (3, 3)}, {"num_classes": 6})
    assert model.hparams.num_classes == 6 and model.hparams.in_channels == 2 and model.hparams.image_size == (3, 3)


def test_build_model_refuses_a_fact_it_cannot_take_unless_ignored():
    with pytest.raises(ValueError, match=r"model 'toy' cannot use the data's vocab_size=9: its constructor takes "
                                         r"no vocab_size.*Toy.ignores_facts"):
        build_model(Toy, {"num_classes": 4, "vocab_size": 9}, {})
    model = build_model(NoSize, {"num_classes": 4, "in_channels": 1, "image_size": (7, 7)}, {})
    assert model.hparams.num_classes == 4 and model.hparams.image_size == (2, 2)  # its own size, not the fact's
    with pytest.raises(ValueError, match="image_size"):
        build_model(type("Strict", (NoSize,), {"ignores_facts": ()}), {"num_classes": 4, "image_size": (7, 7)}, {})


def test_stages_default_to_one_fit():
    assert Toy.stages({}) == [("fit", {})]


def test_targets_and_inputs_of_image_batches():
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 2])
    model = Toy()
    assert model.inputs((x, y)) is x and model.targets((x, y)) is y


def test_as_flags_turns_argument_names_into_flags():
    with pytest.raises(ValueError, match=r"^--glimpse_size=40 exceeds image 32x32; use --glimpse_size <= 32 "
                                         r"\(not a_size=1\)$"):
        with as_flags(size="glimpse_size"):
            raise ValueError("size=40 exceeds image 32x32; use size <= 32 (not a_size=1)")
    with pytest.raises(KeyError):  # only ValueErrors are rephrased
        with as_flags(size="glimpse_size"):
            raise KeyError("size=1")
