import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.cluttered_mnist import ClutteredMNIST
from datamodules.digits import load_digits


def make(**kw):
    dm = ClutteredMNIST(digits="embedded", train_size=64, val_size=32, test_size=32, **kw)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def dham():
    return make(variant="dham")


def test_val_and_test_items_are_identical_across_instances(dham):
    other = make(variant="dham")
    for split in ("val_set", "test_set"):
        a, b = getattr(dham, split), getattr(other, split)
        for i in (0, 5, 31):
            assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]
    # and different indices give different images
    assert not torch.equal(dham.val_set[0][0], dham.val_set[1][0])


def test_train_items_vary_with_the_rng_and_repeat_under_the_same_seed(dham):
    torch.manual_seed(1)
    first = dham.train_set[3][0]
    second = dham.train_set[3][0]  # the RNG advanced: a new render (as in the next epoch)
    torch.manual_seed(1)
    again = dham.train_set[3][0]
    assert not torch.equal(first, second)
    assert torch.equal(first, again)


@pytest.mark.parametrize("variant,canvas,side", [("dham", 120, None), ("translated", 60, 28), ("cluttered", 60, 28)])
def test_digit_lies_fully_inside_the_canvas(variant, canvas, side):
    dm = make(variant=variant)
    for i in range(20):
        img, label, where = dm.val_set.render(i)
        assert img.shape == (canvas, canvas) and 0 <= label <= 9
        x, y, s = where["digit"]
        assert 0 <= x and 0 <= y and x + s <= canvas and y + s <= canvas
        if side is not None:
            assert s == side
        else:
            assert 0.8 * 28 - 1 <= s <= 1.6 * 28 + 1
        if variant != "cluttered":  # nothing outside the digit's box
            mask = np.ones_like(img, dtype=bool)
            mask[y:y + s, x:x + s] = False
            assert img[mask].max() == 0 and img[~mask].max() > 0


def test_cluttered_has_the_requested_pieces_and_nothing_else():
    dm = make(variant="cluttered", canvas_size=100, clutter=8)
    for i in range(10):
        img, _, where = dm.val_set.render(i)
        assert len(where["clutter"]) == 8
        covered = np.zeros_like(img, dtype=bool)
        for x, y, k in where["clutter"] + [where["digit"]]:
            assert 0 <= x and x + k <= 100 and 0 <= y and y + k <= 100
            covered[y:y + k, x:x + k] = True
        assert img[~covered].max() == 0


def test_snr_sets_the_background_noise_level():
    dm = make(variant="dham", snr=4.0)
    img, _, where = dm.val_set.render(0)
    x, y, s = where["digit"]
    mask = np.ones_like(img, dtype=bool)
    mask[y:y + s, x:x + s] = False
    assert img[mask].std() == pytest.approx(0.25, rel=0.05)
    assert abs(img[mask].mean()) < 0.01


def test_three_channels_and_dims():
    dm = make(variant="translated", canvas_size=32, channels=3)
    x, _ = dm.val_set[0]
    assert x.shape == (3, 32, 32) and dm.dims == (3, 32, 32)
    assert torch.equal(x[0], x[2])


def test_val_digits_are_carved_from_train_digits_and_disjoint():
    dm = make(variant="translated")
    train, val = dm.train_set.images, dm.val_set.images
    assert len(train) + len(val) == 4000 and len(val) == 400
    train_keys = {t.tobytes() for t in train}
    assert not any(v.tobytes() in train_keys for v in val)


def test_bad_geometry_is_a_clear_error():
    with pytest.raises(ValueError, match="--canvas_size"):
        make(variant="dham", canvas_size=30)
    with pytest.raises(ValueError, match="variant"):
        ClutteredMNIST(variant="spiral")


def test_embedded_digits_are_real_and_balanced():
    d = load_digits(source="embedded", announce=False)
    assert d.train_images.shape == (4000, 28, 28) and d.test_images.shape == (1000, 28, 28)
    assert d.train_images.dtype == torch.uint8 and d.train_images.max() > 200
    assert torch.bincount(d.test_labels).tolist() == [100] * 10
    assert torch.bincount(d.train_labels).tolist() == [400] * 10


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0803 if array.ndim == 3 else 0x0801
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def make_mnist_raw(root: Path, n_train=30, n_test=10) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(n_train) % 10)
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10)


def test_mnist_raw_folder_is_read_when_present(tmp_path, capsys):
    make_mnist_raw(tmp_path)
    d = load_digits(str(tmp_path), source="auto")
    assert d.source == "mnist" and d.train_images.shape == (30, 28, 28) and d.test_labels.tolist() == list(range(10))
    assert "mnist (40 digits" in capsys.readouterr().err


def test_auto_falls_back_to_embedded_loudly_and_mnist_mode_fails_clearly(tmp_path, capsys):
    d = load_digits(str(tmp_path), source="auto")
    assert d.source == "embedded"
    err = capsys.readouterr().err
    assert "EMBEDDED" in err and "5000 digits" in err
    with pytest.raises(ValueError, match="--digits=embedded"):  # a DatasetError: one line from the CLI
        load_digits(str(tmp_path), source="mnist")


def test_digit_source_is_recorded_in_hyperparameters():
    dm = make(variant="translated")
    assert dm.hparams["digit_source"].startswith("embedded (5000 digits")


def test_a_small_test_split_sees_every_class():
    # the embedded digits are stored class by class: the first 50 of them in file order are all zeros
    dm = ClutteredMNIST(variant="translated", digits="embedded", train_size=8, val_size=8, test_size=50)
    dm.setup()
    labels = torch.as_tensor(dm.test_set.labels[:50])  # item i shows digit i (mod the digit count)
    assert len(dm.test_set) == 50 and labels.unique().numel() == 10
    full = ClutteredMNIST(variant="translated", digits="embedded", train_size=8, val_size=8)
    full.setup()
    assert torch.as_tensor(full.test_set.labels).bincount().tolist() == [100] * 10  # the same digits, reordered
