"""Scenes of coloured shapes on a lattice of places: the containers, the batched generator and the rasterizer.

A scene is a ``canvas`` square cut into a ``grid`` x ``grid`` lattice of places; its objects, each a
(colour, shape) pair unique in the scene with a size (small/large), sit in distinct places with some
jitter, over small grey clutter squares that no question mentions. Pixel coordinates: x right, y down,
pixel j spans [j, j + 1).

The generator draws each scene *for* a question: the kind of question and its answer are picked first
and the scene built to make that answer true, so answers are balanced. What the question asks is kept as
numbers (``Asks``); ``questions.py`` turns them into words. Every number comes from per-item streams
(``counter_rng.py``) at fixed positions, so an item's scene depends only on its own stream.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence

import numpy as np

from .counter_rng import ItemStreams, pick

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.1, 0.1), "green": (0.1, 0.8, 0.1), "blue": (0.2, 0.3, 1.0),
    "yellow": (0.95, 0.9, 0.1), "magenta": (0.9, 0.1, 0.9), "cyan": (0.1, 0.9, 0.9),
}
CLUTTER_RGB = (0.5, 0.5, 0.5)
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = ("small", "large")
SIZE_RADIUS = (0.25, 0.4)  # object radius as a fraction of a place's side
QTYPES = ("exist", "query", "count", "relate")  # the kinds of question a scene can be built for
RELATE_AXES = ("x", "xy")  # relate compares along x only (left/right), or x or y (above/below), half the time each


@dataclass
class Scene:
    """One scene and its question (words filled in by ``questions.phrase``)."""
    colour: np.ndarray   # (n,) index into COLOURS
    shape: np.ndarray    # (n,) index into SHAPES
    size: np.ndarray     # (n,) index into SIZES
    place: np.ndarray    # (n,) grid place, row * grid + col
    center: np.ndarray   # (n, 2) (x, y) in pixels
    radius: np.ndarray   # (n,) in pixels
    clutter: np.ndarray  # (m, 3) (x, y, half side) of grey squares, in pixels
    question: str = ""
    answer: str = ""
    qtype: str = ""


@dataclass
class Asks:
    """What each scene's question asks, as numbers (B,) each; the fields a kind does not use are 0."""
    qtype: np.ndarray    # index into QTYPES
    yes: np.ndarray      # bool: the answer of exist/relate
    subject: np.ndarray  # object slot asked about (exist-yes, query) or compared first (relate)
    other: np.ndarray    # object slot compared second (relate)
    absent: np.ndarray   # (colour, shape) combo index absent from the scene (exist-no), rows of ``combos``
    attr: np.ndarray     # count: 0 colour, 1 shape; query: 0 colour, 1 shape, 2 size
    value: np.ndarray    # count: the colour or shape counted
    counted: np.ndarray  # count: the answer
    axis: np.ndarray     # relate: 0 compares x (left/right), 1 compares y (above/below)
    subject_first: np.ndarray  # relate: bool, the subject's center is left of (axis 0) / above (axis 1) the other's


@dataclass
class Scenes:
    """A batch of scenes with one question each; object arrays are padded to the batch's largest scene and
    ``count`` (B,) says how many of each row are real. ``scenes[i]`` is scene i as a ``Scene``."""
    colour: np.ndarray   # (B, M)
    shape: np.ndarray    # (B, M)
    size: np.ndarray     # (B, M)
    place: np.ndarray    # (B, M)
    center: np.ndarray   # (B, M, 2) (x, y) in pixels
    radius: np.ndarray   # (B, M) in pixels
    count: np.ndarray    # (B,) objects in each scene
    clutter: np.ndarray  # (B, m, 3) (x, y, half side)
    asks: Asks | None = None
    question: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    qtype: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.count)

    def __getitem__(self, i: int) -> Scene:
        n = int(self.count[i])
        words = (self.question[i], self.answer[i], self.qtype[i]) if self.question else ("", "", "")
        return Scene(self.colour[i, :n], self.shape[i, :n], self.size[i, :n], self.place[i, :n],
                     self.center[i, :n], self.radius[i, :n], self.clutter[i], *words)

    @classmethod
    def stack(cls, scenes: Sequence[Scene]) -> Scenes:
        """Scenes built by hand (e.g. in tests) as one batch."""
        b, m, k = len(scenes), max(len(s.colour) for s in scenes), len(scenes[0].clutter)
        if any(len(s.clutter) != k for s in scenes):
            raise ValueError("stacked scenes must have the same number of clutter squares")

        def pad(name: str, tail: tuple[int, ...] = (), rows: int = m, dtype=np.int64) -> np.ndarray:
            out = np.zeros((b, rows, *tail), dtype=dtype)
            for i, s in enumerate(scenes):
                v = np.asarray(getattr(s, name), dtype=dtype).reshape(-1, *tail)
                out[i, : len(v)] = v
            return out

        clutter = pad("clutter", (3,), k, np.float64)
        return cls(pad("colour"), pad("shape"), pad("size"), pad("place"), pad("center", (2,), dtype=np.float64),
                   pad("radius", dtype=np.float64), np.array([len(s.colour) for s in scenes]), clutter, None,
                   [s.question for s in scenes], [s.answer for s in scenes], [s.qtype for s in scenes])


def nth_true(mask: np.ndarray, nth: np.ndarray) -> np.ndarray:
    """Column of the ``nth`` (B,) True of each row of ``mask`` (B, K) (0-based; rows need > nth Trues)."""
    return (np.cumsum(mask, axis=1) > nth[:, None]).argmax(1)


