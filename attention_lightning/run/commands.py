"""The commands behind ``cli.py fit``, ``cli.py test`` and ``cli.py visualize``, from flat flags.

Flags become a ``Plan`` in ``plan``; run folders, checkpoints, resume and the Trainer are in ``folders``,
``checkpoints``, ``resume`` and ``trainer``. The names callers use from here (``plan``, ``build_datamodule``,
``build_model``, ``make_trainer``, ``UserError``, ...) are re-exported.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shlex
import signal
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.callbacks import Callback

from .. import registry
from .plan import (CLI_FLAGS, COMMAND_FLAGS, DEFAULTS, LOGGERS, Plan, UserError, build_datamodule, build_model,
                   help_text, load_config, merge_flags, own_value, plan, signatures, user_errors)
from .checkpoints import CKPT_KEY, LastCheckpoint, checkpoint_meta, load_model
from .folders import DISK_ERRORS, RunStart, claim_run_folder, remove_failed_start, run_faults, run_lock
from .loader import TrainStream
from .resume import Resume, check_resume_weights, check_resume_world, resolve_resume, resume_command
from .runconfig import RunConfig
from .signals import StopSignals, StopTraining
from .trainer import make_trainer

__all__ = ["CLI_FLAGS", "COMMAND_FLAGS", "DEFAULTS", "LOGGERS", "Interrupted", "Plan", "UserError", "build_datamodule",
           "build_model", "fit", "fit_stages", "help_text", "load_config", "make_trainer", "merge_flags", "plan",
           "quiet_third_party", "signatures", "test", "user_errors", "visualize"]


class _DropThirdPartyTips(logging.Filter):
    """Drops Lightning's advertisement for another product from the run's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith("\U0001f4a1 Tip: For seamless cloud logging")


def quiet_third_party() -> None:
    """Filter the exact third-party lines that say nothing about the run: a product tip, a deprecation inside
    pytorch_lightning's own code, and its note that our model's ``transfer_batch_to_device`` is the one used (it is
    meant to be: ``AttentionModel`` skips the batch walk on CPU runs)."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device` in `LightningModule` but")
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropThirdPartyTips) for f in log.filters):
            log.addFilter(_DropThirdPartyTips())


def cheap_cuda_probe() -> None:
    """Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (ask NVML, not the CUDA driver, whether a GPU
    exists); without an NVIDIA driver that makes every ``torch.cuda.is_available()`` try to load NVML again, which
    torch's optimizers do once per step (~0.1 ms, 1-3% of RAM's step at batch 20). Where NVML does not load there is
    no GPU for the setting to protect, so it is dropped; with a driver it stays."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


class Interrupted(UserError):
    """Training stopped on request (Ctrl-C, SLURM pre-emption) after saving; the message says how to continue."""


