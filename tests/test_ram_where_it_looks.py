"""benchmarks/probes/ram_where_it_looks.py: a RAM's accuracy with its own, random and center locations."""
from __future__ import annotations

import torch

from attention_lightning.models.ram import RAM
from benchmarks.probes.ram_where_it_looks import measure


def _loader(n: int = 12, size: int = 32):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(n // 2, 1, size, size, generator=g), torch.randint(0, 10, (n // 2,), generator=g))
            for _ in range(2)]


def test_a_policy_pinned_to_a_corner_is_near_the_edge_at_every_glimpse():
    model = RAM(num_classes=10, in_channels=1, image_size=32, glimpses=4, locator_hidden=0).eval()
    with torch.no_grad():
        model.locator.weight.zero_()
        model.locator.bias.fill_(20.0)  # tanh(20) ~ 1: every location at the corner (1, 1)
    out = measure(model, _loader(), draws=2)
    assert out["val_images"] == 12
    assert out["near_edge_per_glimpse"] == [1.0, 1.0, 1.0, 1.0]
    for key in ("own", "random", "center"):
        assert 0.0 <= out[f"val_acc_{key}"] <= 1.0


def test_center_locations_are_what_the_center_column_scores():
    model = RAM(num_classes=10, in_channels=1, image_size=32, glimpses=3, locator_hidden=0).eval()
    with torch.no_grad():
        model.locator.weight.zero_()
        model.locator.bias.zero_()  # the policy looks at the center: own and center must agree exactly
    out = measure(model, _loader(), draws=1)
    assert out["val_acc_own"] == out["val_acc_center"]
    assert out["near_edge_per_glimpse"] == [0.0, 0.0, 0.0]
