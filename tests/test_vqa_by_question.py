"""benchmarks/probes/vqa_by_question.py: finer test accuracy of a HAN checkpoint, by relation word and count answer."""
from __future__ import annotations

import pytest

from attention_lightning.run import commands as experiment
from benchmarks.probes import vqa_by_question as script
from tiny import tiny_flags


def test_groups_split_relate_by_word_and_count_by_answer():
    assert script.group_of("relate", "is the red circle left of the blue square ?", "yes") == "relate left"
    assert script.group_of("relate", "is the red circle below the blue square ?", "no") == "relate below"
    assert script.group_of("count", "how many circles are there ?", "2") == "count = 2"
    assert script.group_of("exist", "is there a red circle ?", "yes") == "exist"


def test_by_question_agrees_with_the_runs_own_test_figures(tmp_path):
    """Per type, the script's accuracy is the run's logged ``test/acc_<type>`` (the same checkpoint and items), the
    finer groups add up to their type, and every relation word of ``--relate_axes=xy`` appears."""
    flags = tiny_flags("han", default_root_dir=str(tmp_path), max_steps=4, test_size=96, relate_axes="xy",
                       question_types=["exist", "count", "relate"], selection="adaptive")
    summary = experiment.fit(flags)
    table = script.by_question(summary["best_checkpoint"] or summary["last_checkpoint"], {})
    for qtype in ("exist", "count", "relate"):
        acc, n, kept = table[qtype]
        assert acc == pytest.approx(summary["test"][f"test/acc_{qtype}"], abs=1e-6)
        parts = [v for g, v in table.items() if g.startswith(qtype + " ")]
        if qtype != "exist":
            assert sum(p[1] for p in parts) == n and sum(p[0] * p[1] for p in parts) == pytest.approx(acc * n)
        assert kept >= 1
    assert sum(table[t][1] for t in ("exist", "count", "relate")) == 96
    assert {f"relate {w}" for w in ("left", "right", "above", "below")} <= set(table)
