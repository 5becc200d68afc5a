import math

import pytest
import torch
import zuko
from torch import Tensor
from torch.autograd.functional import jacobian


from attention_lightning.nn.partial_vae import FeatureDecoder, FlowEncoder, PartialVAE
from attention_lightning.nn.pham_blocks import information_gain


def rough_flow(latent: int = 5, context: int = 3, transforms: int = 2) -> FlowEncoder:
    """A flow with scaled-up weights so the splines are far from the identity."""
    enc = FlowEncoder(hidden=8, latent=latent, context=context, transforms=transforms, bins=5, flow_hidden=(16, 16))
    with torch.no_grad():
        for p in enc.flow.parameters():
            p.mul_(3.0)
    return enc


def test_flow_log_det_equals_autograd_jacobian():
    enc = rough_flow()
    ctx = torch.randn(3)
    eps = torch.randn(5)
    z, ladj = enc.transform(eps, ctx)
    jac = jacobian(lambda e: enc.transform(e, ctx)[0], eps)  # (5, 5)
    sign, logabs = torch.linalg.slogdet(jac.double())
    assert sign.item() > 0  # monotonic splines: an orientation-preserving map
    assert ladj.item() == pytest.approx(logabs.item(), abs=1e-4)
    off = jac - torch.diag(torch.diagonal(jac))
    assert off.abs().max() > 1e-3  # the dimensions do interact: the check above is not about a diagonal map


def test_every_flow_layer_is_autoregressive_with_no_leak_across_dimensions():
    enc = rough_flow(latent=6, transforms=3)
    ctx = torch.randn(3)
    x = torch.randn(6)
    layers = list(enc.flow.transform.transforms)
    assert len(layers) == 3
    for layer in layers:
        jac = jacobian(lambda v: layer(ctx)(v), x)  # (6, 6): d out_i / d in_j
        order = layer.order
        allowed = (order[None, :] < order[:, None]) | torch.eye(6, dtype=torch.bool)  # j may feed i if earlier
        assert jac[~allowed].abs().max().item() == 0.0, "an output depends on a later dimension"
        assert jac[allowed & ~torch.eye(6, dtype=torch.bool)].abs().max().item() > 1e-4  # and earlier ones do feed it
        # triangular once dimensions are sorted by the layer's order
        perm = torch.argsort(order)
        assert torch.equal(jac[perm][:, perm].triu(1), torch.zeros(6, 6))


def test_flow_equals_zuko_nsf_with_the_same_weights_values_and_gradients():
    # our spline takes the bin softmax bins-first (faster on CPU); the flow must stay zuko's NSF: same
    # state_dict keys, and the same z, log-det and gradients up to rounding (float64 here), splines far from identity
    enc = rough_flow(latent=6, context=3, transforms=3).double()
    ref = zuko.flows.NSF(6, context=3, transforms=3, bins=5, hidden_features=(16, 16)).double()
    assert set(ref.state_dict()) == set(enc.flow.state_dict())
    ref.load_state_dict(enc.flow.state_dict())
    ctx, eps = torch.randn(64, 3).double(), 2.5 * torch.randn(64, 6).double()  # some beyond the spline's [-5, 5]
    outs = []
    for flow in (enc.flow, ref):
        x = eps.clone().requires_grad_(True)
        z, ladj = flow.transform(ctx).call_and_ladj(x)
        (z.sin().sum() + ladj.sum()).backward()
        outs.append((z.detach(), ladj.detach(), x.grad, [q.grad.clone() for q in flow.parameters()]))
    (z, ladj, gx, gp), (z_ref, ladj_ref, gx_ref, gp_ref) = outs
    assert (z - eps).abs().max() > 0.5 and ladj.abs().max() > 1  # the splines do bend
    torch.testing.assert_close(z, z_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ladj, ladj_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-10)
    for g, g_ref in zip(gp, gp_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9)


