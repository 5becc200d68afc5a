"""HAN / AdaHAN on a VQA scenes preset: validation accuracy per question type every few steps.

A plain training loop (one thread, the preset's data, model and batch size, Adam at the model's lr) that prints,
every ``--every`` steps, validation accuracy overall and per question type beside the per-question-type prior
(the best a model can do from the question's type alone, measured on the training items seen) and the fraction
of cells attended. For deciding task and model settings fast; the reported figures come from ``cli.py fit``.
Settings are ``key=value`` pairs on top of the preset:

    python benchmarks/vqa_probe.py --config configs/han_vqa_6x6.yaml --steps 1500 --every 250 selection=none
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention_lightning.models.han import QTYPE_NAMES  # noqa: E402
from attention_lightning.plan import build_datamodule, build_model, load_config, plan  # noqa: E402
from common import key_values  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/han_vqa_6x6.yaml")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--val_size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="model or data settings as key=value")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    flags = load_config(a.config)
    flags.update(key_values(a.overrides))
    flags.update(train_size=a.steps * flags.get("batch_size", 64), val_size=a.val_size, logger="none")
    pl_plan = plan(flags)
    dm = build_datamodule(pl_plan)
    dm.setup("fit")
    model = build_model(pl_plan, dm)
    opt = model.configure_optimizers()  # Adam at the model's lr
    val = list(dm.val_dataloader())
    prior: dict[int, Counter] = defaultdict(Counter)  # question type -> answer counts on the training items seen
    start = time.perf_counter()
    for step, batch in enumerate(dm.train_dataloader(), 1):
        for t, y in zip(batch.qtype.tolist(), batch.answer.tolist()):
            prior[t][y] += 1
        loss = torch.nn.functional.cross_entropy(model(*model.inputs(batch)), batch.answer)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.every == 0 or step == a.steps:
            model.eval()
            hit, seen, prior_hit, attended = Counter(), Counter(), Counter(), []
            with torch.no_grad():
                for vb in val:
                    cells, q = model.encode(*model.inputs(vb))
                    sel = model.choose(cells)
                    pred = model.answer(cells, q, sel).argmax(-1)
                    attended.append(sel.mask.float().mean(1))
                    for t, y, yh in zip(vb.qtype.tolist(), vb.answer.tolist(), pred.tolist()):
                        seen[t] += 1
                        hit[t] += y == yh
                        prior_hit[t] += prior[t].most_common(1)[0][0] == y if prior[t] else 0
            model.train()
            per = " ".join(f"{QTYPE_NAMES[t]} {hit[t] / seen[t]:.3f}/{prior_hit[t] / seen[t]:.3f}" for t in sorted(seen))
            total = sum(hit.values()) / sum(seen.values())
            print(f"step {step}: loss {loss.item():.3f} val {total:.3f} [{per}] (acc/prior) "
                  f"attended {torch.cat(attended).mean().item():.3f} ({time.perf_counter() - start:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
