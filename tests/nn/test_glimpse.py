"""The RAM glimpse sensor: exact area averaging against a naive per-sample reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attention_lightning.nn.glimpse import GlimpseSensor, glimpse, glimpse_boxes


def coverage(lo: float, hi: float, n: int) -> torch.Tensor:
    """(n,) length of [lo, hi] inside each pixel [j, j + 1) of an n-pixel axis."""
    j = torch.arange(n, dtype=torch.float64)
    return (torch.minimum(torch.tensor(hi, dtype=torch.float64), j + 1)
            - torch.maximum(torch.tensor(lo, dtype=torch.float64), j)).clamp(min=0)


def naive_glimpse(images, loc, size, depth, scale):
    """Per sample, per scale, per cell: the pixel-coverage-weighted sum over the cell / the cell's area."""
    b, c, h, w = images.shape
    out = torch.zeros(b, depth * c, size, size, dtype=torch.float64)
    for n in range(b):
        u = (float(loc[n, 0]) + 1) * w / 2
        v = (float(loc[n, 1]) + 1) * h / 2
        for d in range(depth):
            side = size * scale**d
            cell = side / size
            for r in range(size):
                y0 = v - side / 2 + r * cell
                wy = coverage(y0, y0 + cell, h)  # (H,)
                for q in range(size):
                    x0 = u - side / 2 + q * cell
                    wx = coverage(x0, x0 + cell, w)  # (W,)
                    weight = wy[:, None] * wx[None, :]  # (H, W)
                    out[n, d * c:(d + 1) * c, r, q] = (images[n].double() * weight).sum((-2, -1)) / cell**2
    return out


@pytest.mark.parametrize(
    "shape,size,depth,scale",
    [((3, 1, 20, 20), 4, 3, 2.0), ((2, 3, 13, 17), 5, 2, 1.5), ((2, 2, 9, 31), 3, 4, 2.0), ((2, 1, 12, 12), 3, 1, 1.0)],
)
def test_matches_naive_reference_inside_and_partly_outside(shape, size, depth, scale):
    torch.manual_seed(0)
    images = torch.rand(shape)
    b = shape[0]
    # random real locations, several well past the border so patches lie partly (or fully) outside
    loc = torch.cat([torch.rand(b, 2) * 2 - 1, torch.rand(b, 2) * 3 - 1.5, torch.tensor([[1.0, -1.0]] * b)])
    images = images.repeat(3, 1, 1, 1)
    out = glimpse(images, loc, size, depth, scale)
    assert out.shape == (3 * b, depth * shape[1], size, size)
    assert out.dtype == images.dtype
    ref = naive_glimpse(images, loc, size, depth, scale)
    assert torch.allclose(out.double(), ref, atol=1e-5, rtol=0)


def test_large_image_precision_float32():
    # the integral image of a 120x120 image sums ~7000 in its corner: float32 would lose ~1e-3 per cell
    torch.manual_seed(1)
    images = torch.rand(2, 1, 120, 120)
    loc = torch.tensor([[0.83, 0.91], [0.97, -0.22]])
    out = glimpse(images, loc, 3, 2, 2.0)
    assert torch.allclose(out.double(), naive_glimpse(images, loc, 3, 2, 2.0), atol=1e-6, rtol=0)


def test_geometry_dtype_float32_matches_the_reference_and_float64_is_the_default():
    # float64 images keep every sum in float64, so the geometry's own rounding is what is compared
    torch.manual_seed(2)
    images = torch.rand(4, 2, 200, 200, dtype=torch.float64)
    loc = torch.rand(4, 2, dtype=torch.float64) * 2.2 - 1.1
    ref = naive_glimpse(images, loc, 5, 3, 2.0)
    exact = glimpse(images, loc, 5, 3, 2.0)
    assert torch.allclose(exact, ref, atol=1e-10, rtol=0)
    assert torch.equal(exact, glimpse(images, loc, 5, 3, 2.0, geometry=torch.float64))
    rough = glimpse(images, loc, 5, 3, 2.0, geometry=torch.float32)
    assert (rough - exact).abs().max() > 1e-9  # the edges were formed in float32: off by ~1e-5 px at 200 px
    assert torch.allclose(rough, ref, atol=1e-4, rtol=0)  # and the glimpses stay close to the reference