def test_spline_gives_zuko_s_values_bit_for_bit_and_its_gradients_in_float32():
    # the spline's own call_and_ladj keeps zuko's formulas and their order of operations (shared subexpressions
    # computed once, knot pairs gathered along the knots' dimension): identical float32 values; the gradients
    # of a shared subexpression add its uses' contributions in another order, so they agree to rounding
    from zuko.transforms import MonotonicRQSTransform
    from attention_lightning.nn.partial_vae import Spline

    g = torch.Generator().manual_seed(2)
    w, h, d = (2 * torch.randn(7, 1, 9, k, generator=g) for k in (5, 5, 4))  # (B, S, Z, bins) and bins - 1
    x = 3 * torch.randn(7, 1, 9, generator=g)                                # some beyond the bound 5
    assert (x.abs() > 5).any()
    outs = []
    for call in (Spline.call_and_ladj, MonotonicRQSTransform.call_and_ladj):
        leaves = [t.clone().requires_grad_() for t in (w, h, d, x)]
        y, ladj = call(Spline(*leaves[:3], slope=1e-3), leaves[3])
        (y.sin().sum() + ladj.sum()).backward()
        outs.append([y, ladj] + [t.grad for t in leaves])
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    for ours, zukos in zip(outs[0][2:], outs[1][2:]):
        torch.testing.assert_close(ours, zukos, rtol=1e-6, atol=1e-6)


def test_masks_formed_once_give_the_same_flow_and_gradients_and_are_dropped_on_exit():
    enc = rough_flow(latent=6, context=3, transforms=2)
    ctx, eps = torch.randn(8, 3), torch.randn(8, 6)

    def run() -> tuple[Tensor, Tensor, list[Tensor]]:
        enc.zero_grad()
        z, ladj = enc.transform(eps, ctx)
        z2, _ = enc.transform(eps + 1, ctx)  # two calls inside one block share the masked weights
        (z.sum() + ladj.sum() + z2.pow(2).sum()).backward()
        return z.detach(), ladj.detach(), [p.grad.clone() for p in enc.flow.parameters()]

    plain = run()
    with enc.masks_applied():
        once = run()
    torch.testing.assert_close(once[0], plain[0], rtol=0, atol=0)
    torch.testing.assert_close(once[1], plain[1], rtol=0, atol=0)
    for g, g_ref in zip(once[2], plain[2]):
        torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-6)
    # after the block the layers form their masked weights afresh: a changed weight shows
    with torch.no_grad():
        next(enc.flow.parameters()).add_(1.0)
    assert not torch.equal(enc.transform(eps, ctx)[0], plain[0])


def test_encoder_density_is_base_gaussian_minus_log_det():
    enc = rough_flow()
    h = torch.randn(4, 8)
    torch.manual_seed(1)
    z, log_q = enc(h, samples=3)
    assert z.shape == (4, 3, 5) and log_q.shape == (4, 3)
    torch.manual_seed(1)
    ctx, mu, log_var = enc.net(h).split([3, 5, 5], dim=-1)
    noise = torch.randn(4, 3, 5)
    std = (0.5 * log_var.clamp(-12, 8)).exp()[:, None]
    eps = mu[:, None] + std * noise
    z2, ladj = enc.transform(eps, ctx[:, None].expand(-1, 3, -1))
    expected = torch.distributions.Normal(mu[:, None], std).log_prob(eps).sum(-1) - ladj
    torch.testing.assert_close(z, z2)
    torch.testing.assert_close(log_q, expected, rtol=1e-5, atol=1e-4)


