"""The thin Lightning layer every paper's model shares, and the contract a model declares.

A model implements ``loss_terms`` (named losses and final logits for a batch) and ``attention``; it
overrides ``validation_step``/``test_step`` only to log extra curves (calling ``super()``). What the rest
of the code may rely on is declared here, with defaults:

- ``targets(batch)`` / ``inputs(batch)``: the labels (B,) and the model's input of a batch (``(images, labels)``
  by default; a model with another batch type overrides both).
- ``stages(model_kwargs)``: the runs one ``fit`` makes, as ``(label, model flag updates)`` pairs; one stage
  by default, several for models trained in phases (PHAM).
- ``ignores_facts``: facts of the data (``attention_lightning.facts.MODEL_FACTS``) the model does not take;
  ``build_model`` refuses any other fact the constructor lacks.
- ``legacy_defaults``: for arguments added later, the value that reproduces checkpoints written before them.
- Hyperparameters: every constructor argument is saved by ``AttentionModel.__init__`` and read as
  ``self.hparams.<name>``; attributes hold only values derived from them (a resolved grid, a parsed phase).
- Choices are ``Literal[...]`` annotations, checked here for direct construction and by the flag router
  for the CLI.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import typing
from collections import Counter
from typing import Any
from collections.abc import Iterator, Mapping

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor
from torch._dynamo.utils import counters as dynamo_counters
from torchmetrics.classification import MulticlassAccuracy

from ..attention import Attention
from ..signature import conforms, parameters
from .train_log import Key, TrainLog, TrainLogFlush


class ConfigError(ValueError):
    """A user-fixable problem a model finds after construction (e.g. in ``setup``); the CLI prints one line."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the step and the term."""


