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

Item i of val/test is drawn from the counter-based stream of (data_seed, split, i)
(``counter_rng.py``): identical across runs, workers and ranks. A train item also mixes in one draw from
torch's RNG, so train scenes change every epoch yet repeat under the same ``--seed``. A batch of scenes
is sampled and rendered at once (``SceneGenerator.sample``, ``render_batch``). Items are dicts; batches are
``attention_lightning.batches.VQABatch``: ``image`` (B, 3, H, W) float32 in [0, 1], ``question`` (B, L) token
ids padded with 0, ``length`` (B,), ``answer`` (B,), ``qtype`` (B,) and ``text`` (the questions as strings).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from attention_lightning.batches import VQABatch
from attention_lightning.registry import register_datamodule

from .base import BaseDataModule
from .counter_rng import ItemStreams, pick

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


@dataclass
class Scenes:
    """A batch of scenes with one question each; object arrays are padded to the batch's largest scene and
    ``count`` (B,) says how many of each row are real. ``scenes[i]`` is scene i as a ``Scene``."""
    colour: np.ndarray   # (B, M)
    shape: np.ndarray    # (B, M)
    size: np.ndarray     # (B, M)
    place: np.ndarray    # (B, M)
    centre: np.ndarray   # (B, M, 2) (x, y) in pixels
    radius: np.ndarray   # (B, M) in pixels
    count: np.ndarray    # (B,) objects in each scene
    clutter: np.ndarray  # (B, m, 3) (x, y, half side)
    question: List[str]
    answer: List[str]
    qtype: List[str]

    def __len__(self) -> int:
        return len(self.count)

    def __getitem__(self, i: int) -> Scene:
        n = int(self.count[i])
        return Scene(self.colour[i, :n], self.shape[i, :n], self.size[i, :n], self.place[i, :n],
                     self.centre[i, :n], self.radius[i, :n], self.clutter[i], self.question[i], self.answer[i],
                     self.qtype[i])

    @classmethod
    def stack(cls, scenes: Sequence[Scene]) -> "Scenes":
        """Scenes built by hand (e.g. in tests) as one batch."""
        b, m, k = len(scenes), max(len(s.colour) for s in scenes), len(scenes[0].clutter)
        if any(len(s.clutter) != k for s in scenes):
            raise ValueError("stacked scenes must have the same number of clutter squares")

        def pad(name: str, tail: Tuple[int, ...] = (), rows: int = m, dtype=np.int64) -> np.ndarray:
            out = np.zeros((b, rows, *tail), dtype=dtype)
            for i, s in enumerate(scenes):
                v = np.asarray(getattr(s, name), dtype=dtype).reshape(-1, *tail)
                out[i, : len(v)] = v
            return out

        clutter = pad("clutter", (3,), k, np.float64)
        return cls(pad("colour"), pad("shape"), pad("size"), pad("place"), pad("centre", (2,), dtype=np.float64),
                   pad("radius", dtype=np.float64), np.array([len(s.colour) for s in scenes]), clutter,
                   [s.question for s in scenes], [s.answer for s in scenes], [s.qtype for s in scenes])


