"""Pictures of what a model looked at, drawn from an ``Attention`` and nothing else.

``panels`` draws the parts (images, maps, boxes, views, text) into pixels, ``draw`` composes them into pictures,
``files`` writes them (PNG, GIF, PDF, SVG), ``wandb_media`` makes them wandb media, and ``logger`` holds
``AttentionLogger``, the callback that logs them during training. The drawing API is importable from here.

Every model returns the same ``Attention`` (``attention_lightning.attention``), so one set of drawings
serves all of them: boxes (DHAM's crop, RAM's glimpse scales numbered by step, PHAM's chosen cells),
maps over the image (DHAM's pmf, PHAM's EIG per step, HAN's selected cells as a mask), views (a crop,
a glimpse), the prediction with its confidence, and for sequential models (T > 1) the accuracy per step.

Pictures are drawn straight into pixels: images and maps sampled with numpy, boxes and text drawn with
Pillow's ``ImageDraw`` and its bundled font. A grid of eight images takes milliseconds (a matplotlib figure
of as many axes took seconds), so a training run can afford one at every validation. Each image panel
shows the square [-lim, lim]^2 of the [-1, 1] image coordinates of ``attention_lightning.nn.coords``
((x, y) order, center 0, y down) on size x size pixels (``to_pixel``; ``panel_size``: a whole number of pixels
per image pixel where that fits): lim is 1, or more when boxes leave the image. Pictures are ``PIL.Image.Image``
objects: they show inline in a notebook, and ``np.asarray`` gives their (H, W, 3) uint8 pixels.
"""
from __future__ import annotations

from .panels import (BLACK, CAPTION_WIDTH, FIGURE_SUFFIXES, FONT, GAP, LINE, MAP_ALPHA, MARGIN, MIN_PANEL,
                     ONE_STEP_COLOR, OUTSIDE, PANEL, RGB, RIGHT, SMALL, TITLE, WHITE, WRONG, box_pixels, captions,
                     draw_boxes, image_panel, image_rgb, panel_size, plot_xy, step_colors, subset, to_pixel,
                     view_panel, views_rgb)
from .draw import attention_grid, attention_rows, panel_titles, step_accuracy_figure, step_frames
from .files import check_output, png_bytes, save_attention, save_gif, svg_of
from .wandb_media import MAP_LEVELS, box_overlay, map_levels, upscaled_uint8, wandb_examples, wandb_table

__all__ = ["BLACK", "CAPTION_WIDTH", "FIGURE_SUFFIXES", "FONT", "GAP", "LINE", "MAP_ALPHA", "MARGIN", "MIN_PANEL",
           "ONE_STEP_COLOR", "OUTSIDE", "PANEL", "RGB", "RIGHT", "SMALL", "TITLE", "WHITE", "WRONG", "box_pixels",
           "captions", "draw_boxes", "image_panel", "image_rgb", "panel_size", "plot_xy", "step_colors", "subset",
           "to_pixel", "view_panel", "views_rgb", "attention_grid", "attention_rows", "panel_titles",
           "step_accuracy_figure", "step_frames", "check_output", "png_bytes", "save_attention", "save_gif", "svg_of",
           "MAP_LEVELS", "box_overlay", "map_levels", "upscaled_uint8", "wandb_examples", "wandb_table"]
