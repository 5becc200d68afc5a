"""RAM's training step as ``cli.py fit`` runs it, against a plain PyTorch loop that does what the most used RAM
port does per step, and against a plain loop over our own model.

Four variants of the MNIST RAM (6 glimpses of 8x8, depth 1, 256-unit ReLU core, a 128-unit locator, Adam),
run interleaved in one process, each ``--rounds`` times:

- ``port``: a plain loop written here that does per step what the most used PyTorch port of RAM does: its
  DataLoader yields 28x28 images converted per item the torchvision way (uint8 -> PIL image -> ``ToTensor`` ->
  ``Normalize``); the first location is uniform at random; each of the 6 glimpses pads the batch and slices one
  8x8 patch per image in a Python loop over the batch; glimpse network, ReLU RNN core, a location network on the
  detached state (ReLU layer, tanh, a Gaussian sample and its ``Normal.log_prob``, clamped), a linear baseline
  on the detached state, and after the last glimpse log-softmax classification; NLL + MSE(baseline, reward) +
  0.01 REINFORCE, ``zero_grad``, backward, Adam; the batch's loss and accuracy read back with ``.item()`` (the
  port's running averages). No progress bar.
- ``plain``: a bare loop over our model and the preset's DataLoader: ``loss_terms``, sum, backward, Adam.
- ``trainer``: a bare ``Trainer.fit`` of the same model and data (no logger, callbacks, progress bar,
  checkpoints or validation): Lightning's own share of ``cli``.
- ``cli``: ``experiment.fit`` itself (what ``cli.py fit --config=configs/ram_mnist.yaml`` calls) with the
  preset's flags and a timing callback: CSV logger, the progress bar of a terminal (drawn into /dev/null that
  reports itself a terminal), checkpoints, validation and test of one batch, attention pictures (at validation
  only, outside the timed steps).

Data: ``port`` reads the embedded real MNIST subset (``datamodules.digits.load_embedded``, 28x28); ``plain`` and
``cli`` read the preset's own data (``cluttered_mnist`` translated on a 28x28 canvas, rendered per batch from the
same digits when full MNIST is not on disk). Every loader runs in the training thread (``num_workers=0``), so
the loading is inside the thread CPU time on both sides (the port's own default is 4 workers). Our variants run
after ``experiment.cheap_cuda_probe()``, as ``cli.py fit`` does; the port's loop without Lightning's
``PYTORCH_NVML_BASED_CUDA_CHECK``, as in the port's own process.

A step is the start-to-start time of consecutive training batches (loading, forward, backward, optimizer,
hooks, logging), in CPU time of the training thread (``time.thread_time``) and wall time; the median over the
steps of an epoch after ``--warmup``, then the median over rounds. Ratios are ``port / ours``: above 1, ours is
faster.

    OMP_NUM_THREADS=1 python -m benchmarks.ram_port_loop [--batches=20,128] [--steps=60] [--epochs=2]
        [--warmup=5] [--rounds=3] [--json=benchmarks/results/ram_port_loop.json]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from benchmarks.common import measure_training  # noqa: F401  (common sets the quiet logging)
from attention_lightning.run import commands as experiment
from datamodules.digits import load_embedded
from benchmarks.overhead import (CPU, WALL, Guests, Intervals, bare_fit, clocks, endless, plain_step, step_ms,
                                 timed_epochs)

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "ram_mnist.yaml"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


# --- the port-style loop ----------------------------------------------------------------------------
class PortDigits(Dataset):
    """28x28 digits served the torchvision MNIST way: per item a PIL image, ``ToTensor``, ``Normalize``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


