"""Drawing an Attention (viz/) and `cli.py visualize` for every registered model."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attention_lightning import registry, viz
from attention_lightning.run import commands as experiment
from attention_lightning.viz import draw, panels
from attention_lightning.attention import Attention
from attention_lightning.run.plan import UserError
from tests.tiny import TINY_FLAGS

ROOT = Path(__file__).resolve().parents[1]


def fake(kind: str, b: int = 3, steps: int = 4, labels: bool = True) -> Attention:
    """Attentions shaped like each model's: dham (box + map + view), ram (T boxes of S scales + views),
    pham (T maps + one box per step), han (one mask, captions)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(b) % 10 if labels else None
    if kind == "dham":
        return Attention(images=torch.rand(b, 1, 40, 40, generator=g), probs=torch.softmax(torch.randn(b, 1, 10), -1),
                         boxes=torch.tensor([-0.5, -0.5, 0.5, 0.5]).expand(b, 1, 1, 4),
                         maps=torch.rand(b, 1, 20, 20, generator=g), views=torch.rand(b, 1, 1, 28, 28), labels=y,
                         map_title="pmf")
    if kind == "ram":
        c = torch.rand(b, steps, 1, 2, generator=g) - 0.5
        half = torch.tensor([0.1, 0.2, 0.4]).view(1, 1, 3, 1)
        return Attention(images=torch.rand(b, 1, 40, 40), probs=torch.softmax(torch.randn(b, steps, 10), -1),
                         boxes=torch.cat([c - half, c + half], -1), views=torch.rand(b, steps, 3, 8, 8), labels=y)
    if kind == "pham":
        c = torch.rand(b, steps, 1, 2, generator=g) - 0.5
        return Attention(images=torch.rand(b, 3, 32, 32), probs=torch.softmax(torch.randn(b, steps, 10), -1),
                         boxes=torch.cat([c - 0.25, c + 0.25], -1), maps=torch.rand(b, steps, 4, 4), labels=y,
                         map_title="EIG")
    return Attention(images=torch.rand(b, 3, 48, 48), probs=torch.softmax(torch.randn(b, 1, 5), -1),
                     maps=(torch.rand(b, 1, 6, 6, generator=g) > 0.5).float(), labels=y,
                     captions=[f"is there a red square number {i}?" for i in range(b)], map_title="selected cells")


