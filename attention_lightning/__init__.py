"""attention-lightning: PyTorch Lightning suite for hard visual attention research."""
from .attention import Attention
from .registry import datamodules, get_datamodule, get_model, models, register_datamodule, register_model

__all__ = ["Attention", "register_model", "register_datamodule", "get_model", "get_datamodule", "models", "datamodules"]
__version__ = "0.1.0"
