"""How step time grows with the input size.

RAM sees only glimpses, so its step time should barely move from 60x60 to 200x200 (target: ratio <= 1.3);
DHAM's head runs over the whole image, so its step time grows with the pixel count.

    python -m benchmarks.scaling [--steps=10] [--json=benchmarks/results/scaling.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import measure_training

CASES = {
    "ram": ({"model": "ram", "data": "cluttered_mnist", "variant": "cluttered", "glimpses": 6, "glimpse_size": 12,
             "depth": 3, "batch_size": 64}, (60, 100, 200)),
    "dham": ({"model": "dham", "data": "cluttered_mnist", "variant": "dham", "batch_size": 64}, (60, 120, 240)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", default="benchmarks/results/scaling.json")
    args = ap.parse_args()
    out = {}
    print(f"{'model':<6} {'input':>9} {'step ms':>9} {'ratio to smallest':>18}")
    for name, (flags, sizes) in CASES.items():
        rows = []
        for size in sizes:
            extra = {"canvas_size": size, "train_size": (args.steps + 3) * flags["batch_size"], "digits": "embedded"}
            r = measure_training({**flags, **extra}, steps=args.steps)
            rows.append({"size": size, **r})
            print(f"{name:<6} {size:>4}x{size:<4} {r['step_ms']:>9.1f} {r['step_ms'] / rows[0]['step_ms']:>18.2f}",
                  flush=True)
        out[name] = rows
    ram = out["ram"]
    print(f"RAM step time {ram[-1]['size']}/{ram[0]['size']}: {ram[-1]['step_ms'] / ram[0]['step_ms']:.2f} (target <= 1.3)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
