"""The run machinery behind ``cli.py``, one subject a module.

- ``flags``: routing flat ``--flags`` to the model, the datamodule and the Trainer by their signatures
- ``plan``: flags (and a ``--config`` preset) to a ``Plan``: what a command builds, with which arguments
- ``help``: ``python cli.py <command> --help``
- ``commands``: ``fit``, ``test`` and ``visualize``; ``export`` and ``pretrained``: an export folder and loading it
- ``trainer``: the ``pl.Trainer`` of a run, with its callbacks and logger
- ``folders``: run folders (claimed, locked, cleaned); ``checkpoints``: checkpoint files; ``resume``: ``--resume``
- ``loader``: the resumable train loader and its state; ``signals``: Ctrl-C, SLURM pre-emption and requeue
- ``loggers``: the appending CSV logger (and TensorBoard, wandb); ``progress``: progress lines
- ``runconfig``: the run's ``config.yaml``, which reruns it
"""
