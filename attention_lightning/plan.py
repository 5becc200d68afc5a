"""Moved: flags to a ``Plan`` is ``attention_lightning.run.plan``; the old names keep importing from here."""
from ._moved import forward

__getattr__ = forward(__name__, {
    "build_datamodule": "attention_lightning.run.plan",
    "build_model": "attention_lightning.run.plan",
    "check_run_name": "attention_lightning.run.plan",
    "CLI_FLAGS": "attention_lightning.run.plan",
    "coerce": "attention_lightning.signature",
    "COMMAND_FLAGS": "attention_lightning.run.plan",
    "ConfigError": "attention_lightning.models.base",
    "DEFAULTS": "attention_lightning.run.plan",
    "FlagError": "attention_lightning.run.flags",
    "help_text": "attention_lightning.run.plan",
    "HINTS": "attention_lightning.run.plan",
    "load_config": "attention_lightning.run.plan",
    "LOGGERS": "attention_lightning.run.plan",
    "merge_flags": "attention_lightning.run.plan",
    "NonFiniteLossError": "attention_lightning.models.base",
    "parameters": "attention_lightning.signature",
    "Plan": "attention_lightning.run.plan",
    "plan": "attention_lightning.run.plan",
    "registry": "attention_lightning",
    "route": "attention_lightning.run.flags",
    "signatures": "attention_lightning.run.plan",
    "TRAINER_MANAGED": "attention_lightning.run.plan",
    "user_errors": "attention_lightning.run.plan",
    "UserError": "attention_lightning.run.plan",
})
