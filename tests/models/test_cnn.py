import pytest
import torch

from attention_lightning import registry
from attention_lightning.run import commands as experiment
from attention_lightning.models.base import build_model
from attention_lightning.models.cnn import CNN
from tests.tiny import tiny_flags


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (28, 28), (120, 90)])
@pytest.mark.parametrize("channels,classes", [(1, 10), (3, 7)])
def test_any_image_size_and_channels_give_logits(size, channels, classes):
    model = CNN(num_classes=classes, in_channels=channels, conv_channels=(4, 8, 8), hidden=16).eval()
    assert model(torch.rand(2, channels, *size)).shape == (2, classes)


def test_attention_is_one_box_over_the_whole_image():
    model = CNN(conv_channels=(4,), hidden=8).eval()
    x, y = torch.rand(3, 1, 20, 30), torch.tensor([1, 2, 3])
    att = model.attention((x, y))
    assert att.boxes.shape == (3, 1, 1, 4) and att.boxes[:, 0, 0].tolist() == [[-1.0, -1.0, 1.0, 1.0]] * 3
    assert att.probs.shape == (3, 1, 10) and torch.allclose(att.probs.sum(-1), torch.ones(3, 1))
    assert torch.equal(att.probs[:, 0], model(x).softmax(-1)) and torch.equal(att.labels, y)
    assert att.steps == 1 and att.maps is None and att.views is None


def test_learns_which_half_holds_the_bright_square():
    # class = the half (left/right) of a 16x16 image that holds a 3x3 bright square, at a random place
    g = torch.Generator().manual_seed(0)
    n = 256
    labels = torch.randint(0, 2, (n,), generator=g)
    rows = torch.randint(0, 14, (n,), generator=g)
    cols = torch.randint(0, 6, (n,), generator=g) + 8 * labels + (labels == 0).long()  # left: 1..6, right: 8..13
    images = 0.1 * torch.rand(n, 1, 16, 16, generator=g)
    ys, xs = torch.arange(16)[:, None], torch.arange(16)[None, :]
    square = ((ys[None] - rows[:, None, None]).abs() <= 1) & ((xs[None] - cols[:, None, None]).abs() <= 1)  # (n, 16, 16)
    images[:, 0][square] = 1.0
    torch.manual_seed(0)
    model = CNN(num_classes=2, conv_channels=(8, 16), hidden=16, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(150):
        idx = torch.randint(0, n, (32,), generator=g)
        terms, _ = model.loss_terms((images[idx], labels[idx]), "train")
        opt.zero_grad()
        terms["ce"].backward()
        opt.step()
        losses.append(terms["ce"].item())
    model.eval()
    acc = (model(images).argmax(-1) == labels).float().mean().item()
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert acc > 0.9


def test_takes_data_facts_and_the_global_pool_any_size():
    facts = {"num_classes": 5, "in_channels": 3, "image_size": (24, 40)}
    model = build_model(CNN, facts, {"hidden": 8})
    assert model.hparams.num_classes == 5 and model.hparams.in_channels == 3
    assert model.hparams.image_size == (24, 40)
    assert model(torch.rand(2, 3, 24, 40)).shape == (2, 5)
    assert model(torch.rand(2, 3, 13, 9)).shape == (2, 5)  # the global pool does not depend on the data's size
    with pytest.raises(ValueError, match="'cnn' cannot use the data's vocab_size=12"):
        build_model(CNN, {**facts, "vocab_size": 12}, {})


def test_bad_arguments_name_the_flag():
    with pytest.raises(ValueError, match="--conv_channels must list"):
        CNN(conv_channels=())
    with pytest.raises(ValueError, match=r"--dropout=1.0 must be in \[0, 1\)"):
        CNN(dropout=1.0)
    with pytest.raises(ValueError, match="--hidden=0"):
        CNN(hidden=0)


def test_is_registered_and_fits_from_flags(tmp_path):
    assert registry.get_model("cnn").cls is CNN
    summary = experiment.fit(tiny_flags("cnn", max_epochs=1, default_root_dir=str(tmp_path)))
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0 and summary["global_step"] == 4


def test_the_papers_baseline_is_one_strided_layer_and_a_fully_connected_layer():
    # Mnih et al. 2014: 8 filters of 10x10 with stride 5, then 256 ReLU units; on 100x100 the map is 19x19
    model = CNN(image_size=(100, 100), conv_channels=(8,), kernel_size=10, stride=5, pool=False, head="flatten",
                hidden=256, dropout=0.0).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) == 1 and convs[0].kernel_size == (10, 10) and convs[0].stride == (5, 5)
    assert convs[0].padding == (0, 0) and not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert [(m.in_features, m.out_features) for m in linears] == [(8 * 19 * 19, 256), (256, 10)]
    assert model(torch.rand(2, 1, 100, 100)).shape == (2, 10)
    with pytest.raises(ValueError, match="--head=flatten needs the image size"):
        CNN(head="flatten")
    with pytest.raises(ValueError, match="--kernel_size=10 exceeds"):
        CNN(image_size=(8, 8), kernel_size=10)
