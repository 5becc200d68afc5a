"""RAM: gradient routing of the hybrid loss, the policy learning where to look, evaluation, the CLI."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from attention_lightning.run import commands as experiment
from attention_lightning.models.ram import RAM
from attention_lightning.nn.glimpse import glimpse


def small(**kw):
    """A small RAM in the paper's setting (REINFORCE into the core, linear locator, no clamping) unless overridden."""
    args = dict(num_classes=3, image_size=(12, 12), glimpses=3, glimpse_size=4, depth=2, glimpse_hidden=16,
                location_hidden=8, hidden_size=16, std=0.2, reinforce_weight=1.0, detach_policy=False,
                locator_hidden=0, clamp=False)
    args.update(kw)
    return RAM(**args)


def batch(n=8, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 12, 12, generator=g), torch.randint(0, k, (n,), generator=g)


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {name: (p.grad is not None and p.grad.abs().sum().item() > 0) for name, p in model.named_parameters()}


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_gradient_routing(core):
    torch.manual_seed(0)
    model = small(core=core)
    x, y = batch()
    run = model.rollout(x)
    terms = model.episode_losses(run, y)

    ce = grads(model, terms["ce"])  # the classifier's loss: sampled locations are constants
    assert not ce["locator.weight"] and not ce["locator.bias"]
    assert not ce["baseline.weight"]
    assert ce["classifier.weight"] and ce["core.weight_hh"] and ce["glimpse_net.what.weight"]

    run = model.rollout(x)
    pg = grads(model, model.episode_losses(run, y)["reinforce"])  # REINFORCE: policy, and through h_t the core
    assert pg["locator.weight"] and pg["locator.bias"]
    assert pg["core.weight_hh"] and pg["core.weight_ih"] and pg["glimpse_net.what.weight"]
    assert not pg["baseline.weight"] and not pg["classifier.weight"]  # advantage and reward are constants

    run = model.rollout(x)
    bl = grads(model, model.episode_losses(run, y)["baseline"])  # fitting the baseline moves only the baseline
    assert bl["baseline.weight"]
    assert not any(v for k, v in bl.items() if not k.startswith("baseline."))


def test_log_prob_is_of_the_location_used_and_no_location_after_the_last_glimpse():
    torch.manual_seed(0)
    model = small(std=0.5)
    x, y = batch()
    calls = []
    model.locator.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    run = model.rollout(x, keep_glimpses=True)
    # l_0..l_{T-1} chosen one at a time, then their log pi from the same T states at once; nothing after glimpse T
    assert calls == [(8, 16)] * model.hparams.glimpses + [(8, model.hparams.glimpses, 16)]
    assert run.log_pi.shape == run.baselines.shape == (8, 3)
    expected = torch.distributions.Normal(run.means, 0.5).log_prob(run.locations).sum(-1)
    assert torch.allclose(run.log_pi, expected, atol=1e-5)
    # the locations in the log-prob are exactly where the sensor looked (no clamping in between)
    assert run.locations.abs().max() > 0.5
    for t in range(3):
        assert torch.allclose(run.glimpses[:, t], glimpse(x, run.locations[:, t], 4, 2, 2.0))


def test_baseline_of_an_action_does_not_depend_on_the_action():
    torch.manual_seed(0)
    model = small()
    x, _ = batch()
    locs = torch.rand(8, 3, 2) * 2 - 1
    moved = locs.clone()
    moved[:, 1] = -moved[:, 1]  # change only l_1
    a, b = model.rollout(x, locations=locs), model.rollout(x, locations=moved)
    assert torch.equal(a.baselines[:, :2], b.baselines[:, :2])  # b(h_0), b(h_1) judge l_0, l_1: unchanged
    assert not torch.allclose(a.baselines[:, 2], b.baselines[:, 2])  # b(h_2) has seen the moved glimpse


