"""SVHN cropped digits from torchvision's ``.mat`` files, downloaded by torchvision when missing.

Layout: ``DATA_DIR/{train,test,extra}_32x32.mat`` (format 2 of the published set; label 10 is digit 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from attention_lightning.registry import register_datamodule

from .base import DatasetError
from .images import ArraySource, ImageDataModule, ImageSource


def read_svhn(path: Path) -> ArraySource:
    """An SVHN cropped-digits .mat file: X (32, 32, 3, N) uint8 and y (N, 1) with 10 standing for digit 0."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises ValueError, MatReadError, OSError, TypeError... for a bad file
        raise DatasetError(
            f"{path} is not an SVHN .mat file ({type(e).__name__}: {e}); delete it to re-download") from e
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        shapes = f"X {getattr(x, 'shape', None)}, y {getattr(y, 'shape', None)}"
        raise DatasetError(f"{path} should hold X (32, 32, 3, N) and y (N, 1), got {shapes}; delete it to re-download")
    labels = y.astype(np.int64).reshape(-1)  # (N,)
    if len(labels) and not (1 <= labels.min() and labels.max() <= 10):
        raise DatasetError(f"{path}: labels should be 1..10 (10 for digit 0); delete it to re-download")
    labels[labels == 10] = 0
    return ArraySource(np.ascontiguousarray(x.astype(np.uint8).transpose(3, 2, 0, 1)), labels)  # (N, 3, 32, 32)


@register_datamodule("svhn", "SVHN: 32x32 house-number digits (torchvision's .mat files, downloaded if missing)")
class SVHN(ImageDataModule):
    """SVHN (Netzer et al. 2011): 73,257 training and 26,032 test digits; val is carved from training.

    Arguments:
        data_dir: folder holding (or receiving) the ``*_32x32.mat`` files.
        use_extra: add the 531,131 easier "extra" digits to the training split (val is still carved from it).
        hflip: flip training images horizontally (off: a flipped digit is another glyph).
    """

    num_classes = 10
    dims = (3, 32, 32)
    class_names = [str(d) for d in range(10)]
    mean = (0.4377, 0.4438, 0.4728)
    std = (0.1980, 0.2010, 0.1970)
    title = "SVHN"
    layout = "DATA_DIR/{train,test}_32x32.mat (and extra_32x32.mat with --use_extra)"
    download_page = "http://ufldl.stanford.edu/housenumbers/ (format 2, or let --download=true fetch it)"

    def __init__(self, data_dir: str = "data/svhn", use_extra: bool = False, hflip: bool = False, **options) -> None:
        self.use_extra = use_extra  # files() needs it when the base checks for missing files
        super().__init__(data_dir=data_dir, hflip=hflip, **options)

    def splits(self) -> list[str]:
        return ["train", "test"] + (["extra"] if self.use_extra else [])

    def files(self) -> list[tuple[Path, str | None]]:
        from torchvision.datasets import SVHN as TV

        return [(self.data_dir / TV.split_list[s][1], TV.split_list[s][2]) for s in self.splits()]

    def fetch(self) -> None:
        from torchvision.datasets import SVHN as TV
        from torchvision.datasets.utils import download_url

        for s in self.splits():
            url, filename, md5 = TV.split_list[s]
            if not (self.data_dir / filename).is_file():
                download_url(url, str(self.data_dir), filename, md5)

    def load_sources(self) -> tuple[ImageSource, ImageSource | None, ImageSource]:
        self.check_files()
        train = read_svhn(self.data_dir / "train_32x32.mat")
        if self.use_extra:
            extra = read_svhn(self.data_dir / "extra_32x32.mat")
            train = ArraySource(np.concatenate([train.images, extra.images]),
                                np.concatenate([train.labels, extra.labels]))
        return train, None, read_svhn(self.data_dir / "test_32x32.mat")
