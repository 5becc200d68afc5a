"""Tiny copies of the image datasets, written in exactly their published on-disk formats.

Every writer returns the path to pass as ``--data_dir``. Pixel values encode the label so tests can
check that images and labels stay paired: an image of class ``k`` is filled with ``class_value(k)``
in its red channel (JPEG keeps it within a few levels).

The tests read them (``from datamodules.tiny_datasets import make_cinic10``), and ``benchmarks/data.py`` times
the folder datamodules on larger ones.
"""
from __future__ import annotations

import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path
from collections.abc import Sequence

import numpy as np
from PIL import Image

PathLike = str | Path

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# (wnid, words.txt entry) for a few real Tiny ImageNet classes; n_classes beyond these get made-up ids
TINY_WORDS = [
    ("n01443537", "goldfish, Carassius auratus"),
    ("n01629819", "European fire salamander, Salamandra salamandra"),
    ("n01641577", "bullfrog, Rana catesbeiana"),
    ("n01644900", "tailed frog, bell toad, ribbed toad, tailed toad, Ascaphus trui"),
    ("n01698640", "American alligator, Alligator mississipiensis"),
]


def class_value(k: int) -> int:
    """Red-channel value of every pixel of an image of class ``k`` (distinct for k < 12)."""
    return 10 + 20 * k


