"""RQ-KMeans options (init, sample, backends), the Rust k-means kernels and cluster recovery."""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
import sidkit as sk
from sidkit import _native
from sidkit.data import synthetic_catalog


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """ARI (Hubert & Arabie, 1985) from the contingency table."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1)

    def pairs(v):
        return (v * (v - 1) / 2).sum()

    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / pairs(np.array([len(a)]))
    return float((index - expected) / ((rows + cols) / 2 - expected))


def test_adjusted_rand_index_reference():
    assert adjusted_rand_index(np.array([0, 0, 1, 1]), np.array([5, 5, 3, 3])) == 1.0
    # Hand-worked: a = [0,0,0,1,1,1], b = [0,0,1,1,2,2]; index 2, rows 6, cols 3, total 15.
    a, b = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(a, b) == pytest.approx((2 - 6 * 3 / 15) / (4.5 - 6 * 3 / 15))


def test_rq_kmeans_recovers_well_separated_clusters(rng):
    k, d = 32, 16
    centres = rng.standard_normal((k, d)) * 10
    truth = rng.integers(k, size=6000)
    x = (centres[truth] + 0.3 * rng.standard_normal((6000, d))).astype(np.float32)
    ari = {}
    for init in ("kmeans++", "random"):
        model = sk.RQKMeans(levels=2, codebook_size=k, iters=30, seed=0, verbose=False, init=init)
        model.fit(x)
        ari[init] = adjusted_rand_index(model.codes_[:, 0], truth)
    assert ari["kmeans++"] >= 0.99
    # Random seeding puts several seeds in one cluster, which Lloyd cannot undo: why
    # k-means++ is the default.
    assert 0.3 < ari["random"] < ari["kmeans++"]


def test_centroid_means_match_numpy(rng):
    x = rng.standard_normal((5000, 7)).astype(np.float32)
    labels = rng.integers(0, 10, size=5000).astype(np.uint32)
    labels[labels == 3] = 4  # cluster 3 empty
    means, counts = _native.centroid_means(x, labels, 11)
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=11))
    for j in range(11):
        want = x[labels == j].astype(np.float64).mean(0) if counts[j] else np.zeros(7)
        np.testing.assert_allclose(means[j], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        _native.centroid_means(x, labels, 4)


def greedy_kmeans_pp_reference(x: np.ndarray, k: int, trials: int, uniform: np.ndarray) -> list[int]:
    """Greedy k-means++ as documented: D² draws, the candidate with the least potential wins."""

    def dist(c):
        return ((x - x[c]).astype(np.float64) ** 2).sum(1)

    chosen = [min(int(uniform[0] * len(x)), len(x) - 1)]
    d2 = dist(chosen[0])
    for j in range(1, k):
        draw = uniform[1 + (j - 1) * trials : 1 + j * trials]
        cands = [int(np.searchsorted(np.cumsum(d2), u * d2.sum(), side="right")) for u in draw]
        pots = [np.minimum(d2, dist(c)) for c in cands]
        best = int(np.argmin([p.sum() for p in pots]))
        chosen.append(cands[best])
        d2 = pots[best]
    return chosen


@pytest.mark.parametrize("n, d, k, trials", [(3000, 5, 40, 1), (2500, 33, 50, 3), (3000, 300, 24, 7)])
def test_kmeans_pp_matches_a_numpy_reference(rng, n, d, k, trials):
    x = rng.standard_normal((n, d)).astype(np.float32)
    uniform = rng.random(1 + (k - 1) * trials)
    picked = _native.kmeans_pp(x, k, trials, uniform)
    assert picked.tolist() == greedy_kmeans_pp_reference(x, k, trials, uniform)
    assert len(set(picked.tolist())) == k


def test_bounded_assignment_matches_exhaustive_search(rng):
    x = synthetic_catalog(4000, 12, (30, 3), seed=3)
    c = x[rng.choice(4000, 50, replace=False)].copy()
    labels, err, lower = np.zeros(4000, np.uint32), np.zeros(4000, np.float32), np.zeros(4000, np.float32)
    searched, previous = [], None
    for _ in range(8):
        searched.append(_native.assign_bounded(c, x, labels, err, lower, previous))
        d = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
        np.testing.assert_array_equal(labels, d.argmin(1))
        np.testing.assert_allclose(err, d.min(1), rtol=1e-4, atol=1e-5)
        d[np.arange(4000), labels] = np.inf
        assert np.all(lower <= np.sqrt(d.min(1)) * (1 + 1e-6) + 1e-6)
        means, counts = _native.centroid_means(x, labels, 50)
        previous = c.copy()
        c[counts > 0] = means[counts > 0]
    assert searched[0] == 4000 and min(searched[1:]) < 4000


def test_lloyd_matches_a_numpy_reference_when_bounds_are_skipped(rng, monkeypatch):
    """On diffuse data Hamerly's bounds prune too little, so the bound test is skipped for 1, 2,
    4, ... iterations after each poor try: the result must still be plain Lloyd's, exactly."""
    kmeans_module = importlib.import_module("sidkit.kmeans")
    x = rng.standard_normal((3000, 32)).astype(np.float32)  # one blob: no cluster structure
    init = x[:40].copy()
    calls = []
    native_assign = _native.assign_bounded

    def spy(centres, x_, labels, err, lower, previous=None):
        searched = native_assign(centres, x_, labels, err, lower, previous)
        calls.append((previous is not None, searched))
        return searched

    monkeypatch.setattr(kmeans_module._native, "assign_bounded", spy)
    centres, labels, history = sk.kmeans(x, 40, iters=12, init=init)
    # Reference: float64 Lloyd from the same centres (no cluster empties on this data).
    c = init.astype(np.float64)
    xd = x.astype(np.float64)
    for _ in range(12):
        lab = ((xd[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        assert np.bincount(lab, minlength=40).min() > 0
        c = np.stack([xd[lab == j].mean(0) for j in range(40)])
    lab = ((xd[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(labels, lab)
    np.testing.assert_allclose(centres, c, rtol=1e-4, atol=1e-5)
    # After each poor bounded try (more than 80% searched), 1, 2, 4, ... direct searches.
    assert len(history) == len(calls) and not calls[0][0]
    skip, backoff, expected = 0, 1, [False]
    for bounded, searched in calls[:-1]:
        if bounded and searched > 0.8 * 3000:
            skip, backoff = backoff, 2 * backoff
        elif bounded:
            backoff = 1
        expected.append(not skip)
        skip = max(skip - 1, 0) if not expected[-1] else skip
    assert [b for b, _ in calls] == expected
    assert sum(not b for b, _ in calls[1:]) >= 3  # the test was skipped on this data


def test_sample_fits_on_a_subset_and_codes_cover_every_row():
    x = synthetic_catalog(5000, 16, (16, 4), seed=6)
    model = sk.RQKMeans(levels=2, codebook_size=16, iters=10, seed=0, verbose=False, sample=1000)
    cb = model.fit(x)
    assert cb.meta["sample"] == 1000 and model.codes_.shape == (5000, 2)
    np.testing.assert_array_equal(model.codes_, cb.encode(x))
    frac = sk.RQKMeans(levels=2, codebook_size=16, iters=10, seed=0, verbose=False, sample=0.2)
    assert frac.fit(x) == cb  # 0.2 of 5000 rows is the same 1000-row draw
    # The subset fit is close to the full fit on the full data.
    full = sk.RQKMeans(levels=2, codebook_size=16, iters=10, seed=0, verbose=False).fit(x)
    err_sub = ((x - cb.decode(cb.encode(x))) ** 2).sum()
    err_full = ((x - full.decode(full.encode(x))) ** 2).sum()
    assert err_sub < 1.3 * err_full
    balanced = sk.RQKMeans(levels=2, codebook_size=16, iters=5, verbose=False, sample=1000, balanced=True)
    balanced.fit(x)
    counts = np.bincount(balanced.codes_[:, 0], minlength=16)
    assert counts.min() == 5000 // 16 and counts.max() == -(-5000 // 16)


def test_bad_options_and_inputs(rng):
    x = np.zeros((100, 4), np.float32)
    with pytest.raises(ValueError, match="sample"):
        sk.RQKMeans(sample=0)
    with pytest.raises(ValueError, match="sample"):
        sk.RQKMeans(sample=1.5)
    with pytest.raises(ValueError, match="init"):
        sk.RQKMeans(init="forgy")
    with pytest.raises(ValueError, match="backend"):
        sk.RQKMeans(backend="gpu")
    with pytest.raises(ValueError, match="at least codebook_size = 16 sampled rows, got 10"):
        sk.RQKMeans(codebook_size=16, sample=10, verbose=False).fit(rng.random((100, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        bad = x.copy()
        bad[3, 1] = np.nan
        sk.RQKMeans(codebook_size=4, verbose=False).fit(bad)
    with pytest.raises(ValueError, match="init: expected shape"):
        sk.kmeans(rng.random((50, 4), dtype=np.float32), 5, init=np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="k: expected"):
        sk.kmeans(rng.random((50, 4), dtype=np.float32), 51)


def test_constant_data_gives_valid_codebooks():
    x = np.full((300, 5), 2.5, np.float32)
    model = sk.RQKMeans(levels=2, codebook_size=8, iters=5, verbose=False)
    cb = model.fit(x)
    assert np.isfinite(cb.to_numpy()).all()
    np.testing.assert_allclose(cb.decode(model.codes_), x, atol=1e-6)


def test_torch_backend_matches_rust_backend():
    torch = pytest.importorskip("torch")
    x = synthetic_catalog(3000, 24, (12, 4), seed=8)
    rust = sk.RQKMeans(levels=2, codebook_size=32, iters=8, seed=1, verbose=False)
    cb_rust = rust.fit(x)
    tb = sk.RQKMeans(levels=2, codebook_size=32, iters=8, seed=1, verbose=False, backend="torch")
    cb_torch = tb.fit(torch.from_numpy(x))
    # Same seeds, same algorithm: codes agree except possibly on float near-ties.
    assert (rust.codes_ == tb.codes_).mean() > 0.99
    np.testing.assert_allclose(cb_torch.to_numpy(), cb_rust.to_numpy(), rtol=1e-3, atol=1e-3)
    # device= routes a CPU tensor to Rust (the default backend on CPU).
    auto = sk.RQKMeans(levels=2, codebook_size=32, iters=8, seed=1, verbose=False)
    assert auto.fit(torch.from_numpy(x), device="cpu") == cb_rust
    if torch.cuda.is_available():
        gpu = sk.RQKMeans(levels=2, codebook_size=32, iters=8, seed=1, verbose=False)
        cb_gpu = gpu.fit(torch.from_numpy(x), device="cuda")
        np.testing.assert_allclose(cb_gpu.to_numpy(), cb_rust.to_numpy(), rtol=1e-3, atol=1e-3)


def test_torch_backend_is_exact_far_from_the_origin():
    """x·c in float32 cancels for points at ~3e4 from the origin: the torch backend expands
    around the centres' mean and takes errors exactly (before: 94% of level-0 codes differed
    from Rust's and the objective read 0)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    base = rng.normal(size=(16, 32)).astype(np.float32)
    x = (base[rng.integers(0, 16, 600)] + 0.3 * rng.normal(size=(600, 32))).astype(np.float32) + np.float32(3e4)
    rust = sk.RQKMeans(2, 16, iters=10, seed=0, verbose=False, backend="rust")
    rust.fit(x)
    tb = sk.RQKMeans(2, 16, iters=10, seed=0, verbose=False, backend="torch")
    tb.fit(torch.from_numpy(x))
    np.testing.assert_array_equal(tb.codes_, rust.codes_)
    for level in range(2):
        np.testing.assert_allclose(tb.history_[level], rust.history_[level], rtol=1e-4)
    assert tb.history_[0][-1] > 1000  # the true error (~1670), not a cancelled 0


def test_rq_kmeans_is_deterministic_across_thread_counts():
    x = synthetic_catalog(6000, 16, (20, 4), seed=9)
    before = sk.get_num_threads()
    try:
        out = []
        for threads in (1, 2, 3):
            sk.set_num_threads(threads)
            model = sk.RQKMeans(levels=2, codebook_size=24, iters=6, seed=3, verbose=False)
            out.append((model.fit(x), model.codes_))
    finally:
        sk.set_num_threads(before)
    for cb, codes in out[1:]:
        assert cb == out[0][0]
        np.testing.assert_array_equal(codes, out[0][1])


def test_torch_backend_checks_magnitudes_and_width_as_rust_does():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    for bad, at in ((x * 1e20, "at (0, 0)"), (np.where(np.arange(4) == 2, np.nan, x), "at (0, 2)")):
        for backend in ("torch", "rust"):
            with pytest.raises(ValueError, match="x: expected finite values within ±1e15"):
                sk.kmeans(torch.from_numpy(bad.astype(np.float32)), 5, backend=backend, init="random")
        with pytest.raises(ValueError, match=f"x: expected finite values within ±1e15, got .* {re.escape(at)}"):
            sk.kmeans(torch.from_numpy(bad.astype(np.float32)), 5, backend="torch", init="random")
    huge = torch.from_numpy(x.astype(np.float64)) * 1e300  # beyond float32: named, not cast to inf
    with pytest.raises(ValueError, match="got .*e\\+299"):
        sk.kmeans(huge, 5, backend="torch", init="random")
    with pytest.raises(ValueError, match=r"x: expected at least one dimension \(N, D >= 1\)"):
        sk.kmeans(torch.zeros(10, 0), 2, backend="torch", init="random")
    sk.RQKMeans(2, 4, iters=2, sample=np.int64(100), verbose=False).fit(x)  # numpy ints are ints


def test_torch_backend_means_at_the_largest_codebook_size(monkeypatch):
    """The torch update's per-cluster means equal a float64 numpy reference for k = 65,536 (a
    one-hot buffer would be N · k · 8 bytes), across chunk boundaries, with empty clusters."""
    torch = pytest.importorskip("torch")
    km = importlib.import_module("sidkit.kmeans")  # the module (sidkit.kmeans is also the function)
    monkeypatch.setattr(km, "_TORCH_CHUNK", 1000)  # several chunks, clusters spanning them
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((5000, 6)) * 10 + 3).astype(np.float32)
    labels = rng.choice([0, 7, 65535, *rng.integers(0, 65536, 300)], size=5000)
    means, counts = km._TorchOps(False).update(torch.from_numpy(x), torch.from_numpy(labels), 65536)
    ref_counts = np.bincount(labels, minlength=65536)
    ref = np.zeros((65536, 6))
    np.add.at(ref, labels, x.astype(np.float64))
    ref /= np.maximum(ref_counts, 1)[:, None]
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(means.numpy(), ref.astype(np.float32), rtol=1e-6, atol=1e-5)
    assert means.shape == (65536, 6) and not means[ref_counts == 0].any()
