"""Moved: the progress lines are ``attention_lightning.run.progress``; the old names fail with one line naming their
new module."""
from ._moved import refuse

__getattr__ = refuse(__name__, {
    "EpochLines": "attention_lightning.run.progress",
    "SteadyBar": "attention_lightning.run.progress",
})
