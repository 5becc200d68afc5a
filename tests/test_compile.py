"""``cli.py fit --compile=true``: the training computation runs compiled, and its checkpoints load without it."""
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from attention_lightning import registry
from attention_lightning.models.base import AttentionModel
from attention_lightning.run import commands as experiment
from attention_lightning.run.plan import UserError

from tiny import tiny_flags


class LossTermsKind(pl.Callback):
    """Records whether the module's ``loss_terms`` is a torch.compile wrapper when training starts."""

    def __init__(self) -> None:
        self.compiled = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.compiled = hasattr(pl_module.loss_terms, "_torchdynamo_orig_callable")


@pytest.fixture
def eager_backend(monkeypatch):
    """torch.compile with dynamo's eager backend: the same tracing and wrapping, no inductor code generation
    (minutes on a loaded CPU); inductor's speed is measured by benchmarks/overhead.py --compile."""
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile(fn, **{**kw, "backend": "eager"}))


@pytest.mark.slow
def test_compiled_fit_writes_checkpoints_that_load_and_test_without_compile(tmp_path, eager_backend):
    seen = LossTermsKind()
    flags = tiny_flags("dham", default_root_dir=str(tmp_path), max_epochs=1, compile=True, limit_test_batches=0)
    summary = experiment.fit(flags, extra_callbacks=[seen])
    assert seen.compiled is True
    ckpt = Path(summary["last_checkpoint"])
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state and not [k for k in state if "_orig_mod" in k]
    # the checkpoint loads into a model built without compiling, with every weight as trained
    model = registry.get_model("dham").cls.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True)
    assert not hasattr(model.loss_terms, "_torchdynamo_orig_callable")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name])
    result = experiment.test({"ckpt": str(ckpt)})
    assert 0.0 <= result["test"]["test/acc"] <= 1.0


def test_compiled_loss_terms_match_eager(eager_backend):
    p = experiment.plan(tiny_flags("dham", logger="none"))
    dm = experiment.build_datamodule(p)
    model = experiment.build_model(p, dm)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model.eval()  # no dropout: both calls compute the same function
    eager, eager_logits = model.loss_terms(batch, "test")
    model.compile_step()
    compiled, compiled_logits = model.loss_terms(batch, "test")
    assert compiled.keys() == eager.keys()
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled_logits, eager_logits, rtol=1e-4, atol=1e-5)


def test_compile_flag_must_be_a_bool():
    with pytest.raises(UserError, match=r"--compile='yes' must be true or false"):
        experiment.plan({"model": "ram", "data": "cluttered_mnist", "compile": "yes"})


def test_compile_flag_takes_what_the_command_line_gives():
    plan = experiment.plan
    assert plan({"compile": "true"}).cli["compile"] is True  # fire hands `--compile=true` over as a string
    assert plan({"compile": "False"}).cli["compile"] is False
    assert plan({"compile": True}).cli["compile"] is True
    with pytest.raises(UserError, match="--compile='yes' must be true or false"):
        plan({"compile": "yes"})


class Toy(AttentionModel):
    """A linear classifier whose ``loss_terms`` reads a number back (``.item()``) when ``breaks``."""

    def __init__(self, breaks: bool = True) -> None:
        super().__init__(2, 1e-3, 0.0)
        self.lin = torch.nn.Linear(3, 2)

    def loss_terms(self, batch, stage):
        logits = self.lin(batch[0])
        if self.hparams.breaks:
            logits = logits * float(logits.detach().abs().sum().item())  # a graph break
        return {"ce": torch.nn.functional.cross_entropy(logits, batch[1])}, logits


@pytest.mark.parametrize("breaks", [True, False])
def test_a_graph_break_is_reported_once_in_one_line(eager_backend, capsys, breaks):
    model = Toy(breaks)
    model.compile_step()
    batch = (torch.rand(4, 3), torch.tensor([0, 1, 0, 1]))
    for i in range(2):
        model.loss_terms(batch, "train")
        model.on_train_batch_end(None, batch, i)
    lines = [line for line in capsys.readouterr().err.splitlines() if "[compile]" in line]
    if breaks:
        assert len(lines) == 1 and lines[0].startswith("[compile] Toy.loss_terms: 1 graph break, those parts run eager:")
        assert "item()" in lines[0]
    else:
        assert lines == []
    # Dynamo's own multi-line warning for the break is dropped
    warning = logging.LogRecord("torch._dynamo.variables.tensor", logging.WARNING, "", 0,
                                "Graph break from `Tensor.item()`, consider setting: ...", None, None)
    assert not logging.getLogger("torch._dynamo.variables.tensor").filter(warning)
