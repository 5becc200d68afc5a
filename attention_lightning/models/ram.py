"""RAM: the Recurrent Attention Model (Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual
Attention", NIPS 2014).

For t = 1..T the model looks at the image through a multi-scale glimpse at l_{t-1}, updates a recurrent
state h_t and then picks where to look next from a Gaussian policy N(mean(h_t), std^2 I) with a fixed
std. The first location l_0 comes from the same policy at the initial state h_0 = 0, so it is learned
too (a fixed, image-independent place; ``first_location='random'`` draws it uniformly instead). The class
is read from h_T.

- glimpse network: g = ReLU(Linear(h_g) + Linear(h_l)), h_g = ReLU(Linear(glimpse)), h_l = ReLU(Linear(l))
- core: h_t = ReLU(Linear(h_{t-1}) + Linear(g_t)) (``core='rnn'``) or an LSTM cell (``core='lstm'``)
- location network: mean = tanh(MLP(h)) (one hidden ReLU layer of ``locator_hidden`` units; 0: the paper's
  single Linear); samples l = mean + std * eps are clamped to [-1, 1] (``clamp``), and log pi is the log
  probability of the clamped location under the Gaussian censored at the edges, so the location in the
  policy gradient is the one the sensor used. With ``detach_policy`` the locator reads a detached h: the
  policy gradient trains the locator only, the core and glimpse network learn from cross-entropy alone.
- baseline network: b = Linear(h), fitted to the reward by squared error
- classifier: softmax(Linear(h_T))

Loss = CE(classifier(h_T), y) + MSE(b, R) + reinforce_weight * REINFORCE, with REINFORCE =
-sum_t log pi(l_{t-1} | h_{t-1}) (R - b(h_{t-1})), averaged over the batch; R = 1 when the final
prediction is right, else 0 (``reward='correct'``, the paper's) or the probability of the true class
(``reward='prob'``). The baseline of each action is computed from the state that chose it, so it never
depends on the action itself (an unbiased estimator). No location is drawn after the last glimpse.

Evaluation: ``{stage}/acc`` is greedy (the policy mean is followed; a random l_0 is the image center);
``{stage}/acc_mc`` averages the class probabilities of ``mc_samples`` sampled rollouts;
``{stage}/acc_t1..tT`` is the greedy accuracy of classifier(h_t) after each glimpse.

The paper trains with SGD (momentum 0.9, minibatches of 20, learning rate annealed linearly to 0) and picks
the learning rate and std by random search without reporting them. SGD at lr 0.01 with reinforce_weight 1
never leaves chance on MNIST: early on the reward is noise, the REINFORCE gradient (scale 1/std per glimpse)
swamps the classifier's in the shared core, and the policy means drift into tanh saturation at the border,
where glimpses see nothing. Defaults (``docs/studies/ram_mnist.md``, the embedded digits, batch 128,
validation): Adam 1e-3 at a constant rate, a detached policy with a 128-unit hidden layer, clamped
locations, reinforce_weight 0.01, learned l_0; each of detaching, the hidden layer, the smaller weight and
the constant rate alone raised greedy validation accuracy after 10 epochs by 12-23 points over the earlier
defaults (linear locator, REINFORCE into the core with weight 0.1, linear decay). The paper's setting stays
reachable: ``--detach_policy=false --locator_hidden=0 --clamp=false --lr_decay=true --optimizer=sgd``.
"""
from __future__ import annotations

from typing import Any, Literal, NamedTuple
from collections.abc import Sequence

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ..attention import Attention
from ..nn.glimpse import GlimpseSensor
from ..nn.precision import autocast_off
from ..registry import register_model
from .base import AttentionModel, adam, as_flags, linear_decay



class GlimpseNetwork(nn.Module):
    """g = ReLU(Linear(ReLU(Linear(glimpse))) + Linear(ReLU(Linear(l)))): (B, D*C, g, g), (B, 2) -> (B, out)."""

    def __init__(self, glimpse_dim: int, glimpse_hidden: int, location_hidden: int, out: int) -> None:
        super().__init__()
        self.what = nn.Linear(glimpse_dim, glimpse_hidden)
        self.where = nn.Linear(2, location_hidden)
        self.what_out = nn.Linear(glimpse_hidden, out)
        self.where_out = nn.Linear(location_hidden, out)

    def forward(self, patches: Tensor, loc: Tensor) -> Tensor:
        hg = F.relu(self.what(patches.flatten(1)))  # (B, glimpse_hidden)
        hl = F.relu(self.where(loc))  # (B, location_hidden)
        return F.relu(self.what_out(hg) + self.where_out(hl))  # (B, out)


