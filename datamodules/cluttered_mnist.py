"""Cluttered and translated MNIST, made on the fly.

Variants (``variant=``):
- ``dham``: a digit rescaled by a random factor in ``scale_range`` at a random place on a 120x120
  canvas (DHAM's experiment); ``snr`` adds Gaussian background noise (its noisy experiment).
- ``translated``: a 28x28 digit at a random place on a 60x60 canvas (RAM, Mnih et al. 2014, sec. 4.1).
- ``cluttered``: translated, plus ``clutter`` 8x8 pieces cut from random other digits at random places
  (RAM: 60x60 with 4 pieces, 100x100 with 8).

``channels=3`` repeats the grey canvas as RGB (e.g. a 32x32 three-channel digit canvas for PHAM).

Each val/test item is drawn from a generator seeded by (data_seed, split, index): identical across runs,
workers and ranks. A train item also mixes in one draw from torch's RNG, so train images change every
epoch yet repeat exactly under the same ``--seed``. Val digits are carved out of the train digits
(``val_fraction`` of them, fixed), test uses the test digits. Pixels are float32 in [0, 1] (before noise).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from attention_lightning.registry import register_datamodule

from .base import BaseDataModule
from .digits import load_digits

VARIANTS = {
    # canvas, scale range, clutter pieces
    "dham": (120, (0.8, 1.6), 0),
    "translated": (60, (1.0, 1.0), 0),
    "cluttered": (60, (1.0, 1.0), 4),
}
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


class CanvasDigits(Dataset):
    """Digits rendered on a canvas; item i uses digit i mod N (val/test) or a random digit (train)."""

    def __init__(
        self, images: Tensor, labels: Tensor, length: int, split: str, canvas: int,
        scale_range: Tuple[float, float], clutter: int, clutter_size: int, snr: Optional[float], data_seed: int,
        channels: int = 1,
    ) -> None:
        self.images = images.numpy() if isinstance(images, Tensor) else images  # (N, 28, 28) uint8
        self.labels = labels.numpy() if isinstance(labels, Tensor) else labels   # (N,)
        self.length, self.split, self.canvas = length, split, canvas
        self.scale_range, self.clutter, self.clutter_size, self.snr = scale_range, clutter, clutter_size, snr
        self.data_seed, self.channels = data_seed, channels
        self.max_side = int(round(28 * max(scale_range)))
        if self.max_side > canvas:
            raise ValueError(
                f"a digit scaled by {max(scale_range)} is {self.max_side}px, larger than the {canvas}px canvas; "
                f"use a --canvas_size >= {self.max_side} or a smaller --scale_range"
            )

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        key = [self.data_seed, SPLIT_IDS[self.split], index]
        if self.split == "train":
            key.append(int(torch.randint(0, 2**62, ()).item()))  # advances with torch's (worker) RNG
        return np.random.default_rng(key)

    def render(self, index: int) -> Tuple[np.ndarray, int, dict]:
        """Canvas (H, W) float32, label, and where things went: ``digit`` (x0, y0, side) and ``clutter``
        [(x0, y0, side), ...] in pixels."""
        rng = self.rng(index)
        n = len(self.labels)
        d = int(rng.integers(n)) if self.split == "train" else index % n
        digit = self.images[d]
        lo, hi = self.scale_range
        side = 28 if lo == hi == 1.0 else int(round(28 * rng.uniform(lo, hi)))
        if side != 28:
            digit = np.asarray(Image.fromarray(digit).resize((side, side), Image.BILINEAR))
        canvas = np.zeros((self.canvas, self.canvas), dtype=np.uint8)
        pieces = []
        for _ in range(self.clutter):
            src = self.images[int(rng.integers(n))]
            r, c = rng.integers(0, 28 - self.clutter_size + 1, size=2)
            y, x = rng.integers(0, self.canvas - self.clutter_size + 1, size=2)
            k = self.clutter_size
            pieces.append((int(x), int(y), k))
            np.maximum(canvas[y:y + k, x:x + k], src[r:r + k, c:c + k], out=canvas[y:y + k, x:x + k])
        y, x = rng.integers(0, self.canvas - side + 1, size=2)
        np.maximum(canvas[y:y + side, x:x + side], digit, out=canvas[y:y + side, x:x + side])
        out = canvas.astype(np.float32) / 255.0
        if self.snr is not None:
            out += rng.normal(0.0, 1.0 / self.snr, size=out.shape).astype(np.float32)
        return out, int(self.labels[d]), {"digit": (int(x), int(y), side), "clutter": pieces}

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        out, label, _ = self.render(index)
        image = torch.from_numpy(out)[None]  # (1, H, W)
        return (image.expand(self.channels, -1, -1).contiguous() if self.channels > 1 else image), label  # (C, H, W)


@register_datamodule("cluttered_mnist", "MNIST digits on a larger canvas, made on the fly: dham | translated | cluttered")
class ClutteredMNIST(BaseDataModule):
    num_classes = 10
    class_names = [str(i) for i in range(10)]

    def __init__(
        self,
        variant: str = "dham",
        canvas_size: Optional[int] = None,
        scale_range: Optional[Sequence[float]] = None,
        clutter: Optional[int] = None,
        clutter_size: int = 8,
        snr: Optional[float] = None,
        digits: str = "auto",
        data_dir: str = "data",
        train_size: int = 20000,
        val_size: int = 2000,
        test_size: Optional[int] = None,
        val_fraction: float = 0.1,
        data_seed: int = 0,
        channels: int = 1,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if variant not in VARIANTS:
            raise ValueError(f"--variant={variant!r} is not a cluttered-MNIST variant; use one of {', '.join(VARIANTS)}")
        default_canvas, default_scale, default_clutter = VARIANTS[variant]
        self.canvas = int(canvas_size or default_canvas)
        self.scale_range = tuple(float(s) for s in (scale_range or default_scale))
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"--scale_range={list(self.scale_range)} must be [low, high] with 0 < low <= high")
        self.clutter = default_clutter if clutter is None else int(clutter)
        if snr is not None and snr <= 0:
            raise ValueError(f"--snr={snr} must be positive (noise std = 1/snr of the digit's peak intensity)")
        if not 0 < val_fraction < 1:
            raise ValueError(f"--val_fraction={val_fraction} must be in (0, 1)")
        if channels not in (1, 3):
            raise ValueError(f"--channels={channels} must be 1 (grey) or 3 (the grey digit repeated as RGB)")
        self.save_hyperparameters()
        self.dims = (channels, self.canvas, self.canvas)
        self.digit_source: Optional[str] = None

    def prepare_data(self) -> None:
        # rank 0 downloads MNIST once when online; setup() on every rank then reads it (or the embedded set)
        if self.hparams.digits in ("auto", "mnist"):
            from .digits import download_mnist

            download_mnist(self.hparams.data_dir)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        digits = load_digits(hp.data_dir, hp.digits)
        self.digit_source = digits.description
        self.hparams["digit_source"] = digits.description  # logged with the run's hyperparameters
        n = len(digits.train_labels)
        perm = torch.from_numpy(np.random.default_rng(12345).permutation(n))  # fixed: the same val digits always
        n_val = max(1, int(round(n * hp.val_fraction)))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        common = dict(canvas=self.canvas, scale_range=self.scale_range, clutter=self.clutter,
                      clutter_size=hp.clutter_size, snr=hp.snr, data_seed=hp.data_seed, channels=hp.channels)
        self.train_set = CanvasDigits(digits.train_images[train_idx], digits.train_labels[train_idx],
                                      hp.train_size, "train", **common)
        self.val_set = CanvasDigits(digits.train_images[val_idx], digits.train_labels[val_idx],
                                    hp.val_size, "val", **common)
        self.test_set = CanvasDigits(digits.test_images, digits.test_labels,
                                     hp.test_size or len(digits.test_labels), "test", **common)
