"""PHAM's episode against a reference: same glimpses, losses and gradients.

``reference_rollout`` is the straightforward form of the episode: the decoder synthesizes every cell, its
last layer (a 1x1 conv) included, and the ELBO gathers the observed cells from that full map, in phase 3 at
each step from the same pass the lookahead reads; phase 2's ELBO runs once over B*T rows. ``PHAM.rollout``
runs the decoder's last layer on the observed cells only where gradients are taken; both must give the same
glimpses, logits, ELBO terms and parameter gradients on a fixed seed and batch. The episode runs in float64
(the flow stays float32, as always) so that the comparison sees the computation, not the float32 rounding of a
sum taken in another order (the last layer as a matrix product instead of a conv), which backward amplifies in
the phase-3 gradients of the glimpse CNN to a few 1e-6; phase 2 is also compared in float32.
"""
from __future__ import annotations

import pytest
import torch

from attention_lightning.models.pham import PHAM, Rollout
from attention_lightning.nn.grid_glimpse import glimpses_at
from attention_lightning.nn.partial_vae import LOG_2PI, FeatureDecoder, PartialVAE
from attention_lightning.nn.pham_blocks import random_scores

TOL = dict(rtol=1e-6, atol=1e-6)


def reference_decode(dec: FeatureDecoder, z: torch.Tensor) -> torch.Tensor:
    """Every cell's features (..., N, F): the seed, the whole conv body, the channels moved last."""
    lead, (gh, gw) = z.shape[:-1], dec.grid
    x = dec.seed(z.reshape(-1, z.shape[-1])).view(-1, dec.channels, gh, gw)
    x = dec.body(x.contiguous(memory_format=torch.channels_last))
    return x.flatten(2).transpose(1, 2).reshape(*lead, gh * gw, dec.features)


def reference_elbo(vae: PartialVAE, synth, z, log_q, seen, cells, observed=None):
    b, s, _, f = synth.shape
    guess = synth.gather(2, cells[:, None, :, None].expand(b, s, cells.shape[1], f)).float()
    per_value = (guess - seen.float()[:, None]).pow(2) * (-vae.log_var).exp() + vae.log_var + LOG_2PI
    if observed is not None:
        per_value = per_value * observed[:, None, :, None].float()
    nll = 0.5 * per_value.sum((-1, -2)).mean(1)
    kl = (log_q - (-0.5 * (LOG_2PI + z.float().pow(2)).sum(-1))).mean(1)
    return nll, kl


def reference_vae(vae: PartialVAE, h, samples, noise):
    z, log_q = vae.encoder(h, samples, noise)
    return reference_decode(vae.decoder, z.to(h.dtype)), z, log_q


def reference_elbo_steps(vae: PartialVAE, h, noise, seen, cells):
    """Runs of steps with the same sample count in one pass each, the full map gathered at the episode's cells."""
    b, steps = cells.shape
    nll = kl = h.new_zeros(b, dtype=torch.float32)
    start = 0
    while start < steps:
        s, end = noise[start].shape[1], start + 1
        while end < steps and noise[end].shape[1] == s:
            end += 1
        k = end - start
        synth, z, log_q = reference_vae(vae, h[:, start:end].reshape(b * k, -1), s,
                                        torch.stack(noise[start:end], 1).reshape(b * k, s, -1))
        observed = torch.arange(steps)[None, :] <= torch.arange(start, end)[:, None]
        nll_k, kl_k = reference_elbo(vae, synth, z, log_q, seen.repeat_interleave(k, 0),
                                     cells.repeat_interleave(k, 0), observed.repeat(b, 1))
        nll, kl = nll + nll_k.view(b, k).sum(1), kl + kl_k.view(b, k).sum(1)
        start = end
    return nll, kl


def reference_rollout(model: PHAM, images: torch.Tensor, policy: str, samples: int, elbo: bool) -> Rollout:
    b, n, steps = images.shape[0], model.grid.cells, model.hparams.steps
    h = images.new_zeros(b, model.rnn.hidden)
    visited = torch.zeros(b, n, dtype=torch.bool)
    logits, cells, maps, hs, noise, seen = [], [], [], [], [], []
    inline = policy == "eig" and elbo
    nll = kl = images.new_zeros(b, dtype=torch.float32) if inline else None
    synth = None
    for t in range(steps):
        if policy == "eig" and t > 0:
            with torch.no_grad():
                score = model.lookahead(h.detach(), logits[-1].detach(), synth.detach(), visited)
            maps.append(score.clamp_min(0).masked_fill(visited, 0))
        else:
            score = random_scores(visited)
            free = (~visited).float()
            maps.append(free / free.sum(-1, keepdim=True))
        cell = score.argmax(-1)
        visited = visited.scatter(1, cell[:, None], True)
        cells.append(cell)
        what = model.features.what(glimpses_at(images, cell, model.grid))
        h = model.rnn(model.features.combine(what, model.centers[cell]), h)
        logits.append(model.classifier(h))
        plan_next = policy == "eig" and t < steps - 1
        if not (elbo or plan_next):
            continue
        eps = model.vae.encoder.noise(h, samples if plan_next else 1)
        if elbo:
            seen.append(what.detach())
        if inline:
            synth, z, log_q = reference_vae(model.vae, h, eps.shape[1], eps)
            nll_t, kl_t = reference_elbo(model.vae, synth, z, log_q, torch.stack(seen, 1), torch.stack(cells, 1))
            nll, kl = nll + nll_t, kl + kl_t
        elif plan_next:
            with torch.no_grad():
                synth = reference_vae(model.vae, h.detach(), eps.shape[1], eps)[0]
        else:
            hs.append(h)
            noise.append(eps)
    cells_bt = torch.stack(cells, 1)
    if elbo and not inline:
        nll, kl = reference_elbo_steps(model.vae, torch.stack(hs, 1), noise, torch.stack(seen, 1), cells_bt)
    return Rollout(torch.stack(logits, 1), cells_bt, torch.stack(maps, 1), nll, kl)


