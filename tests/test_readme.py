"""README and registry cannot drift apart; .ci/run runs README's commands verbatim."""
import re
from pathlib import Path

from attention_lightning import registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def table_names(kind: str):
    return {m.group(1) for m in re.finditer(rf"^\| `([a-z0-9_]+)` \| {kind} \|", README, re.M)}


def test_readme_table_lists_exactly_the_registry():
    assert table_names("model") == {e.name for e in registry.models()}
    assert table_names("data") == {e.name for e in registry.datamodules()}


def test_ci_runs_readme_commands_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    install = blocks[0].strip().split(" && python cli.py fit")[0]
    assert all(part.strip() in ci for part in install.split(" && "))
    assert blocks[1].strip() in ci
