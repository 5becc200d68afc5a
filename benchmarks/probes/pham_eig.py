"""PHAM's EIG policy against the random policy on the same weights, over seeds, with standard errors.

Each seed runs ``--phase=all`` of a PHAM preset (phases 1, 2, 3, each tested on its best checkpoint) through
``experiment.fit``, and this script keeps phase 3's test accuracy after every glimpse t = 1..T for both
policies (``test/acc_eig_t{t}``, ``test/acc_random_t{t}``) and the wall time spent training, validating
(sanity check included) and testing in each phase. One JSON per seed goes to ``--out`` as soon as the
seed finishes, so seeds can run in separate processes (``--seeds=0`` in one, ``--seeds=1`` in another)
and ``--collect`` prints the table of whatever seeds are there.

The table gives, per t, the mean accuracy over seeds of each policy with its standard error over seeds
(std / sqrt(n)), the mean paired difference EIG - random with its standard error over seeds, and, for
reference, the binomial standard error of the pooled accuracy over all seeds' test images. EIG "beats"
random at t when the difference exceeds twice its standard error.

    OMP_NUM_THREADS=1 python -m benchmarks.probes.pham_eig [--config=configs/pham_digits32.yaml] [--seeds=0,1,2]
        [--out=runs/pham_eig] [--collect] [--from_phase=3] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml

from benchmarks.common import experiment  # noqa: F401  (quiet logging, offline mode)

ROOT = Path(__file__).resolve().parents[2]


class PhaseClock(pl.Callback):
    """Wall seconds per phase spent in the sanity check, validation, testing and the rest of ``fit`` (training)."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {}
        self._start: dict[str, float] = {}

    def _add(self, pl_module, part: str, seconds: float) -> None:
        row = self.seconds.setdefault(f"phase{pl_module.phase}", {"fit": 0.0, "sanity": 0.0, "val": 0.0, "test": 0.0})
        row[part] += seconds

    def _begin(self, part: str) -> None:
        self._start[part] = time.perf_counter()

    def _end(self, pl_module, part: str) -> None:
        self._add(pl_module, part, time.perf_counter() - self._start.pop(part))

    def on_fit_start(self, trainer, pl_module) -> None:
        self._begin("fit")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._end(pl_module, "fit")

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._begin("sanity")

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        self._end(pl_module, "sanity")

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._begin("val")

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._end(pl_module, "val")

    def on_test_start(self, trainer, pl_module) -> None:
        self._begin("test")

    def on_test_end(self, trainer, pl_module) -> None:
        self._end(pl_module, "test")

    def split(self) -> dict[str, dict[str, float]]:
        """Per phase: train (fit minus its validation and sanity check), val (with sanity), test seconds."""
        return {k: {"train": v["fit"] - v["val"] - v["sanity"], "val": v["val"] + v["sanity"], "test": v["test"]}
                for k, v in self.seconds.items()}


def parse_sets(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set {item!r} is not key=value; e.g. --set max_epochs=3")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def phase2_checkpoint(out: Path, seed: int) -> str:
    """The best (else last) checkpoint of this seed's phase 2 under ``out``."""
    found = sorted((out / f"seed{seed}-phase2").glob("version_*/checkpoints/best*.ckpt")) or \
        sorted((out / f"seed{seed}-phase2").glob("version_*/checkpoints/last.ckpt"))
    if not found:
        raise SystemExit(f"--from_phase=3: no phase-2 checkpoint of seed {seed} under {out}; run without it first")
    return str(found[-1])


def run_seed(config: Path, seed: int, out: Path, overrides: dict[str, Any], from_phase: int = 1) -> dict[str, Any]:
    """``--phase=all`` of the preset with this seed (or phase 3 alone from its phase-2 checkpoint, when
    ``from_phase`` is 3); writes and returns phase 3's per-step test accuracies."""
    preset = yaml.safe_load(config.read_text())
    flags = {**preset, **overrides, "phase": "all", "seed": seed, "logger": "csv",
             "default_root_dir": str(out), "run_name": f"seed{seed}"}
    if from_phase == 3:
        flags.update(phase=3, init_from=phase2_checkpoint(out, seed), run_name=f"seed{seed}-phase3")
    clock = PhaseClock()
    t0 = time.perf_counter()
    summary = experiment.fit(flags, extra_callbacks=[clock])
    wall = time.perf_counter() - t0
    test = (summary if from_phase == 3 else summary["stages"]["phase3"])["test"]
    steps = int(flags.get("steps", 7))
    row = {"seed": seed, "config": config.name, "overrides": overrides, "wall_s": wall, "split_s": clock.split(),
           "eig": [test[f"test/acc_eig_t{t}"] for t in range(1, steps + 1)],
           "random": [test[f"test/acc_random_t{t}"] for t in range(1, steps + 1)],
           "test_size": flags.get("test_size"), "flags": {k: v for k, v in flags.items() if k != "default_root_dir"}}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"seed{seed}.json").write_text(json.dumps(row, indent=2))
    return row


