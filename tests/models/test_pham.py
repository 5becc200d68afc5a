from pathlib import Path

import pytest
import torch

from attention_lightning.run import commands as experiment
from attention_lightning.models.pham import PHAM
from attention_lightning.models.base import ConfigError
from attention_lightning.nn.grid_glimpse import all_glimpses, glimpses_at

SMALL = dict(feature_size=16, hidden_size=32, latent_size=8, glimpse_channels=(8, 16), flow_transforms=2,
             flow_hidden=(16, 16), decoder_channels=8, decoder_layers=1, eig_samples=3)


def make(phase=1, init_from=None, **kw) -> PHAM:
    args = dict(num_classes=5, in_channels=3, image_size=32, **SMALL)
    args.update(kw)
    model = PHAM(phase=phase, init_from=init_from, **args)
    model.log = lambda *a, **k: None  # no Trainer attached in unit tests
    return model


def save_weights(model: PHAM, path: Path) -> str:
    torch.save({"state_dict": model.state_dict()}, path)
    return str(path)


@pytest.mark.parametrize("side,glimpse", [(32, 8), (64, 16)])
def test_shapes_for_32_and_64_pixel_grids(side, glimpse):
    model = make(image_size=side).eval()
    images = torch.randn(3, 3, side, side)
    att = model.attention((images, torch.tensor([0, 1, 2])))
    assert att.probs.shape == (3, 7, 5) and att.maps.shape == (3, 7, 7, 7)
    assert att.boxes.shape == (3, 7, 1, 4) and att.views.shape == (3, 7, 3, glimpse, glimpse)
    torch.testing.assert_close(att.probs.sum(-1), torch.ones(3, 7))
    run = model.rollout(images, "eig", 3, elbo=True)
    assert run.logits.shape == (3, 7, 5) and run.cells.shape == (3, 7) and run.nll.shape == (3,)
    # each view is the glimpse of the cell whose box is reported for that step
    match = (att.boxes[:, :, 0, None, :] - model.cell_boxes[None, None]).abs().sum(-1) < 1e-6  # (B, T, N)
    assert match.sum(-1).eq(1).all()
    cells = match.float().argmax(-1)  # (B, T)
    for t in range(7):
        torch.testing.assert_close(att.views[:, t], glimpses_at(images, cells[:, t], model.grid), rtol=0, atol=0)


@pytest.mark.parametrize("policy", ["eig", "random"])
def test_visited_cells_never_repeat(policy):
    model = make(image_size=16, glimpse_size=4, glimpse_stride=4, steps=16).eval()  # a 4x4 grid, all 16 cells
    run = model.rollout(torch.randn(6, 3, 16, 16), policy, samples=2)
    assert torch.equal(run.cells.sort(-1).values, torch.arange(16).expand(6, 16))


def test_steps_beyond_the_grid_are_refused():
    with pytest.raises(ValueError, match="--steps <= 16"):
        make(image_size=16, glimpse_size=4, glimpse_stride=4, steps=17)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_glimpse_features_alone_equal_those_inside_the_whole_grid(mode):
    model = make()
    model.train(mode == "train")
    images = torch.randn(4, 3, 32, 32)
    cells = torch.tensor([3, 17, 24, 48])
    whole = model.features(all_glimpses(images, model.grid), model.centers)  # (B, N, F): all 49 cells at once
    alone = model.features(glimpses_at(images, cells, model.grid), model.centers[cells])  # (B, F)
    torch.testing.assert_close(alone, whole[torch.arange(4), cells], rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_lookahead_is_deterministic_given_z_even_in_train_mode():
    model = make(classifier_dropout=0.9).train()
    h = torch.randn(4, 32)
    assert not torch.equal(model.classifier(h), model.classifier(h))  # dropout is active on the trained path...
    synth = model.vae.decoder(torch.randn(4, 3, 8))  # (B, S, N, F) from fixed z
    prior = torch.randn(4, 5)
    visited = torch.zeros(4, 49, dtype=torch.bool)
    visited[:, 10] = True
    a = model.lookahead(h, prior, synth, visited)
    b = model.lookahead(h, prior, synth, visited)
    assert torch.equal(a, b)  # ...but not in the lookahead
    assert (a[:, 10] == float("-inf")).all()


def test_batched_lookahead_equals_a_loop_over_cells_and_samples():
    model = make().eval()
    h, prior = torch.randn(2, 32), torch.randn(2, 5)
    synth = torch.randn(2, 3, 49, 16)
    visited = torch.zeros(2, 49, dtype=torch.bool)
    batched = model.lookahead(h, prior, synth, visited)
    looped = torch.zeros(2, 49)
    for k in range(49):
        for s in range(3):
            f = model.features.combine(synth[:, s, k], model.centers[k])
            p = model.classifier.linear(model.rnn(f, h)).log_softmax(-1)
            looped[:, k] += (p.exp() * (p - prior.log_softmax(-1))).sum(-1) / 3
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-5)