def fit_stages(flags: Mapping[str, Any], p: Plan, stages: list[Any],
               extra_callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Run a model's training stages in sequence (e.g. PHAM's ``--phase=all``).

    ``stages`` is the model class's ``stages(model_kwargs)``: ``(label, model flag updates)`` pairs. Each
    stage is one ``fit`` in its own run dir ``<run_name>-<label>``, started (``--init_from``) from the
    previous stage's best checkpoint, or its last one when there is no best (e.g. ``fast_dev_run``). Only the
    last stage is tested: the earlier ones are steps toward it, and PHAM's test after phase 2 (the EIG lookahead
    with the paper's 20 z samples) cost as much as phase 3's, so evaluation outweighed training on the CPU
    presets. ``python cli.py test --ckpt=...`` tests any stage's checkpoint.
    """
    name = p.resolved["run_name"] or f"{p.model_name}-{p.data_name}"
    done: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    init = None
    for i, (label, update) in enumerate(stages):
        stage_flags = {**flags, **{f"model.{k}": v for k, v in update.items()}, "run_name": f"{name}-{label}"}
        if init:
            stage_flags["model.init_from"] = init
        summary = fit(stage_flags, extra_callbacks, save_last=True, run_test=i == len(stages) - 1)
        done[label] = summary
        if summary.get("interrupted"):
            break
        init = summary.get("best_checkpoint") or summary["last_checkpoint"]
    return {**summary, "stages": done}


def fit(flags: Mapping[str, Any], extra_callbacks: list[Callback] | None = None,
        save_last: bool = False, run_test: bool = True) -> dict[str, Any]:
    """Train, then test the best checkpoint (unless ``run_test`` is false); returns a summary dict (printed by
    the CLI).

    A model class whose ``stages(model_kwargs)`` returns stages is trained by ``fit_stages``;
    ``save_last`` writes ``last.ckpt`` even when the Trainer wrote none (``fast_dev_run``).
    """
    quiet_third_party()
    cheap_cuda_probe()
    p = plan(flags)
    stage_list = registry.get_model(p.model_name).cls.stages(dict(p.model_kwargs))
    if len(stage_list) > 1:
        return fit_stages(flags, p, stage_list, extra_callbacks)
    pl.seed_everything(p.resolved["seed"], workers=True, verbose=False)
    root = p.trainer_kwargs.pop("default_root_dir", DEFAULTS["default_root_dir"])
    name = p.resolved["run_name"] or f"{p.model_name}-{p.data_name}"
    rank_zero = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("RANK", "0")) == 0
    signals = StopSignals()
    if SLURMEnvironment.detect():  # a pre-emption during start-up is kept for the first batch boundary
        signals.install([signal.SIGUSR1])
    try:
        return _fit(flags, p, root, name, rank_zero, signals, extra_callbacks, save_last, run_test)
    finally:
        signals.restore()


def _fit(flags: Mapping[str, Any], p: Plan, root: str, name: str, rank_zero: bool, signals: StopSignals,
         extra_callbacks: list[Callback] | None, save_last: bool, run_test: bool) -> dict[str, Any]:
    """``fit`` once the plan is made: every check that can refuse the run comes before its folder is touched; a
    new run that fails before training leaves no folder."""
    resume = resolve_resume(p, root, name)  # reads only
    dm = build_datamodule(p)
    model = build_model(p, dm)
    if resume is not None:
        check_resume_weights(resume, p, model)
    if p.resolved["compile"]:
        model.compile_step()
    stream = TrainStream(dm, p.resolved["seed"])
    fresh = resume is None or resume.run_dir is None
    run_dir = claim_run_folder(root, name) if fresh else resume.run_dir
    start = RunStart(run_dir, None if resume is None else resume.first_row)
    with run_lock(run_dir, take=rank_zero):  # a second process training in this folder stops here
        return _train(flags, p, dm, model, stream, run_dir, fresh, rank_zero, start, resume, signals,
                      extra_callbacks, save_last, run_test)


def _train(flags: Mapping[str, Any], p: Plan, dm: pl.LightningDataModule, model: pl.LightningModule,
           stream: TrainStream, run_dir: Path, fresh: bool, rank_zero: bool, start: RunStart, resume: Resume | None,
           signals: StopSignals, extra_callbacks: list[Callback] | None, save_last: bool,
           run_test: bool) -> dict[str, Any]:
    """Train in the claimed (or resumed) ``run_dir``, then test; see ``fit``."""
    try:
        trainer = make_trainer(p, run_dir, [start, stream, RunConfig(p, flags, run_dir), *(extra_callbacks or [])],
                               signals)
        if resume is not None:
            check_resume_world(resume, p, trainer)
        last_cb = next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint))
        with user_errors(), run_faults(run_dir), warnings.catch_warnings():
            # TrainStream keeps the train loader's position itself, in its callback state
            warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
            try:
                trainer.fit(model, datamodule=dm, ckpt_path=str(resume.ckpt) if resume else None, weights_only=True)
            except StopTraining:
                pass  # last_cb.stop_reason says why
            except SystemExit:  # Lightning's answer to a KeyboardInterrupt (a second Ctrl-C): stop at once
                if not trainer.interrupted:
                    raise
                if not start.started:
                    raise KeyboardInterrupt from None  # before training: as a Ctrl-C during start-up
                last_cb.stop_reason = "a second Ctrl-C (stopped at once)"
    except BaseException:
        if fresh and rank_zero and not start.started:
            remove_failed_start(run_dir)  # a run that could not start leaves no folder
        raise
    summary: dict[str, Any] = {"run_dir": str(run_dir), "digits": getattr(dm, "digit_source", None)}
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    summary["best_checkpoint"] = best or None
    summary["last_checkpoint"] = str(run_dir / "checkpoints" / "last.ckpt")
    if last_cb.stop_reason is None and signals.signal is not None:  # asked after the last batch (last validation)
        last_cb.stop(trainer)
    if last_cb.stop_reason:
        step, epoch = trainer.global_step, trainer.current_epoch
        last = Path(summary["last_checkpoint"])
        if not last.is_file():
            saved = "nothing saved"
        elif last_cb.stop_reason.startswith("a second Ctrl-C"):  # stopped at once: the last save came before
            saved = f"the newest saved state is {last}"
        else:
            saved = f"saved {last}"
        how = continue_how(last_cb.requeued, f"continue with: {resume_command(flags, summary['last_checkpoint'])}")
        raise Interrupted(f"stopped by {last_cb.stop_reason} in epoch {epoch} at step {step}: {saved}; {how}")
    if save_last and not Path(summary["last_checkpoint"]).is_file():
        with run_faults(run_dir):
            trainer.save_checkpoint(summary["last_checkpoint"])  # the next stage starts from it
    if run_test and not trainer.fast_dev_run and trainer.limit_test_batches != 0:
        with user_errors(), run_faults(run_dir):  # the best path itself: "best" makes Lightning warn that
            try:                                  # LastCheckpoint is a second one
                results = trainer.test(model, datamodule=dm, ckpt_path=best or None, verbose=False, weights_only=True)
            except SystemExit:  # Lightning's answer to Ctrl-C
                if not trainer.interrupted:
                    raise
                ckpt = best or summary["last_checkpoint"]
                raise Interrupted(f"stopped by Ctrl-C during test: training finished and saved {ckpt}; test it "
                                  f"with: python cli.py test --ckpt={shlex.quote(ckpt)}") from None
            except StopTraining:  # SLURM pre-emption during the test (LastCheckpoint.on_test_batch_start)
                ckpt = best or summary["last_checkpoint"]
                how = continue_how(last_cb.requeued, f"test it with: python cli.py test --ckpt={shlex.quote(ckpt)}")
                raise Interrupted(f"stopped by {last_cb.stop_reason} during test: training finished and saved "
                                  f"{ckpt}; {how}") from None
        summary["test"] = results[0] if results else {}
    summary["global_step"] = trainer.global_step
    return summary


def continue_how(requeued: str | None, otherwise: str) -> str:
    """How a stopped run goes on: by itself when SLURM requeued it, else by ``otherwise`` (after why it was not)."""
    if requeued and requeued.startswith("requeued"):
        return f"{requeued} (it continues with --resume=last)"
    return f"{requeued}; {otherwise}" if requeued else otherwise


def checkpoint_plan(command: str, flags: dict[str, Any]) -> tuple[Path, Plan]:
    """``--ckpt`` (popped from ``flags``) and the plan to rebuild its run for ``test``/``visualize``: the
    checkpoint's model, data and data flags, overridden by the flags given. With ``--pretrained``, the export
    folder and the plan for the data it records (``pretrained.pretrained_plan``)."""
    if flags.get("pretrained") is not None:  # an export folder or Hub repo id (see pretrained.py)
        if flags.get("ckpt"):
            raise UserError(f"{command} takes --ckpt=PATH or --pretrained=DIR, not both")
        from .pretrained import pretrained_plan
        folder, p = pretrained_plan(command, flags)
        pl.seed_everything(p.resolved["seed"], workers=True, verbose=False)
        return folder, p
    ckpt = flags.pop("ckpt", None)
    if not ckpt:
        raise UserError(f"{command} needs --ckpt=PATH (e.g. runs/dham-cluttered_mnist/version_0/checkpoints/last.ckpt) "
                        f"or --pretrained=DIR (an export)")
    path = Path(str(ckpt))
    if not path.is_file():
        raise UserError(f"--ckpt={ckpt}: no such file")
    meta = checkpoint_meta(path)[CKPT_KEY]
    if flags.get("model") and flags["model"] != meta["model"]:
        raise UserError(f"--ckpt={ckpt} was written by model {meta['model']!r}, not {flags['model']!r}; "
                        f"drop --model or pass --model={meta['model']}")
    p = plan({"model": meta["model"], "data": meta["data"], **meta["data_kwargs"], "logger": "none", **flags},
             command=command)
    pl.seed_everything(p.resolved["seed"], workers=True, verbose=False)
    return path, p


def load_trained(p: Plan, source: Path) -> pl.LightningModule:
    """The model of a checkpoint file, or of an export folder (``--pretrained``), with ``p``'s model flags."""
    if source.is_dir():
        from .pretrained import from_pretrained
        return from_pretrained(source, **p.model_kwargs)
    return load_model(p, source)


