"""Drawing primitives: tensors to RGB arrays, captions and titles, fonts and colours, the coordinates of an image
panel, and panels with maps, boxes, views, text and the accuracy curve drawn into pixels (see the package docstring)."""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..attention import Attention

RGB = tuple[int, int, int]
PANEL = 160                 # pixels per side of an image panel at most (and of one drawn alone)
MIN_PANEL = 112             # pixels per side of an image panel at least
TITLE = 14                  # pixels of the title band above a panel
GAP = 6                     # pixels between panels
MARGIN = 4                  # pixels around a picture
FONT = 10                   # pixel size of titles
SMALL = 9                   # pixel size of step numbers and captions
CAPTION_WIDTH = 30          # characters per caption line
MAP_ALPHA = 0.6             # opacity of a map where it is at its maximum
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
OUTSIDE = (217, 217, 217)   # grey where the axes reach past the image (boxes that leave it)
ONE_STEP_COLOR = (0, 255, 0)
RIGHT, WRONG = (26, 127, 55), (207, 34, 46)
LINE = (31, 119, 180)       # the accuracy curve
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


def subset(att: Attention, n: int) -> Attention:
    """The first ``n`` images of ``att`` (every per-image field sliced)."""
    def cut(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[:n]

    return replace(att, images=att.images[:n], probs=att.probs[:n], boxes=cut(att.boxes), maps=cut(att.maps),
                   views=cut(att.views), labels=cut(att.labels), captions=list(att.captions[:n]))


def pick(att: Attention, i: int) -> Attention:
    """Image ``i`` of ``att`` as a one-image Attention."""
    def cut(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[i:i + 1]

    return replace(att, images=att.images[i:i + 1], probs=att.probs[i:i + 1], boxes=cut(att.boxes),
                   maps=cut(att.maps), views=cut(att.views), labels=cut(att.labels),
                   captions=list(att.captions[i:i + 1]))


# --- text ------------------------------------------------------------------------------------
def class_name(k: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[k]) if class_names is not None and 0 <= k < len(class_names) else str(k)


def captions(att: Attention, class_names: Sequence[str] | None = None) -> list[str]:
    """One line per image: prediction, its confidence, the label, and the image's caption if any."""
    pred, conf = att.prediction()
    out = []
    for i in range(att.images.shape[0]):
        text = f"pred {class_name(int(pred[i]), class_names)} ({float(conf[i]):.0%})"
        if att.labels is not None:
            text += f", true {class_name(int(att.labels[i]), class_names)}"
        if i < len(att.captions) and att.captions[i]:
            text += f" | {att.captions[i]}"
        out.append(text)
    return out


def step_title(att: Attention, i: int, t: int, class_names: Sequence[str] | None) -> tuple[str, RGB]:
    """'pred 3 (97%)' after step t of image i, and its colour (green right, red wrong, black unknown)."""
    conf, pred = att.probs[i, t].max(-1)
    text = f"{class_name(int(pred), class_names)} ({float(conf):.0%})"
    if att.labels is None:
        return text, BLACK
    return text, RIGHT if int(pred) == int(att.labels[i]) else WRONG


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint8 0-255, rounded."""
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


# --- pixels ----------------------------------------------------------------------------------
@functools.cache
def font_at(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``px`` pixels (loaded once per size)."""
    return ImageFont.load_default(px)


@functools.cache
def _inferno() -> np.ndarray:
    """matplotlib's 'inferno' colour map as a (256, 3) float32 table of 0-255 values (read once)."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.arange(256))[:, :3] * 255).astype(np.float32)


def step_colors(steps: int) -> list[RGB]:
    """The colour of each step: lime for a single step, else matplotlib's 'cool' from cyan (first) to magenta (last)."""
    if steps == 1:
        return [ONE_STEP_COLOR]
    return [(round(255 * f), 255 - round(255 * f), 255) for f in (t / (steps - 1) for t in range(steps))]


def panel_reach(att: Attention, i: int) -> float:
    """Half width of an image panel: the image, widened (up to 1.6) to show boxes that leave it."""
    if att.boxes is None:
        return 1.0
    reach = float(att.boxes[i].abs().max())
    return min(max(1.0, reach * 1.03), 1.6)


def panel_size(att: Attention) -> int:
    """Pixels per side of the image panels of ``att``: the smallest whole multiple of the image's longer side that
    is at least ``MIN_PANEL`` (each image pixel a square of whole pixels), or ``PANEL`` when that is larger."""
    side = max(att.images.shape[-2:])
    size = side * -(-MIN_PANEL // side)
    return size if size <= PANEL else PANEL


def to_pixel(v: float, lim: float, size: int = PANEL) -> float:
    """A coordinate in [-lim, lim] -> its distance in pixels from a panel's left (x) or top (y) edge, 0 to size."""
    return (v + lim) / (2 * lim) * size


def box_pixels(box: Sequence[float], lim: float, size: int = PANEL) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) -> the first and last pixel column and row of the box on a panel: its outline's outer pixels
    (a box edge on a pixel border is drawn on the pixel inside the box)."""
    x0, y0, x1, y1 = box
    left, top = math.floor(to_pixel(x0, lim, size)), math.floor(to_pixel(y0, lim, size))
    right, bottom = math.ceil(to_pixel(x1, lim, size)) - 1, math.ceil(to_pixel(y1, lim, size)) - 1
    return left, top, max(left, right), max(top, bottom)


@functools.lru_cache(maxsize=256)
def _runs(lim: float, size: int, grids: tuple[tuple[float, float, int], ...]) -> tuple[list[np.ndarray], np.ndarray]:
    """Cut one axis of a panel of [-lim, lim] (``size`` pixels) into runs of pixels whose centers fall in the same
    cell of every grid (lo, hi, n) (n cells from lo to hi) -> each grid's cell index per run (-1 outside it) and the
    pixel count of each run (cached: every panel of a picture cuts its axes alike; the arrays are read only)."""
    centers = -lim + (np.arange(size) + 0.5) * (2 * lim / size)  # (size,)
    cells = []
    for lo, hi, n in grids:
        k = np.floor((centers - lo) / (hi - lo) * n).astype(np.int64)  # (size,)
        cells.append(np.where((k >= 0) & (k < n), k, -1))
    key = np.stack(cells)  # (G, size)
    start = np.flatnonzero(np.r_[True, (key[:, 1:] != key[:, :-1]).any(0)])  # (R,) first pixel of each run
    runs = [c[start] for c in cells], np.diff(np.r_[start, size])
    for a in (*runs[0], runs[1]):
        a.flags.writeable = False
    return runs


def image_panel(image: np.ndarray, lim: float = 1.0, m: Tensor | None = None,
                extent: tuple[float, float, float, float] | None = None, size: int = PANEL) -> np.ndarray:
    """An (H, W, 3) uint8 image over [-1, 1]^2 on a (size, size, 3) uint8 panel of [-lim, lim]^2.

    Each pixel shows what lies under its center: the image pixel (nearest neighbour), ``OUTSIDE`` grey beyond the
    image, and, with a non-negative (h, w) map ``m`` spread over ``extent`` (x0, y0, x1, y1; default the image), the
    'inferno' colour of v = m / max(m) blended over it at opacity ``MAP_ALPHA`` * v (v = 0 leaves the image as it
    is). Computed once per run of identical pixels, then repeated."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = extent if extent is not None else (-1.0, -1.0, 1.0, 1.0)
    with_map = m is not None
    (cols, *map_cols), widths = _runs(lim, size, ((-1.0, 1.0, w),) + (((x0, x1, m.shape[1]),) if with_map else ()))
    (rows, *map_rows), heights = _runs(lim, size, ((-1.0, 1.0, h),) + (((y0, y1, m.shape[0]),) if with_map else ()))
    out = image[rows.clip(0)][:, cols.clip(0)].astype(np.float32)  # (Ry, Rx, 3)
    out[(rows < 0)[:, None] | (cols < 0)[None, :]] = OUTSIDE
    if with_map:
        v = torch.nan_to_num(m.detach().float().cpu(), nan=0.0, posinf=0.0).clamp_min(0)  # (h, w), NaN as 0
        v = (v / v.max().clamp_min(1e-12)).numpy()[map_rows[0].clip(0)][:, map_cols[0].clip(0)]  # (Ry, Rx)
        v = v * ((map_rows[0] >= 0)[:, None] & (map_cols[0] >= 0)[None, :])  # 0 outside the extent
        color = _inferno()[np.minimum((v * 256).astype(np.int64), 255)]  # (Ry, Rx, 3)
        out += (MAP_ALPHA * v)[..., None] * (color - out)
    out = (out + 0.5).astype(np.uint8)
    return np.repeat(np.repeat(out, heights, axis=0), widths, axis=1)  # (size, size, 3)


def draw_boxes(panel: Image.Image, boxes: Tensor | np.ndarray, upto: int, lim: float = 1.0,
               current: int | None = None) -> None:
    """Draw boxes (T, S, 4) of steps 0..upto-1 on an image panel of [-lim, lim]^2, each step in its colour
    (``step_colors``); with T > 1 a dot at each step's mean center, the path joining them, and the step's number at
    the top-left corner of its smallest box. ``current`` draws that step bold and the earlier ones thin."""
    draw = ImageDraw.Draw(panel, "RGBA")
    size = panel.width
    b = boxes.detach().float().cpu().numpy() if isinstance(boxes, Tensor) else np.asarray(boxes, np.float32)
    steps = b.shape[0]
    colors = step_colors(steps)
    shown = [t for t in range(min(upto, steps)) if np.isfinite(b[t]).all()]  # a diverged model's NaN boxes are left out
    centers = [(to_pixel(x, lim, size), to_pixel(y, lim, size))
               for x, y in ((b[..., :2] + b[..., 2:]).mean(1) / 2).tolist()]  # T mean centers over the S boxes
    if steps > 1 and len(shown) > 1:
        draw.line([centers[t] for t in shown], fill=(*WHITE, 204), width=1)
    for t in shown:
        bold = current is None or t == current
        for box in b[t].tolist():
            draw.rectangle(box_pixels(box, lim, size), outline=(*colors[t], 255 if bold else 153),
                           width=2 if bold else 1)
    if steps == 1:
        return
    smallest = ((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])).argmin(1)  # (T,) the smallest box of each step
    for t in shown:
        x, y = centers[t]
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colors[t])
        left, top, _, _ = box_pixels(b[t, smallest[t]].tolist(), lim, size)
        label = _step_label(t + 1, colors[t])
        panel.paste(label, (left, top - label.height))  # on the box's top-left corner, above its edge


