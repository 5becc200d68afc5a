"""Pictures of what a model looked at, drawn from an ``Attention`` and nothing else.

Every model returns the same ``Attention`` (``attention_lightning.attention``), so one set of drawings
serves all of them: boxes (DHAM's crop, RAM's glimpse scales numbered by step, PHAM's chosen cells),
maps over the image (DHAM's pmf, PHAM's EIG per step, HAN's selected cells as a mask), views (a crop,
a glimpse), the prediction with its confidence, and for sequential models (T > 1) the accuracy per step.

Images are drawn with ``extent=(-1, 1, 1, -1)``, so the axes are the [-1, 1] image coordinates of
``attention_lightning.nn.coords`` ((x, y) order, center 0) and boxes plot as they are. Figures are
``matplotlib.figure.Figure`` objects rendered by the Agg canvas: no pyplot state, safe in a training
process without a display, and they still show inline in a notebook.
"""
from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from .attention import Attention

PANEL = 1.9                 # inches per panel
EXTENT = (-1.0, 1.0, 1.0, -1.0)  # left, right, bottom, top: y grows downwards, as in the image
MAP_ALPHA = 0.6             # opacity of a map where it is at its maximum
ONE_STEP_COLOR = "lime"
RIGHT, WRONG = "#1a7f37", "#cf222e"
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


# --- tensors -> arrays -----------------------------------------------------------------------
def image_rgb(images: Tensor) -> np.ndarray:
    """(B, C, H, W) images of any range -> (B, H, W, 3) floats in [0, 1], min-max scaled per image."""
    x = images.detach().float().cpu()
    lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    x = (x - lo) / (hi - lo).clamp_min(1e-8)  # (B, C, H, W)
    x = _channels_to_rgb(x)  # (B, 3, H, W)
    return x.permute(0, 2, 3, 1).clamp(0, 1).numpy()


