"""What the natural-image datamodules share: sources, splits, batched augmentation, downloads, options.

The sets themselves live in ``cifar.py`` (CIFAR-10/100), ``svhn.py`` and ``folders.py`` (CINIC-10, Tiny
ImageNet). Validation data is carved out of the training split (``val_fraction``, a fixed permutation drawn
from ``split_seed``) unless a set publishes its own. Every split is kept in a fixed class-balanced order (round
robin over the classes in a seeded random order), so ``limit`` and Lightning's ``limit_val_batches`` /
``limit_test_batches`` see every class in equal share, not the first class folders.

Training images can be augmented (random crop after zero padding, horizontal flip); all images become float32
(C, H, W) tensors, normalized by the dataset's channel mean/std unless ``normalize=False`` (then in [0, 1]).
A whole batch is augmented at once (``ImageSplit.__getitems__``).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from .base import BaseDataModule, DatasetError

DOWNLOAD_TIMEOUT = 10.0  # seconds per socket operation: an offline machine fails fast


# ----------------------------------------------------------------------------------------------------
# Sources (the images of one published split) and splits (a subset of a source with its augmentation)

class ImageSource:
    """The images and labels of one published split; ``batch(indices)`` gives (B, 3, H, W) uint8 pixels.

    Channels first, as the models read them: the training augmentation then copies whole contiguous rows.
    """

    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def image(self, index: int) -> Image.Image:
        """One image as an RGB PIL image."""
        return Image.fromarray(self.batch(np.array([index]))[0].transpose(1, 2, 0))


class ArraySource(ImageSource):
    """Images held as one uint8 array (in memory, or memory-mapped from a cache file)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images  # (N, 3, H, W) uint8
        self.labels = np.asarray(labels, dtype=np.int64)  # (N,)

    def batch(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.images[indices])  # (B, 3, H, W)


class FileSource(ImageSource):
    """Image files decoded on demand; a file that cannot be read, or has the wrong size, raises ``DatasetError``."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int], size: tuple[int, int], dataset: str) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)  # (N,)
        self.size, self.dataset = size, dataset  # (H, W)

    def read(self, index: int) -> np.ndarray:
        """File ``index`` decoded to (H, W, 3) uint8 (as PIL gives it)."""
        path = self.paths[index]
        try:
            with Image.open(path) as im:
                rgb = im.convert("RGB")  # decodes the whole file; a few published images are greyscale
        except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise DatasetError(
                f"corrupt image file {path} ({type(e).__name__}: {e}); replace it from a fresh copy of {self.dataset}"
            ) from e
        h, w = self.size
        if rgb.size != (w, h):
            raise DatasetError(
                f"image file {path} is {rgb.size[0]}x{rgb.size[1]} pixels, but every {self.dataset} image is {w}x{h}; "
                f"replace it from a fresh copy of {self.dataset}"
            )
        return np.asarray(rgb)

    def batch(self, indices: np.ndarray) -> np.ndarray:
        return np.stack([self.read(int(i)) for i in indices]).transpose(0, 3, 1, 2).copy()  # (B, 3, H, W)


class Augment:
    """Batched training augmentation and normalization: (B, 3, H, W) uint8 -> (B, 3, H, W) float32.

    A random crop after ``padding`` zero pixels on every side (offsets uniform in 0..2*padding), then a
    horizontal flip with probability 1/2; torch's RNG draws both, so ``seed_everything`` and worker seeds hold.
    """

    def __init__(self, padding: int, hflip: bool, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        self.padding, self.hflip = padding, hflip
        mean = torch.zeros(3) if mean is None else torch.tensor(mean, dtype=torch.float32)
        std = torch.ones(3) if std is None else torch.tensor(std, dtype=torch.float32)
        self.scale = (1.0 / (255.0 * std))[:, None, None]  # (3, 1, 1): uint8 level -> normalized value
        self.shift = (-mean / std)[:, None, None]          # (3, 1, 1)

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        x = np.asarray(pixels)  # (B, 3, H, W) uint8
        b, _, h, w = x.shape
        p = self.padding
        if p > 0:
            padded = np.zeros((b, 3, h + 2 * p, w + 2 * p), dtype=np.uint8)  # (B, 3, H + 2p, W + 2p)
            padded[:, :, p:p + h, p:p + w] = x
            windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))  # (B, 3, 2p+1, 2p+1, H, W)
            dy, dx = torch.randint(0, 2 * p + 1, (2, b)).numpy()  # (B,), (B,)
            x = windows[np.arange(b), :, dy, dx]  # (B, 3, H, W), a new contiguous array
        elif self.hflip:
            x = x.copy()  # the flip below writes in place: leave the caller's array as it was
        if self.hflip:
            flip = (torch.rand(b) < 0.5).numpy()  # (B,)
            x[flip] = x[flip, :, :, ::-1]
        return torch.from_numpy(x).float().mul_(self.scale).add_(self.shift)  # (level / 255 - mean) / std


class ImageBatch:
    """A batch made at once: ``images`` (B, 3, H, W) and ``labels`` (B,); ``collate`` passes it through whole."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def collate(items) -> list:
    """[images (B, 3, H, W), labels (B,)]: an ``ImageBatch`` as it is, anything else by default_collate."""
    if isinstance(items, ImageBatch):
        return [items.images, items.labels]
    return default_collate(items)


