"""CIFAR-10 and CIFAR-100 from torchvision's python-version files, downloaded by torchvision when missing.

Layouts: ``DATA_DIR/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` and
``DATA_DIR/cifar-100-python/{train,test,meta}`` (the 100 fine labels). The batches are pickles written by
Python 2; they are unpickled allowing only dicts, lists and numpy arrays, so a tampered file runs no code.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from attention_lightning.registry import register_datamodule

from .base import DatasetError
from .images import ArraySource, ImageDataModule, ImageSource

CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html (or let --download=true fetch it)"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]


class _NumpyOnly(pickle.Unpickler):
    """Unpickles CIFAR's batches (dicts, lists, numpy arrays) and refuses any other class: no code runs."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """A CIFAR python batch (a pickled dict written by Python 2, strings decoded as latin-1)."""
    try:
        with open(path, "rb") as f:
            entry = _NumpyOnly(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DatasetError(
            f"{path} is not a CIFAR python batch ({type(e).__name__}: {e}); delete it to re-download") from e
    if not isinstance(entry, dict):
        raise DatasetError(
            f"{path} is not a CIFAR python batch (a {type(entry).__name__}, not a dict); delete it to re-download")
    return entry


def read_cifar(paths: Sequence[Path], label_key: str) -> ArraySource:
    """Images and labels of CIFAR batches: rows of 3072 bytes (1024 red, 1024 green, 1024 blue, row-major)."""
    images, labels = [], []
    for path in paths:
        entry = read_pickle(path)
        if "data" not in entry or label_key not in entry:
            raise DatasetError(
                f"{path} lacks the 'data' or {label_key!r} entry of a CIFAR batch; delete it to re-download")
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(entry[label_key]):
            raise DatasetError(f"{path}: 'data' has shape {data.shape}, expected ({len(entry[label_key])}, 3072); "
                               f"delete it to re-download")
        images.append(data.reshape(-1, 3, 32, 32))  # (n, 3, 32, 32)
        labels.extend(entry[label_key])
    return ArraySource(np.ascontiguousarray(np.concatenate(images)), np.asarray(labels))


class CIFARBase(ImageDataModule):
    """CIFAR-10/100: file names, md5 sums and download URL come from torchvision's class of the same name."""

    dims = (3, 32, 32)
    label_key = ""
    download_page = CIFAR_PAGE

    @staticmethod
    def torchvision_class():
        raise NotImplementedError

    def files(self) -> list[tuple[Path, str | None]]:
        cls = self.torchvision_class()
        d = self.data_dir / cls.base_folder
        meta = (cls.meta["filename"], cls.meta["md5"])
        return [(d / name, md5) for name, md5 in [*cls.train_list, *cls.test_list, meta]]

    def fetch(self) -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        cls = self.torchvision_class()
        download_and_extract_archive(cls.url, str(self.data_dir), filename=cls.filename, md5=cls.tgz_md5)

    def load_sources(self) -> tuple[ImageSource, ImageSource | None, ImageSource]:
        self.check_files()
        cls = self.torchvision_class()
        d = self.data_dir / cls.base_folder
        meta = read_pickle(d / cls.meta["filename"])
        names = meta.get(cls.meta["key"])
        if not isinstance(names, list) or len(names) != self.num_classes:
            raise DatasetError(f"{d / cls.meta['filename']}: {cls.meta['key']!r} should list {self.num_classes} class "
                               f"names; delete it to re-download")
        self.class_names = [str(n) for n in names]
        train = read_cifar([d / name for name, _ in cls.train_list], self.label_key)
        test = read_cifar([d / name for name, _ in cls.test_list], self.label_key)
        for name, source in (("training", train), ("test", test)):
            if len(source) and not 0 <= source.labels.min() <= source.labels.max() < self.num_classes:
                raise DatasetError(
                    f"{d}: {name} labels outside 0..{self.num_classes - 1}; delete the folder to re-download")
        return train, None, test


@register_datamodule(
    "cifar10", "CIFAR-10: 32x32 colour images of 10 classes (torchvision's files, downloaded if missing)"
)
class CIFAR10(CIFARBase):
    """CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test images; val is carved from training."""

    num_classes = 10
    class_names = CIFAR10_CLASSES
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    title = "CIFAR-10"
    layout = "DATA_DIR/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (the python version)"
    label_key = "labels"

    @staticmethod
    def torchvision_class():
        from torchvision.datasets import CIFAR10 as TV

        return TV


@register_datamodule(
    "cifar100", "CIFAR-100: 32x32 colour images of 100 classes (torchvision's files, downloaded if missing)"
)
class CIFAR100(CIFARBase):
    """CIFAR-100 (Krizhevsky 2009) with its 100 fine labels; val is carved from training."""

    num_classes = 100
    class_names = CIFAR100_CLASSES
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    title = "CIFAR-100"
    layout = "DATA_DIR/cifar-100-python/{train,test,meta} (the python version)"
    label_key = "fine_labels"

    @staticmethod
    def torchvision_class():
        from torchvision.datasets import CIFAR100 as TV

        return TV
