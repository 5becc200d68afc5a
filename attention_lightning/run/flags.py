"""The CLI's own flags, declared once, and the routing of every other flag by the constructors' signatures.

Each command's own flags are ``Flag`` declarations (``COMMANDS``): a type (``int``, ``Literal[...]``, ...), a
default and a one-line meaning. The plan's routing and checks, ``--help`` and the arguments the Trainer is built
with (``TRAINER_BUILT``) all read them.

The other flags are routed: ``--lr=3e-4`` goes to whichever constructor takes ``lr``; a name two of them take must be
prefixed (``--model.x``, ``--data.x``, ``--trainer.x``). Unknown names, ambiguous names and values of the wrong
type raise ``FlagError`` naming the closest valid flags.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..signature import coerce, conforms, describe

TARGETS = ("model", "data", "trainer")


class FlagError(ValueError):
    """A flag that cannot be routed or has a value of the wrong type; the message says how to fix it."""


@dataclass(frozen=True)
class Flag:
    """One of a command's own flags.

    Arguments:
        name: the flag, ``--name``.
        type: what its value must be, as an annotation (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``,
            ``str | int``); a ``Literal`` of strings is its list of choices.
        default: its value when it is not given.
        meaning: one line for ``--help``.
        fix: what the value must be, said after ``--name=value`` when it is not (``must be an integer``); without
            it the value is not checked.
        minimum: the smallest value it takes, if any.
        shown: the default as ``--help`` shows it, where it is worked out at run time (``<model>-<data>``).
        trainer: the ``pl.Trainer`` argument it builds (a callback, the logger), which no flag then sets directly.
        check: a check of its own instead of the type's: returns the value to use, or raises ``FlagError``.
    """
    name: str
    type: Any
    default: Any
    meaning: str
    fix: str = ""
    minimum: float | None = None
    shown: Any = None
    trainer: str | None = None
    check: Callable[[Any], Any] | None = None

    @property
    def choices(self) -> tuple[Any, ...]:
        return typing.get_args(self.type) if typing.get_origin(self.type) is Literal else ()

    @property
    def kind(self) -> str:
        """The type as ``--help`` writes it: ``str`` for choices and paths, else the type's name."""
        first = (typing.get_args(self.type) or (self.type,))[0]
        return type(first).__name__ if self.choices else getattr(first, "__name__", str(first))

    def value(self, value: Any) -> Any:
        """``value`` (as fire parsed it) checked against this declaration; a ``FlagError`` says what it must be. A
        flag that declares no ``fix`` (a path, a name) is taken as given: fire reads ``--out=5`` as the number 5."""
        if self.check is not None:
            return self.check(value)
        if not self.fix:
            return value
        if self.choices and all(isinstance(c, str) for c in self.choices):
            value = str(value)
        value = coerce(value, self.type)
        if not conforms(value, self.type) or (self.minimum is not None and value < self.minimum):
            raise FlagError(f"--{self.name}={value!r} {self.fix}")
        return value


def check_run_name(value: Any) -> str:
    """A run name is a folder name under ``--default_root_dir``, never a path out of it."""
    name = str(value)
    if isinstance(value, bool) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name or \
            "\0" in name or len(name.encode()) > 255:
        raise FlagError(f"--run_name={value!r} is not a folder name (a name, not a path: no '/', not '.' or '..', "
                        f"at most 255 bytes); to write elsewhere pass --default_root_dir=DIR")
    return name


LOGGER_KINDS = Literal["csv", "tensorboard", "wandb", "none"]
SPLITS = Literal["val", "test"]
MODEL = Flag("model", str, "dham", "registered model (python cli.py list)")
DATA = Flag("data", str, "cluttered_mnist", "registered datamodule (python cli.py list)")
CONFIG = Flag("config", str, None, "a preset: flat YAML of flag values (configs/*.yaml); flags given override it")
SEED = Flag("seed", int, 0, "seed of every RNG (weights, data order, train items)", "must be an integer")
RESUME = Flag("resume", str | int, None, "continue a run: last (the newest state of the newest run) or a .ckpt path",
              "needs a value: --resume=last or --resume=PATH of a .ckpt")
LOGGER = Flag("logger", LOGGER_KINDS, "csv", " | ".join(typing.get_args(LOGGER_KINDS)),
              f"is not a logger; use one of {', '.join(typing.get_args(LOGGER_KINDS))}", trainer="logger")
RUN_NAME = Flag("run_name", str, None, "run folder name under --default_root_dir", shown="<model>-<data>",
                check=check_run_name)
