"""Fashion-MNIST as the object source: where it is read from, how a bad file is refused, and what reaches the run."""
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from attention_lightning import viz
from attention_lightning.attention import Attention
from datamodules import fashion
from datamodules.cluttered_mnist import ClutteredMNIST
from datamodules.digits import load_digits


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 0x0803 if array.ndim == 3 else 0x0801
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape) + array.astype(
        np.uint8).tobytes()


@pytest.fixture
def small_fashion(tmp_path, monkeypatch):
    """Four small files in the real idx format (gzipped, as published), registered as 'the official files'."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(40) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
              "t10k-labels-idx1-ubyte": (np.arange(20) * 3) % 10}
    folder = tmp_path / "data" / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    files = {}
    for name, array in arrays.items():
        raw = idx_bytes(array)
        packed = gzip.compress(raw, mtime=0)
        (folder / f"{name}.gz").write_bytes(packed)
        files[name] = fashion.IdxFile(name, hashlib.md5(packed).hexdigest(), hashlib.md5(raw).hexdigest(),
                                      array.shape)
    monkeypatch.setattr(fashion, "FILES", files)
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "no-debian-package")
    monkeypatch.setenv("ATTENTION_LIGHTNING_OFFLINE", "1")
    fashion.load.cache_clear()
    yield tmp_path / "data", arrays
    fashion.load.cache_clear()


def test_torchvision_layout_is_read_with_its_labels_and_class_names(small_fashion, capsys):
    data_dir, arrays = small_fashion
    d = load_digits(str(data_dir), source="fashion")
    assert d.source == "fashion" and d.train_images.shape == (40, 28, 28) and d.test_images.shape == (20, 28, 28)
    assert torch.equal(d.train_images, torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.uint8)))
    assert d.test_labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert d.class_names[1] == "Trouser" and d.class_names[9] == "Ankle boot"
    assert "Fashion-MNIST from" in capsys.readouterr().err


def test_a_folder_of_the_four_files_and_plain_files_are_read(small_fashion, tmp_path):
    data_dir, arrays = small_fashion
    flat = tmp_path / "debian-like"
    flat.mkdir()
    for p in (data_dir / "FashionMNIST" / "raw").iterdir():
        (flat / p.name).write_bytes(p.read_bytes())  # gzipped, in the folder itself
    d = load_digits(str(flat), source="fashion", announce=False)
    assert d.train_labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    plain = tmp_path / "extracted" / "FashionMNIST" / "raw"
    plain.mkdir(parents=True)
    for p in flat.iterdir():  # as torchvision extracts them
        (plain / p.stem).write_bytes(gzip.decompress(p.read_bytes()))
    fashion.load.cache_clear()
    d = load_digits(str(tmp_path / "extracted"), source="fashion", announce=False)
    assert d.test_labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_missing_truncated_or_changed_files_stop_with_one_line_naming_them(small_fashion, tmp_path):
    data_dir, _ = small_fashion
    with pytest.raises(fashion.FashionMNISTError, match="apt-get install dataset-fashion-mnist") as e:
        load_digits(str(tmp_path / "empty"), source="fashion")
    assert "\n" not in str(e.value)
    raw = data_dir / "FashionMNIST" / "raw"
    labels = raw / "train-labels-idx1-ubyte.gz"
    good = labels.read_bytes()
    labels.write_bytes(good[: len(good) // 2])  # a download cut short
    fashion.load.cache_clear()
    with pytest.raises(fashion.FashionMNISTError, match="train-labels-idx1-ubyte.gz is not a complete gzip"):
        load_digits(str(data_dir), source="fashion")
    content = bytearray(gzip.decompress(good))
    content[-1] ^= 1  # one label changed
    labels.write_bytes(gzip.compress(bytes(content)))
    fashion.load.cache_clear()
    with pytest.raises(fashion.FashionMNISTError, match="train-labels-idx1-ubyte.gz is not the official"):
        load_digits(str(data_dir), source="fashion")
    labels.unlink()
    fashion.load.cache_clear()
    with pytest.raises(fashion.FashionMNISTError, match="none of"):
        load_digits(str(data_dir), source="fashion")


def test_a_wrong_length_is_named_even_when_the_checksum_table_allows_it(tmp_path):
    raw = idx_bytes(np.zeros((3, 28, 28)))[:-5]
    with pytest.raises(fashion.FashionMNISTError, match="truncated or padded"):
        fashion.parse_idx(raw, Path("x"))
    with pytest.raises(fashion.FashionMNISTError, match="not an idx file"):
        fashion.parse_idx(b"\x00\x00\x0d\x03abcd", Path("x"))


def test_datamodule_draws_objects_and_clutter_from_fashion_and_names_the_classes(small_fashion):
    data_dir, arrays = small_fashion
    dm = ClutteredMNIST(variant="cluttered", canvas_size=60, digits="fashion", data_dir=str(data_dir),
                        train_size=16, val_size=8, val_fraction=0.25)
    dm.setup()
    assert dm.digit_source.startswith("fashion (60 images: 40 train, 20 test)")
    assert len(dm.train_set.labels) == 30 and len(dm.val_set.labels) == 10  # val carved out of the 40 train
    assert len(dm.test_set) == 20 and sorted(dm.test_set.labels.tolist()) == sorted(
        arrays["t10k-labels-idx1-ubyte"].tolist())
    train_pool = {a.tobytes() for a in arrays["train-images-idx3-ubyte"].astype(np.uint8)}
    assert all(img.tobytes() in train_pool for img in dm.train_set.images)
    assert dm.facts().class_names[0] == "T-shirt/top"
    img, label, where = dm.test_set.render(0)
    x, y, s = where["digit"]
    obj = (img[y:y + s, x:x + s] * 255).round().astype(np.uint8)
    assert np.array_equal(np.maximum(obj, dm.test_set.images[0]), obj)  # the object is drawn (clutter may add)
    att = Attention(images=torch.zeros(2, 1, 8, 8), probs=torch.eye(10)[[1, 9]][:, None], labels=torch.tensor([1, 0]))
    assert viz.captions(att, dm.class_names) == ["pred Trouser (100%), true Trouser",
                                                 "pred Ankle boot (100%), true T-shirt/top"]


@pytest.mark.skipif(fashion.find_folder("data") is None, reason="Fashion-MNIST is not on this machine "
                    "(apt-get install dataset-fashion-mnist)")
def test_the_real_files_pass_their_checksums_and_are_balanced():
    fashion.load.cache_clear()
    train_x, train_y, test_x, test_y, _ = fashion.load("data")
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert train_y.bincount().tolist() == [6000] * 10 and test_y.bincount().tolist() == [1000] * 10
