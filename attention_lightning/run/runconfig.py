"""``config.yaml``: every resolved flag of a run, in the preset format, so the run folder reruns itself.

``python cli.py fit --config=<run>/config.yaml --default_root_dir=<elsewhere>`` trains the same model on the same
data with the same seed and Trainer settings. The file is a flat preset (``configs/*.yaml``): the command and the
preset the run came from are header comments, then ``model``, ``data``, the CLI's own flags, and every argument of
the model, the datamodule and the Trainer settings that decide what is trained, each at the value the run used
(defaults included, ``--digits=auto`` resolved to the source it found, ``auto`` devices and precision resolved).

What a rerun must not inherit is left out: ``--resume`` (a rerun starts from scratch; a resumed run continues
exactly, so its metrics are those of one straight run) and ``--default_root_dir`` (the rerun goes under the root
given, else ``runs/``; ``run_name`` stays and only names the folder under that root, where a new ``version_<k>``
is claimed, so no rerun writes into an old run). Data facts (classes, channels, image size) are left to the data,
as in a preset, unless the run gave them as flags. A file the run reads (PHAM's ``--init_from``) is written as an
absolute path.
"""
from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import Callback

from ..facts import MODEL_FACTS
from ..signature import parameters
from .plan import CLI_FLAGS, TRAINER_MANAGED, Plan, signatures

CONFIG_FILE = "config.yaml"
# CLI flags a rerun must not take over (see the module docstring); model/data/seed are written first
NOT_RECORDED = ("config", "resume", "model", "data", "seed")
# Trainer settings that decide what is trained, written with their values even when the run left them default
TRAINER_RECORDED = ("accelerator", "devices", "num_nodes", "strategy", "precision", "max_epochs", "min_epochs",
                    "max_steps", "min_steps", "max_time", "limit_train_batches", "limit_val_batches",
                    "limit_test_batches", "val_check_interval", "check_val_every_n_epoch", "num_sanity_val_steps",
                    "log_every_n_steps", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
                    "deterministic", "benchmark")
ACCELERATORS = {"CPUAccelerator": "cpu", "CUDAAccelerator": "gpu", "MPSAccelerator": "mps", "XLAAccelerator": "tpu"}


def plain(value: Any) -> Any:
    """``value`` as YAML writes it back unchanged: tuples as lists, mappings as dicts; None for other objects."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return None


def flag_text(value: Any) -> str:
    """``value`` as typed after ``--name=`` on a command line."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, dict)):
        return yaml.safe_dump(plain(value), default_flow_style=True).strip()
    return str(value)


def command_line(flags: Mapping[str, Any], command: str = "fit") -> str:
    """The ``python cli.py`` command that gives ``flags``."""
    args = [f"--{k}={flag_text(v)}" for k, v in flags.items()]
    return " ".join(["python cli.py", command, *map(shlex.quote, args)])


def _resolved_trainer(p: Plan, trainer: pl.Trainer | None) -> dict[str, Any]:
    sig = parameters(pl.Trainer, skip=TRAINER_MANAGED)
    given = {k: v for k, v in p.trainer_kwargs.items() if k != "default_root_dir"}
    out = {k: given.get(k, sig[k].default) for k in TRAINER_RECORDED if k in sig}
    out.update(given)
    if trainer is not None:
        if given.get("accelerator", "auto") == "auto":
            out["accelerator"] = ACCELERATORS.get(type(trainer.accelerator).__name__, out.get("accelerator", "auto"))
        if given.get("devices", "auto") == "auto":
            out["devices"] = int(trainer.num_devices)
        if given.get("precision") is None:
            out["precision"] = str(trainer.precision)
    return out


def run_config(p: Plan, model: pl.LightningModule, dm: pl.LightningDataModule | None = None,
               trainer: pl.Trainer | None = None, run_name: str | None = None) -> dict[str, Any]:
    """Every resolved flag of the run ``p`` describes, flat, ambiguous names prefixed (``model.x``)."""
    sigs = signatures(type(model), type(dm) if dm is not None else registry_data(p.data_name))
    owners: dict[str, int] = {}
    for target in ("model", "data", "trainer"):
        for name in sigs[target]:
            owners[name] = owners.get(name, 0) + 1

    def key(target: str, name: str) -> str:
        return f"{target}.{name}" if owners.get(name, 0) > 1 or name in CLI_FLAGS else name

    out: dict[str, Any] = {"model": p.model_name, "data": p.data_name, "seed": p.cli["seed"]}
    cli = {k: v for k, v in p.cli.items() if k not in NOT_RECORDED}
    cli["run_name"] = run_name or cli.get("run_name") or f"{p.model_name}-{p.data_name}"
    out.update({k: plain(v) for k, v in cli.items()})
    hp = dict(getattr(model, "hparams", {}) or {})
    for name in sigs["model"]:
        if name in MODEL_FACTS and name not in p.model_kwargs:
            continue  # the data says it, as in a preset
        value = p.model_kwargs[name] if name in p.model_kwargs and name not in hp else hp.get(
            name, sigs["model"][name].default)
        if isinstance(value, str) and value and Path(value).is_file():
            value = str(Path(value).resolve())
        out[key("model", name)] = plain(value)
    data_hp = dict(getattr(dm, "hparams", {}) or {}) if dm is not None else {}
    for name, param in sigs["data"].items():
        value = data_hp.get(name, p.data_kwargs.get(name, param.default))
        if value is param.empty:
            continue
        out[key("data", name)] = plain(value)
    for name, value in _resolved_trainer(p, trainer).items():
        out[key("trainer", name)] = plain(value)
    return out


def registry_data(name: str) -> type:
    from .. import registry

    return registry.get_datamodule(name).cls


def render(values: Mapping[str, Any], command: str, preset: str | None) -> str:
    """The text of ``config.yaml``: a header of comments, then one ``name: value`` line per flag."""
    lines = ["# Every resolved flag of this run (written by `python cli.py fit`). Rerun it with",
             "#   python cli.py fit --config=<this file> --default_root_dir=<elsewhere>",
             f"# command: {command}",
             f"# preset: {preset or 'none'}"]
    body = yaml.safe_dump(dict(values), sort_keys=False, default_flow_style=None, width=1000)
    return "\n".join(lines) + "\n" + body


def read_header(path: Path) -> dict[str, str]:
    """The ``# command:`` and ``# preset:`` lines of a ``config.yaml``."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        name, sep, value = line[1:].strip().partition(": ")
        if sep and name in ("command", "preset"):
            out[name] = value.strip()
    return out


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class RunConfig(Callback):
    """Writes ``<run dir>/config.yaml`` on rank zero when training starts: after the datamodule and the model
    are set up and every check that can refuse the run has passed, where the logger writes ``hparams.yaml``.
    A resumed run rewrites it with the flags it continues with."""

    def __init__(self, p: Plan, flags: Mapping[str, Any], run_dir: Path) -> None:
        self.p, self.run_dir = p, Path(run_dir)
        self.command = command_line(flags)
        self.preset = str(flags["config"]) if flags.get("config") else None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        values = run_config(self.p, pl_module, trainer.datamodule, trainer, self.run_dir.parent.name)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.run_dir / CONFIG_FILE, render(values, self.command, self.preset))
