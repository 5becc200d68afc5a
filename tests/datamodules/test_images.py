"""The image datamodules read tiny fixtures written in the published on-disk formats (datamodules/tiny_datasets.py)."""
import pickle
import socket

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from attention_lightning import registry
from attention_lightning.signature import parameters
from datamodules.base import DatasetError
from datamodules.cifar import CIFAR10, CIFAR100
from datamodules.folders import CINIC10, TinyImageNet
from datamodules.images import DOWNLOAD_TIMEOUT, balanced_order, carve
from datamodules.svhn import SVHN
from datamodules.tiny_datasets import (CIFAR10_NAMES, class_value, make_cifar10, make_cifar100, make_cinic10, make_svhn,
                            make_tiny_imagenet)

RAW = dict(normalize=False, random_crop=False, hflip=False)  # items are the stored pixels / 255


def pixels(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (C, H, W) integer levels 0..255."""
    return np.rint(x.numpy() * 255).astype(int)


def check_paired(dataset, tol: int = 0, size: int = 32) -> None:
    """Every item's red channel encodes its label and its blue channel the column (not the row)."""
    assert len(dataset) > 0
    for i in range(len(dataset)):
        x, y = dataset[i]
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        p = pixels(x)
        assert np.abs(p[0] - class_value(y)).max() <= tol, (i, y, p[0].mean())
        columns = np.arange(size) * (256 // size)
        assert np.abs(p[2] - columns[None, :]).max() <= tol + 2, "image transposed or channels mixed"


# ------------------------------------------------------------------ fixtures are the real formats

def test_cifar_fixtures_read_the_same_through_torchvision(tmp_path, monkeypatch):
    """torchvision's own CIFAR and SVHN readers (md5 check bypassed for the fixture) agree with ours."""
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.svhn as tv_svhn

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: True)
    monkeypatch.setattr(tv_svhn, "check_integrity", lambda path, md5=None: True)
    make_cifar10(tmp_path)
    make_cifar100(tmp_path)
    make_svhn(tmp_path)
    for ours, theirs in (
        (CIFAR10(str(tmp_path), checksum=False, **RAW), tv_cifar.CIFAR10(str(tmp_path), train=False)),
        (CIFAR100(str(tmp_path), checksum=False, **RAW), tv_cifar.CIFAR100(str(tmp_path), train=False)),
        (SVHN(str(tmp_path), checksum=False, **RAW), tv_svhn.SVHN(str(tmp_path), split="test")),
    ):
        ours.setup()
        assert len(ours.test_set) == len(theirs)
        assert sorted(ours.test_set.indices.tolist()) == list(range(len(theirs)))
        for k, i in enumerate(ours.test_set.indices.tolist()):  # our order is class-balanced, not the file's
            img, label = theirs[i]
            x, y = ours.test_set[k]
            assert y == label
            assert np.array_equal(pixels(x), np.asarray(img).transpose(2, 0, 1))
        if hasattr(theirs, "classes"):
            assert ours.class_names == theirs.classes


# ------------------------------------------------------------------ CIFAR-10 / CIFAR-100

def test_cifar10_shapes_labels_names_splits(tmp_path):
    make_cifar10(tmp_path, per_batch=4, test_size=6)
    dm = CIFAR10(str(tmp_path), checksum=False, val_fraction=0.25, **RAW)
    assert dm.num_classes == 10 and dm.dims == (3, 32, 32)
    dm.setup()
    assert dm.class_names == CIFAR10_NAMES
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (15, 5, 6)
    # val is carved from the 20 training images: disjoint from train, together all of them
    assert set(dm.train_set.indices).isdisjoint(dm.val_set.indices)
    assert sorted([*dm.train_set.indices, *dm.val_set.indices]) == list(range(20))
    for split in (dm.train_set, dm.val_set, dm.test_set):
        check_paired(split)
    # all five batches are read, in order: training image i has label i % 10 and green level i
    x, y = dm.val_set[len(dm.val_set) - 1]
    i = int(dm.val_set.indices[-1])
    assert y == i % 10 and pixels(x)[1].max() == i
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (15, 3, 32, 32) and yb.dtype == torch.int64


def test_cifar100_reads_fine_labels_and_meta_names(tmp_path):
    make_cifar100(tmp_path, train_size=20, test_size=14, n_used=7)
    dm = CIFAR100(str(tmp_path), checksum=False, **RAW)
    assert dm.num_classes == 100
    dm.setup()
    assert dm.class_names == [f"fine{i:02d}" for i in range(100)]  # from the meta file, not the constant
    assert dm.test_set.source.labels.tolist() == list(range(7)) * 2  # fine labels (the coarse ones are k // 5)
    check_paired(dm.test_set)
    check_paired(dm.train_set)


def test_normalization_uses_the_dataset_mean_and_std(tmp_path):
    make_cifar10(tmp_path)
    raw = CIFAR10(str(tmp_path), checksum=False, **RAW)
    norm = CIFAR10(str(tmp_path), checksum=False, random_crop=False, hflip=False)
    raw.setup()
    norm.setup()
    x, _ = raw.test_set[3]
    z, _ = norm.test_set[3]
    mean, std = torch.tensor(CIFAR10.mean)[:, None, None], torch.tensor(CIFAR10.std)[:, None, None]
    torch.testing.assert_close(z, (x - mean) / std)


def test_checksum_rejects_files_that_differ_from_the_published_ones(tmp_path):
    make_cifar10(tmp_path)
    dm = CIFAR10(str(tmp_path))  # checksum=True by default
    with pytest.raises(DatasetError, match=r"data_batch_1 does not match the published md5.*--checksum=false"):
        dm.setup()


def test_missing_cifar_gives_one_error_with_layout_and_page(tmp_path):
    with pytest.raises(DatasetError) as e:
        CIFAR10(str(tmp_path / "nowhere"), download=False)
    msg = str(e.value)
    assert "cifar-10-batches-py/data_batch_1 does not exist" in msg
    assert "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg
    # ATTENTION_LIGHTNING_OFFLINE (set by conftest) rules out a download: the error comes at construction
    with pytest.raises(DatasetError, match=r"cifar-100-python/train does not exist and ATTENTION_LIGHTNING_OFFLINE"):
        CIFAR100(str(tmp_path / "nowhere"))


def test_failed_download_is_reported_by_setup(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTENTION_LIGHTNING_OFFLINE", raising=False)
    calls = []

    def fail():
        calls.append(socket.getdefaulttimeout())
        raise OSError("[Errno -2] Name or service not known")

    dm = SVHN(str(tmp_path / "svhn"))
    monkeypatch.setattr(dm, "fetch", fail)
    before = socket.getdefaulttimeout()
    dm.prepare_data()
    assert calls == [DOWNLOAD_TIMEOUT] and socket.getdefaulttimeout() == before  # a timeout, then restored
    with pytest.raises(DatasetError, match=r"svhn/train_32x32.mat does not exist and the download failed "
                                           r"\(OSError: \[Errno -2\] Name or service not known\)\. SVHN is expected"):
        dm.setup()


def test_malformed_cifar_batch_names_the_file(tmp_path):
    make_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match=r"data_batch_3 is not a CIFAR python batch"):
        CIFAR10(str(tmp_path), checksum=False).setup()
    # a batch with the wrong row length
    with open(bad, "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}, f, protocol=2)
    with pytest.raises(DatasetError, match=r"data_batch_3: 'data' has shape \(4, 100\), expected \(4, 3072\)"):
        CIFAR10(str(tmp_path), checksum=False).setup()


def test_cifar_batches_cannot_run_code(tmp_path):
    """Only dicts, lists and numpy arrays are unpickled: a batch referring to any other callable is refused."""
    make_cifar10(tmp_path)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f, protocol=2)
    with pytest.raises(DatasetError, match=r"test_batch is not a CIFAR python batch.*refusing to load"):
        CIFAR10(str(tmp_path), checksum=False).setup()
    assert not marker.exists()


# ------------------------------------------------------------------ SVHN

def test_svhn_label_10_is_digit_0_and_extra_joins_train(tmp_path):
    make_svhn(tmp_path, train_size=20, test_size=6, extra_size=10)
    dm = SVHN(str(tmp_path), checksum=False, **RAW)
    assert dm.class_names == [str(d) for d in range(10)] and dm.dims == (3, 32, 32)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (18, 2, 6)
    assert dm.test_set.source.labels.tolist() == [0, 1, 2, 3, 4, 5]  # stored as y = 10, 1, ..., 5
    for split in (dm.train_set, dm.val_set, dm.test_set):
        check_paired(split)
    extra = SVHN(str(tmp_path), checksum=False, use_extra=True, **RAW)
    extra.setup()
    assert len(extra.train_set) + len(extra.val_set) == 30
    check_paired(extra.train_set)
    # extra_32x32.mat is required only with use_extra
    (tmp_path / "extra_32x32.mat").unlink()
    with pytest.raises(DatasetError, match=r"extra_32x32.mat does not exist and --download=false"):
        SVHN(str(tmp_path), checksum=False, use_extra=True, download=False)


def test_svhn_malformed_mat_names_the_file(tmp_path):
    from scipy.io import savemat

    make_svhn(tmp_path)
    savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((28, 28, 1, 3), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(DatasetError, match=r"test_32x32.mat should hold X \(32, 32, 3, N\)"):
        SVHN(str(tmp_path), checksum=False).setup()
    (tmp_path / "test_32x32.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"test_32x32.mat is not an SVHN .mat file"):
        SVHN(str(tmp_path), checksum=False).setup()


def test_flip_is_off_for_svhn_digits_and_on_for_cifar(tmp_path):
    """The blue channel rises left to right in every fixture image; a flipped image has it falling."""
    make_svhn(tmp_path / "svhn")
    make_cifar10(tmp_path)
    torch.manual_seed(0)

    def flips(dm) -> int:
        dm.setup()
        rising = [pixels(dm.train_set[i % len(dm.train_set)][0])[2, 0, 0] == 0 for i in range(40)]
        return 40 - sum(rising)

    assert flips(SVHN(str(tmp_path / "svhn"), checksum=False, random_crop=False, normalize=False)) == 0
    n = flips(CIFAR10(str(tmp_path), checksum=False, random_crop=False, normalize=False))
    assert 5 < n < 35  # about half
    # val and test are never augmented
    dm = CIFAR10(str(tmp_path), checksum=False, normalize=False)
    dm.setup()
    check_paired(dm.val_set)
    check_paired(dm.test_set)


def test_random_crop_shifts_by_at_most_the_padding(tmp_path):
    make_cifar10(tmp_path)
    dm = CIFAR10(str(tmp_path), checksum=False, hflip=False, normalize=False, crop_padding=4)
    dm.setup()
    torch.manual_seed(0)
    boxes = set()
    for _ in range(30):
        p = pixels(dm.train_set[0][0])[0]  # red: the class value inside the image, 0 in the zero padding
        rows, cols = np.nonzero(p)
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        # shifted by (dy, dx) with |d| <= 4: the content touches the opposite edges and loses <= 4 pixels
        assert (top == 0 or bottom == 31) and (left == 0 or right == 31)
        assert bottom - top >= 27 and right - left >= 27
        boxes.add((int(top), int(bottom), int(left), int(right)))
    assert len(boxes) > 3


# ------------------------------------------------------------------ CINIC-10

def test_cinic10_reads_the_published_folders(tmp_path):
    root = make_cinic10(tmp_path, per_class=2)
    dm = CINIC10(str(root), cache=False, **RAW)
    assert dm.num_classes == 10 and dm.class_names == CIFAR10_NAMES and dm.dims == (3, 32, 32)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (20, 20, 20)
    assert dm.val_set.source.paths[0].endswith("valid/airplane/cifar10-valid-0.png")  # the published valid/
    for split in (dm.train_set, dm.val_set, dm.test_set):
        check_paired(split)
    assert sorted(dm.test_set.labels.tolist()) == sorted(list(range(10)) * 2)
    # a val_fraction carves val out of train/ instead
    carved = CINIC10(str(root), val_fraction=0.25, cache=False, **RAW)
    carved.setup()
    assert (len(carved.train_set), len(carved.val_set)) == (15, 5)
    assert carved.val_set.source is carved.train_set.source


@pytest.mark.parametrize("damage, message", [
    (lambda r: None, None),
    (lambda r: (r / "valid" / "cat").rename(r / "valid" / "kitten"), r"valid has class folders .*kitten"),
    (lambda r: [p.unlink() for p in (r / "test" / "dog").iterdir()], r"test/dog holds no .png images"),
    (lambda r: __import__("shutil").rmtree(r / "test"), r"cinic10/test does not exist"),
])
def test_cinic10_malformed_folder_gives_one_error(tmp_path, damage, message):
    root = make_cinic10(tmp_path, per_class=1)
    damage(root)
    if message is None:
        CINIC10(str(root)).setup()
        return
    with pytest.raises(DatasetError, match=message) as e:
        CINIC10(str(root)).setup()
    assert "{train,valid,test}/<class>/*.png" in str(e.value)
    assert "https://datashare.ed.ac.uk/handle/10283/3192" in str(e.value)


def test_missing_cinic10_folder_fails_at_construction(tmp_path):
    with pytest.raises(DatasetError) as e:
        CINIC10(str(tmp_path / "cinic"), download=False)
    msg = str(e.value)
    assert f"{tmp_path / 'cinic' / 'train'} does not exist and --download=false" in msg
    assert "DATA_DIR/{train,valid,test}/<class>/*.png" in msg
    assert "https://github.com/BayesWatch/cinic-10" in msg and "https://datashare.ed.ac.uk/handle/10283/3192" in msg


def test_corrupt_image_names_the_file(tmp_path):
    root = make_cinic10(tmp_path, per_class=1)
    bad = root / "test" / "frog" / "cifar10-test-0.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    dm = CINIC10(str(root), cache=False)
    dm.setup()  # the layout is fine; the file fails when read
    i = dm.test_set.indices.tolist().index(dm.test_set.source.paths.index(str(bad)))
    with pytest.raises(DatasetError, match=rf"corrupt image file {bad}"):
        dm.test_set[i]
    with pytest.raises(DatasetError, match=rf"corrupt image file {bad}"):
        list(dm.test_dataloader())
    dm.num_workers = 1  # raised in a worker process, re-raised here as the same class with the path
    with pytest.raises(DatasetError, match=rf"corrupt image file {bad}"):
        list(dm.test_dataloader())
    # an image of the wrong size is named too
    Image.new("RGB", (31, 32)).save(bad)
    with pytest.raises(DatasetError, match=rf"{bad} is 31x32 pixels, but every CINIC-10 image is 32x32"):
        dm.test_set[i]


# ------------------------------------------------------------------ Tiny ImageNet

def test_tiny_imagenet_reads_the_published_folder(tmp_path):
    data_dir = make_tiny_imagenet(tmp_path, n_classes=3, per_class=4)
    dm = TinyImageNet(str(data_dir), val_fraction=0.25, cache=False, **RAW)
    # classes in sorted-wnid order, names from words.txt (first synonym)
    assert dm.wnids == ["n01443537", "n01629819", "n01641577"]
    assert dm.class_names == ["goldfish", "European fire salamander", "bullfrog"]
    assert dm.num_classes == 3 and dm.dims == (3, 64, 64)
    assert dm.model_kwargs() == {"num_classes": 3, "in_channels": 3, "image_size": (64, 64)}
    assert dm.facts().class_names == ("goldfish", "European fire salamander", "bullfrog")
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (9, 3, 12)
    assert dm.val_set.source is dm.train_set.source  # val carved from train/
    assert all("/val/images/val_" in p for p in dm.test_set.source.paths)  # test = the labelled val/
    for split in (dm.train_set, dm.val_set, dm.test_set):
        check_paired(split, tol=3, size=64)  # JPEG
    # the annotation file, not the file order, gives the test labels
    assert dm.test_set.source.labels.tolist() == [0, 1, 2] * 4
    # data_dir may also be the tiny-imagenet-200 folder itself
    inner = TinyImageNet(str(data_dir / "tiny-imagenet-200"), val_fraction=0.25)
    assert inner.root() == dm.root() and inner.class_names == dm.class_names


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "wnids.txt").unlink(), r"tiny-imagenet-200/wnids.txt does not exist"),
    (lambda r: (r / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn00000000\t0\t0\t1\t1\n"),
     r"val_annotations.txt line 1 \('val_0.JPEG\\tn00000000.*should be filename<TAB>wnid"),
    (lambda r: (r / "val" / "images" / "val_2.JPEG").unlink(), r"val_2.JPEG, named on line 3 of .* does not exist"),
    (lambda r: __import__("shutil").rmtree(r / "train" / "n01629819"),
     r"train/n01629819/images does not exist \(wnid n01629819 is listed in wnids.txt\)"),
])
def test_tiny_imagenet_malformed_folder_gives_one_error(tmp_path, damage, message):
    data_dir = make_tiny_imagenet(tmp_path)
    damage(data_dir / "tiny-imagenet-200")
    with pytest.raises(DatasetError, match=message) as e:
        TinyImageNet(str(data_dir)).setup()
    assert "train/<wnid>/images/*.JPEG" in str(e.value)
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in str(e.value)


