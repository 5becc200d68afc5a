"""The run's logger (``--logger``): an appending CSV logger that keeps a resumed run's rows (``trim_metrics``
first drops the rows logged after the checkpoint) and never rewrites its ``hparams.yaml``; TensorBoard; wandb
(after a check for credentials, instead of its interactive prompt)."""
from __future__ import annotations

import csv
import hashlib
import netrc
import os
import re
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from .plan import UserError


def check_wandb_credentials() -> None:
    """Fail fast instead of wandb's interactive login prompt (which blocks a batch job until its time limit)."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    from urllib.parse import urlparse
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        if os.path.isfile(path) and netrc.netrc(path).authenticators(host):
            return
    except (netrc.NetrcParseError, OSError):
        pass
    raise UserError(f"--logger=wandb: no W&B credentials (no WANDB_API_KEY, no {host} entry in ~/.netrc); "
                    "run `wandb login`, or set WANDB_MODE=offline to log locally and `wandb sync` later")


def make_logger(kind: str, run_dir: Path, run_name: str, project: str = "attention-lightning"):
    root, version = str(run_dir.parent.parent), run_dir.name
    number = int(version.split("_")[1])  # the folder is version_<number>; the progress bar's v_num shows it
    if kind == "none":
        return False
    if kind == "csv":
        return AppendingCSVLogger(root, name=run_name, version=number)
    if kind == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger
        return TensorBoardLogger(root, name=run_name, version=number, default_hp_metric=False)
    from pytorch_lightning.loggers import WandbLogger
    run_dir.mkdir(parents=True, exist_ok=True)
    # the run id is tied to the run directory, so --resume continues the same wandb run
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]  # stable across processes
    run_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"{run_name}-{version}-{digest}")
    return WandbLogger(name=f"{run_name}/{version}", save_dir=str(run_dir), project=project, id=run_id, resume="allow")


def trim_metrics(path: Path, step: int) -> None:
    """Drop the rows of ``metrics.csv`` logged at ``step`` or later (they are logged again after a resume)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    keep = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
    if len(keep) == len(rows):
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(keep)
    os.replace(tmp, path)


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        self.resumed = os.path.isfile(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE))
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = list(header)

    def log_hparams(self, params: dict[str, Any]) -> None:
        if not self.resumed:  # a resumed run's record of what was trained stays as first written
            super().log_hparams(params)


class AppendingCSVLogger(CSVLogger):
    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
