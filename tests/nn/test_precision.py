"""``autocast_off``: float32 inside the block under autocast; no autocast context at all when it is off."""
import contextlib

import torch

from attention_lightning.nn.precision import autocast_off


def test_autocast_is_off_inside_the_block_and_back_on_after():
    a = torch.rand(4, 4)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        with autocast_off("cpu"):
            assert (a @ a).dtype == torch.float32
        assert (a @ a).dtype == torch.bfloat16


def test_nothing_to_enter_when_autocast_is_off():
    assert isinstance(autocast_off("cpu"), contextlib.nullcontext)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert isinstance(autocast_off("cpu"), torch.autocast)
