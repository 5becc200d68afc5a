"""Natural-image classification sets: SVHN, CIFAR-10, CIFAR-100, CINIC-10 and Tiny ImageNet.

The datasets of PHAM (Rangrej & Clark, "A Probabilistic Hard Attention Model For Sequentially Observed
Scenes", BMVC 2021), read from their published on-disk formats with no re-layout:

- ``svhn``: ``DATA_DIR/{train,test,extra}_32x32.mat`` (torchvision's layout; label 10 is digit 0).
- ``cifar10``: ``DATA_DIR/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``.
- ``cifar100``: ``DATA_DIR/cifar-100-python/{train,test,meta}`` (the 100 fine labels).
- ``cinic10``: ``DATA_DIR/{train,valid,test}/<class>/*.png`` (the unpacked CINIC-10.tar.gz).
- ``tiny_imagenet``: ``DATA_DIR/tiny-imagenet-200/`` (the unzipped tiny-imagenet-200.zip).

SVHN and CIFAR are downloaded into ``data_dir`` by torchvision when missing and online (a socket timeout
makes an offline machine fail fast); CINIC-10 and Tiny ImageNet are read from ``data_dir`` only.
Validation data is carved out of the training split (``val_fraction``, a fixed permutation drawn from
``split_seed``) except for CINIC-10, which publishes its own ``valid/`` split. Tiny ImageNet's test labels
are not public, so its labelled ``val/`` split serves as our test split and our validation split is carved
from ``train/``. ``limit`` keeps a fixed random subset of at most that many images in each split.

Training images can be augmented (random crop after zero padding, horizontal flip; no flip for SVHN's
digits by default); all images become float32 (C, H, W) tensors, normalized by the dataset's channel
mean/std unless ``normalize=False`` (then in [0, 1]). A missing or malformed folder raises
``DatasetError`` naming the expected layout and the download page; a corrupt image raises it naming the file.
"""
from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from attention_lightning.registry import register_datamodule

from .base import BaseDataModule, DatasetError

DOWNLOAD_TIMEOUT = 10.0  # seconds per socket operation: an offline machine fails fast

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


# ----------------------------------------------------------------------------------------------------
# Sources (images of one published split) and splits (a subset of a source with its transform)

class ImageSource:
    """The images and labels of one published split; ``image(i)`` gives an RGB PIL image."""

    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        raise NotImplementedError


class ArraySource(ImageSource):
    """Images held in memory as one uint8 array."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images  # (N, H, W, 3) uint8
        self.labels = np.asarray(labels, dtype=np.int64)  # (N,)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


class FileSource(ImageSource):
    """Image files read on demand; a file that cannot be read, or has the wrong size, raises ``DatasetError``."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], size: Tuple[int, int], dataset: str) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)  # (N,)
        self.size, self.dataset = size, dataset  # (H, W)

    def image(self, index: int) -> Image.Image:
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
        return rgb


