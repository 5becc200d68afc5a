"""Reading constructor signatures: the keyword parameters a class takes (through ``**kwargs`` along its MRO), whether
a value fits a parameter's annotation, and the small conversions fire cannot know about. Models, datamodules and
the CLI's flag routing read them."""
from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any


def parameters(fn: Callable, skip: Iterable[str] = ()) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``fn`` (a class means its ``__init__``), with resolved annotations.

    For a class whose ``__init__`` takes ``**kwargs``, the options it passes on are those of the next
    ``__init__`` along the MRO, and so on while each takes ``**kwargs``; a subclass's own default wins.
    """
    inits = [c.__dict__["__init__"] for c in fn.__mro__ if "__init__" in c.__dict__] if inspect.isclass(fn) else [fn]
    out: dict[str, inspect.Parameter] = {}
    for init in inits:
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # unresolved forward references: fall back to the raw annotations
            hints = {}
        forwards = False
        for name, p in inspect.signature(init).parameters.items():
            if p.kind == p.VAR_KEYWORD:
                forwards = True
            if name in ("self", *skip) or name in out or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[name] = p.replace(annotation=hints.get(name, p.annotation))
        if not forwards:
            break
    return out


def conforms(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (as fire parsed it) fits ``annotation``; unknown annotations accept anything."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return any(conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args or str(value) in {str(a) for a in args}
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(conforms(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return all(conforms(v, inner) for v in value)
    if inspect.isclass(annotation) and annotation.__module__ == "builtins":
        return isinstance(value, annotation)
    return True  # a library type we do not model: let the constructor judge


def describe(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    return getattr(annotation, "__name__", None) if inspect.isclass(annotation) else str(annotation).replace("typing.", "")


def coerce(value: Any, annotation: Any) -> Any:
    """Small, lossless conversions fire cannot know about: 'true'/'false' for bools, a scalar for a 1-list."""
    wants = {annotation, *typing.get_args(annotation)}
    if isinstance(value, str) and value.lower() in ("true", "false") and bool in wants:
        return value.lower() == "true"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not conforms(value, annotation):
        if conforms([value], annotation):
            return [value]
    return value
