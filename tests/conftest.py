"""Shared test set-up: offline digits, small thread counts, deterministic seeds."""
import os

import pytest
import torch

os.environ.setdefault("ATTENTION_LIGHTNING_OFFLINE", "1")  # never try the network from tests
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
