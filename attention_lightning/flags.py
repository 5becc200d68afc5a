"""Moved: the signature reader is ``attention_lightning.signature``, the flag routing
``attention_lightning.run.flags``; the old names keep importing from here."""
from ._moved import forward

__getattr__ = forward(__name__, {
    "coerce": "attention_lightning.signature",
    "conforms": "attention_lightning.signature",
    "describe": "attention_lightning.signature",
    "FlagError": "attention_lightning.run.flags",
    "parameters": "attention_lightning.signature",
    "route": "attention_lightning.run.flags",
    "TARGETS": "attention_lightning.run.flags",
})
