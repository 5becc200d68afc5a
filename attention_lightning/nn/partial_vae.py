"""PHAM's Partial VAE: q(z | h_t) by a conditional spline flow, a decoder of all grid cells' features,
and an ELBO whose likelihood covers the observed cells only (Rangrej & Clark, BMVC 2021, sec. 3).

S maps h_t to a Gaussian base N(mu, sigma) and a flow context c; a sample is
``z = T(eps; c), eps ~ N(mu, sigma)`` where T is zuko's conditional neural spline flow (monotonic
rational-quadratic splines, fully autoregressive) used in the sampling direction, so drawing z and its
density takes one pass: ``log q(z | h) = log N(eps; mu, sigma) - log |det dT/d eps|``. The prior is
N(0, I). D maps z to synthesized content features of every cell, (gh, gw) -> (N, F). The likelihood
is Gaussian with one learned log-variance, evaluated on the cells seen so far. Densities are computed
in float32 even under autocast.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
import zuko
from torch import Tensor
from zuko.transforms import MonotonicRQSTransform
from zuko.utils import broadcast

LOG_2PI = math.log(2 * math.pi)


def _float32(device_type: str):
    """A context that turns autocast off, so flow log-densities run in float32."""
    return torch.autocast(device_type=device_type, enabled=False)


class Spline(MonotonicRQSTransform):
    """zuko's monotonic rational-quadratic spline (Durkan et al., 2019) with its bin softmax taken bins-first.

    The knots are zuko's up to float rounding; only the layout differs: torch's softmax over a short last
    dimension (5 bins) is several times slower on CPU than over the leading one, and the flow takes it twice per
    layer on every (row, latent dimension). Arguments are zuko's: unconstrained ``widths`` and ``heights``
    (..., K), ``derivatives`` (..., K - 1), the (co)domain bound and the minimum slope.
    """

    def __init__(self, widths: Tensor, heights: Tensor, derivatives: Tensor, bound: float = 5.0,
                 slope: float = 1e-3, **kwargs) -> None:
        super(MonotonicRQSTransform, self).__init__(**kwargs)  # the knots below replace zuko's own set-up
        soft = -math.log(slope)  # each parameter is squashed into (-soft, soft) (derivatives) or half that (bins)

        def knots(u: Tensor) -> Tensor:
            """Knot positions (..., K + 1) from -bound to bound, spaced by the softmax of u (..., K)."""
            u = u / (1 + (2 * u / soft).abs())
            cum = u.movedim(-1, 0).softmax(0).cumsum(0)                       # (K, ...)
            cum = torch.cat([cum.new_zeros(1, *cum.shape[1:]), cum])           # (K + 1, ...)
            return (bound * (2 * cum - 1)).movedim(0, -1)                      # (..., K + 1)

        self.horizontal, self.vertical = knots(widths), knots(heights)
        self.derivatives = F.pad(derivatives / (1 + (derivatives / soft).abs()), (1, 1)).exp()  # (..., K + 1)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """y = spline(x) and log |dy/dx|, elementwise: zuko's formulas in zuko's order of operations (the same
        values), each shared subexpression (1 - z, z^2, the denominator) computed once, forward and backward."""
        k = self.searchsorted(self.horizontal, x) - 1                                 # (...) bin of x
        mask = torch.logical_and(0 <= k, k < self.bins)                                # inside the bound
        k = k % self.bins
        # each knot pair (k, k + 1) gathered along the knots' own dimension: the same values as zuko's gathers
        # from knots broadcast against a leading pair dimension, and a backward without that broadcast's zeros
        pair, hs, vs, ds = broadcast(torch.stack((k, k + 1), -1), self.horizontal, self.vertical, self.derivatives,
                                     ignore=1)                                         # (..., 2), (..., K + 1)
        x0, x1 = hs.gather(-1, pair).unbind(-1)                                        # each (...)
        y0, y1 = vs.gather(-1, pair).unbind(-1)
        d0, d1 = ds.gather(-1, pair).unbind(-1)
        s = (y1 - y0) / (x1 - x0)
        z = mask * (x - x0) / (x1 - x0)
        height = y1 - y0
        one_minus_z, z_sq = 1 - z, z**2
        denominator = s + (d0 + d1 - 2 * s) * z * one_minus_z
        y = y0 + height * (s * z_sq + d0 * z * one_minus_z) / denominator
        jacobian = s**2 * (2 * s * z * one_minus_z + d0 * one_minus_z**2 + d1 * z_sq) / denominator**2
        return torch.where(mask, y, x), mask * jacobian.log()


class FlowEncoder(nn.Module):
    """S: q(z | h) = a conditional NSF (zuko) pushed from a Gaussian base whose mean and scale depend on h."""

    def __init__(self, hidden: int, latent: int, context: int, transforms: int, bins: int,
                 flow_hidden: Sequence[int]) -> None:
        super().__init__()
        self.latent, self.context = latent, context
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.LayerNorm(hidden),
                                 nn.Linear(hidden, context + 2 * latent))
        nn.init.zeros_(self.net[-1].bias)
        # zuko's conditional NSF (autoregressive monotonic rational-quadratic splines), built as the MAF it is
        # with our faster-softmax spline; same modules and state_dict keys as zuko.flows.NSF
        self.flow = zuko.flows.MAF(latent, context=context, transforms=transforms, univariate=partial(Spline, slope=1e-3),
                                   shapes=[(bins,), (bins,), (bins - 1,)],
                                   hidden_features=tuple(int(x) for x in flow_hidden))

    @contextmanager
    def masks_applied(self) -> Iterator[None]:
        """Within the block each masked layer of the flow's conditioners uses ``mask * weight`` formed once, on entry.

        zuko forms it at every call (and masks the gradient at every call of the backward); an episode calls the
        flow at each of its T steps with the same weights. Gradients reach the weights as before when the block
        is entered with gradients enabled; the weights must not change inside it.
        """
        layers = [m for m in self.flow.modules() if isinstance(m, zuko.nn.MaskedLinear)]
        for m in layers:
            m.forward = partial(F.linear, weight=m.mask * m.weight, bias=m.bias)  # shadows MaskedLinear.forward
        try:
            yield
        finally:
            for m in layers:
                del m.forward

    def transform(self, eps: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """z = T(eps; context) and log |det dz/d eps|, for eps (..., Z) and context (..., Ctx), in float32."""
        with _float32(eps.device.type):
            return self.flow.transform(context.float()).call_and_ladj(eps.float())  # (..., Z), (...)

    def noise(self, h: Tensor, samples: int) -> Tensor:
        """Standard normal noise (B, S, Z) for ``samples`` draws of z given h (B, H), in float32."""
        return torch.randn(h.shape[0], samples, self.latent, device=h.device)

    def forward(self, h: Tensor, samples: int, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``samples`` draws z (B, S, Z) from q(z | h) for h (B, H), with log q(z | h) (B, S), in float32.

        ``noise`` (B, S, Z), when given, is the standard normal draw to push through q (else a fresh one), so
        the same z can be recomputed later, e.g. once with gradients after choosing glimpses without them.
        """
        ctx, mu, log_var = self.net(h).split([self.context, self.latent, self.latent], dim=-1)
        with _float32(h.device.type):
            mu, log_var = mu.float()[:, None], log_var.float().clamp(-12, 8)[:, None]  # (B, 1, Z)
            if noise is None:
                noise = self.noise(h, samples)                                         # (B, S, Z)
            elif noise.shape != (h.shape[0], samples, self.latent):
                raise ValueError(f"noise of shape {tuple(noise.shape)} does not match {samples} samples of a "
                                 f"{self.latent}-d latent for {h.shape[0]} hidden states; pass (B, S, Z) noise")
            noise = noise.float()
            eps = mu + (0.5 * log_var).exp() * noise
            log_base = -0.5 * (LOG_2PI + log_var + noise.pow(2)).sum(-1)              # (B, S)
            ctx = ctx.float()[:, None].expand(-1, samples, -1)                         # (B, S, Ctx)
            z, ladj = self.transform(eps, ctx)
            return z, log_base - ladj


