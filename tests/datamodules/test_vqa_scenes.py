import numpy as np
import pytest
import torch

from attention_lightning.run import commands as experiment
from attention_lightning.batches import VQABatch
from attention_lightning.facts import DataFacts
from datamodules.scenes import COLOURS, QTYPES, SHAPES, SIZES, Scene, SceneGenerator
from datamodules.vqa_scenes import VQAScenesDataModule, collate
from tests.datamodules.scene_oracle import answer_question

RED, GREEN, BLUE = (list(COLOURS).index(c) for c in ("red", "green", "blue"))
CIRCLE, SQUARE, TRIANGLE = (SHAPES.index(s) for s in ("circle", "square", "triangle"))


def small_dm(**kw) -> VQAScenesDataModule:
    dm = VQAScenesDataModule(**{"canvas_size": 32, "train_size": 50, "val_size": 400, "test_size": 20, **kw})
    dm.setup()
    return dm


def hand_scene() -> Scene:
    """3x3 grid on a 48px canvas (places of 16px): red large circle top left, green small square top right,
    blue large triangle bottom center, green large circle middle left."""
    return Scene(
        colour=np.array([RED, GREEN, BLUE, GREEN]),
        shape=np.array([CIRCLE, SQUARE, TRIANGLE, CIRCLE]),
        size=np.array([1, 0, 1, 1]),
        place=np.array([0, 2, 7, 3]),
        center=np.array([[8.0, 8.0], [40.0, 8.0], [24.0, 40.0], [8.0, 24.0]]),
        radius=np.array([6.4, 4.0, 6.4, 6.4]),
        clutter=np.array([[30.0, 25.0, 1.6]]),
    )


@pytest.mark.parametrize("question,answer", [
    ("is there a red circle ?", "yes"),
    ("is there a red square ?", "no"),
    ("is there a green square ?", "yes"),
    ("what colour is the object at the top right ?", "green"),
    ("what shape is the object at the bottom center ?", "triangle"),
    ("what size is the object at the top right ?", "small"),
    ("what size is the object at the middle left ?", "large"),
    ("how many green objects are there ?", "2"),
    ("how many yellow objects are there ?", "0"),
    ("how many circles are there ?", "2"),
    ("how many crosses are there ?", "0"),
    ("is the red circle left of the green square ?", "yes"),
    ("is the red circle right of the green square ?", "no"),
    ("is the green square right of the blue triangle ?", "yes"),
    ("is the blue triangle left of the green circle ?", "no"),
])
def test_answers_on_a_hand_built_scene(question, answer):
    assert answer_question(hand_scene(), question, grid=3) == answer


def test_rendering_draws_each_object_in_its_colour_at_its_place():
    gen = SceneGenerator(48, 3, 3, 6, 1, 3, QTYPES)
    image = gen.render(hand_scene())  # (3, 48, 48)
    assert image.shape == (3, 48, 48) and image.dtype == np.float32
    rgb = np.array(list(COLOURS.values()), dtype=np.float32)
    for (x, y), c in zip(hand_scene().center, hand_scene().colour):
        np.testing.assert_allclose(image[:, int(y), int(x)], rgb[c])
    np.testing.assert_allclose(image[:, 25, 30], [0.5, 0.5, 0.5])  # the clutter square
    np.testing.assert_allclose(image[:, 40, 8], [0.0, 0.0, 0.0])   # the empty bottom left place
    # the square's mask is a (2 * 0.85 r)-sided square around its center: 6.8px -> pixels 37..42 of x
    cols = np.flatnonzero((image[:, 8, :] == rgb[GREEN][:, None]).all(0))
    assert cols.min() == 37 and cols.max() == 42


def test_generator_answer_matches_the_independent_reader():
    dm = small_dm(val_size=600)
    seen = set()
    for i in range(600):
        scene = dm.val_set.scene(i)
        seen.add(scene.qtype)
        assert answer_question(scene, scene.question, dm.hparams.grid) == scene.answer, scene.question
        assert len(np.unique(scene.place)) == len(scene.place)  # one object per place
        pairs = set(zip(scene.colour.tolist(), scene.shape.tolist()))
        assert len(pairs) == len(scene.colour)  # colour-shape pairs are unique, so descriptions are
    assert seen == set(QTYPES)


