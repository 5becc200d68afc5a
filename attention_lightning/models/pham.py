"""PHAM: a probabilistic hard attention model for sequentially observed scenes (Rangrej & Clark, BMVC 2021).

The model sees glimpses on a regular grid (``nn/grid_glimpse.py``), never the whole image. At step t,
F turns the glimpse and its location into features, R updates the hidden state h_t, and C gives
p(y | h_t). To choose glimpse t+1 the Partial VAE (``nn/partial_vae.py``) draws z ~ q(z | h_t),
synthesizes the content features f~(l) of every cell, and each unvisited cell l is scored by the
expected information gain KL[p(y | f~(l), h_t) || p(y | h_t)] averaged over z samples; the argmax is
attended (``nn/pham_blocks.py``). The first glimpse is random; a cell is never attended twice.

Training has three phases (``--phase``): 1) F, R, C by cross-entropy at every step, random glimpses;
2) F, R, C frozen (and kept in eval mode), the Partial VAE by the ELBO on the observed cells, random
glimpses; 3) everything, EIG glimpses, ELBO + ``ccebal`` x cross-entropy. Phases 2 and 3 start from
``--init_from`` (the previous phase's checkpoint); ``--phase=all`` runs 1, 2, 3 in sequence through
``experiment.fit`` (see ``PHAM.stages``).

Speed (``benchmarks/pham_phases.py``): phases 2 and 3 spend most of their time in the Partial VAE,
run on B x T rows per step: the decoder's 3x3 convs over the grid, forward and backward, and the flow. The
decoder keeps the paper's width (``decoder_channels`` defaults to feature_size; a narrower one is a smaller
model, not a faster computation). Where the ELBO takes gradients, the decoder's last layer (1x1) runs on the
observed cells only; the 3x3 convs see every cell, since each GroupNorm pools the whole map.

Validation and test log the accuracy at every step t=1..T for the EIG policy and for a random policy
on the same weights (``{stage}/acc_eig_t{t}``, ``{stage}/acc_random_t{t}``); ``{stage}/acc`` is the
final-step accuracy of the phase's evaluation policy (random in phase 1, EIG in phases 2 and 3). The EIG
policy draws ``eig_samples`` z samples at test (the paper's 20), ``eig_samples_val`` at validation and one
in the sanity check, so that evaluating costs less than training.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ..attention import Attention
from ..nn.coords import cell_extent
from ..nn.grid_glimpse import all_glimpses, glimpses_at, grid_for
from ..nn.partial_vae import PartialVAE
from ..nn.pham_blocks import Classifier, GlimpseFeatures, Recurrent, information_gain, random_scores
from ..registry import register_model
from .base import AttentionModel, ConfigError, as_flags

PHASES = (1, 2, 3)
Phase = Literal[1, 2, 3, "all"]


@dataclass
class Rollout:
    """One episode of T glimpses for a batch."""
    logits: Tensor                 # (B, T, K) p(y | h_t) logits after each glimpse
    cells: Tensor                  # (B, T) attended cell per step (row-major index)
    maps: Tensor                   # (B, T, N) the policy's score map that chose each glimpse (EIG, or the random pmf)
    nll: Tensor | None = None   # (B,) observed-cell NLL summed over steps (when the ELBO is computed)
    kl: Tensor | None = None    # (B,) log q(z|h) - log p(z) summed over steps


def _phase(phase: Phase) -> int | str:
    """The phase as an int, or "all" (a flag may spell the number as a string)."""
    return "all" if str(phase) == "all" else int(phase)


@register_model("pham", "Probabilistic hard attention: grid glimpses, Partial VAE (flow), EIG lookahead policy")
class PHAM(AttentionModel):
    """PHAM: grid glimpses, a Partial VAE with a flow encoder, and the EIG lookahead policy.

    Arguments:
        num_classes: number of classes K.
        in_channels: image channels.
        image_size: image side in pixels, or (H, W).
        glimpse_size: glimpse side in pixels (default: image side // 4).
        glimpse_stride: stride of the glimpse grid in pixels (default: glimpse_size // 2).
        steps: glimpses per episode T.
        eig_samples: z samples per EIG lookahead at test and in ``forward``/pictures (the paper's 20).
        eig_samples_val: z samples per EIG lookahead at validation (cheap; the sanity check uses 1).
        eig_samples_train: z samples per EIG lookahead while training phase 3.
        feature_size: glimpse feature size F.
        hidden_size: recurrent state size H.
        latent_size: latent size Z of the Partial VAE.
        glimpse_channels: widths of the glimpse CNN's 3x3 convs.
        flow_transforms: spline-flow layers of the encoder.
        flow_bins: spline bins per flow layer.
        flow_hidden: hidden widths of each flow layer's conditioner.
        decoder_channels: channels of the feature decoder's 3x3 convs (default: feature_size).
        decoder_layers: 3x3 conv layers of the feature decoder.
        classifier_dropout: dropout before the classifier, in [0, 1).
        phase: training phase 1, 2, 3 (``all`` runs the three through experiment.fit).
        init_from: the previous phase's checkpoint (phases 2 and 3).
        ccebal: weight of the cross-entropy in phase 3.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int | Sequence[int] = 32,
        glimpse_size: int | None = None,
        glimpse_stride: int | None = None,
        steps: int = 7,
        eig_samples: int = 20,
        eig_samples_val: int = 4,
        eig_samples_train: int = 1,
        feature_size: int = 128,
        hidden_size: int = 512,
        latent_size: int = 256,
        glimpse_channels: Sequence[int] = (64, 128, 256),
        flow_transforms: int = 4,
        flow_bins: int = 5,
        flow_hidden: Sequence[int] = (256, 256),
        decoder_channels: int | None = None,
        decoder_layers: int = 4,
        classifier_dropout: float = 0.5,
        phase: Phase = 1,
        init_from: str | None = None,
        ccebal: float = 16.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(num_classes, lr, weight_decay)
        self.phase = _phase(phase)
        if self.phase == "all":
            raise ValueError("--phase=all runs phases 1, 2, 3 through `cli.py fit` / experiment.fit; "
                             "to build one model use --phase=1, 2 or 3")
        if self.phase in (2, 3) and not init_from:
            raise ValueError(f"--phase={self.phase} starts from the phase-{self.phase - 1} model: pass "
                             f"--init_from=PATH/TO/phase{self.phase - 1}.ckpt, or run --phase=all to train 1, 2, 3 in sequence")
        self.check_positive(steps=steps, eig_samples=eig_samples, eig_samples_val=eig_samples_val,
                            eig_samples_train=eig_samples_train, lr=lr,
                            feature_size=feature_size, hidden_size=hidden_size, latent_size=latent_size)
        if ccebal < 0:
            raise ValueError(f"--ccebal={ccebal} must be 0 or more")
        with as_flags(glimpse_size="glimpse_size", glimpse_stride="glimpse_stride"):
            self.grid = grid_for(image_size, glimpse_size, glimpse_stride)
        if steps > self.grid.cells:
            raise ValueError(f"--steps={steps} exceeds the {self.grid.cells} cells of the {self.grid.shape[0]}x"
                             f"{self.grid.shape[1]} grid (a cell is never attended twice); use --steps <= {self.grid.cells}")
        self._init_loaded = False

        with as_flags(channels="glimpse_channels", dropout="classifier_dropout"):
            self.features = GlimpseFeatures(in_channels, self.grid.size, glimpse_channels, feature_size)  # F
            self.rnn = Recurrent(feature_size, hidden_size)                                               # R
            self.classifier = Classifier(hidden_size, num_classes, classifier_dropout)                    # C
        self.vae = PartialVAE(hidden_size, latent_size, feature_size, self.grid.shape, flow_transforms,  # S, D
                              flow_bins, flow_hidden, decoder_channels or feature_size, decoder_layers)
        self.register_buffer("centers", self.grid.centers(), persistent=False)  # (N, 2)
        self.register_buffer("cell_boxes", self.grid.boxes(), persistent=False)  # (N, 4)

        if self.phase == 1:
            self.vae.requires_grad_(False)
        if self.phase == 2:
            for m in self.recognition():
                m.requires_grad_(False)
        self.step_acc = nn.ModuleDict({
            f"{stage}_{policy}": nn.ModuleList(MulticlassAccuracy(num_classes, average="micro") for _ in range(steps))
            for stage in ("val", "test") for policy in ("eig", "random")
        })

    # --- phases ------------------------------------------------------------------------------
    @classmethod
    def stages(cls, model_kwargs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """``--phase=all``: the runs experiment.fit makes in sequence, each started from the previous best."""
        if _phase(model_kwargs.get("phase", 1)) != "all":
            return super().stages(model_kwargs)
        return [(f"phase{k}", {"phase": k}) for k in PHASES]

    def recognition(self) -> tuple[nn.Module, ...]:
        """F, R and C: the modules phase 1 trains and phase 2 freezes."""
        return self.features, self.rnn, self.classifier

    def train(self, mode: bool = True) -> PHAM:
        super().train(mode)
        if self.phase == 2:  # frozen F, R, C stay in eval mode (no dropout) while the Partial VAE trains
            for m in self.recognition():
                m.eval()
        return self

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.init_from and not self._init_loaded:
            self.load_previous_phase(self.hparams.init_from)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._init_loaded = True  # weights come from this model's own checkpoint, not from --init_from

    def load_previous_phase(self, path: str) -> None:
        """Load the previous phase's weights (a Lightning .ckpt or a state_dict) without running pickled code."""
        prev = f"phase {self.phase - 1}" if self.phase > 1 else "a previous run"
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--init_from={path}: no such file; pass the best or last .ckpt of {prev} "
                                    f"(runs/<run_name>/version_k/checkpoints/)")
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"--init_from={path} cannot be loaded as weights ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:160]}); pass a .ckpt written by --model=pham") from None
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise ConfigError(f"--init_from={path} holds no state_dict; pass a .ckpt written by --model=pham")
        own = self.state_dict()
        # phase 3 continues phase 2's Partial VAE; phases 1 and 2 take F, R, C only (phase 1 never trains the
        # Partial VAE, so phase 2 starts its own, whatever its sizes)
        needed = [k for k in own if self.phase == 3 or not k.startswith("vae.")]
        missing = [k for k in needed if k not in state]
        if missing:
            raise ConfigError(f"--init_from={path} lacks {len(missing)} weights of this model (e.g. {missing[0]}); "
                             f"pass a checkpoint of {prev} of --model=pham")
        wrong = [k for k in needed if state[k].shape != own[k].shape]
        if wrong:
            k = wrong[0]
            sizes = ("--decoder_channels, --decoder_layers (the width defaults to --feature_size)"
                     if k.startswith("vae.decoder.") else "--feature_size, --hidden_size, --latent_size, ...")
            raise ConfigError(f"--init_from={path}: {k} is {tuple(state[k].shape)}, this model needs {tuple(own[k].shape)}; "
                             f"use the same sizes ({sizes}) as {prev}")
        self.load_state_dict({k: state[k] for k in needed}, strict=False)
        self._init_loaded = True

    # --- the episode -------------------------------------------------------------------------
    def lookahead(self, h: Tensor, prior_logits: Tensor, synth: Tensor, visited: Tensor) -> Tensor:
        """EIG (B, N) of every cell from synthesized content features (B, S, N, F), all cells and samples at once."""
        f = self.features.combine(synth, self.centers.to(synth.dtype))  # (B, S, N, F)
        h_next = self.rnn(f, h[:, None, None, :])                        # (B, S, N, H)
        return information_gain(self.classifier.lookahead(h_next), prior_logits, visited)

    def rollout(self, images: Tensor, policy: str, samples: int = 1, elbo: bool = False) -> Rollout:
        """T glimpses of (B, C, H, W) images chosen by ``policy`` ("eig" | "random"), with the ELBO terms if asked."""
        if policy not in ("eig", "random"):
            raise ValueError(f"policy {policy!r} is not one of eig, random")
        if not (elbo or policy == "eig"):  # the flow is not called
            return self._rollout(images, policy, samples, elbo)
        with self.vae.encoder.masks_applied():  # the flow's masked weights once per episode, not once per step
            return self._rollout(images, policy, samples, elbo)

    def _rollout(self, images: Tensor, policy: str, samples: int, elbo: bool) -> Rollout:
        b, n = images.shape[0], self.grid.cells
        h = images.new_zeros(b, self.rnn.hidden)
        visited = torch.zeros(b, n, dtype=torch.bool, device=images.device)
        logits, cells, maps = [], [], []
        hs, noise, seen = [], [], []  # per step, for the ELBO
        # The EIG policy draws z ~ q(z | h_t) at every step to plan; with the ELBO asked for, that one flow and
        # decoder pass (with gradients) also gives step t's ELBO term, and the lookahead reads it detached.
        # The random policy plans nothing, so its ELBO runs once after the episode over all B*T rows.
        inline = policy == "eig" and elbo
        nll = kl = images.new_zeros(b, dtype=torch.float32) if inline else None
        synth = None
        for t in range(self.hparams.steps):
            if policy == "eig" and t > 0:
                with torch.no_grad():
                    score = self.lookahead(h.detach(), logits[-1].detach(), synth.detach(), visited)  # (B, N)
                maps.append(score.clamp_min(0).masked_fill(visited, 0))
            else:
                score = random_scores(visited)
                free = (~visited).float()
                maps.append(free / free.sum(-1, keepdim=True))
            cell = score.argmax(-1)                                     # (B,)
            visited = visited.scatter(1, cell[:, None], True)
            cells.append(cell)
            what = self.features.what(glimpses_at(images, cell, self.grid))  # (B, F)
            h = self.rnn(self.features.combine(what, self.centers[cell]), h)  # (B, H)
            logits.append(self.classifier(h))                           # (B, K)
            plan_next = policy == "eig" and t < self.hparams.steps - 1
            if not (elbo or plan_next):
                continue
            eps = self.vae.encoder.noise(h, samples if plan_next else 1)  # (B, S, Z)
            if elbo:
                seen.append(what.detach())
            if inline:  # the observed cells' features with gradients, every cell's for the lookahead without
                z, log_q = self.vae.encoder(h, eps.shape[1], eps)       # (B, S, Z), (B, S)
                guess, synth = self.vae.decoder.cells_and_map(z.to(h.dtype), torch.stack(cells, 1))  # (B, S, t|N, F)
                nll_t, kl_t = self.vae.elbo_terms(guess, z, log_q, torch.stack(seen, 1))
                nll, kl = nll + nll_t, kl + kl_t
            elif plan_next:  # the argmax passes no gradient: synthesize for the lookahead without a graph
                with torch.no_grad():
                    synth = self.vae(h.detach(), eps.shape[1], eps)[0]  # (B, S, N, F)
            else:
                hs.append(h)
                noise.append(eps)
        cells_bt = torch.stack(cells, 1)  # (B, T)
        if elbo and not inline:  # all steps' ELBO terms in one flow/decoder pass over B*T rows
            nll, kl = self.vae.negative_elbo_steps(torch.stack(hs, 1), noise, torch.stack(seen, 1), cells_bt)
        return Rollout(torch.stack(logits, 1), cells_bt, torch.stack(maps, 1), nll, kl)

    def forward(self, images: Tensor) -> Tensor:
        """Final-step logits (B, K) with the EIG policy (phases 2, 3) or random glimpses (phase 1)."""
        return self.rollout(images, self.eval_policy, self.hparams.eig_samples).logits[:, -1]

    @property
    def eval_policy(self) -> str:
        return "random" if self.phase == 1 else "eig"

    # --- losses and metrics ------------------------------------------------------------------
    def _terms(self, run: Rollout, labels: Tensor, stage: str) -> dict[str, Tensor]:
        k = run.logits.shape[-1]
        ce = F.cross_entropy(run.logits.reshape(-1, k).float(), labels.repeat_interleave(self.hparams.steps))  # mean over B, T
        if self.phase == 1:
            return {"ce": ce}
        self.log(f"{stage}/ce", ce.detach(), on_step=stage == "train", on_epoch=True, sync_dist=stage != "train")
        scale = self.hparams.steps * self.vae.latent  # per step and per latent dimension, as in the paper's code
        terms = {"nll": run.nll.mean() / scale, "kl": run.kl.mean() / scale}
        if self.phase == 3:
            terms["ccebal_ce"] = self.hparams.ccebal * ce
        return terms

    def loss_terms(self, batch: Any, stage: str) -> tuple[dict[str, Tensor], Tensor]:
        images, labels = self.inputs(batch), self.targets(batch)
        samples = self.hparams.eig_samples_train if stage == "train" else self.eval_samples(stage)
        policy = "eig" if self.phase == 3 else "random"
        run = self.rollout(images, policy, samples, elbo=self.phase != 1)
        return self._terms(run, labels, stage), run.logits[:, -1]

    def eval_samples(self, stage: str) -> int:
        """z samples of the EIG policy at evaluation: the paper's at test, fewer at validation, 1 in the sanity check."""
        if stage == "test":
            return self.hparams.eig_samples
        trainer = self._trainer
        return 1 if trainer is not None and trainer.sanity_checking else self.hparams.eig_samples_val

    def _eval_step(self, batch: Any, stage: str) -> dict[str, Tensor]:
        images, labels = self.inputs(batch), self.targets(batch)
        runs = {self.eval_policy: self.rollout(images, self.eval_policy, self.eval_samples(stage), elbo=self.phase != 1)}
        if self.phase != 1:
            runs["random"] = self.rollout(images, "random")
        main = runs[self.eval_policy]
        loss = self._total(self._terms(main, labels, stage), stage, batch_size=len(labels))
        for policy, run in runs.items():
            for t, metric in enumerate(self.step_acc[f"{stage}_{policy}"]):
                metric(run.logits[:, t].detach(), labels)
                self.log(f"{stage}/acc_{policy}_t{t + 1}", metric, on_step=False, on_epoch=True)
        acc = getattr(self, f"{stage}_acc")
        acc(main.logits[:, -1].detach(), labels)
        self.log(f"{stage}/acc", acc, prog_bar=stage != "test", on_step=False, on_epoch=True)
        return {"loss": loss, "preds": main.logits[:, -1].detach().argmax(-1), "targets": labels}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test")

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    @torch.no_grad()
    def attention(self, batch: Any) -> Attention:
        images = self.inputs(batch)
        run = self.rollout(images, self.eval_policy, self.hparams.eig_samples)
        b, gh, gw = images.shape[0], *self.grid.shape
        views = all_glimpses(images, self.grid)[torch.arange(b, device=images.device)[:, None], run.cells]  # (B, T, C, g, g)
        return Attention(
            images=images, probs=run.logits.float().softmax(-1), boxes=self.cell_boxes[run.cells][:, :, None],
            maps=run.maps.view(b, self.hparams.steps, gh, gw), views=views,
            labels=self.targets(batch),
            map_title="EIG" if self.eval_policy == "eig" else "random policy pmf",
            map_extent=cell_extent(self.centers[:gw, 0], self.centers[::gw, 1]),  # map cells sit on glimpse centers
        )