def test_reinforce_term_value_and_reward():
    torch.manual_seed(0)
    model = small()
    x, y = batch()
    run = model.rollout(x)
    terms = model.episode_losses(run, y)
    r = (run.logits[:, -1].argmax(-1) == y).float()
    assert torch.allclose(terms["reinforce"], -(run.log_pi * (r[:, None] - run.baselines)).sum(1).mean())
    assert torch.allclose(terms["baseline"], F.mse_loss(run.baselines, r[:, None].expand(-1, 3)))
    assert torch.allclose(terms["ce"], F.cross_entropy(run.logits[:, -1], y))
    prob = small(reward="prob")
    prob.load_state_dict(model.state_dict())
    p = run.logits[:, -1].softmax(-1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(prob.reward(run.logits[:, -1], y), p)


def test_policy_math_float32_under_autocast_and_reproducible():
    model = small()
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        run = model.rollout(x)
        terms = model.episode_losses(run, y)
    assert run.log_pi.dtype == run.means.dtype == run.baselines.dtype == torch.float32
    assert all(torch.isfinite(v) for v in terms.values())
    torch.manual_seed(3)
    first = model.rollout(x).locations
    torch.manual_seed(3)
    assert torch.equal(first, model.rollout(x).locations)
    greedy = model.rollout(x, sample=False)
    assert torch.equal(greedy.locations, greedy.means)


def test_validation():
    with pytest.raises(ValueError, match="--glimpse_size <= 12"):
        small(glimpse_size=13)
    with pytest.raises(ValueError, match="--core"):
        small(core="gru")
    with pytest.raises(ValueError, match="--std"):
        small(std=0.0)


def test_attention_shapes():
    model = small(num_classes=3, depth=3, scale=1.5)
    x, y = batch()
    att = model.attention((x, y))
    assert att.probs.shape == (8, 3, 3) and torch.allclose(att.probs.sum(-1), torch.ones(8, 3))
    assert att.boxes.shape == (8, 3, 3, 4) and att.views.shape == (8, 3, 1, 4, 4)
    # every scale's box is centered on the greedy location and grows by the scale factor
    center = (att.boxes[..., :2] + att.boxes[..., 2:]) / 2
    assert torch.allclose(center[:, :, 0], center[:, :, 2], atol=1e-6)
    width = att.boxes[..., 2] - att.boxes[..., 0]
    assert torch.allclose(width[..., 1] / width[..., 0], torch.full((8, 3), 1.5))


# --- REINFORCE learns where to look ---------------------------------------------------------------
def toy(n, gen):
    """16x16 noise; the label (0/1) is a 4x4 block of 0s or 1s at a fixed place, pixels rows 3..6, cols 10..13."""
    x = torch.rand(n, 1, 16, 16, generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    x[:, 0, 3:7, 10:14] = y.float()[:, None, None]
    return x, y


class RandomLocations(RAM):
    """The same model looking at uniformly random places (train and eval)."""

    def act(self, mean, sample):
        return torch.rand_like(mean) * 2 - 1


def train_toy(model, steps, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        x, y = toy(64, gen)
        loss = sum(model.episode_losses(model.rollout(x), y).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = toy(1000, torch.Generator().manual_seed(999))
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item(), model.rollout(x, sample=False).locations


@pytest.mark.slow
@pytest.mark.parametrize("setting", [
    dict(reinforce_weight=1.0, detach_policy=False, locator_hidden=0, clamp=False),  # the paper's
    dict(),  # the defaults: detached policy with a hidden layer, clamped locations, weight 0.01
])
def test_reinforce_learns_where_to_look(setting):
    kw = dict(num_classes=2, image_size=(16, 16), glimpses=2, glimpse_size=4, depth=1, glimpse_hidden=32,
              location_hidden=16, hidden_size=32, std=0.3)
    torch.manual_seed(0)
    learned_acc, locs = train_toy(RAM(**setting, **kw), 150, seed=0)
    torch.manual_seed(0)
    random_acc, _ = train_toy(RandomLocations(reinforce_weight=0.0, **kw), 150, seed=0)
    assert learned_acc > 0.9, (learned_acc, random_acc)
    assert learned_acc > random_acc + 0.15, (learned_acc, random_acc)
    # the block's center is pixel point (12, 5): (x, y) = (0.5, -0.375); some glimpse goes there
    target = torch.tensor([0.5, -0.375])
    assert (locs - target).norm(dim=-1).min(dim=1).values.median() < 0.25


# --- Lightning and the CLI ------------------------------------------------------------------------
def test_validation_logs_greedy_mc_and_per_step_accuracy(tmp_path):
    from datamodules.cluttered_mnist import ClutteredMNIST

    dm = ClutteredMNIST(variant="translated", canvas_size=28, train_size=8, val_size=16, batch_size=8)
    model = RAM(glimpses=3, mc_samples=2, **{k: v for k, v in dm.model_kwargs().items()})
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    m = trainer.callback_metrics
    for key in ("val/acc", "val/acc_mc", "val/acc_t1", "val/acc_t2", "val/acc_t3", "val/ce", "val/reinforce",
                "val/baseline", "train/reward"):
        assert key in m and math.isfinite(float(m[key])), key
    assert torch.isclose(m["val/acc"], m["val/acc_t3"])  # the final step's greedy accuracy is val/acc


def test_cli_fast_dev_run(tmp_path):
    summary = experiment.fit({"model": "ram", "data": "cluttered_mnist", "variant": "translated", "canvas_size": 28,
                              "fast_dev_run": 1, "batch_size": 4, "mc_samples": 2, "logger": "none",
                              "default_root_dir": str(tmp_path), "enable_progress_bar": False})
    assert summary["run_dir"]
    with pytest.raises(experiment.UserError, match="--glimpse_size"):
        experiment.fit({"model": "ram", "data": "cluttered_mnist", "variant": "translated", "canvas_size": 28,
                        "glimpse_size": 40, "fast_dev_run": 1, "logger": "none", "default_root_dir": str(tmp_path)})


# --- the choices issue 17 made flags: clamping, random first location, locator depth, detaching, inputs -------
def test_clamped_locations_are_where_the_sensor_looked_and_log_pi_is_their_censored_probability():
    torch.manual_seed(0)
    model = small(std=2.0, clamp=True)  # a wide policy: many draws land past an edge
    x, _ = batch()
    run = model.rollout(x, keep_glimpses=True)
    assert run.locations.abs().max() == 1.0 and (run.locations.abs() == 1.0).any()
    for t in range(3):
        assert torch.allclose(run.glimpses[:, t], glimpse(x, run.locations[:, t], 4, 2, 2.0))
    # hand-computed: mean (0.5, -0.2), std 2; x on the +1 edge has P(draw >= 1) = Phi((0.5 - 1) / 2),
    # y = 0.3 inside has the Gaussian density
    mean, loc = torch.tensor([[0.5, -0.2]]), torch.tensor([[1.0, 0.3]])
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = normal.cdf(torch.tensor(-0.25)).log() + torch.distributions.Normal(-0.2, 2.0).log_prob(torch.tensor(0.3))
    assert torch.allclose(model.log_prob(loc, mean), expected[None], atol=1e-6)
    low = normal.cdf(torch.tensor((-1 - 0.5) / 2)).log() + torch.distributions.Normal(-0.2, 2.0).log_prob(torch.tensor(-1.0))
    assert torch.allclose(model.log_prob(torch.tensor([[-1.0, -1.0]]), mean),
                          (low - torch.distributions.Normal(-0.2, 2.0).log_prob(torch.tensor(-1.0))
                           + normal.cdf(torch.tensor((-1 + 0.2) / 2)).log())[None], atol=1e-6)


def test_clamped_policy_score_has_zero_mean_so_reinforce_stays_unbiased():
    # E[d log pi(l) / d mean] = 0 holds only for the true probability of the location used: the censored
    # one does; the Gaussian density evaluated at the clamped location (the common shortcut) does not
    torch.manual_seed(0)
    model = small(std=0.5, clamp=True)
    mean = torch.full((200_000, 2), 0.8, requires_grad=True)
    loc = model.act(mean, sample=True)
    model.log_prob(loc, mean).sum().backward()
    score = mean.grad.mean(0)
    assert score.abs().max() < 0.03, score
    mean.grad = None
    naive = small(std=0.5, clamp=False)
    naive.log_prob(loc, mean).sum().backward()
    assert mean.grad.mean(0).abs().min() > 0.3, mean.grad.mean(0)


def test_random_first_location_is_uniform_gets_no_policy_gradient_and_is_the_center_when_greedy():
    torch.manual_seed(0)
    model = small(first_location="random", glimpses=1)
    x, y = batch(n=512)
    run = model.rollout(x)
    assert torch.equal(run.log_pi, torch.zeros(512, 1))
    l0 = run.locations[:, 0]
    assert l0.abs().max() <= 1 and (l0.std(0) - 1 / math.sqrt(3)).abs().max() < 0.05  # U[-1, 1]: std 1/sqrt(3)
    reinforce = model.episode_losses(run, y)["reinforce"]
    assert reinforce.item() == 0 and not reinforce.requires_grad  # one glimpse: l_0 is the only action
    greedy = model.rollout(x[:4], sample=False)
    assert torch.equal(greedy.locations[:, 0], torch.zeros(4, 2))
    later = small(first_location="random").rollout(x[:4])
    assert (later.log_pi[:, 0] == 0).all() and (later.log_pi[:, 1:] != 0).all()


def test_random_location_policy_looks_at_uniform_places_in_evaluation_too_and_learns_no_policy():
    torch.manual_seed(0)
    model = small(location_policy="random", glimpses=3)
    x, y = batch(n=512)
    for sample in (True, False):  # the baseline is random in training and in (greedy) evaluation alike
        run = model.rollout(x, sample=sample)
        locs = run.locations.reshape(-1, 2)
        assert locs.abs().max() <= 1 and (locs.std(0) - 1 / math.sqrt(3)).abs().max() < 0.05
        assert torch.equal(run.log_pi, torch.zeros(512, 3))
    reinforce = model.episode_losses(model.rollout(x), y)["reinforce"]
    assert reinforce.item() == 0 and not reinforce.requires_grad
    ce = grads(model, model.episode_losses(model.rollout(x), y)["ce"])
    assert ce["core.weight_hh"] and not any(v for k, v in ce.items() if k.startswith("locator."))


def test_locator_hidden_layer_and_detached_policy_route_reinforce_to_the_locator_only():
    torch.manual_seed(0)
    model = small(locator_hidden=6, detach_policy=True)
    assert model.locator[0].out_features == 6
    x, y = batch()
    pg = grads(model, model.episode_losses(model.rollout(x), y)["reinforce"])
    assert pg["locator.0.weight"] and pg["locator.2.weight"]
    assert not any(v for k, v in pg.items() if not k.startswith("locator."))
    ce = grads(model, model.episode_losses(model.rollout(x), y)["ce"])
    assert ce["core.weight_hh"] and not ce["locator.0.weight"]


def test_inputs_are_normalized_before_the_sensor():
    model = small(input_mean=0.25, input_std=0.5)
    x, _ = batch()
    locs = torch.rand(8, 3, 2) * 2 - 1
    run = model.rollout(x, locations=locs, keep_glimpses=True)
    assert torch.allclose(run.glimpses[:, 1], glimpse((x - 0.25) / 0.5, locs[:, 1], 4, 2, 2.0))
    with pytest.raises(ValueError, match="--input_std"):
        small(input_std=0.0)
    with pytest.raises(ValueError, match="--first_location"):
        small(first_location="fixed")


def test_learning_rate_decays_linearly_to_zero_over_the_given_steps():
    model = small(lr=0.01, lr_decay=True)
    conf = model.optimizer_for(10)
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.01 * (1 - k / 10) for k in range(10)])
    assert isinstance(small(lr_decay=False).optimizer_for(10), torch.optim.Optimizer)
