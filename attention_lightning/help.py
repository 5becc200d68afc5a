"""Moved: ``--help`` is ``attention_lightning.run.help``; the old names fail with one line naming their new module."""
from ._moved import refuse

__getattr__ = refuse(__name__, {
    "argument_lines": "attention_lightning.run.help",
    "CLI_MEANINGS": "attention_lightning.run.help",
    "COMMAND_MEANINGS": "attention_lightning.run.help",
    "describe": "attention_lightning.signature",
    "render": "attention_lightning.run.help",
})
