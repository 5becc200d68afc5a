"""``python cli.py <command> --help``: every flag the command accepts, grouped as cli / model / data / trainer,
with its type, default and the one-line meaning from the class docstring's ``Arguments:`` (or ``Args:``)
section."""
from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..signature import describe
from .flags import COMMANDS, Flag

CLI_MEANINGS = {  # name -> (type, default, meaning) of the CLI's own flags, as the first command declaring it has it
    f.name: (f.kind, f.default if f.shown is None else f.shown, f.meaning)
    for flags in reversed(COMMANDS.values()) for f in flags}


def argument_lines(cls: Any) -> dict[str, str]:
    """``name -> one-line meaning`` from the ``Arguments:``/``Args:`` sections of ``cls`` and its bases."""
    meanings: dict[str, str] = {}
    owners = inspect.getmro(cls) if inspect.isclass(cls) else (cls,)
    for owner in owners:
        for doc in (owner.__doc__, getattr(owner.__dict__.get("__init__"), "__doc__", None)):
            for name, text in _section(doc or ""):
                meanings.setdefault(name, text)
    return meanings


def _section(doc: str) -> list[tuple]:
    lines = inspect.cleandoc(doc).splitlines()
    out: list[tuple] = []
    inside, indent = False, None
    for line in lines:
        if re.fullmatch(r"\s*(Arguments|Args):\s*", line):
            inside, indent = True, None
            continue
        if not inside:
            continue
        if line.strip() and not line.startswith(" "):  # the next section
            inside = False
            continue
        m = re.match(r"^(\s+)(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            out.append([m.group(2), m.group(3).strip()])
        elif out and line.strip():
            out[-1][1] += " " + line.strip()
    return [(name, _first_sentence(text)) for name, text in out]


def _first_sentence(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    m = re.search(r"\.\s", text + " ")
    return text[: m.start() + 1] if m else text


def render(command: str, own: Sequence[Flag], groups: Mapping[str, tuple], preset: str | None = None,
           preset_values: Mapping[str, Any] | None = None) -> str:
    """The help text: ``own`` are the command's declared flags, ``groups`` maps a title to
    ``(class, {name: inspect.Parameter})``."""
    lines = [f"usage: python cli.py {command} [--flag=value ...]"]
    if preset:
        lines.append(f"preset in use: {preset}: " + ", ".join(f"{k}={v}" for k, v in (preset_values or {}).items()))
    lines.append("a flag two groups take is written --model.NAME, --data.NAME or --trainer.NAME")
    lines += ["", "cli:"]
    for f in own:
        lines.append(_row(f.name, f.kind, f.default if f.shown is None else f.shown, f.meaning))
    for title, (cls, params) in groups.items():
        meanings = argument_lines(cls)
        lines += ["", f"{title}:"]
        for name, p in params.items():
            default = None if p.default is inspect.Parameter.empty else p.default
            lines.append(_row(name, describe(p.annotation), default, meanings.get(name, "(undocumented)")))
    return "\n".join(lines)


def _row(name: str, kind: str, default: Any, meaning: str) -> str:
    return f"  --{name:<28} {kind:<24} default {default!r:<14} {meaning}"
