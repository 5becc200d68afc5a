"""Cluttered and translated MNIST, made on the fly.

Variants (``variant=``):
- ``dham``: a digit rescaled by a random factor in ``scale_range`` at a random place on a 120x120
  canvas (DHAM's experiment); ``snr`` adds Gaussian background noise (its noisy experiment).
- ``translated``: a 28x28 digit at a random place on a 60x60 canvas (RAM, Mnih et al. 2014, sec. 4.1).
- ``cluttered``: translated, plus ``clutter`` 8x8 pieces cut from random other digits at random places
  (RAM: 60x60 with 4 pieces, 100x100 with 8).

``digits=fashion`` draws the objects and the clutter pieces from Fashion-MNIST instead of MNIST (same sizes,
same splits: validation is carved out of the 60,000 training images, test uses the official 10,000).

``channels=3`` repeats the grey canvas as RGB (e.g. a 32x32 three-channel digit canvas for PHAM).

Each val/test item's random numbers come from a counter-based hash of (data_seed, split, index):
identical across runs, workers, ranks and batch compositions. A train item also mixes in one draw from
torch's RNG, so train images change every epoch yet repeat exactly under the same ``--seed``. Batches are
rendered at once (``__getitems__``), vectorized over the batch. Val digits are carved out of the train digits
(``val_fraction`` of them, fixed), test uses the test digits. Pixels are float32 in [0, 1] (before noise).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from attention_lightning.registry import register_datamodule

from .base import BaseDataModule
from .counter_rng import ItemStreams
from .digits import load_digits

VARIANTS = {
    # canvas, scale range, clutter pieces
    "dham": (120, (0.8, 1.6), 0),
    "translated": (60, (1.0, 1.0), 0),
    "cluttered": (60, (1.0, 1.0), 4),
}


class CanvasDigits(Dataset):
    """Digits rendered on a canvas; item i uses digit i mod N (val/test) or a random digit (train)."""

    def __init__(
        self, images: Tensor, labels: Tensor, length: int, split: str, canvas: int,
        scale_range: tuple[float, float], clutter: int, clutter_size: int, snr: float | None, data_seed: int,
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

    def render_batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Canvases (B, H, W) float32, labels (B,), digit boxes (B, 3) and clutter boxes (B, n, 3) as
        (x0, y0, side) in pixels. Vectorized over the batch except the per-digit resize of scaled variants."""
        idx = np.asarray(indices, dtype=np.int64)
        b, n, c, k = len(idx), len(self.labels), self.canvas, self.clutter_size
        streams = ItemStreams(self.data_seed, self.split, idx)
        u = streams.uniform(0, 4 + 5 * self.clutter)  # (B, 4 + 5 * clutter)
        d = (u[:, 0] * n).astype(np.int64) if self.split == "train" else idx % n  # (B,) digit of each item
        lo, hi = self.scale_range
        side = np.full(b, 28) if lo == hi == 1.0 else np.rint(28 * (lo + (hi - lo) * u[:, 1])).astype(np.int64)
        y, x = (u[:, 2] * (c - side + 1)).astype(np.int64), (u[:, 3] * (c - side + 1)).astype(np.int64)
        canvas = np.zeros((b, c, c), dtype=np.uint8)
        rows_b = np.arange(b)[:, None, None]  # (B, 1, 1)
        pieces = np.zeros((b, self.clutter, 3), dtype=np.int64)
        ar_k = np.arange(k)
        for j in range(self.clutter):  # one piece per item per pass: no index repeats within a pass
            f = u[:, 4 + 5 * j: 9 + 5 * j]  # source digit, window row/col in it, place y/x on the canvas
            src = (f[:, 0] * n).astype(np.int64)
            r, col = (f[:, 1] * (28 - k + 1)).astype(np.int64), (f[:, 2] * (28 - k + 1)).astype(np.int64)
            py, px = (f[:, 3] * (c - k + 1)).astype(np.int64), (f[:, 4] * (c - k + 1)).astype(np.int64)
            patch = self.images[src[:, None, None], (r[:, None] + ar_k)[:, :, None], (col[:, None] + ar_k)[:, None, :]]
            cy, cx = (py[:, None] + ar_k)[:, :, None], (px[:, None] + ar_k)[:, None, :]  # (B, k, 1), (B, 1, k)
            canvas[rows_b, cy, cx] = np.maximum(canvas[rows_b, cy, cx], patch)
            pieces[:, j] = np.stack([px, py, np.full(b, k)], axis=1)
        if lo == hi == 1.0:
            digits = self.images[d]  # (B, 28, 28)
        else:
            digits = self.scaled(d, side)  # (B, S, S), digit i in its top-left side_i x side_i corner
        w = digits.shape[-1]
        ar = np.arange(w)
        cy, cx = (y[:, None] + ar)[:, :, None], (x[:, None] + ar)[:, None, :]  # (B, w, 1), (B, 1, w)
        pad = np.zeros((b, c + w, c + w), dtype=np.uint8)  # room for windows that run past the canvas edge
        pad[:, :c, :c] = canvas
        pad[rows_b, cy, cx] = np.maximum(pad[rows_b, cy, cx], digits)
        canvas = pad[:, :c, :c]
        out = canvas.astype(np.float32) / 255.0
        if self.snr is not None:
            noise = streams.normal(4 + 5 * self.clutter, c * c).reshape(b, c, c)  # (B, H, W)
            out += noise / np.float32(self.snr)
        boxes = np.stack([x, y, side], axis=1)
        return out, self.labels[d].astype(np.int64), boxes, pieces

    def scaled(self, d: np.ndarray, side: np.ndarray) -> np.ndarray:
        """Digits ``d`` (B,) resized to ``side`` (B,) pixels by separable bilinear interpolation, each in the
        top-left corner of a (B, S, S) uint8 array, S = the largest side (zeros elsewhere)."""
        big = int(self.max_side)
        # window pixel p reads digit position (p + 0.5) * 28 / side - 0.5, between pixels i0 and i0 + 1
        pos = (np.arange(big)[None, :] + 0.5) * (28.0 / side[:, None]) - 0.5  # (B, S)
        i0 = np.floor(pos)
        frac = pos - i0
        cols = np.arange(28)[None, None, :]  # (1, 1, 28)
        weights = ((cols == i0[..., None]) * (1 - frac[..., None]) + (cols == i0[..., None] + 1) * frac[..., None])
        weights[np.arange(big)[None, :] >= side[:, None]] = 0.0  # rows past the digit's own size stay empty
        r = weights.astype(np.float32)  # (B, S, 28) interpolation matrices
        out = r @ self.images[d].astype(np.float32) @ r.transpose(0, 2, 1)  # (B, S, S)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def render(self, index: int) -> tuple[np.ndarray, int, dict]:
        """One canvas (H, W), its label, and ``{"digit": (x0, y0, side), "clutter": [(x0, y0, side), ...]}``."""
        out, labels, boxes, pieces = self.render_batch([index])
        return out[0], int(labels[0]), {"digit": tuple(int(v) for v in boxes[0]),
                                         "clutter": [tuple(int(v) for v in p) for p in pieces[0]]}

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, int]]:
        """A whole batch at once (the DataLoader calls this instead of __getitem__ when it exists)."""
        out, labels, _, _ = self.render_batch(indices)
        images = torch.from_numpy(out)[:, None]  # (B, 1, H, W)
        if self.channels > 1:
            images = images.expand(-1, self.channels, -1, -1)  # (B, C, H, W)
        return list(zip(images, labels.tolist()))

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.__getitems__([index])[0]


