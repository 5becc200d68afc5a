import math

import pytest
import torch

from attention_lightning.nn.coords import pixel_centers
from attention_lightning.nn.spatial_softmax import pmf_moments, spatial_softmax, spatial_softmax_moments


def test_pixel_centers_follow_align_corners_false():
    assert torch.allclose(pixel_centers(4), torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    # 2 cells of a valid conv that trimmed 1 pixel per side of a 4-pixel axis sit on pixels 1 and 2
    assert torch.allclose(pixel_centers(2, offset=1, full=4), torch.tensor([-0.25, 0.25]))
    # stride 2: cells on pixels 0 and 2 of 4
    assert torch.allclose(pixel_centers(2, stride=2, full=4), torch.tensor([-0.75, 0.25]))


def test_softmax_is_a_pmf_over_positions():
    logits = torch.randn(3, 5, 7)
    pmf = spatial_softmax(logits)
    assert pmf.shape == (3, 5, 7)
    assert torch.allclose(pmf.sum(dim=(1, 2)), torch.ones(3))
    # the argmax of the logits is the mode of the pmf
    assert torch.equal(pmf.flatten(1).argmax(1), logits.flatten(1).argmax(1))


def test_moments_of_hand_built_pmf():
    # 2x2 map on a 2x2 image: centers at -0.5 and 0.5; mass 0.5 on (x=-.5, y=-.5) and 0.5 on (x=.5, y=.5)
    pmf = torch.tensor([[[0.5, 0.0], [0.0, 0.5]]])
    xs = ys = pixel_centers(2)
    l1 = pmf_moments(pmf, xs, ys, "l1")
    l2 = pmf_moments(pmf, xs, ys, "l2", eps=0.0)
    assert torch.allclose(l1.center, torch.zeros(1, 2))
    assert torch.allclose(l1.spread, torch.tensor([1.0]))           # |.5| + |.5|
    assert torch.allclose(l2.spread, torch.tensor([math.sqrt(0.5)]))  # sqrt(.25 + .25)


def test_moments_of_asymmetric_pmf():
    # 1x4 row: pmf (0.1, 0.2, 0.3, 0.4) over x = (-.75, -.25, .25, .75), single row y = 0
    pmf = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])
    xs, ys = pixel_centers(4), pixel_centers(1)
    m = pmf_moments(pmf, xs, ys, "l1")
    tx = 0.1 * -0.75 + 0.2 * -0.25 + 0.3 * 0.25 + 0.4 * 0.75
    assert m.center[0, 0].item() == pytest.approx(tx)
    assert m.center[0, 1].item() == pytest.approx(0.0)
    expected = sum(p * abs(x - tx) for p, x in zip([0.1, 0.2, 0.3, 0.4], [-0.75, -0.25, 0.25, 0.75]))
    assert m.spread.item() == pytest.approx(expected)
    m2 = pmf_moments(pmf, xs, ys, "l2", eps=0.0)
    assert m2.spread.item() == pytest.approx(expected)  # one row: L2 distance = |dx|


def test_peaked_logits_locate_the_peak():
    logits = torch.full((1, 10, 20), -50.0)
    logits[0, 3, 15] = 50.0  # row 3, column 15
    m = spatial_softmax_moments(logits)
    assert m.center[0, 0].item() == pytest.approx((2 * 15 + 1) / 20 - 1, abs=1e-5)
    assert m.center[0, 1].item() == pytest.approx((2 * 3 + 1) / 10 - 1, abs=1e-5)
    assert m.spread.item() < 1e-3


def test_moments_stay_float32_under_bf16_input():
    logits = torch.randn(2, 6, 6).bfloat16()
    m = spatial_softmax_moments(logits)
    assert m.pmf.dtype == torch.float32 and m.center.dtype == torch.float32


def test_unknown_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="norm='l3' is not supported"):
        pmf_moments(torch.ones(1, 2, 2) / 4, pixel_centers(2), pixel_centers(2), "l3")
