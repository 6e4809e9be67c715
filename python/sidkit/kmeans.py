"""Codebook learning by residual k-means (RQ-KMeans): level l clusters the residuals of levels < l.

Two backends run the same algorithm:

- ``"rust"`` (CPU): the assignment step of every Lloyd iteration is sidkit's exact GEMM kernel
  and the update step a Rust per-cluster mean (both multithreaded, GIL released, results
  independent of the thread count);
- ``"torch"`` (any torch device, the default for CUDA tensors): assignment by chunked
  ``||x||² - 2x·c + ||c||²`` and argmin, update by a one-hot float64 GEMM (deterministic, no
  atomics). Results match the Rust backend up to float tolerance (near-ties may differ).

Seeding (k-means++ on a random subsample, or random rows) always runs on the host with the
same random stream, so both backends start from the same centres.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _native
from ._arrays import as_float_matrix, as_int, c_array, device_arg
from .codebooks import MAX_CODEBOOK_SIZE, Codebooks

#: k-means++ seeds from at most this many points per cluster (a uniform subsample): greedy D²
#: sampling over all N points costs (2 + ln K)·N·D per centre, more than the Lloyd iterations.
PP_POINTS_PER_CLUSTER = 16

#: Rows per chunk of the torch backend's distance matrix.
_TORCH_CHUNK = 16384


def _progress(total: int, desc: str, verbose: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not verbose, leave=False)


def _seed_rows(x_host: Any, n: int, k: int, init: str, rng: np.random.Generator) -> np.ndarray:
    """Row indices of the k initial centres (host-side, backend independent)."""
    if init == "random":
        return np.sort(rng.choice(n, size=k, replace=False))
    if init != "kmeans++":
        raise ValueError(f"init: expected 'kmeans++', 'random' or a (k, D) array, got {init!r}")
    m = min(n, max(k, PP_POINTS_PER_CLUSTER * k))
    sub = np.arange(n) if m == n else np.sort(rng.choice(n, size=m, replace=False))
    pts = c_array(x_host(sub), np.float32)
    trials = 2 + int(np.log(k))  # scikit-learn's greedy k-means++
    picked = _native.kmeans_pp(pts, k, trials, rng.random(1 + (k - 1) * trials))
    return sub[picked.astype(np.int64)]


class _RustOps:
    """numpy arrays; assignment and update in Rust.

    The unbalanced assignment keeps Hamerly's bounds between iterations (``_bounds``), so
    after the first few iterations only the points whose nearest centroid may have changed
    are searched; the labels are exactly those of a full search. The bound test reads every
    point (about a sixth of a full search's cost at D = 768), so where it prunes less than a
    fifth of them (diffuse residual levels) the next iterations search every point directly
    (their result refreshes the bounds): 1, then 2, 4, ... iterations while the tries keep
    failing, back to every iteration once a try pays.
    """

    #: A bounded try that searches more than this share of the points did not pay.
    POOR_PRUNING = 0.8

    def __init__(self, balanced: bool) -> None:
        self.balanced = balanced
        self._bounds: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._skip = 0  # iterations left to search without the bound test
        self._backoff = 1
        self.searched = 0

    def reset(self) -> None:
        self._bounds = None
        self._skip, self._backoff = 0, 1

    def host_rows(self, x: np.ndarray) -> Any:
        return lambda idx: x[idx]

    def assign(self, x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.balanced:
            labels, dist = _native.balanced_assign(centres, x)
            return labels, dist
        if self._bounds is None or len(self._bounds[0]) != len(x):
            n = len(x)
            labels, err, lower = np.zeros(n, np.uint32), np.zeros(n, np.float32), np.zeros(n, np.float32)
            previous = None
        else:
            labels, err, lower, previous = self._bounds
            if self._skip:
                previous, self._skip = None, self._skip - 1
        searched = _native.assign_bounded(centres, x, labels, err, lower, previous)
        if previous is not None:
            if searched > self.POOR_PRUNING * len(x):
                self._skip, self._backoff = self._backoff, 2 * self._backoff
            else:
                self._backoff = 1
        self.searched += searched
        self._bounds = (labels, err, lower, centres.copy())
        return labels.copy(), err.copy()

    def subtract(self, x: np.ndarray, centres: np.ndarray, labels: np.ndarray) -> None:
        _native.subtract_centroids(x, centres, labels)

    def update(self, x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        means, counts = _native.centroid_means(x, labels, k)
        return means, counts.astype(np.int64)

    def total(self, errors: np.ndarray) -> float:
        return float(errors.sum(dtype=np.float64))

    def worst(self, errors: np.ndarray, m: int) -> np.ndarray:
        return np.argsort(-errors, kind="stable")[:m]

    def same(self, a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.array_equal(a, b))

    def to_host(self, a: np.ndarray) -> np.ndarray:
        return a

    def index(self, idx: np.ndarray) -> np.ndarray:
        return idx


class _TorchOps:
    """torch tensors on any device (CUDA in practice); same algorithm as `_RustOps`."""

    def __init__(self, balanced: bool) -> None:
        import torch

        self.torch, self.balanced = torch, balanced

    def reset(self) -> None:
        pass

    def host_rows(self, x: Any) -> Any:
        return lambda idx: x[self.torch.as_tensor(idx, device=x.device)].cpu().numpy()

    def assign(self, x: Any, centres: Any) -> tuple[Any, Any]:
        torch = self.torch
        if self.balanced:  # the capacity-constrained assignment is sequential: Rust, on the host
            labels, dist = _native.balanced_assign(centres.cpu().numpy(), x.cpu().numpy())
            return torch.from_numpy(labels.astype(np.int64)).to(x.device), torch.from_numpy(dist).to(x.device)
        # ||x - c||² = ||x||² - 2x·c + ||c||² with x·c in float32 cancels badly for points far
        # from the origin: expand around the centres' mean (distances do not change under a
        # shift), and take each point's error at its centre exactly.
        shift = centres.mean(0)
        shifted = centres - shift
        c2 = (shifted.double() ** 2).sum(1)
        label_parts, error_parts = [], []
        for chunk in x.split(_TORCH_CHUNK):
            xs = chunk - shift
            x2 = (xs.double() ** 2).sum(1, keepdim=True)
            j = (x2 - 2.0 * (xs @ shifted.T).double() + c2).argmin(1)
            e = ((chunk - centres[j]).double() ** 2).sum(1)
            label_parts.append(j)
            error_parts.append(e.float())
        return torch.cat(label_parts), torch.cat(error_parts)

    def subtract(self, x: Any, centres: Any, labels: Any) -> None:
        x -= centres[labels]

    def update(self, x: Any, labels: Any, k: int) -> tuple[Any, Any]:
        torch = self.torch
        sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
        # Per-cluster sums of each chunk as segments of a sorted cumulative sum: O(chunk · D)
        # memory and work for any k (a one-hot matmul was chunk · k: 8.6 GB at k = 65,536), and
        # deterministic (no atomics, unlike index_add_ on CUDA); each cluster is added once per chunk.
        for xc, lc in zip(x.split(_TORCH_CHUNK), labels.split(_TORCH_CHUNK), strict=True):
            ls, order = torch.sort(lc, stable=True)
            cs = xc[order].double().cumsum(0)
            present, counts = torch.unique_consecutive(ls, return_counts=True)
            ends = counts.cumsum(0) - 1
            seg = cs[ends]
            seg[1:] -= cs[ends[:-1]]
            sums[present] += seg
        counts = torch.bincount(labels, minlength=k)
        means = (sums / counts.clamp_min(1)[:, None].double()).float()
        return means, counts.cpu().numpy().astype(np.int64)

    def total(self, errors: Any) -> float:
        return float(errors.double().sum())

    def worst(self, errors: Any, m: int) -> Any:
        return self.torch.argsort(-errors, stable=True)[:m]

    def same(self, a: Any, b: Any) -> bool:
        return bool(self.torch.equal(a, b))

    def to_host(self, a: Any) -> np.ndarray:
        return a.cpu().numpy()

    def index(self, idx: np.ndarray) -> Any:
        return self.torch.from_numpy(idx)


def _lloyd(ops: Any, x: Any, centres: Any, iters: int, desc: str, verbose: bool) -> tuple[Any, Any, Any, list[float]]:
    k = len(centres)
    ops.reset()
    labels, errors = ops.assign(x, centres)
    history = [ops.total(errors)]
    with _progress(iters, desc, verbose) as bar:
        for _ in range(iters):
            means, counts = ops.update(x, labels, k)
            empty = np.flatnonzero(counts == 0)
            keep = ops.index(np.flatnonzero(counts > 0))
            centres[keep] = means[keep]
            if len(empty):
                # Re-seed dead clusters with the worst-served points (largest error first).
                centres[ops.index(empty)] = x[ops.worst(errors, len(empty))]
            new_labels, errors = ops.assign(x, centres)
            history.append(ops.total(errors))
            bar.update(1)
            bar.set_postfix(sse=f"{history[-1]:.4g}")
            converged = ops.same(new_labels, labels) and not len(empty)
            labels = new_labels
            if converged:
                break
    return centres, labels, errors, history


def _ops(x: Any, backend: str, balanced: bool) -> tuple[Any, Any]:
    """(ops, x prepared for it). ``backend``: "auto", "rust" or "torch"."""
    is_tensor = type(x).__module__.startswith("torch")
    if backend not in ("auto", "rust", "torch"):
        raise ValueError(f"backend: expected 'auto', 'rust' or 'torch', got {backend!r}")
    if backend == "torch" or (backend == "auto" and is_tensor and x.device.type != "cpu"):
        import torch

        t = torch.as_tensor(x) if not is_tensor else x
        if t.ndim != 2:
            raise ValueError(f"x: expected a 2-D (N, D) array, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor, got {t.dtype}")
        if t.shape[1] < 1:
            raise ValueError(f"x: expected at least one dimension (N, D >= 1), got shape {tuple(t.shape)}")
        t = t.detach()
        # As the Rust path: |x| <= 1e15 (squared distances stay finite in float32), checked
        # before the cast so a float64 beyond float32's range is named, not turned into inf.
        big = t.abs() > 1e15
        bad = big | ~torch.isfinite(t)
        if bool(bad.any()):
            at = tuple(int(i) for i in torch.nonzero(bad)[0])
            raise ValueError(f"x: expected finite values within ±1e15, got {float(t[at])!r} at {at}")
        return _TorchOps(balanced), t.float().contiguous()
    xs = as_float_matrix(x, "x")
    bad = ~(np.abs(xs) <= 1e15)  # NaN too; named here, before the core meets it in a codebook
    if bad.any():
        at = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))
        raise ValueError(f"x: expected finite values within ±1e15, got {float(xs[at])!r} at {at}")
    return _RustOps(balanced), xs


def kmeans(
    x: Any,
    k: int,
    iters: int = 20,
    seed: int | np.random.Generator = 0,
    verbose: bool = False,
    desc: str = "k-means",
    balanced: bool = False,
    init: Any = "kmeans++",
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Lloyd's k-means.

    Args:
        x: (N, D) float points (numpy, or a torch tensor), N >= k.
        k: number of clusters.
        iters: maximum Lloyd iterations (stops early when no assignment changes).
        seed: int or numpy Generator; the same seed gives the same result on any thread count.
        balanced: assign with capacities (every cluster gets floor(N/k) or ceil(N/k) points,
            nearest (point, centre) pairs first) instead of to the nearest centre.
        init: ``"kmeans++"`` (greedy D² sampling, best of 2 + ln k draws per centre as in
            scikit-learn, over a uniform subsample of at most ``PP_POINTS_PER_CLUSTER * k``
            points), ``"random"`` (k distinct rows, as faiss does) or a (k, D) array of centres.
        backend: ``"auto"`` (torch for tensors on a GPU, else Rust), ``"rust"`` or ``"torch"``.

    Returns:
        centres (k, D) float32, labels (N,) int64, and the objective (sum of squared
        distances) after each iteration, which never increases in the unbalanced case (the
        greedy balanced assignment is not optimal, so there it may wobble slightly). Empty
        clusters are re-seeded with the points of largest error, so no centre is left unused.
    """
    ops, xs = _ops(x, backend, balanced)
    n = len(xs)
    k = as_int(k, "k")
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1..N = {n}, got {k}")
    iters = as_int(iters, "iters", 0)
    if not isinstance(seed, np.random.Generator):
        seed = as_int(seed, "seed", 0, 2**64 - 1)
    rng = np.random.default_rng(seed)
    if isinstance(init, str):
        rows = _seed_rows(ops.host_rows(xs), n, k, init, rng)
        centres = _take(xs, rows)
    else:
        c = as_float_matrix(init, "init")
        if c.shape != (k, xs.shape[1]):
            raise ValueError(f"init: expected shape ({k}, {xs.shape[1]}), got {c.shape}")
        if not (np.abs(c) <= 1e15).all():
            raise ValueError("init: expected finite centres within ±1e15, got NaN, inf or a larger value")
        centres = c.copy() if isinstance(ops, _RustOps) else ops.torch.from_numpy(c.copy()).to(xs.device)
    centres, labels, _, history = _lloyd(ops, xs, centres, iters, desc, verbose)
    return ops.to_host(centres), ops.to_host(labels).astype(np.int64), history


def _take(x: Any, rows: np.ndarray) -> Any:
    if isinstance(x, np.ndarray):
        return x[rows]  # fancy indexing copies
    import torch

    return x[torch.as_tensor(rows, device=x.device)].clone()


def check_sample(sample: Any) -> None:
    """Raises unless ``sample`` is None, a row count (int >= 1) or a share (float in (0, 1])."""
    ok = (isinstance(sample, (int, np.integer)) and not isinstance(sample, (bool, np.bool_)) and sample >= 1) or (
        isinstance(sample, (float, np.floating)) and 0 < sample <= 1
    )
    if sample is not None and not ok:
        raise ValueError(f"sample: expected None, an int >= 1 or a float in (0, 1], got {sample!r}")


def sample_rows(n: int, sample: int | float | None, rng: np.random.Generator) -> np.ndarray | None:
    """The sorted rows of a uniform subsample without replacement of ``sample`` rows (int) or
    that share of ``n`` (float); None when it would keep every row."""
    if sample is None:
        return None
    m = int(sample) if isinstance(sample, (int, np.integer)) else max(1, round(float(sample) * n))
    return np.sort(rng.choice(n, size=m, replace=False)) if m < n else None


class RQKMeans:
    """Residual k-means codebooks (as used by FORGE, GRID, OneRec).

    Args:
        levels: L, the number of code levels.
        codebook_size: K, codewords per level (<= 65536).
        iters: Lloyd iterations per level (each stops early once assignments settle).
        init: ``"kmeans++"`` (on a subsample of ``PP_POINTS_PER_CLUSTER * K`` points) or
            ``"random"``.
        seed: same inputs and seed give the same codebooks on any thread count.
        sample: fit on a uniform random subset of this many rows (int) or this fraction of the
            rows (float in (0, 1]); ``codes_`` still covers every row (assigned after the fit).
            ``None`` fits on all rows.
        balanced: OneRec's balanced RQ-KMeans: at every level each cluster gets floor(N/K) or
            ceil(N/K) of the fitted items (a capacity-constrained assignment in Rust).
        verbose: show a progress bar per level.
        backend: ``"auto"`` (torch when ``x`` is a GPU tensor or ``device`` is a GPU, else
            Rust), ``"rust"`` or ``"torch"``.

    ``fit(x, device=None)`` returns :class:`Codebooks`; ``history_`` keeps each level's
    objective curve and ``codes_`` the (N, L) uint16 codes of all rows of ``x`` (the balanced
    ones when ``balanced``; ``Codebooks.encode`` always assigns to the nearest codeword).
    """

    def __init__(
        self,
        levels: int = 3,
        codebook_size: int = 256,
        iters: int = 20,
        seed: int = 0,
        verbose: bool = True,
        balanced: bool = False,
        init: str = "kmeans++",
        sample: int | float | None = None,
        backend: str = "auto",
    ) -> None:
        levels = as_int(levels, "levels", 1)
        codebook_size = as_int(codebook_size, "codebook_size")
        if not 1 <= codebook_size <= MAX_CODEBOOK_SIZE:
            raise ValueError(f"codebook_size: expected 1..{MAX_CODEBOOK_SIZE}, got {codebook_size}")
        iters = as_int(iters, "iters", 0)
        seed = as_int(seed, "seed", 0)
        if init not in ("kmeans++", "random"):
            raise ValueError(f"init: expected 'kmeans++' or 'random', got {init!r}")
        check_sample(sample)
        if backend not in ("auto", "rust", "torch"):
            raise ValueError(f"backend: expected 'auto', 'rust' or 'torch', got {backend!r}")
        self.levels, self.codebook_size, self.iters = levels, codebook_size, iters
        self.seed, self.verbose, self.balanced = seed, verbose, balanced
        self.init, self.sample, self.backend = init, sample, backend
        self.history_: list[list[float]] = []
        self.codes_: np.ndarray | None = None

    def fit(self, x: Any, device: Any = None) -> Codebooks:
        """Learns codebooks from (N, D) embeddings (numpy or torch), N >= codebook_size.

        ``device`` (e.g. ``"cuda"``) moves ``x`` there and runs the torch backend when it is
        not the CPU.
        """
        backend = self.backend
        if device is not None:
            import torch

            device = device_arg(device)
            x = torch.as_tensor(x).to(device)
            if device.type != "cpu" and backend == "auto":
                backend = "torch"
        ops, xs = _ops(x, backend, self.balanced)
        n = len(xs)
        rng = np.random.default_rng(self.seed)
        fit_rows = sample_rows(n, self.sample, rng)
        x_fit = xs if fit_rows is None else _take(xs, fit_rows)
        if len(x_fit) < self.codebook_size:
            what = "rows" if fit_rows is None else "sampled rows"
            raise ValueError(f"x: expected at least codebook_size = {self.codebook_size} {what}, got {len(x_fit)}")
        residual = x_fit.clone() if not isinstance(x_fit, np.ndarray) else x_fit.copy()
        levels, codes, self.history_ = [], [], []
        for l in range(self.levels):
            try:
                rows = _seed_rows(ops.host_rows(residual), len(residual), self.codebook_size, self.init, rng)
                centres = _take(residual, rows)
                centres, labels, _, history = _lloyd(ops, residual, centres, self.iters, f"level {l}", self.verbose)
            except ValueError as e:
                if l and "beyond ±1e15" in str(e):  # the core checked a residual, not x: say so
                    raise ValueError(
                        f"x: its level-{l} residuals (x minus its level-0..{l - 1} centroids) go beyond ±1e15, "
                        "the core's limit (x within ±1e15 can leave residuals up to twice that): scale x down"
                    ) from None
                raise
            ops.subtract(residual, centres, labels)
            levels.append(ops.to_host(centres))
            codes.append(ops.to_host(labels))
            self.history_.append(history)
        meta = {"iters": self.iters, "seed": self.seed, "balanced": self.balanced, "init": self.init}
        if fit_rows is not None:
            meta["sample"] = len(fit_rows)
        method = "balanced-rq-kmeans" if self.balanced else "rq-kmeans"
        cb = Codebooks(np.stack(levels), method=method, meta=meta)
        if fit_rows is None:
            self.codes_ = np.stack(codes, 1).astype(np.uint16)
        else:
            self.codes_ = self._assign_all(cb, ops.to_host(xs) if not isinstance(xs, np.ndarray) else xs)
        return cb

    def _assign_all(self, cb: Codebooks, x: np.ndarray) -> np.ndarray:
        """Codes of every row after a sampled fit (balanced: capacity-constrained per level)."""
        if not self.balanced:
            return cb.encode(x)
        residual = x.copy()
        out = np.empty((len(x), cb.levels), dtype=np.uint16)
        for l in range(cb.levels):
            centres = np.ascontiguousarray(cb.level(l), dtype=np.float32)
            labels, _ = _native.balanced_assign(centres, residual)
            out[:, l] = labels
            _native.subtract_centroids(residual, centres, labels)
        return out
