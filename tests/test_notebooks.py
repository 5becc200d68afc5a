"""Every notebook in notebooks/ runs top to bottom, shows a picture, and is stored without outputs.

Same as ``pytest --nbmake notebooks/``, but here the plain ``pytest`` of the README runs them too, with a
per-cell timeout and a check that each one drew something.
"""
import json
from pathlib import Path

import pytest

from attention_lightning import registry

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def test_there_is_a_notebook_for_every_registered_model():
    assert {p.stem for p in NOTEBOOKS} >= {e.name for e in registry.models()}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
                f"{path.name} holds outputs; clear them before committing "
                f"(jupyter nbconvert --clear-output --inplace {path.name})")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_draws(path):
    import nbformat  # the dev extras (setup.cfg) install nbformat, nbclient and ipykernel
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()  # raises on the first failing cell
    kinds = {mime for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
             for mime in out.get("data", {})}
    assert "image/png" in kinds, f"{path.name} ran but drew no picture"
