"""What a data source tells the rest of a run: one typed object, built by the datamodule after ``setup``-free
construction and passed explicitly by the experiment to the model and to the run record."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# facts a model may take as constructor arguments (by these exact names)
MODEL_FACTS = ("num_classes", "in_channels", "image_size", "vocab_size")


@dataclass(frozen=True)
class DataFacts:
    """Facts of a data source.

    Arguments:
        num_classes: number of classes (answers, for VQA sources).
        in_channels: image channels.
        image_size: (H, W) of the images, in pixels.
        vocab_size: question vocabulary size, for sources with questions; None otherwise.
        class_names: a name per class, for pictures and tables; None when classes are only numbers.
        provenance: resolved facts for the run record (e.g. digit source, dataset path, split sizes).
    """

    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    vocab_size: int | None = None
    class_names: tuple[str, ...] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def model_facts(self) -> dict[str, Any]:
        """The facts a model may take as constructor arguments (those that are not None)."""
        return {k: getattr(self, k) for k in MODEL_FACTS if getattr(self, k) is not None}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
