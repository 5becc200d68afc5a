import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from attention_lightning.run import commands as experiment
from attention_lightning.attention import Attention
from attention_lightning.models.han import HAN, QTYPE_NAMES, FlatHead, PairHead
from attention_lightning.nn.selection import pack_cells, presence
from datamodules.scenes import QTYPES
from datamodules.vqa_scenes import VQAScenesDataModule, collate

SELECTIONS = ("topk", "adaptive", "soft", "none")


@pytest.fixture(scope="module")
def dm() -> VQAScenesDataModule:
    d = VQAScenesDataModule(canvas_size=32, train_size=64, val_size=32, test_size=32, batch_size=16)
    d.setup()
    return d


@pytest.fixture(scope="module")
def batch(dm):
    return collate([dm.val_set[i] for i in range(12)])


def make(dm, **kw) -> HAN:
    # 32px with strides (2, 2, 1): an 8x8 grid of 64 cells
    return HAN(**dm.model_kwargs(), encoder_channels=(8, 16, 16), fusion_dim=32, head_hidden=32, embed_dim=8, **kw)


def test_k_larger_than_the_grid_names_the_flag(dm):
    with pytest.raises(ValueError, match=r"--k=65 exceeds the 64 cells.*--k <= 64"):
        make(dm, selection="topk", k=65)
    assert make(dm, k=64).k == 64 and make(dm, k=0.25).k == 16
    with pytest.raises(ValueError, match="--selection"):
        make(dm, selection="hard")


@pytest.mark.parametrize("head", ["set", "pairs", "flat"])
@pytest.mark.parametrize("selection", SELECTIONS)
def test_shapes_and_attention(dm, batch, selection, head):
    model = make(dm, selection=selection, k=10, head=head).eval()
    logits = model(*model.inputs(batch))
    assert logits.shape == (12, dm.num_classes)
    att = model.attention(batch)
    assert isinstance(att, Attention)
    assert att.maps.shape == (12, 1, 8, 8) and att.probs.shape == (12, 1, dm.num_classes)
    assert att.captions == batch.text and torch.equal(att.labels, batch.answer)
    if selection == "topk":
        assert att.maps.flatten(1).sum(1).tolist() == [10.0] * 12
    if selection == "none":
        assert (att.maps == 1).all()


def test_topk_keeps_the_k_largest_presence_cells_of_the_fused_features(dm, batch):
    model = make(dm, selection="topk", k=7).eval()
    cells, _ = model.encode(*model.inputs(batch))  # (B, 64, C)
    mask = model.choose(cells).mask
    norms = cells.norm(dim=-1)
    assert mask.sum(1).tolist() == [7] * 12
    for b in range(12):
        assert norms[b][mask[b]].min() > norms[b][~mask[b]].max()


@pytest.mark.parametrize("head", ["set", "pairs", "flat"])
@pytest.mark.parametrize("selection", ["topk", "adaptive"])
def test_gradients_reach_both_encoders_through_selected_cells_only(dm, batch, selection, head):
    model = make(dm, selection=selection, k=9, head=head)
    cells, q = model.encode(*model.inputs(batch))
    cells.retain_grad()
    sel = model.choose(cells)
    torch.nn.functional.cross_entropy(model.answer(cells, q, sel), batch.answer).backward()
    per_cell = cells.grad.abs().sum(-1)  # (B, N)
    assert (per_cell[~sel.mask] == 0).all()          # unselected cells get exactly no gradient
    assert (per_cell[sel.mask] > 0).float().mean() > 0.9  # selected ones do (a dead ReLU may zero a few)
    for enc in (model.image_encoder, model.question_encoder):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


