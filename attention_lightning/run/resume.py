"""``--resume``: which checkpoint it continues, and the checks that refuse it with one line before anything is
written (another model, other flags, other weights, another number of processes, a read-only folder)."""
from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from .checkpoints import (CKPT_KEY, NEXT_LOG_STEP, checkpoint_meta, checkpoint_step, flag_value, load_failure,
                          newest_state, state_files)
from .folders import run_dir_of
from .plan import Plan, UserError


# flags a resume may change: how long, where and on what it runs, and what it logs (not what it trains)
RESUME_MAY_CHANGE = {
    "max_epochs", "max_time", "max_steps", "min_epochs", "min_steps", "devices", "num_nodes", "accelerator",
    "strategy", "log_every_n_steps", "enable_progress_bar", "enable_model_summary", "profiler", "default_root_dir",
    "limit_test_batches", "num_sanity_val_steps", "num_workers", "pin_memory", "data_dir", "download",
}


def find_resume(root: str, name: str, resume: str) -> Path:
    """The checkpoint ``--resume`` points at: a path, or ``last``: the newest state (by global step) of the
    newest run, whether its ``last.ckpt`` or a pre-emption checkpoint (``*.tmp`` files never count). A newest run
    without a readable state stops with one line naming it and the newest valid state: never another run silently."""
    if resume != "last":
        path = Path(resume)
        if not path.is_file():
            raise UserError(f"--resume={resume}: no such checkpoint file; give a .ckpt path or --resume=last")
        return path
    runs = sorted(((int(m.group(1)), d) for d in (Path(root) / name).glob("version_*")
                   if (m := re.fullmatch(r"version_(\d+)", d.name)) and d.is_dir()), reverse=True)
    if not runs:
        raise UserError(
            f"--resume=last: nothing to resume, no {Path(root) / name}/version_*/checkpoints/last.ckpt; "
            f"start the run without --resume (or pass --default_root_dir/--run_name of the run to continue)")
    newest = newest_state(runs[0][1])
    broken = [f for f in state_files(runs[0][1]) if checkpoint_step(f) < 0]
    if newest is not None and not (broken and broken[0].stat().st_mtime > newest.stat().st_mtime):
        return newest
    older = newest or next((state for _, run in runs[1:] if (state := newest_state(run)) is not None), None)
    what = (f"{broken[0]} is not a readable checkpoint (truncated or corrupt)" if broken
            else f"{runs[0][1]} holds no saved state (it stopped before its first checkpoint)")
    fix = (f"to continue the newest valid state pass --resume={older}" if older
           else "start the run without --resume")
    raise UserError(f"--resume=last: the newest run's {what}; {fix}")


def check_resume_flags(meta: dict[str, Any], p: Plan, ckpt_path: Path) -> None:
    """Refuse a resume whose model/data/trainer flags differ from the checkpoint's (but for RESUME_MAY_CHANGE)."""
    old = meta.get("flags")
    if not old:
        return  # a checkpoint from before flags were recorded
    sigs = p.signatures  # what the plan routed the flags by
    new = {"model": p.model_kwargs, "data": p.data_kwargs, "trainer": p.trainer_kwargs}

    def norm(v: Any) -> Any:
        return json.dumps(v, sort_keys=True, default=str) if isinstance(v, (list, tuple, dict)) else v

    diffs = []
    for target in ("model", "data", "trainer"):
        for k in sorted(set(old[target]) | set(new[target])):
            if k in RESUME_MAY_CHANGE or k not in sigs[target]:
                continue
            default = sigs[target][k].default
            before, after = old[target].get(k, default), new[target].get(k, default)
            if norm(before) != norm(after):
                diffs.append(f"--{k} was {before!r}, now {after!r}")
    if old.get("seed") is not None and old["seed"] != p.resolved["seed"]:
        diffs.append(f"--seed was {old['seed']!r}, now {p.resolved['seed']!r}")
    if diffs:
        raise UserError(f"--resume: {ckpt_path} was trained with other flags ({'; '.join(diffs)}); resume with the "
                        f"checkpoint's flags, or start a new run without --resume (e.g. with a new --run_name)")


