import inspect
from typing import Literal, Optional
from collections.abc import Sequence

import pytest

from attention_lightning.run.flags import FlagError, route
from attention_lightning.signature import conforms, parameters


def model(lr: float = 1e-3, glimpses: int = 6, core: str = "rnn", sizes: Sequence[int] = (8,), shared: int = 1):
    pass


def data(batch_size: int = 32, snr: float | None = None, shared: int = 2,
         scale_range: tuple[float, float] | None = None):
    pass


def trainer(max_epochs: int | None = None, precision: Literal["32", "bf16-mixed"] = "32",
            devices: int | str = "auto"):
    pass


SIGS = {"model": parameters(model), "data": parameters(data), "trainer": parameters(trainer)}


def test_flags_go_where_their_names_are_taken():
    routed, own = route({"lr": 3e-4, "batch_size": 8, "max_epochs": 2, "precision": "bf16-mixed", "seed": 3,
                         "glimpses": 4, "devices": 2, "snr": 2}, SIGS, own=("seed",))
    assert routed == {"model": {"lr": 3e-4, "glimpses": 4}, "data": {"batch_size": 8, "snr": 2},
                      "trainer": {"max_epochs": 2, "precision": "bf16-mixed", "devices": 2}}
    assert own == {"seed": 3}


def test_unknown_flag_names_the_closest_valid_flags():
    with pytest.raises(FlagError, match=r"unknown flag --lrr; did you mean --lr\?"):
        route({"lrr": 1}, SIGS)
    with pytest.raises(FlagError, match="--glimpses"):
        route({"glimpse": 3}, SIGS)


def test_ambiguous_flag_asks_for_a_prefix_and_prefix_resolves_it():
    with pytest.raises(FlagError, match=r"ambiguous.*--model.shared or --data.shared"):
        route({"shared": 5}, SIGS)
    routed, _ = route({"model.shared": 5, "data.shared": 6}, SIGS)
    assert routed["model"] == {"shared": 5} and routed["data"] == {"shared": 6}


def test_wrong_types_are_rejected_with_the_expected_type():
    with pytest.raises(FlagError, match=r"--lr='abc' has the wrong type: model expects float"):
        route({"lr": "abc"}, SIGS)
    with pytest.raises(FlagError, match="--glimpses"):
        route({"glimpses": 2.5}, SIGS)
    with pytest.raises(FlagError, match="--precision"):
        route({"precision": "fp8"}, SIGS)


def test_small_coercions():
    routed, _ = route({"sizes": 16, "lr": 1, "scale_range": (0.5, 1.0)}, SIGS)
    assert routed["model"] == {"sizes": [16], "lr": 1}
    assert routed["data"] == {"scale_range": (0.5, 1.0)}


def test_conforms_on_typing_forms():
    assert conforms(None, Optional[int]) and not conforms("x", Optional[int])  # noqa: UP045 (the typing form users may write)
    assert conforms([1, 2], Sequence[int]) and not conforms([1, "a"], Sequence[int])
    assert conforms(True, bool) and not conforms(1, bool) and not conforms(True, int)
    assert conforms("anything", inspect.Parameter.empty)


class _Base:
    def __init__(self, a: int = 1, b: str = "x") -> None:
        pass


class _Middle(_Base):
    def __init__(self, c: float = 2.0, b: str = "y", **rest) -> None:
        super().__init__(b=b, **rest)


class _Leaf(_Middle):
    pass


class _Closed(_Base):
    def __init__(self, d: bool = True) -> None:  # takes no **kwargs: the base's options are not its own
        super().__init__()


def test_parameters_follow_kwargs_along_the_mro():
    sig = parameters(_Leaf)
    assert list(sig) == ["c", "b", "a"]
    assert sig["b"].default == "y" and sig["a"].default == 1 and sig["a"].annotation is int
    assert list(parameters(_Closed)) == ["d"]
    routed, _ = route({"a": 3, "c": 1.5}, {"data": sig})
    assert routed["data"] == {"a": 3, "c": 1.5}
    with pytest.raises(FlagError, match=r"--a='3x' has the wrong type: data expects int"):
        route({"a": "3x"}, {"data": sig})