class SceneGenerator:
    """Draws and renders batches of scenes with one question each, all numbers from per-item streams.

    Every choice is made for the whole batch at once from ``ItemStreams`` uniforms at fixed stream
    positions (``self.pos``), so an item's scene depends only on its own stream. Only the question text
    is written per item.
    """

    def __init__(self, canvas: int, grid: int, min_objects: int, max_objects: int, clutter: int,
                 max_count: int, qtypes: Sequence[str], noise: float = 0.0, num_colours: int = len(COLOURS),
                 num_shapes: int = len(SHAPES)) -> None:
        self.canvas, self.grid, self.clutter, self.noise = canvas, grid, clutter, noise
        self.min_objects, self.max_objects, self.max_count = min_objects, max_objects, max_count
        self.qtypes = tuple(qtypes)
        self.places = place_names(grid)
        self.cell = canvas / grid
        self.num_colours, self.num_shapes = num_colours, num_shapes  # the first ones of COLOURS and SHAPES
        self.combos = np.array([(c, s) for c in range(num_colours) for s in range(num_shapes)])  # (K, 2) colour, shape
        self.palette = np.array([(0.0, 0.0, 0.0), CLUTTER_RGB, *COLOURS.values()], dtype=np.float32)  # (2 + colours, 3)
        # where each choice reads its item's stream; the place draws come last (relate may redraw them)
        k, m, cells = len(self.combos), max_objects, grid * grid
        sizes = {"head": 8, "combo": k, "size": m, "offset": 2 * m, "clutter": 2 * clutter, "place": cells}
        self.pos, start = {}, 0
        for name, n in sizes.items():
            self.pos[name], start = start, start + n
        self.redraw_stride = cells  # redraw r of the places reads pos["place"] + r * cells
        self.noise_pos = 1 << 40  # far past anything the scene draws

    # --- scenes and questions ----------------------------------------------------------------
    def sample(self, streams: ItemStreams) -> Scenes:
        """One scene and question per stream; each answer is chosen uniformly first and the scene made to fit."""
        b, m, k, g = len(streams), self.max_objects, len(self.combos), self.grid
        head = streams.uniform(self.pos["head"], 8)  # (B, 8) the per-scene choices below
        qtype = np.array([QTYPES.index(q) for q in self.qtypes])[pick(head[:, 0], len(self.qtypes))]  # (B,)
        n = self.min_objects + pick(head[:, 1], self.max_objects - self.min_objects + 1)  # (B,)
        valid = np.arange(m)[None] < n[:, None]  # (B, M) real object slots

        # objects: distinct colour-shape pairs; a count question first fixes how many match its colour/shape
        is_count = qtype == QTYPES.index("count")
        attr = pick(head[:, 2], 2)                                                      # 0: colour, 1: shape
        value = pick(head[:, 3], np.where(attr == 0, self.num_colours, self.num_shapes))
        hit = (self.combos.T[attr] == value[:, None]) & is_count[:, None]               # (B, K)
        n_hit = hit.sum(1)
        counted = np.where(is_count, pick(head[:, 4], np.minimum(np.minimum(self.max_count, n), n_hit) + 1), 0)
        # sort matching pairs first, each group in random order; take `counted` matches and n - counted others
        order = np.argsort(streams.uniform(self.pos["combo"], k) + 2.0 * ~hit, axis=1)  # (B, K)
        rank = np.arange(k)[None]
        take = (rank < counted[:, None]) | ((rank >= n_hit[:, None]) & (rank < (n_hit + n - counted)[:, None]))
        chosen = np.take_along_axis(order, np.argsort(~take, axis=1, kind="stable")[:, :m], 1)  # (B, M) taken first
        colour, shape = self.combos[chosen, 0], self.combos[chosen, 1]                  # (B, M)

        # places: n distinct cells of the lattice; a relate question needs two columns, so redraw until it has
        place = np.argsort(streams.uniform(self.pos["place"], g * g), axis=1)[:, :m]    # (B, M)
        is_relate = qtype == QTYPES.index("relate")
        redraw = 0
        while True:
            col = place % g
            one_column = ((col == col[:, :1]) | ~valid).all(1) & is_relate
            if not one_column.any():
                break
            redraw += 1
            fresh = np.argsort(streams.uniform(self.pos["place"] + redraw * self.redraw_stride, g * g), axis=1)[:, :m]
            place = np.where(one_column[:, None], fresh, place)

        size = pick(streams.uniform(self.pos["size"], m), len(SIZES))                  # (B, M)
        radius = np.array(SIZE_RADIUS)[size] * self.cell                                # (B, M)
        jitter = streams.uniform(self.pos["offset"], 2 * m).reshape(b, m, 2)
        offset = radius[..., None] + jitter * (self.cell - 2 * radius[..., None])       # (B, M, 2) inside the place
        centre = np.stack([place % g, place // g], axis=-1) * self.cell + offset        # (B, M, 2) (x, y)
        half = max(1.0, 0.1 * self.cell)
        xy = half + streams.uniform(self.pos["clutter"], 2 * self.clutter).reshape(b, self.clutter, 2) * (
            self.canvas - 2 * half)
        clutter = np.concatenate([xy, np.full((b, self.clutter, 1), half)], axis=-1)    # (B, m, 3)

        # question parameters, all rows at once; the text is written per row below
        yes = head[:, 5] < 0.5
        obj = pick(head[:, 6], n)                                                        # (B,) some real object
        present = np.zeros((b, k), dtype=bool)
        present[np.nonzero(valid)[0], chosen[valid]] = True
        absent = nth_true(~present, pick(head[:, 6], k - n))                            # (B,) an absent pair
        query_attr = pick(head[:, 7], 3)
        pairs = (col[:, :, None] != col[:, None, :]) & valid[:, :, None] & valid[:, None, :]  # (B, M, M)
        flat = nth_true(pairs.reshape(b, m * m), pick(head[:, 6], np.maximum(pairs.sum((1, 2)), 1)))
        a, c = flat // m, flat % m                                                      # (B,) the compared pair
        rows = np.arange(b)
        a_left = centre[rows, a, 0] < centre[rows, c, 0]

        colours = list(COLOURS)
        question, answer = [], []
        for i in range(b):  # string formatting only
            kind = QTYPES[qtype[i]]
            if kind == "exist":
                cc, ss = (colour[i, obj[i]], shape[i, obj[i]]) if yes[i] else self.combos[absent[i]]
                q, ans = f"is there a {colours[cc]} {SHAPES[ss]} ?", "yes" if yes[i] else "no"
            elif kind == "query":
                j, what = obj[i], ("colour", "shape", "size")[query_attr[i]]
                ans = (colours[colour[i, j]], SHAPES[shape[i, j]], SIZES[size[i, j]])[query_attr[i]]
                q = f"what {what} is the object at the {self.places[place[i, j]]} ?"
            elif kind == "count":
                q = (f"how many {colours[value[i]]} objects are there ?" if attr[i] == 0
                     else f"how many {PLURALS[SHAPES[value[i]]]} are there ?")
                ans = str(counted[i])
            else:
                word = "left" if a_left[i] == yes[i] else "right"
                q = (f"is the {colours[colour[i, a[i]]]} {SHAPES[shape[i, a[i]]]} {word} of the "
                     f"{colours[colour[i, c[i]]]} {SHAPES[shape[i, c[i]]]} ?")
                ans = "yes" if yes[i] else "no"
            question.append(q)
            answer.append(ans)
        return Scenes(colour, shape, size, place, centre, radius, n, clutter, question, answer,
                      [QTYPES[q] for q in qtype])

    # --- rendering ---------------------------------------------------------------------------
    def render(self, scene: Scene) -> np.ndarray:
        """One scene as float32 (3, S, S) in [0, 1] (no noise)."""
        return self.render_batch(Scenes.stack([scene]))[0]

    def render_batch(self, scenes: Scenes, streams: Optional[ItemStreams] = None) -> np.ndarray:
        """Scenes as float32 (B, 3, S, S) in [0, 1]: clutter first, objects over it, then noise if asked
        (``noise`` > 0 and ``streams`` given). Each object is drawn in a small window around its centre."""
        b, m = scenes.colour.shape
        s = self.canvas
        reach = max(float(scenes.radius.max(initial=0.0)), float(scenes.clutter[..., 2].max(initial=0.0)))
        w = 2 * int(np.ceil(reach)) + 3                          # window side: covers any object or square
        side = s + 2 * w
        label = np.zeros(b * side * side, dtype=np.uint8)  # (B, S + 2w, S + 2w) flat: 0 background, 1 clutter,
        ar = np.arange(w)                                  # 2+ colour; the margin w takes windows past the edge

        def paint(cx: np.ndarray, cy: np.ndarray, draw, value: np.ndarray) -> None:
            """Set ``value`` (B,) where ``draw(dx, dy)`` holds in the window around (cx, cy) (B,) each."""
            x0 = np.floor(cx).astype(np.int64) - w // 2
            y0 = np.floor(cy).astype(np.int64) - w // 2
            dx = (x0[:, None] + ar + 0.5 - cx[:, None])[:, None, :]  # (B, 1, w) pixel centres from the centre
            dy = (y0[:, None] + ar + 0.5 - cy[:, None])[:, :, None]  # (B, w, 1)
            base = np.arange(b) * side * side + (y0 + w) * side + (x0 + w)  # (B,) the window's top-left, flat
            flat = base[:, None, None] + ar[None, :, None] * side + ar[None, None, :]  # (B, w, w)
            inside = draw(dx.astype(np.float32), dy.astype(np.float32))  # (B, w, w)
            label[flat[inside]] = np.broadcast_to(value[:, None, None], inside.shape)[inside]

        for j in range(scenes.clutter.shape[1]):  # loops over slots, never over the batch
            cx, cy, h = (scenes.clutter[:, j, i] for i in range(3))
            h = h.astype(np.float32)[:, None, None]
            paint(cx, cy, lambda dx, dy: (np.abs(dx) <= h) & (np.abs(dy) <= h), np.ones(b, dtype=np.uint8))
        for j in range(m):
            r = scenes.radius[:, j].astype(np.float32)[:, None, None]  # (B, 1, 1)
            real = (j < scenes.count)[:, None, None]
            kind = scenes.shape[:, j][:, None, None]

            def draw(dx, dy, r=r, real=real, kind=kind):
                ax, ay = np.abs(dx), np.abs(dy)
                return real & (                                                         # (B, w, w)
                    (kind == 0) & (dx * dx + dy * dy <= r * r)                                      # circle
                    | (kind == 1) & (np.maximum(ax, ay) <= 0.85 * r)                                # square
                    | (kind == 2) & (dy >= -r) & (dy <= 0.75 * r) & (ax <= (dy + r) / 1.75)         # triangle, apex up
                    | (kind == 3) & (((ax <= 0.35 * r) & (ay <= r)) | ((ay <= 0.35 * r) & (ax <= r)))  # cross
                )

            paint(scenes.centre[:, j, 0], scenes.centre[:, j, 1], draw, 2 + scenes.colour[:, j])
        label = label.reshape(b, side, side)[:, w:w + s, w:w + s]  # (B, S, S)
        image = np.empty((b, 3, s, s), dtype=np.float32)
        for ch in range(3):
            image[:, ch] = self.palette[:, ch][label]
        if self.noise > 0 and streams is not None:
            image = image + self.noise * streams.normal(self.noise_pos, 3 * s * s).reshape(b, 3, s, s)
            image = np.clip(image, 0.0, 1.0)
        return np.ascontiguousarray(image, dtype=np.float32)


def nth_true(mask: np.ndarray, nth: np.ndarray) -> np.ndarray:
    """Column of the ``nth`` (B,) True of each row of ``mask`` (B, K) (0-based; rows need > nth Trues)."""
    return (np.cumsum(mask, axis=1) > nth[:, None]).argmax(1)


class VQAScenes(Dataset):
    """``length`` scenes of one split; item i is drawn from the stream of (data_seed, split, i), plus one
    torch draw per item for train (so train scenes change every epoch). Batches are made at once."""

    def __init__(self, generator: SceneGenerator, tokenizer: Tokenizer, answers: Sequence[str], length: int,
                 split: str, data_seed: int) -> None:
        self.gen, self.tokenizer, self.length, self.split, self.data_seed = generator, tokenizer, length, split, data_seed
        self.answers = list(answers)
        self.answer_index = {a: i for i, a in enumerate(self.answers)}

    def __len__(self) -> int:
        return self.length

    def streams(self, indices: Sequence[int]) -> ItemStreams:
        return ItemStreams(self.data_seed, self.split, indices)

    def scenes(self, indices: Sequence[int]) -> Scenes:
        """The scenes and questions of these items (no rendering)."""
        return self.gen.sample(self.streams(indices))

    def scene(self, index: int) -> Scene:
        return self.scenes([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> List[dict]:
        """A whole batch at once (the DataLoader calls this instead of __getitem__ when it exists)."""
        streams = self.streams(indices)
        scenes = self.gen.sample(streams)
        images = torch.from_numpy(self.gen.render_batch(scenes, streams))  # (B, 3, S, S)
        qtypes = [QTYPES.index(q) for q in scenes.qtype]
        return [{"image": images[i],
                 "question": torch.tensor(self.tokenizer.encode(scenes.question[i]), dtype=torch.long),  # (L_i,)
                 "answer": self.answer_index[scenes.answer[i]], "qtype": qtypes[i], "text": scenes.question[i]}
                for i in range(len(scenes))]

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]


def collate(items: List[dict]) -> VQABatch:
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
            for start in range(0, len(val), 1024):
                answers = val.scenes(range(start, min(start + 1024, len(val)))).answer
                np.add.at(counts, [val.answer_index[a] for a in answers], 1)
            best = int(counts.argmax())
            self._majority = (self.answers[best], float(counts[best] / counts.sum()))
        return self._majority

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, collate_fn=collate)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False, collate_fn=collate)
