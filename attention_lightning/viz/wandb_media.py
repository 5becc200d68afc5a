"""Media for dashboards that draw boxes and masks themselves (wandb): enlarged images, box overlays, map levels as
masks, ``wandb.Image`` examples and a ``wandb.Table`` of predictions."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..attention import Attention
from .panels import captions, image_rgb, class_name


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
        caption = f"{t + 1}: {class_name(int(pred[p]), class_names)} ({float(conf[p]):.0%})"
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


# --- wandb ---------------------------------------------------------------------------------------
def wandb_examples(att: Attention, class_names: Sequence[str] | None = None) -> list[Any]:
    """Each image of ``att`` as a ``wandb.Image`` (enlarged, see ``upscaled_uint8``) with its boxes as
    overlays (one class per step) and each map as a mask per step, captioned like ``captions``."""
    import wandb

    rgb = upscaled_uint8(att)  # (B, H', W', 3)
    text = captions(att, class_names)
    out = []
    for i in range(rgb.shape[0]):
        boxes = {"glimpses": box_overlay(att, i, class_names)} if att.boxes is not None else None
        masks = None
        if att.maps is not None:
            t_maps = att.maps.shape[1]
            masks = {(att.map_title if t_maps == 1 else f"{att.map_title} step {t + 1}"):
                     {"mask_data": map_levels(att, i, t, rgb.shape[1], rgb.shape[2]),
                      "class_labels": dict(MAP_LEVELS)} for t in range(t_maps)}
        out.append(wandb.Image(rgb[i], caption=text[i], boxes=boxes, masks=masks))
    return out


def wandb_table(att: Attention, class_names: Sequence[str] | None = None) -> Any:
    """One row per image: the picture with overlays, label, prediction, confidence, correctness, the caption and,
    for T > 1 steps, the prediction and its probability after each step (columns ``pred@t``, ``conf@t``)."""
    import wandb

    pred, conf = att.prediction()
    step_conf, step_pred = att.probs.max(-1)  # (B, T), (B, T)
    steps = att.steps
    columns = ["image", "label", "prediction", "confidence", "correct", "caption"]
    if steps > 1:
        columns += ["per_step"] + [c for t in range(steps) for c in (f"pred@{t + 1}", f"conf@{t + 1}")]
    images = wandb_examples(att, class_names)
    rows = []
    for i in range(att.images.shape[0]):
        label = class_name(int(att.labels[i]), class_names) if att.labels is not None else None
        correct = bool(pred[i] == att.labels[i]) if att.labels is not None else None
        caption = att.captions[i] if i < len(att.captions) else ""
        row = [images[i], label, class_name(int(pred[i]), class_names), float(conf[i]), correct, caption]
        if steps > 1:
            row.append(" > ".join(f"{class_name(int(step_pred[i, t]), class_names)} ({float(step_conf[i, t]):.0%})"
                                  for t in range(steps)))
            for t in range(steps):
                row += [class_name(int(step_pred[i, t]), class_names), float(step_conf[i, t])]
        rows.append(row)
    return wandb.Table(columns=columns, data=rows)
