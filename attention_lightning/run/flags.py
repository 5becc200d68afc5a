"""Route flat command-line flags to the model, the datamodule or the ``pl.Trainer`` by their signatures.

``--lr=3e-4`` goes to whichever constructor takes ``lr``; a name two of them take must be prefixed
(``--model.x``, ``--data.x``, ``--trainer.x``). Unknown names, ambiguous names and values of the wrong
type raise ``FlagError`` naming the closest valid flags.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from ..signature import coerce, conforms, describe

TARGETS = ("model", "data", "trainer")


class FlagError(ValueError):
    """A flag that cannot be routed or has a value of the wrong type; the message says how to fix it."""


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