def _image(k: int, index: int, size: int) -> np.ndarray:
    """(size, size, 3) uint8: R = class_value(k), G = index, B = column x (to catch transposed layouts)."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[..., 0] = class_value(k)
    img[..., 1] = index % 256
    img[..., 2] = np.arange(size, dtype=np.uint8)[None, :] * (256 // size)
    return img


def _labels(n: int, n_classes: int) -> list[int]:
    return [i % n_classes for i in range(n)]


def _cifar_rows(labels: Sequence[int], start: int) -> np.ndarray:
    """(N, 3072) uint8 rows in CIFAR's order: 1024 red, then 1024 green, then 1024 blue, each row-major."""
    imgs = np.stack([_image(k, start + i, 32) for i, k in enumerate(labels)])  # (N, 32, 32, 3)
    return imgs.transpose(0, 3, 1, 2).reshape(len(labels), 3072)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(root: PathLike, per_batch: int = 4, test_size: int = 6) -> Path:
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``; returns root."""
    root = Path(root)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    start = 0
    for b in range(1, 6):
        labels = [(start + i) % 10 for i in range(per_batch)]
        _pickle(d / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "labels": labels,
                                         "data": _cifar_rows(labels, start),
                                         "filenames": [f"img_{start + i}.png" for i in range(per_batch)]})
        start += per_batch
    labels = _labels(test_size, 10)
    _pickle(d / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": labels,
                               "data": _cifar_rows(labels, 0), "filenames": [f"t_{i}.png" for i in range(test_size)]})
    _pickle(d / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072})
    return root


def make_cifar100(root: PathLike, train_size: int = 20, test_size: int = 6, n_used: int = 7) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` with labels among the first ``n_used`` classes; returns root."""
    root = Path(root)
    d = root / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    fine_names = [f"fine{i:02d}" for i in range(100)]
    coarse_names = [f"coarse{i:02d}" for i in range(20)]
    for name, n in (("train", train_size), ("test", test_size)):
        fine = _labels(n, n_used)
        _pickle(d / name, {"filenames": [f"{name}_{i}.png" for i in range(n)], "batch_label": f"{name} batch",
                           "fine_labels": fine, "coarse_labels": [k // 5 for k in fine], "data": _cifar_rows(fine, 0)})
    _pickle(d / "meta", {"fine_label_names": fine_names, "coarse_label_names": coarse_names})
    return root


def make_svhn(root: PathLike, train_size: int = 20, test_size: int = 6, extra_size: int = 0) -> Path:
    """``root/{train,test[,extra]}_32x32.mat``: X (32, 32, 3, N) uint8, y (N, 1) with 10 for digit 0; returns root."""
    from scipy.io import savemat

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, n, offset in (("train", train_size, 0), ("test", test_size, 0), ("extra", extra_size, 100)):
        if n == 0:
            continue
        digits = _labels(n, 10)
        x = np.stack([_image(k, offset + i, 32) for i, k in enumerate(digits)], axis=-1)  # (32, 32, 3, N)
        y = np.array([[k if k != 0 else 10] for k in digits], dtype=np.uint8)  # (N, 1)
        savemat(root / f"{name}_32x32.mat", {"X": x, "y": y})
    return root


def make_cinic10(root: PathLike, per_class: int = 2) -> Path:
    """``root/cinic10/{train,valid,test}/<class>/*.png`` with the ten CINIC-10 classes; returns that folder."""
    base = Path(root) / "cinic10"
    for split in ("train", "valid", "test"):
        for k, name in enumerate(CIFAR10_NAMES):
            d = base / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                # CINIC-10 mixes CIFAR-10 images and downsampled ImageNet images, named like these
                fname = f"cifar10-{split}-{i}.png" if i % 2 == 0 else f"n0000000{k}_{i}.png"
                Image.fromarray(_image(k, i, 32)).save(d / fname)
    return base


def make_tiny_imagenet(root: PathLike, n_classes: int = 3, per_class: int = 2) -> Path:
    """``root/tiny-imagenet-200/`` (wnids.txt, words.txt, train/, val/, test/) with 64x64 JPEGs; returns root."""
    if n_classes < 1:
        raise ValueError("n_classes must be at least 1")
    root = Path(root)
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True, exist_ok=True)
    made_up = [(f"n9{k:07d}", f"made-up class {k}, thing {k}") for k in range(len(TINY_WORDS), n_classes)]
    words = list(TINY_WORDS) + made_up
    used = words[:n_classes]
    # wnids.txt is not sorted in the real archive; words.txt lists many more ids than the 200 used
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w, _ in reversed(used)))
    unused = [("n00001740", "entity"), ("n99999999", "unused class")]
    (base / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in unused + words))
    for k, (wnid, _) in enumerate(used):
        d = base / "train" / wnid / "images"
        d.mkdir(parents=True, exist_ok=True)
        boxes = []
        for i in range(per_class):
            fname = f"{wnid}_{i}.JPEG"
            Image.fromarray(_image(k, i, 64)).save(d / fname, format="JPEG", quality=95)
            boxes.append(f"{fname}\t0\t0\t63\t63\n")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    (base / "val" / "images").mkdir(parents=True, exist_ok=True)
    lines, n = [], 0
    for i in range(per_class):
        for k, (wnid, _) in enumerate(used):
            fname = f"val_{n}.JPEG"
            Image.fromarray(_image(k, n, 64)).save(base / "val" / "images" / fname, format="JPEG", quality=95)
            lines.append(f"{fname}\t{wnid}\t1\t2\t60\t61\n")
            n += 1
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    (base / "test" / "images").mkdir(parents=True, exist_ok=True)
    for i in range(2):
        Image.fromarray(_image(0, i, 64)).save(base / "test" / "images" / f"test_{i}.JPEG", format="JPEG")
    return root


def make_cinic10_archive(root: PathLike, per_class: int = 1) -> Path:
    """``root/CINIC-10.tar.gz`` as published: ``train/``, ``valid/`` and ``test/`` at the archive's top."""
    root = Path(root)
    base = make_cinic10(root / "staging", per_class)
    archive = root / "CINIC-10.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "valid", "test"):
            tar.add(base / split, arcname=split)
    shutil.rmtree(root / "staging")
    return archive


def make_tiny_imagenet_archive(root: PathLike, n_classes: int = 3, per_class: int = 2) -> Path:
    """``root/tiny-imagenet-200.zip`` as published: everything under ``tiny-imagenet-200/``."""
    root = Path(root)
    staging = make_tiny_imagenet(root / "staging", n_classes, per_class)
    archive = root / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((staging / "tiny-imagenet-200").rglob("*")):
            z.write(path, path.relative_to(staging).as_posix())
    shutil.rmtree(staging)
    return archive
