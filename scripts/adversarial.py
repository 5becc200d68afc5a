"""Adversarial campaign over the run machinery: what a careless user, a hostile file and a cluster operator do to
``cli.py fit/test/visualize``, and whether each case holds, stops with one clear line, or goes wrong.

    python scripts/adversarial.py                 # every case (about 10 minutes on 2 CPU cores)
    python scripts/adversarial.py --only signal   # cases whose name or group contains "signal"
    python scripts/adversarial.py --table docs/reliability.md   # rewrites the table in that file

Outcomes: ``held`` (the run did what was asked, records exact), ``clear error`` (exit 2, one line ``error: ...``
that matches what the case expects, every file under the run root as it was and nothing left behind), and the
failures: ``traceback``, ``unclear error`` (more than one line, or a line that names something else), ``silent
wrong`` (exit 0 or a left-over where a refusal was due, or a held case whose records are off), ``records lost``
(a file that existed before the case was changed or removed when it should not have been). The exit status is 1
when any case failed. Most cases run in this process (``cli.main`` with its ``sys.argv``); signals sent from
outside, concurrent processes and kills run ``cli.py`` as a subprocess. Needs root for the read-only and
full-disk cases (tmpfs mounts); without it they are reported as skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import importlib.util
import io
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ATTENTION_LIGHTNING_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from pytorch_lightning import Callback  # noqa: E402

from attention_lightning.run import commands as experiment  # noqa: E402
from attention_lightning.run.plan import UserError  # noqa: E402


def _load_cli():
    """The repository's ``cli.py`` as a module (it is a script, not part of the installed package)."""
    spec = importlib.util.spec_from_file_location("cli", ROOT / "cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli = _load_cli()

NAME = "ram-cluttered_mnist"
TINY = ["--model=ram", "--data=cluttered_mnist", "--digits=embedded", "--variant=translated", "--canvas_size=40",
        "--glimpses=3", "--glimpse_size=8", "--depth=2", "--train_size=32", "--val_size=16", "--test_size=16",
        "--batch_size=8", "--viz_images=0", "--enable_progress_bar=false", "--enable_model_summary=false",
        "--num_sanity_val_steps=0", "--log_every_n_steps=1", "--max_epochs=2"]
STEPS = 8  # 2 epochs of 4 batches
FAILURES = ("traceback", "unclear error", "silent wrong", "records lost")


@dataclass
class Result:
    rc: int
    err: str
    out: str = ""


@dataclass
class Ctx:
    """One case's folder: ``root`` is its --default_root_dir; with ``base`` a copy of the finished base run."""
    dir: Path
    root: Path
    run: Path = field(init=False)

    def __post_init__(self) -> None:
        self.run = self.root / NAME / "version_0"

    @property
    def last(self) -> Path:
        return self.run / "checkpoints" / "last.ckpt"

    @property
    def epoch0(self) -> Path:
        return self.run / "checkpoints" / "epoch0.ckpt"

    def args(self, *extra: str) -> list[str]:
        return [*TINY, f"--default_root_dir={self.root}", *extra]


# --- running ------------------------------------------------------------------------------------------------
def in_process(argv: list[str]) -> Result:
    """``python cli.py ARGV`` in this process: its exit status and what it wrote to stdout/stderr."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["cli.py", *argv]
    rc = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:  # what a user would see as a traceback
        err.write(traceback.format_exc())
        rc = 1
    finally:
        sys.argv = old
    return Result(rc, err.getvalue(), out.getvalue())


def fit_with(ctx: Ctx, callbacks: list[Callback], *extra: str) -> Result:
    """``cli.py fit`` in this process with extra callbacks (to act at one phase of the run), as the CLI reports."""
    flags = {}
    for a in ctx.args(*extra):
        k, v = a[2:].split("=", 1)
        flags[k] = cli_value(v)
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                experiment.fit(flags, extra_callbacks=callbacks)
            except UserError as e:
                print(f"error: {e}", file=sys.stderr)
                return Result(2, err.getvalue())
            except KeyboardInterrupt:
                print("error: stopped by Ctrl-C before training started: a new run leaves no folder, a resumed one "
                      "is as it was", file=sys.stderr)
                return Result(2, err.getvalue())
    except BaseException:
        return Result(1, err.getvalue() + traceback.format_exc())
    return Result(0, err.getvalue())


def cli_value(v: str):
    """A flag value as fire parses the simple ones used here."""
    if v in ("true", "false"):
        return v == "true"
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def subprocess_cli(args: list[str], env: dict | None = None, timeout: float = 600) -> Result:
    p = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, **(env or {})})
    return Result(p.returncode, p.stderr, p.stdout)


def popen(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def finish(proc: subprocess.Popen, timeout: float = 600) -> Result:
    _, err = proc.communicate(timeout=timeout)
    return Result(proc.returncode, err)


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 300) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and (proc is None or proc.poll() is None):
        if predicate():
            return True
        time.sleep(0.02)
    return False


# --- records ------------------------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"") for p in sorted(root.rglob("*"))}


def step_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def train_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss_step")]


def exact(run: Path, steps: int = STEPS) -> str | None:
    """None when the run has one train row per step 0..steps-1, a last.ckpt at ``steps`` and no *.tmp."""
    if not (run / "checkpoints" / "last.ckpt").is_file():
        return "no last.ckpt"
    got = train_steps(run)
    if got != list(range(steps)):
        return f"train rows {got[:3]}..{got[-3:]} ({len(got)}), expected 0..{steps - 1}"
    if step_of(run / "checkpoints" / "last.ckpt") != steps:
        return f"last.ckpt at step {step_of(run / 'checkpoints' / 'last.ckpt')}, expected {steps}"
    if list(run.rglob("*.tmp")):
        return "a *.tmp was left"
    return None


def error_line(res: Result) -> str | None:
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if res.rc != 2 or len(errors) != 1 or not lines or lines[-1] != errors[0]:
        return None
    return errors[0]


# --- cases --------------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    group: str
    run: Callable[[Ctx], tuple[str, str]]
    base: bool = False  # start from a copy of the finished base run
    needs_root: bool = False


CASES: list[Case] = []


def refused(name: str, group: str, argv: Callable[[Ctx], list[str]], expect: str, base: bool = False,
            setup: Callable[[Ctx], None] | None = None, needs_root: bool = False) -> None:
    """A case that must stop with one line matching ``expect``, writing and removing nothing under the root."""
    def run(ctx: Ctx) -> tuple[str, str]:
        if setup:
            setup(ctx)
        command = argv(ctx)  # may write the file the case hands over
        before = snapshot(ctx.root)
        res = in_process(command)
        return judge_refusal(res, expect, before, snapshot(ctx.root))
    CASES.append(Case(name, group, run, base, needs_root))


def judge_refusal(res: Result, expect: str, before: dict, after: dict) -> tuple[str, str]:
    if "Traceback" in res.err:
        return "traceback", res.err.strip().splitlines()[-1][:160]
    if res.rc == 0:
        return "silent wrong", "exit 0 where a refusal was due"
    line = error_line(res)
    if line is None:
        return "unclear error", f"exit {res.rc}: {res.err.strip()[-160:]!r}"
    if not re.search(expect, line):
        return "unclear error", line[:200]
    changed = [k for k in before if k not in after or after[k] != before[k]]
    if changed:
        return "records lost", f"changed {changed[:3]}"
    new = [k for k in after if k not in before]
    if new:
        return "silent wrong", f"left {new[:3]}"
    return "clear error", line[7:200]


def held(name: str, group: str, argv: Callable[[Ctx], list[str]], check: Callable[[Ctx, Result], str | None],
         base: bool = False, setup: Callable[[Ctx], None] | None = None, needs_root: bool = False) -> None:
    """A case that must succeed (exit 0) and pass ``check`` (None: records as they should be)."""
    def run(ctx: Ctx) -> tuple[str, str]:
        if setup:
            setup(ctx)
        res = in_process(argv(ctx))
        return judge_held(res, check(ctx, res) if res.rc == 0 else None)
    CASES.append(Case(name, group, run, base, needs_root))


def judge_held(res: Result, problem: str | None) -> tuple[str, str]:
    if "Traceback" in res.err:
        return "traceback", res.err.strip().splitlines()[-1][:160]
    if res.rc != 0:
        line = error_line(res)
        return ("unclear error", f"exit {res.rc}: {line or res.err.strip()[-300:]}")
    if problem:
        return "silent wrong", problem
    return "held", ""


def case(name: str, group: str, base: bool = False, needs_root: bool = False):
    """A case with its own steps, returning (outcome, detail)."""
    def wrap(fn: Callable[[Ctx], tuple[str, str]]) -> Callable[[Ctx], tuple[str, str]]:
        CASES.append(Case(name, group, fn, base, needs_root))
        return fn
    return wrap


# 1. the command line: every bad argument is one line before any work -----------------------------------------
ARGS = [
    ("word without dashes", ["lr=0.5"], r"`lr=0.5` is not a flag of `fit`.*did you mean --lr=0.5"),
    ("stray word", ["extra"], r"`extra` is not a flag of `fit`"),
    ("lone dash", ["-"], r"`-` is not a flag of `fit`"),
    ("-- separator", ["--", "--help"], r"`--` is not a flag of `fit`"),
    ("run name ../../escape", ["--run_name=../../escape"], r"is not a folder name"),
    ("run name absolute", ["--run_name=/tmp/adversarial-escape"], r"is not a folder name"),
    ("run name a/b", ["--run_name=a/b"], r"is not a folder name"),
    ("run name ..", ["--run_name=.."], r"is not a folder name"),
    ("run name .", ["--run_name=."], r"is not a folder name"),
    ("run name 300 bytes", ["--run_name=" + "n" * 300], r"is not a folder name"),
    ("run name empty", ["--run_name="], r"--run_name='' is empty"),
    ("resume empty", ["--resume="], r"--resume='' is empty"),
    ("default_root_dir empty", ["--default_root_dir="], r"--default_root_dir='' is empty"),
    ("resume without value", ["--resume"], r"--resume=True needs a value"),
    ("canvas_size 0", ["--canvas_size=0"], r"--canvas_size=0 must be a side of at least 1 pixel"),
    ("canvas_size -5", ["--canvas_size=-5"], r"--canvas_size=-5 must be a side of at least 1 pixel"),
    ("canvas_size 10 with cnn", [], ""),
    ("accelerator tpu", ["--accelerator=tpu"], r"invalid Trainer flags"),
    ("accelerator mps", ["--accelerator=mps"], r"invalid Trainer flags"),
    ("accelerator gpu on a CPU machine", ["--accelerator=gpu"], r"invalid Trainer flags"),
    ("devices 0", ["--devices=0"], r"invalid Trainer flags"),
    ("strategy nonsense", ["--strategy=nonsense"], r"invalid Trainer flags"),
    ("precision 7", ["--precision=7"], r"--precision=7 has the wrong type"),
    ("max_epochs abc", ["--max_epochs=abc"], r"--max_epochs=.abc. has the wrong type"),
    ("lr abc", ["--lr=abc"], r"--lr=.abc. has the wrong type"),
    ("unknown flag", ["--lerning_rate=0.1"], r"unknown flag --lerning_rate"),
    ("unknown prefix", ["--foo.lr=1"], r"prefix 'foo' is not one of"),
    ("unknown model", ["--model=nonexistent"], r"nonexistent"),
    ("unknown datamodule", ["--data=nonexistent"], r"nonexistent"),
    ("missing config", ["--config=missing.yaml"], r"--config=missing.yaml: no such file"),
    ("logger foo", ["--logger=foo"], r"--logger='foo' is not a logger"),
    ("seed 1.5", ["--seed=1.5"], r"--seed=1.5 must be an integer"),
    ("compile maybe", ["--compile=maybe"], r"--compile='maybe' must be true or false"),
    ("checkpoint_every_n_steps -1", ["--checkpoint_every_n_steps=-1"], r"must be a number >= 0"),
    ("checkpoint_every_n_minutes abc", ["--checkpoint_every_n_minutes=abc"], r"must be a number >= 0"),
    ("viz_images -1", ["--viz_images=-1"], r"--viz_images=-1 must be an integer >= 0"),
    ("viz_every_n_steps -2", ["--viz_every_n_steps=-2"], r"--viz_every_n_steps=-2 must be an integer >= 0"),
    ("fit --ckpt", ["--ckpt=x.ckpt"], r"--ckpt is a flag of `test`/`visualize`/`export`, not of `fit`"),
    ("fit --out", ["--out=a.png"], r"--out is a flag of `visualize`/`export`, not of `fit`"),
    ("scale_range [0, 1]", ["--scale_range=[0,1]"], r"--scale_range=\[0.0, 1.0\] must be \[low, high\]"),
    ("glimpse bigger than the canvas", ["--glimpse_size=100"], r"glimpse"),
    ("digits=mnist offline without files", ["--digits=mnist", "--data_dir=/nonexistent-adversarial"],
     r"--digits=mnist but MNIST is not under"),
    ("resume=last with nothing to resume", ["--resume=last"], r"--resume=last: nothing to resume"),
    ("resume a missing file", ["--resume=/nonexistent/x.ckpt"], r"no such checkpoint file"),
    ("resume a folder", ["--resume=/tmp"], r"no such checkpoint file"),
    ("very long root path", ["--default_root_dir=/tmp/" + "/".join(["d" * 250] * 20)],
     r"cannot create the run folder .*name too long"),
    ("root is a file", ["--default_root_dir={file}"], r"cannot create the run folder .*pass a writable"),
    ("run name under a file", ["--default_root_dir={file}/sub"], r"cannot create the run folder"),
]
for _name, _extra, _expect in ARGS:
    if _name == "canvas_size 10 with cnn":  # cnn takes none of ram's flags: its own tiny set
        refused(_name, "arguments", lambda ctx: ["fit", "--model=cnn", "--digits=embedded", "--variant=translated",
                                                 "--canvas_size=10", f"--default_root_dir={ctx.root}"],
                r"28px, larger than the 10px canvas; use a --canvas_size >= 28")
        continue
    refused(_name, "arguments", lambda ctx, e=_extra: ["fit", *ctx.args(*[x.format(file=ctx.dir / "afile")
                                                                          for x in e])], _expect,
            setup=lambda ctx: (ctx.dir / "afile").write_text("x"))


@case("wandb without credentials", "arguments")
def _wandb(ctx: Ctx) -> tuple[str, str]:
    saved = dict(os.environ)
    for k in ("WANDB_MODE", "WANDB_API_KEY"):
        os.environ.pop(k, None)
    os.environ.update(NETRC=str(ctx.dir / "none"), HOME=str(ctx.dir))
    try:
        res = in_process(["fit", *ctx.args("--logger=wandb")])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return judge_refusal(res, r"--logger=wandb: no W&B credentials.*WANDB_MODE=offline", {}, snapshot(ctx.root))

TEST_ARGS = [
    ("test without --ckpt", ["test"], r"test needs --ckpt=PATH"),
    ("test a missing checkpoint", ["test", "--ckpt=/nonexistent.ckpt"], r"--ckpt=/nonexistent.ckpt: no such file"),
    ("test --resume", ["test", "--resume=last"], r"--resume is a flag of `fit`, not of `test`|test needs --ckpt"),
    ("test with a stray word", ["test", "ckpt=x"], r"`ckpt=x` is not a flag of `test`"),
    ("visualize without --out", ["visualize", "--ckpt={last}"], r"visualize needs --out"),
    ("visualize --out a.txt", ["visualize", "--ckpt={last}", "--out={dir}/a.txt"], r"cannot write \.txt"),
    ("visualize --split=train", ["visualize", "--ckpt={last}", "--out={dir}/a.png", "--split=train"],
     r"--split='train' is not drawable"),
    ("visualize --num_images=0", ["visualize", "--ckpt={last}", "--out={dir}/a.png", "--num_images=0"],
     r"--num_images=0 must be an integer >= 1"),
    ("visualize --out under a file", ["visualize", "--ckpt={last}", "--out={last}/a.png"], r"cannot write into"),
    ("test with another --model", ["test", "--ckpt={last}", "--model=dham"], r"was written by model 'ram', not 'dham'"),
    ("visualize with --viz_images", ["visualize", "--ckpt={last}", "--out={dir}/a.png", "--viz_images=2"],
     r"--viz_images is a flag of `fit`"),
]
for _name, _argv, _expect in TEST_ARGS:
    refused(_name, "arguments", lambda ctx, a=_argv: [x.format(last=ctx.last, dir=ctx.dir) for x in a], _expect,
            base=True)


# 2. checkpoints: hostile, broken, foreign and old files ------------------------------------------------------
def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def edited(ctx: Ctx, where: Path, edit: Callable[[dict], None], source: Path | None = None) -> Path:
    ckpt = torch.load(source or ctx.last, map_location="cpu", weights_only=True)
    edit(ckpt)
    where.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, where)
    return where


BROKEN = {
    "zero-byte": lambda ctx: b"",
    "truncated": lambda ctx: ctx.last.read_bytes()[:1000],
    "random bytes": lambda ctx: os.urandom(4096),
    "a text file": lambda ctx: b"not a checkpoint\n",
}
for _kind, _bytes in BROKEN.items():
    for _cmd in ("test", "visualize", "resume"):
        def _argv(ctx, kind=_kind, make=_bytes, cmd=_cmd):
            bad = write(ctx.dir / f"{kind}.ckpt", make(ctx))
            if cmd == "test":
                return ["test", f"--ckpt={bad}"]
            if cmd == "visualize":
                return ["visualize", f"--ckpt={bad}", f"--out={ctx.dir}/a.png"]
            return ["fit", *ctx.args(f"--resume={bad}")]
        refused(f"{_kind} checkpoint to {_cmd}", "checkpoints", _argv, r"cannot read checkpoint .*pass another",
                base=True)


@case("code-running pickle to test and resume", "checkpoints", base=True)
def _exploit(ctx: Ctx) -> tuple[str, str]:
    marker = ctx.dir / "pwned"
    bad = ctx.dir / "exploit.ckpt"
    torch.save({"state_dict": {}, "attention_lightning": Exploit(str(marker))}, bad)
    before = snapshot(ctx.root)
    for argv in (["test", f"--ckpt={bad}"], ["fit", *ctx.args(f"--resume={bad}")]):
        outcome = judge_refusal(in_process(argv), r"cannot read checkpoint", before, snapshot(ctx.root))
        if outcome[0] != "clear error":
            return outcome
    return ("silent wrong", "the pickle ran code") if marker.exists() else outcome


refused("a plain torch file without our entry", "checkpoints",
        lambda ctx: ["test", f"--ckpt={edited(ctx, ctx.dir / 'plain.ckpt', lambda c: c.pop('attention_lightning'))}"],
        r"is not an attention-lightning checkpoint", base=True)
refused("another model's weights to resume (in the run folder)", "checkpoints",
        lambda ctx: ["fit", *ctx.args("--max_epochs=3", "--resume=" + str(edited(
            ctx, ctx.run / "checkpoints" / "other.ckpt",
            lambda c: c.update(state_dict={f"x.{k}": v for k, v in c["state_dict"].items()}))))],
        r"--resume: cannot load checkpoint .*into model 'ram'", base=True)
refused("another model's weights to resume (outside a run)", "checkpoints",
        lambda ctx: ["fit", *ctx.args("--max_epochs=3", "--resume=" + str(edited(
            ctx, ctx.dir / "other.ckpt", lambda c: c.update(state_dict={f"x.{k}": v for k, v in
                                                                         c["state_dict"].items()}))))],
        r"--resume: cannot load checkpoint .*into model 'ram'", base=True)
refused("a checkpoint of model dham resumed as ram", "checkpoints",
        lambda ctx: ["fit", *ctx.args("--resume=" + str(edited(
            ctx, ctx.dir / "dham.ckpt", lambda c: c["attention_lightning"].update(model="dham"))))],
        r"was written by model 'dham', not 'ram'; pass --model=dham", base=True)
refused("resume with another --depth", "checkpoints", lambda ctx: ["fit", *ctx.args("--depth=3", "--resume=last")],
        r"--depth was 2, now 3", base=True)
refused("resume with another --seed", "checkpoints", lambda ctx: ["fit", *ctx.args("--seed=3", "--resume=last")],
        r"--seed was 0, now 3", base=True)
refused("resume mid-run on 2 processes (ddp_spawn)", "checkpoints",
        lambda ctx: ["fit", *ctx.args("--max_epochs=3", f"--resume={ctx.epoch0}", "--strategy=ddp_spawn",
                                      "--accelerator=cpu", "--devices=2")],
        r"trained with 1 process\(es\), this run would use 2", base=True)
refused("resume on 2 nodes", "checkpoints",
        lambda ctx: ["fit", *ctx.args("--max_epochs=3", "--resume=last", "--strategy=ddp", "--accelerator=cpu",
                                      "--num_nodes=2")], r"invalid Trainer flags|this run would use 2", base=True)
refused("failed resume (no GPU) keeps the metrics rows", "checkpoints",
        lambda ctx: ["fit", *ctx.args(f"--resume={ctx.epoch0}", "--accelerator=gpu")], r"invalid Trainer flags",
        base=True)
refused("old checkpoint (no world size) resumed on 2 processes", "old code", lambda ctx: ["fit", *ctx.args(
    "--max_epochs=3", "--strategy=ddp_spawn", "--accelerator=cpu", "--devices=2", "--resume=" + str(edited(
        ctx, ctx.run / "checkpoints" / "old.ckpt", lambda c: c["attention_lightning"].pop("world_size"))))],
    r"trained with --devices=auto, --num_nodes=1, --strategy=auto, this run would use 2", base=True)


def _truncate_newest(ctx: Ctx) -> None:
    newer = ctx.run.parent / "version_1"
    shutil.copytree(ctx.run, newer)
    (newer / "checkpoints" / "last.ckpt").write_bytes(ctx.last.read_bytes()[:1000])


def _newest_without_state(ctx: Ctx) -> None:
    newer = ctx.run.parent / "version_1"
    newer.mkdir()
    (newer / "hparams.yaml").write_text("lr: 0.001\n")


refused("corrupt newest last.ckpt with resume=last", "checkpoints", lambda ctx: ["fit", *ctx.args("--resume=last")],
        r"version_1/checkpoints/last.ckpt is not a readable checkpoint .*pass --resume=.*version_0/checkpoints",
        base=True, setup=_truncate_newest)
refused("newest run without a state with resume=last", "checkpoints",
        lambda ctx: ["fit", *ctx.args("--resume=last")], r"version_1 holds no saved state .*--resume=.*version_0",
        base=True, setup=_newest_without_state)


def _resumed_exactly(steps: int) -> Callable[[Ctx, Result], str | None]:
    def check(ctx: Ctx, res: Result) -> str | None:
        return exact(ctx.run, steps)
    return check


held("resume from an epoch-0 checkpoint to 3 epochs", "resume",
     lambda ctx: ["fit", *ctx.args("--max_epochs=3", f"--resume={ctx.epoch0}")], _resumed_exactly(12), base=True)
held("resume a finished run (nothing to train, tests again)", "resume",
     lambda ctx: ["fit", *ctx.args("--resume=last")],
     lambda ctx, res: exact(ctx.run) or (None if "test/acc" in res.out else "no test metrics printed"), base=True)
held("resume with another --accelerator spelling (cpu)", "resume",
     lambda ctx: ["fit", *ctx.args("--max_epochs=3", "--resume=last", "--accelerator=cpu", "--devices=1")],
     _resumed_exactly(12), base=True)
held("checkpoint from older code: no world size", "old code",
     lambda ctx: ["fit", *ctx.args("--max_epochs=3", "--resume=" + str(edited(
         ctx, ctx.last, lambda c: c["attention_lightning"].pop("world_size"))))], _resumed_exactly(12), base=True)
held("checkpoint from older code: no flags, no world size, no next-row key", "old code",
     lambda ctx: ["fit", *ctx.args("--max_epochs=3", "--resume=" + str(edited(
         ctx, ctx.last, lambda c: (c["attention_lightning"].pop("world_size"), c["attention_lightning"].pop("flags"),
                                   c.pop("attention_lightning_next_log_step")))))], _resumed_exactly(12), base=True)
held("checkpoint from older code: no train-stream state", "old code",
     lambda ctx: ["fit", *ctx.args("--max_epochs=3", "--resume=" + str(edited(
         ctx, ctx.last, lambda c: c["callbacks"].pop("TrainStream"))))], _resumed_exactly(12), base=True)
held("test a checkpoint from older code (no world size, no flags)", "old code",
     lambda ctx: ["test", "--ckpt=" + str(edited(ctx, ctx.dir / "old.ckpt", lambda c: (
         c["attention_lightning"].pop("world_size"), c["attention_lightning"].pop("flags"))))],
     lambda ctx, res: None if "test/acc" in res.out else "no test metrics", base=True)


# 3. files and folders ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(where: Path, size: str = "64m"):
    where.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                      capture_output=True).returncode:
        raise PermissionError("cannot mount a tmpfs (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount_ro(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


@case("read-only root for a new run", "files", needs_root=True)
def _ro_root(ctx: Ctx) -> tuple[str, str]:
    with tmpfs(ctx.dir / "ro") as ro:
        remount_ro(ro)
        return judge_refusal(in_process(["fit", *TINY, f"--default_root_dir={ro}"]), r"read-only", {}, snapshot(ro))


@case("resume in a read-only run folder", "files", base=True, needs_root=True)
def _ro_resume(ctx: Ctx) -> tuple[str, str]:
    with tmpfs(ctx.dir / "ro") as ro:
        shutil.copytree(ctx.root, ro / "root")
        remount_ro(ro)
        before = snapshot(ro)
        res = in_process(["fit", *TINY, f"--default_root_dir={ro / 'root'}", "--max_epochs=3", "--resume=last"])
        return judge_refusal(res, r"--resume: cannot write to the run folder .*read-only", before, snapshot(ro))


@case("visualize --out into a read-only folder", "files", base=True, needs_root=True)
def _ro_out(ctx: Ctx) -> tuple[str, str]:
    with tmpfs(ctx.dir / "ro") as ro:
        remount_ro(ro)
        res = in_process(["visualize", f"--ckpt={ctx.last}", f"--out={ro}/a.png"])
        return judge_refusal(res, r"cannot write into .*read-only", {}, snapshot(ro))


held("visualize --out into a folder still to make", "files",
     lambda ctx: ["visualize", f"--ckpt={ctx.last}", f"--out={ctx.dir}/new/deeper/a.gif"],
     lambda ctx, res: None if (ctx.dir / "new/deeper/a.gif").stat().st_size > 0 and not list(
         (ctx.dir / "new/deeper").glob(".*tmp*")) else "no picture", base=True)


class FillDisk(Callback):
    """Fills the file system of ``where`` at ``hook`` (a full disk arriving during that phase)."""

    def __init__(self, where: Path, hook: str) -> None:
        self.where, self.hook = where, hook

    def _fill(self) -> None:
        with contextlib.suppress(OSError), open(self.where / "filler", "wb") as f:
            while True:
                f.write(b"\0" * (1 << 20))

    def on_test_start(self, trainer, pl_module) -> None:
        if self.hook == "test":
            self._fill()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.hook == "train" and trainer.current_epoch == 1:
            self._fill()


for _hook in ("train", "test"):
    @case(f"disk full during {_hook}", "files", needs_root=True)
    def _full(ctx: Ctx, hook=_hook) -> tuple[str, str]:
        with tmpfs(ctx.dir / "small", "16m") as disk:
            ctx.root = disk / "runs"
            ctx.run = ctx.root / NAME / "version_0"
            res = fit_with(ctx, [FillDisk(disk, hook)])
            line = error_line(res)
            if "Traceback" in res.err:
                return "traceback", res.err.strip().splitlines()[-1][:160]
            if res.rc == 0:  # what it wrote fitted in space already held: it must be all there
                return judge_held(res, exact(ctx.run))
            if line is None or "the disk is full" not in line:
                return "unclear error", (line or res.err.strip()[-160:])
            if list(disk.rglob("*.tmp")):
                return "silent wrong", "a *.tmp left"
            ckpt = ctx.last
            if ckpt.is_file() and step_of(ckpt) < 0:
                return "records lost", "last.ckpt unreadable"
            if f"--resume={ckpt}" in line and not (ckpt.is_file() and step_of(ckpt) == (STEPS if hook == "test" else 4)):
                return "silent wrong", "the hint names a state that is not there"
            return "clear error", line[7:200]


@case("write-protected checkpoints folder during a run", "files")
def _eacces(ctx: Ctx) -> tuple[str, str]:
    from fsspec.implementations.local import LocalFileSystem

    original = LocalFileSystem._open

    def denied(self, path, mode="rb", *args, **kwargs):
        if "w" in mode and "checkpoints" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return original(self, path, mode, *args, **kwargs)

    LocalFileSystem._open = denied  # what a write-protected folder does to Lightning's save (as a user, not root)
    try:
        res = fit_with(ctx, [])
    finally:
        LocalFileSystem._open = original
    outcome = judge_refusal(res, r"cannot write to .*permission denied; .*start the run again", {}, {})
    if outcome[0] == "clear error" and list(ctx.root.rglob("*.tmp")):
        return "silent wrong", "a *.tmp left"
    return outcome


@case("read-only data cache, digits=auto", "files", needs_root=True)
def _ro_cache_auto(ctx: Ctx) -> tuple[str, str]:
    with tmpfs(ctx.dir / "cache") as cache:
        remount_ro(cache)
        res = in_process(["fit", *ctx.args("--digits=auto", f"--data_dir={cache}", "--max_epochs=1")])
        return judge_held(res, exact(ctx.run, 4) or (None if "EMBEDDED" in res.err else "no notice of the fallback"))


refused("read-only data cache, digits=mnist", "files",
        lambda ctx: ["fit", *ctx.args("--digits=mnist", f"--data_dir={ctx.dir / 'cache'}")],
        r"--digits=mnist but MNIST is not under", setup=lambda ctx: (ctx.dir / "cache").mkdir())


def _path_case(name: str, root: Callable[[Ctx], Path], extra: tuple[str, ...] = ()) -> None:
    def run(ctx: Ctx) -> tuple[str, str]:
        ctx.root = root(ctx)
        run_name = next((a.split("=", 1)[1] for a in extra if a.startswith("--run_name=")), NAME)
        ctx.run = ctx.root / run_name / "version_0"
        res = in_process(["fit", *ctx.args("--max_epochs=1", *extra)])
        problem = exact(ctx.run, 4) if res.rc == 0 else None
        if problem is None and res.rc == 0 and str(ctx.run / "checkpoints") not in res.out:
            problem = "the printed paths are not the run's"
        return judge_held(res, problem)
    CASES.append(Case(name, "files", run))


_path_case("unicode root folder", lambda ctx: ctx.dir / "rüns 実験 ✓")
_path_case("unicode run name", lambda ctx: ctx.dir / "runs", ("--run_name=ラン-é",))
_path_case("root with spaces and quotes", lambda ctx: ctx.dir / "my runs 'a' \"b\"")
_path_case("run name of 255 bytes", lambda ctx: ctx.dir / "runs", ("--run_name=" + "r" * 255,))
_path_case("very long root path (3000 characters)", lambda ctx: ctx.dir / "/".join(["p" * 200] * 15))


# 4. signals at every phase ----------------------------------------------------------------------------------
class SendSignal(Callback):
    """Sends ``signum`` to this process once, at ``hook`` (batch 2 of epoch 0 for ``train``)."""

    def __init__(self, signum: int, hook: str) -> None:
        self.signum, self.hook, self.sent = signum, hook, False

    def _send(self, hook: str, ok: bool = True) -> None:
        if not self.sent and hook == self.hook and ok:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def setup(self, trainer, pl_module, stage):
        self._send("setup", stage == "fit")

    def on_fit_start(self, trainer, pl_module):
        self._send("fit start")

    def on_train_start(self, trainer, pl_module):
        self._send("train start")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._send("train", trainer.current_epoch == 0 and batch_idx == 2)

    def on_validation_start(self, trainer, pl_module):
        self._send("validation (mid-run)", trainer.current_epoch == 0)
        self._send("validation (last)", trainer.current_epoch == trainer.max_epochs - 1)

    def on_train_end(self, trainer, pl_module):
        self._send("train end")

    def on_test_start(self, trainer, pl_module):
        self._send("test")


SLURM = dict(SLURM_JOB_ID="4242", SLURM_JOB_NAME="job", SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1",
             SLURM_NNODES="1", SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_CPUS_PER_TASK="1")


@contextlib.contextmanager
def slurm_env(ctx: Ctx):
    """SLURM's variables and a fake ``scontrol`` that records the requeue; restores the environment after."""
    bin_dir = ctx.dir / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {ctx.dir / 'scontrol.log'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    saved = dict(os.environ)
    os.environ.update(SLURM, PATH=f"{bin_dir}:{os.environ['PATH']}")
    try:
        yield ctx.dir / "scontrol.log"
    finally:
        os.environ.clear()
        os.environ.update(saved)


PHASES = ["setup", "fit start", "train start", "train", "validation (mid-run)", "validation (last)", "train end",
          "test"]
for _signum, _label in ((signal.SIGINT, "Ctrl-C"), (signal.SIGUSR1, "SIGUSR1")):
    for _phase in PHASES:
        @case(f"{_label} during {_phase}", "signals")
        def _signal_case(ctx: Ctx, signum=_signum, phase=_phase, label=_label) -> tuple[str, str]:
            with slurm_env(ctx) if signum == signal.SIGUSR1 else contextlib.nullcontext() as log:
                extra = ("--accelerator=cpu", "--devices=1", "--num_nodes=1") if log else ()
                res = fit_with(ctx, [SendSignal(signum, phase)], *extra)
                if "Traceback" in res.err:
                    return "traceback", res.err.strip().splitlines()[-1][:160]
                requeued = log is not None and log.is_file() and log.read_text().split() == ["requeue", "4242"]
                if res.rc == 0:  # every signal stops the command, the one during the test after training too
                    return "silent wrong", "exit 0: the signal was dropped"
                line = error_line(res)
                if line is None:
                    return "unclear error", res.err.strip()[-200:]
                if ctx.last.is_file() and "continue with: " in line:  # continue with the printed command
                    command = shlex.split(line.split("continue with: ", 1)[1])
                    cont = in_process(command[2:])
                    if cont.rc != 0:
                        return "records lost", f"the printed command failed: {cont.err.strip()[-160:]}"
                elif log is not None and "requeued SLURM job 4242" in line:
                    if not requeued:
                        return "silent wrong", "said requeued, scontrol not called"
                    with slurm_env(ctx):
                        cont = in_process(["fit", *ctx.args("--resume=last", "--accelerator=cpu", "--devices=1",
                                                            "--num_nodes=1")])
                    if cont.rc != 0:
                        return "records lost", f"the requeued job failed: {cont.err.strip()[-160:]}"
                elif "before training started" in line:
                    if ctx.root.exists() and list(ctx.root.rglob("version_*")):
                        return "silent wrong", "a folder was left"
                    return "clear error", line[7:200]
                elif "during test" in line:
                    if step_of(ctx.last) != STEPS:
                        return "records lost", "last.ckpt is not the final state"
                    return "clear error", line[7:200]
                else:
                    return "unclear error", line[:200]
                problem = exact(ctx.run)
                return ("silent wrong", problem) if problem else ("held", line[7:140])


def _long_flags(ctx: Ctx, *extra: str) -> list[str]:
    return [*ctx.args("--train_size=800", "--checkpoint_every_n_steps=5", *extra)]


@case("Ctrl-C from outside mid-epoch, then the printed command", "signals (process)")
def _outside_ctrl_c(ctx: Ctx) -> tuple[str, str]:
    proc = popen(["fit", *_long_flags(ctx)])
    if not wait_for(lambda: ctx.last.is_file(), proc):
        return "silent wrong", "no periodic checkpoint"
    proc.send_signal(signal.SIGINT)
    res = finish(proc)
    line = error_line(res)
    if line is None or "continue with: " not in line:
        return ("traceback" if "Traceback" in res.err else "unclear error"), res.err.strip()[-200:]
    cont = subprocess_cli(shlex.split(line.split("continue with: ", 1)[1])[2:])
    return judge_held(cont, exact(ctx.run, 200))


@case("two Ctrl-C from outside: stops at once, then resume=last", "signals (process)")
def _double_ctrl_c(ctx: Ctx) -> tuple[str, str]:
    proc = popen(["fit", *_long_flags(ctx)])
    if not wait_for(lambda: ctx.last.is_file(), proc):
        return "silent wrong", "no periodic checkpoint"
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    res = finish(proc)
    if "Traceback" in res.err:
        return "traceback", res.err.strip().splitlines()[-1][:160]
    if res.rc == 0:
        return "silent wrong", "exit 0"
    cont = subprocess_cli(["fit", *_long_flags(ctx, "--resume=last")])
    return judge_held(cont, exact(ctx.run, 200))


@case("Ctrl-C from outside while the run starts (folder claimed)", "signals (process)")
def _start_ctrl_c(ctx: Ctx) -> tuple[str, str]:
    proc = popen(["fit", *_long_flags(ctx)])
    if not wait_for(lambda: ctx.run.is_dir(), proc):
        return "silent wrong", "no run folder"
    proc.send_signal(signal.SIGINT)
    res = finish(proc)
    if "Traceback" in res.err:
        return "traceback", res.err.strip().splitlines()[-1][:160]
    line = error_line(res)
    if line is None:
        return "unclear error", res.err.strip()[-200:]
    if "before training started" in line:
        return ("silent wrong", "folder left") if list(ctx.root.rglob("version_*")) else ("clear error", line[7:200])
    cont = subprocess_cli(["fit", *_long_flags(ctx, "--resume=last")])  # it had started: continue it
    return judge_held(cont, exact(ctx.run, 200))


for _sig, _label in ((signal.SIGKILL, "SIGKILL"), (signal.SIGTERM, "SIGTERM")):
    @case(f"{_label} mid-epoch, then resume=last", "signals (process)")
    def _killed(ctx: Ctx, sig=_sig) -> tuple[str, str]:
        proc = popen(["fit", *_long_flags(ctx)])
        if not wait_for(lambda: ctx.last.is_file() and step_of(ctx.last) >= 10, proc):
            return "silent wrong", "no periodic checkpoint"
        proc.send_signal(sig)
        finish(proc)
        cont = subprocess_cli(["fit", *_long_flags(ctx, "--resume=last")])
        return judge_held(cont, exact(ctx.run, 200))


@case("SLURM SIGUSR1 from outside while the run starts, then the requeued job", "signals (process)")
def _slurm_start(ctx: Ctx) -> tuple[str, str]:
    with slurm_env(ctx) as log:
        flags = _long_flags(ctx, "--accelerator=cpu", "--devices=1", "--num_nodes=1")
        proc = popen(["fit", *flags])
        if not wait_for(lambda: ctx.run.is_dir(), proc):
            return "silent wrong", "no run folder"
        proc.send_signal(signal.SIGUSR1)
        res = finish(proc)
        if proc.returncode < 0 or "Traceback" in res.err:
            return "traceback" if "Traceback" in res.err else "silent wrong", f"exit {proc.returncode}"
        line = error_line(res)
        if line is None or "requeued SLURM job 4242" not in line or not log.is_file():
            return "unclear error", res.err.strip()[-200:]
        cont = subprocess_cli(["fit", *flags, "--resume=last"], env={"SLURM_RESTART_COUNT": "1"})
        return judge_held(cont, exact(ctx.run, 200))


# 5. concurrency ---------------------------------------------------------------------------------------------
@case("two new runs of one name at once", "concurrency")
def _two_new(ctx: Ctx) -> tuple[str, str]:
    procs = [popen(["fit", *ctx.args("--max_epochs=1")]) for _ in range(2)]
    results = [finish(p) for p in procs]
    if any(r.rc for r in results):
        return "unclear error", results[0].err.strip()[-200:] + results[1].err.strip()[-200:]
    runs = sorted(d.name for d in (ctx.root / NAME).iterdir())
    if runs != ["version_0", "version_1"]:
        return "silent wrong", f"folders {runs}"
    problems = [exact(ctx.root / NAME / r, 4) for r in runs]
    return judge_held(results[0], next((p for p in problems if p), None))


@case("two resumes of one run at once", "concurrency", base=True)
def _two_resumes(ctx: Ctx) -> tuple[str, str]:
    args = ["fit", *ctx.args("--max_epochs=40", "--resume=last")]
    procs = [popen(args) for _ in range(2)]
    results = [finish(p) for p in procs]
    if any("Traceback" in r.err for r in results):
        return "traceback", ""
    ok = [r for r in results if r.rc == 0]
    refusals = [error_line(r) or "" for r in results if r.rc != 0]
    if len(ok) == 2:  # one after the other: the second found the run finished, which is fine if rows are exact
        return judge_held(ok[0], exact(ctx.run, 160))
    if len(ok) != 1 or not re.search(r"is in use by another process", refusals[0]):
        return "unclear error", " | ".join(refusals)[:200]
    problem = exact(ctx.run, 160)
    return ("records lost", problem) if problem else ("held", "one continued, one refused: " + refusals[0][7:90])


@case("resume=last while the run is still training", "concurrency")
def _resume_running(ctx: Ctx) -> tuple[str, str]:
    flags = _long_flags(ctx, "--max_epochs=20")
    proc = popen(["fit", *flags])
    if not wait_for(lambda: ctx.last.is_file(), proc):
        return "silent wrong", "no periodic checkpoint"
    res = subprocess_cli(["fit", *flags, "--resume=last"])
    first = finish(proc)
    if first.rc != 0:
        return "records lost", f"the running run failed: {first.err.strip()[-160:]}"
    problem = exact(ctx.run, 2000)
    if res.rc == 0:
        return ("held", "ran after the first ended") if problem is None else ("records lost", problem)
    outcome = judge_refusal(res, r"is in use by another process", {}, {})
    return ("records lost", problem) if problem else outcome


# --- the campaign --------------------------------------------------------------------------------------------
class CopyAfterFirstEpoch(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            d = Path(trainer.default_root_dir) / "checkpoints"
            shutil.copy(d / "last.ckpt", d / "epoch0.ckpt")


def make_base(where: Path) -> Path:
    ctx = Ctx(where, where / "runs")
    res = fit_with(ctx, [CopyAfterFirstEpoch()])
    if res.rc != 0 or exact(ctx.run):
        raise SystemExit(f"the base run failed: {res.err[-2000:]} {exact(ctx.run)}")
    return ctx.root


BEGIN, END = "<!-- adversarial table: written by scripts/adversarial.py -->", "<!-- end of adversarial table -->"


def write_table(path: Path, rows: list[tuple[str, str, str, str]], summary: str) -> None:
    """The table of outcomes, between the markers in ``path`` (the rest of the file is kept)."""
    lines = [BEGIN, f"{len(rows)} cases: {summary}.", "", "| group | case | outcome | what it said or did |",
             "|---|---|---|---|", *(f"| {g} | {n} | {o} | {d} |" for g, n, o, d in rows), END]
    text = path.read_text() if path.is_file() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + "\n".join(lines) + text[text.index(END) + len(END):]
    else:
        text = text + ("\n" if text else "") + "\n".join(lines) + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose name or group contains this text")
    parser.add_argument("--table", default="", help="also write the table (markdown) into this file, between its "
                        "table markers (appended when it has none)")
    args = parser.parse_args()
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    signal.signal(signal.SIGUSR1, lambda s, f: None)  # a dropped SIGUSR1 must not end the campaign itself
    cases = [c for c in CASES if args.only in c.name or args.only in c.group]
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="adversarial-") as tmp:
        base = make_base(Path(tmp) / "base")
        for i, c in enumerate(cases):
            ctx = Ctx(Path(tmp) / f"case{i}", Path(tmp) / f"case{i}" / "runs")
            ctx.dir.mkdir()
            signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a new process (Lightning leaves SIG_IGN)
            if c.base:
                shutil.copytree(base, ctx.root)
            try:
                outcome, detail = c.run(ctx)
            except PermissionError as e:
                outcome, detail = ("skipped", str(e)) if c.needs_root else ("traceback", repr(e))
            except Exception:
                outcome, detail = "traceback", "in the case itself: " + traceback.format_exc().strip().splitlines()[-1]
            detail = detail.replace(tmp, "$TMP").replace("|", "/").replace("\n", " ")
            rows.append((c.group, c.name, outcome, detail[:160]))
            print(f"{i + 1:>3}/{len(cases)} {outcome:<13} {c.group:<18} {c.name}: {rows[-1][3][:100]}", flush=True)
    counts = {o: sum(r[2] == o for r in rows) for o in ("held", "clear error", *FAILURES, "skipped")}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    print(f"\n{len(rows)} cases: {summary}")
    if args.table:
        write_table(Path(args.table), rows, summary)
    raise SystemExit(1 if any(counts[f] for f in FAILURES) else 0)


if __name__ == "__main__":
    main()
