import pytest
import torch
import torch.nn.functional as F

from attention_lightning.models.dham import DHAM


def delta_head(model: DHAM, gain: float = 60.0) -> None:
    """Make the head's single conv pass the image through unchanged (times ``gain``)."""
    conv = model.head.net[0]
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = gain
        conv.bias.zero_()


@pytest.mark.parametrize("padding,stride,kernel", [("same", 1, 5), ("valid", 1, 5), ("same", 2, 5), ("valid", 2, 3)])
def test_attention_lands_on_the_bright_pixel_for_any_head_padding(padding, stride, kernel):
    model = DHAM(head_channels=(), head_kernel=kernel, head_padding=padding, head_stride=stride).eval()
    delta_head(model)
    h, w = 40, 50
    # a pixel that lies on the head's cell lattice: cell i sits on pixel i*stride + offset
    row, col = 7 * stride + model.head.offset, 11 * stride + model.head.offset
    images = torch.zeros(1, 1, h, w)
    images[0, 0, row, col] = 1.0
    moments, half = model.locate(images)
    assert moments.center[0, 0].item() == pytest.approx((2 * col + 1) / w - 1, abs=1e-4)
    assert moments.center[0, 1].item() == pytest.approx((2 * row + 1) / h - 1, abs=1e-4)


def test_any_input_size_gives_logits():
    model = DHAM().eval()
    for size in [(60, 60), (120, 120), (80, 100)]:
        assert model(torch.rand(2, 1, *size)).shape == (2, 10)
    rgb = DHAM(in_channels=3, num_classes=7).eval()
    assert rgb(torch.rand(2, 3, 64, 64)).shape == (2, 7)


def test_cross_entropy_gradient_reaches_the_head_through_the_sampler():
    model = DHAM()
    x, y = torch.rand(4, 1, 60, 60), torch.randint(0, 10, (4,))
    terms, _ = model.loss_terms((x, y), "test")
    terms["ce"].backward()
    first_conv = model.head.net[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert model.log_scale_factor.grad is not None and model.log_scale_factor.grad.abs() > 0


def test_fixed_scale_factor_is_not_a_parameter():
    model = DHAM(learn_scale_factor=False, scale_factor=1.5)
    assert "log_scale_factor" not in dict(model.named_parameters())
    assert model.log_scale_factor.exp().item() == pytest.approx(1.5)


def test_attention_interface_shapes():
    model = DHAM().eval()
    x, y = torch.rand(3, 1, 64, 64), torch.randint(0, 10, (3,))
    att = model.attention((x, y))
    assert att.probs.shape == (3, 1, 10) and torch.allclose(att.probs.sum(-1), torch.ones(3, 1))
    assert att.boxes.shape == (3, 1, 1, 4) and att.maps.shape[:2] == (3, 1) and att.views.shape == (3, 1, 1, 28, 28)
    box = att.boxes[:, 0, 0]
    assert torch.all(box[:, 2] > box[:, 0]) and torch.all(box[:, 3] > box[:, 1])
    assert torch.equal(att.labels, y)


def toy_batch(n: int, canvas: int = 32, patch: int = 8, generator=None):
    """Class 0: an 8x8 patch with its top half lit, class 1: left half lit, at a random place on a black canvas.

    Returns images, labels and the patch centres in [-1, 1] coordinates.
    """
    y = torch.randint(0, 2, (n,), generator=generator)
    patterns = torch.zeros(2, patch, patch)
    patterns[0, : patch // 2] = 1.0
    patterns[1, :, : patch // 2] = 1.0
    xy = torch.randint(0, canvas - patch + 1, (n, 2), generator=generator)  # (n, 2) top-left (x, y)
    images = torch.zeros(n, 1, canvas, canvas)
    rows = xy[:, 1, None, None] + torch.arange(patch)[None, :, None]  # (n, patch, 1)
    cols = xy[:, 0, None, None] + torch.arange(patch)[None, None, :]  # (n, 1, patch)
    images[torch.arange(n)[:, None, None], 0, rows, cols] = patterns[y]
    centres = (2 * xy.float() + patch) / canvas - 1  # (n, 2)
    return images, y, centres


def test_dham_learns_a_toy_task():
    torch.manual_seed(0)
    model = DHAM(num_classes=2, head_channels=(8,), head_kernel=3, head_stride=1, crop_size=12, scale_factor=1.0,
                 classifier_channels=(16, 16), classifier_hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        x, y, _ = toy_batch(32, generator=g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    x, y, _ = toy_batch(256, generator=g)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10
    assert acc > 0.95