@register_datamodule("cluttered_mnist", "MNIST digits on a larger canvas, made on the fly: dham | translated | cluttered")
class ClutteredMNIST(BaseDataModule):
    """Cluttered, translated or scaled MNIST digits rendered on the fly (see the module docstring).

    Arguments:
        variant: dham (scaled digit on 120x120), translated (28x28 digit on 60x60) or cluttered (plus 8x8 pieces).
        canvas_size: canvas side in pixels (None: the variant's).
        scale_range: [low, high] digit scale factors, drawn uniformly (None: the variant's).
        clutter: number of clutter pieces per image (None: the variant's).
        clutter_size: side of each clutter piece in pixels.
        snr: background Gaussian noise std is 1/snr of the digit's peak intensity (None: no noise).
        digits: object source: auto (MNIST if readable or downloadable, else embedded), mnist, embedded or fashion.
        data_dir: folder holding (or receiving) ``MNIST/raw`` or ``FashionMNIST/raw``.
        train_size: training images per epoch.
        val_size: validation images.
        test_size: test images (None: one per test digit).
        val_fraction: fraction of the training digits kept for validation images (fixed).
        data_seed: seed of the val/test images (train images also follow ``--seed``).
        channels: 1 (grey) or 3 (the grey digit repeated as RGB).
    """

    num_classes = 10
    class_names = [str(i) for i in range(10)]

    def __init__(
        self,
        variant: Literal["dham", "translated", "cluttered"] = "dham",
        canvas_size: int | None = None,
        scale_range: Sequence[float] | None = None,
        clutter: int | None = None,
        clutter_size: int = 8,
        snr: float | None = None,
        digits: Literal["auto", "mnist", "embedded", "fashion"] = "auto",
        data_dir: str = "data",
        train_size: int = 20000,
        val_size: int = 2000,
        test_size: int | None = None,
        val_fraction: float = 0.1,
        data_seed: int = 0,
        channels: Literal[1, 3] = 1,
        **loader,
    ) -> None:
        super().__init__(**loader)
        default_canvas, default_scale, default_clutter = VARIANTS[variant]
        if canvas_size is not None and canvas_size < 1:
            raise ValueError(f"--canvas_size={canvas_size} must be a side of at least 1 pixel; leave it out for the "
                             f"{variant} variant's {default_canvas}")
        self.canvas = int(canvas_size or default_canvas)
        self.scale_range = tuple(float(s) for s in (scale_range or default_scale))
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"--scale_range={list(self.scale_range)} must be [low, high] with 0 < low <= high")
        if round(28 * self.scale_range[1]) > self.canvas:  # what CanvasDigits would find at setup
            raise ValueError(f"a digit scaled by {self.scale_range[1]} is {round(28 * self.scale_range[1])}px, larger "
                             f"than the {self.canvas}px canvas; use a --canvas_size >= "
                             f"{round(28 * self.scale_range[1])} or a smaller --scale_range")
        self.clutter = default_clutter if clutter is None else int(clutter)
        if snr is not None and snr <= 0:
            raise ValueError(f"--snr={snr} must be positive (noise std = 1/snr of the digit's peak intensity)")
        if not 0 < val_fraction < 1:
            raise ValueError(f"--val_fraction={val_fraction} must be in (0, 1)")
        self.dims = (int(channels), self.canvas, self.canvas)
        self.digit_source: str | None = None
        if digits == "fashion":
            from .fashion import CLASS_NAMES

            self.class_names = list(CLASS_NAMES)

    def provenance(self) -> dict:
        if self.digit_source is None:
            return super().provenance()
        data_dir = str(Path(self.hparams.data_dir).expanduser().resolve())
        return {"digit_source": self.digit_source, "data_dir": data_dir, **super().provenance()}

    def prepare_data(self) -> None:
        # rank 0 downloads MNIST once when online; setup() on every rank then reads it (or the embedded set)
        if self.hparams.digits in ("auto", "mnist"):
            from .digits import download_mnist

            download_mnist(self.hparams.data_dir)
        elif self.hparams.digits == "fashion":
            from .fashion import download

            download(self.hparams.data_dir)

    def setup(self, stage: str | None = None) -> None:
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
                      clutter_size=hp.clutter_size, snr=hp.snr, data_seed=hp.data_seed, channels=self.dims[0])
        self.train_set = CanvasDigits(digits.train_images[train_idx], digits.train_labels[train_idx],
                                      hp.train_size, "train", **common)
        self.val_set = CanvasDigits(digits.train_images[val_idx], digits.train_labels[val_idx],
                                    hp.val_size, "val", **common)
        # a fixed order of the test digits, so a --test_size below the digit count is not the first classes only
        # (the embedded digits are stored class by class); the full test split holds the same digits either way
        order = torch.from_numpy(np.random.default_rng(54321).permutation(len(digits.test_labels)))
        self.test_set = CanvasDigits(digits.test_images[order], digits.test_labels[order],
                                     hp.test_size or len(digits.test_labels), "test", **common)
