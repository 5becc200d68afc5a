import torch

from attention_lightning.nn.affine_crop import affine_crop


def aligned(a: int, side: int, full: int) -> float:
    """Center in [-1, 1] of a ``side``-pixel window starting at pixel ``a`` of a ``full``-pixel axis."""
    return (2 * a + side) / full - 1


def test_crop_reproduces_sub_image_exactly_at_aligned_coordinates():
    images = torch.rand(2, 3, 40, 50)
    # window of 7x7 at (x=11, y=5) for image 0 and (x=30, y=20) for image 1
    center = torch.tensor([[aligned(11, 7, 50), aligned(5, 7, 40)], [aligned(30, 7, 50), aligned(20, 7, 40)]])
    half = torch.tensor([[7 / 50, 7 / 40], [7 / 50, 7 / 40]])
    out = affine_crop(images, center, half, 7)
    assert out.shape == (2, 3, 7, 7)
    assert torch.allclose(out[0], images[0, :, 5:12, 11:18], atol=2e-5)
    assert torch.allclose(out[1], images[1, :, 20:27, 30:37], atol=2e-5)


def test_square_crop_with_scalar_half_on_square_image():
    images = torch.rand(1, 1, 120, 120)
    c = aligned(50, 28, 120)
    out = affine_crop(images, torch.tensor([[c, aligned(10, 28, 120)]]), torch.tensor([28 / 120]), 28)
    assert torch.allclose(out[0, 0], images[0, 0, 10:38, 50:78], atol=2e-5)


def test_outside_reads_zero_and_gradients_reach_center_and_size():
    images = torch.rand(1, 1, 16, 16)
    far = affine_crop(images, torch.tensor([[3.0, 3.0]]), torch.tensor([0.2]), 4)
    assert far.abs().max() == 0
    center = torch.tensor([[0.1, -0.2]], requires_grad=True)
    half = torch.tensor([0.3], requires_grad=True)
    affine_crop(images, center, half, 5).square().sum().backward()
    assert center.grad.abs().sum() > 0 and half.grad.abs().sum() > 0
