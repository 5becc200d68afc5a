"""Synthetic visual question answering scenes, made on the fly: the task HAN / AdaHAN is tested on here.

In the spirit of the toy scenes of Malinowski et al., "Learning Visual Question Answering by
Bootstrapping Hard Attention" (ECCV 2018), kept small enough to learn on a CPU. Scenes and their drawing
are in ``scenes.py``, the question language in ``questions.py``; this file makes them a dataset.

Item i of val/test is drawn from the counter-based stream of (data_seed, split, i) (``counter_rng.py``):
identical across runs, workers and ranks. A train item also mixes in one draw from torch's RNG, so train
scenes change every epoch yet repeat under the same ``--seed``. A batch of scenes is sampled and rendered
at once. Batches are ``attention_lightning.batches.VQABatch``: ``image`` (B, 3, H, W) float32 in [0, 1], ``question`` (B, L) token ids padded
with 0, ``length`` (B,), ``answer`` (B,), ``qtype`` (B,) index into ``QTYPES`` and ``text`` (the questions).
"""
from __future__ import annotations

from typing import Literal
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from attention_lightning.batches import VQABatch
from attention_lightning.facts import DataFacts
from attention_lightning.registry import register_datamodule

from .base import BaseDataModule
from .counter_rng import ItemStreams
from .questions import RELATE_SIDES, ROW_NAMES, Tokenizer, answer_words, phrase, question_words
from .scenes import COLOURS, QTYPES, SHAPES, Scene, SceneGenerator, Scenes

QType = Literal["exist", "query", "count", "relate"]
MAX_GRID = 8


