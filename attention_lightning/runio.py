"""Moved: its parts are in ``attention_lightning.run`` (``checkpoints``, ``loader``, ``signals``, ``folders``,
``loggers``); the old names fail with one line naming their new module."""
from ._moved import refuse

__getattr__ = refuse(__name__, {
    "AppendingCSVLogger": "attention_lightning.run.loggers",
    "AtomicCheckpointIO": "attention_lightning.run.checkpoints",
    "checkpoint_step": "attention_lightning.run.checkpoints",
    "claim_run_dir": "attention_lightning.run.folders",
    "DISK_ERRORS": "attention_lightning.run.folders",
    "EpochSampler": "attention_lightning.run.loader",
    "find_claimed": "attention_lightning.run.folders",
    "LastCheckpoint": "attention_lightning.run.checkpoints",
    "newest_state": "attention_lightning.run.checkpoints",
    "NEXT_LOG_STEP": "attention_lightning.run.checkpoints",
    "remove_tmp": "attention_lightning.run.folders",
    "requeue_slurm_job": "attention_lightning.run.signals",
    "ResumableLoader": "attention_lightning.run.loader",
    "rng_state": "attention_lightning.run.loader",
    "RunStart": "attention_lightning.run.folders",
    "set_rng_state": "attention_lightning.run.loader",
    "state_files": "attention_lightning.run.checkpoints",
    "STOP_SIGNALS": "attention_lightning.run.signals",
    "StopSignals": "attention_lightning.run.signals",
    "StopTraining": "attention_lightning.run.signals",
    "TrainStream": "attention_lightning.run.loader",
    "trim_metrics": "attention_lightning.run.loggers",
    "world": "attention_lightning.run.loader",
})