class SceneGenerator:
    """Draws and renders batches of scenes, each built for one question, all numbers from per-item streams.

    Every choice is made for the whole batch at once from ``ItemStreams`` uniforms at fixed stream
    positions (``self.pos``), so an item's scene depends only on its own stream.
    """

    def __init__(self, canvas: int, grid: int, min_objects: int, max_objects: int, clutter: int,
                 max_count: int, qtypes: Sequence[str], noise: float = 0.0, num_colours: int = len(COLOURS),
                 num_shapes: int = len(SHAPES), relate_axes: str = "x") -> None:
        if relate_axes not in RELATE_AXES:
            raise ValueError(f"relate axes {relate_axes!r} is not one of {', '.join(RELATE_AXES)}")
        self.canvas, self.grid, self.clutter, self.noise = canvas, grid, clutter, noise
        self.relate_axes = relate_axes
        self.min_objects, self.max_objects, self.max_count = min_objects, max_objects, max_count
        self.qtypes = tuple(qtypes)
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
        self.axis_pos = 1 << 39   # relate_axes=xy: the axis a relate question compares (apart from the rest, so
        #                           the default x-only scenes stay as they were drawn before the option existed)

    # --- scenes and what their questions ask --------------------------------------------------
    def sample(self, streams: ItemStreams) -> Scenes:
        """One scene per stream, built for a question whose answer is chosen uniformly first (no words yet)."""
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

        # places: n distinct cells of the lattice; a relate question compares along its axis (x: columns, y: rows)
        # and needs two objects apart on it, so redraw until it has them
        place = np.argsort(streams.uniform(self.pos["place"], g * g), axis=1)[:, :m]    # (B, M)
        is_relate = qtype == QTYPES.index("relate")
        axis = (streams.uniform(self.axis_pos, 1)[:, 0] < 0.5).astype(np.int64) if self.relate_axes == "xy" \
            else np.zeros(b, dtype=np.int64)                                            # (B,) 0: x, 1: y
        redraw = 0
        while True:
            line = np.where(axis[:, None] == 1, place // g, place % g)                  # (B, M) column or row
            one_line = ((line == line[:, :1]) | ~valid).all(1) & is_relate
            if not one_line.any():
                break
            redraw += 1
            fresh = np.argsort(streams.uniform(self.pos["place"] + redraw * self.redraw_stride, g * g), axis=1)[:, :m]
            place = np.where(one_line[:, None], fresh, place)

        size = pick(streams.uniform(self.pos["size"], m), len(SIZES))                  # (B, M)
        radius = np.array(SIZE_RADIUS)[size] * self.cell                                # (B, M)
        jitter = streams.uniform(self.pos["offset"], 2 * m).reshape(b, m, 2)
        offset = radius[..., None] + jitter * (self.cell - 2 * radius[..., None])       # (B, M, 2) inside the place
        center = np.stack([place % g, place // g], axis=-1) * self.cell + offset        # (B, M, 2) (x, y)
        half = max(1.0, 0.1 * self.cell)
        xy = half + streams.uniform(self.pos["clutter"], 2 * self.clutter).reshape(b, self.clutter, 2) * (
            self.canvas - 2 * half)
        clutter = np.concatenate([xy, np.full((b, self.clutter, 1), half)], axis=-1)    # (B, m, 3)

        # what the question asks, all rows at once
        yes = head[:, 5] < 0.5
        obj = pick(head[:, 6], n)                                                        # (B,) some real object
        present = np.zeros((b, k), dtype=bool)
        present[np.nonzero(valid)[0], chosen[valid]] = True
        absent = nth_true(~present, pick(head[:, 6], k - n))                            # (B,) an absent pair
        pairs = (line[:, :, None] != line[:, None, :]) & valid[:, :, None] & valid[:, None, :]  # (B, M, M)
        flat = nth_true(pairs.reshape(b, m * m), pick(head[:, 6], np.maximum(pairs.sum((1, 2)), 1)))
        a, c = flat // m, flat % m                                                      # (B,) the compared pair
        rows = np.arange(b)
        is_query = qtype == QTYPES.index("query")
        asks = Asks(
            qtype=qtype, yes=yes, subject=np.where(is_relate, a, obj), other=np.where(is_relate, c, 0),
            absent=absent, attr=np.where(is_query, pick(head[:, 7], 3), attr), value=value, counted=counted,
            axis=np.where(is_relate, axis, 0), subject_first=center[rows, a, axis] < center[rows, c, axis],
        )
        return Scenes(colour, shape, size, place, center, radius, n, clutter, asks)

    # --- rendering ---------------------------------------------------------------------------
    def render(self, scene: Scene) -> np.ndarray:
        """One scene as float32 (3, S, S) in [0, 1] (no noise)."""
        return self.render_batch(Scenes.stack([scene]))[0]

    def render_batch(self, scenes: Scenes, streams: ItemStreams | None = None) -> np.ndarray:
        """Scenes as float32 (B, 3, S, S) in [0, 1]: clutter first, objects over it, then noise if asked
        (``noise`` > 0 and ``streams`` given). Each object is drawn in a small window around its center."""
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
            dx = (x0[:, None] + ar + 0.5 - cx[:, None])[:, None, :]  # (B, 1, w) pixel centers from the center
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

            paint(scenes.center[:, j, 0], scenes.center[:, j, 1], draw, 2 + scenes.colour[:, j])
        label = label.reshape(b, side, side)[:, w:w + s, w:w + s]  # (B, S, S)
        image = np.empty((b, 3, s, s), dtype=np.float32)
        for ch in range(3):
            image[:, ch] = self.palette[:, ch][label]
        if self.noise > 0 and streams is not None:
            image = image + self.noise * streams.normal(self.noise_pos, 3 * s * s).reshape(b, 3, s, s)
            image = np.clip(image, 0.0, 1.0)
        return np.ascontiguousarray(image, dtype=np.float32)