def test_missing_tiny_imagenet_fails_at_construction(tmp_path):
    with pytest.raises(DatasetError, match=rf"{tmp_path}/tiny-imagenet-200/wnids.txt does not exist.*"
                                           r"wnids.txt, words.txt.*tiny-imagenet-200.zip"):
        TinyImageNet(str(tmp_path))


def test_tiny_imagenet_corrupt_jpeg_names_the_file(tmp_path):
    data_dir = make_tiny_imagenet(tmp_path, n_classes=2, per_class=2)
    bad = data_dir / "tiny-imagenet-200" / "train" / "n01629819" / "images" / "n01629819_1.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    dm = TinyImageNet(str(data_dir), val_fraction=0.25, cache=False)
    dm.setup()
    source = dm.train_set.source
    with pytest.raises(DatasetError, match=rf"corrupt image file {bad}"):
        source.image(source.paths.index(str(bad)))


# ------------------------------------------------------------------ splits, limits, flags

def test_val_split_is_deterministic_and_seeded(tmp_path):
    make_cifar10(tmp_path, per_batch=20)  # 100 training images

    def val_indices(**kw):
        dm = CIFAR10(str(tmp_path), checksum=False, **kw)
        dm.setup()
        return sorted(dm.val_set.indices.tolist())

    first = val_indices()
    assert len(first) == 10
    assert val_indices() == first
    assert val_indices(split_seed=1) != first
    assert len(val_indices(val_fraction=0.3)) == 30
    train, val = carve(100, 0.1, 0)
    assert val.tolist() == first and len(train) == 90
    with pytest.raises(DatasetError, match=r"--val_fraction=0.001 of 100 training images leaves an empty split"):
        carve(100, 0.001, 0)
    with pytest.raises(ValueError, match=r"--val_fraction=1.5 must be in \(0, 1\)"):
        CIFAR10(str(tmp_path), checksum=False, val_fraction=1.5)