class FeatureDecoder(nn.Module):
    """D: z (..., Z) -> synthesized content features of all cells (..., N, F), through a (gh, gw) feature map."""

    def __init__(self, latent: int, features: int, grid: tuple[int, int], channels: int, layers: int) -> None:
        super().__init__()
        self.grid, self.channels, self.features = tuple(grid), channels, features
        gh, gw = self.grid
        self.seed = nn.Linear(latent, channels * gh * gw)
        body = []
        for _ in range(layers):
            body += [nn.LeakyReLU(), nn.GroupNorm(1, channels),
                     nn.Conv2d(channels, channels, 3, padding=1, padding_mode="replicate")]
        body += [nn.LeakyReLU(), nn.GroupNorm(1, channels), nn.Conv2d(channels, features, 1)]
        self.body = nn.Sequential(*body)

    def forward(self, z: Tensor, cells: Tensor | None = None) -> Tensor:
        """Features (..., N, F) of every cell from z (..., Z); with ``cells``, only those cells' features.

        ``cells`` (R, t) for z (R, S, Z): cell indices per row, shared by its S samples; the result is (R, S, t, F),
        equal to ``forward(z)`` gathered at those cells. The last layer (a 1x1 conv) then runs on those t cells
        only, forward and backward; the layers before it see the whole map (their GroupNorms pool all cells).
        """
        x = self._trunk(z)
        return self._all_cells(x, z.shape[:-1]) if cells is None else self._at_cells(x, z, cells)

    def cells_and_map(self, z: Tensor, cells: Tensor) -> tuple[Tensor, Tensor]:
        """``forward(z, cells)`` (R, S, t, F) and, computed without gradients, ``forward(z)`` (R, S, N, F).

        One pass for a step that trains on the observed cells and plans with every cell: the last layer's backward
        covers the t cells only.
        """
        x = self._trunk(z)
        with torch.no_grad():
            every = self._all_cells(x, z.shape[:-1])
        return self._at_cells(x, z, cells), every

    def _trunk(self, z: Tensor) -> Tensor:
        """The feature map (M, Ch, gh, gw) before the last layer, M = z's rows."""
        gh, gw = self.grid
        x = self.seed(z.reshape(-1, z.shape[-1])).view(-1, self.channels, gh, gw)  # (M, Ch, gh, gw)
        # channels-last: on the small maps here (e.g. 7x7) it makes the convs' backward about 1.5x faster on CPU
        return self.body[:-1](x.contiguous(memory_format=torch.channels_last))     # (M, Ch, gh, gw)

    def _all_cells(self, x: Tensor, lead: torch.Size) -> Tensor:
        gh, gw = self.grid
        x = self.body[-1](x)                                                        # (M, F, gh, gw)
        return x.flatten(2).transpose(1, 2).reshape(*lead, gh * gw, self.features)  # (..., N, F)

    def _at_cells(self, x: Tensor, z: Tensor, cells: Tensor) -> Tensor:
        if z.dim() != 3 or cells.dim() != 2 or z.shape[0] != cells.shape[0]:
            raise ValueError(f"cells of shape {tuple(cells.shape)} do not match z of shape {tuple(z.shape)}; "
                             f"pass z (R, S, Z) and cells (R, t)")
        (rows, samples), t, head = z.shape[:2], cells.shape[1], self.body[-1]     # head: 1x1 conv Ch -> F
        idx = cells[:, None, None, :].expand(rows, samples, self.channels, t).reshape(-1, self.channels, t)
        picked = x.flatten(2).gather(2, idx)                                        # (M, Ch, t)
        out = F.linear(picked.transpose(1, 2), head.weight.flatten(1), head.bias)  # (M, t, F)
        return out.view(rows, samples, t, self.features)


