"""Moved: loading an export is ``attention_lightning.run.pretrained`` (and ``attention_lightning.from_pretrained``);
the old names keep importing from here."""
from ._moved import forward

__getattr__ = forward(__name__, {
    "CONFIG": "attention_lightning.run.export",
    "config_digest": "attention_lightning.run.export",
    "FORMAT": "attention_lightning.run.export",
    "from_pretrained": "attention_lightning.run.pretrained",
    "locate": "attention_lightning.run.pretrained",
    "Plan": "attention_lightning.run.plan",
    "plan": "attention_lightning.run.plan",
    "pretrained_plan": "attention_lightning.run.pretrained",
    "PretrainedError": "attention_lightning.run.pretrained",
    "read_config": "attention_lightning.run.pretrained",
    "registry": "attention_lightning",
    "REPO_ID": "attention_lightning.run.pretrained",
    "sha256": "attention_lightning.run.export",
    "UserError": "attention_lightning.run.plan",
    "WEIGHTS": "attention_lightning.run.export",
})