def test_balanced_order_deals_the_classes_round_robin():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 3 + [3] * 6)
    order = balanced_order(labels, seed=0)
    assert sorted(order.tolist()) == list(range(16))  # a permutation
    rounds = [labels[order[4 * r: 4 * r + 4]] for r in range(2)]
    assert all(sorted(r.tolist()) == [0, 1, 2, 3] for r in rounds)  # each class once per round while it lasts
    assert sorted(labels[order[8:11]].tolist()) == [0, 2, 3]  # then the classes that are left
    assert balanced_order(labels, seed=0).tolist() == order.tolist()  # fixed by the seed
    assert balanced_order(labels, seed=1).tolist() != order.tolist()
    # the order of items within a class is random, not the file order
    firsts = {int(balanced_order(labels, seed=s)[labels[balanced_order(labels, seed=s)] == 3][0]) for s in range(8)}
    assert len(firsts) > 1


def test_limit_keeps_a_fixed_class_balanced_subset(tmp_path):
    root = make_cinic10(tmp_path, per_class=3)  # 30 images per split, written class folder by class folder
    dm = CINIC10(str(root), limit=10, cache=False)
    dm.setup()
    for split in (dm.train_set, dm.val_set, dm.test_set):
        assert sorted(split.labels.tolist()) == list(range(10))  # one image of every class
    again = CINIC10(str(root), limit=10, cache=False)
    again.setup()
    assert again.train_set.indices.tolist() == dm.train_set.indices.tolist()
    seven = CINIC10(str(root), limit=7, cache=False)
    seven.setup()
    assert len(seven.test_set) == 7 and len(set(seven.test_set.labels.tolist())) == 7
    with pytest.raises(ValueError, match=r"--limit=0 must be at least 1"):
        CINIC10(str(root), limit=0)


