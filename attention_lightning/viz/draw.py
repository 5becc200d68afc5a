"""Pictures of an ``Attention``: the grid of images with their boxes, maps and views per step, one row per image,
the accuracy after each step, and one frame per step for a GIF."""
from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..attention import Attention
from .panels import (BLACK, CAPTION_WIDTH, FONT, GAP, MARGIN, RGB, SMALL, TITLE, WHITE, accuracy_plot, draw_boxes,
                     font_at, image_panel, image_rgb, panel_reach, class_name, panel_size, pick, step_colors, step_title,
                     subset, fit_text, to_uint8, view_panel, views_rgb)


# --- pictures --------------------------------------------------------------------------------
def _columns(att: Attention) -> list[tuple]:
    """The panels of one image's row: ('overview',), ('map', t), ('view', t)."""
    cols: list[tuple] = [("overview",)]
    if att.steps == 1:
        if att.maps is not None:
            cols.append(("map", 0))
        if att.views is not None:
            cols.append(("view", 0))
    elif att.maps is not None:
        cols += [("map", t) for t in range(att.maps.shape[1])]
    elif att.views is not None:
        cols += [("view", t) for t in range(att.views.shape[1])]
    return cols


def panel_titles(att: Attention, class_names: Sequence[str] | None = None) -> list[list[tuple[str, RGB]]]:
    """The (text, colour) above each panel of ``attention_grid``, one list per image (green right, red wrong,
    black without labels): 'pred 3 (97%) / 5' over the image, 't: map -> pred' or 't: view -> pred' per step."""
    steps = att.steps
    out = []
    for i in range(att.images.shape[0]):
        row = []
        for col in _columns(att):
            if col[0] == "overview":
                text, color = step_title(att, i, steps - 1, class_names)
                true = f" / {class_name(int(att.labels[i]), class_names)}" if att.labels is not None else ""
                row.append((f"pred {text}{true}", color))
                continue
            kind, t = col
            many = (att.maps if kind == "map" else att.views).shape[1] > 1
            name = att.map_title if kind == "map" else "view"
            if not many:
                row.append((name, BLACK))
            else:
                text, color = step_title(att, i, min(t, steps - 1), class_names)
                row.append((f"{t + 1}: {name} -> {text}", color))
        out.append(row)
    return out


def _cell(att: Attention, images: np.ndarray, views: np.ndarray | None, i: int, col: tuple, size: int,
          lim: float) -> Image.Image:
    """Panel ``col`` of image ``i`` (see ``_columns``), (size, size) over [-lim, lim]; ``images`` (N, H, W, 3) uint8."""
    if col[0] == "view":
        return view_panel(views[i, col[1]], step_colors(views.shape[1])[col[1]], size)
    t = col[1] if col[0] == "map" else None
    panel = Image.fromarray(image_panel(images[i], lim, None if t is None else att.maps[i, t], att.map_extent, size))
    if att.boxes is not None and t is None:
        draw_boxes(panel, att.boxes[i], att.boxes.shape[1], lim)
    elif att.boxes is not None:
        draw_boxes(panel, att.boxes[i], t + 1, lim, current=t if att.boxes.shape[1] > 1 else None)
    return panel


