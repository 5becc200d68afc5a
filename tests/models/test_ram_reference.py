"""RAM's batched episode against a step-by-step reference: same locations, losses and gradients.

``reference_rollout`` is the straightforward form of the episode: at every glimpse the policy mean with its
graph, its log probability, the baseline, the core with W_hh h_0 at the first step and the classifier, each on
(B, hidden). ``RAM.rollout`` computes the policy, baselines and classifier once for all steps after the loop
and skips the zero state's product; both must give the same numbers and gradients on a fixed seed and batch.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from attention_lightning.models.ram import RAM, Rollout

TOL = dict(rtol=1e-6, atol=1e-6)


def reference_rollout(model: RAM, images: torch.Tensor, sample: bool = True) -> Rollout:
    hp = model.hparams
    b = images.shape[0]
    images = model.normalize(images)
    h = images.new_zeros(b, hp.hidden_size)
    state: Any = h if hp.core == "rnn" else (h, torch.zeros_like(h))
    logits, locs, means, log_pis, baselines = [], [], [], [], []
    for t in range(hp.glimpses):
        every_random = hp.location_policy == "random"
        if every_random or (t == 0 and hp.first_location == "random"):
            loc, mean, log_pi = model.random_location(b, h, sample or every_random)
        else:
            mean = model.policy_mean(h)
            loc = model.act(mean, sample)
            log_pi = model.log_prob(loc, mean)
        log_pis.append(log_pi)
        baselines.append(model.baseline(h.detach()).squeeze(-1).float())
        patches = model.sensor(images, loc)
        state = model.core(model.glimpse_net(patches, loc), state)
        h = state if hp.core == "rnn" else state[0]
        logits.append(model.classifier(h))
        locs.append(loc)
        means.append(mean)
    return Rollout(torch.stack(logits, 1), torch.stack(locs, 1), torch.stack(means, 1), torch.stack(log_pis, 1),
                   torch.stack(baselines, 1), None)


def make(**kw) -> RAM:
    args = dict(num_classes=4, image_size=(16, 16), glimpses=4, glimpse_size=4, depth=2, glimpse_hidden=12,
                location_hidden=6, hidden_size=10, std=0.3, reinforce_weight=0.5)
    args.update(kw)
    torch.manual_seed(0)
    return RAM(**args)


def losses_and_grads(model: RAM, run: Rollout, labels: torch.Tensor) -> tuple[dict, dict]:
    terms = model.episode_losses(run, labels)
    model.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    grads = {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}
    return {k: v.detach() for k, v in terms.items()}, grads


SETTINGS = {
    "preset": {},  # the MNIST preset's policy: detached, 128-unit-style hidden locator, clamped, learned l_0
    "paper": dict(detach_policy=False, locator_hidden=0, clamp=False),
    "lstm": dict(core="lstm", detach_policy=False),
    "random_first": dict(first_location="random", input_mean=0.1, input_std=0.3),
    "random_policy": dict(location_policy="random"),
    "prob_reward_wide_std": dict(reward="prob", std=0.8, depth=1, glimpse_size=5),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_batched_episode_matches_the_step_by_step_reference(setting):
    model = make(**SETTINGS[setting])
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(9, 1, 16, 16, generator=g), torch.randint(0, 4, (9,), generator=g)
    torch.manual_seed(5)
    ref = reference_rollout(model, x)
    ref_terms, ref_grads = losses_and_grads(model, ref, y)
    torch.manual_seed(5)
    run = model.rollout(x)
    terms, grads = losses_and_grads(model, run, y)
    assert torch.equal(run.locations, ref.locations)  # the same draws from torch's RNG, in the same order
    for field in ("logits", "means", "log_pi", "baselines"):
        torch.testing.assert_close(getattr(run, field), getattr(ref, field).detach(), **TOL)
    torch.testing.assert_close(terms, ref_terms, **TOL)
    assert set(grads) == set(ref_grads)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")
    if setting == "preset":  # every parameter learns from this loss (a check that the comparison is not vacuous)
        assert all(g.abs().sum() > 0 for g in grads.values())


def test_greedy_episode_matches_the_reference_without_gradients():
    model = make()
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, run = reference_rollout(model, x, sample=False), model.rollout(x, sample=False)
    assert torch.equal(run.locations, ref.locations) and torch.equal(run.means, ref.means)
    torch.testing.assert_close(run.logits, ref.logits, **TOL)
    torch.testing.assert_close(run.log_pi, ref.log_pi, **TOL)
