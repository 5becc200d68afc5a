"""What the attention pictures cost a training run: wall time of `cli.py fit` with the default pictures against
`--viz_images=0`, runs alternated (on, off, on, off, ...) so that drifting load hits both alike.

    python -m benchmarks.viz [--repeats=3] [--ref=DIR] -- --config=configs/ram_mnist.yaml --max_epochs=10 ...
    python -m benchmarks.viz --draw [--repeats=5] [--ref=DIR]
    python -m benchmarks.viz --share -- --config=configs/ram_mnist.yaml --max_epochs=10 ...

`--draw` times one drawing instead (`callbacks.render`, what the attention logger does at each validation), for an
Attention shaped like each preset's (8 images; random weights do not matter to the cost): the csv logger's PNG of
the grid, TensorBoard's grid array, and wandb's step GIF with the accuracy plot. Medians of wall and CPU ms.

`--share` runs `cli.py fit` once with the pictures on under cProfile and prints the time spent in
`AttentionLogger.log_attention` (the model's forward on the images, the drawing and the writing, all on the training
thread) against the whole run: the pictures' share of the wall time, whatever the load on the machine.

Everything after `--` goes to `cli.py fit` unchanged. Prints each run's wall time and CPU time (the run with its
drawing worker), the medians and their ratios: the wall ratio is what a user waits for (the drawing hides on a
free core), the CPU ratio what the pictures cost whatever the load.
With `--ref=DIR` (a checkout of another commit, e.g. a `git worktree` of main) the same runs of that checkout are
interleaved too, so old and new are measured under the same load.
"""
from __future__ import annotations

import argparse
import json
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


def presets() -> dict:
    """An Attention shaped like each preset's output for 8 validation images (smooth blobs as images)."""
    import torch

    from attention_lightning.attention import Attention

    g = torch.Generator().manual_seed(0)
    b = 8

    def images(c: int, side: int) -> torch.Tensor:
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
        at = torch.rand(b, c, 2, 1, 1, generator=g) - 0.5
        return torch.exp(-((xx - at[:, :, 0]) ** 2 + (yy - at[:, :, 1]) ** 2) * 8)  # (b, c, side, side)

    def boxes(t: int, halves: list[float]) -> torch.Tensor:
        c = torch.rand(b, t, 1, 2, generator=g) - 0.5
        half = torch.tensor(halves).view(1, 1, -1, 1)
        return torch.cat([c - half, c + half], -1)  # (b, t, S, 4)

    def probs(t: int, k: int) -> torch.Tensor:
        return torch.softmax(torch.randn(b, t, k, generator=g), -1)

    labels = torch.arange(b) % 10
    return {
        "ram_mnist (28x28, 6 glimpses of 8x8)": Attention(
            images=images(1, 28), probs=probs(6, 10), boxes=boxes(6, [8 / 28]), views=torch.rand(b, 6, 1, 8, 8),
            labels=labels),
        "ram_cluttered60 (60x60, 8 glimpses, 3 scales)": Attention(
            images=images(1, 60), probs=probs(8, 10), boxes=boxes(8, [12 / 60, 24 / 60, 48 / 60]),
            views=torch.rand(b, 8, 3, 12, 12), labels=labels),
        "pham_svhn (32x32 RGB, 7 steps, EIG maps)": Attention(
            images=images(3, 32), probs=probs(7, 10), boxes=boxes(7, [0.25]), maps=torch.rand(b, 7, 7, 7, generator=g),
            labels=labels, map_title="EIG", map_extent=(-0.875, -0.875, 0.875, 0.875)),
        "dham_mnist120 (120x120, crop 28, pmf)": Attention(
            images=images(1, 120), probs=probs(1, 10), boxes=boxes(1, [28 / 120]),
            maps=torch.rand(b, 1, 112, 112, generator=g), views=torch.rand(b, 1, 1, 28, 28), labels=labels,
            map_title="pmf", map_extent=(-112 / 120,) * 2 + (112 / 120,) * 2),
        "han_vqa_6x6 (48x48 RGB, 6x6 cells, questions)": Attention(
            images=images(3, 48), probs=probs(1, 28), maps=(torch.rand(b, 1, 6, 6, generator=g) > 0.7).float(),
            labels=labels % 5, captions=[f"what colour is the {i}th square left of the circle?" for i in range(b)],
            map_title="selected cells"),
    }


WANTS = {"csv (grid PNG)": ["grid_png"], "tensorboard (grid)": ["grid"], "wandb (GIF + accuracy)": ["accuracy", "steps_gif"]}


