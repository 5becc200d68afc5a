"""Synthetic visual question answering scenes, made on the fly: the task HAN / AdaHAN is tested on here.

In the spirit of the toy scenes of Malinowski et al., "Learning Visual Question Answering by
Bootstrapping Hard Attention" (ECCV 2018), kept small enough to learn on a CPU. A scene is a
``canvas_size`` square canvas cut into a ``grid`` x ``grid`` lattice of places (3x3: top left ... bottom
right); ``min_objects``..``max_objects`` objects, each a (colour, shape) pair unique in its scene (from the
first ``num_colours`` colours and ``num_shapes`` shapes; fewer make an easier task) with a
size (small/large), sit in distinct places with some jitter, over ``clutter`` small grey squares that no
question mentions. Each item is one scene with one question whose answer needs *where* things are:

- ``exist``:  "is there a red circle ?"                               -> yes | no
- ``query``:  "what colour|shape|size is the object at the top left ?" -> a colour | shape | size
- ``count``:  "how many red objects are there ?", "how many circles are there ?" -> 0 .. max_count
- ``relate``: "is the red circle left of the blue square ?"           -> yes | no (by centre x)

The scene is drawn to fit its question: the answer is picked uniformly first (yes/no, the count, ...)
and the scene built to make it true, so every type's answers are balanced and the majority answer is
far below what a model that looks can reach (``majority_baseline()``). ``answer_question`` reads a
question's text against a scene independently of the generator; the tests check the two agree.

Item i of val/test is drawn from a generator seeded by (data_seed, split, i): identical across runs,
workers and ranks. A train item also mixes in one draw from torch's RNG, so train scenes change every
epoch yet repeat under the same ``--seed``. Batches are dicts: ``image`` (B, 3, H, W) float32 in [0, 1],
``question`` (B, L) token ids padded with 0, ``length`` (B,), ``answer`` (B,), ``qtype`` (B,) and
``text`` (the questions as strings).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from attention_lightning.registry import register_datamodule

from .base import BaseDataModule

COLOURS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.95, 0.1, 0.1), "green": (0.1, 0.8, 0.1), "blue": (0.2, 0.3, 1.0),
    "yellow": (0.95, 0.9, 0.1), "magenta": (0.9, 0.1, 0.9), "cyan": (0.1, 0.9, 0.9),
}
CLUTTER_RGB = (0.5, 0.5, 0.5)
SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
SIZES = ("small", "large")
SIZE_RADIUS = (0.25, 0.4)  # object radius as a fraction of a place's side
QTYPES = ("exist", "query", "count", "relate")
ROW_NAMES = {2: ("top", "bottom"), 3: ("top", "middle", "bottom"), 4: ("top", "upper", "lower", "bottom")}
COL_NAMES = {2: ("left", "right"), 3: ("left", "centre", "right"), 4: ("left", "inner-left", "inner-right", "right")}
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
PAD, UNK = "<pad>", "<unk>"


@dataclass
class Scene:
    """One scene and its question. Pixel coordinates: x right, y down, pixel j spans [j, j + 1)."""
    colour: np.ndarray   # (n,) index into COLOURS
    shape: np.ndarray    # (n,) index into SHAPES
    size: np.ndarray     # (n,) index into SIZES
    place: np.ndarray    # (n,) grid place, row * grid + col
    centre: np.ndarray   # (n, 2) (x, y) in pixels
    radius: np.ndarray   # (n,) in pixels
    clutter: np.ndarray  # (m, 3) (x, y, half side) of grey squares, in pixels
    question: str = ""
    answer: str = ""
    qtype: str = ""


def place_names(grid: int) -> List[str]:
    """Names of the grid's places in row-major order, e.g. 'top left' ... 'bottom right' for 3x3."""
    return [f"{r} {c}" for r in ROW_NAMES[grid] for c in COL_NAMES[grid]]