class PortRAM(nn.Module):
    """The port's RAM: per-image patch slicing, glimpse net, ReLU RNN core, locator, baseline, classifier."""

    def __init__(self, patch: int = 8, hidden: int = 256, glimpse_hidden: int = 128, loc_hidden: int = 128,
                 std: float = 0.05, classes: int = 10) -> None:
        super().__init__()
        self.patch, self.std = patch, std
        self.fc_phi = nn.Linear(patch * patch, glimpse_hidden)
        self.fc_loc = nn.Linear(2, loc_hidden)
        self.fc_what = nn.Linear(glimpse_hidden, hidden)
        self.fc_where = nn.Linear(loc_hidden, hidden)
        self.i2h = nn.Linear(hidden, hidden)
        self.h2h = nn.Linear(hidden, hidden)
        self.loc_feat = nn.Linear(hidden, hidden // 2)
        self.loc_mean = nn.Linear(hidden // 2, 2)
        self.base = nn.Linear(hidden, 1)
        self.cls = nn.Linear(hidden, classes)

    def patches(self, x: Tensor, loc: Tensor) -> Tensor:
        """(B, 1, H, W), (B, 2) -> (B, patch*patch): one slice per image of the zero-padded batch."""
        b, _, h, _ = x.shape
        start = (0.5 * ((loc.detach() + 1.0) * h)).long()  # (B, 2) top-left corner in the padded image
        half = self.patch // 2
        padded = F.pad(x, (half, half, half, half))  # (B, 1, H+p, W+p)
        rows = [padded[i, :, start[i, 1]:start[i, 1] + self.patch, start[i, 0]:start[i, 0] + self.patch]
                for i in range(b)]
        return torch.stack(rows).flatten(1)  # (B, patch*patch)

    def step(self, x: Tensor, loc: Tensor, h: Tensor, last: bool) -> tuple[Tensor, ...]:
        phi = F.relu(self.fc_phi(self.patches(x, loc)))
        where = F.relu(self.fc_loc(loc))
        g = F.relu(self.fc_what(phi) + self.fc_where(where))
        h = F.relu(self.i2h(g) + self.h2h(h))
        mean = torch.tanh(self.loc_mean(F.relu(self.loc_feat(h.detach()))))
        nxt = (mean + self.std * torch.randn_like(mean)).detach()
        log_pi = torch.distributions.Normal(mean, self.std).log_prob(nxt).sum(1)
        nxt = nxt.clamp(-1.0, 1.0)
        b = self.base(h.detach()).squeeze(1)
        out = F.log_softmax(self.cls(h), dim=1) if last else None
        return h, nxt, b, log_pi, out


@contextlib.contextmanager
def without_lightning_env() -> Any:
    """The environment of a script that never imports Lightning: importing it sets
    ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, after which every ``torch.cuda.is_available()`` (one per optimizer step,
    in torch's own check) loads the NVML library, ~40 us here; the port's own process does not pay that."""
    before = os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    try:
        yield
    finally:
        if before is not None:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = before


def run_port(batch_size: int, steps: int, epochs: int, glimpses: int = 6) -> dict[str, Any]:
    with without_lightning_env():
        return port_loop(batch_size, steps, epochs, glimpses)


def port_loop(batch_size: int, steps: int, epochs: int, glimpses: int) -> dict[str, Any]:
    loader, step = port_setup(batch_size, steps, glimpses)
    return timed_epochs(loader, epochs, step)


def port_setup(batch_size: int, steps: int, glimpses: int = 6) -> tuple[DataLoader, Callable[[Any], None]]:
    """The port's loader and its training step."""
    torch.manual_seed(0)
    digits = load_embedded()
    images, labels = digits.train_images.numpy(), digits.train_labels.numpy()  # (N, 28, 28) uint8, (N,)
    n = steps * batch_size
    reps = math.ceil(n / len(labels))
    data = PortDigits(np.tile(images, (reps, 1, 1))[:n], np.tile(labels, reps)[:n])
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=0)
    model = PortRAM()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    model.train()

    def step(batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        opt.zero_grad()
        b = x.shape[0]
        h = torch.zeros(b, 256, requires_grad=True)
        loc = torch.empty(b, 2).uniform_(-1, 1).requires_grad_()
        log_pis, bases = [], []
        for t in range(glimpses):
            h, loc, base, log_pi, out = model.step(x, loc, h, last=t == glimpses - 1)
            log_pis.append(log_pi)
            bases.append(base)
        bases_t, log_pi_t = torch.stack(bases, 1), torch.stack(log_pis, 1)  # (B, T)
        pred = out.max(1)[1]
        reward = (pred.detach() == y).float()[:, None].repeat(1, glimpses)  # (B, T)
        loss = (F.nll_loss(out, y) + F.mse_loss(bases_t, reward)
                + 0.01 * torch.sum(-log_pi_t * (reward - bases_t.detach()), 1).mean())
        acc = 100 * (pred == y).float().sum() / b
        loss.item(), acc.item()  # the port's running averages read both back every step
        loss.backward()
        opt.step()

    return loader, step


# --- ours -------------------------------------------------------------------------------------------
def preset_flags(batch_size: int, steps: int, epochs: int) -> dict[str, Any]:
    flags = yaml.safe_load(PRESET.read_text())
    flags.update(batch_size=batch_size, num_workers=0, accelerator="cpu", seed=0, max_epochs=epochs,
                 train_size=steps * batch_size, val_size=batch_size, test_size=batch_size)
    return flags


def run_plain(batch_size: int, steps: int, epochs: int) -> dict[str, Any]:
    """Our model's own math in a bare loop over the preset's DataLoader."""
    loader, step = plain_setup(batch_size, steps)
    return timed_epochs(loader, epochs, step)


def plain_setup(batch_size: int, steps: int) -> tuple[DataLoader, Callable[[Any], None]]:
    """The preset's loader and a bare training step of our model (``overhead.plain_step``)."""
    flags = preset_flags(batch_size, steps, 1)
    p = experiment.plan({**flags, "logger": "none"})
    pl.seed_everything(0, verbose=False)
    dm = experiment.build_datamodule(p)
    model = experiment.build_model(p, dm)
    dm.setup("fit")
    loader = dm.train_dataloader()
    opt = model.configure_optimizers()
    model.train()
    return loader, lambda batch: plain_step(model, opt, batch)


class Terminal(io.TextIOWrapper):
    """/dev/null that says it is a terminal: ``cli.py fit`` then draws its progress bar, as for a user at one."""

    def __init__(self) -> None:
        super().__init__(open(os.devnull, "wb"), write_through=True)

    def isatty(self) -> bool:
        return True


def run_cli(batch_size: int, steps: int, epochs: int) -> dict[str, Any]:
    """``experiment.fit`` (the function behind ``cli.py fit``) on the preset, timed by a callback."""
    timer = Intervals()
    with tempfile.TemporaryDirectory() as root:
        flags = {**preset_flags(batch_size, steps, epochs), "default_root_dir": root}
        t0 = clocks()
        with Terminal() as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            experiment.fit(flags, extra_callbacks=[timer])
        return {"times": timer.times, "run_s": [b - a for a, b in zip(t0, clocks())]}


def run_trainer(batch_size: int, steps: int, epochs: int) -> dict[str, Any]:
    """A bare ``Trainer.fit`` of the same model and data: no logger, callbacks, progress bar, checkpoints or
    validation (Lightning's own cost per step, the floor under ``cli``)."""
    flags = preset_flags(batch_size, steps, epochs)
    p = experiment.plan({**flags, "logger": "none"})
    pl.seed_everything(0, verbose=False)
    dm = experiment.build_datamodule(p)
    model = experiment.build_model(p, dm)
    timer = Intervals()
    return bare_fit(model, dm, epochs, timer)


# --- interleaved pairs: the plain loops stepped between the steps of a Trainer ------------------------
def run_paired(host: str, batch_size: int, steps: int, epochs: int) -> list[dict[str, tuple[float, float]]]:
    """``host`` (``trainer`` or ``cli``) with the port's and our plain loop as guests; the pairs of every epoch."""
    guests = {"port": endless(*port_setup(batch_size, steps)), "plain": endless(*plain_setup(batch_size, steps))}
    timer = Guests(guests)
    if host == "cli":
        with tempfile.TemporaryDirectory() as root:
            flags = {**preset_flags(batch_size, steps, epochs), "default_root_dir": root}
            with Terminal() as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                experiment.fit(flags, extra_callbacks=[timer])
    else:
        flags = preset_flags(batch_size, steps, epochs)
        p = experiment.plan({**flags, "logger": "none"})
        pl.seed_everything(0, verbose=False)
        dm = experiment.build_datamodule(p)
        bare_fit(experiment.build_model(p, dm), dm, epochs, timer)
    return timer.pairs


def paired_main(args: argparse.Namespace) -> None:
    """Per host, per round: medians over the pairs (after ``warmup`` each epoch) of each variant's step and of the
    per-pair ratios port/host and host/plain."""
    hosts = [h for h in args.variants.split(",") if h in ("trainer", "cli")]
    print(f"{'batch':>5} {'host':>7} {'clock':>5} {'port ms':>8} {'plain ms':>8} {'host ms':>8} {'port/host':>9} "
          f"{'port/plain':>10} {'host/plain':>10}  per round: port/host, host/plain")
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        got: dict[str, list[list[dict[str, tuple[float, float]]]]] = {h: [] for h in hosts}
        for _ in range(args.rounds):
            for h in hosts:
                got[h].append([p for epoch in run_paired(h, batch, args.steps, args.epochs)
                               for p in epoch[args.warmup:]])
        for h in hosts:
            for clock, name in ((CPU, "cpu"), (WALL, "wall")):
                pooled = [p for r in got[h] for p in r]
                med = {v: 1000 * statistics.median(p[v][clock] for p in pooled) for v in ("port", "plain", "host")}

                def ratios(pairs: list[dict[str, tuple[float, float]]], a: str, b: str) -> float:
                    return statistics.median(p[a][clock] / p[b][clock] for p in pairs)

                port_host, port_plain, host_plain = (ratios(pooled, "port", "host"), ratios(pooled, "port", "plain"),
                                                     ratios(pooled, "host", "plain"))
                per_round = [(ratios(r, "port", "host"), ratios(r, "host", "plain")) for r in got[h]]
                print(f"{batch:>5} {h:>7} {name:>5} {med['port']:>8.2f} {med['plain']:>8.2f} {med['host']:>8.2f} "
                      f"{port_host:>9.3f} {port_plain:>10.3f} {host_plain:>10.3f}  "
                      + " ".join(f"{a:.3f}/{b:.3f}" for a, b in per_round), flush=True)
                rows.append({"batch_size": batch, "host": h, "clock": name, "step_ms": med, "pairs": len(pooled),
                             "port/host": port_host, "port/plain": port_plain, "host/plain": host_plain,
                             "per_round": per_round})
    print(f"pairs: the host's step i and one step of each guest (port, plain) back to back; {args.steps} batches x "
          f"{args.epochs} epochs per host run, first {args.warmup} of each epoch left out, {args.rounds} rounds; ratios "
          f"are medians of the per-pair ratios; cpu = time.thread_time of the training thread")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"mode": "paired", "results": rows, "args": vars(args),
                                           "load_average_end": os.getloadavg()}, indent=2))


