import math

import pytest
import torch

from attention_lightning.nn.selection import (
    adaptive_select, pack_cells, presence, resolve_k, select, standardize, topk_select,
)


def test_presence_is_l2_norm_per_cell():
    cells = torch.tensor([[[3.0, 4.0], [0.0, -2.0], [1.0, 1.0]]])  # (1, 3, 2)
    torch.testing.assert_close(presence(cells), torch.tensor([[5.0, 2.0, math.sqrt(2)]]))


def test_topk_selects_exactly_the_k_largest_norm_cells():
    cells = torch.randn(4, 20, 8)
    scores = presence(cells)
    idx, mask = topk_select(scores, 5)
    assert idx.shape == (4, 5) and mask.shape == (4, 20)
    assert mask.sum(1).tolist() == [5, 5, 5, 5]
    for b in range(4):
        expected = set(scores[b].argsort(descending=True)[:5].tolist())
        assert set(idx[b].tolist()) == expected
        assert set(mask[b].nonzero().flatten().tolist()) == expected
        assert scores[b][mask[b]].min() > scores[b][~mask[b]].max()


def test_topk_hand_case():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [4.0, 1.0, 3.0, 2.0]])
    idx, mask = topk_select(scores, 2)
    assert idx.tolist() == [[1, 3], [0, 2]]
    assert mask.tolist() == [[False, True, False, True], [True, False, True, False]]


def test_resolve_k_counts_and_fractions():
    assert resolve_k(16, 64) == 16
    assert resolve_k(0.25, 64) == 16
    assert resolve_k(1.0, 64) == 64
    assert resolve_k(0.001, 64) == 1
    with pytest.raises(ValueError, match=r"^k=65 exceeds the 64 cells.*use k <= 64"):
        resolve_k(65, 64)
    for bad in (0, -1, 1.5, 0.0, "3"):
        with pytest.raises(ValueError, match="^k="):
            resolve_k(bad, 64)


def test_adaptive_selects_a_different_count_on_inputs_built_to_differ():
    # the softmax of log-probabilities is the probabilities: row 0 has two cells above 1/4, row 1 one
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.4, 0.2, 0.2, 0.2]])
    mask = adaptive_select(probs.log())
    assert mask.tolist() == [[True, True, False, False], [True, False, False, False]]
    assert mask.sum(1).tolist() == [2, 1]


def test_adaptive_softmax_is_per_example_and_shift_invariant():
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    # adding a constant to one row must not change that row's selection (softmax over cells, not the batch)
    batch = torch.cat([scores, scores + 100.0, torch.zeros(1, 4)])
    mask = adaptive_select(batch)
    assert mask[0].tolist() == mask[1].tolist()
    p = scores.softmax(1)[0]
    assert mask[0].tolist() == (p > 0.25).tolist()
    # equal scores: nothing exceeds 1/N, the top cell is kept so no example is empty
    assert mask[2].sum() == 1


def test_adaptive_threshold():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert adaptive_select(probs.log(), threshold=0.1).tolist() == [[True, True, True, False]]
    assert adaptive_select(probs.log(), threshold=0.4).tolist() == [[True, False, False, False]]
    with pytest.raises(ValueError, match=r"^threshold=1.5 must be in \[0, 1\)"):
        adaptive_select(probs, threshold=1.5)


def test_adaptive_min_count_keeps_the_top_cells_and_the_threshold_adds_more():
    # row 0: 0.5 and 0.3 exceed 1/5, so a floor of 1 or 2 changes nothing and a floor of 3 adds the next best
    # (0.12, not the later 0.04s); row 1 is flat: nothing exceeds 1/5, only the floor decides how many
    probs = torch.tensor([[0.04, 0.5, 0.12, 0.3, 0.04], [0.2, 0.2, 0.2, 0.2, 0.2]])
    one = adaptive_select(probs.log())
    assert one.tolist()[0] == [False, True, False, True, False] and one.sum(1).tolist() == [2, 1]
    assert adaptive_select(probs.log(), min_count=2).tolist()[0] == [False, True, False, True, False]
    three = adaptive_select(probs.log(), min_count=3)
    assert three.tolist()[0] == [False, True, True, True, False]
    assert three.sum(1).tolist() == [3, 3]
    # the floor is a minimum, not a count: a row with more cells above the threshold keeps them all
    assert select(probs.log(), "adaptive", min_count=2).mask.sum(1).tolist() == [2, 2]
    for bad in (0, 6, 2.0, True):
        with pytest.raises(ValueError, match=r"^min_count=.* must be a cell count between 1 and the 5 cells"):
            adaptive_select(probs.log(), min_count=bad)