class _Recorder(pl.LightningModule):
    """Records the labels of every evaluation batch it is shown."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def validation_step(self, batch, batch_idx):
        self.seen += batch[1].tolist()

    def test_step(self, batch, batch_idx):
        self.seen += batch[1].tolist()


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_limited_evaluation_batches_see_every_class(tmp_path, stage):
    """Lightning's limit_val_batches / limit_test_batches take the first batches: those hold every class."""
    root = make_cinic10(tmp_path, per_class=4)
    dm = CINIC10(str(root), batch_size=5, cache=False)
    model = _Recorder()
    trainer = pl.Trainer(limit_val_batches=2, limit_test_batches=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    getattr(trainer, stage)(model, datamodule=dm)
    assert sorted(model.seen) == list(range(10))  # 2 batches of 5: each class once, not airplanes and cars only


IMAGE_DATAMODULES = ["svhn", "cifar10", "cifar100", "cinic10", "tiny_imagenet"]


@pytest.mark.parametrize("name", IMAGE_DATAMODULES)
def test_flags_do_not_collide_with_models_or_trainer(name):
    """Every constructor flag routes to exactly one place: no registered model or pl.Trainer takes it."""
    cls = registry.get_datamodule(name).cls
    ours = set(parameters(cls))
    assert {"data_dir", "batch_size", "num_workers", "pin_memory", "val_fraction", "limit", "split_seed",
            "random_crop", "crop_padding", "hflip", "normalize"} <= ours
    taken = set(parameters(pl.Trainer))
    for entry in registry.models():
        taken |= set(parameters(entry.cls))
    assert not ours & taken, ours & taken


def test_fit_runs_on_the_fixtures(tmp_path):
    """DHAM takes in_channels / num_classes from the datamodule and trains a step on each folder source."""
    from attention_lightning.run import commands as experiment

    root = make_cinic10(tmp_path, per_class=1)
    tiny = make_tiny_imagenet(tmp_path, n_classes=3, per_class=2)
    for data, data_dir in (("cinic10", root), ("tiny_imagenet", tiny)):
        summary = experiment.fit({"model": "dham", "data": data, "data_dir": str(data_dir), "fast_dev_run": 1,
                                  "batch_size": 4, "logger": "none", "enable_progress_bar": False,
                                  "enable_model_summary": False, "default_root_dir": str(tmp_path / "runs")})
        assert summary["global_step"] == 1


def test_batched_augmentation_equals_cropping_each_image_by_hand():
    """Augment crops every image at its own offset in one gather; check against a slice per image."""
    from datamodules.images import Augment

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)  # (B, H, W, 3)
    torch.manual_seed(3)
    out = Augment(2, hflip=True, mean=(0.5, 0.25, 0.0), std=(0.5, 0.5, 2.0))(x.transpose(0, 3, 1, 2).copy())
    torch.manual_seed(3)
    dy, dx = torch.randint(0, 5, (2, 6)).numpy()
    flip = (torch.rand(6) < 0.5).numpy()
    assert 0 < flip.sum() < 6
    padded = np.zeros((6, 9, 11, 3))
    padded[:, 2:7, 2:9] = x
    for i in range(6):
        crop = padded[i, dy[i]:dy[i] + 5, dx[i]:dx[i] + 7].transpose(2, 0, 1) / 255  # (3, H, W)
        if flip[i]:
            crop = crop[:, :, ::-1]
        want = (crop - np.array([0.5, 0.25, 0.0])[:, None, None]) / np.array([0.5, 0.5, 2.0])[:, None, None]
        np.testing.assert_allclose(out[i].numpy(), want, atol=1e-6)
