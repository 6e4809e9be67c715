"""SID quality metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._arrays import as_float_matrix, as_int, level_sizes, to_numpy


def collisions(codes: Any) -> dict[str, float | int]:
    """Collision statistics of (N, L) integer codes.

    Returns a dict with ``items`` (N), ``unique_sids`` (distinct rows), ``collision_rate``
    (share of items whose full SID is shared with another item), ``max_group`` (largest
    number of items on one SID) and ``mean_group`` (items per distinct SID).
    """
    c = _code_matrix(codes)
    n = len(c)
    if n == 0:
        return {"items": 0, "unique_sids": 0, "collision_rate": 0.0, "max_group": 0, "mean_group": 0.0}
    _, counts = np.unique(c, axis=0, return_counts=True)
    return {
        "items": n,
        "unique_sids": len(counts),
        "collision_rate": float(counts[counts > 1].sum() / n),
        "max_group": int(counts.max()),
        "mean_group": float(n / len(counts)),
    }


def gini(counts: Any) -> float:
    """Gini coefficient of non-negative counts: ``sum_ij |c_i - c_j| / (2 n^2 mean)``.

    0 when all counts are equal, (n - 1) / n when one bin holds everything:
    ``gini([1, 1, 1, 1]) == 0``, ``gini([0, 0, 0, 4]) == 0.75``.
    """
    c = np.sort(np.asarray(counts, dtype=np.float64).ravel())
    if not np.isfinite(c).all() or (c < 0).any():
        raise ValueError("counts: expected finite, non-negative values")
    if c.size == 0 or c.sum() == 0:
        return 0.0
    n = c.size
    return float(2.0 * np.sum(np.arange(1, n + 1) * c) / (n * c.sum()) - (n + 1) / n)


def code_usage(codes: Any, sizes: Any) -> list[dict[str, float]]:
    """Of (N, L) integer codes and their L codebook sizes, per level: ``utilisation`` (used
    codes / K), ``entropy`` (bits, of the code frequencies), ``perplexity`` (2^entropy) and
    ``gini`` of items per code (unused codes count as 0)."""
    c = _code_matrix(codes)
    sizes = level_sizes(sizes, "sizes", c.shape[1])
    _check_code_range(c, sizes)
    out = []
    for l, k in enumerate(sizes):
        counts = np.bincount(np.asarray(c[:, l], dtype=np.int64), minlength=int(k)).astype(np.float64)
        p = counts[counts > 0] / max(counts.sum(), 1)
        h = float(-(p * np.log2(p)).sum())
        out.append(
            {"utilisation": float((counts > 0).mean()), "entropy": h, "perplexity": 2.0**h, "gini": gini(counts)}
        )
    return out


def prefix_collision_rates(codes: Any) -> list[float]:
    """Of (N, L) integer codes, for each depth d = 1..L: the share of items whose first d codes are shared with another
    item (depth L is the SID collision rate)."""
    c = _code_matrix(codes)
    rates = []
    for d in range(1, c.shape[1] + 1):
        _, inverse, counts = np.unique(c[:, :d], axis=0, return_inverse=True, return_counts=True)
        rates.append(float((counts[inverse.ravel()] > 1).mean()) if len(c) else 0.0)
    return rates


def _code_matrix(codes: Any) -> np.ndarray:
    c = to_numpy(codes, "codes")
    if c.dtype.kind not in "iu":
        raise TypeError(f"codes: expected integer codes, got dtype {c.dtype}")
    if c.ndim != 2:
        raise ValueError(f"codes: expected a 2-D array (N, L), got shape {c.shape}")
    return c


def _check_code_range(c: np.ndarray, sizes: tuple[int, ...]) -> None:
    bad = (c < 0) | (c >= np.array(sizes))
    if bad.any():
        level = int(np.flatnonzero(bad.any(0))[0])
        raise ValueError(
            f"codes: expected 0 <= code < {sizes[level]} at level {level} (sizes), got an out-of-range code"
        )


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def top_k_neighbours(x: np.ndarray, k: int, block: int = 4096, rows: np.ndarray | None = None) -> np.ndarray:
    """(R, k) int64: for each query row (``rows``, default all N rows) its k largest inner
    products among the other rows of ``x`` (itself excluded), best first, by blocked matrix
    products. A block holds at most ``block`` queries and about 2^25 similarities (128 MB
    float32), whatever N is."""
    n = len(x)
    q = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    k = min(k, n - 1)
    out = np.empty((len(q), k), dtype=np.int64)
    step = max(1, min(block, (1 << 25) // max(n, 1)))
    for s in range(0, len(q), step):
        qs = q[s : s + step]
        sims = x[qs] @ x.T
        sims[np.arange(len(qs)), qs] = -np.inf
        part = np.argpartition(sims, n - k, axis=1)[:, n - k :]  # the k largest, unordered
        # Best first; among equal similarities the lower index, as a stable sort of -sims does.
        order = np.lexsort((part, -np.take_along_axis(sims, part, 1)), axis=1)
        out[s : s + step] = np.take_along_axis(part, order, 1)
    return out


def embedding_hit_rate(emb: np.ndarray, sequences: list[np.ndarray], k: int = 30, history: int = 20) -> float:
    """FORGE's embedding hit rate (§4.2 / App. A.6): for each user sequence, the pair
    (history = up to ``history`` items before the last, target = the last item) is a hit when
    the target is among the top-``k`` inner-product neighbours (L2-normalised embeddings,
    itself excluded) of any history item. Item ids in ``sequences`` are 0-based rows of ``emb``.
    Neighbours are searched only for items that occur in a history: the cost is
    (history items) x N x D, not N^2 x D.
    """
    pairs = [(s[:-1][-history:], s[-1]) for s in sequences if len(s) >= 2]
    if not pairs:
        return 0.0
    rows = np.unique(np.concatenate([h for h, _ in pairs]))
    nbrs = top_k_neighbours(_unit(np.asarray(emb, dtype=np.float32)), k, rows=rows)
    hits = sum(bool((nbrs[np.searchsorted(rows, h)] == t).any()) for h, t in pairs)
    return hits / len(pairs)


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (for Spearman's correlation)."""
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], len(a)]
    avg = (starts + ends - 1) / 2.0
    ranks = np.empty(len(a))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: Any, b: Any) -> float:
    """Spearman's rank correlation (Pearson correlation of tie-averaged ranks)."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def report(
    x: Any,
    codes: Any,
    codebooks: Any = None,
    *,
    sizes: Any = None,
    sequences: list[np.ndarray] | None = None,
    k: int = 10,
    hit_k: int = 30,
    sample: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """SID quality without training a generative model.

    Args:
        x: (N, D) item embeddings; codes: (N, L) integer SIDs of the same items.
        codebooks: their :class:`~sidkit.Codebooks` (adds reconstruction error, neighbour
            recall and the quantised embedding hit rate).
        sizes: codebook size per level (default: ``codebooks.sizes`` or ``codes.max(0) + 1``).
        sequences: user sequences of 0-based item rows (adds the embedding hit rate).
        k: neighbours for neighbour recall@k; hit_k: neighbours for the hit rate (FORGE: 30).
        sample: items / pairs sampled for the pairwise metrics.

    Returns:
        A dict: ``collisions`` (see :func:`collisions`), ``prefix_collision_rate`` (per depth),
        ``levels`` (per level utilisation, entropy, perplexity, gini), ``gini_items_per_sid``,
        ``similarity_depth_spearman``, and with codebooks ``reconstruction_mse`` (per
        dimension), ``relative_error`` (``sum ||x - x̂||² / sum ||x||²``),
        ``neighbour_recall@k``; with sequences ``hit_rate@hit_k`` (raw embeddings) and, with
        codebooks, ``hit_rate_quantised@hit_k``.
    """
    x = as_float_matrix(x, "x")
    c = np.asarray(to_numpy(codes, "codes"))
    if c.dtype.kind not in "iu":
        raise TypeError(f"codes: expected an integer array, got dtype {c.dtype}")
    if c.ndim != 2 or len(x) != len(c):
        raise ValueError(f"x, codes: expected (N, D) and (N, L) with the same N, got {x.shape} and {c.shape}")
    if not len(c) or not c.shape[1]:
        raise ValueError(f"codes: expected at least one item and one level, got shape {c.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x: expected finite values, got NaN or inf")
    if codebooks is not None:
        from .codebooks import Codebooks

        if not isinstance(codebooks, Codebooks):
            raise TypeError(f"codebooks: expected a sidkit.Codebooks, got {type(codebooks).__name__}")
        if codebooks.levels != c.shape[1] or codebooks.dim != x.shape[1]:
            raise ValueError(
                f"codebooks: expected {c.shape[1]} levels of dimension {x.shape[1]} (codes, x), "
                f"got {codebooks.levels} of {codebooks.dim}"
            )
    if sizes is None:
        sizes = codebooks.sizes if codebooks is not None else tuple(int(m) + 1 for m in c.max(0))
    sizes = level_sizes(sizes, "sizes", c.shape[1])
    if codebooks is not None and sizes != codebooks.sizes:
        raise ValueError(f"sizes: expected codebooks.sizes = {codebooks.sizes}, got {sizes}")
    _check_code_range(c, sizes)
    k, hit_k, sample = as_int(k, "k", 1), as_int(hit_k, "hit_k", 1), as_int(sample, "sample", 1)
    seed = as_int(seed, "seed", 0, 2**64 - 1)
    if codebooks is not None and k > len(c) - 1:
        raise ValueError(f"k: expected at most N - 1 = {len(c) - 1} neighbours, got {k}")
    if sequences is not None:
        sequences = [_item_rows(s, len(c), i) for i, s in enumerate(sequences)]
        if hit_k > len(c) - 1:
            raise ValueError(f"hit_k: expected at most N - 1 = {len(c) - 1} neighbours, got {hit_k}")
    rng = np.random.default_rng(seed)
    _, sid_counts = np.unique(c, axis=0, return_counts=True)
    out: dict[str, Any] = {
        "items": len(c),
        "collisions": collisions(c.astype(np.int64)),
        "prefix_collision_rate": prefix_collision_rates(c),
        "levels": code_usage(c, sizes),
        "gini_items_per_sid": gini(sid_counts),
    }
    # Similarity-depth correlation over random pairs: cosine similarity vs shared prefix length.
    m = min(sample * 10, len(c) * (len(c) - 1) // 2) if len(c) > 1 else 0
    if m:
        i, j = rng.integers(len(c), size=m), rng.integers(len(c), size=m)
        keep = i != j
        i, j = i[keep], j[keep]
        u = _unit(x)
        cos = np.einsum("ij,ij->i", u[i], u[j])
        same = np.cumprod(c[i] == c[j], axis=1).sum(1)
        out["similarity_depth_spearman"] = spearman(cos, same)
    if codebooks is not None:
        recon = np.asarray(codebooks.decode(c.astype(np.int64)), dtype=np.float32)
        err = ((x.astype(np.float64) - recon) ** 2).sum()
        out["reconstruction_mse"] = float(err / x.size)
        out["relative_error"] = float(err / max((x.astype(np.float64) ** 2).sum(), 1e-300))
        q = rng.choice(len(x), size=min(sample, len(x)), replace=False)

        def neighbours(v: np.ndarray) -> np.ndarray:  # the k nearest other items (not itself, even on ties)
            sims = _unit(v)[q] @ _unit(v).T
            sims[np.arange(len(q)), q] = -np.inf
            return np.argsort(-sims, axis=1, kind="stable")[:, :k]

        true, approx = neighbours(x), neighbours(recon)
        out[f"neighbour_recall@{k}"] = float(
            np.mean([len(set(a) & set(b)) / k for a, b in zip(true.tolist(), approx.tolist(), strict=True)])
        )
    if sequences is not None:
        out[f"hit_rate@{hit_k}"] = embedding_hit_rate(x, sequences, hit_k)
        if codebooks is not None:
            out[f"hit_rate_quantised@{hit_k}"] = embedding_hit_rate(recon, sequences, hit_k)
    return out


def _item_rows(seq: Any, n: int, i: int) -> np.ndarray:
    """One user sequence of 0-based item rows, checked to lie in [0, n)."""
    s = np.asarray(to_numpy(seq, "sequences"))
    if s.size and s.dtype.kind not in "iu":
        raise TypeError(f"sequences: expected integer item rows, got dtype {s.dtype} in sequence {i}")
    s = s.astype(np.int64).ravel()
    if s.size and (s.min() < 0 or s.max() >= n):
        bad = int(s.min() if s.min() < 0 else s.max())
        raise ValueError(
            f"sequences: expected 0-based item rows in [0, {n}) (Dataset.sequences are 1-based: pass s - 1), "
            f"got {bad} in sequence {i}"
        )
    return s


def ranking_metrics(ranked: Any, target: Any, ks: tuple[int, ...] = (5, 10)) -> dict[str, float]:
    """Recall@k and NDCG@k of ranked item lists against one held-out target per row.

    Args:
        ranked: (B, K) integer item ids, best first (-1 = empty slot, never a hit).
        target: (B,) the held-out integer item id (>= 0) of each row.
        ks: cut-offs, each in [1, K] (a list shorter than k cannot measure @k: pad it with -1).

    With a single relevant item, Recall@k is the hit rate and NDCG@k is ``1 / log2(rank + 1)``
    for a hit at 1-based ``rank <= k`` (1 at rank 1, ``1/log2(3)`` at rank 2), else 0.
    """
    r = np.asarray(to_numpy(ranked, "ranked"))
    t = np.asarray(to_numpy(target, "target")).ravel()
    if r.ndim != 2 or len(r) != len(t):
        raise ValueError(f"ranked, target: expected (B, K) and (B,), got {r.shape} and {t.shape}")
    for name, a in (("ranked", r), ("target", t)):
        if a.size and a.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integer item ids, got dtype {a.dtype}")
    if isinstance(ks, (int, str, bytes)) or not hasattr(ks, "__iter__"):
        raise TypeError(f"ks: expected a sequence of ints, got {type(ks).__name__} {ks!r}")
    ks = tuple(as_int(k, "ks", 1) for k in ks)
    if ks and max(ks) > max(1, r.shape[1]):
        raise ValueError(
            f"ks: expected cut-offs <= K = {r.shape[1]} (the ranked lists' length; pad them with -1), got {max(ks)}"
        )
    if t.size and t.min() < 0:
        raise ValueError(f"target: expected item ids >= 0 (-1 marks an empty slot), got {t.min()}")
    hit = (r == t[:, None]) & (r >= 0)
    found = hit.any(1)
    first = hit.argmax(1) if r.shape[1] else np.zeros(len(r), np.int64)  # K = 0: no hit anywhere
    rank = np.where(found, first + 1, np.iinfo(np.int64).max)
    out = {}
    for k in ks:
        within = rank <= k
        out[f"recall@{k}"] = float(within.mean()) if len(t) else 0.0
        out[f"ndcg@{k}"] = (
            float(np.where(within, 1.0 / np.log2(np.minimum(rank, k) + 1), 0.0).mean()) if len(t) else 0.0
        )
    return out


def plot_report(codes: Any, sizes: Any, path: str | Path, title: str = "") -> Path:
    """Writes a PNG of a SID assignment: per-level code usage (items per code, codes sorted by
    count) and the items-per-SID distribution (how many SIDs hold 1, 2, 3, ... items).

    Args:
        codes: (N, L) integer codes.
        sizes: (L,) codebook sizes (unused codes count as 0).
        path: output file; matplotlib (the ``plot`` extra) renders it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.asarray(codes)
    if c.ndim != 2 or len(c) == 0:
        raise ValueError(f"codes: expected a non-empty (N, L) array, got shape {c.shape}")
    sizes = [int(s) for s in sizes]
    if len(sizes) != c.shape[1]:
        raise ValueError(f"sizes: expected {c.shape[1]} values (one per level), got {len(sizes)}")
    levels = c.shape[1]
    fig, axes = plt.subplots(1, levels + 1, figsize=(4 * (levels + 1), 3.2), constrained_layout=True)
    for l in range(levels):
        counts = np.sort(np.bincount(c[:, l].astype(np.int64), minlength=sizes[l]))[::-1]
        ax = axes[l]
        ax.bar(np.arange(len(counts)), counts, width=1.0, color="tab:blue")
        ax.axhline(len(c) / sizes[l], color="tab:red", lw=1, ls="--", label="uniform")
        ax.set_title(f"level {l}: items per code (gini {gini(counts):.2f})", fontsize=9)
        ax.set_xlabel("code (sorted by count)")
        ax.legend(fontsize=8)
    _, group = np.unique(c, axis=0, return_counts=True)
    sizes_seen, n_sids = np.unique(group, return_counts=True)
    ax = axes[levels]
    ax.bar(sizes_seen, n_sids, color="tab:orange")
    ax.set_yscale("log")
    ax.set_title(f"items per SID ({len(group):,} SIDs, {len(c):,} items)", fontsize=9)
    ax.set_xlabel("items sharing a SID")
    if title:
        fig.suptitle(title, fontsize=10)
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
