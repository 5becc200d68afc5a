import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from attention_lightning.models.dham import DHAM, AttentionHead, mip_crop
from attention_lightning.nn.affine_crop import affine_crop


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

    Returns images, labels and the patch centers in [-1, 1] coordinates.
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
    centers = (2 * xy.float() + patch) / canvas - 1  # (n, 2)
    return images, y, centers


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


# --- noise: a pooled head and an anti-aliased crop (issue 17) ----------------------------------------------
@pytest.mark.parametrize("pool,stride", [(2, 1), (4, 1), (2, 2)])
def test_pooled_head_lands_on_the_bright_block(pool, stride):
    model = DHAM(head_channels=(), head_kernel=3, head_stride=stride, head_pool=pool).eval()
    delta_head(model)
    assert model.head.stride == stride * pool
    h, w = 48, 64
    # pooled pixel (7*stride, 11*stride) is the lit pool x pool block; its cell sits on its center pixel
    r0, c0 = 7 * stride * pool, 11 * stride * pool
    images = torch.zeros(1, 1, h, w)
    images[0, 0, r0:r0 + pool, c0:c0 + pool] = 1.0
    moments, _ = model.locate(images)
    row, col = r0 + (pool - 1) / 2, c0 + (pool - 1) / 2  # center of the block in pixel units
    assert moments.center[0, 0].item() == pytest.approx((2 * col + 1) / w - 1, abs=1e-4)
    assert moments.center[0, 1].item() == pytest.approx((2 * row + 1) / h - 1, abs=1e-4)
    with pytest.raises(ValueError, match="--head_pool"):
        DHAM(head_pool=0)


def test_mip_crop_averages_blocks_when_zoomed_out_and_is_the_bilinear_crop_when_not():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 48, 48, generator=g)
    center, whole = torch.zeros(2, 2), torch.ones(2)
    # the whole image read at 24 or 12 pixels: steps of exactly 2 and 4 pixels, levels 1 and 2
    assert torch.allclose(mip_crop(x, center, whole, 24), F.avg_pool2d(x, 2), atol=1e-5)
    assert torch.allclose(mip_crop(x, center, whole, 12), F.avg_pool2d(x, 4), atol=1e-5)
    # step 3: log2(3) - 1 of the way from level 1 to level 2
    blend = math.log2(3) - 1
    expected = (1 - blend) * affine_crop(F.avg_pool2d(x, 2), center, whole, 16) + blend * affine_crop(
        F.avg_pool2d(x, 4), center, whole, 16)
    assert torch.allclose(mip_crop(x, center, whole, 16), expected, atol=1e-5)
    small_half = torch.tensor([0.3, 0.5])  # steps 0.3 * 48 / 28 < 1 and 0.86 < 1
    shifted = torch.tensor([[0.2, -0.1], [-0.3, 0.4]])
    assert torch.equal(mip_crop(x, shifted, small_half, 28), affine_crop(x, shifted, small_half, 28))


def test_mip_crop_removes_noise_that_the_bilinear_crop_keeps_and_passes_gradient_to_the_size():
    g = torch.Generator().manual_seed(0)
    noise = 0.5 * torch.randn(16, 1, 120, 120, generator=g)
    center, half = torch.zeros(16, 2), torch.full((16,), 0.9, requires_grad=True)
    aliased, averaged = affine_crop(noise, center, half, 28), mip_crop(noise, center, half, 28)
    assert aliased.std() > 0.3 and averaged.std() < 0.1  # mean of ~3.9^2 pixels: std 0.5 / 3.9
    averaged.square().sum().backward()
    assert half.grad.abs().sum() > 0
    model = DHAM(crop_antialias=True).eval()
    assert model(torch.rand(2, 1, 120, 120)).shape == (2, 10)


def test_pmf_temperature_keeps_the_initial_pmf_and_sharpens_it_faster():
    x, y = torch.rand(4, 1, 64, 64), torch.randint(0, 10, (4,))
    changes, first = [], []
    for temperature in (1.0, 0.1):
        torch.manual_seed(0)
        model = DHAM(head_channels=(8,), head_pool=2, head_stride=1, pmf_temperature=temperature)
        opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
        before = model.locate(x)[0].pmf.detach()
        first.append(before)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        changes.append((model.locate(x)[0].pmf.detach() - before).abs().sum().item())
    assert torch.allclose(first[0], first[1], atol=1e-7)
    assert changes[1] > 3 * changes[0], changes
    with pytest.raises(ValueError, match="--pmf_temperature"):
        DHAM(pmf_temperature=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_valid_padded_head_treats_border_and_interior_cells_of_noise_alike(seed):
    """On pure noise a 'same'-padded head's border cells (which read zero padding) give logits offset from the
    interior's by 0.3-2 interior stds, a feature a run can lock onto (the noisy preset's runs that ended at
    the image's edge); a valid-padded head has no such offset."""
    torch.manual_seed(seed)
    noise = 0.5 * torch.randn(32, 1, 120, 120)  # (B, 1, H, W): the noisy preset's background, no digit
    offsets = {}
    for padding in ("same", "valid"):
        head = AttentionHead(1, [32, 32], 5, padding, stride=1, pool=4).eval()
        with torch.no_grad():
            logits = head(noise)  # (B, h, w)
        ring = torch.zeros(logits.shape[-2:], dtype=torch.bool)  # the two outermost rings of cells
        ring[:2] = ring[-2:] = True
        ring[:, :2] = ring[:, -2:] = True
        inner = logits[:, ~ring]
        offsets[padding] = ((logits[:, ring].mean() - inner.mean()) / inner.std()).abs().item()
    assert offsets["same"] > 0.25  # 0.29-1.94 over seeds 0-9
    assert offsets["valid"] < 0.05  # 0.004-0.021 over seeds 0-9


@pytest.mark.parametrize("decay", [True, False])
def test_lr_decay_anneals_linearly_to_zero_over_the_trainers_steps(decay, tmp_path):
    seen = []

    class Watch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    x, y, _ = toy_batch(24, generator=torch.Generator().manual_seed(0))
    model = DHAM(num_classes=2, head_channels=(4,), head_kernel=3, head_stride=1, crop_size=8,
                 classifier_channels=(4, 4), classifier_hidden=8, lr=0.01, lr_decay=decay)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Watch()],
                         default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=8))  # 3 steps x 2 epochs
    expected = [0.01 * (1 - k / 6) for k in range(6)] if decay else [0.01] * 6
    assert seen == pytest.approx(expected)
