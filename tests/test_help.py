"""`python cli.py <command> --help` lists every flag the command routes, with type, default and meaning."""
import subprocess
import sys
from pathlib import Path

import pytest

from attention_lightning import registry
from attention_lightning.run import commands as experiment
from attention_lightning.run.help import argument_lines

ROOT = Path(__file__).resolve().parents[1]


class Toy:
    """A toy.

    Arguments:
        size: side of the canvas in pixels. Larger is slower.
        rate: learning rate,
            per step.

    Example:
        Toy(3)
    """

    def __init__(self, size: int = 3, rate: float = 0.1) -> None:
        pass


def test_arguments_section_gives_one_line_per_argument():
    assert argument_lines(Toy) == {"size": "side of the canvas in pixels.", "rate": "learning rate, per step."}


@pytest.mark.parametrize("args", [["fit"], ["fit", "--model=ram", "--data=cluttered_mnist"]])
def test_fit_help_lists_every_routed_flag(args):
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    flags = experiment.merge_flags(dict(a[2:].split("=", 1) for a in args[1:]))
    sigs = experiment.signatures(registry.get_model(flags["model"]).cls, registry.get_datamodule(flags["data"]).cls)
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.startswith("  --")}
    wanted = {f"--{n}" for sig in sigs.values() for n in sig} | {f"--{n}" for n in experiment.COMMAND_FLAGS["fit"]}
    assert wanted <= listed, sorted(wanted - listed)
    assert f"model ({flags['model']}):" in out.stdout and "trainer:" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("  --max_epochs "))
    assert "Stop training once this number of epochs is reached." in row


def test_help_shows_the_preset_in_use(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("model: ram\nglimpses: 4\n")
    text = experiment.help_text("fit", {"config": str(cfg)})
    assert f"preset in use: {cfg}: model=ram, glimpses=4" in text and "model (ram):" in text


def test_every_command_flag_has_a_type_default_and_meaning():
    from attention_lightning.run.help import CLI_MEANINGS

    missing = [f"--{n}" for n in experiment.CLI_FLAGS if n not in CLI_MEANINGS or not CLI_MEANINGS[n][2]]
    assert not missing, f"add these to help.CLI_MEANINGS: {missing}"