class VQAScenes(Dataset):
    """``length`` scenes of one split; item i is drawn from the stream of (data_seed, split, i), plus one
    torch draw per item for train (so train scenes change every epoch). Batches are made at once."""

    def __init__(self, generator: SceneGenerator, tokenizer: Tokenizer, answers: Sequence[str], length: int,
                 split: str, data_seed: int, relate_sides: str = "both") -> None:
        self.gen, self.tokenizer, self.length, self.split, self.data_seed = generator, tokenizer, length, split, data_seed
        self.relate_sides = relate_sides
        self.answers = list(answers)
        self.answer_index = {a: i for i, a in enumerate(self.answers)}

    def __len__(self) -> int:
        return self.length

    def streams(self, indices: Sequence[int]) -> ItemStreams:
        return ItemStreams(self.data_seed, self.split, indices)

    def phrased(self, streams: ItemStreams) -> Scenes:
        return phrase(self.gen.sample(streams), self.gen.combos, self.gen.grid, self.relate_sides)

    def scenes(self, indices: Sequence[int]) -> Scenes:
        """The scenes and questions of these items (no rendering)."""
        return self.phrased(self.streams(indices))

    def scene(self, index: int) -> Scene:
        return self.scenes([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """A whole batch at once (the DataLoader calls this instead of __getitem__ when it exists)."""
        streams = self.streams(indices)
        scenes = self.phrased(streams)
        images = torch.from_numpy(self.gen.render_batch(scenes, streams))  # (B, 3, S, S)
        return [{"image": images[i],
                 "question": torch.tensor(self.tokenizer.encode(scenes.question[i]), dtype=torch.long),  # (L_i,)
                 "answer": self.answer_index[scenes.answer[i]], "qtype": int(scenes.asks.qtype[i]),
                 "text": scenes.question[i]}
                for i in range(len(scenes))]

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]


def collate(items: list[dict]) -> VQABatch:
    """Stack images, pad questions with 0 to the longest in the batch."""
    lengths = torch.tensor([len(it["question"]) for it in items], dtype=torch.long)  # (B,)
    question = torch.zeros(len(items), int(lengths.max()), dtype=torch.long)  # (B, L)
    for i, it in enumerate(items):
        question[i, : len(it["question"])] = it["question"]
    return VQABatch(
        image=torch.stack([it["image"] for it in items]),  # (B, 3, S, S)
        question=question,
        length=lengths,
        answer=torch.tensor([it["answer"] for it in items], dtype=torch.long),
        qtype=torch.tensor([it["qtype"] for it in items], dtype=torch.long),
        text=[it["text"] for it in items],
    )


@register_datamodule("vqa_scenes", "Synthetic VQA scenes made on the fly: shapes on a canvas, questions about where things are")
class VQAScenesDataModule(BaseDataModule):
    """Scenes of coloured shapes on a lattice, each with one question (exist, query, count or relate).

    Arguments:
        canvas_size: side of the square image, in pixels.
        grid: places per side of the lattice (2..8; ``query`` questions name places, so they need 2..4).
        min_objects: fewest objects in a scene.
        max_objects: most objects in a scene (each in its own place, each colour-shape pair once).
        clutter: grey squares per scene that no question mentions.
        max_count: largest answer of a count question.
        question_types: the kinds of question asked, drawn uniformly (exist, query, count, relate).
        noise: std of Gaussian pixel noise added to images (0: none).
        num_colours: colours used (the first ones of red, green, blue, yellow, magenta, cyan).
        num_shapes: shapes used (the first ones of circle, square, triangle, cross).
        relate_sides: relate questions say both (left of / right of) or only left (left of; the answer is then
            not the XOR of the word and the pair's order).
        relate_axes: relate questions compare x only (x: left of / right of) or, half of them each, x or y
            (xy: also above / below, two more words in the vocabulary).
        train_size: train items per epoch (new scenes every epoch).
        val_size: validation items (fixed scenes).
        test_size: test items (fixed scenes).
        data_seed: seed of the val/test scenes (and of train scenes, with --seed).
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        pin_memory: pin batches in page-locked memory.
    """

    def __init__(
        self,
        canvas_size: int = 48,
        grid: int = 3,
        min_objects: int = 3,
        max_objects: int = 6,
        clutter: int = 4,
        max_count: int = 3,
        question_types: Sequence[QType] = QTYPES,
        noise: float = 0.0,
        num_colours: int = len(COLOURS),
        num_shapes: int = len(SHAPES),
        relate_sides: Literal["both", "left"] = "both",
        relate_axes: Literal["x", "xy"] = "x",
        train_size: int = 50000,
        val_size: int = 2000,
        test_size: int = 2000,
        data_seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if not 2 <= grid <= MAX_GRID:
            raise ValueError(f"--grid={grid} is not supported; use 2..{MAX_GRID}")
        if "query" in question_types and grid not in ROW_NAMES:
            raise ValueError(f"--question_types has query, which names places only on 2x2..4x4 lattices, but "
                             f"--grid={grid}; drop query from --question_types or use --grid <= 4")
        if canvas_size < 8 * grid:
            raise ValueError(f"--canvas_size={canvas_size} is too small for a {grid}x{grid} grid; use >= {8 * grid}")
        if not 2 <= min_objects <= max_objects <= grid * grid:
            raise ValueError(f"need 2 <= --min_objects ({min_objects}) <= --max_objects ({max_objects}) <= "
                             f"{grid * grid} places of the {grid}x{grid} grid")
        if not 1 <= max_count <= len(SHAPES):
            raise ValueError(f"--max_count={max_count} must be in 1..{len(SHAPES)} (objects are unique colour-shape pairs)")
        if not (2 <= num_colours <= len(COLOURS) and 2 <= num_shapes <= len(SHAPES)):
            raise ValueError(f"--num_colours={num_colours} and --num_shapes={num_shapes} must be in 2..{len(COLOURS)} "
                             f"and 2..{len(SHAPES)}")
        if max_objects > num_colours * num_shapes - max(num_colours, num_shapes):
            raise ValueError(f"--max_objects={max_objects} is too many for {num_colours} colours x {num_shapes} shapes "
                             f"(a count question needs room for objects without the counted colour or shape); use "
                             f"--max_objects <= {num_colours * num_shapes - max(num_colours, num_shapes)} or more "
                             f"--num_colours/--num_shapes")
        if relate_sides not in RELATE_SIDES:
            raise ValueError(f"--relate_sides={relate_sides!r} must be one of {', '.join(RELATE_SIDES)}")
        if clutter < 0 or noise < 0:
            raise ValueError(f"--clutter={clutter} and --noise={noise} must be non-negative")
        if not question_types:
            raise ValueError(f"--question_types is empty; use a non-empty subset of {', '.join(QTYPES)}")
        for name, n in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            if n < 1:
                raise ValueError(f"--{name}={n} must be at least 1")
        self.save_hyperparameters()
        self.generator = SceneGenerator(canvas_size, grid, min_objects, max_objects, clutter, max_count,
                                        question_types, noise, num_colours, num_shapes, relate_axes)
        self.tokenizer = Tokenizer(question_words(grid, relate_axes))
        self.answers = answer_words(max_count)
        self.class_names = self.answers
        self.num_classes = len(self.answers)
        self.dims = (3, canvas_size, canvas_size)
        self._majority: tuple[str, float] | None = None

    def facts(self) -> DataFacts:
        """Answers as classes, the image's size, and the question vocabulary."""
        hp = self.hparams
        return DataFacts(num_classes=self.num_classes, in_channels=3, image_size=(hp.canvas_size, hp.canvas_size),
                         vocab_size=len(self.tokenizer), class_names=tuple(self.answers),
                         provenance={"question_types": list(hp.question_types), "data_seed": hp.data_seed})

    def model_kwargs(self) -> dict:
        return self.facts().model_facts()

    def _make(self, split: str, length: int) -> VQAScenes:
        hp = self.hparams
        return VQAScenes(self.generator, self.tokenizer, self.answers, length, split, hp.data_seed, hp.relate_sides)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        self.train_set = self._make("train", hp.train_size)
        self.val_set = self._make("val", hp.val_size)
        self.test_set = self._make("test", hp.test_size)

    def _answer_counts(self, split: str, length: int) -> np.ndarray:
        """(question types, answers) counts of the answers of a split's first ``length`` items."""
        data = self._make(split, length)
        counts = np.zeros((len(QTYPES), len(self.answers)), dtype=np.int64)
        for start in range(0, length, 1024):
            scenes = data.scenes(range(start, min(start + 1024, length)))
            np.add.at(counts, (scenes.asks.qtype, [data.answer_index[a] for a in scenes.answer]), 1)
        return counts

    def majority_baseline(self) -> tuple[str, float]:
        """The most frequent answer of the val split and its frequency (the accuracy of always saying it)."""
        if self._majority is None:
            counts = self._answer_counts("val", self.hparams.val_size).sum(0)
            best = int(counts.argmax())
            self._majority = (self.answers[best], float(counts[best] / counts.sum()))
        return self._majority

    def prior_baseline(self) -> dict[str, float]:
        """Test accuracy of answering each question type with its most frequent val answer (no image, no words
        beyond the type): ``{"acc": overall, "acc_<type>": per asked type}``."""
        val = self._answer_counts("val", self.hparams.val_size)
        test = self._answer_counts("test", self.hparams.test_size)
        right = test[np.arange(len(QTYPES)), val.argmax(1)]  # (types,) test items the val prior gets right
        asked = test.sum(1)
        out = {"acc": float(right.sum() / asked.sum())}
        out.update({f"acc_{q}": float(right[i] / asked[i]) for i, q in enumerate(QTYPES) if asked[i]})
        return out

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, collate_fn=collate)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False, collate_fn=collate)