RUNNERS = {"port": run_port, "plain": run_plain, "trainer": run_trainer, "cli": run_cli}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="20,128")
    ap.add_argument("--steps", type=int, default=60, help="training batches per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5, help="steps of each epoch left out of the median")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all variants; medians reported")
    ap.add_argument("--variants", default="port,plain,trainer,cli")
    ap.add_argument("--json", default="benchmarks/results/ram_port_loop.json")
    ap.add_argument("--paired", action="store_true",
                    help="step the port's and the plain loop between the Trainer's steps (interleaved pairs)")
    args = ap.parse_args()
    variants = args.variants.split(",")
    experiment.cheap_cuda_probe()  # as experiment.fit does, so every variant of ours runs alike from the first round
    print(f"torch threads: {torch.get_num_threads()}; torch {torch.__version__}; load average at start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.paired:
        return paired_main(args)
    print(f"{'batch':>5} {'clock':>5} " + " ".join(f"{v + ' ms':>10}" for v in variants)
          + "  port/cli  port/plain  cli/plain  (per-round cli/plain)")
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        got: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v in variants:
                got[v].append(RUNNERS[v](batch, args.steps, args.epochs))
        row: dict[str, Any] = {"batch_size": batch}
        for clock, name in ((CPU, "cpu"), (WALL, "wall")):
            per = {v: [step_ms(r, args.warmup, clock) for r in rs] for v, rs in got.items()}
            ms = {v: statistics.median(x) for v, x in per.items()}
            row[f"{name}_step_ms"], row[f"{name}_rounds_ms"] = ms, per
            ratio = {k: ms[a] / ms[b] for k, a, b in (("port/cli", "port", "cli"), ("port/plain", "port", "plain"),
                                                      ("cli/plain", "cli", "plain")) if a in ms and b in ms}
            row[f"{name}_ratios"] = ratio
            rounds = (" ".join(f"{c / p:.3f}" for c, p in zip(per["cli"], per["plain"]))
                      if "cli" in per and "plain" in per else "")
            print(f"{batch:>5} {name:>5} " + " ".join(f"{ms[v]:>10.2f}" for v in variants)
                  + f"  {ratio.get('port/cli', float('nan')):>8.3f} {ratio.get('port/plain', float('nan')):>11.3f}"
                  f" {ratio.get('cli/plain', float('nan')):>10.3f}  ({rounds})", flush=True)
        rows.append(row)
    print(f"step = median start-to-start time of training batches (loading included, num_workers=0), {args.steps} "
          f"batches x {args.epochs} epochs, first {args.warmup} of each epoch left out, median of {args.rounds} "
          f"interleaved rounds; cpu = time.thread_time of the training thread")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"variants": variants, "results": rows, "args": vars(args),
                                           "load_average_end": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