@pytest.mark.parametrize("selection", ["topk", "adaptive"])
def test_presence_grad_keeps_the_forward_and_adds_the_weights_gradient_along_each_kept_cell(dm, batch, selection):
    plain = make(dm, selection=selection, k=9)
    st = make(dm, selection=selection, k=9, presence_grad=True)
    st.load_state_dict(plain.state_dict())
    with torch.no_grad():
        cells0, q = plain.encode(*plain.inputs(batch))  # (B, N, C), (B, C)
    grads, logits = [], []
    for model in (plain, st):
        cells = cells0.clone().requires_grad_(True)
        out = model.answer(cells, q, model.choose(cells))
        torch.nn.functional.cross_entropy(out, batch.answer).backward()
        grads.append(cells.grad)
        logits.append(out.detach())
    assert torch.equal(logits[0], logits[1])  # the forward pass is unchanged, bit for bit
    sel = plain.choose(cells0)
    assert (grads[1][~sel.mask] == 0).all()  # dropped cells still get no gradient
    # dL/dw of each kept cell's weight, read off the head directly
    xy = plain.cell_xy(cells0.device, cells0.dtype).expand(cells0.shape[0], -1, -1)
    packed, valid, order = pack_cells(torch.cat([cells0, xy], dim=-1), sel.mask, sel.count)
    w = valid.to(cells0.dtype).requires_grad_(True)
    torch.nn.functional.cross_entropy(plain.head(packed[..., :-2], packed[..., -2:], w, q), batch.answer).backward()
    dw = torch.zeros(sel.mask.shape).scatter(1, order, w.grad * valid)  # (B, N), 0 off the kept cells
    # the added gradient is dL/dw_i * d|c_i|/dc_i = dL/dw_i * c_i / |c_i| on every kept cell
    expected = dw[..., None] * cells0 / cells0.norm(dim=-1, keepdim=True)
    torch.testing.assert_close((grads[1] - grads[0])[sel.mask], expected[sel.mask], rtol=1e-4, atol=1e-6)
    assert expected[sel.mask].abs().sum() > 0


def test_presence_grad_needs_a_hard_selection(dm):
    for selection in ("soft", "none"):
        with pytest.raises(ValueError, match="--presence_grad=true needs --selection=topk or adaptive"):
            make(dm, selection=selection, presence_grad=True)


def test_soft_gradient_reaches_every_cell(dm, batch):
    model = make(dm, selection="soft")
    cells, q = model.encode(*model.inputs(batch))
    cells.retain_grad()
    model.answer(cells, q, model.choose(cells)).logsumexp(-1).sum().backward()
    assert (cells.grad.abs().sum(-1) > 0).all()


@pytest.mark.parametrize("head", ["set", "pairs", "flat"])
@pytest.mark.parametrize("selection", ["topk", "adaptive"])
def test_unselected_cells_do_not_change_the_answer(dm, batch, selection, head):
    model = make(dm, selection=selection, k=9, head=head).eval()
    with torch.no_grad():
        cells, q = model.encode(*model.inputs(batch))
        sel = model.choose(cells)
        # shrink the unselected cells towards 0 (their presence only drops, so the selection holds) and scramble
        other = cells * 0.5 + 0.1 * torch.randn_like(cells) * presence(cells)[..., None].min() / cells.shape[-1]
        changed = torch.where(sel.mask[..., None], cells, other * 0.3)
        sel2 = model.choose(changed)
        assert torch.equal(sel.mask, sel2.mask)
        torch.testing.assert_close(model.answer(changed, q, sel2), model.answer(cells, q, sel))


def test_adaptive_count_varies_with_the_input(dm, batch):
    model = make(dm, selection="adaptive").eval()
    with torch.no_grad():
        cells, _ = model.encode(*model.inputs(batch))
        peaky = cells.clone()
        peaky[0, 5] *= 50.0  # one cell dominates the softmax of example 0
        counts = model.choose(peaky).mask.sum(1)
    assert counts[0] == 1 and counts[1:].max() > 1


def test_adaptive_min_cells_is_a_floor_on_the_count_of_the_model(dm, batch):
    with torch.no_grad():
        plain, floored = make(dm, selection="adaptive").eval(), make(dm, selection="adaptive", min_cells=5).eval()
        cells, _ = plain.encode(*plain.inputs(batch))
        peaky = cells.clone()
        peaky[0, 5] *= 50.0  # example 0: one cell dominates, so only the floor keeps more
        a, b = plain.choose(peaky).mask, floored.choose(peaky).mask
    order = presence(peaky).argsort(dim=1, descending=True)  # (B, N)
    assert b.sum(1).min() == 5 and b[0].sum() == 5 and b[0, order[0, :5]].all()
    assert (b | a).eq(b).all() and (b.sum(1) > 5).any()  # the floor adds cells, never drops one the softmax keeps
    with pytest.raises(ValueError, match="--min_cells=5 is adaptive's floor"):
        make(dm, selection="topk", k=4, min_cells=5)
    with pytest.raises(ValueError, match="--min_cells=65 must be a cell count between 1 and the 64 cells"):
        make(dm, selection="adaptive", min_cells=65)