def test_eig_policy_attends_the_cell_whose_synthesized_features_are_informative():
    # toy: R adds the features to the state, so a synthesized feature of 0 leaves p(y | h) unchanged (EIG 0);
    # the decoder predicts 0 everywhere except one cell, which alone moves p(y) (EIG > 0) and must be chosen
    model = make().eval()
    informative = 30
    with torch.no_grad():
        model.features.where.weight.zero_()
        model.features.where.bias.zero_()  # combine(0, l) = LayerNorm(0) = 0 at every location

    class AddRecurrent(torch.nn.Module):
        hidden = 32

        def forward(self, f, h):
            return h + torch.nn.functional.pad(f, (0, 16))

    class OneCellDecoder(torch.nn.Module):
        def forward(self, z, cells=None):  # planning asks for every cell
            out = torch.zeros(*z.shape[:-1], 49, 16)
            out[..., informative, :8] = 3.0
            return out

    model.rnn, model.vae.decoder = AddRecurrent(), OneCellDecoder()
    images = torch.randn(6, 3, 32, 32)
    run = model.rollout(images, "eig", samples=2)
    fresh = run.cells[:, 0] != informative  # images whose random first glimpse left the informative cell unseen
    assert fresh.sum() >= 4
    assert (run.cells[fresh, 1] == informative).all()
    maps = run.maps[fresh, 1]  # the EIG map that chose step 2: positive only at the informative cell
    assert (maps[:, informative] > 1e-3).all()
    others = torch.ones(49, dtype=torch.bool)
    others[informative] = False
    assert maps[:, others].abs().max() < 1e-6


def test_phase_2_and_3_need_init_from():
    for phase in (2, 3):
        with pytest.raises(ValueError, match="--init_from"):
            make(phase=phase)
    with pytest.raises(ValueError, match="--phase=1, 2 or 3"):
        make(phase="all")
    with pytest.raises(ValueError, match="--phase=4 is not supported; use one of 1, 2, 3, all"):
        make(phase=4)


def test_init_from_with_other_sizes_names_the_fix(tmp_path):
    path = save_weights(make(hidden_size=64), tmp_path / "p1.ckpt")
    model = make(phase=2, init_from=path)
    with pytest.raises(ValueError, match="--hidden_size"):
        model.setup("fit")
    with pytest.raises(ConfigError, match="--init_from"):
        make(phase=2, init_from=str(tmp_path / "missing.ckpt")).setup("fit")


def test_decoder_width_defaults_to_the_features_and_phase_2_takes_any_phase_1_width(tmp_path):
    sizes = {k: v for k, v in SMALL.items() if k != "decoder_channels"}
    full, half = PHAM(**sizes), PHAM(**sizes, decoder_channels=8)  # feature_size 16: the default, a preset's half
    assert full.vae.decoder.channels == 16 and half.vae.decoder.channels == 8
    # phase 1 never trains the Partial VAE: phase 2 takes F, R, C from a phase-1 run of another decoder width
    path = save_weights(full, tmp_path / "phase1_full_width.ckpt")
    two = PHAM(**sizes, phase=2, init_from=path, decoder_channels=8)
    two.setup("fit")
    for k, v in full.state_dict().items():
        if not k.startswith("vae."):
            assert torch.equal(two.state_dict()[k], v), k
    # phase 3 continues phase 2's decoder, so a width mismatch is refused and named
    with pytest.raises(ConfigError, match="--decoder_channels"):
        PHAM(**sizes, phase=3, init_from=path, decoder_channels=8).setup("fit")
    PHAM(**sizes, phase=3, init_from=path).setup("fit")