def test_aligned_depth1_is_the_image_slice():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 10, 12)
    # a 4x4 patch covering rows 2..5 and columns 6..9 has its center at pixel point (u, v) = (8, 4)
    loc = torch.tensor([[8 / 12 * 2 - 1, 4 / 10 * 2 - 1]]).expand(2, 2)
    out = glimpse(images, loc, size=4, depth=1)
    assert torch.allclose(out, images[:, :, 2:6, 6:10], atol=1e-6)


def test_aligned_second_scale_is_the_pooled_slice():
    torch.manual_seed(0)
    images = torch.rand(1, 1, 16, 16)
    loc = torch.zeros(1, 2)  # center (8, 8): the 8x8 patch is rows/cols 4..11, each cell a 2x2 mean
    out = glimpse(images, loc, size=4, depth=2, scale=2.0)
    assert torch.allclose(out[:, :1], images[:, :, 6:10, 6:10], atol=1e-6)
    assert torch.allclose(out[:, 1:], F.avg_pool2d(images[:, :, 4:12, 4:12], 2), atol=1e-6)


def test_half_pixel_shift_averages_neighbours():
    # a 1x1 glimpse centered on the edge between pixels 0 and 1 of row 0 (cell [0.5, 1.5] x [0, 1])
    images = torch.tensor([[[[1.0, 3.0, 7.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]])
    loc = torch.tensor([[1.0 / 3 * 2 - 1, 0.5 / 3 * 2 - 1]])
    assert glimpse(images, loc, 1).item() == pytest.approx(0.5 * 1 + 0.5 * 3)


def test_outside_reads_zero():
    images = torch.ones(1, 1, 8, 8)
    # centered on the top-left corner: a 4x4 patch has its bottom-right 2x2 quadrant inside
    out = glimpse(images, torch.tensor([[-1.0, -1.0]]), 4)[0, 0]
    expected = torch.zeros(4, 4)
    expected[2:, 2:] = 1
    assert torch.equal(out, expected)
    assert glimpse(images, torch.tensor([[5.0, 0.0]]), 4).abs().max() == 0  # fully outside


def test_shapes_non_square_three_channel_and_scale_order():
    images = torch.zeros(5, 3, 24, 40)
    images[:, 1] = 1.0  # only the green channel is lit
    out = GlimpseSensor(6, depth=3, scale=2.0)(images, torch.zeros(5, 2))
    assert out.shape == (5, 9, 6, 6)
    # channels are scale-major: (scale 0: R G B, scale 1: R G B, ...); the 24-px patch is all inside
    assert torch.allclose(out[:, [1, 4, 7]], torch.ones(5, 3, 6, 6))
    assert out[:, [0, 2, 3, 5, 6, 8]].abs().max() == 0


def test_gradient_reaches_the_image():
    torch.manual_seed(0)
    images = torch.rand(2, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    loc = torch.tensor([[0.13, -0.41], [0.9, 0.7]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: glimpse(x, loc, 3, 2, 1.7), (images,))
    # the gradient of the sum of a depth-1 aligned glimpse is 1/1 on the covered pixels, 0 elsewhere
    img = torch.rand(1, 1, 8, 8, requires_grad=True)
    glimpse(img, torch.zeros(1, 2), 2).sum().backward()
    expected = torch.zeros(8, 8)
    expected[3:5, 3:5] = 1
    assert torch.allclose(img.grad[0, 0], expected)


def test_boxes():
    loc = torch.tensor([[0.0, 0.5]])
    boxes = glimpse_boxes(loc, 4, 2, 2.0, (20, 40))  # (1, 2, 4)
    # 4 px of a 40-px width is 0.2 wide (half 0.1); 4 px of 20 px height is 0.4 (half 0.2); doubled at scale 1
    expected = torch.tensor([[[-0.1, 0.3, 0.1, 0.7], [-0.2, 0.1, 0.2, 0.9]]])
    assert torch.allclose(boxes, expected)


def test_bad_geometry_names_the_argument():
    with pytest.raises(ValueError, match="size=0 must be at least 1 pixel; use size >= 1"):
        glimpse(torch.zeros(1, 1, 8, 8), torch.zeros(1, 2), 0)
    with pytest.raises(ValueError, match="depth=0 must be at least 1; use depth >= 1"):
        GlimpseSensor(4, depth=0)
    with pytest.raises(ValueError, match="scale=0"):
        GlimpseSensor(4, scale=0)


@pytest.mark.parametrize("size,depth,scale", [(4, 3, 2.0), (5, 3, 1.5), (3, 2, 0.7)])
def test_huge_image_equals_small_image_with_the_same_surroundings(size, depth, scale):
    # the sensor reads only a window around the location: a 15x11 image alone (zero outside) and the same
    # image pasted into a zero 300x260 canvas give the same glimpses at the same point, borders included
    torch.manual_seed(3)
    small = torch.rand(4, 2, 11, 15)
    big = torch.zeros(4, 2, 260, 300)
    top, left = 97, 181
    big[:, :, top:top + 11, left:left + 15] = small
    # pixel-unit points in the small image: inside, on its border, off its corner, far outside
    uv = torch.tensor([[7.3, 5.5], [0.2, 10.9], [-1.7, -2.4], [40.0, 3.1]], dtype=torch.float64)
    loc_small = (uv / torch.tensor([15.0, 11.0], dtype=torch.float64) * 2 - 1).float()
    loc_big = ((uv + torch.tensor([left, top])) / torch.tensor([300.0, 260.0], dtype=torch.float64) * 2 - 1).float()
    out_small = glimpse(small, loc_small, size, depth, scale)
    out_big = glimpse(big, loc_big, size, depth, scale)
    assert out_small.abs().max() > 0.1  # the test looks at real content
    # float32 locations round the point differently in the two frames (~1e-5 px on a 300-px axis)
    assert torch.allclose(out_small, out_big, atol=5e-5, rtol=0)
    assert torch.allclose(out_small.double(), naive_glimpse(small, loc_small, size, depth, scale), atol=1e-5, rtol=0)


def test_patch_larger_than_the_image_on_every_side():
    # scale 3 at depth 3: a 45-px patch around a 7x9 image; the window is the whole image
    torch.manual_seed(4)
    images = torch.rand(3, 1, 7, 9)
    loc = torch.tensor([[0.1, -0.2], [0.95, 0.9], [-1.3, 0.4]])
    out = glimpse(images, loc, 5, 3, 3.0)
    assert torch.allclose(out.double(), naive_glimpse(images, loc, 5, 3, 3.0), atol=1e-6, rtol=0)
    # centered at (4.5, 3.5), the middle 9-px cell of the 45-px patch is [0, 9] x [-1, 8]: the whole image
    centered = glimpse(images, torch.zeros(3, 2), 5, 3, 3.0)  # (3, 3, 5, 5)
    assert torch.allclose(centered[:, 2, 2, 2], images.sum((1, 2, 3)) / 81)


def test_gradient_reaches_the_location_between_kinks():
    # the output is piecewise linear in the center; away from a kink the location gradient is exact
    torch.manual_seed(5)
    images = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    # integer cell widths (1, 2) and centers 0.37 / 0.61 px off the pixel grid: no edge crosses a pixel edge
    loc = ((torch.tensor([[6.37, 9.61], [3.61, 11.37]], dtype=torch.float64) / 8) - 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda l: glimpse(images, l, 3, 2, 2.0), (loc,), eps=1e-7)
    glimpse(images, loc, 3, 2, 2.0).sum().backward()
    assert loc.grad.abs().sum() > 0


def test_non_finite_locations_read_zero():
    images = torch.rand(4, 1, 10, 10)
    loc = torch.tensor([[float("nan"), 0.0], [0.0, float("inf")], [-float("inf"), 0.3], [1e30, -1e30]])
    out = glimpse(images, loc, 4, 2)
    assert torch.equal(out, torch.zeros(4, 2, 4, 4))


def test_low_precision_images_are_summed_in_float32():
    torch.manual_seed(6)
    images = torch.rand(2, 3, 40, 40).bfloat16()
    loc = torch.tensor([[0.21, -0.33], [-0.9, 0.77]])
    out = glimpse(images, loc, 6, 3, 2.0)
    assert out.dtype == torch.bfloat16
    ref = naive_glimpse(images.float(), loc, 6, 3, 2.0)
    assert torch.allclose(out.double(), ref, atol=1e-2, rtol=0)  # one bfloat16 rounding of the result