def question_words(grid: int) -> List[str]:
    """Every word a question can use (sorted)."""
    words = {"is", "there", "a", "what", "the", "object", "at", "how", "many", "objects", "are", "of", "?",
             "left", "right", "colour", "shape", "size"}
    words |= set(COLOURS) | set(SHAPES) | set(PLURALS.values())
    for name in place_names(grid):
        words |= set(name.split())
    return sorted(words)


def answer_words(max_count: int) -> List[str]:
    """The fixed answer vocabulary: yes/no, colours, shapes, sizes, counts 0..max_count."""
    return ["no", "yes", *COLOURS, *SHAPES, *SIZES, *(str(c) for c in range(max_count + 1))]


class Tokenizer:
    """Whitespace tokenizer over a fixed vocabulary; id 0 is padding, 1 an unknown word."""

    def __init__(self, words: Sequence[str]) -> None:
        self.itos = [PAD, UNK, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> List[int]:
        return [self.stoi.get(w, 1) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.itos[int(i)] for i in ids if int(i) != 0)


def answer_question(scene: Scene, question: str, grid: int) -> str:
    """The answer to ``question`` read off the scene's objects (independent of how the scene was made)."""
    colours, shapes, places = list(COLOURS), list(SHAPES), place_names(grid)
    colour_of = {c: i for i, c in enumerate(colours)}
    shape_of = {s: i for i, s in enumerate(shapes)}
    plural_of = {p: shape_of[s] for s, p in PLURALS.items()}

    def find(c: str, s: str) -> np.ndarray:
        return np.flatnonzero((scene.colour == colour_of[c]) & (scene.shape == shape_of[s]))

    if m := re.fullmatch(r"is there a (\w+) (\w+) \?", question):
        return "yes" if len(find(*m.groups())) else "no"
    if m := re.fullmatch(r"what (colour|shape|size) is the object at the ([\w-]+ [\w-]+) \?", question):
        hit = np.flatnonzero(scene.place == places.index(m.group(2)))
        if len(hit) != 1:
            raise ValueError(f"{question!r}: {len(hit)} objects at that place")
        i = hit[0]
        table = {"colour": (colours, scene.colour), "shape": (shapes, scene.shape), "size": (SIZES, scene.size)}
        names, values = table[m.group(1)]
        return names[values[i]]
    if m := re.fullmatch(r"how many (\w+) objects are there \?", question):
        return str(int((scene.colour == colour_of[m.group(1)]).sum()))
    if m := re.fullmatch(r"how many (\w+) are there \?", question):
        return str(int((scene.shape == plural_of[m.group(1)]).sum()))
    if m := re.fullmatch(r"is the (\w+) (\w+) (left|right) of the (\w+) (\w+) \?", question):
        a, b = find(*m.group(1, 2)), find(*m.group(4, 5))
        if len(a) != 1 or len(b) != 1:
            raise ValueError(f"{question!r}: the objects compared are not unique in the scene")
        xa, xb = scene.centre[a[0], 0], scene.centre[b[0], 0]
        return "yes" if (xa < xb if m.group(3) == "left" else xa > xb) else "no"
    raise ValueError(f"unknown question form {question!r}")


class SceneGenerator:
    """Draws and renders scenes with one question each; all randomness comes from the given rng."""

    def __init__(self, canvas: int, grid: int, min_objects: int, max_objects: int, clutter: int,
                 max_count: int, qtypes: Sequence[str], noise: float = 0.0, num_colours: int = len(COLOURS),
                 num_shapes: int = len(SHAPES)) -> None:
        self.canvas, self.grid, self.clutter, self.noise = canvas, grid, clutter, noise
        self.min_objects, self.max_objects, self.max_count = min_objects, max_objects, max_count
        self.qtypes = tuple(qtypes)
        self.places = place_names(grid)
        self.cell = canvas / grid
        self.num_colours, self.num_shapes = num_colours, num_shapes  # the first ones of COLOURS and SHAPES
        self.combos = np.array([(c, s) for c in range(num_colours) for s in range(num_shapes)])  # (colours * shapes, 2)
        self.palette = np.array([(0.0, 0.0, 0.0), CLUTTER_RGB, *COLOURS.values()], dtype=np.float32)  # (2 + colours, 3)
        centres = np.arange(canvas, dtype=np.float32) + 0.5
        self.ys, self.xs = centres[:, None], centres[None, :]  # (S, 1), (1, S)

    # --- scene and question ------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Scene:
        """A scene and its question, the answer chosen uniformly first and the scene made to fit."""
        qtype = self.qtypes[int(rng.integers(len(self.qtypes)))]
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        count_attr, count_value, count = 0, 0, 0
        if qtype == "count":
            count_attr = int(rng.integers(2))  # 0: a colour, 1: a shape
            count_value = int(rng.integers(self.num_colours if count_attr == 0 else self.num_shapes))
            hit = self.combos[:, count_attr] == count_value
            count = int(rng.integers(min(self.max_count, n, int(hit.sum())) + 1))
            pos, neg = np.flatnonzero(hit), np.flatnonzero(~hit)
            chosen = np.concatenate([rng.choice(pos, count, replace=False), rng.choice(neg, n - count, replace=False)])
            chosen = rng.permutation(chosen)
        else:
            chosen = rng.choice(len(self.combos), n, replace=False)
        colour, shape = self.combos[chosen, 0], self.combos[chosen, 1]
        g = self.grid
        place = rng.choice(g * g, n, replace=False)
        while qtype == "relate" and len(np.unique(place % g)) < 2:  # two objects must differ in column
            place = rng.choice(g * g, n, replace=False)
        size = rng.integers(len(SIZES), size=n)
        radius = np.array(SIZE_RADIUS)[size] * self.cell  # (n,)
        offset = radius[:, None] + rng.random((n, 2)) * (self.cell - 2 * radius[:, None])  # (n, 2) inside the place
        centre = np.stack([place % g, place // g], axis=1) * self.cell + offset  # (n, 2) (x, y)
        half = max(1.0, 0.1 * self.cell)
        clutter = np.column_stack([rng.uniform(half, self.canvas - half, (self.clutter, 2)),
                                   np.full(self.clutter, half)])  # (m, 3)
        scene = Scene(colour, shape, size, place, centre, radius, clutter, qtype=qtype)
        scene.question, scene.answer = self._question(scene, rng, count_attr, count_value, count)
        return scene

    def _question(self, s: Scene, rng: np.random.Generator, count_attr: int, count_value: int,
                  count: int) -> Tuple[str, str]:
        colours, n = list(COLOURS), len(s.colour)
        name = lambda i: f"{colours[s.colour[i]]} {SHAPES[s.shape[i]]}"  # noqa: E731
        if s.qtype == "exist":
            yes = bool(rng.integers(2))
            if yes:
                return f"is there a {name(int(rng.integers(n)))} ?", "yes"
            present = set(zip(s.colour.tolist(), s.shape.tolist()))
            absent = [(c, sh) for c, sh in self.combos.tolist() if (c, sh) not in present]
            c, sh = absent[int(rng.integers(len(absent)))]
            return f"is there a {colours[c]} {SHAPES[sh]} ?", "no"
        if s.qtype == "query":
            i, attr = int(rng.integers(n)), ("colour", "shape", "size")[int(rng.integers(3))]
            value = {"colour": colours[s.colour[i]], "shape": SHAPES[s.shape[i]], "size": SIZES[s.size[i]]}[attr]
            return f"what {attr} is the object at the {self.places[s.place[i]]} ?", value
        if s.qtype == "count":
            if count_attr == 0:
                return f"how many {colours[count_value]} objects are there ?", str(count)
            return f"how many {PLURALS[SHAPES[count_value]]} are there ?", str(count)
        if s.qtype == "relate":
            col = s.place % self.grid
            pairs = [(a, b) for a in range(n) for b in range(n) if col[a] != col[b]]
            a, b = pairs[int(rng.integers(len(pairs)))]
            yes = bool(rng.integers(2))
            a_left = bool(s.centre[a, 0] < s.centre[b, 0])
            word = "left" if a_left == yes else "right"
            return f"is the {name(a)} {word} of the {name(b)} ?", "yes" if yes else "no"
        raise ValueError(f"unknown question type {s.qtype!r}; use one of {', '.join(QTYPES)}")

    # --- rendering ---------------------------------------------------------------------------
    def masks(self, s: Scene) -> np.ndarray:
        """Boolean masks (n, S, S) of the scene's objects."""
        dx = self.xs[None] - s.centre[:, 0, None, None].astype(np.float32)  # (n, 1, S)
        dy = self.ys[None] - s.centre[:, 1, None, None].astype(np.float32)  # (n, S, 1)
        r = s.radius[:, None, None].astype(np.float32)  # (n, 1, 1)
        ax, ay = np.abs(dx), np.abs(dy)
        shapes = np.stack([
            dx * dx + dy * dy <= r * r,                                                # circle
            np.maximum(ax, ay) <= 0.85 * r,                                            # square
            (dy >= -r) & (dy <= 0.75 * r) & (ax <= (dy + r) / 1.75),                   # triangle, apex up
            ((ax <= 0.35 * r) & (ay <= r)) | ((ay <= 0.35 * r) & (ax <= r)),           # cross
        ])  # (4, n, S, S)
        return shapes[s.shape, np.arange(len(s.shape))]  # (n, S, S)

    def render(self, s: Scene, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """The scene as float32 (3, S, S) in [0, 1]: clutter first, objects over it."""
        label = np.zeros((self.canvas, self.canvas), dtype=np.int64)  # 0 background, 1 clutter, 2+ colour
        if len(s.clutter):
            cx, cy, h = (s.clutter[:, i, None, None].astype(np.float32) for i in range(3))  # (m, 1, 1)
            grey = (np.abs(self.xs[None] - cx) <= h) & (np.abs(self.ys[None] - cy) <= h)  # (m, S, S)
            label[grey.any(0)] = 1
        obj = self.masks(s)  # (n, S, S)
        top = (obj * np.arange(1, len(s.colour) + 1)[:, None, None]).max(0)  # (S, S) last object drawn wins
        drawn = top > 0
        label[drawn] = 2 + s.colour[top[drawn] - 1]
        image = self.palette[label].transpose(2, 0, 1)  # (3, S, S)
        if self.noise > 0 and rng is not None:
            image = np.clip(image + rng.normal(0.0, self.noise, image.shape).astype(np.float32), 0.0, 1.0)
        return np.ascontiguousarray(image, dtype=np.float32)


class VQAScenes(Dataset):
    """``length`` scenes of one split; item i is seeded by (data_seed, split, i) (plus torch's RNG for train)."""

    def __init__(self, generator: SceneGenerator, tokenizer: Tokenizer, answers: Sequence[str], length: int,
                 split: str, data_seed: int) -> None:
        self.gen, self.tokenizer, self.length, self.split, self.data_seed = generator, tokenizer, length, split, data_seed
        self.answers = list(answers)
        self.answer_index = {a: i for i, a in enumerate(self.answers)}

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        key = [self.data_seed, SPLIT_IDS[self.split], index]
        if self.split == "train":
            key.append(int(torch.randint(0, 2**62, ()).item()))  # advances with torch's (worker) RNG
        return np.random.default_rng(key)

    def scene(self, index: int) -> Tuple[Scene, np.random.Generator]:
        rng = self.rng(index)
        return self.gen.sample(rng), rng

    def __getitem__(self, index: int) -> dict:
        scene, rng = self.scene(index)
        return {
            "image": torch.from_numpy(self.gen.render(scene, rng)),  # (3, S, S)
            "question": torch.tensor(self.tokenizer.encode(scene.question), dtype=torch.long),  # (L_i,)
            "answer": self.answer_index[scene.answer],
            "qtype": QTYPES.index(scene.qtype),
            "text": scene.question,
        }


def collate(items: List[dict]) -> Dict[str, object]:
    """Stack images, pad questions with 0 to the longest in the batch."""
    lengths = torch.tensor([len(it["question"]) for it in items], dtype=torch.long)  # (B,)
    question = torch.zeros(len(items), int(lengths.max()), dtype=torch.long)  # (B, L)
    for i, it in enumerate(items):
        question[i, : len(it["question"])] = it["question"]
    return {
        "image": torch.stack([it["image"] for it in items]),  # (B, 3, S, S)
        "question": question,
        "length": lengths,
        "answer": torch.tensor([it["answer"] for it in items], dtype=torch.long),
        "qtype": torch.tensor([it["qtype"] for it in items], dtype=torch.long),
        "text": [it["text"] for it in items],
    }


@register_datamodule("vqa_scenes", "Synthetic VQA scenes made on the fly: shapes on a canvas, questions about where things are")
class VQAScenesDataModule(BaseDataModule):
    def __init__(
        self,
        canvas_size: int = 48,
        grid: int = 3,
        min_objects: int = 3,
        max_objects: int = 6,
        clutter: int = 4,
        max_count: int = 3,
        question_types: Sequence[str] = QTYPES,
        noise: float = 0.0,
        num_colours: int = len(COLOURS),
        num_shapes: int = len(SHAPES),
        train_size: int = 50000,
        val_size: int = 2000,
        test_size: int = 2000,
        data_seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if grid not in ROW_NAMES:
            raise ValueError(f"--grid={grid} is not supported; use one of {', '.join(map(str, ROW_NAMES))}")
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
        if clutter < 0 or noise < 0:
            raise ValueError(f"--clutter={clutter} and --noise={noise} must be non-negative")
        bad = [q for q in question_types if q not in QTYPES]
        if bad or not question_types:
            raise ValueError(f"--question_types={list(question_types)}: use a non-empty subset of {', '.join(QTYPES)}")
        for name, n in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            if n < 1:
                raise ValueError(f"--{name}={n} must be at least 1")
        self.save_hyperparameters()
        self.generator = SceneGenerator(canvas_size, grid, min_objects, max_objects, clutter, max_count,
                                        question_types, noise, num_colours, num_shapes)
        self.tokenizer = Tokenizer(question_words(grid))
        self.answers = answer_words(max_count)
        self.class_names = self.answers
        self.num_classes = len(self.answers)
        self.dims = (3, canvas_size, canvas_size)
        self._majority: Optional[Tuple[str, float]] = None

    def model_kwargs(self) -> dict:
        return {**super().model_kwargs(), "vocab_size": len(self.tokenizer)}

    def _make(self, split: str, length: int) -> VQAScenes:
        return VQAScenes(self.generator, self.tokenizer, self.answers, length, split, self.hparams.data_seed)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        self.train_set = self._make("train", hp.train_size)
        self.val_set = self._make("val", hp.val_size)
        self.test_set = self._make("test", hp.test_size)

    def majority_baseline(self) -> Tuple[str, float]:
        """The most frequent answer of the val split and its frequency (the accuracy of always saying it)."""
        if self._majority is None:
            val = self._make("val", self.hparams.val_size)
            counts = np.zeros(len(self.answers), dtype=np.int64)
            for i in range(len(val)):
                counts[val.answer_index[val.scene(i)[0].answer]] += 1
            best = int(counts.argmax())
            self._majority = (self.answers[best], float(counts[best] / counts.sum()))
        return self._majority

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, collate_fn=collate)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False, collate_fn=collate)


def images_per_second(dm: VQAScenesDataModule, n: int = 2000) -> float:
    """Generation + rendering throughput of the train split (one process)."""
    dm.setup()
    start = time.perf_counter()
    for i in range(n):
        dm.train_set[i]
    return n / (time.perf_counter() - start)
