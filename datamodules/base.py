"""What every datamodule shares: loader flags and the facts a model is built from.

Models read ``num_classes``, ``dims`` (C, H, W) and, where they take them, ``class_names`` from the
datamodule, so ``--data=...`` alone sets up a model for its source.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset


class DatasetError(ValueError):
    """A missing or malformed dataset folder or a corrupt file; the message names the path and the fix."""


class BaseDataModule(pl.LightningDataModule):
    num_classes: int = 0
    dims: Tuple[int, int, int] = (0, 0, 0)
    class_names: Optional[List[str]] = None

    def __init__(self, batch_size: int, num_workers: int, pin_memory: bool) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"--batch_size={batch_size} must be at least 1")
        if num_workers < 0:
            raise ValueError(f"--num_workers={num_workers} must be 0 or more")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None
        self.test_set: Optional[Dataset] = None

    def model_kwargs(self) -> dict:
        """Constructor arguments a model takes from this source (only those the model accepts are used)."""
        c, h, w = self.dims
        return {"num_classes": self.num_classes, "in_channels": c, "image_size": (h, w)}

    def _loader(self, dataset: Optional[Dataset], shuffle: bool, collate_fn=None) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a dataloader")
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0, collate_fn=collate_fn,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
