"""Every registered model and datamodule, through the same checks: the registry is the list."""
import inspect
import re

import pytest

from attention_lightning import registry
from attention_lightning.run import commands as experiment
from attention_lightning.facts import MODEL_FACTS, DataFacts
from attention_lightning.signature import parameters
from attention_lightning.models.base import AttentionModel, choices
from tests.tiny import TINY_FLAGS

MODEL_NAMES = [e.name for e in registry.models()]
DATA_NAMES = [e.name for e in registry.datamodules()]


def documented_arguments(doc: str) -> dict:
    """``name: meaning`` lines of a docstring's ``Arguments:`` section (zuko style)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    if "Arguments:" not in lines:
        return {}
    out = {}
    for line in lines[lines.index("Arguments:") + 1:]:
        if not line.startswith("    "):
            break
        m = re.fullmatch(r"    (\w+): (\S.*)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_registry_lists_the_foundation_entries():
    assert {"dham", "ram", "pham", "han", "cnn"} <= set(MODEL_NAMES) and "cluttered_mnist" in DATA_NAMES
    for e in registry.models() + registry.datamodules():
        assert e.description and "\n" not in e.description


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(registry.RegistryError, match="Valid models: .*dham"):
        registry.get_model("nope")
    with pytest.raises(registry.RegistryError, match="Did you mean cluttered_mnist"):
        registry.get_datamodule("cluttered_mnst")


def test_documented_arguments_parser():
    doc = """Summary.

    Arguments:
        a: first.
        bb: second, (H, W).

    Example:
        c: not an argument.
    """
    assert documented_arguments(doc) == {"a": "first.", "bb": "second, (H, W)."}
    assert documented_arguments("No section.") == {}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_implements_the_contract_itself(name):
    cls = registry.get_model(name).cls
    assert issubclass(cls, AttentionModel) and cls.registry_name == name
    assert cls.__module__.startswith("attention_lightning.models."), "one file per paper under models/"
    for method in ("loss_terms", "attention"):  # defined by the model, not the base's NotImplementedError
        assert getattr(cls, method) is not getattr(AttentionModel, method), f"{name} does not implement {method}"
    stages = cls.stages({})
    assert stages and all(isinstance(label, str) and isinstance(update, dict) for label, update in stages)
    assert set(cls.ignores_facts) <= set(MODEL_FACTS)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_documents_every_constructor_argument(name):
    cls = registry.get_model(name).cls
    assert "__doc__" in vars(cls) and cls.__doc__, f"{name} has no docstring of its own"
    documented = documented_arguments(cls.__doc__)
    args = parameters(cls)
    assert list(documented) == list(args), f"{name}: Arguments section and constructor differ"
    assert all(p.default is not inspect.Parameter.empty for p in args.values()), f"{name}: every argument has a default"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_takes_the_image_facts(name):
    args = parameters(registry.get_model(name).cls)
    assert {"num_classes", "in_channels"} <= set(args)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_choice_is_a_literal_checked_at_construction(name):
    cls = registry.get_model(name).cls
    literal = {n: p.annotation for n, p in parameters(cls).items() if choices(p.annotation)}
    for arg in literal:
        with pytest.raises(ValueError, match=rf"^--{arg}='nonsense' is not supported; use one of "):
            cls(**{arg: "nonsense"})
    plain_str = [n for n, p in parameters(cls).items() if p.annotation is str]
    assert not plain_str, f"{name}: {plain_str} take any string; annotate the choices as Literal[...]"


@pytest.mark.parametrize("name", sorted(TINY_FLAGS))
def test_every_model_builds_from_its_datamodules_facts(name):
    p = experiment.plan({**TINY_FLAGS[name], "logger": "none"})
    dm = experiment.build_datamodule(p)
    facts = registry.data_facts(dm)
    assert isinstance(facts, DataFacts)
    model = experiment.build_model(p, dm)
    for fact, value in facts.model_facts().items():
        if fact not in type(model).ignores_facts and fact not in p.model_kwargs:
            assert model.hparams[fact] == value, f"{name} did not take the data's {fact}"


def test_a_fact_the_model_cannot_take_is_an_error_naming_it():
    p = experiment.plan({"model": "dham", "data": "vqa_scenes", "logger": "none"})
    dm = experiment.build_datamodule(p)
    with pytest.raises(experiment.UserError, match=r"model 'dham' cannot use the data's vocab_size=\d+"):
        experiment.build_model(p, dm)