def test(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate ``--ckpt`` on its datamodule's test split (datamodule and model flags may be overridden)."""
    quiet_third_party()
    ckpt, p = checkpoint_plan("test", dict(flags))
    dm = build_datamodule(p)
    model = load_trained(p, ckpt)
    kwargs = {k: v for k, v in p.trainer_kwargs.items() if k not in ("max_epochs", "default_root_dir")}
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, **kwargs)
    with user_errors():
        try:
            results = trainer.test(model, datamodule=dm, verbose=False, weights_only=True)
        except SystemExit:  # Lightning's answer to Ctrl-C
            if not trainer.interrupted:
                raise
            raise UserError("stopped by Ctrl-C during test: `test` wrote nothing") from None
    return {"test": results[0] if results else {}, "checkpoint": str(ckpt), "digits": getattr(dm, "digit_source", None)}


def visualize(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Draw ``--num_images`` images of the ``--split`` (val|test) of ``--ckpt``'s datamodule with its attention
    into ``--out``: a picture (.png, .jpg, .pdf, .svg) of every step, or a .gif with one frame per step."""
    from .. import viz
    from ..attention import draw_attention, first_items

    flags = dict(flags)
    given = {name: flags.pop(name) for name in ("out", "num_images", "split") if name in flags}
    ckpt, p = checkpoint_plan("visualize", flags)
    out = given.get("out")
    if not out:
        raise UserError("visualize needs --out=FILE.png (or FILE.gif for one frame per step)")
    split, num_images = own_value("visualize", "split", given), own_value("visualize", "num_images", given)
    try:
        viz.check_output(out)
    except ValueError as e:
        raise UserError(str(e)) from None
    folder = next((f for f in Path(str(out)).absolute().parents if f.exists()), Path("/"))
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UserError(f"--out={out}: cannot write into {folder} (read-only or permission denied); "
                        f"pass an --out in a writable folder")
    dm = build_datamodule(p)
    model = load_trained(p, ckpt)
    with user_errors():
        dm.setup("validate" if split == "val" else "test")
        batch = first_items(dm.val_dataloader() if split == "val" else dm.test_dataloader(), num_images)
    att = draw_attention(model, batch)
    path = Path(str(out))
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # the picture appears whole or not at all
    try:
        viz.save_attention(att, tmp, num_images, getattr(dm, "class_names", None))
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"--out={out}: cannot write it: {DISK_ERRORS.get(e.errno, e.strerror)}; pass an --out in a "
                        f"writable folder with free space") from None
    finally:
        tmp.unlink(missing_ok=True)
    acc = att.step_accuracy()
    return {"out": str(path), "images": int(att.images.shape[0]), "steps": att.steps, "model": p.model_name,
            "accuracy": None if acc is None else float(acc[-1]), "checkpoint": str(ckpt)}
