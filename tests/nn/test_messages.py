"""Blocks in nn/ know nothing of the command line: their errors name arguments, never ``--flags``."""
import ast
from pathlib import Path

import attention_lightning.nn as nn_package

NN_FILES = sorted(Path(nn_package.__file__).parent.glob("*.py"))


def raised_texts(path: Path):
    """The literal text pieces of every ``raise`` statement in ``path``, with their line numbers."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for part in ast.walk(node.exc):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    yield node.lineno, part.value


def test_nn_errors_name_arguments_not_flags():
    texts = [(p.name, line, t) for p in NN_FILES for line, t in raised_texts(p)]
    assert len(texts) >= 15  # the scan reaches the messages (glimpse, grid, selection, flows, ...)
    flags = [f"{name}:{line}: {t!r}" for name, line, t in texts if "--" in t]
    assert not flags, "nn/ errors must name arguments; models translate them to flags:\n" + "\n".join(flags)