def views_rgb(views: Tensor, images: Tensor) -> np.ndarray:
    """(B, T, C', h, w) views -> (B, T, h, W', 3) in [0, 1], scaled like their images.

    When C' is a multiple k of the image channels C (e.g. a glimpse's k scales stacked as channels),
    the k groups are laid side by side, so W' = k*w + (k - 1); otherwise each channel is shown grey.
    """
    v = views.detach().float().cpu()
    x = images.detach().float().cpu()
    b, t, cv, h, w = v.shape
    lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1, 1)
    hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1, 1)
    v = ((v - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)  # (B, T, C', h, w)
    c = x.shape[1]
    group = c if cv % c == 0 else 1
    k = cv // group
    v = v.reshape(b * t * k, group, h, w)
    v = _channels_to_rgb(v).reshape(b, t, k, 3, h, w)  # (B, T, k, 3, h, w)
    sep = torch.ones(b, t, k, 3, h, 1)  # a white column between groups
    v = torch.cat([v, sep], dim=-1).permute(0, 1, 4, 2, 5, 3)  # (B, T, h, k, w + 1, 3)
    return v.reshape(b, t, h, k * (w + 1), 3)[:, :, :, :-1].numpy()  # (B, T, h, k*(w+1)-1, 3)


def _channels_to_rgb(x: Tensor) -> Tensor:
    """(N, C, H, W) in [0, 1] -> (N, 3, H, W): grey repeated, RGB kept, other channel counts averaged."""
    if x.shape[1] == 3:
        return x
    grey = x if x.shape[1] == 1 else x.mean(1, keepdim=True)
    return grey.expand(-1, 3, -1, -1)


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Render a figure with the Agg canvas -> (H, W, 3) uint8."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def subset(att: Attention, n: int) -> Attention:
    """The first ``n`` images of ``att`` (every per-image field sliced)."""
    def cut(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[:n]

    return replace(att, images=att.images[:n], probs=att.probs[:n], boxes=cut(att.boxes), maps=cut(att.maps),
                   views=cut(att.views), labels=cut(att.labels), captions=list(att.captions[:n]))


def _pick(att: Attention, i: int) -> Attention:
    """Image ``i`` of ``att`` as a one-image Attention."""
    def cut(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[i:i + 1]

    return replace(att, images=att.images[i:i + 1], probs=att.probs[i:i + 1], boxes=cut(att.boxes),
                   maps=cut(att.maps), views=cut(att.views), labels=cut(att.labels),
                   captions=list(att.captions[i:i + 1]))


# --- text ------------------------------------------------------------------------------------
def _name(k: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[k]) if class_names is not None and 0 <= k < len(class_names) else str(k)


def captions(att: Attention, class_names: Sequence[str] | None = None) -> list[str]:
    """One line per image: prediction, its confidence, the label, and the image's caption if any."""
    pred, conf = att.prediction()
    out = []
    for i in range(att.images.shape[0]):
        text = f"pred {_name(int(pred[i]), class_names)} ({float(conf[i]):.0%})"
        if att.labels is not None:
            text += f", true {_name(int(att.labels[i]), class_names)}"
        if i < len(att.captions) and att.captions[i]:
            text += f" | {att.captions[i]}"
        out.append(text)
    return out


def _step_title(att: Attention, i: int, t: int, class_names: Sequence[str] | None) -> tuple[str, str]:
    """'pred 3 (97%)' after step t of image i, and its colour (green right, red wrong, black unknown)."""
    conf, pred = att.probs[i, t].max(-1)
    text = f"{_name(int(pred), class_names)} ({float(conf):.0%})"
    if att.labels is None:
        return text, "black"
    return text, RIGHT if int(pred) == int(att.labels[i]) else WRONG


# --- panels ----------------------------------------------------------------------------------
def _step_colors(steps: int) -> list:
    if steps == 1:
        return [ONE_STEP_COLOR]
    cmap = colormaps["cool"]
    return [cmap(t / (steps - 1)) for t in range(steps)]


def _limits(att: Attention, i: int) -> float:
    """Half width of the axes: the image, widened (up to 1.6) to show boxes that leave it."""
    if att.boxes is None:
        return 1.0
    reach = float(att.boxes[i].abs().max())
    return min(max(1.0, reach * 1.03), 1.6)


def _frame(ax, lim: float) -> None:
    ax.set_xlim(-lim, lim)
    ax.set_ylim(lim, -lim)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("0.85")  # grey where a box leaves the image


def _draw_map(ax, m: Tensor, extent: tuple[float, float, float, float] | None = None) -> None:
    """Overlay a non-negative (h, w) map over ``extent`` (x0, y0, x1, y1), default the whole image; transparent
    where it is 0."""
    m = m.detach().float().cpu().clamp_min(0)
    m = (m / m.max().clamp_min(1e-12)).numpy()
    rgba = colormaps["inferno"](m)  # (h, w, 4)
    rgba[..., 3] = MAP_ALPHA * m
    x0, y0, x1, y1 = extent if extent is not None else (-1.0, -1.0, 1.0, 1.0)
    ax.imshow(rgba, extent=(x0, x1, y1, y0), interpolation="nearest")


def _draw_boxes(ax, boxes: Tensor, upto: int, current: int | None = None) -> None:
    """Boxes (T, S, 4) of steps 0..upto-1; with T > 1 numbered by step and joined by the path of their centers.

    ``current`` draws that step bold and the earlier ones thin.
    """
    steps = boxes.shape[0]
    colors = _step_colors(steps)
    upto = min(upto, steps)
    b = boxes.detach().float().cpu()
    centers = (b[..., :2] + b[..., 2:]).mean(1) / 2  # (T, 2) mean center over the S boxes of a step
    if steps > 1 and upto > 1:
        ax.plot(centers[:upto, 0], centers[:upto, 1], "-", color="white", lw=0.8, alpha=0.8)
    for t in range(upto):
        bold = current is None or t == current
        for x0, y0, x1, y1 in b[t].tolist():
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colors[t],
                                   lw=1.6 if bold else 0.7, alpha=1.0 if bold else 0.6))
        if steps > 1:
            ax.plot(centers[t, 0], centers[t, 1], "o", ms=2.5, color=colors[t])
            area = (b[t, :, 2] - b[t, :, 0]) * (b[t, :, 3] - b[t, :, 1])  # (S,)
            x0, y0 = b[t, int(area.argmin()), :2].tolist()  # number the smallest box
            ax.text(x0, y0, str(t + 1), color="black", fontsize=6, ha="left", va="bottom",
                    bbox=dict(boxstyle="square,pad=0.1", fc=colors[t], ec="none", alpha=0.9))


def _image_panel(ax, rgb: np.ndarray, lim: float) -> None:
    ax.imshow(rgb, extent=EXTENT, interpolation="nearest")
    _frame(ax, lim)


# --- figures ---------------------------------------------------------------------------------
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


def attention_grid(
    att: Attention, max_images: int = 8, class_names: Sequence[str] | None = None, accuracy: bool = True,
) -> Figure:
    """One row per image: the image with every box (numbered by step and joined by the path when T > 1),
    then the map (per step when T > 1) with that step's boxes, or the view per step; for T > 1 with
    labels, a last row plots the accuracy per step over the drawn images."""
    att = subset(att.detach_cpu(), max_images)
    n, steps = att.images.shape[0], att.steps
    cols = _columns(att)
    acc = att.step_accuracy() if accuracy and steps > 1 else None
    rows = n + (1 if acc is not None else 0)
    heights = [1.0] * n + ([0.9] if acc is not None else [])
    fig = Figure(figsize=(PANEL * max(len(cols), 2), PANEL * 1.12 * sum(heights) + 0.1), layout="constrained")
    gs = fig.add_gridspec(rows, len(cols), height_ratios=heights)
    rgb = image_rgb(att.images)  # (N, H, W, 3)
    views = views_rgb(att.views, att.images) if att.views is not None else None
    for i in range(n):
        lim = _limits(att, i)
        for j, col in enumerate(cols):
            ax = fig.add_subplot(gs[i, j])
            if col[0] == "overview":
                _image_panel(ax, rgb[i], lim)
                if att.boxes is not None:
                    _draw_boxes(ax, att.boxes[i], att.boxes.shape[1])
                text, color = _step_title(att, i, steps - 1, class_names)
                true = f" / {_name(int(att.labels[i]), class_names)}" if att.labels is not None else ""
                ax.set_title(f"pred {text}{true}", fontsize=7, color=color)
                if i < len(att.captions) and att.captions[i]:
                    ax.set_xlabel(textwrap.fill(att.captions[i], 34), fontsize=6)
            elif col[0] == "map":
                t = col[1]
                _image_panel(ax, rgb[i], lim)
                _draw_map(ax, att.maps[i, t], att.map_extent)
                if att.boxes is not None:
                    _draw_boxes(ax, att.boxes[i], t + 1, current=t if att.boxes.shape[1] > 1 else None)
                if att.maps.shape[1] == 1:
                    ax.set_title(att.map_title, fontsize=7)
                else:
                    text, color = _step_title(att, i, min(t, steps - 1), class_names)
                    ax.set_title(f"{t + 1}: {att.map_title} -> {text}", fontsize=6, color=color)
            else:  # view
                t = col[1]
                ax.imshow(views[i, t], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                for side in ax.spines.values():
                    side.set_edgecolor(_step_colors(views.shape[1])[t])
                    side.set_linewidth(1.5)
                if views.shape[1] == 1:
                    ax.set_title("view", fontsize=7)
                else:
                    text, color = _step_title(att, i, min(t, steps - 1), class_names)
                    ax.set_title(f"{t + 1}: view -> {text}", fontsize=6, color=color)
    if acc is not None:
        _accuracy_axes(fig.add_subplot(gs[n, :]), acc, n)
    return fig


def _accuracy_axes(ax, acc: Tensor, n: int) -> None:
    steps = torch.arange(1, acc.numel() + 1)
    ax.plot(steps.numpy(), acc.numpy(), "o-", color="tab:blue")
    ax.set_xticks(steps.numpy())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step", fontsize=7)
    ax.set_ylabel("accuracy", fontsize=7)
    ax.set_title(f"accuracy after each step ({n} images)", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.grid(alpha=0.3)


def step_accuracy_figure(att: Attention) -> Figure:
    """Accuracy after each step (needs labels), as a line plot."""
    acc = att.detach_cpu().step_accuracy()
    if acc is None:
        raise ValueError("accuracy per step needs labels: this Attention has labels=None")
    fig = Figure(figsize=(4, 2.4), layout="constrained")
    _accuracy_axes(fig.add_subplot(), acc, att.images.shape[0])
    return fig


def attention_rows(
    att: Attention, max_images: int = 8, class_names: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """One RGB picture (H, W, 3) uint8 per image: its row of ``attention_grid``."""
    att = subset(att.detach_cpu(), max_images)
    return [figure_to_rgb(attention_grid(_pick(att, i), class_names=class_names, accuracy=False))
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
    rgb = image_rgb(att.images)
    frames = []
    for t in range(steps):
        fig = Figure(figsize=(PANEL * cols, PANEL * 1.1 * rows + 0.3), layout="constrained")
        for i in range(n):
            ax = fig.add_subplot(rows, cols, i + 1)
            _image_panel(ax, rgb[i], _limits(att, i))
            if att.maps is not None:
                _draw_map(ax, att.maps[i, min(t, att.maps.shape[1] - 1)], att.map_extent)
            if att.boxes is not None:
                _draw_boxes(ax, att.boxes[i], t + 1, current=t if att.boxes.shape[1] > 1 else None)
            text, color = _step_title(att, i, t, class_names)
            ax.set_title(text, fontsize=7, color=color)
        fig.suptitle(f"step {t + 1} of {steps}", fontsize=9)
        frames.append(figure_to_rgb(fig))
    # frames of one GIF must share a size; constrained layout can differ by a pixel between steps
    h = max(f.shape[0] for f in frames)
    w = max(f.shape[1] for f in frames)
    return [np.pad(f, ((0, h - f.shape[0]), (0, w - f.shape[1]), (0, 0)), constant_values=255) for f in frames]


def save_gif(frames: Sequence[np.ndarray], path: str | Path | BinaryIO, ms_per_frame: int = 800) -> None:
    """Write RGB frames as a looping GIF to a path or a binary file object."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    target = path if hasattr(path, "write") else str(path)
    images[0].save(target, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)


def check_output(path: str | Path) -> str:
    """The suffix of an output file ``visualize`` can write, or a ValueError naming the ones it can."""
    suffix = Path(str(path)).suffix.lower()
    if suffix != ".gif" and suffix not in FIGURE_SUFFIXES:
        raise ValueError(f"--out={path}: cannot write {suffix or 'a file without a suffix'}; "
                         f"use .gif (one frame per step) or one of {', '.join(FIGURE_SUFFIXES)}")
    return suffix


def save_attention(
    att: Attention, path: str | Path, max_images: int = 8, class_names: Sequence[str] | None = None,
) -> Path:
    """Write ``att`` to ``path``: a ``.gif`` gets one frame per step, an image or PDF the whole grid."""
    path = Path(str(path))
    suffix = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        save_gif(step_frames(att, max_images, class_names), path)
    else:
        attention_grid(att, max_images, class_names).savefig(str(path), dpi=110)
    return path


# --- overlays for dashboards that draw boxes and masks themselves (wandb) -------------------------
MAP_LEVELS = {0: "zero or outside the map", 1: "< 25% of its max", 2: "25-50%", 3: "50-75%", 4: ">= 75% of its max"}


def upscaled_uint8(att: Attention, min_side: int = 128) -> np.ndarray:
    """The images as (B, H*s, W*s, 3) uint8, scaled like ``image_rgb`` and enlarged by the whole factor s that
    makes the longer side at least ``min_side`` (nearest neighbour: every pixel stays a sharp square)."""
    rgb = image_rgb(att.images)  # (B, H, W, 3)
    s = max(1, -(-min_side // max(rgb.shape[1:3])))
    rgb = np.repeat(np.repeat(rgb, s, axis=1), s, axis=2)  # (B, H*s, W*s, 3)
    return np.round(rgb * 255).astype(np.uint8)


def box_overlay(att: Attention, i: int, class_names: Sequence[str] | None = None) -> dict:
    """Every box of image ``i`` in wandb's ``boxes`` format: fractions of the image (clipped to it), one class per
    step (so each step can be toggled), captioned with the step's prediction and scored with its probabilities."""
    steps = att.boxes.shape[1]
    b = ((att.boxes[i].float().cpu() + 1) / 2).clamp(0, 1)  # (T, S, 4) fractions of the image
    conf, pred = att.probs[i].max(-1)  # (T,), (T,)
    entries = []
    for t in range(steps):
        p = min(t, att.steps - 1)
        scores = {"step": t + 1, "p_prediction": float(conf[p])}
        if att.labels is not None:
            scores["p_label"] = float(att.probs[i, p, int(att.labels[i])])
        caption = f"{t + 1}: {_name(int(pred[p]), class_names)} ({float(conf[p]):.0%})"
        for x0, y0, x1, y1 in b[t].tolist():
            entries.append({"position": {"minX": x0, "minY": y0, "maxX": x1, "maxY": y1}, "class_id": t + 1,
                            "box_caption": caption, "scores": dict(scores)})
    return {"box_data": entries, "class_labels": {t + 1: f"step {t + 1}" for t in range(steps)}}


def map_levels(att: Attention, i: int, t: int, height: int, width: int) -> np.ndarray:
    """Map ``t`` of image ``i`` on a (height, width) pixel grid of the image, as integer levels 0-4 of
    ``MAP_LEVELS`` (0: zero or outside ``map_extent``; 1-4: quarters of the map's maximum)."""
    m = att.maps[i, t].detach().float().cpu().clamp_min(0).numpy()  # (h, w)
    m = m / max(float(m.max()), 1e-12)
    x0, y0, x1, y1 = att.map_extent if att.map_extent is not None else (-1.0, -1.0, 1.0, 1.0)
    xs = (np.arange(width) + 0.5) / width * 2 - 1  # pixel centers in [-1, 1]
    ys = (np.arange(height) + 0.5) / height * 2 - 1
    cols = np.floor((xs - x0) / (x1 - x0) * m.shape[1]).astype(np.int64)  # (width,)
    rows = np.floor((ys - y0) / (y1 - y0) * m.shape[0]).astype(np.int64)  # (height,)
    inside = ((rows >= 0) & (rows < m.shape[0]))[:, None] & ((cols >= 0) & (cols < m.shape[1]))[None, :]
    values = m[rows.clip(0, m.shape[0] - 1)][:, cols.clip(0, m.shape[1] - 1)]  # (height, width)
    levels = np.where(values > 0, 1 + np.minimum((values * 4).astype(np.int64), 3), 0)
    return np.where(inside, levels, 0).astype(np.uint8)