def choices(annotation: Any) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` annotation allows (also inside ``X | None``); () for other annotations."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return tuple(v for a in typing.get_args(annotation) for v in choices(a))


@contextlib.contextmanager
def as_flags(**flags: str) -> Iterator[None]:
    """Re-raise a ValueError of an ``nn/`` block with its argument names written as this model's flags.

    ``as_flags(size="glimpse_size")`` turns "use size <= 32" into "use --glimpse_size <= 32"; a name is
    rewritten where it is followed by ``=``, ``<=``, ``>=``, ``<`` or ``>``.
    """
    try:
        yield
    except ValueError as e:
        message = str(e)
        for arg, flag in flags.items():
            message = re.sub(rf"(?<![\w.-]){re.escape(arg)}(?=\s*[<>=])", f"--{flag}", message)
        raise ValueError(message) from None


class AttentionModel(pl.LightningModule):
    """Base of every registered model. Batches are ``(images, labels)`` unless ``targets`` is overridden."""

    registry_name: str = "?"
    ignores_facts: tuple[str, ...] = ()  # data facts the constructor does not take, on purpose
    # arguments added after checkpoints were written, with the value that behaves as the code did before them:
    # a checkpoint whose saved hyperparameters lack one predates it (a failed load names these values as the fix)
    legacy_defaults: dict[str, Any] = {}

    def __init__(self, num_classes: int, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.save_hyperparameters()  # every argument of the subclass's constructor, as self.hparams.<name>
        self.check_choices()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    # --- what a model implements -------------------------------------------------------------
    def loss_terms(self, batch: Any, stage: str) -> tuple[dict[str, Tensor], Tensor]:
        """Named scalar losses (summed into the total) and the final logits (B, K) for ``batch``."""
        raise NotImplementedError

    def attention(self, batch: Any) -> Attention:
        """What the model looked at for ``batch`` (eval behaviour; no gradients needed)."""
        raise NotImplementedError

    def targets(self, batch: Any) -> Tensor:
        """The ground-truth labels (B,) of ``batch``."""
        return batch[1]

    def inputs(self, batch: Any) -> Any:
        """What ``forward`` takes from ``batch``: the images (B, C, H, W) by default."""
        return batch[0]

    @classmethod
    def stages(cls, model_kwargs: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The runs one ``fit`` makes, as ``(label, model flag updates)`` pairs; a model trained in phases
        returns one per phase (each run starts from the previous one's checkpoint). One stage by default."""
        return [("fit", {})]

    # --- shared wiring -----------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # Every rank was seeded alike (pl.seed_everything); give each its own stream so stochastic parts
        # (sampled locations, random glimpses, z samples, on-the-fly train data) differ across ranks while a
        # rerun with the same --seed repeats exactly. Weights are already synced by the strategy.
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is not None and self.trainer.world_size > 1:
            torch.manual_seed(int(seed) + 7919 * self.global_rank)

    def _total(self, terms: dict[str, Tensor], stage: str, batch_size: int) -> Tensor:
        """The summed loss, checked finite; its terms and the total are logged (per step and epoch in training)."""
        total = sum(terms.values())
        if not torch.isfinite(total):
            bad = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items() if not torch.isfinite(v))
            raise NonFiniteLossError(
                f"non-finite {stage} loss at global step {self.global_step} (epoch {self.current_epoch}): {bad}. "
                f"Nothing was saved for this step; lower --lr, or use --precision=32 if running in half precision."
            )
        train = stage == "train"
        self.log_dict({f"{stage}/{name}": value.detach() for name, value in terms.items()}, on_step=train,
                      on_epoch=True, sync_dist=not train, batch_size=batch_size)
        self.log(f"{stage}/loss", total.detach(), prog_bar=stage != "test", on_step=train, on_epoch=True,
                 sync_dist=not train, batch_size=batch_size)
        return total

    def _step(self, batch: Any, stage: str) -> dict[str, Tensor]:
        terms, logits = self.loss_terms(batch, stage)
        targets = self.targets(batch)
        loss = self._total(terms, stage, batch_size=len(targets))
        preds = logits.detach().argmax(-1)  # (B,)
        if stage == "train":  # the batch's accuracy; its epoch mean weighted by batch size is the micro accuracy
            self.log("train/acc", (preds == targets).float().mean(), prog_bar=True, on_step=True, on_epoch=True,
                     batch_size=len(targets))
        else:
            metric = getattr(self, f"{stage}_acc")
            metric.update(logits.detach(), targets)
            self.log(f"{stage}/acc", metric, prog_bar=True, on_step=False, on_epoch=True)
        return {"loss": loss, "preds": preds, "targets": targets}

    # --- logging ---------------------------------------------------------------------------------
    @property
    def train_log(self) -> TrainLog:
        """The scalars of training steps, kept cheaply and sent to Lightning when its logger writes."""
        if "_train_log" not in self.__dict__:
            self.__dict__["_train_log"] = TrainLog()
        return self.__dict__["_train_log"]

    @torch._dynamo.disable
    def log(self, name: str, value: Any, prog_bar: bool = False, logger: bool | None = None,
            on_step: bool | None = None, on_epoch: bool | None = None, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.log``; in training steps a scalar tensor (mean-reduced, not synced) goes to
        ``train_log`` instead: same keys, epoch means and step values, for a fraction of the cost per call."""
        if (self._current_fx_name == "training_step" and not args and self._trainer is not None
                and isinstance(value, Tensor) and value.numel() == 1 and kwargs.get("reduce_fx", "mean") == "mean"
                and not kwargs.get("sync_dist") and not kwargs.get("enable_graph")
                and not kwargs.get("rank_zero_only")):
            key = Key(name, bool(prog_bar), logger, True if on_step is None else bool(on_step),
                      bool(on_epoch))
            if key.on_step or key.on_epoch:
                self.train_log.add(key, value, kwargs.get("batch_size"))
            return
        if (self._trainer is not None and self._trainer.world_size > 1 and isinstance(value, Tensor)
                and self._current_fx_name != "training_step" and "sync_dist" not in kwargs):
            # an epoch value of one rank is not the run's: reduce it over ranks (torchmetrics objects sync
            # themselves; a value computed from a synced metric is the same on every rank, so its mean is too)
            kwargs["sync_dist"] = True
        super().log(name, value, prog_bar, logger, on_step, on_epoch, *args, **kwargs)

    def configure_callbacks(self) -> list[pl.Callback]:
        """The TrainLog's flush, once per trainer: a second ``trainer.test`` after ``fit`` finds it attached already
        (returning it again makes Lightning print that it overrides the one it has)."""
        trainer = self._trainer
        if trainer is not None and any(isinstance(c, TrainLogFlush) for c in trainer.callbacks):
            return []
        return [TrainLogFlush()]

    def compile_step(self) -> None:
        """Compile the training computation (``loss_terms``: forward and losses) with ``torch.compile``.

        Only the bound method is wrapped, so parameters and checkpoints keep their names (no ``_orig_mod``)
        and a checkpoint loads into a model built without compiling. Logging and metrics stay eager. Where the
        compiled graph breaks, one line says so after the first training step (``graph_break_line``), in place
        of Dynamo's multi-line warning.
        """
        quiet_dynamo_break_warnings()
        self.__dict__["_graph_breaks_before"] = Counter(dynamo_counters["graph_break"])
        self.loss_terms = torch.compile(self.loss_terms)  # type: ignore[method-assign]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        before = self.__dict__.pop("_graph_breaks_before", None)  # set by compile_step; read once
        if before is not None:
            line = graph_break_line(type(self).__name__, before)
            if line and rank_zero_only.rank == 0:
                print(line, file=sys.stderr, flush=True)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """The batch on ``device``. A tuple or list of CPU tensors for a CPU run is returned as it is: Lightning's
        walk through it would hand back the same tensors, at a cost paid before every step."""
        if (device.type == "cpu" and isinstance(batch, (tuple, list))
                and all(isinstance(x, Tensor) and x.device.type == "cpu" for x in batch)):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, "test")

    def planned_steps(self) -> float:
        """Optimizer steps this fit will take (the Trainer's estimate), or inf outside a Trainer."""
        return self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def check_choices(self) -> None:
        """Every argument annotated ``Literal[...]`` holds one of its values (the router checks flags the same way)."""
        for name, param in parameters(type(self)).items():
            allowed = choices(param.annotation)
            if allowed and name in self.hparams and not conforms(self.hparams[name], param.annotation):
                raise ValueError(f"--{name}={self.hparams[name]!r} is not supported; use one of "
                                 f"{', '.join(map(str, allowed))}")

    @staticmethod
    def check_positive(**values: float) -> None:
        for name, v in values.items():
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"--{name}={v!r} must be a positive number")


def graph_break_line(name: str, before: Counter) -> str | None:
    """One line naming the graph breaks Dynamo counted since ``before`` (its ``graph_break`` counter), or None."""
    new = Counter(dynamo_counters["graph_break"]) - before
    if not new:
        return None
    n = sum(new.values())
    reasons = "; ".join(dict.fromkeys(reason.strip().splitlines()[0] for reason in new))
    return f"[compile] {name}.loss_terms: {n} graph break{'s' if n > 1 else ''}, those parts run eager: {reasons}"


class _DropBreakWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Graph break" not in record.getMessage()


def quiet_dynamo_break_warnings() -> None:
    """Drop Dynamo's multi-line graph-break warning (``Tensor.item()``); ``graph_break_line`` reports breaks."""
    log = logging.getLogger("torch._dynamo.variables.tensor")
    if not any(isinstance(f, _DropBreakWarning) for f in log.filters):
        log.addFilter(_DropBreakWarning())


def adam(module: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam over ``module``'s parameters; when they are all on the CPU, its fused form, which updates each
    parameter in one kernel instead of about ten tensor operations (RAM's step at batch 20 spends half a
    millisecond less in it; the updates agree with the unfused ones to float32 rounding)."""
    params = list(module.parameters())
    fused = bool(params) and all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64) for p in params)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def linear_decay(optimizer: torch.optim.Optimizer, total: float) -> Any:
    """``optimizer`` with its learning rate annealed linearly to 0 over ``total`` steps, in Lightning's dict form
    (stepped every training step); the optimizer alone when ``total`` is unknown (no trainer) or not positive."""
    if not math.isfinite(total) or total <= 0:
        return optimizer
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def build_model(cls: type, facts: Mapping[str, Any], kwargs: Mapping[str, Any]) -> AttentionModel:
    """``cls`` built from the data's ``facts`` (``DataFacts.model_facts()``) and ``kwargs`` (flags; a flag wins
    over a fact). A fact the constructor does not take is an error unless ``cls.ignores_facts`` names it."""
    accepted = parameters(cls)
    ignored = getattr(cls, "ignores_facts", ())
    refused = [k for k in facts if k not in accepted and k not in ignored]
    if refused:
        given = ", ".join(f"{k}={facts[k]!r}" for k in refused)
        raise ValueError(f"model {getattr(cls, 'registry_name', cls.__name__)!r} cannot use the data's {given}: "
                         f"its constructor takes no {' / '.join(refused)}; use data this model understands "
                         f"(or list the fact in {cls.__name__}.ignores_facts if the model does not need it)")
    taken = {k: v for k, v in facts.items() if k in accepted and k not in ignored}
    return cls(**{**taken, **kwargs})
