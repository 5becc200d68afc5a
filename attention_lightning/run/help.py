"""``python cli.py <command> --help``: every flag the command accepts, grouped as cli / model / data / trainer,
with its type, default and the one-line meaning from the class docstring's ``Arguments:`` (or ``Args:``)
section."""
from __future__ import annotations

import inspect
import re
from typing import Any
from collections.abc import Mapping

from ..signature import describe

CLI_MEANINGS = {  # the CLI's own flags (see plan.COMMAND_FLAGS)
    "model": ("str", "dham", "registered model (python cli.py list)"),
    "data": ("str", "cluttered_mnist", "registered datamodule (python cli.py list)"),
    "config": ("str", None, "a preset: flat YAML of flag values (configs/*.yaml); flags given override it"),
    "seed": ("int", 0, "seed of every RNG (weights, data order, train items)"),
    "resume": ("str", None, "continue a run: last (the newest state of the newest run) or a .ckpt path"),
    "logger": ("str", "csv", "csv | tensorboard | wandb | none"),
    "run_name": ("str", "<model>-<data>", "run folder name under --default_root_dir"),
    "viz_every_n_steps": ("int", 500, "log attention pictures every n training steps"),
    "viz_images": ("int", 8, "images per attention picture (0: none)"),
    "checkpoint_every_n_minutes": ("float", 10, "write last.ckpt mid-epoch every n minutes (0: off)"),
    "checkpoint_every_n_steps": ("int", 0, "write last.ckpt mid-epoch every n steps (0: off)"),
    "compile": ("bool", False, "compile each model's training computation with torch.compile (checkpoints load without it)"),
    "ckpt": ("str", None, "the checkpoint to load"),
    "out": ("str", None, "picture to write: .png, .jpg, .pdf, .svg, or .gif (one frame per step)"),
    "num_images": ("int", 8, "images to draw"),
    "split": ("str", "val", "val | test"),
    "pretrained": ("str", None, "an export folder (python cli.py export) or Hub repo id to load instead of --ckpt"),
    "overwrite": ("bool", False, "replace a non-empty --out that holds no previous export"),
}
COMMAND_MEANINGS = {  # where a flag means something else for one command
    ("export", "ckpt"): ("str", None, "the checkpoint to export, or a run folder (its best, else last, checkpoint)"),
    ("export", "out"): ("str", None, "the folder to write: model.safetensors, config.json, README.md, attention.png"),
    ("export", "num_images"): ("int", 8, "images in the card's attention picture"),
    ("export", "split"): ("str", "test", "val | test: the split the attention picture is drawn from"),
}


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


def render(command: str, own: list[str], groups: Mapping[str, tuple], preset: str | None = None,
           preset_values: Mapping[str, Any] | None = None) -> str:
    """The help text: ``groups`` maps a title to ``(class, {name: inspect.Parameter})``."""
    lines = [f"usage: python cli.py {command} [--flag=value ...]"]
    if preset:
        lines.append(f"preset in use: {preset}: " + ", ".join(f"{k}={v}" for k, v in (preset_values or {}).items()))
    lines.append("a flag two groups take is written --model.NAME, --data.NAME or --trainer.NAME")
    lines += ["", "cli:"]
    for name in own:
        kind, default, meaning = COMMAND_MEANINGS.get((command, name)) or CLI_MEANINGS.get(name, ("any", None, ""))
        lines.append(_row(name, kind, default, meaning))
    for title, (cls, params) in groups.items():
        meanings = argument_lines(cls)
        lines += ["", f"{title}:"]
        for name, p in params.items():
            default = None if p.default is inspect.Parameter.empty else p.default
            lines.append(_row(name, describe(p.annotation), default, meanings.get(name, "(undocumented)")))
    return "\n".join(lines)


def _row(name: str, kind: str, default: Any, meaning: str) -> str:
    return f"  --{name:<28} {kind:<24} default {default!r:<14} {meaning}"