# --- arrays ----------------------------------------------------------------------------------
def test_image_rgb_scales_each_image_to_0_1_and_repeats_grey():
    x = torch.tensor([[[[2.0, 4.0], [6.0, 10.0]]], [[[-1.0, -1.0], [-1.0, 1.0]]]])  # (2, 1, 2, 2)
    rgb = viz.image_rgb(x)
    assert rgb.shape == (2, 2, 2, 3)
    np.testing.assert_allclose(rgb[0, :, :, 0], [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(rgb[1, :, :, 2], [[0.0, 0.0], [0.0, 1.0]])
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_image_rgb_keeps_colour_channels_in_order():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0, 0, 1] = 1.0  # red at row 0, column 1
    rgb = viz.image_rgb(x)
    assert rgb[0, 0, 1].tolist() == [1.0, 0.0, 0.0] and rgb[0, 1, 0].tolist() == [0.0, 0.0, 0.0]


def test_views_side_by_side_per_scale_scaled_like_their_image():
    images = torch.zeros(1, 1, 4, 4)
    images[0, 0, 0, 0] = 2.0  # image range [0, 2]
    views = torch.stack([torch.full((2, 2), 0.5), torch.full((2, 2), 1.0), torch.full((2, 2), 2.0)])  # 3 scales
    out = viz.views_rgb(views[None, None], images)  # (1, 1, 2, 3*3-1, 3)
    assert out.shape == (1, 1, 2, 8, 3)
    np.testing.assert_allclose(out[0, 0, :, 0:2, 0], 0.25)
    np.testing.assert_allclose(out[0, 0, :, 2, :], 1.0)  # white separator
    np.testing.assert_allclose(out[0, 0, :, 3:5, 0], 0.5)
    np.testing.assert_allclose(out[0, 0, :, 6:8, 0], 1.0)


# --- geometry: the classic bugs are a flipped y axis and half-pixel shifts ----------------------
def test_image_pixel_and_box_land_on_exactly_their_pixels():
    img = np.zeros((8, 8, 3), np.uint8)
    img[1, 6] = 255  # row 1 (near the top), column 6 (right): x in [0.5, 0.75], y in [-0.75, -0.5]
    panel = viz.image_panel(img, lim=1.0, size=160)  # 20 panel pixels per image pixel
    expected = np.zeros((160, 160), bool)
    expected[20:40, 120:140] = True
    assert np.array_equal(panel.max(-1) == 255, expected) and panel[~expected].max() == 0
    pic = Image.fromarray(panel)
    viz.draw_boxes(pic, torch.tensor([[[-0.75, 0.25, -0.25, 0.75]]]), 1)  # (T=1, S=1, 4): left, lower half
    lime = np.all(np.asarray(pic) == viz.ONE_STEP_COLOR, -1)
    outline = np.zeros((160, 160), bool)
    outline[100:140, 20:60] = True  # the box covers columns 20-59 and rows 100-139, inside its edges
    outline[102:138, 22:58] = False  # a bold outline is two pixels wide
    assert np.array_equal(lime, outline)
    assert np.array_equal(np.asarray(pic)[~outline], panel[~outline])  # nothing else changed


def test_box_pixels_at_edges_and_between_them():
    assert viz.box_pixels((-1.0, -1.0, 1.0, 1.0), 1.0, 160) == (0, 0, 159, 159)
    assert viz.box_pixels((-0.01, 0.0, 0.01, 0.02), 1.0, 160) == (79, 80, 80, 81)
    assert viz.box_pixels((0.3, 0.3, 0.3, 0.3), 1.0, 160) == (104, 104, 104, 104)  # a point is one pixel


def test_boxes_that_leave_the_image_widen_the_panel_and_show_grey_outside_the_image():
    att = fake("dham", b=1)
    att.boxes = torch.tensor([[[[-1.3, -0.2, 0.2, 1.3]]]])
    assert panels.panel_reach(att, 0) == pytest.approx(1.3 * 1.03)
    att.boxes = torch.tensor([[[[-5.0, -5.0, 5.0, 5.0]]]])
    assert panels.panel_reach(att, 0) == 1.6
    panel = viz.image_panel(np.full((4, 4, 3), 255, np.uint8), lim=2.0, size=160)  # the image spans pixels 40-119
    white = panel.min(-1) == 255
    assert white[40:120, 40:120].all() and white.sum() == 80 * 80
    assert (panel[~white] == viz.OUTSIDE).all()


def _blend(gray: int, v: float) -> list[int]:
    """What a map of relative value v does to a gray pixel: matplotlib's inferno colour at opacity 0.6 v."""
    from matplotlib import colormaps

    color = np.array(colormaps["inferno"](v)[:3]) * 255
    return [int(c + 0.5) for c in gray + viz.MAP_ALPHA * v * (color - gray)]


def test_map_is_transparent_where_zero_and_colours_each_cell():
    m = torch.zeros(2, 2)
    m[1, 0], m[0, 1] = 3.0, 1.5  # bottom-left cell at the max, top-right at half of it
    panel = viz.image_panel(np.full((4, 4, 3), 128, np.uint8), m=m, size=160).astype(int)
    assert (panel[80:, :80] == _blend(128, 1.0)).all()
    assert (panel[:80, 80:] == _blend(128, 0.5)).all()
    assert (panel[:80, :80] == 128).all() and (panel[80:, 80:] == 128).all()  # the image as it is


def test_map_with_an_extent_covers_only_that_part_of_the_image():
    panel = viz.image_panel(np.full((4, 4, 3), 128, np.uint8), m=torch.ones(1, 1), extent=(0.0, -1.0, 1.0, 0.0),
                            size=160).astype(int)  # the top-right quarter only
    assert (panel[:80, 80:] == _blend(128, 1.0)).all()
    panel[:80, 80:] = 128
    assert (panel == 128).all()


def test_pham_and_dham_maps_span_their_cells_not_the_whole_image():
    from attention_lightning.models.dham import DHAM
    from attention_lightning.models.pham import PHAM
    pham = PHAM(image_size=32, feature_size=16, hidden_size=16, latent_size=4, glimpse_channels=(8,),
                flow_transforms=1, flow_hidden=(8,), decoder_channels=8, decoder_layers=1, steps=2, eig_samples=1)
    att = pham.attention((torch.rand(2, 3, 32, 32), torch.tensor([0, 1])))
    # 8x8 glimpses every 4 px: the first is centered on pixel edge 4 (-0.75), the last on 28 (0.75); cells are 4 px
    assert att.map_extent == pytest.approx((-0.875, -0.875, 0.875, 0.875))
    dham = DHAM(in_channels=1, head_channels=(4,), head_kernel=5, head_padding="valid", head_stride=1)
    att = dham.attention((torch.rand(2, 1, 20, 20), torch.tensor([0, 1])))
    # two valid 5x5 convs (4 channels, then the map) trim 4 px per side: 12 cells on pixels 4..15, outer edges 4 and 16
    assert att.maps.shape[-1] == 12
    assert att.map_extent == pytest.approx((-0.6, -0.6, 0.6, 0.6))
    assert viz.subset(att, 1).map_extent == att.map_extent and att.detach_cpu().map_extent == att.map_extent


def test_steps_are_coloured_and_numbered_in_order_and_one_step_is_not():
    colors = viz.step_colors(3)
    assert colors == [(0, 255, 255), (128, 127, 255), (255, 0, 255)]  # matplotlib's 'cool': cyan to magenta
    assert viz.step_colors(1) == [viz.ONE_STEP_COLOR]
    boxes = torch.tensor([[[-0.9, -0.5, -0.5, -0.1]], [[-0.2, -0.5, 0.2, -0.1]], [[0.5, 0.5, 0.9, 0.9]]])  # (3, 1, 4)
    pic = Image.fromarray(np.zeros((160, 160, 3), np.uint8))
    viz.draw_boxes(pic, boxes, 3)
    rgb = np.asarray(pic)
    for t, box in enumerate(boxes[:, 0].tolist()):
        left, top, right, bottom = viz.box_pixels(box, 1.0)
        assert rgb[bottom, (left + right) // 2].tolist() == list(colors[t])  # the bottom edge in the step's colour
        label = rgb[top - 12:top, left:left + 8].reshape(-1, 3).tolist()  # the number's tag sits on the corner
        assert list(colors[t]) in label and [0, 0, 0] in label  # a black digit on the step's colour
    pic = Image.fromarray(np.zeros((160, 160, 3), np.uint8))
    viz.draw_boxes(pic, boxes[:1], 1)  # one step: the box alone, no number, no dot
    drawn = np.asarray(pic).max(-1) > 0
    left, top, right, bottom = viz.box_pixels(boxes[0, 0].tolist(), 1.0)
    assert drawn.sum() == drawn[top:bottom + 1, left:right + 1].sum() == 2 * (right - left + 1 + bottom - top + 1) * 2 - 16


def test_current_step_bold_earlier_steps_thin():
    boxes = torch.tensor([[[-0.9, -0.9, -0.1, -0.1]], [[0.1, 0.1, 0.9, 0.9]]])  # (2, 1, 4)
    pic = Image.fromarray(np.zeros((160, 160, 3), np.uint8))
    viz.draw_boxes(pic, boxes, 2, current=1)
    rgb = np.asarray(pic).astype(int)
    left, top, right, bottom = viz.box_pixels(boxes[0, 0].tolist(), 1.0)
    mid = (top + bottom) // 2
    assert rgb[mid, left + 1].tolist() == [0, 0, 0]  # thin: one pixel
    assert rgb[mid, left].tolist() == [round(c * 0.6) for c in viz.step_colors(2)[0]]  # and faded (60% opacity)
    left, top, right, bottom = viz.box_pixels(boxes[1, 0].tolist(), 1.0)
    mid = (top + bottom) // 2
    assert rgb[mid, left].tolist() == rgb[mid, left + 1].tolist() == list(viz.step_colors(2)[1])


def test_view_is_enlarged_into_the_middle_of_its_panel_and_framed_in_its_colour():
    view = np.zeros((2, 4, 3))
    view[:, 2:] = 1.0  # right half white
    panel = viz.view_panel(view, (255, 0, 0), size=46)  # 4 px wide at 10 px per view pixel: 40 x 20, centered
    rgb = np.asarray(panel)
    assert (rgb[13:33, 3:23] == 0).all() and (rgb[13:33, 23:43] == 255).all()
    frame = np.zeros((46, 46), bool)
    frame[11:35, 1:45] = True
    frame[13:33, 3:43] = False
    assert (rgb[frame] == [255, 0, 0]).all()
    assert (rgb[~frame & ~np.pad(np.ones((20, 40), bool), ((13, 13), (3, 3)))] == 255).all()  # white around


def test_panels_give_each_image_pixel_whole_pixels_where_that_fits():
    sizes = {side: viz.panel_size(Attention(images=torch.zeros(1, 1, side, side), probs=torch.ones(1, 1, 1)))
             for side in (28, 32, 40, 60, 100, 120, 224)}
    assert sizes == {28: 112, 32: 128, 40: 120, 60: 120, 100: viz.PANEL, 120: 120, 224: viz.PANEL}
    assert viz.panel_size(Attention(images=torch.zeros(1, 1, 20, 30), probs=torch.ones(1, 1, 1))) == 120


# --- pictures --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,cols,acc_row", [("dham", 3, 0), ("ram", 1 + 4, 1), ("pham", 1 + 4, 1), ("han", 2, 0)])
def test_grid_has_a_row_per_image_and_the_panels_of_each_model(kind, cols, acc_row):
    att = fake(kind, b=3)
    assert len(draw._columns(att)) == cols
    rgb = np.asarray(viz.attention_grid(att, max_images=2))
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    p = viz.panel_size(att)
    assert rgb.shape[1] == 2 * viz.MARGIN + cols * (p + viz.GAP) - viz.GAP
    caption = 2 * (viz.SMALL + 2) if kind == "han" else 0  # HAN's questions take two lines under the image
    row = viz.TITLE + p + caption + viz.GAP
    assert rgb.shape[0] == 2 * viz.MARGIN + 2 * row + acc_row * (round(0.9 * p) + viz.TITLE)
    first = rgb[viz.MARGIN + viz.TITLE:viz.MARGIN + viz.TITLE + p, viz.MARGIN:viz.MARGIN + p]
    expected = viz.image_panel(panels.to_uint8(viz.image_rgb(att.images[:1]))[0], panels.panel_reach(att, 0), size=p)
    if att.boxes is None:
        assert np.array_equal(first, expected)  # the overview panel is the image panel
    else:
        assert (first == expected).all(-1).mean() > 0.5  # the image panel with boxes drawn over it


def test_grid_titles_show_prediction_confidence_and_correctness():
    att = fake("dham", b=2)
    att.probs = torch.tensor([[[0.1, 0.9] + [0.0] * 8]] * 2)  # predicts 1 with 90%
    att.labels = torch.tensor([1, 0])
    titles = viz.panel_titles(att, class_names=["zero", "one"] + [str(i) for i in range(2, 10)])
    assert titles[0] == [("pred one (90%) / one", viz.RIGHT), ("pmf", viz.BLACK), ("view", viz.BLACK)]
    assert titles[1][0] == ("pred one (90%) / zero", viz.WRONG)
    rgb = np.asarray(viz.attention_grid(att))
    p = viz.panel_size(att)
    row = viz.TITLE + p + viz.GAP
    for i, color in enumerate((viz.RIGHT, viz.WRONG)):
        band = rgb[viz.MARGIN + i * row:viz.MARGIN + i * row + viz.TITLE, viz.MARGIN:viz.MARGIN + p]
        darkest = band.reshape(-1, 3)[band.reshape(-1, 3).astype(int).sum(1).argmin()]  # the text's core
        assert np.abs(darkest.astype(int) - color).max() < 60
    steps = viz.panel_titles(fake("pham", b=1, steps=2))[0]
    assert [t.split(" -> ")[0] for t, _ in steps[1:]] == ["1: EIG", "2: EIG"]


def test_fields_with_fewer_steps_than_the_probabilities_still_draw():
    att = fake("ram", b=2, steps=3)
    att.maps = torch.rand(2, 1, 5, 5)  # one map for a 3-step model
    att.boxes = att.boxes[:, :2]      # boxes for 2 of the 3 steps
    assert draw._columns(att) == [("overview",), ("map", 0)]
    assert np.asarray(viz.attention_grid(att)).shape[1] == 2 * viz.MARGIN + 2 * (viz.panel_size(att) + viz.GAP) - viz.GAP
    assert len(viz.step_frames(att)) == 3


def test_no_accuracy_row_without_labels():
    att = fake("ram", b=2, labels=False)
    rgb = np.asarray(viz.attention_grid(att))
    assert rgb.shape[0] == 2 * viz.MARGIN + 2 * (viz.TITLE + viz.panel_size(att) + viz.GAP)
    with pytest.raises(ValueError, match="needs labels"):
        viz.step_accuracy_figure(fake("ram", labels=False))


def test_step_accuracy_plot_follows_the_probabilities():
    att = fake("ram", b=2, steps=3)
    att.labels = torch.tensor([0, 1])
    att.probs = torch.zeros(2, 3, 10)
    att.probs[0, :, 0] = 1.0                      # image 0 right at every step
    att.probs[1, 0, 0] = att.probs[1, 1:, 1] = 1.0  # image 1 right from step 2
    rgb = np.asarray(viz.step_accuracy_figure(att))
    points = [viz.plot_xy(t, a, 3, rgb.shape[1], rgb.shape[0]) for t, a in ((1, 0.5), (2, 1.0), (3, 1.0))]
    for x, y in points:
        assert rgb[round(y), round(x)].tolist() == list(viz.LINE)  # a dot at each step's accuracy
    low, high = viz.plot_xy(1, 0.0, 3, 400, 240)[1], viz.plot_xy(1, 1.0, 3, 400, 240)[1]
    assert points[0][1] == pytest.approx((low + high) / 2) and points[1][1] == points[2][1] == pytest.approx(high)
    assert points[0][0] < points[1][0] < points[2][0]


def test_captions_name_prediction_label_and_question():
    caps = viz.captions(fake("han", b=2), class_names=["a", "b", "c", "d", "e"])
    assert len(caps) == 2 and caps[1].startswith("pred ") and ", true b | is there a red square number 1?" in caps[1]


def test_rows_and_frames():
    rows = viz.attention_rows(fake("ram", b=3), max_images=2)
    assert len(rows) == 2 and rows[0].shape == rows[1].shape
    frames = viz.step_frames(fake("pham", b=3, steps=4))
    assert len(frames) == 4 and len({f.shape for f in frames}) == 1
    assert len(viz.step_frames(fake("dham"))) == 1


def test_the_same_attention_draws_the_same_pixels():
    for kind in ("dham", "ram", "pham", "han"):
        att = fake(kind)
        assert np.array_equal(np.asarray(viz.attention_grid(att)), np.asarray(viz.attention_grid(att)))


def test_save_png_gif_pdf_and_svg(tmp_path):
    att = fake("ram", steps=3)
    viz.save_attention(att, tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as png:
        assert png.format == "PNG" and np.array_equal(np.asarray(png.convert("RGB")),
                                                      np.asarray(viz.attention_grid(att)))
    viz.save_attention(att, tmp_path / "sub" / "a.gif")
    with Image.open(tmp_path / "sub" / "a.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
    viz.save_attention(fake("han"), tmp_path / "h.gif")  # one-step models: a one-frame GIF
    with Image.open(tmp_path / "h.gif") as gif:
        assert gif.n_frames == 1
    viz.save_attention(att, tmp_path / "a.pdf")
    assert (tmp_path / "a.pdf").read_bytes()[:5] == b"%PDF-"
    viz.save_attention(att, tmp_path / "a.svg")
    svg = (tmp_path / "a.svg").read_text()
    import base64
    import io
    import re
    w, h = viz.attention_grid(att).size
    assert svg.startswith(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"')
    embedded = base64.b64decode(re.search(r"base64,([^\"]+)", svg).group(1))
    with Image.open(io.BytesIO(embedded)) as png:
        assert np.array_equal(np.asarray(png.convert("RGB")), np.asarray(viz.attention_grid(att)))
    with pytest.raises(ValueError, match="use .gif"):
        viz.save_attention(fake("dham"), tmp_path / "a.bmp")


# --- cli.py visualize, every registered model --------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A one-batch checkpoint per registered model (built lazily, shared by the tests below)."""
    root = tmp_path_factory.mktemp("viz_ckpts")
    made = {}

    def get(name: str) -> Path:
        if name not in made:
            assert name in TINY_FLAGS, f"model {name!r} has no small flags in tests/tiny.py: add them"
            flags = {**TINY_FLAGS[name], "logger": "none", "max_epochs": 1, "limit_train_batches": 1,
                     "limit_val_batches": 1, "limit_test_batches": 0, "enable_progress_bar": False,
                     "enable_model_summary": False, "num_sanity_val_steps": 0, "default_root_dir": str(root)}
            summary = experiment.fit(flags)
            made[name] = Path(summary["best_checkpoint"] or summary["last_checkpoint"])
        return made[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", [e.name for e in registry.models()])
def test_visualize_writes_a_png_for_every_model_and_a_gif_per_step(name, checkpoints, tmp_path):
    ckpt = checkpoints(name)
    s = experiment.visualize({"ckpt": str(ckpt), "out": str(tmp_path / "a.png"), "num_images": 3})
    assert s["model"] == name and s["images"] == 3 and 0.0 <= s["accuracy"] <= 1.0
    with Image.open(tmp_path / "a.png") as png:
        assert png.format == "PNG" and png.width > 200 and png.height > 200
    s = experiment.visualize({"ckpt": str(ckpt), "out": str(tmp_path / "a.gif"), "num_images": 2, "split": "test"})
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == s["steps"]
    if name in ("ram", "pham"):
        assert s["steps"] > 1, f"{name} is sequential: its GIF should have a frame per step"


def test_visualize_errors_name_the_fix(checkpoints, tmp_path):
    ckpt = str(checkpoints("dham"))
    cases = [({"out": "a.png"}, "needs --ckpt"), ({"ckpt": ckpt}, "needs --out"),
             ({"ckpt": ckpt, "out": "a.bmp"}, "use .gif"), ({"ckpt": ckpt, "out": "a.png", "split": "train"},
                                                           "--split=val or --split=test"),
             ({"ckpt": ckpt, "out": "a.png", "num_images": 0}, "must be an integer >= 1"),
             ({"ckpt": ckpt, "out": "a.png", "model": "ram"}, "pass --model=dham")]
    for flags, message in cases:
        with pytest.raises(UserError, match=message.replace(".", r"\.")):
            experiment.visualize(flags)


@pytest.mark.slow
def test_cli_visualize(checkpoints, tmp_path):
    out = tmp_path / "cli.png"
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "visualize", f"--ckpt={checkpoints('dham')}",
                           f"--out={out}", "--num_images=2"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote {out} (dham: 2 images, 1 step(s)" in done.stdout and out.is_file()


# --- overlays for wandb ------------------------------------------------------------------------
def test_map_levels_quarters_the_map_on_the_pixel_grid_and_zeroes_outside_its_extent():
    att = Attention(images=torch.zeros(1, 1, 4, 4), probs=torch.full((1, 1, 2), 0.5),
                    maps=torch.tensor([[[[0.0, 2.0], [1.0, 0.4]]]]))  # (1, 1, 2, 2): max 2
    assert viz.map_levels(att, 0, 0, 4, 4).tolist() == [[0, 0, 4, 4], [0, 0, 4, 4], [3, 3, 1, 1], [3, 3, 1, 1]]
    att.map_extent = (0.0, -1.0, 1.0, 1.0)  # the map covers the right half only
    assert viz.map_levels(att, 0, 0, 2, 4).tolist() == [[0, 0, 0, 4], [0, 0, 3, 1]]


def test_box_overlay_gives_fractions_clipped_to_the_image_with_one_class_per_step():
    probs = torch.tensor([[[0.7, 0.3], [0.2, 0.8]]])  # (1, 2 steps, 2 classes)
    boxes = torch.tensor([[[[-1.0, -1.0, 0.0, 0.0]], [[0.5, 0.5, 1.5, 1.5]]]])  # (1, 2, 1, 4)
    att = Attention(images=torch.zeros(1, 1, 8, 8), probs=probs, boxes=boxes, labels=torch.tensor([1]))
    out = viz.box_overlay(att, 0, ["cat", "dog"])
    assert out["class_labels"] == {1: "step 1", 2: "step 2"}
    first, second = out["box_data"]
    assert first["position"] == {"minX": 0.0, "minY": 0.0, "maxX": 0.5, "maxY": 0.5}
    assert second["position"] == {"minX": 0.75, "minY": 0.75, "maxX": 1.0, "maxY": 1.0}
    assert (first["class_id"], first["box_caption"], second["box_caption"]) == (1, "1: cat (70%)", "2: dog (80%)")
    assert first["scores"] == pytest.approx({"step": 1, "p_prediction": 0.7, "p_label": 0.3})


def test_upscaled_uint8_enlarges_by_a_whole_factor_with_sharp_pixels():
    att = Attention(images=torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]]), probs=torch.ones(1, 1, 1))
    big = viz.upscaled_uint8(att, min_side=5)  # factor 3
    assert big.shape == (1, 6, 6, 3) and big.dtype == np.uint8
    assert big[0, :3, :3].max() == 0 and big[0, :3, 3:].min() == 255


def test_save_gif_writes_to_a_file_object():
    import io

    frames = [np.full((4, 6, 3), v, dtype=np.uint8) for v in (0, 255)]
    buf = io.BytesIO()
    viz.save_gif(frames, buf)
    buf.seek(0)
    with Image.open(buf) as im:
        assert im.format == "GIF" and im.n_frames == 2 and im.size == (6, 4)


def test_a_diverged_model_still_draws():
    att = fake("pham", b=2, steps=3)
    att.boxes[0, 1] = float("nan")  # step 2 of image 0 diverged
    att.maps[0, 2] = float("nan")
    att.maps[1, 0, 0, 0] = float("inf")
    rgb = np.asarray(viz.attention_grid(att))
    clean = fake("pham", b=2, steps=3)
    assert rgb.shape == np.asarray(viz.attention_grid(clean)).shape
    lim = panels.panel_reach(att, 0)
    p = viz.panel_size(att)
    panel = viz.image_panel(panels.to_uint8(viz.image_rgb(att.images[:1]))[0], lim, att.maps[0, 2], att.map_extent, p)
    assert np.array_equal(panel, viz.image_panel(panels.to_uint8(viz.image_rgb(att.images[:1]))[0], lim, size=p))
