"""SID quality metrics on hand-worked cases and against slow references."""

from __future__ import annotations

import numpy as np
import pytest
import sidkit as sk
from hypothesis import given, settings
from hypothesis import strategies as st
from sidkit.metrics import (
    code_usage,
    embedding_hit_rate,
    gini,
    prefix_collision_rates,
    report,
    spearman,
    top_k_neighbours,
)


def test_gini_hand_worked():
    assert gini([1, 1, 1, 1]) == 0.0
    assert gini([0, 0, 0, 4]) == pytest.approx(0.75)
    assert gini([]) == 0.0 and gini([0, 0]) == 0.0
    for bad in ([-1, 1], [1.0, np.nan], [np.inf, 1.0]):  # checked before the zero-sum shortcut
        with pytest.raises(ValueError, match="counts: expected finite, non-negative values"):
            gini(bad)
    x = np.random.default_rng(0).integers(0, 50, 40)
    slow = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
    assert gini(x) == pytest.approx(slow)


def test_code_usage_and_prefix_collisions_hand_worked():
    codes = np.array([[0, 0], [0, 1], [1, 1], [1, 1]])
    levels = code_usage(codes, (4, 2))
    assert levels[0] == {"utilisation": 0.5, "entropy": 1.0, "perplexity": 2.0, "gini": 0.5}
    p = np.array([0.25, 0.75])
    assert levels[1]["entropy"] == pytest.approx(-(p * np.log2(p)).sum())
    assert prefix_collision_rates(codes) == [1.0, 0.5]
    with pytest.raises(ValueError, match=r"codes: expected 0 <= code < 2 at level 1 \(sizes\)"):
        code_usage(np.array([[0, 0], [1, 5]]), (2, 2))  # a code past K would dilute utilisation
    with pytest.raises(ValueError, match="sizes: expected 2 level sizes to match codes, got 1"):
        code_usage(codes, (4,))
    from sidkit.metrics import collisions

    for f in (code_usage, prefix_collision_rates, collisions):
        args = (np.zeros(4, np.int64),) if f is not code_usage else (np.zeros(4, np.int64), (2,))
        with pytest.raises(ValueError, match=r"codes: expected a 2-D array \(N, L\), got shape \(4,\)"):
            f(*args)
        fargs = (codes.astype(float),) if f is not code_usage else (codes.astype(float), (4, 2))
        with pytest.raises(TypeError, match="codes: expected integer codes, got dtype float64"):
            f(*fargs)


def test_spearman_and_neighbours_against_references(rng):
    a = rng.standard_normal(200)
    assert spearman(a, np.exp(a)) == pytest.approx(1.0)
    b = np.round(a + rng.standard_normal(200), 1)
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.array([np.mean(np.flatnonzero(np.sort(b) == v)) for v in b])  # tie-averaged ranks
    assert spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    x = rng.standard_normal((300, 8)).astype(np.float32)
    nbrs = top_k_neighbours(x, 5, block=64)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_array_equal(nbrs, np.argsort(-sims, axis=1, kind="stable")[:, :5])
    rows = np.array([299, 0, 17, 17])  # any query rows, any order, repeats
    np.testing.assert_array_equal(top_k_neighbours(x, 5, block=3, rows=rows), nbrs[rows])


def test_embedding_hit_rate_against_brute_force(rng):
    emb = rng.standard_normal((400, 6)).astype(np.float32)
    seqs = [rng.integers(0, 400, size=rng.integers(1, 30)) for _ in range(200)]
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = u @ u.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :7]
    pairs = [(s[:-1][-20:], s[-1]) for s in seqs if len(s) >= 2]
    expected = np.mean([any(t in top[h] for h in hist) for hist, t in pairs])
    assert embedding_hit_rate(emb, seqs, k=7) == pytest.approx(expected)
    assert embedding_hit_rate(emb, [np.array([3])], k=7) == 0.0  # no pair at all


def test_embedding_hit_rate_hand_worked():
    # Items 0 and 1 point the same way, 2 and 3 another; k = 1 neighbour each.
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    seqs = [np.array([0, 1]), np.array([0, 2]), np.array([3, 0, 2]), np.array([1])]
    # (0 -> 1) hit; (0 -> 2) miss; ([3, 0] -> 2) hit through 3; the 1-item sequence is skipped.
    assert embedding_hit_rate(emb, seqs, k=1) == pytest.approx(2 / 3)


def test_report_is_consistent(rng):
    x = rng.standard_normal((1500, 16)).astype(np.float32)
    cb = sk.RQKMeans(3, 8, iters=5, verbose=False).fit(x)
    codes = cb.encode(x)
    seqs = [rng.integers(0, 1500, size=5) for _ in range(200)]
    r = report(x, codes, cb, sequences=seqs, k=10, hit_k=30, sample=300)
    assert r["collisions"]["collision_rate"] == r["prefix_collision_rate"][-1]
    assert r["prefix_collision_rate"] == sorted(r["prefix_collision_rate"], reverse=True)
    _, err = cb.encode(x, return_errors=True)
    assert r["relative_error"] == pytest.approx(err[:, -1].sum() / (x.astype(np.float64) ** 2).sum(), rel=1e-4)
    assert 0 <= r["neighbour_recall@10"] <= 1 and 0 <= r["hit_rate@30"] <= 1
    assert -1 <= r["similarity_depth_spearman"] <= 1
    assert len(r["levels"]) == 3 and all(0 < lv["utilisation"] <= 1 for lv in r["levels"])
    with pytest.raises(ValueError, match="x, codes"):
        report(x[:10], codes)
    with pytest.raises(ValueError, match=r"sizes: expected codebooks.sizes = \(8, 8, 8\), got \(9, 9, 9\)"):
        report(x, codes, cb, sizes=(9, 9, 9))


