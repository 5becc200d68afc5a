"""CINIC-10 and Tiny ImageNet: published image folders, downloaded when asked and cached as decoded arrays.

- ``cinic10``: ``DATA_DIR/{train,valid,test}/<class>/*.png`` (the unpacked CINIC-10.tar.gz).
- ``tiny_imagenet``: ``DATA_DIR/tiny-imagenet-200/`` (the unzipped tiny-imagenet-200.zip).

torchvision's folder functions (``find_classes``, ``make_dataset``, the ones ``ImageFolder`` scans with) list
the files; what this module adds is the published archive's download and checksum, one-line errors, and a
decoded-image cache: the first ``setup`` packs each split into one (N, 3, H, W) uint8 ``.npy`` file beside a
manifest (a digest of every file's path, size, mtime and label), memory-mapped on later runs and shared by
dataloader workers; a changed, added or removed file changes the digest and the split is packed again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from attention_lightning.registry import register_datamodule

from .base import DatasetError
from .cifar import CIFAR10_CLASSES
from .images import ArraySource, FileSource, ImageDataModule, ImageSource

CACHE_FOLDER = ".attention_lightning_cache"
PACK_CHUNK = 1024  # images decoded between writes to the cache file


def scan(directory: Path, class_to_idx: dict[str, int], extensions: tuple[str, ...]) -> list[tuple[str, int]]:
    """(path, class index) of every image under ``directory/<class>/`` (any depth), by torchvision's scanner."""
    from torchvision.datasets.folder import make_dataset

    return make_dataset(str(directory), class_to_idx, extensions=extensions, allow_empty=True)


class FolderImages(ImageDataModule):
    """A set published as one archive of image folders: download, extraction in place, and the cache.

    Arguments:
        cache: decode each split once into a memory-mapped uint8 array file (false: decode the files every epoch).
        cache_dir: folder of the cache files (None: ``.attention_lightning_cache`` inside the dataset folder).
    """

    archive_url = ""
    archive_md5 = ""
    archive_name = ""

    def __init__(self, cache: bool = True, cache_dir: str | None = None, **options) -> None:
        self.cache, self.cache_dir = cache, cache_dir
        super().__init__(**options)

    def root(self) -> Path:
        """The dataset folder (what the archive unpacks to)."""
        return self.data_dir

    def fetch(self) -> None:
        """Download the archive into ``data_dir``, check its md5, unpack it there, delete it."""
        from torchvision.datasets.utils import calculate_md5, download_url, extract_archive

        self.data_dir.mkdir(parents=True, exist_ok=True)
        archive = self.data_dir / self.archive_name
        download_url(self.archive_url, str(self.data_dir), self.archive_name)
        if self.checksum and calculate_md5(str(archive)) != self.archive_md5:
            archive.unlink()
            raise ValueError(f"the downloaded {self.archive_name} does not have the published md5 {self.archive_md5}")
        partial = self.data_dir / f".{self.archive_name}.partial"  # a failed extraction leaves no half folder
        shutil.rmtree(partial, ignore_errors=True)
        extract_archive(str(archive), str(partial))
        for entry in partial.iterdir():
            if not (self.data_dir / entry.name).exists():
                entry.rename(self.data_dir / entry.name)
        shutil.rmtree(partial)
        archive.unlink()

    def check_files(self) -> None:
        missing = self.missing()
        if missing and self.download_failure:
            raise DatasetError(
                f"{missing[0]} does not exist and {self.archive_name} could not be downloaded from {self.archive_url} "
                f"({self.download_failure}); fetch it by hand from {self.download_page} and unpack it into "
                f"--data_dir={self.data_dir}")
        if missing:
            raise self.layout_error(f"{missing[0]} does not exist")

    def scan_sources(self) -> dict[str, FileSource]:
        """The published splits as file sources, by name ("train" first, then val if published, then test)."""
        raise NotImplementedError

    def load_sources(self) -> tuple[ImageSource, ImageSource | None, ImageSource]:
        self.check_files()
        named = self.scan_sources()
        sources = {k: self.packed(k, s) if self.cache else s for k, s in named.items()}
        values = list(sources.values())
        return values[0], values[1] if len(values) == 3 else None, values[-1]

    def cache_folder(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else self.root() / CACHE_FOLDER

    def packed(self, split: str, source: FileSource) -> ArraySource:
        """``source`` decoded into ``<cache>/<split>.npy`` (reused while its manifest's digest matches)."""
        folder = self.cache_folder()
        array, manifest = folder / f"{split}.npy", folder / f"{split}.json"
        root = self.root()
        digest = hashlib.sha1()
        for path, label in zip(source.paths, source.labels.tolist()):
            st = os.stat(path)
            digest.update(f"{os.path.relpath(path, root)}\t{st.st_size}\t{st.st_mtime_ns}\t{label}\n".encode())
        h, w = source.size
        shape = (len(source), 3, h, w)  # channels first, as ImageSource.batch gives them
        want = {"dataset": self.title, "split": split, "shape": list(shape), "digest": digest.hexdigest()}
        if array.is_file() and manifest.is_file():
            try:
                same = json.loads(manifest.read_text()) == want
            except ValueError:
                same = False
            if same:
                return ArraySource(np.load(array, mmap_mode="r"), source.labels)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{split}.{os.getpid()}.npy"  # written whole, then moved into place
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)  # (N, 3, H, W)
        try:
            for start in range(0, len(source), PACK_CHUNK):
                idx = np.arange(start, min(start + PACK_CHUNK, len(source)))
                out[idx] = source.batch(idx)
            out.flush()
            del out
            os.replace(tmp, array)
        finally:
            tmp.unlink(missing_ok=True)
        tmp_manifest = folder / f".{split}.{os.getpid()}.json"
        tmp_manifest.write_text(json.dumps(want))
        os.replace(tmp_manifest, manifest)
        return ArraySource(np.load(array, mmap_mode="r"), source.labels)

    def provenance(self) -> dict:
        cache = str(self.cache_folder().resolve()) if self.cache else None
        return {**super().provenance(), "root": str(self.root().resolve()), "cache": cache}