def se(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def table(rows: list[dict[str, Any]]) -> str:
    """Per step: mean accuracy ± SE over seeds of both policies, the paired difference, and the pooled binomial SE."""
    n, steps = len(rows), len(rows[0]["eig"])
    images = sum(int(r["test_size"] or 0) for r in rows)
    lines = [f"{n} seeds ({', '.join(str(r['seed']) for r in rows)}), {rows[0]['test_size']} test images each; "
             f"accuracy mean ± SE over seeds [pooled binomial SE over {images} images]",
             f"{'t':>2} {'EIG':>22} {'random':>22} {'EIG - random':>16} {'> 2 SE':>6}"]
    for t in range(steps):
        e, r = [x["eig"][t] for x in rows], [x["random"][t] for x in rows]
        d = [a - b for a, b in zip(e, r)]
        me, mr, md = statistics.mean(e), statistics.mean(r), statistics.mean(d)
        be, br = (math.sqrt(m * (1 - m) / images) if images else float("nan") for m in (me, mr))
        lines.append(f"{t + 1:>2} {me:.4f} ± {se(e):.4f} [{be:.4f}] {mr:.4f} ± {se(r):.4f} [{br:.4f}] "
                     f"{md:+.4f} ± {se(d):.4f} {'yes' if md > 2 * se(d) else 'no':>6}")
    lines.append("wall seconds per seed (train / val incl. sanity / test):")
    for r in rows:
        parts = r["split_s"]
        train = sum(v["train"] for v in parts.values())
        evaluation = sum(v["val"] + v["test"] for v in parts.values())
        detail = "; ".join(f"{k} {v['train']:.0f}/{v['val']:.0f}/{v['test']:.0f}" for k, v in sorted(parts.items()))
        lines.append(f"  seed {r['seed']}: total {r['wall_s']:.0f} s, training {train:.0f} s, evaluating "
                     f"{evaluation:.0f} s ({detail})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "pham_digits32.yaml"))
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds to run (skipped with --collect)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "pham_eig"), help="run folders and one JSON per seed")
    ap.add_argument("--collect", action="store_true", help="only print the table of the seeds found in --out")
    ap.add_argument("--from_phase", type=int, choices=(1, 3), default=1,
                    help="3: train only phase 3, from each seed's phase-2 checkpoint already in --out")
    ap.add_argument("--set", nargs="*", default=[], help="preset overrides, key=value (e.g. max_epochs=3)")
    args = ap.parse_args()
    out = Path(args.out)
    if not args.collect:
        overrides = parse_sets(args.set)
        for seed in (int(s) for s in args.seeds.split(",") if s):
            run_seed(Path(args.config), seed, out, overrides, args.from_phase)
    rows = sorted((json.loads(p.read_text()) for p in out.glob("seed*.json")), key=lambda r: r["seed"])
    if not rows:
        raise SystemExit(f"no seed*.json in {out}; run without --collect first")
    print(table(rows))


if __name__ == "__main__":
    main()
