"""Moved: ``config.yaml`` of a run is written by ``attention_lightning.run.runconfig``; the old names fail with one
line naming their new module."""
from ._moved import refuse

__getattr__ = refuse(__name__, {
    "ACCELERATORS": "attention_lightning.run.runconfig",
    "CLI_FLAGS": "attention_lightning.run.plan",
    "command_line": "attention_lightning.run.runconfig",
    "CONFIG_FILE": "attention_lightning.run.runconfig",
    "flag_text": "attention_lightning.run.runconfig",
    "MODEL_FACTS": "attention_lightning.facts",
    "NOT_RECORDED": "attention_lightning.run.runconfig",
    "parameters": "attention_lightning.signature",
    "plain": "attention_lightning.run.runconfig",
    "Plan": "attention_lightning.run.plan",
    "read_header": "attention_lightning.run.runconfig",
    "registry_data": "attention_lightning.run.runconfig",
    "render": "attention_lightning.run.runconfig",
    "run_config": "attention_lightning.run.runconfig",
    "RunConfig": "attention_lightning.run.runconfig",
    "signatures": "attention_lightning.run.plan",
    "TRAINER_MANAGED": "attention_lightning.run.plan",
    "TRAINER_RECORDED": "attention_lightning.run.runconfig",
    "write_text_atomic": "attention_lightning.run.runconfig",
})