def test_val_is_deterministic_and_train_follows_torch_seed():
    a, b = small_dm(), small_dm()
    for i in (0, 7, 399):
        x, y = a.val_set[i], b.val_set[i]
        assert torch.equal(x["image"], y["image"]) and x["text"] == y["text"] and x["answer"] == y["answer"]
    assert not torch.equal(a.val_set[0]["image"], a.val_set[1]["image"])
    torch.manual_seed(1)
    t1 = [a.train_set[0]["image"] for _ in range(2)]
    torch.manual_seed(1)
    t2 = [b.train_set[0]["image"] for _ in range(2)]
    assert torch.equal(t1[0], t2[0]) and torch.equal(t1[1], t2[1])
    assert not torch.equal(t1[0], t1[1])  # the same index differs from epoch to epoch


def test_collate_pads_questions_and_tokenizer_round_trips():
    dm = small_dm()
    items = [dm.val_set[i] for i in range(6)]
    batch = collate(items)
    assert batch.image.shape == (6, 3, 32, 32)
    assert batch.question.dtype == torch.long and batch.question.shape[0] == 6
    assert batch.length.tolist() == [len(it["text"].split()) for it in items]
    for i, it in enumerate(items):
        n = batch.length[i]
        assert (batch.question[i, n:] == 0).all() and (batch.question[i, :n] > 1).all()  # no pad/unk inside
        assert dm.tokenizer.decode(batch.question[i]) == it["text"]
    assert batch.answer.tolist() == [it["answer"] for it in items]
    loaded = next(iter(dm.val_dataloader()))
    assert isinstance(loaded, VQABatch) and loaded.text == [dm.val_set[i]["text"] for i in range(len(loaded.text))]


def test_answers_are_balanced_and_majority_is_low():
    dm = small_dm(val_size=800)
    answer, freq = dm.majority_baseline()
    assert answer in ("yes", "no") and freq < 0.35
    ans = [dm.val_set.scene(i) for i in range(800)]
    yes_no = [s.answer for s in ans if s.qtype in ("exist", "relate")]
    assert 0.4 < yes_no.count("yes") / len(yes_no) < 0.6
    counts = [s.answer for s in ans if s.qtype == "count"]
    assert {"0", "1", "2", "3"} <= set(counts)
    assert max(counts.count(c) for c in set(counts)) / len(counts) < 0.4


def test_facts_and_vocabularies():
    dm = small_dm()
    facts = dm.facts()
    assert isinstance(facts, DataFacts) and dm.model_kwargs() == facts.model_facts()
    assert facts.num_classes == len(dm.answers) == len(set(dm.answers)) == len(facts.class_names)
    assert facts.vocab_size == len(dm.tokenizer) and facts.in_channels == 3 and facts.image_size == (32, 32)
    assert set(SIZES) <= set(dm.answers)


@pytest.mark.parametrize("kw,flag", [
    ({"max_objects": 10}, "--max_objects"), ({"grid": 9}, "--grid"), ({"canvas_size": 16}, "--canvas_size"),
    ({"question_types": []}, "--question_types"), ({"max_count": 9}, "--max_count"),
    ({"grid": 6, "canvas_size": 48}, "--question_types has query"),  # places are named only up to 4x4
    ({"relate_sides": "up"}, "--relate_sides"), ({"relate_axes": "z"}, "--relate_axes='z' is not one of x, xy"),
])
def test_bad_flags_name_the_flag(kw, flag):
    with pytest.raises(ValueError, match=flag):
        VQAScenesDataModule(**kw)


def test_an_unknown_question_type_is_refused_by_the_flag_router():
    with pytest.raises(experiment.UserError, match="question_types"):
        experiment.plan({"model": "han", "data": "vqa_scenes", "question_types": ["where"]})