def test_flow_densities_stay_float32_under_autocast():
    vae = PartialVAE(hidden=8, latent=4, features=6, grid=(3, 3), transforms=2, bins=5, flow_hidden=(16,),
                     decoder_channels=8, decoder_layers=1)
    h = torch.randn(2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        synth, z, log_q = vae(h, samples=2)
        nll, kl = vae.negative_elbo(synth, z, log_q, torch.randn(2, 1, 6), torch.tensor([[0], [4]]))
    assert z.dtype == log_q.dtype == nll.dtype == kl.dtype == torch.float32
    assert synth.shape == (2, 2, 9, 6)


def test_decoder_synthesizes_every_cell():
    dec = FeatureDecoder(latent=4, features=6, grid=(3, 5), channels=8, layers=2)
    assert dec(torch.randn(2, 7, 4)).shape == (2, 7, 15, 6)


def test_likelihood_counts_observed_cells_only_with_hand_computed_value():
    vae = PartialVAE(hidden=8, latent=4, features=6, grid=(3, 3), transforms=1, bins=5, flow_hidden=(16,),
                     decoder_channels=8, decoder_layers=1)
    b, s, n, f = 2, 3, 9, 6
    synth = torch.zeros(b, s, n, f)
    cells = torch.tensor([[1, 5], [0, 8]])
    seen = torch.ones(b, 2, f)
    z = torch.zeros(b, s, 4)
    log_q = torch.zeros(b, s)
    nll, kl = vae.negative_elbo(synth, z, log_q, seen, cells)
    # log-variance 0: each observed value contributes 0.5 * (1 + log 2 pi); 2 cells x 6 features
    torch.testing.assert_close(nll, torch.full((b,), 12 * 0.5 * (1 + math.log(2 * math.pi))))
    torch.testing.assert_close(kl, torch.full((b,), 0.5 * 4 * math.log(2 * math.pi)))  # -log N(0; 0, I) in 4-D
    unobserved = synth.clone()
    unobserved[0, :, 2] = 50.0   # a cell image 0 has not seen
    assert torch.equal(vae.negative_elbo(unobserved, z, log_q, seen, cells)[0], nll)
    observed = synth.clone()
    observed[0, :, 5] = 50.0     # a cell image 0 has seen
    changed = vae.negative_elbo(observed, z, log_q, seen, cells)[0]
    assert changed[0] > nll[0] and changed[1] == nll[1]


def test_information_gain_picks_the_informative_cell_in_a_known_toy():
    prior = torch.zeros(1, 2)  # p(y | h_t) = (0.5, 0.5)
    p = torch.tensor([
        [[0.5, 0.5], [0.9, 0.1], [0.99, 0.01], [1.0, 0.0]],   # z sample 1: cells 0..3
        [[0.5, 0.5], [0.1, 0.9], [0.01, 0.99], [0.5, 0.5]],   # z sample 2
    ])[None]  # (1, S=2, N=4, K=2)
    logits = p.clamp_min(1e-12).log()
    none = torch.zeros(1, 4, dtype=torch.bool)
    eig = information_gain(logits, prior, none)

    def kl(q):  # KL[q || uniform]
        return sum(x * math.log(x / 0.5) for x in q if x > 0)

    expected = [0.0, kl([0.9, 0.1]), kl([0.99, 0.01]), 0.5 * kl([1.0, 0.0])]
    torch.testing.assert_close(eig[0], torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert eig.argmax(-1).item() == 2
    visited = torch.tensor([[False, False, True, False]])
    masked = information_gain(logits, prior, visited)
    assert masked[0, 2] == float("-inf") and masked.argmax(-1).item() == 1


def test_information_gain_of_a_batch_equals_each_row_alone():
    # rows with their own priors: a layout slip (classes, batch or samples mixed up) changes the values
    g = torch.Generator().manual_seed(3)
    logits, prior = torch.randn(3, 4, 5, 6, generator=g), torch.randn(3, 6, generator=g)  # (B, S, N, K), (B, K)
    eig = information_gain(logits, prior, torch.zeros(3, 5, dtype=torch.bool))
    for i in range(3):
        ahead = torch.distributions.Categorical(logits=logits[i])          # batch (S, N)
        now = torch.distributions.Categorical(logits=prior[i])
        expected = torch.distributions.kl_divergence(ahead, now).mean(0)   # (N,)
        torch.testing.assert_close(eig[i], expected, atol=1e-5, rtol=1e-5)


def test_encoder_with_given_noise_reproduces_its_own_draw():
    enc = rough_flow()
    h = torch.randn(4, 8)
    torch.manual_seed(3)
    z, log_q = enc(h, samples=2)
    torch.manual_seed(3)
    noise = enc.noise(h, 2)  # (4, 2, 5): the draw forward would make
    z2, log_q2 = enc(h, 2, noise)
    assert torch.equal(z, z2) and torch.equal(log_q, log_q2)
    with pytest.raises(ValueError, match=r"\(B, S, Z\)"):
        enc(h, 3, noise)


def test_elbo_of_all_steps_in_one_pass_equals_the_per_step_sum():
    # the reference: what a rollout did before, one flow/decoder call and one negative_elbo per step t, with the
    # likelihood over the cells seen up to and including step t; the last step draws 1 z sample, the others 2
    torch.manual_seed(0)
    vae = PartialVAE(hidden=8, latent=4, features=6, grid=(3, 3), transforms=2, bins=5, flow_hidden=(16,),
                     decoder_channels=8, decoder_layers=1)
    with torch.no_grad():
        vae.log_var.fill_(0.3)
    b, steps = 3, 4
    h = torch.randn(b, steps, 8, requires_grad=True)
    seen = torch.randn(b, steps, 6)
    cells = torch.stack([torch.randperm(9)[:steps] for _ in range(b)])  # (B, T) distinct cells per image
    noise = [torch.randn(b, 2 if t < steps - 1 else 1, 4) for t in range(steps)]

    nll, kl = vae.negative_elbo_steps(h, noise, seen, cells)
    (nll.sum() + kl.sum()).backward()
    grads = [h.grad.clone()] + [p.grad.clone() for p in vae.parameters()]
    h.grad = None
    vae.zero_grad()

    ref_nll = ref_kl = torch.zeros(b)
    for t in range(steps):
        synth, z, log_q = vae(h[:, t], noise[t].shape[1], noise[t])
        nll_t, kl_t = vae.negative_elbo(synth, z, log_q, seen[:, :t + 1], cells[:, :t + 1])
        ref_nll, ref_kl = ref_nll + nll_t, ref_kl + kl_t
    (ref_nll.sum() + ref_kl.sum()).backward()
    ref_grads = [h.grad] + [p.grad for p in vae.parameters()]

    torch.testing.assert_close(nll, ref_nll, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kl, ref_kl, rtol=1e-5, atol=1e-4)
    assert nll.shape == kl.shape == (b,)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    # not vacuous: leaving out each step's own cell (an off-by-one in the observed mask) changes the sum
    shifted = torch.zeros(b)
    for t in range(1, steps):
        shifted = shifted + vae.negative_elbo(*vae(h[:, t], noise[t].shape[1], noise[t]), seen[:, :t], cells[:, :t])[0]
    assert not torch.allclose(nll, shifted, rtol=1e-3)


def test_decoder_lays_out_cells_row_major_with_features_last():
    # a seed whose map holds 100*channel + 10*row + col (whatever z is) and a body that passes it through (its
    # last layer, a 1x1 conv, the identity): output cell n must be row n // gw, column n % gw, with the channels
    # as its features, for any leading dims
    dec = FeatureDecoder(latent=4, features=6, grid=(3, 5), channels=6, layers=0)
    identity = torch.nn.Conv2d(6, 6, 1)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(6)[:, :, None, None])
        identity.bias.zero_()
    dec.body = torch.nn.Sequential(identity)
    c, r, q = torch.meshgrid(torch.arange(6), torch.arange(3), torch.arange(5), indexing="ij")
    with torch.no_grad():
        dec.seed.weight.zero_()
        dec.seed.bias.copy_((100 * c + 10 * r + q).flatten().float())
    out = dec(torch.randn(2, 7, 4))  # (2, 7, 15, 6)
    assert out.shape == (2, 7, 15, 6)
    n, f = torch.arange(15)[:, None], torch.arange(6)[None, :]
    expected = (100 * f + 10 * (n // 5) + n % 5).float()  # (N, F)
    assert torch.equal(out, expected.expand(2, 7, 15, 6))
    # only some cells: (R, S, t, F) in the order asked
    cells = torch.tensor([[14, 0], [5, 6]])
    assert torch.equal(dec(torch.randn(2, 3, 4), cells), expected[cells][:, None].expand(2, 3, 2, 6))