class Rollout(NamedTuple):
    logits: Tensor     # (B, T, K) classifier(h_t) after each glimpse
    locations: Tensor  # (B, T, 2) l_0..l_{T-1}, the places looked at
    means: Tensor      # (B, T, 2) the policy means they were drawn from (float32)
    log_pi: Tensor     # (B, T) log density of each location under its policy (float32)
    baselines: Tensor  # (B, T) b(h_{t-1}), the baseline of the action l_{t-1}
    glimpses: Tensor | None  # (B, T, D*C, g, g) when asked for


@register_model("ram", "Recurrent attention model: multi-scale glimpses, RNN core, REINFORCE with a baseline")
class RAM(AttentionModel):
    """Recurrent attention model: T glimpses chosen by a Gaussian policy trained with REINFORCE.

    Arguments:
        num_classes: number of classes.
        in_channels: image channels.
        image_size: (H, W) of the input images in pixels.
        glimpses: number of glimpses T per image.
        glimpse_size: side in pixels of the finest glimpse patch (and of every scale after reduction).
        depth: number of scales per glimpse.
        scale: side ratio between successive scales.
        glimpse_hidden: width of the glimpse network's "what" layer.
        location_hidden: width of the glimpse network's "where" layer.
        hidden_size: width of the recurrent core's state.
        core: recurrent core, plain ReLU RNN (the paper's) or LSTM.
        std: standard deviation of the Gaussian location policy ([-1, 1] image coordinates).
        reinforce_weight: weight of the REINFORCE term in the loss.
        reward: 1 for a right final prediction (the paper's) or the probability of the true class.
        mc_samples: sampled rollouts averaged for the {stage}/acc_mc metric.
        optimizer: sgd (the paper's, with momentum) or adam.
        momentum: SGD momentum.
        lr_decay: anneal the learning rate linearly to 0 over training (the paper's).
        lr: learning rate.
        weight_decay: L2 weight decay.
        first_location: l_0 from the policy at h_0 = 0 (learned) or uniform on [-1, 1]^2 (random; center when greedy).
        locator_hidden: width of the location network's hidden ReLU layer; 0 for a single Linear (the paper's).
        clamp: clamp sampled locations to [-1, 1], with the censored Gaussian's log probability.
        detach_policy: the location network reads a detached core state (REINFORCE trains the locator only).
        input_mean: subtracted from pixels before the sensor reads them.
        input_std: pixels are divided by it after subtracting input_mean.
        location_policy: learned (the policy) or random (every location uniform on [-1, 1]^2, in training and
            evaluation alike: a baseline with RAM's sensor and core and no policy learning).
    """

    # checkpoints from before the locator, clamping and detaching were flags: a linear locator, unclamped
    # locations, REINFORCE into the core
    legacy_defaults = {"locator_hidden": 0, "clamp": False, "detach_policy": False}

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: Sequence[int] = (28, 28),
        glimpses: int = 6,
        glimpse_size: int = 8,
        depth: int = 1,
        scale: float = 2.0,
        glimpse_hidden: int = 128,
        location_hidden: int = 128,
        hidden_size: int = 256,
        core: Literal["rnn", "lstm"] = "rnn",
        std: float = 0.1,
        reinforce_weight: float = 0.01,
        reward: Literal["correct", "prob"] = "correct",
        mc_samples: int = 10,
        optimizer: Literal["sgd", "adam"] = "adam",
        momentum: float = 0.9,
        lr_decay: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        first_location: Literal["learned", "random"] = "learned",
        locator_hidden: int = 128,
        clamp: bool = True,
        detach_policy: bool = True,
        input_mean: float = 0.0,
        input_std: float = 1.0,
        location_policy: Literal["learned", "random"] = "learned",
    ) -> None:
        super().__init__(num_classes, lr, weight_decay)
        h, w = (int(image_size), int(image_size)) if isinstance(image_size, int) else (int(s) for s in image_size)
        self.image_size = (h, w)
        self.check_positive(glimpses=glimpses, glimpse_size=glimpse_size, depth=depth, scale=scale, std=std,
                            mc_samples=mc_samples, glimpse_hidden=glimpse_hidden, location_hidden=location_hidden,
                            hidden_size=hidden_size, lr=lr)
        if glimpse_size > min(h, w):
            raise ValueError(f"glimpse size {glimpse_size} exceeds the {h}x{w} image; use --glimpse_size <= {min(h, w)}")
        if reinforce_weight < 0:
            raise ValueError(f"--reinforce_weight={reinforce_weight} must be 0 or more")
        if locator_hidden < 0:
            raise ValueError(f"--locator_hidden={locator_hidden} must be 0 (a linear locator) or more")
        self.check_positive(input_std=input_std)
        with as_flags(size="glimpse_size", depth="depth", scale="scale"):
            self.sensor = GlimpseSensor(glimpse_size, depth, scale)
        self.glimpse_net = GlimpseNetwork(depth * in_channels * glimpse_size**2, glimpse_hidden, location_hidden,
                                          hidden_size)
        cell = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell}[core]
        self.core = cell(hidden_size, hidden_size, **({"nonlinearity": "relu"} if core == "rnn" else {}))
        self.locator = nn.Linear(hidden_size, 2) if locator_hidden == 0 else nn.Sequential(
            nn.Linear(hidden_size, locator_hidden), nn.ReLU(), nn.Linear(locator_hidden, 2))
        self.baseline = nn.Linear(hidden_size, 1)
        self.classifier = nn.Linear(hidden_size, num_classes)
        for stage in ("val", "test"):
            setattr(self, f"{stage}_acc_mc", MulticlassAccuracy(num_classes, average="micro"))
            setattr(self, f"{stage}_acc_steps",
                    nn.ModuleList(MulticlassAccuracy(num_classes, average="micro") for _ in range(glimpses)))

    # --- the policy ------------------------------------------------------------------------------
    def policy_mean(self, state: Tensor) -> Tensor:
        """Mean (B, 2) of the location policy at core output ``state`` (B, hidden), in float32."""
        if self.hparams.detach_policy:
            state = state.detach()  # REINFORCE then trains the locator only, not the core it reads
        with autocast_off(state.device.type):
            return torch.tanh(self.locator(state.float()))  # (B, 2)

    def act(self, mean: Tensor, sample: bool) -> Tensor:
        """The location to look at: a draw from N(mean, std^2 I) (torch's global RNG), clamped to [-1, 1]
        when ``clamp``, or the mean itself."""
        # the location is an action: a constant to everything downstream (no gradient through sampling)
        if not sample:
            return mean.detach()
        loc = mean + self.hparams.std * torch.randn_like(mean)
        return (loc.clamp(-1.0, 1.0) if self.hparams.clamp else loc).detach()

    def log_prob(self, loc: Tensor, mean: Tensor) -> Tensor:
        """log pi(loc | mean) (B,), in float32, of the location actually used.

        Without ``clamp`` this is the Gaussian density log N(loc; mean, std^2 I). With ``clamp`` a draw
        beyond an edge is moved onto it, so the policy is a Gaussian censored at -1 and +1: per coordinate,
        a location strictly inside has the Gaussian density, and one on an edge has the probability of
        all draws past that edge, log Phi((-1 - mean) / std) or log Phi((mean - 1) / std).
        """
        std = self.hparams.std
        with autocast_off(mean.device.type):
            loc, mean = loc.float(), mean.float()
            z = (loc - mean) / std
            log_pi = -0.5 * z.square() - math.log(std) - 0.5 * math.log(2 * math.pi)  # (B, 2)
            if self.hparams.clamp:
                low = torch.special.log_ndtr((-1.0 - mean) / std)  # (B, 2) log P(draw <= -1)
                high = torch.special.log_ndtr((mean - 1.0) / std)  # (B, 2) log P(draw >= +1)
                log_pi = torch.where(loc <= -1.0, low, torch.where(loc >= 1.0, high, log_pi))
            return log_pi.sum(-1)  # (B,)

    def random_location(self, b: int, h: Tensor, sample: bool) -> tuple[Tensor, Tensor, Tensor]:
        """A location (B, 2) uniform on [-1, 1]^2 when sampling, else that distribution's mean (the image center);
        no parameter chooses it, so its log pi (B,) is 0 and it gets no policy gradient."""
        mean = h.new_zeros(b, 2, dtype=torch.float32)  # (B, 2)
        loc = torch.rand_like(mean) * 2 - 1 if sample else mean
        return loc, mean, h.new_zeros(b, dtype=torch.float32)

    def normalize(self, images: Tensor) -> Tensor:
        """(images - input_mean) / input_std: what the sensor reads (outside the image it reads 0)."""
        mean, std = self.hparams.input_mean, self.hparams.input_std
        return images if (mean, std) == (0.0, 1.0) else (images - mean) / std

    # --- one episode -----------------------------------------------------------------------------
    def core_step(self, x: Tensor, state: Any, first: bool) -> Any:
        """The core's next state from glimpse features ``x`` (B, hidden). At the first step of the ReLU RNN the
        state is h_0 = 0, so W_hh h_0 is skipped: the same value (W_hh 0 + b_hh = b_hh) without a matrix product
        forward and backward (its gradient for W_hh is exactly 0)."""
        if first and self.hparams.core == "rnn":
            core = self.core
            return F.relu(F.linear(x, core.weight_ih, core.bias_ih) + core.bias_hh)  # (B, hidden) h_1
        return self.core(x, state)

    def rollout(self, images: Tensor, sample: bool = True, locations: Tensor | None = None,
                keep_glimpses: bool = False) -> Rollout:
        """Run T glimpses on (B, C, H, W) images; ``locations`` (B, T, 2) forces where to look (tests, analysis).

        Only what the recurrence needs runs inside the loop over glimpses: the policy mean that picks each
        location (without a graph: the location is a constant downstream), the sensor, the glimpse network and
        the core. The classifier, the baselines and the policy's differentiable means and log probabilities
        are computed after it, once for all T steps ((B*T, hidden) products instead of T of (B, hidden)),
        which gives the same values and gradients with fewer, larger operations.
        """
        b = images.shape[0]
        images = self.normalize(images)
        hidden, steps = self.hparams.hidden_size, self.hparams.glimpses
        h = images.new_zeros(b, hidden, dtype=torch.float32)  # h_0
        state: Any = h if self.hparams.core == "rnn" else (h, torch.zeros_like(h))
        every_random = self.hparams.location_policy == "random"  # the random-locations baseline
        # the policy chooses l_first..l_{T-1}; the locations before are uniform draws, with log pi = 0
        first = steps if every_random else int(self.hparams.first_location == "random")
        states, locs, means, views = [h], [], [], []
        for t in range(steps):
            forced = None if locations is None else locations[:, t].detach().float()
            if t >= first:
                with torch.no_grad():
                    mean = self.policy_mean(h)  # (B, 2) the policy at h_{t-1}
                loc = self.act(mean, sample) if forced is None else forced
            else:
                loc, mean, _ = self.random_location(b, h, sample or every_random)
                loc = loc if forced is None else forced
            patches = self.sensor(images, loc)  # (B, D*C, g, g)
            state = self.core_step(self.glimpse_net(patches, loc.to(patches.dtype)), state, first=t == 0)
            h = state if self.hparams.core == "rnn" else state[0]  # (B, hidden) h_t
            states.append(h)
            locs.append(loc)
            means.append(mean)
            if keep_glimpses:
                views.append(patches)
        seen = torch.stack(states[1:], 1)  # (B, T, hidden) h_1..h_T
        before = torch.stack(states[:-1], 1)  # (B, T, hidden) h_0..h_{T-1}, the states that chose l_0..l_{T-1}
        location = torch.stack(locs, 1)  # (B, T, 2)
        drawn_from = torch.stack(means, 1)  # (B, T, 2) the means the locations came from (no graph)
        # the baseline only estimates the return: fitting it must not move the core or glimpse net
        baselines = self.baseline(before.detach()).squeeze(-1).float()  # (B, T)
        log_pi = before.new_zeros(b, first, dtype=torch.float32)  # (B, first)
        if first < steps:
            # the policy's means again, as one differentiable product over the steps: the same values
            mean = self.policy_mean(before[:, first:]) if torch.is_grad_enabled() else drawn_from[:, first:]
            chosen = self.log_prob(location[:, first:], mean)  # (B, T - first)
            log_pi = chosen if first == 0 else torch.cat([log_pi, chosen], 1)  # (B, T)
        return Rollout(self.classifier(seen), location, drawn_from, log_pi, baselines,
                       torch.stack(views, 1) if keep_glimpses else None)

    def forward(self, images: Tensor) -> Tensor:
        """Greedy final logits (B, K)."""
        return self.rollout(images, sample=False).logits[:, -1]

    # --- loss -------------------------------------------------------------------------------------
    def reward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Reward (B,) of final logits: 1 for a right prediction (``correct``) or p(true class) (``prob``)."""
        with torch.no_grad():
            if self.hparams.reward == "correct":
                return (logits.argmax(-1) == labels).float()
            return logits.float().softmax(-1).gather(1, labels[:, None]).squeeze(1)

    def episode_losses(self, run: Rollout, labels: Tensor) -> dict[str, Tensor]:
        """CE on the final logits, MSE of the baselines to the reward, weighted REINFORCE."""
        final = run.logits[:, -1]  # (B, K)
        r = self.reward(final, labels)  # (B,)
        ret = r[:, None].expand_as(run.baselines)  # (B, T) undiscounted return of every action
        # the advantage weighs log pi and is a constant: without detaching, REINFORCE would also train the baseline
        advantage = (ret - run.baselines).detach()
        reinforce = -(run.log_pi * advantage).sum(1).mean()
        return {
            "ce": F.cross_entropy(final.float(), labels),
            "baseline": F.mse_loss(run.baselines, ret),
            "reinforce": self.hparams.reinforce_weight * reinforce,
        }

    def loss_terms(self, batch: Any, stage: str) -> tuple[dict[str, Tensor], Tensor]:
        images, labels = self.inputs(batch), self.targets(batch)
        if stage == "train":
            run = self.rollout(images, sample=True)
            terms = self.episode_losses(run, labels)
            self.log("train/reward", self.reward(run.logits[:, -1], labels).mean(), on_step=True, on_epoch=True)
            return terms, run.logits[:, -1]
        # evaluation: the training losses on M sampled episodes per image (one batched rollout), their
        # averaged class probabilities, and the greedy episode whose final logits give {stage}/acc
        m = self.hparams.mc_samples
        sampled = self.rollout(images.repeat(m, 1, 1, 1), sample=True)
        terms = self.episode_losses(sampled, labels.repeat(m))
        probs = sampled.logits[:, -1].float().softmax(-1).view(m, images.shape[0], -1).mean(0)  # (B, K)
        greedy = self.rollout(images, sample=False).logits  # (B, T, K)
        getattr(self, f"{stage}_acc_mc")(probs, labels)
        self.log(f"{stage}/acc_mc", getattr(self, f"{stage}_acc_mc"), on_step=False, on_epoch=True)
        for t, metric in enumerate(getattr(self, f"{stage}_acc_steps")):
            metric(greedy[:, t].detach(), labels)
            self.log(f"{stage}/acc_t{t + 1}", metric, on_step=False, on_epoch=True)
        return terms, greedy[:, -1]

    def configure_optimizers(self):
        return self.optimizer_for(self.planned_steps())

    def optimizer_for(self, total: float):
        """The optimizer, with linear decay of the learning rate to 0 over ``total`` steps when ``lr_decay``."""
        hp = self.hparams
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            opt = adam(self, hp.lr, hp.weight_decay)
        # the paper anneals the learning rate linearly to 0 over training
        return linear_decay(opt, total) if hp.lr_decay else opt

    # --- dashboards ---------------------------------------------------------------------------------
    @torch.no_grad()
    def attention(self, batch: Any) -> Attention:
        images = self.inputs(batch)
        run = self.rollout(images, sample=False, keep_glimpses=True)
        b, t = run.locations.shape[:2]
        c = images.shape[1]
        return Attention(
            images=images, probs=run.logits.float().softmax(-1),
            boxes=self.sensor.boxes(run.locations, self.image_size),  # (B, T, D, 4) every scale
            views=run.glimpses[:, :, :c] * self.hparams.input_std + self.hparams.input_mean,  # (B, T, C, g, g) finest
            labels=self.targets(batch), map_title="glimpses",
        )
