"""Stopping on request: Ctrl-C and SLURM's SIGUSR1 are recorded and acted on at the next batch boundary
(``LastCheckpoint`` saves, then raises ``StopTraining``); on SIGUSR1 the job is requeued with ``scontrol``."""
from __future__ import annotations

import os
import re
import signal
import subprocess
from typing import Any


STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGUSR1: "SLURM pre-emption (SIGUSR1)"}


class StopTraining(Exception):
    """Raised at a batch boundary after ``last.ckpt`` was saved on Ctrl-C or SIGUSR1: nothing more is trained."""


class StopSignals:
    """Records the first Ctrl-C / SIGUSR1 for ``LastCheckpoint``, which stops at the next batch boundary; a second
    Ctrl-C stops at once (``KeyboardInterrupt``). Installed for SIGUSR1 before the run starts (a pre-emption during
    start-up is kept for the first batch), for SIGINT once training starts; ``restore`` puts the old handlers back."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self, signals: list[int]) -> None:
        try:
            for s in signals:
                if s not in self._previous:
                    self._previous[s] = signal.signal(s, self._on_signal)
        except ValueError:  # not the main thread: leave signals alone
            pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        if self.signal is None or signum == signal.SIGUSR1:
            self.signal = signum

    def restore(self, signals: list[int] | None = None) -> None:
        for s in [s for s in self._previous if signals is None or s in signals]:
            signal.signal(s, self._previous.pop(s))


def requeue_slurm_job() -> str:
    """Ask SLURM to requeue this job (what Lightning's SLURM plugin does); returns what happened, in words."""
    job = os.environ.get("SLURM_JOB_ID", "")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    if not re.fullmatch(r"[0-9_]+", job):
        return f"not requeued: SLURM_JOB_ID={job!r} is not a job id"
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"not requeued: scontrol failed ({e})"
    return f"requeued SLURM job {job}" if result.returncode == 0 else \
        f"not requeued: scontrol requeue {job} exited {result.returncode}"