@functools.cache
def _step_label(number: int, color: RGB) -> Image.Image:
    """The number of a step, black on its colour (drawn once per number and colour)."""
    font = font_at(SMALL)
    left, top, right, bottom = font.getbbox(str(number))
    label = Image.new("RGB", (right - left + 3, bottom - top + 2), color)
    ImageDraw.Draw(label).text((1 - left, 1 - top), str(number), fill=BLACK, font=font)
    return label


def view_panel(view: np.ndarray, color: RGB, size: int = PANEL) -> Image.Image:
    """An (h, w, 3) view in [0, 1], enlarged (nearest neighbour) to fit a (size, size) white panel, framed in
    ``color``."""
    h, w = view.shape[:2]
    s = (size - 6) / max(h, w)
    hh, ww = max(1, round(h * s)), max(1, round(w * s))
    rows = np.bincount(np.minimum(((np.arange(hh) + 0.5) / s).astype(np.int64), h - 1), minlength=h)  # (h,) repeats
    cols = np.bincount(np.minimum(((np.arange(ww) + 0.5) / s).astype(np.int64), w - 1), minlength=w)  # (w,)
    out = np.full((size, size, 3), 255, np.uint8)
    top, left = (size - hh) // 2, (size - ww) // 2
    out[top - 2:top + hh + 2, left - 2:left + ww + 2] = color
    out[top:top + hh, left:left + ww] = np.repeat(np.repeat(to_uint8(view), rows, axis=0), cols, axis=1)
    return Image.fromarray(out)