def test_phase_2_leaves_f_r_c_bit_identical_and_in_eval_mode(tmp_path):
    first = make(classifier_dropout=0.5)
    path = save_weights(first, tmp_path / "phase1.ckpt")
    model = make(phase=2, init_from=path, classifier_dropout=0.5)
    model.setup("fit")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for k in before:
        if not k.startswith("vae."):
            assert torch.equal(before[k], first.state_dict()[k])
    model.train()
    assert model.training and not any(m.training for m in model.recognition())
    optimizer = model.configure_optimizers()
    assert all(not k.startswith(("features.", "rnn.", "classifier.")) for k, p in model.named_parameters()
               if any(p is q for g in optimizer.param_groups for q in g["params"]))
    batch = (torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,)))
    losses = []
    for _ in range(3):
        terms, _ = model.loss_terms(batch, "train")
        assert set(terms) == {"nll", "kl"}
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith(("features.", "rnn.", "classifier.")):
            assert torch.equal(after[k], v), k
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("vae."))
    assert losses[-1] < losses[0]


def test_phase_3_trains_everything_on_elbo_plus_weighted_cross_entropy(tmp_path):
    path = save_weights(make(), tmp_path / "phase2.ckpt")
    model = make(phase=3, init_from=path, ccebal=4.0)
    model.setup("fit")
    model.train()
    terms, logits = model.loss_terms((torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,))), "train")
    assert set(terms) == {"nll", "kl", "ccebal_ce"} and logits.shape == (4, 5)
    sum(terms.values()).backward()
    for module in (model.features, model.rnn, model.classifier, model.vae.encoder, model.vae.decoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_phase_all_lists_three_stages():
    assert PHAM.stages({"phase": "all"}) == [("phase1", {"phase": 1}), ("phase2", {"phase": 2}), ("phase3", {"phase": 3})]
    assert PHAM.stages({"phase": 2}) == PHAM.stages({}) == [("fit", {})]  # one run, as any model


@pytest.mark.slow
@pytest.mark.parametrize("data", ["cinic10", "tiny_imagenet"])
def test_phase_all_end_to_end_on_fixtures(tmp_path, data):
    from datamodules.tiny_datasets import make_cinic10, make_tiny_imagenet

    if data == "cinic10":
        data_dir = make_cinic10(tmp_path / "data", per_class=2)
    else:
        data_dir = make_tiny_imagenet(tmp_path / "data", n_classes=3, per_class=2)
    flags = dict(model="pham", data=data, data_dir=str(data_dir), phase="all", max_steps=1, limit_train_batches=1,
                 limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0, batch_size=4, logger="none",
                 default_root_dir=str(tmp_path / "runs"), enable_progress_bar=False, enable_model_summary=False,
                 **SMALL)
    summary = experiment.fit(flags)
    assert list(summary["stages"]) == ["phase1", "phase2", "phase3"]
    # only the last phase is tested (an earlier phase's test cost as much as the last one's)
    assert [("test" in s) for s in summary["stages"].values()] == [False, False, True]
    assert "test/acc_eig_t1" in summary["test"]
    previous = None
    for label, stage in summary["stages"].items():
        assert Path(stage["run_dir"]).parent.name == f"pham-{data}-{label}"
        ckpt = torch.load(stage["last_checkpoint"], map_location="cpu", weights_only=True)
        hp = ckpt["hyper_parameters"]
        assert hp["phase"] == int(label[-1]) and hp["init_from"] == previous
        previous = stage["best_checkpoint"]  # each phase starts from the previous one's best
    # phase 2 trained only the Partial VAE: its F, R, C equal phase 1's
    one, two = (torch.load(summary["stages"][k]["last_checkpoint"], weights_only=True)["state_dict"]
                for k in ("phase1", "phase2"))
    for k, v in one.items():
        if k.startswith(("features.", "rnn.", "classifier.")):
            assert torch.equal(two[k], v), k


def per_step_rollout(model: PHAM, images, policy: str, samples: int):
    """The reference: one flow/decoder call with gradients at every step, its z used both to plan the next
    glimpse and for that step's ELBO term over the cells seen so far (the rollout before batching over T)."""
    from attention_lightning.nn.grid_glimpse import glimpses_at as at
    from attention_lightning.nn.pham_blocks import random_scores

    b, n = images.shape[0], model.grid.cells
    h = images.new_zeros(b, model.rnn.hidden)
    visited = torch.zeros(b, n, dtype=torch.bool)
    logits, cells, seen, synth = [], [], [], None
    nll = kl = torch.zeros(b)
    for t in range(model.hparams.steps):
        if policy == "eig" and t > 0:
            with torch.no_grad():
                score = model.lookahead(h, logits[-1], synth, visited)
        else:
            score = random_scores(visited)
        cell = score.argmax(-1)
        visited = visited.scatter(1, cell[:, None], True)
        cells.append(cell)
        what = model.features.what(at(images, cell, model.grid))
        h = model.rnn(model.features.combine(what, model.centers[cell]), h)
        logits.append(model.classifier(h))
        plan_next = policy == "eig" and t < model.hparams.steps - 1
        synth, z, log_q = model.vae(h, samples if plan_next else 1)
        seen.append(what.detach())
        nll_t, kl_t = model.vae.negative_elbo(synth, z, log_q, torch.stack(seen, 1), torch.stack(cells, 1))
        nll, kl = nll + nll_t, kl + kl_t
    return torch.stack(logits, 1), torch.stack(cells, 1), nll, kl


@pytest.mark.parametrize("policy,samples", [("eig", 1), ("eig", 3), ("random", 1)])
def test_rollout_elbo_equals_the_per_step_reference_with_the_same_z(tmp_path, policy, samples):
    # the EIG rollout shares each step's flow/decoder pass between planning and the ELBO; the random rollout
    # computes the ELBO of all steps in one pass after the episode. With the same seed both must choose the
    # same cells and give the same ELBO and gradients as the per-step reference
    path = save_weights(make(), tmp_path / "phase2.ckpt")
    model = make(phase=3, init_from=path, classifier_dropout=0.3)
    model.setup("fit")
    model.train()  # dropout on: both draw from the RNG in the same order
    images = torch.randn(5, 3, 32, 32)
    torch.manual_seed(7)
    run = model.rollout(images, policy, samples, elbo=True)
    (run.nll.mean() + run.kl.mean() + run.logits.logsumexp(-1).mean()).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.manual_seed(7)
    logits, cells, nll, kl = per_step_rollout(model, images, policy, samples)
    (nll.mean() + kl.mean() + logits.logsumexp(-1).mean()).backward()
    assert torch.equal(run.cells, cells)
    torch.testing.assert_close(run.logits, logits)
    torch.testing.assert_close(run.nll, nll, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(run.kl, kl, rtol=1e-5, atol=1e-3)
    assert set(grads) == {k for k, p in model.named_parameters() if p.grad is not None}
    assert any(k.startswith("vae.encoder.flow") for k in grads) and any(k.startswith("rnn.") for k in grads)
    for k, p in model.named_parameters():
        if p.grad is not None:
            # the rollout's ELBO runs the decoder's last layer on the observed cells only (a sum in another order
            # than the full map's conv): float32 rounding, relative to the largest gradient (~50 in the glimpse CNN)
            torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=1e-6 * max(1.0, p.grad.abs().max().item()),
                                       msg=lambda m, k=k: f"{k}: {m}")


def test_validation_draws_fewer_z_samples_than_test_and_the_sanity_check_one(tmp_path):
    from types import SimpleNamespace

    path = save_weights(make(), tmp_path / "phase2.ckpt")
    model = make(phase=3, init_from=path, eig_samples=6, eig_samples_val=2).eval()
    calls = []
    rollout = model.rollout
    model.rollout = lambda images, policy, samples=1, elbo=False: calls.append((policy, samples)) or rollout(
        images, policy, samples, elbo)
    batch = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    with torch.no_grad():
        model.test_step(batch, 0)
        model.validation_step(batch, 0)
        model._trainer = SimpleNamespace(sanity_checking=True)
        model.validation_step(batch, 0)
    # the EIG policy with the paper's samples at test, fewer at validation, one in the sanity check; the random
    # policy beside it every time (it plans nothing, so its sample count is unused)
    assert [c for c in calls if c[0] == "eig"] == [("eig", 6), ("eig", 2), ("eig", 1)]
    assert sum(c[0] == "random" for c in calls) == 3
    with pytest.raises(ValueError, match="eig_samples_val"):
        make(eig_samples_val=0)
