"""attention-lightning: PyTorch Lightning suite for hard visual attention research."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ._moved import install
from .attention import Attention
from .registry import datamodules, get_datamodule, get_model, models, register_datamodule, register_model

__all__ = ["Attention", "register_model", "register_datamodule", "get_model", "get_datamodule", "models", "datamodules",
           "from_pretrained"]
__version__ = "0.1.0"
install()  # the old module paths (attention_lightning.experiment, ...): see _moved.py


def from_pretrained(path_or_repo_id: str | Path, revision: str | None = None, **overrides: Any) -> Any:
    """An exported model (``python cli.py export``) from a folder or a Hugging Face Hub repo id, in eval mode
    (see ``attention_lightning.run.pretrained``)."""
    from .run.pretrained import from_pretrained as load

    return load(path_or_repo_id, revision, **overrides)
