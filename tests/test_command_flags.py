"""The CLI's own flags, declared once (``run/flags.py``): the plan's checks, ``--help``, the Trainer's arguments
and the resume checks all read the declaration or what the plan worked out from it."""
from __future__ import annotations

import typing
from pathlib import Path

import pytest

from attention_lightning import registry
from attention_lightning.run import plan as planning
from attention_lightning.run import resume as resuming
from attention_lightning.run.checkpoints import LastCheckpoint
from attention_lightning.run.flags import COMMANDS, RECORDED, TRAINER_BUILT, Flag, FlagError, declared, own_flags
from attention_lightning.run.help import CLI_MEANINGS
from attention_lightning.run.plan import UserError, own_value, plan, signatures
from attention_lightning.run.trainer import make_trainer
from attention_lightning.signature import conforms, parameters
from attention_lightning.viz.logger import AttentionLogger

WRONG = {int: [1.5, "x", True], float: ["x", True], bool: ["yes", 2], str | int: [True, 1.5]}


def test_every_command_declares_each_flag_once_with_a_type_default_and_meaning():
    for command, flags in COMMANDS.items():
        names = [f.name for f in flags]
        assert len(names) == len(set(names)), command
        for f in flags:
            assert isinstance(f, Flag) and f.meaning and "\n" not in f.meaning
            assert f.default is None or conforms(f.default, f.type), (command, f.name)
            assert CLI_MEANINGS[f.name][2]  # help has a meaning for it
    assert planning.COMMAND_FLAGS == {c: tuple(f.name for f in flags) for c, flags in COMMANDS.items()}


@pytest.mark.parametrize("f", sorted({f for flags in COMMANDS.values() for f in flags if f.fix},
                                     key=lambda f: (f.name, str(f.default))), ids=lambda f: f.name)
def test_a_wrong_value_fails_with_the_declared_fix(f):
    wrong = list(WRONG.get(f.type, []))
    if f.choices:
        wrong.append("nonsense")
    if f.minimum is not None:
        wrong.append(f.minimum - 1)
    assert wrong, f.name
    for value in wrong:
        with pytest.raises(FlagError) as e:
            f.value(value)
        assert str(e.value).startswith(f"--{f.name}=") and str(e.value).endswith(f.fix)
    assert f.value(f.default if f.default is not None else "last") is not None


def test_choices_are_the_literal_and_fire_strings_are_read():
    split = declared("visualize", "split")
    assert split.choices == ("val", "test") and split.kind == "str" and split.value("test") == "test"
    assert declared("export", "split").default == "test" and declared("visualize", "split").default == "val"
    assert declared("fit", "compile").value("true") is True  # fire hands --compile=true over as a string
    assert declared("fit", "checkpoint_every_n_minutes").value(5) == 5


def test_a_flag_of_another_command_names_its_command():
    with pytest.raises(FlagError, match=r"--resume is a flag of `fit`, not of `test`; test takes --ckpt=PATH"):
        own_flags("test", {"resume": "last"})
    with pytest.raises(FlagError, match=r"--num_images is a flag of `visualize`/`export`, not of `fit`"):
        own_flags("fit", {"num_images": 2})


def test_the_plan_carries_every_own_flag_resolved_and_the_signatures_it_routed_by():
    p = plan({"checkpoint_every_n_steps": 7, "compile": "false", "run_name": 12})
    assert p.resolved == {**{f.name: f.default for f in COMMANDS["fit"]}, "checkpoint_every_n_steps": 7,
                          "compile": False, "run_name": "12"}
    assert p.cli == {**{f.name: f.default for f in RECORDED}, "checkpoint_every_n_steps": 7, "compile": False,
                     "run_name": "12"}  # what was given, checked: what a run's config.yaml records
    expected = signatures(registry.get_model("dham").cls, registry.get_datamodule("cluttered_mnist").cls)
    assert {k: list(v) for k, v in p.signatures.items()} == {k: list(v) for k, v in expected.items()}
    assert not set(TRAINER_BUILT) & set(p.signatures["trainer"])
    assert set(TRAINER_BUILT) <= set(parameters(__import__("pytorch_lightning").Trainer))


def test_commands_read_their_popped_flags_from_the_declaration():
    given = {"num_images": 3, "split": "train"}
    assert own_value("export", "num_images", given) == 3 and "num_images" not in given
    with pytest.raises(UserError, match=r"--split='train' is not drawable; use --split=val or --split=test"):
        own_value("export", "split", given)
    assert own_value("export", "split", {}) == "test" and own_value("visualize", "split", {}) == "val"


def test_the_trainer_is_built_from_the_declared_flags(tmp_path):
    run_dir = tmp_path / "x" / "version_0"
    p = plan({"checkpoint_every_n_steps": 7, "viz_images": 2, "enable_progress_bar": False})
    trainer = make_trainer(p, run_dir)
    last = next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint))
    minutes = declared("fit", "checkpoint_every_n_minutes").default
    assert last.every_n_steps == 7 and last.every_seconds == 60.0 * minutes
    shown = next(c for c in trainer.callbacks if isinstance(c, AttentionLogger))
    assert shown.num_images == 2 and shown.every_n_steps == declared("fit", "viz_every_n_steps").default
    assert type(trainer.logger).__name__ == "AppendingCSVLogger"  # --logger's default
    none = make_trainer(plan({"logger": "none", "enable_progress_bar": False}), run_dir)
    assert none.logger is None and not any(isinstance(c, AttentionLogger) for c in none.callbacks)


def test_help_rows_are_the_declaration():
    text = planning.help_text("export", {})
    row = next(line for line in text.splitlines() if line.startswith("  --split "))
    f = declared("export", "split")
    assert row.split()[1:4] == ["str", "default", repr(f.default)] and row.endswith(f.meaning)
    fit = planning.help_text("fit", {})
    assert next(line for line in fit.splitlines() if line.startswith("  --run_name ")).split()[3] == "'<model>-<data>'"
    assert [line.split()[0][2:] for line in fit.split("\ncli:\n")[1].split("\n\n")[0].splitlines()] == \
        [f.name for f in COMMANDS["fit"]]


def test_resume_checks_read_the_plans_signatures(monkeypatch, tmp_path):
    p = plan({"lr": 0.5})

    def again(*args, **kwargs):
        raise AssertionError("the resume checks worked the signatures out again")

    monkeypatch.setattr(planning, "signatures", again)
    monkeypatch.setattr(resuming, "signatures", again, raising=False)
    old = {"model": {"lr": 0.25}, "data": {}, "trainer": {}, "seed": p.resolved["seed"]}
    with pytest.raises(UserError, match=r"--lr was 0\.25, now 0\.5"):
        resuming.check_resume_flags({"flags": old}, p, Path("x.ckpt"))
    saved = resuming.Resume(Path("x.ckpt"), {"attention_lightning": {"flags": {**old, "trainer": {"devices": 2}}}},
                            None, 0)
    with pytest.raises(UserError, match=r"trained with --devices=2, --num_nodes=1, --strategy=auto"):
        resuming.check_resume_world(saved, p, typing.cast(typing.Any, type("T", (), {"world_size": 1})()))
