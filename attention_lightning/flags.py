"""Route flat command-line flags to the model, the datamodule or the ``pl.Trainer`` by their signatures.

``--lr=3e-4`` goes to whichever constructor takes ``lr``; a name two of them take must be prefixed
(``--model.x``, ``--data.x``, ``--trainer.x``). Unknown names, ambiguous names and values of the wrong
type raise ``FlagError`` naming the closest valid flags.
"""
from __future__ import annotations

import collections.abc
import difflib
import inspect
import typing
from typing import Any
from collections.abc import Callable, Iterable, Mapping

TARGETS = ("model", "data", "trainer")


class FlagError(ValueError):
    """A flag that cannot be routed or has a value of the wrong type; the message says how to fix it."""


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


def route(
    flags: Mapping[str, Any], signatures: Mapping[str, dict[str, inspect.Parameter]], own: Iterable[str] = ()
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Split ``flags`` into kwargs per target (``signatures`` keys) plus the CLI's ``own`` flags."""
    own = set(own)
    routed: dict[str, dict[str, Any]] = {t: {} for t in signatures}
    mine: dict[str, Any] = {}
    valid = sorted(own | {n for sig in signatures.values() for n in sig})
    for raw, value in flags.items():
        name = raw.replace("-", "_")
        target, _, short = name.partition(".")
        if short:
            if target not in signatures:
                raise FlagError(f"--{raw}: prefix {target!r} is not one of {', '.join(signatures)}")
            owners = [target] if short in signatures[target] else []
            name = short
        elif name in own:
            mine[name] = value
            continue
        else:
            owners = [t for t, sig in signatures.items() if name in sig]
        if not owners:
            where = f" for the {target}" if short else ""
            pool = list(signatures[target]) if short else valid
            close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join('--' + c for c in close)}?" if close else "see `python cli.py fit --help`"
            raise FlagError(f"unknown flag --{raw}{where}; {hint}")
        if len(owners) > 1:
            raise FlagError(
                f"flag --{raw} is ambiguous: {', '.join(owners)} all take it; write "
                + " or ".join(f"--{o}.{name}" for o in owners)
            )
        param = signatures[owners[0]][name]
        value = coerce(value, param.annotation)
        if not conforms(value, param.annotation):
            raise FlagError(
                f"flag --{raw}={value!r} has the wrong type: {owners[0]} expects {describe(param.annotation)}"
            )
        routed[owners[0]][name] = value
    return routed, mine