def test_large_lattice_scenes_need_specific_cells_among_many_objects():
    """The preset's scenes: 5-9 objects on 6x6, each question answered from at most 3 of them (checked by the
    oracle), so keeping 4 cells cannot mean keeping every object."""
    dm = small_dm(canvas_size=48, grid=6, min_objects=5, max_objects=9, clutter=6, num_colours=4, num_shapes=4,
                  question_types=["exist", "count", "relate"], val_size=300)
    scenes = dm.val_set.scenes(range(300))
    assert scenes.count.min() == 5 and scenes.count.max() == 9 and set(scenes.qtype) == {"exist", "count", "relate"}
    for i in range(300):
        scene = scenes[i]
        assert answer_question(scene, scene.question, 6) == scene.answer, scene.question
        assert scene.place.max() < 36 and len(np.unique(scene.place)) == len(scene.place)
    assert "top" not in dm.tokenizer.stoi  # no place names on a 6x6 lattice


def test_prior_baseline_is_the_per_type_majority_measured_on_test():
    dm = small_dm(question_types=["exist", "count"], val_size=500, test_size=500)
    prior = dm.prior_baseline()
    assert set(prior) == {"acc", "acc_exist", "acc_count"}
    val, test = dm.val_set.scenes(range(500)), dm.test_set.scenes(range(500))
    best = {}
    for kind in ("exist", "count"):
        answers = [a for a, q in zip(val.answer, val.qtype) if q == kind]
        best[kind] = max(sorted(set(answers)), key=answers.count)
        truth = [a for a, q in zip(test.answer, test.qtype) if q == kind]
        assert prior[f"acc_{kind}"] == pytest.approx(truth.count(best[kind]) / len(truth))
    assert prior["acc"] == pytest.approx(np.mean([a == best[q] for a, q in zip(test.answer, test.qtype)]))
    assert 0.4 < prior["acc_exist"] < 0.6 and prior["acc_count"] < 0.35  # answers are balanced


def test_fewer_colours_and_shapes_restrict_scenes_and_questions():
    dm = small_dm(num_colours=3, num_shapes=2, max_objects=3, val_size=300)
    colours, shapes = set(list(COLOURS)[:3]), set(SHAPES[:2])
    for i in range(300):
        scene = dm.val_set.scene(i)
        assert set(scene.colour.tolist()) <= {0, 1, 2} and set(scene.shape.tolist()) <= {0, 1}
        assert answer_question(scene, scene.question, dm.hparams.grid) == scene.answer, scene.question
        words = set(scene.question.split())
        assert not words & (set(COLOURS) - colours) and not words & (set(SHAPES) - shapes), scene.question
    with pytest.raises(ValueError, match="--max_objects"):  # 3 x 2 pairs leave no room for 4 objects and a count
        VQAScenesDataModule(num_colours=3, num_shapes=2, max_objects=4)
    with pytest.raises(ValueError, match="--num_colours"):
        VQAScenesDataModule(num_colours=1)


def reference_render(gen: SceneGenerator, scene: Scene) -> np.ndarray:
    """Full-canvas rendering written for the test: every pixel tested against every square and object."""
    c = np.arange(gen.canvas) + 0.5
    xs, ys = c[None, :], c[:, None]
    label = np.zeros((gen.canvas, gen.canvas), dtype=np.int64)
    for x, y, h in scene.clutter:
        label[(np.abs(xs - x) <= h) & (np.abs(ys - y) <= h)] = 1
    for (x, y), r, kind, colour in zip(scene.center, scene.radius, scene.shape, scene.colour):
        dx, dy = (xs - x).astype(np.float32), (ys - y).astype(np.float32)
        ax, ay, r = np.abs(dx), np.abs(dy), np.float32(r)
        mask = [dx * dx + dy * dy <= r * r, np.maximum(ax, ay) <= 0.85 * r,
                (dy >= -r) & (dy <= 0.75 * r) & (ax <= (dy + r) / 1.75),
                ((ax <= 0.35 * r) & (ay <= r)) | ((ay <= 0.35 * r) & (ax <= r))][kind]
        label[mask] = 2 + colour
    return gen.palette[label].transpose(2, 0, 1)


def test_batched_window_rendering_matches_a_full_canvas_reference():
    dm = small_dm(canvas_size=48, clutter=3)
    scenes = dm.val_set.scenes(range(40))
    images = dm.generator.render_batch(scenes)  # (40, 3, 48, 48)
    for i in range(len(scenes)):
        np.testing.assert_array_equal(images[i], reference_render(dm.generator, scenes[i]))


