"""A reader of questions against a scene, written apart from the generator: the tests check the two agree."""
from __future__ import annotations

import re

import numpy as np

from datamodules.questions import PLURALS, place_names
from datamodules.scenes import COLOURS, SHAPES, SIZES, Scene


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
        xa, xb = scene.center[a[0], 0], scene.center[b[0], 0]
        return "yes" if (xa < xb if m.group(3) == "left" else xa > xb) else "no"
    if m := re.fullmatch(r"is the (\w+) (\w+) (above|below) the (\w+) (\w+) \?", question):
        a, b = find(*m.group(1, 2)), find(*m.group(4, 5))
        if len(a) != 1 or len(b) != 1:
            raise ValueError(f"{question!r}: the objects compared are not unique in the scene")
        ya, yb = scene.center[a[0], 1], scene.center[b[0], 1]  # image rows grow downwards
        return "yes" if (ya < yb if m.group(3) == "above" else ya > yb) else "no"
    raise ValueError(f"unknown question form {question!r}")