class ImageSplit(Dataset):
    """``source`` restricted to ``indices`` (in that order); items are (augment(image), label)."""

    def __init__(self, source: ImageSource, indices: np.ndarray, augment: Augment) -> None:
        self.source, self.indices, self.augment = source, np.asarray(indices, dtype=np.int64), augment

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]

    def __getitems__(self, items: Sequence[int]) -> ImageBatch:
        """A whole batch at once (the DataLoader calls this instead of __getitem__ when it exists)."""
        idx = self.indices[np.asarray(items, dtype=np.int64)]  # (B,)
        images = self.augment(self.source.batch(idx))  # (B, 3, H, W)
        return ImageBatch(images, torch.from_numpy(self.source.labels[idx]))  # labels (B,) int64

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([index])[0]


def carve(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of ``range(n)``: val is ``round(fraction * n)`` of them, fixed by ``seed``."""
    n_val = int(round(n * fraction))
    if not 1 <= n_val < n:
        raise DatasetError(f"--val_fraction={fraction} of {n} training images leaves an empty split; "
                           f"use a fraction between {1 / n:.3g} and {(n - 1) / n:.3g}")
    perm = np.random.default_rng([seed, n]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def balanced_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A fixed permutation of ``range(len(labels))`` that deals the classes round robin.

    Within each class the items follow a seeded random order; round r holds every class's r-th item, the
    classes of a round in random order. Any prefix holds each class about equally (while it lasts).
    """
    n = len(labels)
    perm = np.random.default_rng([seed, n]).permutation(n)  # (N,)
    lab = np.asarray(labels)[perm]
    by_class = np.argsort(lab, kind="stable")  # positions in perm, grouped by class, perm order kept
    starts = np.searchsorted(lab[by_class], lab[by_class], side="left")  # (N,) first slot of each one's class
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - starts  # (N,) how many of its class come before it in perm
    return perm[np.lexsort((np.arange(n), rank))]


def subsample(indices: np.ndarray, labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """``indices`` in their class-balanced order, at most ``limit`` of them (all when ``limit`` is None)."""
    ordered = indices[balanced_order(labels[indices], seed)]
    return ordered if limit is None else ordered[:limit]


# ----------------------------------------------------------------------------------------------------
# The shared datamodule

class ImageDataModule(BaseDataModule):
    """Train/val/test splits of an image set, its augmentation and normalization, and its download.

    Arguments:
        data_dir: folder holding (or receiving) the dataset in its published layout.
        download: fetch the published files into ``data_dir`` when they are missing (rank zero, checksum verified).
        checksum: verify the published md5 of what is read or downloaded; false reads altered files as they are.
        val_fraction: fraction of the training split carved out for validation (fixed by ``split_seed``).
        split_seed: seed of the validation carve and of the class-balanced order of every split.
        random_crop: randomly shift training images by up to ``crop_padding`` pixels (zero padding).
        crop_padding: zero pixels added on every side before the random crop.
        hflip: flip training images horizontally with probability 1/2.
        normalize: subtract the dataset's channel mean and divide by its std (false: pixels in [0, 1]).
        limit: keep at most this many images per split, class-balanced (None: all).
    """

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    title = "the dataset"
    layout = ""  # the expected layout under --data_dir, for error messages
    download_page = ""

    def __init__(
        self, data_dir: str = "data", download: bool = True, checksum: bool = True, val_fraction: float | None = 0.1,
        split_seed: int = 0, random_crop: bool = True, crop_padding: int = 4, hflip: bool = True,
        normalize: bool = True, limit: int | None = None, **loader,
    ) -> None:
        super().__init__(**loader)
        if val_fraction is not None and not 0 < val_fraction < 1:
            raise ValueError(f"--val_fraction={val_fraction} must be in (0, 1)")
        if crop_padding < 0:
            raise ValueError(f"--crop_padding={crop_padding} must be 0 or more pixels")
        if limit is not None and limit < 1:
            raise ValueError(f"--limit={limit} must be at least 1 image per split (or unset for all)")
        self.data_dir = Path(data_dir).expanduser()
        self.download, self.checksum = download, checksum
        self.val_fraction, self.split_seed, self.limit = val_fraction, split_seed, limit
        self.random_crop, self.crop_padding, self.hflip, self.normalize = random_crop, crop_padding, hflip, normalize
        self.download_failure: str | None = None
        self.refuse_missing()

    # -- what must be on disk, and how it gets there

    def files(self) -> list[tuple[Path, str | None]]:
        """(path, md5 or None) of everything this set reads; a missing one means "download"."""
        raise NotImplementedError

    def fetch(self) -> None:
        """Download the missing files into ``data_dir`` (verifying their published checksum)."""
        raise NotImplementedError

    def missing(self) -> list[Path]:
        return [p for p, _ in self.files() if not p.exists()]

    def refuse_missing(self) -> None:
        """At construction: a missing file that may not be downloaded is an error before training starts."""
        missing = self.missing()
        if missing and not self.download:
            raise self.layout_error(f"{missing[0]} does not exist and --download=false")
        if missing and os.environ.get("ATTENTION_LIGHTNING_OFFLINE"):
            raise self.layout_error(f"{missing[0]} does not exist and ATTENTION_LIGHTNING_OFFLINE is set")

    def prepare_data(self) -> None:
        # rank 0 only; setup() on every rank then reads the files or reports why they are not there
        if not self.download or not self.missing():
            return
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
        try:
            self.fetch()
        except Exception as e:  # network errors come in many types; all mean "not downloadable now"
            self.download_failure = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
        finally:
            socket.setdefaulttimeout(old)

    def check_files(self) -> None:
        """Raise ``DatasetError`` for a missing file, or (``checksum``) one whose md5 is not the published one."""
        from torchvision.datasets.utils import check_integrity

        missing = self.missing()
        if missing:
            why = f" and the download failed ({self.download_failure})" if self.download_failure else ""
            raise self.layout_error(f"{missing[0]} does not exist{why}")
        if self.checksum:
            for path, md5 in self.files():
                if md5 is not None and not check_integrity(str(path), md5):
                    raise DatasetError(
                        f"{path} does not match the published md5 {md5} (a truncated or altered download?); "
                        f"delete it to re-download, or pass --checksum=false to read it as it is"
                    )

    def layout_error(self, problem: str) -> DatasetError:
        """One error naming the problem, the expected layout and where to get the data."""
        return DatasetError(f"{problem}. {self.title} is expected as {self.layout} (pass --data_dir=DATA_DIR); "
                            f"download it from {self.download_page}")

    # -- splits

    def load_sources(self) -> tuple[ImageSource, ImageSource | None, ImageSource]:
        """(train, published val or None, test) sources, validating the folder."""
        raise NotImplementedError

    def augment(self, train: bool) -> Augment:
        """The batch transform; random crop and flip only when ``train``."""
        pad = self.crop_padding if train and self.random_crop else 0
        mean, std = (self.mean, self.std) if self.normalize else (None, None)
        return Augment(pad, train and self.hflip, mean, std)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val, test = self.load_sources()
        if val is None or self.val_fraction is not None:  # carve val from train (even where val is published)
            fraction = 0.1 if self.val_fraction is None else self.val_fraction
            train_idx, val_idx = carve(len(train), fraction, self.split_seed)
            val = train
        else:
            train_idx, val_idx = np.arange(len(train)), np.arange(len(val))
        seed, lim = self.split_seed, self.limit
        self.train_set = ImageSplit(train, subsample(train_idx, train.labels, lim, seed), self.augment(train=True))
        self.val_set = ImageSplit(val, subsample(val_idx, val.labels, lim, seed + 1), self.augment(train=False))
        self.test_set = ImageSplit(test, subsample(np.arange(len(test)), test.labels, lim, seed + 2),
                                   self.augment(train=False))

    def _loader(self, dataset: Dataset | None, shuffle: bool, collate_fn=None) -> DataLoader:
        return super()._loader(dataset, shuffle, collate_fn or collate)

    def provenance(self) -> dict:
        return {"dataset": self.title, "data_dir": str(self.data_dir.resolve()), **super().provenance()}
