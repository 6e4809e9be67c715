"""Codebook learning by residual k-means (RQ-KMeans): level l clusters the residuals of levels < l.

The assignment step of every Lloyd iteration is sidkit's Rust kernel (multithreaded, GIL
released); the update step is vectorised numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _native
from ._arrays import as_float_matrix
from .codebooks import MAX_CODEBOOK_SIZE, Codebooks


def _progress(total: int, desc: str, verbose: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not verbose, leave=False)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): D² sampling, one centre at a time."""
    n = len(x)
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = x[rng.integers(n)]
    d2 = ((x - centres[0]) ** 2).sum(1, dtype=np.float64)
    for j in range(1, k):
        total = d2.sum()
        i = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres[j] = x[i]
        np.minimum(d2, ((x - centres[j]) ** 2).sum(1, dtype=np.float64), out=d2)
    return centres


def _assign(x: np.ndarray, centres: np.ndarray, balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    if balanced:
        labels, dist = _native.balanced_assign(np.ascontiguousarray(centres, dtype=np.float32), x)
        return labels.astype(np.int64), dist
    codes, errors = Codebooks(centres[None]).encode(x, return_errors=True)
    return codes[:, 0].astype(np.int64), errors[:, 0]


def kmeans(
    x: np.ndarray,
    k: int,
    iters: int = 20,
    seed: int | np.random.Generator = 0,
    verbose: bool = False,
    desc: str = "k-means",
    balanced: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Lloyd's k-means with k-means++ seeding.

    Args:
        x: (N, D) float32 points, N >= k.
        k: number of clusters.
        iters: maximum Lloyd iterations (stops early when no assignment changes).

        balanced: assign with capacities (every cluster gets floor(N/k) or ceil(N/k) points,
            nearest (point, centre) pairs first) instead of to the nearest centre.

    Returns:
        centres (k, D) float32, labels (N,) int64, and the objective (sum of squared
        distances) after each iteration, which never increases in the unbalanced case (the
        greedy balanced assignment is not optimal, so there it may wobble slightly). Empty
        clusters are re-seeded with the points of largest error, so no centre is left unused.
    """
    rng = np.random.default_rng(seed)
    len(x)
    centres = _kmeans_pp(x, k, rng)
    labels, errors = _assign(x, centres, balanced)
    history = [float(errors.sum(dtype=np.float64))]
    with _progress(iters, desc, verbose) as bar:
        for _ in range(iters):
            counts = np.bincount(labels, minlength=k)
            order = np.argsort(labels, kind="stable")
            nonempty = np.flatnonzero(counts)
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[nonempty]
            sums = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
            centres[nonempty] = (sums / counts[nonempty, None]).astype(np.float32)
            empty = np.flatnonzero(counts == 0)
            if len(empty):
                # Re-seed dead clusters with the worst-served points (largest error first).
                worst = np.argsort(-errors, kind="stable")[: len(empty)]
                centres[empty] = x[worst]
            new_labels, errors = _assign(x, centres, balanced)
            history.append(float(errors.sum(dtype=np.float64)))
            bar.update(1)
            bar.set_postfix(sse=f"{history[-1]:.4g}")
            if np.array_equal(new_labels, labels) and not len(empty):
                break
            labels = new_labels
    return centres, labels, history


class RQKMeans:
    """Residual k-means codebooks (as used by FORGE, GRID, OneRec).

    Args:
        levels: L, the number of code levels.
        codebook_size: K, codewords per level (<= 65536).
        iters: Lloyd iterations per level.
        seed: seed for k-means++ seeding; same inputs and seed give the same codebooks.
        verbose: show a progress bar per level.
        balanced: OneRec's balanced RQ-KMeans: at every level each cluster gets floor(N/K) or
            ceil(N/K) of the fitted items (a capacity-constrained assignment in Rust).

    ``fit(x)`` returns :class:`Codebooks`; ``history_`` keeps each level's objective curve and
    ``codes_`` the (N, L) uint16 codes of the fitted items (the balanced ones when
    ``balanced``; ``Codebooks.encode`` always assigns to the nearest codeword).
    """

    def __init__(
        self,
        levels: int = 3,
        codebook_size: int = 256,
        iters: int = 20,
        seed: int = 0,
        verbose: bool = True,
        balanced: bool = False,
    ) -> None:
        if levels < 1:
            raise ValueError(f"levels: expected >= 1, got {levels}")
        if not 1 <= codebook_size <= MAX_CODEBOOK_SIZE:
            raise ValueError(f"codebook_size: expected 1..{MAX_CODEBOOK_SIZE}, got {codebook_size}")
        if iters < 0:
            raise ValueError(f"iters: expected >= 0, got {iters}")
        self.levels, self.codebook_size, self.iters = levels, codebook_size, iters
        self.seed, self.verbose, self.balanced = seed, verbose, balanced
        self.history_: list[list[float]] = []
        self.codes_: np.ndarray | None = None

    def fit(self, x: Any) -> Codebooks:
        """Learns codebooks from (N, D) embeddings, N >= codebook_size."""
        x = as_float_matrix(x, "x")
        if len(x) < self.codebook_size:
            raise ValueError(f"x: expected at least codebook_size = {self.codebook_size} rows, got {len(x)}")
        if not np.isfinite(x).all():
            raise ValueError("x: expected finite values, got NaN or inf")
        rng = np.random.default_rng(self.seed)
        residual = x.copy()
        levels, codes, self.history_ = [], [], []
        for l in range(self.levels):
            centres, labels, history = kmeans(
                residual, self.codebook_size, self.iters, rng, self.verbose, desc=f"level {l}", balanced=self.balanced
            )
            residual -= centres[labels]
            levels.append(centres)
            codes.append(labels)
            self.history_.append(history)
        self.codes_ = np.stack(codes, 1).astype(np.uint16)
        meta = {"iters": self.iters, "seed": self.seed, "balanced": self.balanced}
        method = "balanced-rq-kmeans" if self.balanced else "rq-kmeans"
        return Codebooks(np.stack(levels), method=method, meta=meta)
