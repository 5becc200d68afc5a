import pytest
import torch

from attention_lightning.nn.coords import pixel_centers
from attention_lightning.nn.grid_glimpse import GlimpseGrid, all_glimpses, glimpses_at, grid_for


@pytest.mark.parametrize("side,size,stride,shape", [(32, 8, 4, (7, 7)), (64, 16, 8, (7, 7))])
def test_paper_grids_derive_from_the_image_side(side, size, stride, shape):
    grid = grid_for(side)
    assert (grid.size, grid.stride, grid.shape, grid.cells) == (size, stride, shape, shape[0] * shape[1])
    assert grid_for((side, side)) == grid


def test_explicit_sizes_and_rectangular_images():
    grid = grid_for((32, 48), glimpse_size=8, glimpse_stride=8)
    assert grid.shape == (4, 6)
    with pytest.raises(ValueError, match="glimpse_size=40 exceeds image 32x32; use glimpse_size <= 32"):
        grid_for(32, glimpse_size=40)


@pytest.mark.parametrize("h,w,g,s", [(32, 32, 8, 4), (64, 64, 16, 8), (20, 28, 6, 5)])
def test_all_glimpses_equal_slicing(h, w, g, s):
    images = torch.randn(2, 3, h, w)
    grid = GlimpseGrid((h, w), g, s)
    gh, gw = grid.shape
    out = all_glimpses(images, grid)
    assert out.shape == (2, gh * gw, 3, g, g)
    for i in range(gh):
        for j in range(gw):
            torch.testing.assert_close(out[:, i * gw + j], images[:, :, i * s:i * s + g, j * s:j * s + g], rtol=0, atol=0)


def test_glimpses_at_chosen_cells_equal_slicing():
    images = torch.randn(4, 3, 32, 32)
    grid = grid_for(32)
    cells = torch.tensor([0, 6, 42, 24])  # top-left, top-right, bottom-left, center
    out = glimpses_at(images, cells, grid)
    assert out.shape == (4, 3, 8, 8)
    for b, k in enumerate(cells.tolist()):
        i, j = divmod(k, 7)
        torch.testing.assert_close(out[b], images[b, :, 4 * i:4 * i + 8, 4 * j:4 * j + 8], rtol=0, atol=0)


def test_centers_and_boxes_follow_the_pixel_convention():
    grid = grid_for(32)
    centers, boxes = grid.centers(), grid.boxes()
    # cell (row 1, col 2) covers rows 4..11 and columns 8..15: its center is the mean of those pixel centers
    px = pixel_centers(32)
    k = 1 * 7 + 2
    assert centers[k, 0].item() == pytest.approx(px[8:16].mean().item(), abs=1e-6)
    assert centers[k, 1].item() == pytest.approx(px[4:12].mean().item(), abs=1e-6)
    torch.testing.assert_close(boxes[0], torch.tensor([-1.0, -1.0, -0.5, -0.5]))
    torch.testing.assert_close(boxes[-1], torch.tensor([0.5, 0.5, 1.0, 1.0]))
