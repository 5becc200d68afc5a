"""Full precision for a block under autocast, at no cost when autocast is off."""
from __future__ import annotations

import contextlib

import torch


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A context that turns autocast off for ``device_type`` when it is on, and does nothing when it is off
    already (entering ``torch.autocast(enabled=False)`` costs a few microseconds, paid many times a RAM step)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
