"""README's results table is generated from benchmarks/results/: the two agree, and the generator's numbers are right."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import results_table as rt

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_is_the_one_the_result_files_make():
    text = (ROOT / "README.md").read_text()
    assert rt.generated(text) == text, "run: python -m benchmarks.results_table --write"
    i, j = rt.block(text, "results")
    rows = [line for line in text[i:j].splitlines() if line.startswith("| ")]
    assert len(rows) == len(rt.load_studies()) + 1  # a header and one row per study file


def test_readme_table_is_in_readme_first_80_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert "<!-- results:end -->" in lines[:80]


def test_every_study_file_links_to_files_that_exist_and_keeps_its_seeds():
    studies = rt.load_studies()
    assert len({r["order"] for r in studies}) == len(studies)
    for r in studies:
        assert (ROOT / r["study"]).is_file(), r["study"]
        assert (ROOT / r["preset"]).is_file(), r["preset"]
        assert r["command"]
        if "seeds" in r:
            assert all(isinstance(v, (int, float)) for v in r["seeds"].values())


def test_mean_and_standard_error_by_hand():
    mean, se, n = rt.mean_se([95.2, 96.0, 94.0])
    assert mean == pytest.approx(95.0666667)
    # deviations 0.1333, 0.9333, -1.0667: sample variance 1.01333, std 1.00664, / sqrt(3)
    assert se == pytest.approx(math.sqrt(1.0133333) / math.sqrt(3))
    assert n == 3
    assert rt.number({"seeds": {"0": 95.2, "1": 96.0, "2": 94.0}}, "%", 1) == ("95.1 ± 0.6%", 3)
    assert rt.number({"seeds": {"0": 96.7}}, "%", 1) == ("96.7%", 1)
    with pytest.raises(ValueError, match="exactly one of"):
        rt.number({"seeds": {"0": 1.0}, "summary": {"mean": 1.0, "se": 0.0, "n": 1}}, "%", 1)


def _cell(task: str, method: str, seed: int, acc: float, images: int = 60000) -> dict:
    return {"task": task, "method": method, "seed": seed, "digits": "fashion", "test_acc": acc,
            "images_seen": images, "command": f"python -m benchmarks.leaderboard --seed={seed}"}


def test_grid_cells_become_one_row_per_task_and_method():
    cells = [_cell("full", "ram", 0, 0.90), _cell("full", "cnn", 0, 0.70), _cell("full", "ram", 1, 0.80)]
    rows = rt.grid_rows(cells, study="docs/studies/leaderboard.md")
    assert [r.experiment for r in rows] == ["full: ram", "full: cnn"]
    # 90 and 80: mean 85, sample std 7.071, s.e. 5.0
    assert rows[0].result == "**85.0 ± 5.0%** test acc"
    assert rows[0].runs == "seeds 0, 1 · 60,000 images, fashion"
    assert rows[1].result == "**70.0%** test acc"
    assert rows[1].links == "[study](docs/studies/leaderboard.md)"


def test_grid_cells_of_different_budgets_or_missing_keys_are_errors():
    with pytest.raises(ValueError, match="differ in images_seen"):
        rt.grid_rows([_cell("full", "ram", 0, 0.9, 60000), _cell("full", "ram", 1, 0.8, 30000)])
    cell = _cell("full", "ram", 0, 0.9)
    del cell["digits"]
    with pytest.raises(ValueError, match="lacks \\['digits'\\]"):
        rt.grid_rows([cell])


def test_a_long_cell_and_a_missing_block_are_one_line_errors():
    row = rt.Row("x" * (rt.MAX_CELL + 1), "1", "-", "-", "-", "-")
    with pytest.raises(ValueError, match="121 characters"):
        rt.render([row])
    with pytest.raises(ValueError, match="no '<!-- results:start -->'"):
        rt.block("no markers here", "results")


def test_a_study_file_lacking_a_key_is_named(tmp_path):
    (tmp_path / "x.json").write_text('{"order": 1, "experiment": "x", "metric": "acc", "paper": "-", "command": "c", '
                                     '"study": "s.md", "seeds": {"0": 1.0}}')
    with pytest.raises(ValueError, match="x.json: add budget"):
        rt.load_studies(tmp_path)


def test_every_generated_document_is_in_step_with_the_result_files():
    for path, blocks in rt.DOCS.items():
        text = path.read_text()
        assert rt.generated(text, blocks) == text, f"{path}: run python -m benchmarks.results_table --write"


def test_full_size_rows_lead_with_the_attention_model_and_name_its_baselines():
    cells = [{**_cell("cluttered100", "ram", s, a, 500_000), "test_acc_mc": a + 0.05} for s, a in ((0, 0.5), (1, 0.6))]
    cells += [_cell("cluttered100", "cnn", 0, 0.7, 500_000), _cell("translated60", "cnn", 0, 0.9, 500_000)]
    rows = rt.fashion_rows(cells)
    assert len(rows) == 1  # translated60 has no RAM cell yet: no row
    # 50 and 60: mean 55, s.e. 5; MC 55 and 65
    assert rows[0].result == "**55.0 ± 5.0%** (MC 60.0 ± 5.0%)"
    assert rows[0].baseline == "CNN 70.0%" and rows[0].runs == "seeds 0, 1 · 500,000 images"
    with pytest.raises(ValueError, match="differ in images_seen"):
        rt.fashion_rows(cells + [_cell("cluttered100", "ram", 2, 0.5, 100)])


def test_grid_cost_counts_each_run_once_and_says_which_were_estimated():
    # PHAM's two policies come from one run (one command): its CPU counts once
    eig = {"command": "fit pham", "cpu_s": 1800.0, "wall_s": 2000.0}
    rand = {"command": "fit pham", "cpu_s": 1800.0, "wall_s": 2000.0}
    ram = {"command": "fit ram", "wall_s": 5400.0}  # no CPU recorded: its wall time stands in
    line = rt.cost_line([eig, rand, ram])
    assert line.startswith("CPU spent on the 2 finished runs: 2.0 CPU-hours")  # (1800 + 5400) / 3600
    assert "1 runs by their process's user + system time, 1 recorded before" in line
    assert rt.cost_line([eig]).startswith("CPU spent on the 1 finished runs: 0.5 CPU-hours.")
    resumed = {"command": "fit cnn", "cpu_s": 900.0, "wall_s": 1000.0, "resumed": True}  # its time before the stop is lost
    assert rt.cost_line([eig, resumed]) == ("CPU spent on the 2 finished runs: at least 0.8 CPU-hours; 1 run resumed "
                                            "after a stop counts only the part after it.\n")
