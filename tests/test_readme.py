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


def test_a_newcomer_finds_the_essentials_on_the_first_screens():
    head = "\n".join(README.splitlines()[:80])
    assert "pip install" in head and "python cli.py fit" in head  # install and the main job
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)|<img src=\"([^\"]+)\"", head)
    pictures = [next(p for p in found if p) for found in pictures]
    assert pictures, "README's first 80 lines show no attention picture"
    for path in pictures:
        assert (ROOT / path).stat().st_size < 200_000, f"{path} is over 200 KB"
    assert "<!-- fashion:start -->" in head and "<!-- fashion:end -->" in head  # the headline results table


def test_every_picture_the_readme_shows_exists():
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)|\[picture\]\(([^)]+)\)|<img src=\"([^\"]+)\"", README):
        path = next(p for p in path if p)
        assert (ROOT / path).is_file(), path


def test_the_speed_benchmarks_page_stays_short():
    lines = (ROOT / "benchmarks" / "README.md").read_text().splitlines()
    assert len(lines) < 250, f"benchmarks/README.md has {len(lines)} lines: move evidence into docs/studies/"
