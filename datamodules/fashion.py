"""Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747): 60,000 + 10,000 real 28x28 grey images of clothing.

The four official files are read from the first folder that holds them:
1. ``<data_dir>/FashionMNIST/raw`` (torchvision's layout; torchvision downloads there when online);
2. ``<data_dir>`` itself (e.g. ``--data_dir=/usr/share/datasets/fashion-mnist``);
3. ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist`` package puts them.

Each file may be gzipped (``*.gz``, as published) or plain (as torchvision extracts it). A file is accepted when
its gzip matches the published MD5 or its content matches the official content's MD5 (Debian recompresses the
files, so only their content is the same); a missing, truncated or different file stops with one line naming it.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class IdxFile:
    name: str          # the published file name without ``.gz``
    gz_md5: str        # MD5 of the published gzip (as torchvision lists it)
    content_md5: str   # MD5 of the uncompressed idx file
    shape: tuple       # (N,) labels or (N, 28, 28) images


# name -> what the official file is (gzip MD5s as published; content MD5s measured on the files of Debian's
# dataset-fashion-mnist, which recompresses the published files); tests may point these at small files of their own
FILES: dict[str, IdxFile] = {f.name: f for f in (
    IdxFile("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            (60000, 28, 28)),
    IdxFile("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9",
            (60000,)),
    IdxFile("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a",
            (10000, 28, 28)),
    IdxFile("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965",
            (10000,)),
)}


class FashionMNISTError(FileNotFoundError):
    """Fashion-MNIST cannot be read; the message names the file and the fix."""


def candidate_dirs(data_dir: str) -> list[Path]:
    """Folders searched for the four files, in order."""
    root = Path(data_dir).expanduser()
    return [root / "FashionMNIST" / "raw", root, DEBIAN_DIR]


def _present(folder: Path, name: str) -> Path | None:
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def find_folder(data_dir: str) -> Path | None:
    """The first candidate folder that holds all four files (plain or gzipped), else None."""
    for folder in candidate_dirs(data_dir):
        if all(_present(folder, name) for name in FILES):
            return folder
    return None


def parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """An idx array (uint8 labels or images) from its bytes; a wrong header or length names the file."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise FashionMNISTError(f"{path} is not an idx file of unsigned bytes; replace it with the official file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise FashionMNISTError(f"{path} is truncated or padded ({len(raw)} bytes, its header says {expected}); "
                                f"replace it with the official file")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_checked(path: Path, spec: IdxFile) -> np.ndarray:
    """One file's array, after checking it is the official file (by gzip or content MD5) of the right shape."""
    data = path.read_bytes()
    gz_ok = False
    if path.suffix == ".gz":
        gz_ok = hashlib.md5(data).hexdigest() == spec.gz_md5
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise FashionMNISTError(f"{path} is not a complete gzip file ({e}); replace it with the official file")
    if not gz_ok and hashlib.md5(data).hexdigest() != spec.content_md5:
        raise FashionMNISTError(f"{path} is not the official {spec.name} (checksum differs); delete it and "
                                f"reinstall or download it (apt-get install dataset-fashion-mnist)")
    array = parse_idx(data, path)
    if array.shape != spec.shape:
        raise FashionMNISTError(f"{path} holds an array of shape {array.shape}, not {spec.shape}; replace it")
    return array


def download(data_dir: str, timeout: float = 10.0) -> str | None:
    """Download into ``<data_dir>/FashionMNIST/raw`` through torchvision; the reason it failed, or None."""
    if find_folder(data_dir) is not None:
        return None
    if os.environ.get("ATTENTION_LIGHTNING_OFFLINE"):
        return "ATTENTION_LIGHTNING_OFFLINE is set"
    from torchvision.datasets import FashionMNIST

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        FashionMNIST(data_dir, train=True, download=True)
        FashionMNIST(data_dir, train=False, download=True)
        return None
    except Exception as e:  # network errors come in many types; all mean "not downloadable now"
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
    finally:
        socket.setdefaulttimeout(old)


@functools.lru_cache(maxsize=4)
def load(data_dir: str, download_timeout: float = 10.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   torch.Tensor, Path]:
    """(train images (60000, 28, 28) uint8, train labels (60000,) int64, test images, test labels, folder)."""
    failure = download(data_dir, download_timeout)
    folder = find_folder(data_dir)
    if folder is None:
        searched = ", ".join(str(d) for d in candidate_dirs(data_dir))
        raise FashionMNISTError(
            f"--digits=fashion but the four Fashion-MNIST files are in none of {searched} and could not be "
            f"downloaded ({failure}); run `apt-get install dataset-fashion-mnist`, or copy the four official "
            f"*-ubyte.gz files into {Path(data_dir) / 'FashionMNIST' / 'raw'}")
    arrays = {name: read_checked(_present(folder, name), spec) for name, spec in FILES.items()}
    as_long = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return (torch.from_numpy(arrays["train-images-idx3-ubyte"].copy()), as_long(arrays["train-labels-idx1-ubyte"]),
            torch.from_numpy(arrays["t10k-images-idx3-ubyte"].copy()), as_long(arrays["t10k-labels-idx1-ubyte"]),
            folder)
