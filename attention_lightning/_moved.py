"""The import paths of the modules that moved into ``attention_lightning.run`` and ``attention_lightning.viz``.

``MOVED`` names each old module, what its old names do now and the modules that hold them. ``forward``: the names
still import (``from attention_lightning.experiment import fit`` gives ``attention_lightning.run.commands.fit``);
``refuse``: each name fails with one ``ImportError`` line naming the module to import it from. The old modules are
made on import by ``OldPaths``, a finder on ``sys.meta_path`` that answers for these names only.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

PACKAGE = "attention_lightning"
MOVED: dict[str, tuple[str, tuple[str, ...]]] = {  # old module -> (forward | refuse, the modules that hold its names)
    "experiment": ("forward", ("run.commands",)),
    "runs": ("forward", ("run.folders", "run.checkpoints", "run.resume", "run.trainer", "run.loggers", "run.plan")),
    "plan": ("forward", ("run.plan", "run.flags")),
    "flags": ("forward", ("signature", "run.flags")),
    "callbacks": ("forward", ("viz.logger", "viz.files", "viz.wandb_media", "attention")),
    "export": ("forward", ("run.export", "signature")),
    "pretrained": ("forward", ("run.pretrained",)),
    "runio": ("refuse", ("run.checkpoints", "run.loader", "run.signals", "run.folders", "run.loggers")),
    "runconfig": ("refuse", ("run.runconfig",)),
    "progress": ("refuse", ("run.progress",)),
    "help": ("refuse", ("run.help",)),
}


def holder(old: str, name: str) -> tuple[str, Any] | None:
    """The module that holds ``name`` of the old module ``old`` now (where it is defined, if one of them does), and
    the object; None when none of them has it."""
    found = []
    for place in MOVED[old][1]:
        module = importlib.import_module(f"{PACKAGE}.{place}")
        if hasattr(module, name):
            found.append((module.__name__, getattr(module, name)))
    for module_name, obj in found:
        if getattr(obj, "__module__", None) == module_name:
            return module_name, obj
    return found[0] if found else None


class _OldModule(importlib.abc.Loader):
    """Makes an old module whose attributes are looked up by ``holder``."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__.rpartition(".")[2]
        kind, places = MOVED[old]
        module.__doc__ = f"Moved to {', '.join(f'{PACKAGE}.{p}' for p in places)}."

        def __getattr__(name: str) -> Any:
            found = None if name.startswith("__") else holder(old, name)
            if found is None:
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
            if kind == "refuse":
                raise ImportError(f"{module.__name__}.{name} has moved: import it from {found[0]} "
                                  f"(from {found[0]} import {name})")
            return found[1]

        module.__getattr__ = __getattr__  # type: ignore[method-assign]


class OldPaths(importlib.abc.MetaPathFinder):
    """Finds the old modules of ``MOVED`` (only those) and makes them with ``_OldModule``."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != PACKAGE or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _OldModule())


def install() -> None:
    """Put ``OldPaths`` first on ``sys.meta_path`` (once), so that an old module is never found in another copy of the
    package (an editable install's finder maps the package's names to its own folder)."""
    if not any(isinstance(f, OldPaths) for f in sys.meta_path):
        sys.meta_path.insert(0, OldPaths())
