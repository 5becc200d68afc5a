"""What a training step costs beyond the model's math: the terminal bar's updates, the RNG snapshot before each
batch, the fused Adam of CPU runs (same updates as the unfused one)."""
from __future__ import annotations

import os

import pytest
import torch

from attention_lightning.run import commands as experiment
from attention_lightning.run import loader
from attention_lightning.models.base import adam
from attention_lightning.run.progress import SteadyBar


class FakeBar:
    """A tqdm bar that records what it was asked to show."""

    def __init__(self, total: int) -> None:
        self.total, self.disable, self.n, self.drawn, self.postfix = total, False, 0, [], []

    def set_postfix(self, metrics, refresh: bool = True) -> None:
        self.postfix.append((self.n, metrics))

    def refresh(self) -> None:
        self.drawn.append(self.n)


def test_steady_bar_redraws_at_most_once_per_interval_and_at_the_epochs_last_batch(monkeypatch):
    clock = iter([0.0, 0.01, 0.02, 0.2, 0.21, 0.5, 1.3, 1.31])
    monkeypatch.setattr("attention_lightning.run.progress.time.monotonic", lambda: next(clock))
    monkeypatch.setattr(SteadyBar, "get_metrics", lambda self, trainer, module: {"loss": 0.5})
    bar = SteadyBar(interval=0.1, metrics_interval=1.0)
    bar._train_progress_bar = FakeBar(total=8)
    for i in range(8):
        bar.on_train_batch_end(None, None, None, None, i)
    # drawn: the first batch, the first after 0.1 s (0.2), 0.5, 1.3 and the last of the epoch
    assert bar.train_progress_bar.drawn == [1, 4, 6, 7, 8]
    # the metrics: gathered at the first batch, after 1 s (1.3), and at the epoch's last batch
    assert [n for n, _ in bar.train_progress_bar.postfix] == [1, 7, 8]


def test_rng_snapshot_does_not_ask_for_cuda_devices(monkeypatch):
    def refuse() -> bool:
        raise AssertionError("is_available loads NVML on every call once Lightning is imported")

    monkeypatch.setattr(torch.cuda, "is_available", refuse)
    state = loader.rng_state()
    torch.rand(3)
    loader.set_rng_state(state)
    again = torch.rand(3)
    loader.set_rng_state(state)
    assert torch.equal(torch.rand(3), again)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_cpu_adam_is_fused_and_updates_like_the_unfused_one(weight_decay):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    twin.load_state_dict(net.state_dict())
    start = net[0].weight.detach().clone()
    fused = adam(net, 1e-2, weight_decay)
    plain = torch.optim.Adam(twin.parameters(), lr=1e-2, weight_decay=weight_decay)
    assert fused.defaults["fused"] is True
    for step in range(20):
        x = torch.randn(16, 7, generator=torch.Generator().manual_seed(step))
        for model, opt in ((net, fused), (twin, plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for p, q in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    assert (net[0].weight - start).abs().max() > 1e-2  # the comparison is of trained weights


def test_nvml_probe_dropped_only_where_nvml_does_not_load(monkeypatch):
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(experiment.ctypes, "CDLL", missing)
    experiment.cheap_cuda_probe()
    assert "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(experiment.ctypes, "CDLL", lambda name: object())  # a driver: Lightning's setting stays
    experiment.cheap_cuda_probe()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"


def test_a_cpu_batch_for_a_cpu_run_is_passed_on_as_it_is_and_others_are_moved():
    from attention_lightning.models.ram import RAM

    model = RAM()
    batch = (torch.rand(2, 1, 28, 28), torch.tensor([3, 4]))
    assert model.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    moved = model.transfer_batch_to_device(batch, torch.device("meta"), 0)  # another device: Lightning's move
    assert [x.device.type for x in moved] == ["meta", "meta"]
    nested = {"images": batch[0]}  # not a flat tuple/list of tensors: Lightning's move, same values
    assert torch.equal(model.transfer_batch_to_device(nested, torch.device("cpu"), 0)["images"], batch[0])
