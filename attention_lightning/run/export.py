"""``python cli.py export``: a trained model as a folder that loads without its run, in the Hugging Face Hub's layout.

    model.safetensors   the weights (tensors only: nothing in the folder is pickled)
    config.json         the registry name, every constructor argument, the data facts a user needs to feed the
                        model (classes and their names, image size and channels, normalization, the question
                        vocabulary for VQA), and the sha256 of every other file and of itself
    README.md           the model card: the Hub's YAML header, then the model, its paper, data, test metrics with
                        their budget and seed, the command, its attention picture and its limitations
    attention.png       what the model looked at on the first items of the data's test split

``attention_lightning.from_pretrained`` (``run/pretrained.py``) loads it, after checking every file against its sha256.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from .. import registry
from ..models.base import choices
from ..signature import parameters
from .plan import UserError, build_datamodule, own_value, plan, user_errors
from .runconfig import CONFIG_FILE, command_line, plain, read_header
from .checkpoints import CKPT_KEY, checkpoint_meta, load_model
from .folders import run_dir_of

FORMAT = "attention-lightning-export/1"
WEIGHTS, CONFIG, CARD, PICTURE = "model.safetensors", "config.json", "README.md", "attention.png"
PAPERS = {  # registry name -> (citation, link)
    "ram": ('Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual Attention", NIPS 2014',
            "https://arxiv.org/abs/1406.6247"),
    "pham": ('Rangrej & Clark, "A Probabilistic Hard Attention Model For Sequentially Observed Scenes", BMVC 2021',
             "https://arxiv.org/abs/2111.07534"),
    "han": ('Malinowski, Doersch, Santoro, Battaglia, "Learning Visual Question Answering by Bootstrapping Hard '
            'Attention", ECCV 2018', "https://arxiv.org/abs/1808.00300"),
    "dham": ("none (the differentiable hard attention module's authors' repository reports figures, not numbers)",
             None),
    "cnn": ("none (the full-image CNN baseline of this suite)", None),
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_digest(config: Mapping[str, Any]) -> str:
    """The sha256 of ``config`` without its own ``config_sha256`` entry, as canonical JSON."""
    body = {k: v for k, v in config.items() if k != "config_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an export of this module (its ``config.json`` names the format)."""
    try:
        return json.loads((folder / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def model_arguments(model: pl.LightningModule) -> dict[str, Any]:
    """Every constructor argument of ``model`` at the value it was built with, as JSON values (a file an argument
    names, such as PHAM's ``--init_from``, is kept as a record: the model reads it only when training starts)."""
    out: dict[str, Any] = {}
    hp = dict(model.hparams)
    for name, param in parameters(type(model)).items():
        value = hp.get(name, param.default)
        if value is param.empty:
            raise UserError(f"cannot export model {model.registry_name!r}: its argument {name} was not saved")
        if plain(value) is None and value is not None:
            raise UserError(f"cannot export model {model.registry_name!r}: argument {name}={value!r} is not a "
                            f"JSON value")
        out[name] = plain(value)
    return out


def data_record(data_name: str, dm: pl.LightningDataModule) -> dict[str, Any]:
    """What a user needs to feed the model: the data's flags, classes, image size and channels, normalization,
    and for questions the vocabulary (``datamodules.questions.Tokenizer``: id 0 pads, 1 is an unknown word)."""
    facts = registry.data_facts(dm)
    sig = parameters(type(dm))
    flags = {k: plain(v) for k, v in dict(getattr(dm, "hparams", {}) or {}).items() if k in sig}
    source = str(getattr(dm, "digit_source", None) or "").split(" ", 1)[0]
    if flags.get("digits") == "auto" and source in ("mnist", "embedded"):
        flags["digits"] = source  # what auto found, as the run records it
    normalize = bool(getattr(dm, "normalize", False)) and getattr(dm, "mean", None) is not None
    record: dict[str, Any] = {
        "name": data_name, "flags": flags, "num_classes": facts.num_classes,
        "class_names": list(facts.class_names) if facts.class_names is not None else None,
        "in_channels": facts.in_channels, "image_size": list(facts.image_size),
        "normalization": {"mean": list(dm.mean), "std": list(dm.std)} if normalize else None,
        "input": ("images (B, C, H, W) float32 as the datamodule gives them: pixels in [0, 1] (plus any noise "
                  "its flags add)"
                  + (", then (x - mean) / std per channel" if normalize else ", not normalized")),
        "provenance": plain(facts.provenance),
    }
    tokenizer = getattr(dm, "tokenizer", None)
    if tokenizer is not None:
        record["vocabulary"] = list(tokenizer.itos)
        record["question"] = ("words split on whitespace, each its index in vocabulary (0 <pad>, 1 <unk>), padded "
                              "with 0; the model reads an attention_lightning.batches.VQABatch (image, question ids, "
                              "lengths, ...)")
    return record


def test_metrics(run_dir: Path | None) -> dict[str, float]:
    """The last test row of the run's ``metrics.csv`` (``test/*`` columns), or {} when it has none."""
    path = run_dir / "metrics.csv" if run_dir is not None else None
    if path is None or not path.is_file():
        return {}
    found: dict[str, float] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            tested = {k: float(v) for k, v in row.items() if k and k.startswith("test/") and v not in ("", None)}
            if tested:
                found = tested
    return found


def run_length(run_dir: Path | None) -> tuple[int, int] | None:
    """(epochs, steps) the run trained, from its ``metrics.csv`` (the last training row), or None without one."""
    path = run_dir / "metrics.csv" if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    epochs = steps = None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if any(k and k.startswith("train/") and v not in ("", None) for k, v in row.items()):
                epochs, steps = int(row["epoch"]) + 1, int(row["step"]) + 1
    return (epochs, steps) if epochs is not None else None


def resolve_checkpoint(ckpt: str) -> tuple[Path, str | None]:
    """The checkpoint ``--ckpt`` names (a .ckpt file, or a run folder: its best checkpoint, else ``last.ckpt``), and
    for an earlier stage of a staged run (PHAM's ``--phase=all``) its final stage's, with a note saying so."""
    path = Path(ckpt)
    if path.is_dir():
        versions = sorted((d for d in path.glob("version_*") if d.name[8:].isdigit()), key=lambda d: int(d.name[8:]))
        run = versions[-1] if versions else path
        found = sorted(run.glob("checkpoints/best-*.ckpt")) or sorted(run.glob("checkpoints/last.ckpt"))
        if not found:
            raise UserError(f"--ckpt={ckpt}: no checkpoints/best-*.ckpt or last.ckpt in {run}; give a .ckpt file")
        path = found[-1]
    elif not path.is_file():
        raise UserError(f"--ckpt={ckpt}: no such file or run folder")
    meta = checkpoint_meta(path)[CKPT_KEY]
    labels = stage_labels(registry.get_model(meta["model"]).cls, meta.get("flags", {}).get("model", {}))
    run_dir = run_dir_of(path)
    if not labels or run_dir is None:
        return path, None
    name = run_dir.parent.name
    for label in labels[:-1]:
        if name.endswith(f"-{label}"):
            final = run_dir.parent.parent / f"{name[: -len(label)]}{labels[-1]}"
            try:
                path = resolve_checkpoint(str(final))[0]
            except UserError:
                raise UserError(f"--ckpt={ckpt} is stage {label} of a {len(labels)}-stage run and its final stage "
                                f"{final} has no checkpoint; export a checkpoint of the final stage") from None
            return path, f"the final stage ({labels[-1]}) of the run whose stage {label} was given"
    return path, None


def stage_labels(cls: type, model_flags: Mapping[str, Any]) -> list[str]:
    """The stages a model trained in stages runs when its ``all`` choice is given (PHAM: phase1..phase3); []
    for a model trained in one stage."""
    for name, param in parameters(cls).items():
        if "all" in choices(param.annotation):
            stages = cls.stages({**model_flags, name: "all"})
            return [label for label, _ in stages] if len(stages) > 1 else []
    return []


def check_out(out: Path, overwrite: bool, ckpt: Path) -> None:
    """Refuse an ``--out`` that is a file, holds the checkpoint or the working folder, or is a non-empty folder
    that holds no previous export (unless ``--overwrite=true``)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out={out} is a file; give a folder to write the export into")
    resolved = out.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents or resolved in \
            ckpt.resolve().parents:
        raise UserError(f"--out={out} holds the working folder or the checkpoint; give a new folder")
    if out.is_dir() and any(out.iterdir()) and not is_export(out) and not overwrite:
        raise UserError(f"--out={out} is not empty and holds no previous export; give a new or empty folder, "
                        f"or pass --overwrite=true to replace what it holds")


def write_folder(out: Path, files: Mapping[str, Any]) -> None:
    """Write ``files`` (name -> bytes, or a callable that writes the file at a path) into a new folder and put it
    at ``out`` in one rename, so a failed export leaves ``out`` as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}.tmp"
    old = out.parent / f".{out.name}.old-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name, content in files.items():
            if callable(content):
                content(tmp / name)
            else:
                (tmp / name).write_bytes(content)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def export_model(model: pl.LightningModule, out: str | Path, data_name: str, dm: pl.LightningDataModule,
                 picture_batch: Any = None, run: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (built on ``dm``'s data) as an export folder at ``out`` (replacing what is there); with
    ``picture_batch``, its attention on that batch as ``attention.png``. ``run`` describes where the weights came
    from for the card: checkpoint, run_dir, command, metrics, seed, budget, note."""
    from safetensors.torch import save_model

    from .. import viz
    from ..attention import draw_attention

    out = Path(out)
    run = dict(run or {})
    data = data_record(data_name, dm)
    config: dict[str, Any] = {"format": FORMAT, "library_name": "attention-lightning", "model": model.registry_name,
                              "args": model_arguments(model), "data": data}
    files: dict[str, Any] = {WEIGHTS: lambda path: save_model(model, str(path), metadata={"format": "pt"})}
    accuracy = None
    if picture_batch is not None:
        att = draw_attention(model, picture_batch)
        acc = att.step_accuracy()
        accuracy = None if acc is None else float(acc[-1])
        images = int(att.images.shape[0])
        files[PICTURE] = lambda path: viz.save_attention(att, path, images, data["class_names"])
        run.setdefault("picture", f"the first {images} items of the test split"
                       + ("" if accuracy is None else f" ({accuracy:.0%} of them right)"))
    files[CARD] = model_card(config, run, with_picture=picture_batch is not None).encode()

    def write_config(path: Path) -> None:
        config["files"] = {name: sha256(path.parent / name) for name in sorted(files) if name != CONFIG}
        config["config_sha256"] = config_digest(config)
        path.write_text(json.dumps(config, indent=2) + "\n")

    files[CONFIG] = write_config  # last: it records the sha256 of the files written before it
    model.eval()
    write_folder(out, files)
    return out


def _yaml_list(values: list[str]) -> str:
    return "".join(f"- {v}\n" for v in values)


# where a datamodule draws its objects from a public dataset: that dataset's Hub id, for the card's metadata
OBJECT_DATASETS = {"fashion": "zalando-datasets/fashion_mnist", "mnist": "ylecun/mnist", "embedded": "ylecun/mnist"}


def source_datasets(data: Mapping[str, Any]) -> list[str]:
    """The card's ``datasets``: the datamodule, then the Hub id of the dataset its objects come from, if any."""
    hub = OBJECT_DATASETS.get(str((data.get("flags") or {}).get("digits")))
    return [data["name"]] + ([hub] if hub else [])


def model_card(config: Mapping[str, Any], run: Mapping[str, Any], with_picture: bool) -> str:
    """README.md in the Hub's model card format: YAML metadata, then the card."""
    name, data = config["model"], config["data"]
    vqa = "vocabulary" in data
    task = "visual-question-answering" if vqa else "image-classification"
    entry = registry.get_model(name)
    metrics = dict(run.get("metrics") or {})
    acc = metrics.get("test/acc")
    header = ["---", "library_name: attention-lightning", "tags:",
              _yaml_list(["attention-lightning", "hard-attention", task, "pytorch-lightning", name]).rstrip("\n"),
              "datasets:", _yaml_list(source_datasets(data)).rstrip("\n"), "metrics:", "- accuracy"]
    if acc is not None:
        header += ["model-index:", f"- name: {name}-{data['name']}", "  results:", "  - task:",
                   f"      type: {task}", "    dataset:", f"      name: {data['name']}", f"      type: {data['name']}",
                   "    metrics:", "    - type: accuracy", f"      value: {acc:.4f}"]
    header.append("---")
    paper, link = PAPERS.get(name, (f"see the docstring of attention_lightning/models/{name}.py", None))
    lines = ["", f"# {name} on {data['name']}", "",
             f"**{name}**: {entry.description}. An attention-lightning export: "
             f"weights in `{WEIGHTS}` (safetensors), every constructor argument and the data's facts in `{CONFIG}`.",
             "", f"Paper: {paper}" + (f" ({link})" if link else "") + ".", ""]
    if run.get("note"):
        lines += [f"These are the weights of {run['note']}.", ""]
    flags = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in data["flags"].items())
    classes = data["class_names"] or list(range(data["num_classes"]))
    lines += ["## Data", "",
              f"`{data['name']}` with {flags}.", "",
              f"- input: {data['input']}; channels {data['in_channels']}, image size {data['image_size'][0]}x"
              f"{data['image_size'][1]}" + (f"; normalization mean {data['normalization']['mean']}, std "
                                             f"{data['normalization']['std']}" if data["normalization"] else ""),
              f"- {data['num_classes']} classes: {', '.join(map(str, classes))}"]
    if vqa:
        lines.append(f"- questions: {data['question']}; {len(data['vocabulary'])} words in `{CONFIG}`")
    for k, v in (data.get("provenance") or {}).items():
        lines.append(f"- {k.replace('_', ' ')}: {json.dumps(v) if not isinstance(v, str) else v}")
    lines += ["", "## Results", ""]
    if metrics:
        lines += [f"Test metrics as the run recorded them (`{run.get('metrics_file', 'metrics.csv')}`; the run tests "
                  "its best validation checkpoint), one seed, so no error bar:", "",
                  "| metric | value |", "| --- | --- |",
                  *(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())), ""]
    else:
        lines += ["The run recorded no test metrics (no `metrics.csv` with a test row beside the checkpoint); "
                  "measure them with `python cli.py test --pretrained=<this folder>`.", ""]
    budget = run.get("budget") or {}
    if budget:
        lines += ["Budget: " + ", ".join(f"{k} {v}" for k, v in budget.items()) + "."]
    if run.get("seed") is not None:
        lines += [f"Seed: {run['seed']}."]
    lines += ["", "## How it was made", "", "```bash",
              run.get("command", "(unknown: no config.yaml in the run folder)"), "```", ""]
    if run.get("export_command"):
        lines += ["Exported with", "", "```bash", run["export_command"], "```", ""]
    if with_picture:
        lines += ["## Attention", "", f"![what the model looked at]({PICTURE})", "",
                  f"Drawn from these weights on {run.get('picture', 'test items')} by the suite's "
                  "`attention_lightning.viz` (as `python cli.py visualize` draws a checkpoint).", ""]
    lines += ["## Use", "", "```python", "import attention_lightning", "",
              'model = attention_lightning.from_pretrained("<this folder or its Hub repo id>")  # eval mode',
              "```", "", "or evaluate and draw it on its data:", "", "```bash",
              "python cli.py test --pretrained=<this folder>",
              "python cli.py visualize --pretrained=<this folder> --out=attention.png", "```", "",
              "## Limitations", "",
              "- Trained at the budget above, with one seed: a short run is not comparable with the paper's full "
              "runs, and the test accuracy of one seed has no error bar.",
              "- It expects inputs like its data: the image size, channels and normalization above"
              + (", and questions in its vocabulary (other words read as <unk>)" if vqa else "")
              + "; on other data its predictions and attention mean little.",
              "- Hard attention that samples (RAM's glimpse locations, PHAM's first glimpse) gives outputs that "
              "vary from call to call unless the torch seed is fixed.",
              f"- The folder loads only with `attention_lightning` (the model code); `{CONFIG}` records the sha256 of "
              "every file, and a changed or missing file stops the load.", ""]
    return "\n".join(header) + "\n" + "\n".join(lines)


def export(flags: Mapping[str, Any]) -> dict[str, Any]:
    """``cli.py export --ckpt=PATH --out=DIR [--overwrite=true] [--num_images=8] [--split=test] [data flags]``."""
    from ..attention import first_items

    flags = dict(flags)
    given = dict(flags)
    ckpt, out = flags.pop("ckpt", None), flags.pop("out", None)
    own = {name: flags.pop(name) for name in ("overwrite", "num_images", "split") if name in flags}
    if not ckpt:
        raise UserError("export needs --ckpt=PATH (a .ckpt file or a run folder, e.g. runs/dham-cluttered_mnist)")
    if not out:
        raise UserError("export needs --out=DIR (a new folder, or a previous export to replace)")
    overwrite, num_images, split = (own_value("export", name, own) for name in ("overwrite", "num_images", "split"))
    path, note = resolve_checkpoint(str(ckpt))
    check_out(Path(str(out)), overwrite, path)
    saved = checkpoint_meta(path)
    meta = saved[CKPT_KEY]
    if flags.get("model") and flags["model"] != meta["model"]:
        raise UserError(f"--ckpt={ckpt} was written by model {meta['model']!r}, not {flags['model']!r}; drop --model")
    data_flags = meta["data_kwargs"] if flags.get("data", meta["data"]) == meta["data"] else {}
    p = plan({"model": meta["model"], "data": meta["data"], **data_flags, "logger": "none", **flags}, command="export")
    pl.seed_everything(p.resolved["seed"], workers=True, verbose=False)
    dm = build_datamodule(p)
    model = load_model(p, path)
    with user_errors():
        dm.setup("validate" if split == "val" else "test")
        batch = first_items(dm.val_dataloader() if split == "val" else dm.test_dataloader(), num_images)
    run_dir = run_dir_of(path)
    header = read_header(run_dir / CONFIG_FILE) if run_dir is not None and (run_dir / CONFIG_FILE).is_file() else {}
    old = meta.get("flags") or {}
    command = header.get("command") or command_line(
        {"model": meta["model"], "data": meta["data"], **old.get("model", {}), **old.get("data", {}),
         **old.get("trainer", {}), **({"seed": old["seed"]} if "seed" in old else {})})
    trainer_flags = old.get("trainer", {})
    trained = run_length(run_dir)
    budget = {"run": f"{trained[0]} epochs, {trained[1]} steps" if trained else None,
              "max_epochs": trainer_flags.get("max_epochs"), "max_steps": trainer_flags.get("max_steps"),
              "max_time": trainer_flags.get("max_time"), "batch size": p.data_kwargs.get("batch_size"),
              "train size": p.data_kwargs.get("train_size"),
              "these weights": f"epoch {(saved.get('epoch') or 0) + 1}, step {saved.get('global_step')}"}
    run = {"checkpoint": str(path), "note": note, "command": command, "seed": old.get("seed"),
           "metrics": test_metrics(run_dir), "metrics_file": str(run_dir / "metrics.csv") if run_dir else None,
           "budget": {k: v for k, v in budget.items() if v is not None},
           "export_command": command_line({k: v for k, v in given.items()}, "export")}
    if not run["metrics"]:
        run["metrics_file"] = None
    with user_errors():
        written = export_model(model, Path(str(out)), p.data_name, dm, batch, run)
    return {"out": str(written), "model": p.model_name, "checkpoint": str(path), "note": note,
            "files": sorted(q.name for q in written.iterdir())}