def draw_times(repeats: int) -> dict:
    """{preset: {logger: (median wall ms, median CPU ms)}} of ``callbacks.render`` in this process's checkout
    (an older ``render`` that takes a packed Attention gets one)."""
    import inspect

    from attention_lightning import callbacks

    packed = "packed" in inspect.signature(callbacks.render).parameters
    out = {}
    for name, att in presets().items():
        arg = callbacks.pack(att) if packed else att
        out[name] = {}
        for logger, wants in WANTS.items():
            if "steps_gif" in wants and att.steps == 1:
                continue  # one-step models send wandb overlays only: nothing drawn
            callbacks.render(arg, 8, None, wants)  # warm: fonts, colour maps
            walls, cpus = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                callbacks.render(arg, 8, None, wants)
                walls.append((time.perf_counter() - t0) * 1e3)
                cpus.append((time.process_time() - c0) * 1e3)
            out[name][logger] = (statistics.median(walls), statistics.median(cpus))
    return out


def draw(checkouts: dict[str, Path], repeats: int) -> None:
    """Print ``draw_times`` of each checkout (each in its own process, one thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results = {}
    for name, checkout in checkouts.items():
        # this tree's benchmark code, loaded by its path, drawing with the checkout's library (the working directory)
        code = (f"import importlib.util, json; spec = importlib.util.spec_from_file_location('viz', {__file__!r}); "
                f"viz = importlib.util.module_from_spec(spec); spec.loader.exec_module(viz); "
                f"print(json.dumps(viz.draw_times({repeats})))")
        done = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"drawing in {checkout} failed:\n{done.stderr[-2000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"one drawing of 8 images (callbacks.render), median of {repeats}; OMP_NUM_THREADS=1, {os.cpu_count()} CPUs")
    for preset in results["this"]:
        for logger in results["this"][preset]:
            line = f"{preset:<48} {logger:<24}"
            for name in checkouts:
                wall, cpu = results[name][preset][logger]
                line += f" {name}: {wall:7.1f} ms wall {cpu:7.1f} ms CPU"
            if "ref" in results:
                line += f"  ref/this CPU {results['ref'][preset][logger][1] / results['this'][preset][logger][1]:5.1f}x"
            print(line)


def share(flags: list[str]) -> None:
    """Print the share of one profiled `cli.py fit` (pictures on) spent in ``AttentionLogger.log_attention``."""
    import pstats

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATTENTION_LIGHTNING_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        prof = str(Path(tmp) / "fit.prof")
        cmd = [sys.executable, "-m", "cProfile", "-o", prof, "cli.py", "fit", *flags, f"--default_root_dir={tmp}/run"]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        stats = pstats.Stats(prof).stats  # {(file, line, name): (calls, primitive calls, tottime, cumtime, callers)}
    total = max(row[3] for row in stats.values())
    drawn = [(row[0], row[3]) for (file, _, name), row in stats.items()
             if name == "log_attention" and file.endswith("callbacks.py")]
    calls, seconds = (sum(c for c, _ in drawn), sum(s for _, s in drawn)) if drawn else (0, 0.0)
    print(f"cli.py fit {' '.join(flags)} under cProfile, OMP_NUM_THREADS=1, {os.cpu_count()} CPUs")
    print(f"log_attention: {calls} calls, {seconds:.2f} s of {total:.1f} s ({100 * seconds / total:.2f}% of the run; "
          f"{1000 * seconds / max(calls, 1):.0f} ms per call, profiler overhead included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ref", type=Path, default=None, help="another checkout to time beside this one")
    parser.add_argument("--draw", action="store_true", help="time one drawing per preset instead of whole runs")
    parser.add_argument("--share", action="store_true", help="profile one run: the pictures' share of its time")
    args, flags = parser.parse_known_args()
    flags = [f for f in flags if f != "--"]
    checkouts = {"this": ROOT, **({"ref": args.ref.resolve()} if args.ref else {})}
    if args.draw:
        draw(checkouts, args.repeats)
        return
    if args.share:
        share(flags)
        return
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
        pairs = [a / b for a, b in zip(times[(name, True)], times[(name, False)])]  # each on run over the off run after it
        print(f"{name:<4} wall ratio of each on/off pair: {', '.join(f'{r:.3f}' for r in pairs)}; "
              f"median {statistics.median(pairs):.3f}")


if __name__ == "__main__":
    main()