def test_an_item_does_not_depend_on_the_batch_it_is_drawn_in():
    dm = small_dm()
    batch = dm.val_set.__getitems__([5, 3, 399])
    for item, i in zip(batch, (5, 3, 399)):
        alone = dm.val_set[i]
        assert torch.equal(item["image"], alone["image"]) and item["text"] == alone["text"]
        assert item["answer"] == alone["answer"]


def test_noise_is_per_item_and_reproducible():
    dm = small_dm(noise=0.2)
    a, b = dm.val_set.__getitems__([0, 1]), dm.val_set.__getitems__([1])
    assert torch.equal(a[1]["image"], b[0]["image"])
    clean = torch.from_numpy(dm.generator.render(dm.val_set.scene(1)))
    diff = a[1]["image"] - clean
    assert 0.1 < diff.std() < 0.25 and a[1]["image"].min() >= 0 and a[1]["image"].max() <= 1


def test_relate_sides_left_says_left_of_and_keeps_every_answer():
    """``relate_sides=left``: every relate question says "left of", its answer agrees with the independent
    reader, and item i has the same scene and answer as with both words (the pair is written in the other
    order where the text would have said "right of"), so the answers stay balanced."""
    kw = dict(canvas_size=48, grid=6, min_objects=5, max_objects=9, clutter=6, num_colours=4, num_shapes=4,
              question_types=["relate"], val_size=300)
    both, left = small_dm(**kw), small_dm(**kw, relate_sides="left")
    a, b = both.val_set.scenes(range(300)), left.val_set.scenes(range(300))
    assert a.answer == b.answer and np.array_equal(a.place, b.place)
    assert sum(" right of " in q for q in a.question) > 100  # both words are used by default
    swapped = 0
    for i in range(300):
        assert " left of " in b.question[i] and " right " not in b.question[i]
        assert answer_question(b[i], b.question[i], 6) == b.answer[i], b.question[i]
        if a.question[i] != b.question[i]:
            wa, wb = a.question[i].split(), b.question[i].split()
            assert wa[4] == "right" and wa[2:4] == wb[7:9] and wa[7:9] == wb[2:4]  # the pair, reversed
            swapped += 1
    assert swapped > 100 and 0.4 < b.answer.count("yes") / 300 < 0.6


@pytest.mark.parametrize("sides", ["both", "left"])
def test_relate_axes_xy_asks_above_and_below_as_often_as_left_and_right(sides):
    """``relate_axes=xy``: half the relate questions compare y ("above" / "below"), the two objects in different
    rows of the lattice; every answer agrees with the independent reader; yes and no stay balanced on each axis;
    the two words join the vocabulary, which is unchanged without the option."""
    kw = dict(canvas_size=48, grid=6, min_objects=5, max_objects=9, clutter=6, num_colours=4, num_shapes=4,
              question_types=["relate"], val_size=400, relate_sides=sides)
    dm, plain = small_dm(**kw, relate_axes="xy"), small_dm(**kw)
    scenes = dm.val_set.scenes(range(400))
    vertical = np.array([(" above " in q or " below " in q) for q in scenes.question])
    assert 150 < vertical.sum() < 250
    assert sum(" below " in q for q in scenes.question) == (0 if sides == "left" else pytest.approx(100, abs=45))
    yes = np.array(scenes.answer) == "yes"
    assert 0.35 < yes[vertical].mean() < 0.65 and 0.35 < yes[~vertical].mean() < 0.65
    for i in range(400):
        assert answer_question(scenes[i], scenes.question[i], 6) == scenes.answer[i], scenes.question[i]
        if vertical[i]:
            a, c = scenes.asks.subject[i], scenes.asks.other[i]
            assert scenes.place[i, a] // 6 != scenes.place[i, c] // 6  # apart along y, whatever their columns
    assert {"above", "below"} <= set(dm.tokenizer.itos) and not {"above", "below"} & set(plain.tokenizer.itos)
    assert not any(" above " in q or " below " in q for q in plain.val_set.scenes(range(400)).question)


def test_relate_sides_is_checked():
    with pytest.raises(experiment.UserError, match="relate_sides"):
        experiment.plan({"model": "han", "data": "vqa_scenes", "relate_sides": "up"})