@register_datamodule("cinic10", "CINIC-10: 32x32 images of the CIFAR-10 classes (CIFAR+ImageNet), downloaded if missing")
class CINIC10(FolderImages):
    """CINIC-10 (Darlow et al. 2018): 90,000 images per split; its published ``valid/`` is our val split.

    Class indices follow the sorted class-folder names (the CIFAR-10 order).

    Arguments:
        data_dir: folder holding (or receiving) ``train/``, ``valid/`` and ``test/``.
        val_fraction: None uses the published ``valid/``; a fraction carves val from ``train/`` instead.
    """

    num_classes = 10
    dims = (3, 32, 32)
    class_names = CIFAR10_CLASSES
    mean = (0.47889522, 0.47227842, 0.43047404)
    std = (0.24205776, 0.23828046, 0.25874835)
    title = "CINIC-10"
    layout = "DATA_DIR/{train,valid,test}/<class>/*.png (the unpacked CINIC-10.tar.gz)"
    download_page = "https://datashare.ed.ac.uk/handle/10283/3192 (see https://github.com/BayesWatch/cinic-10)"
    archive_url = "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz"
    archive_md5 = "6ee4d0c996905fe93221de577967a372"
    archive_name = "CINIC-10.tar.gz"
    splits = ("train", "valid", "test")

    def __init__(self, data_dir: str = "data/cinic10", val_fraction: float | None = None, **options) -> None:
        super().__init__(data_dir=data_dir, val_fraction=val_fraction, **options)
        if not self.missing():
            self.class_names = self.check_folders()
            self.num_classes = len(self.class_names)

    def files(self) -> list[tuple[Path, str | None]]:
        return [(self.data_dir / split, None) for split in self.splits]

    def check_folders(self) -> list[str]:
        """The class names (sorted folder names), after checking each split holds the same class folders."""
        classes = None
        for split in self.splits:
            d = self.data_dir / split
            names = sorted(p.name for p in d.iterdir() if p.is_dir())
            if not names:
                raise self.layout_error(f"{d} holds no class folders")
            if classes is not None and names != classes:
                raise self.layout_error(f"{d} has class folders {names}, but {self.data_dir / 'train'} has {classes}")
            classes = names
        return classes

    def scan_sources(self) -> dict[str, FileSource]:
        self.class_names = self.check_folders()
        index = {name: k for k, name in enumerate(self.class_names)}
        out = {}
        for split in self.splits:
            samples = scan(self.data_dir / split, index, (".png",))
            found = {k for _, k in samples}
            for name, k in index.items():
                if k not in found:
                    raise self.layout_error(f"{self.data_dir / split / name} holds no .png images")
            paths, labels = zip(*samples)
            out[split] = FileSource(paths, labels, self.dims[1:], self.title)
        return out


