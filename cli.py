"""attention-lightning command line (fire).

    python cli.py list
    python cli.py fit [--model=dham] [--data=cluttered_mnist] [--config=configs/X.yaml] [--any_flag=value ...]
    python cli.py test --ckpt=runs/.../checkpoints/last.ckpt
    python cli.py visualize --ckpt=runs/.../checkpoints/last.ckpt --out=attention.png  (or .gif: a frame per step)
    python cli.py export --ckpt=runs/.../checkpoints/best-....ckpt --out=exports/NAME  (safetensors + card)

Every other flag is routed by name to the model, the datamodule or ``pl.Trainer`` (prefix with
``model.``, ``data.`` or ``trainer.`` when two take the same name). See README.md.
"""
from __future__ import annotations

import sys
from typing import Any

import fire

from attention_lightning import registry
from attention_lightning.run import commands
from attention_lightning.run.plan import UserError


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _print_summary(summary: dict) -> None:
    test = summary.get("test") or {}
    if summary.get("digits"):
        print(f"digits:          {summary['digits']}")
    for key in sorted(test):
        print(f"{key + ':':<16} {test[key]:.4f}")
    for key in ("best_checkpoint", "last_checkpoint", "checkpoint", "run_dir"):
        if summary.get(key):
            print(f"{key.replace('_', ' ') + ':':<16} {summary[key]}")


def list_() -> None:
    """Print the registered models and datamodules with a one-line description each."""
    print("models (--model=NAME):")
    for e in registry.models():
        print(f"  {e.name:<18} {e.description}")
    print("datamodules (--data=NAME):")
    for e in registry.datamodules():
        print(f"  {e.name:<18} {e.description}")


def fit(**flags: Any) -> None:
    """Train --model on --data, then test the best checkpoint; prints test metrics and paths."""
    try:
        _print_summary(commands.fit(flags))
    except UserError as e:
        _fail(str(e))


def test(**flags: Any) -> None:
    """Test a checkpoint or an export: --ckpt=PATH or --pretrained=DIR [datamodule or trainer flags]."""
    try:
        _print_summary(commands.test(flags))
    except UserError as e:
        _fail(str(e))


def visualize(**flags: Any) -> None:
    """Draw a checkpoint's (or with --pretrained=DIR an export's) attention: --ckpt=PATH --out=FILE.png|FILE.gif
    [--num_images=8] [--split=val|test]."""
    try:
        s = commands.visualize(flags)
    except UserError as e:
        _fail(str(e))
    acc = "" if s["accuracy"] is None else f", accuracy {s['accuracy']:.2f}"
    print(f"wrote {s['out']} ({s['model']}: {s['images']} images, {s['steps']} step(s){acc})")


def export(**flags: Any) -> None:
    """Export a checkpoint as a folder that loads without its run: --ckpt=PATH --out=DIR [--overwrite=true]."""
    from attention_lightning.run import export as exporting

    try:
        s = exporting.export(flags)
    except UserError as e:
        _fail(str(e))
    note = f"; {s['note']}" if s["note"] else ""
    print(f"wrote {s['out']} ({s['model']} from {s['checkpoint']}{note}: {', '.join(s['files'])})")


COMMANDS = {"list": list_, "fit": fit, "test": test, "visualize": visualize, "export": export}


def unconsumed(args: list[str]) -> str | None:
    """The first argument after the command that is not a flag or a flag's value (``lr=0.5``, a stray word):
    fire would run the whole command first and only then say it could not consume it."""
    takes_value = False
    for a in args[1:]:
        if a.startswith("-") and a.strip("-"):
            takes_value = "=" not in a  # --name value
        elif takes_value:
            takes_value = False
        else:
            return a
    return None


def main() -> None:
    args = sys.argv[1:]
    if "--" in args:  # fire would read what follows as its own flags (and run the command anyway)
        command = args[0] if args and args[0] in COMMANDS else "fit"
        _fail(f"`--` is not a flag of `{command}`; write flags as --name=value, and ask for help with "
              f"`python cli.py {command} --help`")
    if args and args[0] in COMMANDS and (stray := unconsumed(args)) is not None:
        hint = f"; did you mean --{stray}?" if "=" in stray and not stray.startswith("-") else ""
        _fail(f"`{stray}` is not a flag of `{args[0]}`: write flags as --name=value{hint}")
    if args and args[0] in ("fit", "test", "visualize", "export") and ("--help" in args or "-h" in args):
        given = dict(a[2:].split("=", 1) for a in args[1:] if a.startswith("--") and "=" in a)
        try:
            print(commands.help_text(args[0], {k: v for k, v in given.items() if k in ("model", "data", "config")}))
        except UserError as e:
            _fail(str(e))
        return
    try:
        fire.Fire(COMMANDS)
    except KeyboardInterrupt:  # Ctrl-C before training started (during training it stops at a batch boundary)
        command = args[0] if args else ""
        _fail("stopped by Ctrl-C before training started: a new run leaves no folder, a resumed one is as it was"
              if command == "fit" else f"stopped by Ctrl-C: `{command}` wrote nothing")


if __name__ == "__main__":
    main()
