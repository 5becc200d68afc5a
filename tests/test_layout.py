"""The library's house: files of at most 400 lines, no import circle, and the old module paths still answer."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import attention_lightning
from attention_lightning._moved import MOVED

PACKAGE = Path(attention_lightning.__file__).parent
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str], top_level_only: bool) -> set[str]:
    """The package's modules ``name`` imports (at module level, or anywhere in it)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as the list of modules around it), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_file_in_the_library_exceeds_400_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("top_level_only", [True, False], ids=["at-import", "with-lazy-imports"])
def test_the_library_has_no_import_circle(top_level_only):
    found = modules()
    graph = {n: imports(n, p, set(found), top_level_only) for n, p in found.items()}
    assert graph["attention_lightning.run.commands"] >= {"attention_lightning.run.plan", "attention_lightning.run.resume"}
    assert cycle(graph) is None


def test_the_cycle_finder_finds_a_circle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_top_level_keeps_the_contracts_and_the_signature_reader():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "_moved", "attention", "batches", "facts", "registry", "signature"]


FORWARDED = [("experiment", "fit", "run.commands"), ("experiment", "UserError", "run.plan"),
             ("experiment", "build_datamodule", "run.plan"), ("runs", "load_model", "run.checkpoints"),
             ("runs", "claim_new_run_dir", "run.folders"), ("plan", "plan", "run.plan"),
             ("flags", "parameters", "signature"), ("flags", "route", "run.flags"),
             ("callbacks", "AttentionLogger", "viz.logger"), ("callbacks", "first_items", "attention"),
             ("callbacks", "png_bytes", "viz.files"), ("export", "export", "run.export"),
             ("pretrained", "from_pretrained", "run.pretrained")]


@pytest.mark.parametrize("old, name, new", FORWARDED)
def test_old_paths_that_users_import_still_give_the_same_objects(old, name, new):
    namespace: dict = {}
    exec(f"from attention_lightning.{old} import {name}", namespace)
    assert namespace[name] is getattr(importlib.import_module(f"attention_lightning.{new}"), name)
    assert getattr(importlib.import_module(f"attention_lightning.{old}"), name) is namespace[name]


REFUSED = [("runio", "AtomicCheckpointIO", "run.checkpoints"), ("runio", "TrainStream", "run.loader"),
           ("runio", "StopSignals", "run.signals"), ("runio", "trim_metrics", "run.loggers"),
           ("runio", "claim_run_dir", "run.folders"), ("runconfig", "run_config", "run.runconfig"),
           ("progress", "SteadyBar", "run.progress"), ("help", "argument_lines", "run.help")]


@pytest.mark.parametrize("old, name, new", REFUSED)
def test_old_internal_paths_fail_with_one_line_naming_the_new_module(old, name, new):
    with pytest.raises(ImportError) as e:
        exec(f"from attention_lightning.{old} import {name}", {})
    message = str(e.value)
    assert "\n" not in message
    assert f"attention_lightning.{old}.{name} has moved: import it from attention_lightning.{new} " in message
    assert hasattr(importlib.import_module(f"attention_lightning.{new}"), name)  # the place it names holds it


def test_every_old_path_is_listed_and_unknown_names_are_attribute_errors():
    assert set(MOVED) == {"experiment", "runs", "plan", "flags", "callbacks", "export", "pretrained", "runio",
                          "runconfig", "progress", "help"}
    for old in MOVED:
        module = importlib.import_module(f"attention_lightning.{old}")
        assert not hasattr(module, "no_such_name")
        with pytest.raises(ImportError, match="cannot import name 'no_such_name'"):
            exec(f"from attention_lightning.{old} import no_such_name", {})


ROOT = PACKAGE.parent
# files that also run against older checkouts of the package (the benchmarks' --ref/--against trees), and the
# module that serves the old paths
KEEP_OLD_PATHS = {"benchmarks/viz.py", "benchmarks/pham_step.py", "attention_lightning/_moved.py"}


def test_our_own_code_imports_from_the_new_house():
    old = "|".join(MOVED)
    pattern = re.compile(rf"from attention_lightning\.({old})\b|from attention_lightning import .*\b({old})\b"
                         rf"|import attention_lightning\.({old})\b")
    files = [*ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("scripts/*.py"), ROOT / "cli.py",
             *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("datamodules/*.py"), *PACKAGE.rglob("*.py")]
    stale = [f"{path.relative_to(ROOT)}: {line.strip()}"
             for path in files if str(path.relative_to(ROOT)) not in KEEP_OLD_PATHS
             for line in path.read_text().splitlines() if pattern.search(line)]
    assert not stale, "old module paths in our own code:\n" + "\n".join(stale)