def test_adaptive_scores_zscore_makes_the_models_count_independent_of_presence_scale(dm, batch):
    raw, z = make(dm, selection="adaptive").eval(), make(dm, selection="adaptive", adaptive_scores="zscore").eval()
    with torch.no_grad():
        cells, _ = raw.encode(*raw.inputs(batch))
        counts = {s: (raw.choose(s * cells).mask.sum(1), z.choose(s * cells).mask.sum(1)) for s in (1.0, 30.0)}
    assert torch.equal(counts[1.0][1], counts[30.0][1])  # z-scores: the same cells at any scale
    assert (counts[30.0][0] <= counts[1.0][0]).all() and (counts[30.0][0] < counts[1.0][0]).any()  # raw: fewer
    with pytest.raises(ValueError, match="--adaptive_scores=zscore is what adaptive thresholds"):
        make(dm, selection="topk", k=4, adaptive_scores="zscore")


@pytest.mark.slow
@pytest.mark.parametrize("rnn", ["lstm", "bow"])
def test_loss_decreases_on_a_fixed_batch(dm, batch, rnn):
    torch.manual_seed(0)
    model = make(dm, selection="topk", k=16, rnn=rnn)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        terms, _ = model.loss_terms(batch, "train")
        opt.zero_grad()
        terms["ce"].backward()
        opt.step()
        losses.append(terms["ce"].item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("selection,k", [("topk", 16), ("adaptive", 16), ("soft", 16)])
def test_attended_fraction_is_logged(dm, selection, k):
    model = make(dm, selection=selection, k=k)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    m = trainer.callback_metrics
    if selection == "topk":
        assert m["val/attended_mean"].item() == pytest.approx(16 / 64) and m["val/attended_std"].item() == 0
    elif selection == "soft":
        assert m["val/attended_mean"].item() == 1.0
    else:
        assert 0 < m["val/attended_mean"].item() <= 1
    assert "train/attended_mean" in m


@pytest.mark.parametrize("selection", ["topk", "adaptive"])
def test_cli_fast_dev_run(tmp_path, selection):
    summary = experiment.fit({
        "model": "han", "data": "vqa_scenes", "selection": selection, "k": 0.25, "canvas_size": 32,
        "train_size": 64, "val_size": 32, "test_size": 32, "batch_size": 16, "fusion_dim": 32, "head_hidden": 32,
        "fast_dev_run": 1, "default_root_dir": str(tmp_path), "logger": "none", "enable_progress_bar": False,
    })
    assert summary["global_step"] == 1


def test_patch_encoder_gives_one_cell_per_place_that_sees_only_its_patch():
    d = VQAScenesDataModule(canvas_size=24, train_size=8, val_size=8, test_size=8)
    d.setup()
    model = HAN(**d.model_kwargs(), encoder_channels=(8, 8), encoder_strides=(8, 1), encoder_kernels=(8, 1),
                fusion_dim=16, head_hidden=16, embed_dim=8).eval()
    assert model.grid_hw == (3, 3) and model.num_cells == 9  # 24px in 8px patches: the 3x3 places
    images = torch.rand(1, 3, 24, 24)
    changed = images.clone()
    changed[:, :, 8:16, 16:24] = 0.0  # the middle right place only
    a, b = model.image_encoder(images), model.image_encoder(changed)  # (1, 8, 3, 3)
    diff = (a - b).abs().amax(dim=1)[0]  # (3, 3)
    assert diff[1, 2] > 0 and (diff.flatten()[torch.arange(9) != 5] == 0).all()
    with pytest.raises(ValueError, match="--encoder_kernels"):
        HAN(**d.model_kwargs(), encoder_channels=(8, 8), encoder_strides=(8, 1), encoder_kernels=(8,))


def test_question_type_names_follow_the_datamodule():
    assert QTYPE_NAMES == QTYPES


def head_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded head inputs: cells (2, 3, 4), their xy (2, 3, 2) and the questions (2, 4)."""
    torch.manual_seed(0)
    return torch.randn(2, 3, 4), torch.rand(2, 3, 2), torch.randn(2, 4)


def test_pair_head_sums_a_function_of_every_ordered_pair_of_kept_cells():
    """Hand check against the definition: sum over ordered pairs (i, j) of valid cells, self-pairs included."""
    cells, xy, q = head_inputs()
    head = PairHead(4, 4, 8, 3, num_cells=5).eval()
    weights = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    with torch.no_grad():
        logits = head(cells, xy, weights, q)
        for b in range(2):
            u = torch.cat([cells[b], cells[b] * q[b], xy[b]], -1)  # (3, 10)
            total = sum(head.g(torch.relu(head.first(u[i]) + head.second(u[j]) + head.question(q[b])))
                        for i in range(3) for j in range(3) if weights[b, i] and weights[b, j])
            expected = head.f(torch.cat([total / 5, q[b]]))
            torch.testing.assert_close(logits[b], expected)


def test_flat_head_reads_each_slot_with_its_own_weights_and_zeroes_the_slots_past_the_kept_cells():
    """Hand check: slot i of [cell, cell * q, xy] times its weight, padded with zero slots, through one MLP."""
    cells, xy, q = head_inputs()
    head = FlatHead(4, 4, 8, 3, num_slots=4).eval()
    weights = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.5, 1.0]])
    with torch.no_grad():
        logits = head(cells, xy, weights, q)
        for b in range(2):
            u = torch.cat([cells[b], cells[b] * q[b], xy[b]], -1) * weights[b, :, None]  # (3, 10)
            flat = torch.cat([u.flatten(), torch.zeros(10)])  # the fourth slot is empty
            torch.testing.assert_close(logits[b], head.f(head.slots(flat) + head.question(q[b])))
        swapped = head(cells.flip(1), xy.flip(1), weights.flip(1), q)  # same cells in other slots: other answer
        assert not torch.allclose(swapped, logits)
        with pytest.raises(ValueError, match="5 cells reached a flat head of 4 slots"):
            head(torch.randn(2, 5, 4), torch.rand(2, 5, 2), torch.ones(2, 5), q)


def test_flat_head_has_k_slots_under_topk_and_one_per_cell_otherwise(dm):
    assert make(dm, selection="topk", k=5, head="flat").head.num_slots == 5
    for selection in ("adaptive", "soft", "none"):
        assert make(dm, selection=selection, head="flat").head.num_slots == 64


@pytest.mark.parametrize("selection", ["topk", "adaptive"])
def test_slot_order_fills_the_flat_heads_slots_row_by_row_or_column_by_column(dm, selection):
    """The same four kept cells reach the flat head; --slot_order decides which slot each fills (both: the row
    order's block of slots, then the column order's; under adaptive each block has a slot for every cell)."""
    kept = [(0, 5), (2, 1), (2, 6), (6, 0)]  # (row, col) on the 8x8 grid
    by_row, by_col = kept, sorted(kept, key=lambda rc: (rc[1], rc[0]))
    block = 4 if selection == "topk" else 64
    both = by_row + [None] * (block - 4) + by_col  # None: an empty slot of the first block
    for order, expected in (("row", by_row), ("column", by_col), ("both", both)):
        model = make(dm, selection=selection, k=4, head="flat", slot_order=order).eval()
        cells = torch.zeros(1, 64, 32)  # (B, N, C): presence (L2 norm) is zero except at the kept cells
        for r, c in kept:
            cells[0, 8 * r + c] = 1.0
        seen = {}
        model.head.register_forward_hook(lambda mod, args, out: seen.update(cells=args[0], xy=args[1], w=args[2]))
        with torch.no_grad():
            model.answer(cells, torch.randn(1, 32), model.choose(cells))
        xy = model.cell_xy(cells.device, cells.dtype)  # (N, 2)
        full = [i for i, rc in enumerate(expected) if rc is not None]  # the slots that hold a kept cell
        torch.testing.assert_close(seen["xy"][0, full], xy[[8 * r + c for r, c in (expected[i] for i in full)]])
        assert (seen["w"][0, full] > 0).all() and (seen["w"][0].count_nonzero() == len(full))
        assert model.head.num_slots == block * (2 if order == "both" else 1)


def test_slot_order_other_than_row_needs_the_flat_head(dm):
    for kw in ({"head": "set"}, {"head": "pairs"}, {"head": "set", "selection": "none"}):
        with pytest.raises(ValueError, match="--slot_order=column orders the slots of --head=flat.*--slot_order=row"):
            make(dm, **{"selection": "topk", "k": 4, **kw, "slot_order": "column"})


def test_both_slot_orders_over_every_cell_give_each_cell_two_slots(dm, batch):
    """With every cell kept, --slot_order=both is the row-order model whose first layer reads each cell through the
    sum of its two slots' weights."""
    torch.manual_seed(0)
    row, two = make(dm, selection="none", head="flat").eval(), make(dm, selection="none", head="flat", slot_order="both")
    two = two.eval()
    with torch.no_grad():
        width = row.head.slots.in_features // row.num_cells
        w = two.head.slots.weight.view(-1, 2, row.num_cells, width)  # (hidden, order, S, 2C + 2)
        first, second = w[:, 0], w[:, 1, two.slot_perm[1].argsort()]  # each order's weights, by cell
        state = {k: v for k, v in two.state_dict().items() if k != "head.slots.weight"}
        row.load_state_dict({**state, "head.slots.weight": (first + second).reshape(-1, row.num_cells * width)})
        torch.testing.assert_close(two(*two.inputs(batch)), row(*row.inputs(batch)))


@pytest.mark.parametrize("selection", ["none", "soft"])
def test_column_order_over_every_cell_only_relabels_the_flat_heads_slots(dm, batch, selection):
    """With every cell kept, column order is the row-order model with its slot weights permuted: same logits."""
    torch.manual_seed(0)
    row = make(dm, selection=selection, head="flat").eval()
    column = make(dm, selection=selection, head="flat", slot_order="column").eval()
    column.load_state_dict(row.state_dict())
    with torch.no_grad():
        a, b = row(*row.inputs(batch)), column(*column.inputs(batch))
        assert not torch.allclose(a, b)  # same weights, cells in other slots
        width = column.head.slots.in_features // column.num_cells  # each slot's columns in the first layer
        w = column.head.slots.weight.view(-1, column.num_cells, width)  # (hidden, S, 2C + 2)
        # slot j of the column model holds cell perm[j], so it must carry the row model's weights of that cell
        column.head.slots.weight.copy_(w[:, column.slot_perm].reshape(-1, column.num_cells * width))
        torch.testing.assert_close(column(*column.inputs(batch)), a)


def test_blind_answers_from_the_question_alone(dm, batch):
    model = make(dm, selection="topk", k=9, blind=True, head="pairs").eval()
    images, tokens, lengths = model.inputs(batch)
    with torch.no_grad():
        a = model(images, tokens, lengths)
        b = model(torch.rand_like(images), tokens, lengths)
        c = model(images, tokens.flip(0), lengths.flip(0))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    seeing = make(dm, selection="topk", k=9, head="pairs").eval()
    with torch.no_grad():
        assert not torch.allclose(seeing(images, tokens, lengths), seeing(torch.rand_like(images), tokens, lengths))


def test_accuracy_per_question_type_is_logged_and_matches_the_predictions(dm):
    model = make(dm, selection="topk", k=16, head="pairs")
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    m = trainer.callback_metrics
    model.eval()
    right = {q: [] for q in QTYPE_NAMES}
    with torch.no_grad():
        for i, b in enumerate(dm.val_dataloader()):
            if i == 2:
                break
            hit = (model(*model.inputs(b)).argmax(-1) == b.answer).tolist()
            for h, t in zip(hit, b.qtype.tolist()):
                right[QTYPE_NAMES[t]].append(h)
    for name, hits in right.items():
        if hits:
            assert m[f"val/acc_{name}"].item() == pytest.approx(sum(hits) / len(hits))
        else:
            assert f"val/acc_{name}" not in m
    assert "train/acc_exist" not in m


def test_gate_fusion_gives_blank_cells_zero_presence_so_topk_starts_on_what_is_drawn():
    d = VQAScenesDataModule(canvas_size=48, grid=6, min_objects=5, max_objects=9, clutter=0, num_colours=4,
                            num_shapes=4, question_types=["exist", "count", "relate"], train_size=8, val_size=64,
                            test_size=8)
    d.setup()
    b = collate(d.val_set.__getitems__(list(range(64))))
    occupied = torch.zeros(64, 36, dtype=torch.bool)  # (B, N) the places that hold an object
    scenes = d.val_set.scenes(range(64))
    real = np.arange(scenes.place.shape[1])[None] < scenes.count[:, None]  # (B, M) real object slots
    occupied[torch.as_tensor(np.nonzero(real)[0]), torch.as_tensor(scenes.place[real])] = True
    model = HAN(**d.model_kwargs(), selection="topk", k=4, head="pairs", fusion="gate", encoder_norm="none",
                encoder_channels=(16, 16), encoder_kernels=(8, 1), encoder_strides=(8, 1), fusion_dim=16,
                head_hidden=16).eval()
    with torch.no_grad():
        cells, _ = model.encode(*model.inputs(b))
        mask = model.choose(cells).mask
    assert (presence(cells)[~occupied] == 0).all() and (presence(cells)[occupied] > 0).float().mean() > 0.95
    assert (mask & occupied).sum() / mask.sum() > 0.95  # an untrained HAN already keeps objects, not blanks
    with pytest.raises(ValueError, match="--fusion"):
        make(d, fusion="concat")


def test_bow_question_encoder_ignores_padding_and_keeps_word_order():
    """``rnn=bow``: a question's code is the same however much padding follows it, and the same words in
    another order give another code (each (position, word) pair has its own embedding)."""
    from attention_lightning.models.han import QuestionEncoder

    torch.manual_seed(0)
    enc = QuestionEncoder(vocab_size=10, embed_dim=6, hidden=5, rnn="bow")
    q = torch.tensor([[3, 4, 5, 0, 0], [5, 4, 3, 0, 0]])  # (B, L): one question and its words reversed
    lengths = torch.tensor([3, 3])
    out = enc(q, lengths)  # (B, C)
    assert out.shape == (2, 5)
    assert torch.allclose(enc(q[:, :3], lengths), out, atol=1e-6)  # padding adds nothing
    assert not torch.allclose(out[0], out[1], atol=1e-3)  # order matters
    # by hand: linear(sum over the words of embed(word) + position(i))
    want = enc.out(enc.embed(torch.tensor([0 * 10 + 3, 1 * 10 + 4, 2 * 10 + 5])).sum(0))
    assert torch.allclose(out[0], want, atol=1e-6)
    out[0].sum().backward()  # only the rows of (0, 3), (1, 4), (2, 5) get a gradient
    touched = enc.embed.weight.grad.abs().sum(1).nonzero().flatten().tolist()
    assert touched == [3, 14, 25]



@pytest.mark.parametrize("preset,extra", [
    ("han_vqa_6x6", {}), ("han_vqa_6x6", {"selection": "none"}), ("han_vqa_6x6", {"blind": True}),
    ("han_vqa_6x6", {"head": "set", "k": 4, "slot_order": "row"}),  # the previous preset, as its comment says
    ("adahan_vqa_6x6", {}), ("adahan_vqa_6x6", {"selection": "none", "adaptive_scores": "presence"}),
    ("adahan_vqa_6x6", {"head": "set", "slot_order": "row", "adaptive_scores": "presence"}),
])
def test_the_vqa_presets_and_their_documented_baselines_build(preset, extra):
    """The presets' comments give these flags for the baselines and the previous presets: each must build."""
    from pathlib import Path

    from attention_lightning.run.plan import build_datamodule, build_model, plan

    config = Path(__file__).resolve().parents[2] / "configs" / f"{preset}.yaml"
    p = plan({"config": str(config), **extra})
    model = build_model(p, build_datamodule(p))
    assert model.num_cells == 36 and model.hparams.selection == extra.get("selection", p.model_kwargs["selection"])
    for flag, value in extra.items():
        assert model.hparams[flag] == value