def attention_grid(
    att: Attention, max_images: int = 8, class_names: Sequence[str] | None = None, accuracy: bool = True,
) -> Image.Image:
    """One row per image: the image with every box (numbered by step and joined by the path when T > 1), then the
    map (per step when T > 1) with that step's boxes, or the view per step, each panel titled with the prediction
    (``panel_titles``) and the image's caption under it; for T > 1 with labels, a last row plots the accuracy per
    step over the drawn images."""
    att = subset(att.detach_cpu(), max_images)
    n = att.images.shape[0]
    cols = _columns(att)
    acc = att.step_accuracy() if accuracy and att.steps > 1 else None
    lines = [textwrap.wrap(att.captions[i], CAPTION_WIDTH) if i < len(att.captions) and att.captions[i] else []
             for i in range(n)]
    caption_h = (SMALL + 2) * max((len(x) for x in lines), default=0)
    size = panel_size(att)
    cell_w, cell_h = size + GAP, TITLE + size + caption_h + GAP
    width = 2 * MARGIN + cell_w * max(len(cols), 2) - GAP
    acc_h = round(0.9 * size) + TITLE if acc is not None else 0
    pic = Image.new("RGB", (width, 2 * MARGIN + cell_h * n + acc_h), WHITE)
    draw = ImageDraw.Draw(pic)
    images = to_uint8(image_rgb(att.images))  # (N, H, W, 3)
    views = views_rgb(att.views, att.images) if att.views is not None else None
    for i, titles in enumerate(panel_titles(att, class_names)):
        y, lim = MARGIN + i * cell_h, panel_reach(att, i)
        for j, (col, (text, color)) in enumerate(zip(cols, titles)):
            x = MARGIN + j * cell_w
            fit_text(draw, (x + size / 2, y + TITLE - 2), text, color, cell_w)
            pic.paste(_cell(att, images, views, i, col, size, lim), (x, y + TITLE))
        for k, line in enumerate(lines[i]):
            draw.text((MARGIN + size / 2, y + TITLE + size + 1 + k * (SMALL + 2)), line, fill=BLACK,
                      font=font_at(SMALL), anchor="ma")
    if acc is not None:
        pic.paste(accuracy_plot(acc, n, width - 2 * MARGIN, acc_h), (MARGIN, MARGIN + cell_h * n))
    return pic


def step_accuracy_figure(att: Attention) -> Image.Image:
    """Accuracy after each step (needs labels), as a line plot."""
    acc = att.detach_cpu().step_accuracy()
    if acc is None:
        raise ValueError("accuracy per step needs labels: this Attention has labels=None")
    return accuracy_plot(acc, att.images.shape[0], 400, 240)


def attention_rows(
    att: Attention, max_images: int = 8, class_names: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """One RGB picture (H, W, 3) uint8 per image: its row of ``attention_grid``."""
    att = subset(att.detach_cpu(), max_images)
    return [np.asarray(attention_grid(pick(att, i), class_names=class_names, accuracy=False))
            for i in range(att.images.shape[0])]


def step_frames(
    att: Attention, max_images: int = 8, class_names: Sequence[str] | None = None, columns: int = 4,
) -> list[np.ndarray]:
    """One RGB frame (H, W, 3) uint8 per step: every image with that step's map, the boxes so far
    (the current step bold) and the prediction after the step. T = 1 gives one frame."""
    att = subset(att.detach_cpu(), max_images)
    n, steps = att.images.shape[0], att.steps
    cols = min(columns, n)
    rows = -(-n // cols)
    images = to_uint8(image_rgb(att.images))  # (N, H, W, 3)
    size = panel_size(att)
    cell_w, cell_h = size + GAP, TITLE + size + GAP
    top = MARGIN + TITLE + 4  # the frame's title band
    frames = []
    for t in range(steps):
        pic = Image.new("RGB", (2 * MARGIN + cell_w * cols - GAP, top + cell_h * rows - GAP + MARGIN), WHITE)
        draw = ImageDraw.Draw(pic)
        fit_text(draw, (pic.width / 2, MARGIN + TITLE), f"step {t + 1} of {steps}", BLACK, pic.width, px=FONT + 2)
        for i in range(n):
            x, y = MARGIN + (i % cols) * cell_w, top + (i // cols) * cell_h
            lim = panel_reach(att, i)
            m = att.maps[i, min(t, att.maps.shape[1] - 1)] if att.maps is not None else None
            panel = Image.fromarray(image_panel(images[i], lim, m, att.map_extent, size))
            if att.boxes is not None:
                draw_boxes(panel, att.boxes[i], t + 1, lim, current=t if att.boxes.shape[1] > 1 else None)
            text, color = step_title(att, i, t, class_names)
            fit_text(draw, (x + size / 2, y + TITLE - 2), text, color, cell_w)
            pic.paste(panel, (x, y + TITLE))
        frames.append(np.asarray(pic))
    return frames
