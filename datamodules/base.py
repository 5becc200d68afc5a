"""What every datamodule shares: the loader options, declared once, and the facts a model is built from.

Subclasses take their own options and pass the rest on with ``**kwargs``; ``attention_lightning.signature``
follows ``**kwargs`` along the class's MRO, so every inherited option is still a typed flag with its default.
"""
from __future__ import annotations

import inspect
from typing import Any, Literal, get_args, get_origin
from collections.abc import Mapping

import pytorch_lightning as pl
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from attention_lightning.facts import DataFacts
from attention_lightning.signature import conforms, parameters


class ShardSampler(DistributedSampler):
    """This rank's share of an evaluation split, in order and without padding: rank r of R reads items
    r, r + R, r + 2R, ... so every item is counted once in the run (DistributedSampler repeats items to give
    every rank as many; a DistributedSampler subclass, so Lightning keeps it)."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset, shuffle=False, drop_last=False)
        self.indices = list(range(self.rank, len(dataset), self.num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class DatasetError(ValueError):
    """A missing or malformed dataset folder or a corrupt file; the message names the path and the fix."""


def argument_docs(cls: type) -> dict[str, str]:
    """One-line meaning of each constructor argument, from the ``Arguments:`` sections of the class docstrings
    along the MRO (a subclass's line wins, as its default does)."""
    out: dict[str, str] = {}
    for klass in cls.__mro__:
        lines = inspect.cleandoc(klass.__dict__.get("__doc__") or "").splitlines()
        if "Arguments:" not in lines:
            continue
        for line in lines[lines.index("Arguments:") + 1:]:
            if not line.startswith("    "):
                break
            name, sep, meaning = line.strip().partition(": ")
            if sep and name.isidentifier():
                out.setdefault(name, meaning)
    return out


def check_choices(cls: type, values: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for a value outside its ``Literal[...]`` annotation (flags are checked by the router
    already; this covers construction from Python)."""
    for name, p in parameters(cls).items():
        if get_origin(p.annotation) is Literal and name in values and not conforms(values[name], p.annotation):
            choices = ", ".join(str(c) for c in get_args(p.annotation))
            raise ValueError(f"--{name}={values[name]!r} is not one of {choices}")


class BaseDataModule(pl.LightningDataModule):
    """Loaders over ``train_set``/``val_set``/``test_set`` (built by ``setup``) and the source's facts.

    Arguments:
        batch_size: images (or questions) per batch.
        num_workers: dataloader worker processes; 0 loads in the training process.
        pin_memory: copy batches into page-locked memory (faster host-to-GPU transfer).
    """

    num_classes: int = 0
    dims: tuple[int, int, int] = (0, 0, 0)  # (C, H, W)
    class_names: list[str] | None = None

    def __init__(self, batch_size: int = 128, num_workers: int = 0, pin_memory: bool = False) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"--batch_size={batch_size} must be at least 1")
        if num_workers < 0:
            raise ValueError(f"--num_workers={num_workers} must be 0 or more")
        self.save_hyperparameters()  # collects the arguments of every __init__ in the subclass chain
        check_choices(type(self), self.hparams)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def provenance(self) -> dict[str, Any]:
        """Resolved facts for the run record: split sizes once ``setup`` has run (subclasses add theirs)."""
        sizes = {name: len(s) for name, s in (("train", self.train_set), ("val", self.val_set),
                                              ("test", self.test_set)) if s is not None}
        return {"split_sizes": sizes} if sizes else {}

    def facts(self) -> DataFacts:
        """What a model is built from and the run records; complete after ``setup``."""
        c, h, w = self.dims
        names = tuple(str(n) for n in self.class_names) if self.class_names is not None else None
        return DataFacts(num_classes=int(self.num_classes), in_channels=int(c), image_size=(int(h), int(w)),
                         class_names=names, provenance=self.provenance())

    def model_kwargs(self) -> dict:
        """The facts a model takes as constructor arguments (kept until every caller reads ``facts()``)."""
        return self.facts().model_facts()

    def _loader(self, dataset: Dataset | None, shuffle: bool, collate_fn=None) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a dataloader")
        # under DDP an evaluation split is sharded without padding, so each item is counted exactly once
        shard = not shuffle and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0, collate_fn=collate_fn,
            drop_last=False, sampler=ShardSampler(dataset) if shard else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