def test_adaptive_on_zscores_keeps_the_same_cells_at_any_scale_of_presence():
    # one cell at 2, two at 1, 33 at 0 (times a scale). Raw presence at scale 1: softmax e^2 / 45.8 = .161 and
    # e / 45.8 = .059 pass 1/36, e^0 / 45.8 = .022 does not: 3 kept; at scale 5 the two at 5 give
    # e^5 / (e^10 + 2 e^5 + 33) = .0066: only the top cell. Z-scores (mean 1/9, std .398): 4.74, 2.23, -.28, whose
    # softmax is .724, .059, .0048 at any scale: the same 3 cells.
    base = torch.zeros(1, 36)
    base[0, 17], base[0, [4, 30]] = 2.0, 1.0
    assert select(base, "adaptive").mask.nonzero()[:, 1].tolist() == [4, 17, 30]
    assert select(5.0 * base, "adaptive").mask.nonzero()[:, 1].tolist() == [17]
    for scale in (0.01, 1.0, 5.0, 1000.0):
        z = select(scale * base + 3.0, "adaptive", zscore=True)
        assert z.mask.nonzero()[:, 1].tolist() == [4, 17, 30], scale
    expect = torch.tensor([2 - 1 / 9, 1 - 1 / 9, -1 / 9]) / (5 / 35 + 1 / 63) ** 0.5  # (x - mean) / unbiased std
    torch.testing.assert_close(standardize(base)[0, [17, 4, 0]], expect)
    flat = select(torch.full((2, 36), 3.0), "adaptive", zscore=True)  # no spread: only the top cell (floor 1)
    assert flat.mask.sum(1).tolist() == [1, 1]


def test_soft_and_none_baselines():
    scores = torch.randn(3, 6)
    soft = select(scores, "soft")
    torch.testing.assert_close(soft.weights, scores.softmax(1))
    torch.testing.assert_close(soft.weights.sum(1), torch.ones(3))
    assert soft.mask.all()
    none = select(scores, "none")
    assert none.mask.all() and (none.weights == 1).all()
    hard = select(scores, "topk", k=2)
    assert (hard.weights == hard.mask.float()).all()
    with pytest.raises(ValueError, match="^mode='sparse' is not supported"):
        select(scores, "sparse")


def test_pack_cells_moves_selected_cells_to_the_front():
    cells = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)  # cell value = b*4 + n
    mask = torch.tensor([[True, False, True, False], [False, False, False, True]])
    packed, valid, order = pack_cells(cells, mask)
    assert packed.shape == (2, 2, 1)
    assert valid.tolist() == [[True, True], [True, False]]
    assert packed[0, :, 0].tolist() == [0.0, 2.0]
    assert packed[1, 0, 0].item() == 7.0
    assert order[0].tolist() == [0, 2] and order[1, 0].item() == 3


def test_gradient_reaches_selected_cells_only():
    cells = torch.randn(2, 10, 4, requires_grad=True)
    mask = topk_select(presence(cells), 3)[1]
    packed, valid, _ = pack_cells(cells, mask)
    (packed * valid[..., None]).pow(2).sum().backward()
    per_cell = cells.grad.abs().sum(-1)  # (2, 10)
    assert (per_cell[mask] > 0).all()
    assert (per_cell[~mask] == 0).all()


def test_topk_selection_carries_its_fixed_count():
    scores = torch.randn(3, 9)
    assert select(scores, "topk", k=4).count == 4
    assert select(scores, "adaptive").count is None
    assert select(scores, "soft").count is None


def test_pack_cells_with_max_count_matches_the_read_back_count():
    cells = torch.randn(3, 9, 5)
    sel = select(presence(cells), "topk", k=4)
    for got, want in zip(pack_cells(cells, sel.mask, sel.count), pack_cells(cells, sel.mask)):
        assert torch.equal(got, want)
    # AdaHAN packed into all N cells: the first M columns as read back, then padding only
    mask = adaptive_select(presence(cells))
    m = int(mask.sum(1).max())
    packed, valid, order = pack_cells(cells, mask, max_count=9)
    ref_packed, ref_valid, ref_order = pack_cells(cells, mask)
    assert packed.shape == (3, 9, 5) and ref_packed.shape == (3, m, 5)
    assert torch.equal(packed[:, :m], ref_packed) and torch.equal(valid[:, :m], ref_valid)
    assert not valid[:, m:].any()
    with pytest.raises(ValueError, match="max_count=10 must be between 1 and the 9 cells"):
        pack_cells(cells, mask, max_count=10)


def test_topk_packing_traces_without_a_graph_break():
    def packed_topk(cells, fixed):
        sel = select(presence(cells), "topk", k=3)
        packed, valid, _ = pack_cells(cells, sel.mask, sel.count if fixed else None)
        return (packed * valid[..., None]).sum()

    cells = torch.randn(2, 9, 4)
    torch._dynamo.reset()
    assert torch._dynamo.explain(packed_topk)(cells, True).graph_break_count == 0
    torch._dynamo.reset()
    # reading the count back (AdaHAN's way) breaks the graph: the case the fixed count avoids
    assert torch._dynamo.explain(packed_topk)(cells, False).graph_break_count >= 1
