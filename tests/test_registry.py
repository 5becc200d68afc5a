"""Every registered model and datamodule, through the same checks: the registry is the list."""
import pytest

from attention_lightning import registry
from attention_lightning.models.base import AttentionModel

MODEL_NAMES = [e.name for e in registry.models()]
DATA_NAMES = [e.name for e in registry.datamodules()]


def test_registry_lists_the_foundation_entries():
    assert "dham" in MODEL_NAMES and "cluttered_mnist" in DATA_NAMES
    for e in registry.models() + registry.datamodules():
        assert e.description and "\n" not in e.description


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(registry.RegistryError, match="Valid models: .*dham"):
        registry.get_model("nope")
    with pytest.raises(registry.RegistryError, match="Did you mean cluttered_mnist"):
        registry.get_datamodule("cluttered_mnst")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_is_an_attention_model_with_paper_defaults(name):
    cls = registry.get_model(name).cls
    assert issubclass(cls, AttentionModel)
    assert cls.__init__.__doc__ is None or isinstance(cls.__init__.__doc__, str)
    assert cls.__module__.startswith("attention_lightning.models."), "one file per paper under models/"
    assert (cls.__doc__ or registry.get_model(name).description), "a model says what it is"


@pytest.mark.parametrize("name", DATA_NAMES)
def test_every_datamodule_states_what_models_need(name):
    cls = registry.get_datamodule(name).cls
    assert hasattr(cls, "model_kwargs") and hasattr(cls, "num_classes")
