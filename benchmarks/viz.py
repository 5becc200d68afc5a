"""What the attention pictures cost a training run: wall time of `cli.py fit` with the default pictures against
`--viz_images=0`, runs alternated (on, off, on, off, ...) so that drifting load hits both alike.

    python benchmarks/viz.py [--repeats=3] [--ref=DIR] -- --config=configs/ram_mnist.yaml --max_epochs=10 ...

Everything after `--` goes to `cli.py fit` unchanged. Prints each run's wall time and CPU time (the run with its
drawing worker), the medians and their ratios: the wall ratio is what a user waits for (the drawing hides on a
free core), the CPU ratio what the pictures cost whatever the load.
With `--ref=DIR` (a checkout of another commit, e.g. a `git worktree` of main) the same runs of that checkout are
interleaved too, so old and new are measured under the same load.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(checkout: Path, flags: list[str], viz: bool, root: str) -> tuple[float, float]:
    """Wall and CPU seconds (the run and its drawing worker) of one `cli.py fit` in ``checkout`` (a failed run
    stops the benchmark with its output)."""
    extra = [] if viz else ["--viz_images=0"]
    cmd = [sys.executable, "cli.py", "fit", *flags, *extra, f"--default_root_dir={root}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATTENTION_LIGHTNING_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {checkout}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ref", type=Path, default=None, help="another checkout to time beside this one")
    args, flags = parser.parse_known_args()
    flags = [f for f in flags if f != "--"]
    checkouts = {"this": ROOT, **({"ref": args.ref.resolve()} if args.ref else {})}
    times: dict[tuple[str, bool], list[float]] = {(c, v): [] for c in checkouts for v in (True, False)}
    cpus: dict[tuple[str, bool], list[float]] = {(c, v): [] for c in checkouts for v in (True, False)}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, checkout in checkouts.items():
                for viz in (True, False):
                    s, cpu = run(checkout, flags, viz, str(Path(tmp) / f"{name}-{viz}-{r}"))
                    times[(name, viz)].append(s)
                    cpus[(name, viz)].append(cpu)
                    print(f"run {r + 1} {name:<4} pictures {'on ' if viz else 'off'}: {s:6.1f} s wall, {cpu:6.1f} s CPU",
                          flush=True)
    print(f"cli.py fit {' '.join(flags)}; {args.repeats} runs each, OMP_NUM_THREADS=1, {os.cpu_count()} CPUs")
    for name in checkouts:
        on, off = statistics.median(times[(name, True)]), statistics.median(times[(name, False)])
        print(f"{name:<4} median wall time: pictures on {on:.1f} s, --viz_images=0 {off:.1f} s, ratio {on / off:.3f}")
        on, off = statistics.median(cpus[(name, True)]), statistics.median(cpus[(name, False)])
        print(f"{name:<4} median CPU time:  pictures on {on:.1f} s, --viz_images=0 {off:.1f} s, ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