VIZ_EVERY = Flag("viz_every_n_steps", int, 500, "log attention pictures every n training steps",
                 "must be an integer >= 0 (0 turns logging every N steps off)", 0, trainer="callbacks")
VIZ_IMAGES = Flag("viz_images", int, 8, "images per attention picture (0: none)",
                  "must be an integer >= 0 (0 turns attention pictures off)", 0, trainer="callbacks")
EVERY_MINUTES = Flag("checkpoint_every_n_minutes", float, 10, "write last.ckpt mid-epoch every n minutes (0: off)",
                     "must be a number >= 0 (0 turns it off)", 0, trainer="callbacks")
EVERY_STEPS = Flag("checkpoint_every_n_steps", int, 0, "write last.ckpt mid-epoch every n steps (0: off)",
                   "must be a number >= 0 (0 turns it off)", 0, trainer="callbacks")
COMPILE = Flag("compile", bool, False,
               "compile each model's training computation with torch.compile (checkpoints load without it)",
               "must be true or false")
CKPT = Flag("ckpt", str, None, "the checkpoint to load")
PRETRAINED = Flag("pretrained", str, None,
                  "an export folder (python cli.py export) or Hub repo id to load instead of --ckpt")
OUT = Flag("out", str, None, "picture to write: .png, .jpg, .pdf, .svg, or .gif (one frame per step)")
NUM_IMAGES = Flag("num_images", int, 8, "images to draw", "must be an integer >= 1", 1)
SPLIT = Flag("split", SPLITS, "val", " | ".join(typing.get_args(SPLITS)),
             "is not drawable; use --split=val or --split=test")
OVERWRITE = Flag("overwrite", bool, False, "replace a non-empty --out that holds no previous export",
                 "must be true or false")

COMMANDS: dict[str, tuple[Flag, ...]] = {  # each command's own flags (the rest are routed to model, data, Trainer)
    "fit": (MODEL, DATA, CONFIG, SEED, RESUME, LOGGER, RUN_NAME, VIZ_EVERY, VIZ_IMAGES, EVERY_MINUTES, EVERY_STEPS,
            COMPILE),
    "test": (MODEL, DATA, CONFIG, SEED, CKPT, PRETRAINED, LOGGER),
    "visualize": (MODEL, DATA, CONFIG, SEED, CKPT, PRETRAINED, OUT, NUM_IMAGES, SPLIT, LOGGER),
    "export": (MODEL, DATA, CONFIG, SEED,
               dataclasses.replace(CKPT, meaning="the checkpoint to export, or a run folder (its best, else last, "
                                                 "checkpoint)"),
               dataclasses.replace(OUT, meaning="the folder to write: model.safetensors, config.json, README.md, "
                                                "attention.png"),
               OVERWRITE, dataclasses.replace(NUM_IMAGES, meaning="images in the card's attention picture"),
               dataclasses.replace(SPLIT, default="test", meaning="val | test: the split the attention picture is "
                                                                  "drawn from"), LOGGER),
}
RECORDED = (MODEL, DATA, SEED, LOGGER)  # in every plan's flags, given or not
TRAINER_DEFAULTS: dict[str, Any] = {"max_epochs": 3, "default_root_dir": "runs"}  # the CLI's, not Lightning's
# Trainer arguments that no flag sets directly: built from the flags that declare them, or by the run itself
TRAINER_BUILT = (*dict.fromkeys(f.trainer for flags in COMMANDS.values() for f in flags if f.trainer),
                 "enable_checkpointing", "plugins")
HINTS = {("fit", "ckpt"): "; to continue a run use --resume=last or --resume=PATH",
         ("test", "resume"): "; test takes --ckpt=PATH", ("visualize", "resume"): "; visualize takes --ckpt=PATH",
         ("export", "resume"): "; export takes --ckpt=PATH"}


def declared(command: str, name: str) -> Flag:
    """The declaration of ``--name`` for ``command``."""
    return next(f for f in COMMANDS[command] if f.name == name)


def own_flags(command: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every own flag of ``command``: the checked value of each one ``given``, the default of the others; a flag of
    another command is a ``FlagError`` saying whose it is."""
    mine = {f.name: f for f in COMMANDS[command]}
    for name in given:
        if name not in mine:
            owners = [c for c, flags in COMMANDS.items() if name in {f.name for f in flags}]
            raise FlagError(f"--{name} is a flag of `{'`/`'.join(owners)}`, not of `{command}`"
                            + HINTS.get((command, name), f"; see `python cli.py {command} --help`"))
    return {name: f.value(given[name]) if name in given else f.default for name, f in mine.items()}


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