def run_and_grads(model: PHAM, images, labels, rollout, **kw):
    """The rollout on a fixed seed, and the gradients of its loss for every parameter: cross-entropy, and NLL + KL
    per step and latent dimension, as the model's loss scales them."""
    torch.manual_seed(5)
    run = rollout(images, **kw)
    loss = torch.nn.functional.cross_entropy(run.logits[:, -1], labels)
    if run.nll is not None:
        loss = loss + (run.nll.mean() + run.kl.mean()) / (model.hparams.steps * model.vae.latent)
    model.zero_grad()
    loss.backward()
    return run, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def build(phase: int, tmp_path, dtype: torch.dtype = torch.float64, **sizes) -> PHAM:
    args = dict(num_classes=5, in_channels=3, image_size=32, feature_size=16, hidden_size=32, latent_size=8,
                glimpse_channels=(8, 16), flow_transforms=2, flow_hidden=(16, 16), eig_samples=3, **sizes)
    torch.manual_seed(0)
    first = PHAM(phase=1, **args)
    path = tmp_path / "phase1.pt"
    torch.save(first.state_dict(), path)
    model = PHAM(phase=phase, init_from=str(path), **args)
    model.load_previous_phase(str(path))
    with torch.no_grad():  # a decoder and likelihood that are not at their initial values
        for p in model.vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.to(dtype).vae.encoder.flow.float()  # the flow computes in float32 whatever the model's dtype
    return model.train()


@pytest.mark.parametrize("phase,policy,samples,dtype,sizes", [
    (2, "random", 1, torch.float32, dict(decoder_channels=8, decoder_layers=1)),
    (2, "random", 1, torch.float64, dict(decoder_channels=12, decoder_layers=2)),
    (3, "eig", 1, torch.float64, dict(decoder_channels=8, decoder_layers=1)),
    (3, "eig", 3, torch.float64, dict(decoder_channels=12, decoder_layers=2)),
])
def test_rollout_matches_the_full_map_reference(tmp_path, phase, policy, samples, dtype, sizes):
    model = build(phase, tmp_path, dtype, **sizes)
    g = torch.Generator().manual_seed(1)
    images, labels = torch.rand(4, 3, 32, 32, generator=g, dtype=dtype), torch.randint(0, 5, (4,), generator=g)
    run, grads = run_and_grads(model, images, labels, model.rollout, policy=policy, samples=samples, elbo=True)
    ref, ref_grads = run_and_grads(model, images, labels, lambda x, **kw: reference_rollout(model, x, **kw),
                                   policy=policy, samples=samples, elbo=True)
    assert torch.equal(run.cells, ref.cells)
    for name in ("logits", "maps", "nll", "kl"):
        torch.testing.assert_close(getattr(run, name), getattr(ref, name), **TOL)
    assert grads.keys() == ref_grads.keys()
    assert any(k.startswith("vae.decoder.body") for k in grads)  # the decoder's last layer gets its gradient
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")


def test_decoder_at_cells_equals_the_full_map_gathered():
    torch.manual_seed(0)
    dec = FeatureDecoder(latent=4, features=6, grid=(3, 5), channels=8, layers=2)
    z = torch.randn(3, 2, 4)
    cells = torch.tensor([[0, 14, 7], [3, 3, 1], [9, 10, 11]])  # (R, t), a repeat included
    full = reference_decode(dec, z)                             # (R, S, N, F)
    expected = full.gather(2, cells[:, None, :, None].expand(3, 2, 3, 6))
    torch.testing.assert_close(dec(z, cells), expected, **TOL)
    picked, every = dec.cells_and_map(z, cells)
    torch.testing.assert_close(picked, expected, **TOL)
    torch.testing.assert_close(every, full, **TOL)
    assert picked.requires_grad and not every.requires_grad
    with pytest.raises(ValueError, match=r"z \(R, S, Z\) and cells \(R, t\)"):
        dec(z, cells[:2])