def test_neighbour_recall_never_counts_the_item_itself():
    # Two pairs; each pair shares one codeword, so a quantised item ties with its partner.
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    cb = sk.Codebooks(np.array([[[1, 0], [0, 1]]], np.float32))
    codes = np.array([[0], [0], [1], [1]])
    r = report(x, codes, cb, k=1, sample=4)
    assert r["neighbour_recall@1"] == 1.0  # every item's one neighbour is its partner, both ways
    # Exact duplicate rows: the partner, not the item, is the neighbour.
    d = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    assert report(d, codes, cb, k=1, sample=4)["neighbour_recall@1"] == 1.0


def test_ranking_metrics_hand_worked():
    from sidkit.metrics import ranking_metrics

    ranked = np.array([[7, 1, 2], [1, 7, 2], [1, 2, 3], [-1, -1, 9]])
    target = np.array([7, 7, 7, 7])
    m = ranking_metrics(ranked, target, ks=(1, 2, 3))
    assert m["recall@1"] == 0.25 and m["recall@2"] == 0.5 and m["recall@3"] == 0.5
    assert m["ndcg@1"] == 0.25  # a hit at rank 1 scores 1
    assert m["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 4)  # rank 2 scores 1/log2(3)
    with pytest.raises(ValueError, match="ranked, target"):
        ranking_metrics(ranked, target[:2])
    # A cut-off the lists cannot measure is an error, not the shorter list's value.
    with pytest.raises(ValueError, match=r"ks: expected cut-offs <= K = 3 .*got 5"):
        ranking_metrics(ranked, target, ks=(1, 5))
    with pytest.raises(ValueError, match="ks: expected >= 1, got 0"):
        ranking_metrics(ranked, target, ks=(0,))
    with pytest.raises(TypeError, match="ks: expected a sequence"):
        ranking_metrics(ranked, target, ks=3)
    with pytest.raises(TypeError, match="ranked: expected integer item ids, got dtype float64"):
        ranking_metrics(ranked.astype(float), target, ks=(1,))
    with pytest.raises(ValueError, match="target: expected item ids >= 0 .*got -1"):
        ranking_metrics(ranked, np.array([7, 7, 7, -1]), ks=(1,))  # -1 is the empty slot, no item
    empty = ranking_metrics(np.zeros((4, 0), np.int64), target, ks=(1,))  # nothing recommended
    assert empty == {"recall@1": 0.0, "ndcg@1": 0.0}
    # -1 padding measures a deeper cut-off honestly: the empty slots are misses.
    padded = np.pad(ranked, ((0, 0), (0, 2)), constant_values=-1)
    assert ranking_metrics(padded, target, ks=(5,)) == {"recall@5": 0.5, "ndcg@5": m["ndcg@3"]}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 30), st.integers(1, 12), st.integers(0, 2**31), st.data())
def test_ranking_metrics_equal_a_per_row_loop(rows, k_cols, seed, data):
    """Recall@k / NDCG@k against the definition, row by row: the first position of the target
    in the list (slots of -1 never hit; a repeated item counts at its first place)."""
    from sidkit.metrics import ranking_metrics

    rng = np.random.default_rng(seed)
    ranked = rng.integers(-1, 8, size=(rows, k_cols))  # few items: hits, repeats and padding
    target = rng.integers(0, 8, size=rows)
    ks = tuple(data.draw(st.lists(st.integers(1, k_cols), min_size=1, max_size=3)))
    got = ranking_metrics(ranked, target, ks=ks)
    for k in ks:
        hits, gains = [], []
        for r, t in zip(ranked.tolist(), target.tolist(), strict=True):
            place = next((i for i, v in enumerate(r[:k]) if v == t and v >= 0), None)
            hits.append(place is not None)
            gains.append(0.0 if place is None else 1.0 / np.log2(place + 2))
        assert got[f"recall@{k}"] == pytest.approx(np.mean(hits) if rows else 0.0)
        assert got[f"ndcg@{k}"] == pytest.approx(np.mean(gains) if rows else 0.0)


def test_leave_one_out_and_most_popular():
    from sidkit.data import leave_one_out, most_popular

    seqs = [np.array([1, 2, 3, 4, 5]), np.array([2, 3]), np.array([3, 2, 9])]
    s = leave_one_out(seqs, max_history=2)
    assert [t.tolist() for t in s.train] == [[1, 2, 3], [3]]
    assert s.valid_target.tolist() == [4, 2] and s.test_target.tolist() == [5, 9]
    assert [h.tolist() for h in s.test_history] == [[3, 4], [3, 2]]
    assert [h.tolist() for h in s.valid_history] == [[2, 3], [3]]
    assert most_popular(s.train, 2).tolist() == [3, 1]  # 3 twice; ties -> lower id
    # A longer context than max_history comes from the whole sequence, never the targets.
    assert [h.tolist() for h in s.histories("test", 4)] == [[1, 2, 3, 4], [3, 2]]
    assert [h.tolist() for h in s.histories("valid", 4)] == [[1, 2, 3], [3]]
    assert [h.tolist() for h in s.histories("test", 2)] == [h.tolist() for h in s.test_history]
    with pytest.raises(ValueError, match="which"):
        s.histories("train", 4)


def test_beauty_split_counts(amazon_dir):
    from sidkit.data import leave_one_out, load_amazon

    ds = load_amazon(amazon_dir)
    s = leave_one_out(ds.sequences)
    assert len(s.test_target) == 22363  # 5-core: every user has >= 5 items
    assert sum(len(t) for t in s.train) == 198502 - 2 * 22363