class ImageSplit(Dataset):
    """``source`` restricted to ``indices``; items are (transform(image), label)."""

    def __init__(self, source: ImageSource, indices: np.ndarray, transform: Callable) -> None:
        self.source, self.indices, self.transform = source, np.asarray(indices, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        i = int(self.indices[index])
        return self.transform(self.source.image(i)), int(self.source.labels[i])  # (C, H, W), label


def carve(n: int, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of ``range(n)``: val is ``round(fraction * n)`` of them, fixed by ``seed``."""
    n_val = int(round(n * fraction))
    if not 1 <= n_val < n:
        raise DatasetError(f"--val_fraction={fraction} of {n} training images leaves an empty split; "
                           f"use a fraction between {1 / n:.3g} and {(n - 1) / n:.3g}")
    perm = np.random.default_rng([seed, n]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def subsample(indices: np.ndarray, limit: Optional[int], seed: int) -> np.ndarray:
    """At most ``limit`` of ``indices`` (a fixed random subset, in order), or all when ``limit`` is None."""
    if limit is None or len(indices) <= limit:
        return indices
    keep = np.random.default_rng([seed, len(indices), limit]).choice(len(indices), size=limit, replace=False)
    return indices[np.sort(keep)]


# ----------------------------------------------------------------------------------------------------
# The shared datamodule

class ImageDataModule(BaseDataModule):
    """Train/val/test splits of an image source with augmentation and normalization flags."""

    mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    title = "the dataset"
    layout = ""  # the expected layout under --data_dir, for error messages
    download_page = ""

    def __init__(
        self, data_dir: str, val_fraction: Optional[float], split_seed: int, random_crop: bool, crop_padding: int,
        hflip: bool, normalize: bool, limit: Optional[int], batch_size: int, num_workers: int, pin_memory: bool,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if val_fraction is not None and not 0 < val_fraction < 1:
            raise ValueError(f"--val_fraction={val_fraction} must be in (0, 1)")
        if crop_padding < 0:
            raise ValueError(f"--crop_padding={crop_padding} must be 0 or more pixels")
        if limit is not None and limit < 1:
            raise ValueError(f"--limit={limit} must be at least 1 image per split (or unset for all)")
        self.data_dir = Path(data_dir).expanduser()
        self.val_fraction, self.split_seed, self.limit = val_fraction, split_seed, limit
        self.random_crop, self.crop_padding, self.hflip, self.normalize = random_crop, crop_padding, hflip, normalize

    def layout_error(self, problem: str) -> DatasetError:
        """One error naming the problem, the expected layout and where to get the data."""
        return DatasetError(f"{problem}. {self.title} is expected as {self.layout} (pass --data_dir=DATA_DIR); "
                            f"download it from {self.download_page}")

    def load_sources(self) -> Tuple[ImageSource, Optional[ImageSource], ImageSource]:
        """(train, published val or None, test) sources, validating the folder."""
        raise NotImplementedError

    def transform(self, train: bool) -> Callable:
        """PIL image -> (C, H, W) float32 tensor; random crop and flip only when ``train``."""
        steps: List[Callable] = []
        if train and self.random_crop and self.crop_padding > 0:
            steps.append(T.RandomCrop(self.dims[1:], padding=self.crop_padding))
        if train and self.hflip:
            steps.append(T.RandomHorizontalFlip())
        steps.append(T.ToTensor())  # (C, H, W) in [0, 1]
        if self.normalize:
            steps.append(T.Normalize(self.mean, self.std))
        return T.Compose(steps)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        train, val, test = self.load_sources()
        if val is None or self.val_fraction is not None:  # carve val from train (even where val is published)
            fraction = 0.1 if self.val_fraction is None else self.val_fraction
            train_idx, val_idx = carve(len(train), fraction, self.split_seed)
            val = train
        else:
            train_idx, val_idx = np.arange(len(train)), np.arange(len(val))
        test_idx = np.arange(len(test))
        seed, lim = self.split_seed, self.limit
        self.train_set = ImageSplit(train, subsample(train_idx, lim, seed), self.transform(train=True))
        self.val_set = ImageSplit(val, subsample(val_idx, lim, seed + 1), self.transform(train=False))
        self.test_set = ImageSplit(test, subsample(test_idx, lim, seed + 2), self.transform(train=False))


# ----------------------------------------------------------------------------------------------------
# SVHN and CIFAR: torchvision's files, downloaded by torchvision

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
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (n, 32, 32, 3)
        labels.extend(entry[label_key])
    return ArraySource(np.ascontiguousarray(np.concatenate(images)), np.asarray(labels))


class TorchvisionImages(ImageDataModule):
    """Shared logic of the sets torchvision downloads: required files, md5 checks, download with a timeout."""

    def __init__(self, download: bool, checksum: bool, **common) -> None:
        super().__init__(**common)
        self.download, self.checksum = download, checksum
        self.download_failure: Optional[str] = None
        missing = self.missing()  # known before training starts when nothing may be downloaded
        if missing and not download:
            raise self.layout_error(f"{missing[0]} does not exist and --download=false")
        if missing and os.environ.get("ATTENTION_LIGHTNING_OFFLINE"):
            raise self.layout_error(f"{missing[0]} does not exist and ATTENTION_LIGHTNING_OFFLINE is set")

    def files(self) -> List[Tuple[Path, str]]:
        """(path, md5) of every file this datamodule reads."""
        raise NotImplementedError

    def fetch(self) -> None:
        """Download the missing files into ``data_dir`` (torchvision checks their md5)."""
        raise NotImplementedError

    def missing(self) -> List[Path]:
        return [p for p, _ in self.files() if not p.is_file()]

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
                if not check_integrity(str(path), md5):
                    raise DatasetError(
                        f"{path} does not match the published md5 {md5} (a truncated or altered download?); "
                        f"delete it to re-download, or pass --checksum=false to read it as it is"
                    )


CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html (or let --download=true fetch it)"


class CIFARBase(TorchvisionImages):
    """CIFAR-10/100: file names, md5 sums and download URL come from torchvision's class of the same name."""

    label_key = ""

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        checksum: bool = True,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        random_crop: bool = True,
        crop_padding: int = 4,
        hflip: bool = True,
        normalize: bool = True,
        limit: Optional[int] = None,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(download, checksum, data_dir=data_dir, val_fraction=val_fraction, split_seed=split_seed,
                         random_crop=random_crop, crop_padding=crop_padding, hflip=hflip, normalize=normalize,
                         limit=limit, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.save_hyperparameters()

    def torchvision_class(self):
        raise NotImplementedError

    def files(self) -> List[Tuple[Path, str]]:
        cls = self.torchvision_class()
        d = self.data_dir / cls.base_folder
        meta = (cls.meta["filename"], cls.meta["md5"])
        return [(d / name, md5) for name, md5 in [*cls.train_list, *cls.test_list, meta]]

    def fetch(self) -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        cls = self.torchvision_class()
        download_and_extract_archive(cls.url, str(self.data_dir), filename=cls.filename, md5=cls.tgz_md5)

    def load_sources(self) -> Tuple[ImageSource, Optional[ImageSource], ImageSource]:
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
    num_classes = 10
    dims = (3, 32, 32)
    class_names = CIFAR10_CLASSES
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    title = "CIFAR-10"
    layout = "DATA_DIR/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (the python version)"
    download_page = CIFAR_PAGE
    label_key = "labels"

    def torchvision_class(self):
        from torchvision.datasets import CIFAR10 as TV

        return TV


@register_datamodule(
    "cifar100", "CIFAR-100: 32x32 colour images of 100 classes (torchvision's files, downloaded if missing)"
)
class CIFAR100(CIFARBase):
    num_classes = 100
    dims = (3, 32, 32)
    class_names = CIFAR100_CLASSES
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    title = "CIFAR-100"
    layout = "DATA_DIR/cifar-100-python/{train,test,meta} (the python version)"
    download_page = CIFAR_PAGE
    label_key = "fine_labels"

    def torchvision_class(self):
        from torchvision.datasets import CIFAR100 as TV

        return TV


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
    return ArraySource(np.ascontiguousarray(np.moveaxis(x.astype(np.uint8), 3, 0)), labels)  # (N, 32, 32, 3)


@register_datamodule("svhn", "SVHN: 32x32 house-number digits (torchvision's .mat files, downloaded if missing)")
class SVHN(TorchvisionImages):
    num_classes = 10
    dims = (3, 32, 32)
    class_names = [str(d) for d in range(10)]
    mean = (0.4377, 0.4438, 0.4728)
    std = (0.1980, 0.2010, 0.1970)
    title = "SVHN"
    layout = "DATA_DIR/{train,test}_32x32.mat (and extra_32x32.mat with --use_extra)"
    download_page = "http://ufldl.stanford.edu/housenumbers/ (format 2, or let --download=true fetch it)"

    def __init__(
        self,
        data_dir: str = "data/svhn",
        use_extra: bool = False,
        download: bool = True,
        checksum: bool = True,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        random_crop: bool = True,
        crop_padding: int = 4,
        hflip: bool = False,
        normalize: bool = True,
        limit: Optional[int] = None,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.use_extra = use_extra
        super().__init__(download, checksum, data_dir=data_dir, val_fraction=val_fraction, split_seed=split_seed,
                         random_crop=random_crop, crop_padding=crop_padding, hflip=hflip, normalize=normalize,
                         limit=limit, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.save_hyperparameters()

    def splits(self) -> List[str]:
        return ["train", "test"] + (["extra"] if self.use_extra else [])

    def files(self) -> List[Tuple[Path, str]]:
        from torchvision.datasets import SVHN as TV

        return [(self.data_dir / TV.split_list[s][1], TV.split_list[s][2]) for s in self.splits()]

    def fetch(self) -> None:
        from torchvision.datasets import SVHN as TV
        from torchvision.datasets.utils import download_url

        for s in self.splits():
            url, filename, md5 = TV.split_list[s]
            if not (self.data_dir / filename).is_file():
                download_url(url, str(self.data_dir), filename, md5)

    def load_sources(self) -> Tuple[ImageSource, Optional[ImageSource], ImageSource]:
        self.check_files()
        train = read_svhn(self.data_dir / "train_32x32.mat")
        if self.use_extra:  # "extra": 531k easier digits, added to the training split (val is still carved from it)
            extra = read_svhn(self.data_dir / "extra_32x32.mat")
            train = ArraySource(np.concatenate([train.images, extra.images]),
                                np.concatenate([train.labels, extra.labels]))
        return train, None, read_svhn(self.data_dir / "test_32x32.mat")


# ----------------------------------------------------------------------------------------------------
# CINIC-10 and Tiny ImageNet: published folders, read in place

CINIC_SPLITS = ("train", "valid", "test")


@register_datamodule("cinic10", "CINIC-10: 32x32 images of the CIFAR-10 classes (CIFAR+ImageNet) from --data_dir")
class CINIC10(ImageDataModule):
    """CINIC-10 (Darlow et al. 2018) from its published folders; its ``valid/`` split is our val split.

    Class indices follow the sorted class-folder names (the CIFAR-10 order). ``val_fraction`` left unset uses
    the published ``valid/``; a number carves val from ``train/`` instead.
    """

    num_classes = 10
    dims = (3, 32, 32)
    class_names = CIFAR10_CLASSES
    mean = (0.47889522, 0.47227842, 0.43047404)
    std = (0.24205776, 0.23828046, 0.25874835)
    title = "CINIC-10"
    layout = "DATA_DIR/{train,valid,test}/<class>/*.png (the unpacked CINIC-10.tar.gz)"
    download_page = "https://datashare.ed.ac.uk/handle/10283/3192 (see https://github.com/BayesWatch/cinic-10)"

    def __init__(
        self,
        data_dir: str = "data/cinic10",
        val_fraction: Optional[float] = None,
        split_seed: int = 0,
        random_crop: bool = True,
        crop_padding: int = 4,
        hflip: bool = True,
        normalize: bool = True,
        limit: Optional[int] = None,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(data_dir=data_dir, val_fraction=val_fraction, split_seed=split_seed, random_crop=random_crop,
                         crop_padding=crop_padding, hflip=hflip, normalize=normalize, limit=limit,
                         batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.save_hyperparameters()
        self.class_names = self.check_folders()
        self.num_classes = len(self.class_names)

    def check_folders(self) -> List[str]:
        """The class names (sorted folder names), after checking each split holds the same class folders."""
        if not self.data_dir.is_dir():
            raise self.layout_error(f"--data_dir={self.data_dir} does not exist")
        classes = None
        for split in CINIC_SPLITS:
            d = self.data_dir / split
            if not d.is_dir():
                raise self.layout_error(f"{d} does not exist")
            names = sorted(p.name for p in d.iterdir() if p.is_dir())
            if not names:
                raise self.layout_error(f"{d} holds no class folders")
            if classes is not None and names != classes:
                raise self.layout_error(f"{d} has class folders {names}, but {self.data_dir / 'train'} has {classes}")
            classes = names
        return classes

    def load_split(self, split: str) -> FileSource:
        paths, labels = [], []
        for k, name in enumerate(self.class_names):
            d = self.data_dir / split / name
            files = sorted(p for p in d.iterdir() if p.suffix.lower() == ".png")
            if not files:
                raise self.layout_error(f"{d} holds no .png images")
            paths += files
            labels += [k] * len(files)
        return FileSource(paths, labels, self.dims[1:], self.title)

    def load_sources(self) -> Tuple[ImageSource, Optional[ImageSource], ImageSource]:
        self.check_folders()
        return self.load_split("train"), self.load_split("valid"), self.load_split("test")


@register_datamodule("tiny_imagenet", "Tiny ImageNet: 64x64 images of 200 classes, read from --data_dir")
class TinyImageNet(ImageDataModule):
    """Tiny ImageNet from the published ``tiny-imagenet-200`` folder (``data_dir`` may also be that folder).

    The test split is the labelled ``val/`` (labels from ``val/val_annotations.txt``; the real ``test/`` is
    unlabelled and unused); our val split is carved from ``train/`` (``val_fraction``, ``split_seed``).
    Class indices follow the sorted wnids of ``wnids.txt``; ``class_names`` are the first name words.txt
    gives for each wnid.
    """

    num_classes = 200
    dims = (3, 64, 64)
    mean = (0.4802, 0.4481, 0.3975)
    std = (0.2770, 0.2691, 0.2821)
    title = "Tiny ImageNet"
    layout = ("DATA_DIR/tiny-imagenet-200/ holding wnids.txt, words.txt, train/<wnid>/images/*.JPEG, "
              "val/images/*.JPEG and val/val_annotations.txt (the unzipped tiny-imagenet-200.zip)")
    download_page = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"

    def __init__(
        self,
        data_dir: str = "data",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        random_crop: bool = True,
        crop_padding: int = 8,
        hflip: bool = True,
        normalize: bool = True,
        limit: Optional[int] = None,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(data_dir=data_dir, val_fraction=val_fraction, split_seed=split_seed, random_crop=random_crop,
                         crop_padding=crop_padding, hflip=hflip, normalize=normalize, limit=limit,
                         batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.save_hyperparameters()
        self.root = self.locate()
        self.wnids = self.read_wnids()
        self.num_classes = len(self.wnids)
        self.class_names = self.read_words()

    def locate(self) -> Path:
        """The tiny-imagenet-200 folder, after checking its files and folders exist."""
        if (self.data_dir / "wnids.txt").is_file():
            root = self.data_dir
        elif (self.data_dir / "tiny-imagenet-200").is_dir():
            root = self.data_dir / "tiny-imagenet-200"
        else:
            raise self.layout_error(f"{self.data_dir / 'tiny-imagenet-200'} does not exist")
        for name in ("wnids.txt", "words.txt", "val/val_annotations.txt"):
            if not (root / name).is_file():
                raise self.layout_error(f"{root / name} does not exist")
        for name in ("train", "val/images"):
            if not (root / name).is_dir():
                raise self.layout_error(f"{root / name} does not exist")
        return root

    def read_wnids(self) -> List[str]:
        path = self.root / "wnids.txt"
        wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not wnids or len(set(wnids)) != len(wnids) or any(len(w.split()) != 1 for w in wnids):
            raise self.layout_error(f"{path} should list distinct wnids (like n01443537), one a line")
        return sorted(wnids)

    def read_words(self) -> List[str]:
        """The first name words.txt gives for each wnid (the wnid itself where words.txt has none)."""
        names = {}
        for line in (self.root / "words.txt").read_text().splitlines():
            wnid, _, words = line.partition("\t")
            names[wnid.strip()] = words.split(",")[0].strip()
        return [names.get(w) or w for w in self.wnids]

    def load_train(self) -> FileSource:
        paths, labels = [], []
        for k, wnid in enumerate(self.wnids):
            d = self.root / "train" / wnid / "images"
            if not d.is_dir():
                raise self.layout_error(f"{d} does not exist (wnid {wnid} is listed in wnids.txt)")
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
            if not files:
                raise self.layout_error(f"{d} holds no .JPEG images")
            paths += files
            labels += [k] * len(files)
        return FileSource(paths, labels, self.dims[1:], self.title)

    def load_val(self) -> FileSource:
        """The labelled val/ split: val_annotations.txt lines are filename, wnid, x0, y0, x1, y1 (tab-separated)."""
        index = {w: k for k, w in enumerate(self.wnids)}
        ann = self.root / "val" / "val_annotations.txt"
        paths, labels = [], []
        for n, line in enumerate(ann.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1].strip() not in index:
                raise self.layout_error(f"{ann} line {n} ({line.strip()[:60]!r}) should be filename<TAB>wnid<TAB>box "
                                        f"with a wnid from wnids.txt")
            path = self.root / "val" / "images" / fields[0].strip()
            if not path.is_file():
                raise self.layout_error(f"{path}, named on line {n} of {ann}, does not exist")
            paths.append(path)
            labels.append(index[fields[1].strip()])
        if not paths:
            raise self.layout_error(f"{ann} lists no images")
        return FileSource(paths, labels, self.dims[1:], self.title)

    def load_sources(self) -> Tuple[ImageSource, Optional[ImageSource], ImageSource]:
        return self.load_train(), None, self.load_val()
