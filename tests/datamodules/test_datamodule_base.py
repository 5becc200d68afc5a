"""Options shared by several datamodules are declared once and still reach the flag router typed, with defaults,
documented and checked; every datamodule states its facts."""
import inspect
from typing import Literal

import pytest

from attention_lightning import registry
from attention_lightning.facts import DataFacts
from attention_lightning.run.flags import FlagError, route
from attention_lightning.signature import parameters
from datamodules.base import argument_docs
from datamodules.cluttered_mnist import ClutteredMNIST
from datamodules.tiny_datasets import make_cifar10, make_cinic10, make_svhn, make_tiny_imagenet

OURS = ["cluttered_mnist", "svhn", "cifar10", "cifar100", "cinic10", "tiny_imagenet"]  # vqa_scenes is h-vqa's
SHARED = ["batch_size", "num_workers", "pin_memory", "download", "checksum", "split_seed", "random_crop",
          "normalize", "limit", "cache", "cache_dir"]


def declared_in(name: str) -> set:
    """The classes whose own __init__ lists ``name``, over the MROs of our datamodules."""
    classes = {c for n in OURS for c in registry.get_datamodule(n).cls.__mro__ if "__init__" in c.__dict__}
    return {c for c in classes if name in inspect.signature(c.__dict__["__init__"]).parameters}


@pytest.mark.parametrize("name", SHARED)
def test_shared_options_are_declared_once(name):
    assert len(declared_in(name)) == 1, declared_in(name)


def test_inherited_options_reach_the_router_with_type_and_subclass_default():
    svhn = parameters(registry.get_datamodule("svhn").cls)
    assert svhn["hflip"].default is False and svhn["hflip"].annotation is bool  # SVHN's own default wins
    assert svhn["batch_size"].default == 128 and svhn["batch_size"].annotation is int  # from BaseDataModule
    assert svhn["data_dir"].default == "data/svhn"
    tiny = parameters(registry.get_datamodule("tiny_imagenet").cls)
    assert tiny["crop_padding"].default == 8 and tiny["cache"].default is True
    routed, _ = route({"num_workers": 2, "cache": "false"}, {"data": tiny})
    assert routed["data"] == {"num_workers": 2, "cache": False}
    with pytest.raises(FlagError, match=r"--num_workers='two' has the wrong type: data expects int"):
        route({"num_workers": "two"}, {"data": tiny})


@pytest.mark.parametrize("name", OURS)
def test_every_constructor_argument_has_a_one_line_meaning(name):
    cls = registry.get_datamodule(name).cls
    docs = argument_docs(cls)
    missing = [p for p in parameters(cls) if not docs.get(p)]
    assert not missing, f"{name}: no Arguments: line for {missing}"


def test_choices_are_literal_annotations_checked_by_router_and_constructor():
    sig = parameters(ClutteredMNIST)
    assert sig["variant"].annotation == Literal["dham", "translated", "cluttered"]
    with pytest.raises(FlagError, match=r"--variant='clutered' has the wrong type"):
        route({"variant": "clutered"}, {"data": sig})
    with pytest.raises(ValueError, match=r"--variant='clutered' is not one of dham, translated, cluttered"):
        ClutteredMNIST(variant="clutered")
    with pytest.raises(ValueError, match=r"--channels=2 is not one of 1, 3"):
        ClutteredMNIST(channels=2)
    assert ClutteredMNIST(channels=3, variant="translated").dims == (3, 60, 60)


def test_facts_of_cluttered_mnist_name_the_resolved_digit_source():
    dm = ClutteredMNIST(variant="translated", digits="embedded", train_size=8, val_size=4, test_size=6, channels=3)
    before = dm.facts()
    assert isinstance(before, DataFacts) and before.provenance == {}
    assert before.model_facts() == {"num_classes": 10, "in_channels": 3, "image_size": (60, 60)}
    dm.setup()
    facts = dm.facts()
    assert facts.provenance["digit_source"].startswith("embedded (5000 digits")
    assert facts.provenance["split_sizes"] == {"train": 8, "val": 4, "test": 6}
    assert facts.class_names == tuple(str(i) for i in range(10))
    assert dm.model_kwargs() == facts.model_facts()


@pytest.mark.parametrize("name, make", [
    ("svhn", lambda p: make_svhn(p)), ("cifar10", lambda p: make_cifar10(p)),
    ("cinic10", lambda p: make_cinic10(p, per_class=2)), ("tiny_imagenet", lambda p: make_tiny_imagenet(p)),
])
def test_facts_of_image_sets_name_the_folder_and_split_sizes(tmp_path, name, make):
    data_dir = make(tmp_path)
    dm = registry.get_datamodule(name).cls(data_dir=str(data_dir), checksum=False)
    dm.setup()
    facts = dm.facts()
    assert facts.provenance["data_dir"] == str(data_dir.resolve())
    sizes = facts.provenance["split_sizes"]
    assert sizes == {"train": len(dm.train_set), "val": len(dm.val_set), "test": len(dm.test_set)}
    assert min(sizes.values()) > 0
    assert facts.num_classes == len(facts.class_names) == len(set(facts.class_names))
    assert (facts.in_channels, *facts.image_size) == dm.dims