class PartialVAE(nn.Module):
    """Encoder S (flow), decoder D and the observed-cells ELBO."""

    def __init__(self, hidden: int, latent: int, features: int, grid: tuple[int, int], transforms: int = 4,
                 bins: int = 8, flow_hidden: Sequence[int] = (256, 256), decoder_channels: int = 128,
                 decoder_layers: int = 3) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = FlowEncoder(hidden, latent, features, transforms, bins, flow_hidden)
        self.decoder = FeatureDecoder(latent, features, grid, decoder_channels, decoder_layers)
        self.log_var = nn.Parameter(torch.zeros(()))  # the likelihood's shared log-variance

    def forward(self, h: Tensor, samples: int, noise: Tensor | None = None,
                cells: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Synthesized features (B, S, N, F) of all cells from S samples z (B, S, Z) of q(z | h), and log q (B, S).

        ``noise`` (B, S, Z): the standard normal draw behind z (``FlowEncoder.forward``); fresh when None.
        ``cells`` (B, t): synthesize those cells only, (B, S, t, F) (``FeatureDecoder.forward``).
        """
        z, log_q = self.encoder(h, samples, noise)
        return self.decoder(z.to(h.dtype), cells), z, log_q

    def negative_elbo(self, synth: Tensor, z: Tensor, log_q: Tensor, seen: Tensor, cells: Tensor,
                      observed: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-image Monte-Carlo terms (B,) of -ELBO: the observed cells' NLL and log q(z|h) - log p(z).

        ``synth`` (B, S, N, F) synthesized features, ``seen`` (B, t, F) the true content features of the
        cells observed so far, ``cells`` (B, t) their indices; unobserved cells do not enter the loss.
        ``observed`` (B, t) bool, when given, keeps only the marked ones of those t cells.
        """
        b, s, _, f = synth.shape
        idx = cells[:, None, :, None].expand(b, s, cells.shape[1], f)                 # (B, S, t, F)
        return self.elbo_terms(synth.gather(2, idx), z, log_q, seen, observed)

    def elbo_terms(self, guess: Tensor, z: Tensor, log_q: Tensor, seen: Tensor,
                   observed: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``negative_elbo`` from the synthesized features ``guess`` (B, S, t, F) of the t cells observed so far."""
        guess = guess.float()
        with _float32(guess.device.type):
            sq = (guess - seen.float()[:, None]).pow(2)
            per_value = sq * (-self.log_var).exp() + self.log_var + LOG_2PI            # (B, S, t, F)
            if observed is not None:
                per_value = per_value * observed[:, None, :, None].float()
            nll = 0.5 * per_value.sum((-1, -2)).mean(1)                                # (B,)
            log_prior = -0.5 * (LOG_2PI + z.float().pow(2)).sum(-1)                   # (B, S)
            kl = (log_q - log_prior).mean(1)                                           # (B,)
        return nll, kl

    def negative_elbo_steps(self, h: Tensor, noise: list[Tensor], seen: Tensor, cells: Tensor) -> tuple[Tensor, Tensor]:
        """The -ELBO terms (B,) of a whole episode, summed over its T steps, in one pass per sample count.

        Step t draws z from q(z | ``h[:, t]``) with the standard normal ``noise[t]`` (B, S_t, Z), and its
        likelihood covers the cells observed up to and including t: ``cells[:, :t+1]`` (B, T) with true
        content features ``seen[:, :t+1]`` (B, T, F). Equals, up to float rounding, the sum over t of
        ``negative_elbo(*self(h[:, t], S_t, noise[t]), seen[:, :t+1], cells[:, :t+1])``, but runs the
        flow and the decoder once over B*T rows (steps with the same S_t go together) instead of T times, and
        the decoder's last layer on the episode's T cells only.
        """
        b, steps = cells.shape
        if h.shape[:2] != (b, steps) or len(noise) != steps:
            raise ValueError(f"hidden states {tuple(h.shape)} and {len(noise)} noise draws do not match "
                             f"cells {tuple(cells.shape)}; pass (B, T, H), T tensors (B, S, Z) and (B, T)")
        nll = kl = h.new_zeros(b, dtype=torch.float32)
        start = 0
        while start < steps:  # runs of steps with the same sample count (the last step of an EIG episode has 1)
            s = noise[start].shape[1]
            end = start + 1
            while end < steps and noise[end].shape[1] == s:
                end += 1
            k = end - start
            rows = h[:, start:end].reshape(b * k, h.shape[-1])                          # (B*k, H)
            eps = torch.stack(noise[start:end], 1).reshape(b * k, s, -1)               # (B*k, S, Z)
            cells_k = cells.repeat_interleave(k, 0)                                     # (B*k, T)
            guess, z, log_q = self(rows, s, eps, cells_k)                               # (B*k, S, T, F)
            step = torch.arange(start, end, device=cells.device)                       # (k,)
            observed = torch.arange(steps, device=cells.device)[None, :] <= step[:, None]  # (k, T)
            nll_k, kl_k = self.elbo_terms(guess, z, log_q, seen.repeat_interleave(k, 0), observed.repeat(b, 1))
            nll = nll + nll_k.view(b, k).sum(1)
            kl = kl + kl_k.view(b, k).sum(1)
            start = end
        return nll, kl
