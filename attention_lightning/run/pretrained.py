"""Load an exported model (``run/export.py``) from a folder or a Hugging Face Hub repository, without its run.

    model = attention_lightning.from_pretrained("exports/dham-mnist")        # a folder
    model = attention_lightning.from_pretrained("someone/dham-mnist")        # a Hub repo id (fetched once, cached)

Every file is checked against the sha256 that ``config.json`` records (and ``config.json`` against its own) before
anything is read; the weights are read with safetensors, so nothing in the folder is unpickled. The model is
built by its registry name from the recorded constructor arguments and returned in eval mode, with the data's
facts as ``model.data_config``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from .. import registry
from .export import CONFIG, FORMAT, WEIGHTS, config_digest, sha256
from .plan import Plan, UserError, plan

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PretrainedError(UserError):
    """An export that cannot be found, fetched or trusted; the message names the file and the fix in one line."""


def locate(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """The local folder of an export: ``path_or_repo_id`` itself, or a Hub repository's snapshot."""
    path = Path(str(path_or_repo_id))
    if path.is_dir():
        return path
    if path.exists():
        raise PretrainedError(f"{path} is a file; give the export's folder (it holds {CONFIG} and {WEIGHTS})")
    if not REPO_ID.fullmatch(str(path_or_repo_id)):
        raise PretrainedError(f"{path_or_repo_id}: no such folder, and not a Hub repo id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(path_or_repo_id), revision=revision))
    except Exception as e:  # offline, unknown repo, no access: each library error type means "not fetched"
        text = " ".join(str(e).split())
        reason = text.split(". ")[0][:240] if text else type(e).__name__
        raise PretrainedError(f"cannot fetch {path_or_repo_id} from the Hugging Face Hub ({type(e).__name__}: "
                              f"{reason}); check the repo id and the network, or pass a local export folder") from None


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of an export, after checking it and every file it lists against their sha256."""
    path = folder / CONFIG
    if not path.is_file():
        raise PretrainedError(f"{folder}: no {CONFIG}, so not an attention-lightning export; write one with "
                              f"`python cli.py export --ckpt=... --out={folder}`")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise PretrainedError(f"{path} is not valid JSON ({e}); export the model again") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise PretrainedError(f"{path}: format {found!r} is not {FORMAT!r}; export the model again")
    if config.get("config_sha256") != config_digest(config):
        raise PretrainedError(f"{path} was changed after export (its sha256 differs from the one it records); "
                              "export the model again or fetch the folder again")
    files = config.get("files") or {}
    if WEIGHTS not in files:
        raise PretrainedError(f"{path} lists no {WEIGHTS}; export the model again")
    for name, digest in sorted(files.items()):
        if not (folder / name).is_file():
            raise PretrainedError(f"{folder / name} is missing; fetch or export the folder again")
        if sha256(folder / name) != digest:
            raise PretrainedError(f"{folder / name} was changed after export (its sha256 differs from {CONFIG}'s); "
                                  "fetch or export the folder again")
    return config


def from_pretrained(path_or_repo_id: str | Path, revision: str | None = None, **overrides: Any) -> pl.LightningModule:
    """The exported model in eval mode, on the CPU. ``overrides`` replace recorded constructor arguments (ones that
    change no weight's shape, e.g. ``mc_samples``); ``revision`` picks a Hub revision."""
    from safetensors.torch import load_model

    folder = locate(path_or_repo_id, revision)
    config = read_config(folder)
    try:
        cls = registry.get_model(str(config["model"])).cls
    except registry.RegistryError as e:
        raise PretrainedError(f"{folder / CONFIG}: {e}") from None
    args = {**config["args"], **overrides}
    try:
        model = cls(**args)
    except (TypeError, ValueError) as e:
        raise PretrainedError(f"cannot build model {config['model']!r} from {folder / CONFIG}: "
                              f"{str(e).splitlines()[0]}") from None
    try:
        load_model(model, str(folder / WEIGHTS), strict=True, device="cpu")
    except RuntimeError as e:
        raise PretrainedError(f"{folder / WEIGHTS} does not fit model {config['model']!r} built from {CONFIG}"
                              + (f" with {', '.join(f'--{k}' for k in overrides)}" if overrides else "")
                              + f": {' '.join(str(e).split())[:300]}") from None
    model.data_config = config["data"]
    return model.eval()


def pretrained_plan(command: str, flags: dict[str, Any]) -> tuple[Path, Plan]:
    """``--pretrained`` (popped from ``flags``) as a local folder, and the plan to rebuild its data for
    ``test``/``visualize``: the data the folder records, overridden by the flags given (the recorded data flags
    are left out when ``--data`` names other data)."""
    folder = locate(str(flags.pop("pretrained")))
    config = read_config(folder)
    if flags.get("model") and flags["model"] != config["model"]:
        raise UserError(f"--pretrained={folder} holds model {config['model']!r}, not {flags['model']!r}; drop --model")
    data = config["data"]
    same = flags.get("data", data["name"]) == data["name"]
    recorded: Mapping[str, Any] = {f"data.{k}": v for k, v in data["flags"].items()} if same else {}
    p = plan({"model": config["model"], "data": data["name"], **recorded, "logger": "none", **flags}, command=command)
    return folder, p
