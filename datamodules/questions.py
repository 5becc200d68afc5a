"""The question language of the VQA scenes: its words, the tokenizer, and the phrasing of what a scene's
question asks (``scenes.Asks``) as text with its answer.

- ``exist``:  "is there a red circle ?"                               -> yes | no
- ``query``:  "what colour|shape|size is the object at the top left ?" -> a colour | shape | size
- ``count``:  "how many red objects are there ?", "how many circles are there ?" -> 0 .. max_count
- ``relate``: "is the red circle left of the blue square ?"           -> yes | no (by center x); with
  ``relate_axes="xy"`` half of them compare y instead: "is the red circle above the blue square ?" (by
  center y, image rows growing down). With ``sides="left"`` every relate question says "left of" (or "above")
  (the pair is written in the order that keeps the drawn answer), so the answer is not the XOR of the word and
  the objects' order.

Places are named only on lattices of 2..4 rows (``ROW_NAMES``), so ``query`` needs such a grid.
"""
from __future__ import annotations

from dataclasses import replace
from collections.abc import Sequence

import numpy as np

from .scenes import COLOURS, QTYPES, RELATE_AXES, SHAPES, SIZES, Scenes

PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
ROW_NAMES = {2: ("top", "bottom"), 3: ("top", "middle", "bottom"), 4: ("top", "upper", "lower", "bottom")}
COL_NAMES = {2: ("left", "right"), 3: ("left", "center", "right"), 4: ("left", "inner-left", "inner-right", "right")}
PAD, UNK = "<pad>", "<unk>"


def place_names(grid: int) -> list[str]:
    """Names of the grid's places in row-major order, e.g. 'top left' ... 'bottom right' for 3x3 (none past 4x4)."""
    if grid not in ROW_NAMES:
        return []
    return [f"{r} {c}" for r in ROW_NAMES[grid] for c in COL_NAMES[grid]]


def question_words(grid: int, relate_axes: str = "x") -> list[str]:
    """Every word a question can use (sorted); "above" and "below" only when relate questions compare y too."""
    if relate_axes not in RELATE_AXES:
        raise ValueError(f"relate axes {relate_axes!r} is not one of {', '.join(RELATE_AXES)}")
    words = {"is", "there", "a", "what", "the", "object", "at", "how", "many", "objects", "are", "of", "?",
             "left", "right", "colour", "shape", "size"}
    if "y" in relate_axes:
        words |= {"above", "below"}
    words |= set(COLOURS) | set(SHAPES) | set(PLURALS.values())
    for name in place_names(grid):
        words |= set(name.split())
    return sorted(words)


def answer_words(max_count: int) -> list[str]:
    """The fixed answer vocabulary: yes/no, colours, shapes, sizes, counts 0..max_count."""
    return ["no", "yes", *COLOURS, *SHAPES, *SIZES, *(str(c) for c in range(max_count + 1))]


class Tokenizer:
    """Whitespace tokenizer over a fixed vocabulary; id 0 is padding, 1 an unknown word."""

    def __init__(self, words: Sequence[str]) -> None:
        self.itos = [PAD, UNK, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, 1) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.itos[int(i)] for i in ids if int(i) != 0)


RELATE_SIDES = ("both", "left")
RELATE_WORDS = (("left", "right"), ("above", "below"))  # per axis (x, y): (first, second) along it


def relate_text(colour_a: str, shape_a: str, word: str, colour_b: str, shape_b: str) -> str:
    """A relate question: "is the <colour_a> <shape_a> left of|right of|above|below the <colour_b> <shape_b> ?"."""
    word = f"{word} of" if word in RELATE_WORDS[0] else word
    return f"is the {colour_a} {shape_a} {word} the {colour_b} {shape_b} ?"


def phrase(scenes: Scenes, combos: np.ndarray, grid: int, sides: str = "both") -> Scenes:
    """The scenes with each question's text, answer and kind written from ``scenes.asks``.

    ``combos`` (K, 2) are the generator's (colour, shape) pairs that ``asks.absent`` indexes. ``sides``: the
    relation words of relate questions: both ("left of" or "right of", "above" or "below" on the y axis,
    whichever the drawn answer and the pair's order give) or left (always the first word, "left of" or "above":
    where the text would say "B right of A" it asks "A left of B", the same fact, so every answer stays as drawn).
    """
    if sides not in RELATE_SIDES:
        raise ValueError(f"relate sides {sides!r} is not one of {', '.join(RELATE_SIDES)}")
    asks, colours, places = scenes.asks, list(COLOURS), place_names(grid)
    if asks is None:
        raise ValueError("phrase needs scenes drawn by SceneGenerator.sample (their asks are missing)")
    question, answer = [], []
    for i in range(len(scenes)):  # string formatting only
        kind, j = QTYPES[asks.qtype[i]], asks.subject[i]
        if kind == "exist":
            cc, ss = (scenes.colour[i, j], scenes.shape[i, j]) if asks.yes[i] else combos[asks.absent[i]]
            q, ans = f"is there a {colours[cc]} {SHAPES[ss]} ?", "yes" if asks.yes[i] else "no"
        elif kind == "query":
            a = asks.attr[i]
            ans = (colours[scenes.colour[i, j]], SHAPES[scenes.shape[i, j]], SIZES[scenes.size[i, j]])[a]
            q = f"what {('colour', 'shape', 'size')[a]} is the object at the {places[scenes.place[i, j]]} ?"
        elif kind == "count":
            v = asks.value[i]
            q = (f"how many {colours[v]} objects are there ?" if asks.attr[i] == 0
                 else f"how many {PLURALS[SHAPES[v]]} are there ?")
            ans = str(asks.counted[i])
        else:
            c = asks.other[i]
            first, second = RELATE_WORDS[asks.axis[i]]
            word = first if asks.subject_first[i] == asks.yes[i] else second
            if word == second and sides == "left":  # "j right of c" is "c left of j" ("j below c": "c above j")
                j, c, word = c, j, first
            q = relate_text(colours[scenes.colour[i, j]], SHAPES[scenes.shape[i, j]], word,
                            colours[scenes.colour[i, c]], SHAPES[scenes.shape[i, c]])
            ans = "yes" if asks.yes[i] else "no"
        question.append(q)
        answer.append(ans)
    return replace(scenes, question=question, answer=answer, qtype=[QTYPES[q] for q in asks.qtype])