@register_datamodule("tiny_imagenet", "Tiny ImageNet: 64x64 images of 200 classes, downloaded if missing")
class TinyImageNet(FolderImages):
    """Tiny ImageNet from the published ``tiny-imagenet-200`` folder (``data_dir`` may also be that folder).

    The test split is the labelled ``val/`` (labels from ``val/val_annotations.txt``; the real ``test/`` is
    unlabelled and unused); our val split is carved from ``train/`` (``val_fraction``, ``split_seed``).
    Class indices follow the sorted wnids of ``wnids.txt``; ``class_names`` are the first name words.txt
    gives for each wnid.

    Arguments:
        data_dir: folder holding (or receiving) ``tiny-imagenet-200/``, or that folder itself.
        crop_padding: zero pixels added on every side before the random crop (8 for 64x64 images).
    """

    num_classes = 200
    dims = (3, 64, 64)
    mean = (0.4802, 0.4481, 0.3975)
    std = (0.2770, 0.2691, 0.2821)
    title = "Tiny ImageNet"
    layout = ("DATA_DIR/tiny-imagenet-200/ holding wnids.txt, words.txt, train/<wnid>/images/*.JPEG, "
              "val/images/*.JPEG and val/val_annotations.txt (the unzipped tiny-imagenet-200.zip)")
    download_page = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    archive_url = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    archive_md5 = "90528d7ca1a48142e341f4ef8d21d0de"
    archive_name = "tiny-imagenet-200.zip"

    def __init__(self, data_dir: str = "data", crop_padding: int = 8, **options) -> None:
        self.wnids: list[str] | None = None
        super().__init__(data_dir=data_dir, crop_padding=crop_padding, **options)
        if not self.missing():
            self.read_classes()

    def root(self) -> Path:
        return self.data_dir if (self.data_dir / "wnids.txt").is_file() else self.data_dir / "tiny-imagenet-200"

    def files(self) -> list[tuple[Path, str | None]]:
        names = ("wnids.txt", "words.txt", "val/val_annotations.txt", "train", "val/images")
        return [(self.root() / name, None) for name in names]

    def read_classes(self) -> None:
        """wnids (sorted) and class names from wnids.txt and words.txt."""
        path = self.root() / "wnids.txt"
        wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not wnids or len(set(wnids)) != len(wnids) or any(len(w.split()) != 1 for w in wnids):
            raise self.layout_error(f"{path} should list distinct wnids (like n01443537), one a line")
        self.wnids = sorted(wnids)
        self.num_classes = len(self.wnids)
        names = {}
        for line in (self.root() / "words.txt").read_text().splitlines():
            wnid, _, words = line.partition("\t")
            names[wnid.strip()] = words.split(",")[0].strip()
        self.class_names = [names.get(w) or w for w in self.wnids]

    def load_train(self) -> FileSource:
        index = {w: k for k, w in enumerate(self.wnids)}
        samples = scan(self.root() / "train", index, (".jpeg", ".jpg"))
        found = {k for _, k in samples}
        for wnid, k in index.items():
            d = self.root() / "train" / wnid / "images"
            if not d.is_dir():
                raise self.layout_error(f"{d} does not exist (wnid {wnid} is listed in wnids.txt)")
            if k not in found:
                raise self.layout_error(f"{d} holds no .JPEG images")
        paths, labels = zip(*samples)
        return FileSource(paths, labels, self.dims[1:], self.title)

    def load_val(self) -> FileSource:
        """The labelled val/ split: val_annotations.txt lines are filename, wnid, x0, y0, x1, y1 (tab-separated)."""
        index = {w: k for k, w in enumerate(self.wnids)}
        ann = self.root() / "val" / "val_annotations.txt"
        paths, labels = [], []
        for n, line in enumerate(ann.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1].strip() not in index:
                raise self.layout_error(f"{ann} line {n} ({line.strip()[:60]!r}) should be filename<TAB>wnid<TAB>box "
                                        f"with a wnid from wnids.txt")
            path = self.root() / "val" / "images" / fields[0].strip()
            if not path.is_file():
                raise self.layout_error(f"{path}, named on line {n} of {ann}, does not exist")
            paths.append(path)
            labels.append(index[fields[1].strip()])
        if not paths:
            raise self.layout_error(f"{ann} lists no images")
        return FileSource(paths, labels, self.dims[1:], self.title)

    def scan_sources(self) -> dict[str, FileSource]:
        self.read_classes()
        return {"train": self.load_train(), "val": self.load_val()}