def fit_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill: RGB, width: int, px: int = FONT,
          anchor: str = "md") -> None:
    """Draw ``text`` at ``xy``, one pixel size smaller at a time (down to 7) until it fits ``width`` pixels."""
    while px > 7 and draw.textlength(text, font=font_at(px)) > width:
        px -= 1
    draw.text(xy, text, fill=fill, font=font_at(px), anchor=anchor)


def _plot_frame(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixels of the axes of an accuracy plot of (width, height) pixels."""
    return 44, TITLE + 4, width - 12, height - 30


def plot_xy(t: float, a: float, steps: int, width: int, height: int) -> tuple[float, float]:
    """Pixel (x, y) of accuracy ``a`` (axis from -0.02 to 1.02) after step ``t`` (1..steps, spread over the axis)
    on an accuracy plot of (width, height) pixels."""
    left, top, right, bottom = _plot_frame(width, height)
    x = (left + right) / 2 if steps == 1 else left + 10 + (t - 1) / (steps - 1) * (right - left - 20)
    return x, bottom - (a + 0.02) / 1.04 * (bottom - top)


def accuracy_plot(acc: Tensor, n: int, width: int, height: int) -> Image.Image:
    """The accuracy after each step (T,) as a line with dots on a (width, height) white picture, steps 1..T on x."""
    pic = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(pic)
    left, top, right, bottom = _plot_frame(width, height)
    steps = acc.numel()
    fit_text(draw, (width / 2, TITLE), f"accuracy after each step ({n} images)", BLACK, width)
    for a in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = plot_xy(1, a, steps, width, height)[1]
        draw.line((left, y, right, y), fill=(230, 230, 230))
        if a in (0.0, 0.5, 1.0):
            draw.text((left - 4, y), f"{a:.1f}", fill=BLACK, font=font_at(SMALL), anchor="rm")
    for t in range(1, steps + 1):
        x = plot_xy(t, 0, steps, width, height)[0]
        draw.line((x, top, x, bottom), fill=(230, 230, 230))
        draw.text((x, bottom + 3), str(t), fill=BLACK, font=font_at(SMALL), anchor="ma")
    draw.rectangle((left, top, right, bottom), outline=BLACK)
    draw.text(((left + right) / 2, height - 2), "step", fill=BLACK, font=font_at(FONT), anchor="md")
    label = Image.new("L", (int(draw.textlength("accuracy", font=font_at(FONT))) + 2, FONT + 4), 0)
    ImageDraw.Draw(label).text((1, 1), "accuracy", fill=255, font=font_at(FONT))
    label = label.rotate(90, expand=True)  # reads upwards, as a y label does
    pic.paste(BLACK, (2, (top + bottom - label.height) // 2), label)
    points = [plot_xy(t + 1, a, steps, width, height) for t, a in enumerate(acc.tolist())]
    if steps > 1:
        draw.line(points, fill=LINE, width=2)
    for x, y in points:
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=LINE)
    return pic