@dataclass
class Resume:
    """The checkpoint ``--resume`` continues, checked against the plan; nothing is written when it is made."""
    ckpt: Path
    content: dict[str, Any]  # the checkpoint, loaded with weights_only
    run_dir: Path | None  # its run folder (None: a checkpoint outside one, continued in a new folder)
    first_row: int  # metrics.csv rows from this step on were logged after the checkpoint

    @property
    def meta(self) -> dict[str, Any]:
        return self.content[CKPT_KEY]


def resolve_resume(p: Plan, root: str, name: str) -> Resume | None:
    """The checkpoint of ``--resume`` (None without it), refused with one line when this command may not continue
    it: another model, other model/data/trainer flags, or a run folder it cannot write to. Reads only."""
    if p.resolved["resume"] is None:
        return None
    path = find_resume(root, name, str(p.resolved["resume"]))
    content = checkpoint_meta(path)
    meta = content[CKPT_KEY]
    if meta["model"] != p.model_name:
        raise UserError(f"--resume: {path} was written by model {meta['model']!r}, not {p.model_name!r}; "
                        f"pass --model={meta['model']}")
    check_resume_flags(meta, p, path)
    run_dir = run_dir_of(path)
    for folder in ([run_dir, run_dir / "checkpoints"] if run_dir is not None else []):
        if folder.is_dir() and not os.access(folder, os.W_OK):
            raise UserError(f"--resume: cannot write to the run folder {folder} (read-only or permission denied); "
                            f"make it writable, or copy the run to a writable folder and pass --resume=PATH there")
    logged = content.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    first = content.get(NEXT_LOG_STEP, logged.get("_batches_that_stepped", content.get("global_step", 0)))
    return Resume(path, content, run_dir, int(first))


def check_resume_weights(resume: Resume, p: Plan, model: pl.LightningModule) -> None:
    """The checkpoint's weights fit ``model`` (checked before anything is written, not when Lightning restores)."""
    state = resume.content.get("state_dict")
    if not isinstance(state, dict):
        raise UserError(f"--resume: {resume.ckpt} holds no model weights (no 'state_dict'); pass another checkpoint")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError("--resume: " + load_failure(type(model), resume.ckpt, p.model_kwargs, e)) from None


def check_resume_world(resume: Resume, p: Plan, trainer: pl.Trainer) -> None:
    """A resume runs on as many processes as the checkpoint was trained on: each process's share of an epoch, the
    batches per epoch and the position inside the epoch depend on it, so another number would skip or repeat
    batches. ``--accelerator`` and, at the same number of processes, ``--strategy`` may change."""
    old = resume.meta.get("world_size")
    flags = (resume.meta.get("flags") or {}).get("trainer")
    if old is None and flags is not None:  # saved before the world size was recorded: the flags that set it
        sig = p.signatures["trainer"]
        names = ("devices", "num_nodes", "strategy")
        if all(flags.get(n, sig[n].default) == p.trainer_kwargs.get(n, sig[n].default) for n in names):
            return
        before = ", ".join(f"--{n}={flag_value(flags.get(n, sig[n].default))}" for n in names)
    elif old is None or old == trainer.world_size:
        return
    else:
        before = f"{old} process(es)"
    raise UserError(f"--resume: {resume.ckpt} was trained with {before}, this run would use {trainer.world_size} "
                    f"process(es) (--devices x --num_nodes); another number would skip or repeat batches: resume "
                    f"with the checkpoint's --devices/--num_nodes/--strategy, or start a new run without --resume")


def resume_command(flags: Mapping[str, Any], ckpt: str) -> str:
    """The command line that continues this run from ``ckpt``."""
    args = [f"--{k}={flag_value(v)}" for k, v in flags.items() if k != "resume"]
    return " ".join(["python cli.py fit", *map(shlex.quote, args), shlex.quote(f"--resume={ckpt}")])
