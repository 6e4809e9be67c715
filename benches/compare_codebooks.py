"""RQ-KMeans codebook learning: sidkit vs faiss and the PyPI package semantic-id, in one run.

    python benches/compare_codebooks.py                      # 100k x 128 and 100k x 768, 3 x 256
    python benches/compare_codebooks.py --sizes 100000x128 --semantic-id-defaults

Every peer fits 3 levels x 256 codewords with 20 Lloyd iterations per level on the same points,
and every result is scored the same way: all points are encoded with sidkit's exact greedy
assignment against that peer's codebooks, and the table gives the mean squared reconstruction
error per point (Σ over dimensions) and its ratio to Σ||x||². Peers:

- sidkit ``RQKMeans`` (k-means++ seeding on a 16·K subsample, Rust assignment + update);
- faiss ``Kmeans`` per level on the residuals, on all points (``max_points_per_centroid``
  raised) and with faiss's default, which silently trains on 256 points per centroid
  (65,536 of 100k);
- semantic-id ``RQKMeans`` (sklearn ``KMeans`` per level) at equal work (``max_iter=20``,
  ``n_init=1``) and, with ``--semantic-id-defaults``, as users run it (``n_init=10``,
  ``max_iter=100``).

The ratio column is the peer's time over sidkit's (> 1: sidkit is faster). The iterations
column is what each peer ran per level in its last fit: sidkit stops a level when no label
changes, sklearn on its tolerance (semantic-id's n_init=10 counts the best init's), faiss runs
all of them; a peer that ran fewer did less work for its time.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000x128,100000x768", help="comma-separated NxD")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    p.add_argument("--skip", default="", help="comma-separated peers to skip (faiss,semantic-id)")
    p.add_argument("--semantic-id-defaults", action="store_true", help="also time semantic-id's defaults")
    p.add_argument("--out", help="also write the markdown table to this file")
    return p.parse_args()


args = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "SIDKIT_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import sidkit as sk  # noqa: E402
from _timing import best_time  # noqa: E402

sk.set_num_threads(args.threads)
skip = set(filter(None, args.skip.split(",")))


def make_points(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Clustered points with a long-tailed cluster mass (item embeddings are not uniform)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1024, d)).astype(np.float32)
    weights = rng.pareto(1.5, 1024) + 1e-3
    which = rng.choice(1024, size=n, p=weights / weights.sum())
    return centres[which] + 0.5 * rng.standard_normal((n, d), dtype=np.float32)


#: Lloyd iterations each peer actually ran per level in its last fit (a peer that stops on
#: convergence or a tolerance does less work than ``--iters``; the table shows it).
ITERS: dict[str, list[int]] = {}


def sidkit_fit(x: np.ndarray) -> np.ndarray:
    m = sk.RQKMeans(args.levels, args.k, iters=args.iters, seed=0, verbose=False)
    books = m.fit(x).to_numpy()
    ITERS["sidkit"] = [len(h) - 1 for h in m.history_]  # history_[l][0] is the seeding's error
    return books


def faiss_fit(x: np.ndarray, all_points: bool) -> np.ndarray:
    import faiss

    residual, books = x.copy(), []
    ITERS["faiss"] = []
    for l in range(args.levels):
        # ClusteringParameters are read at construction: setting the attribute later is a no-op.
        extra = {"max_points_per_centroid": len(x) // args.k + 1} if all_points else {}
        km = faiss.Kmeans(x.shape[1], args.k, niter=args.iters, seed=l + 1, verbose=False, **extra)
        km.train(residual)
        ITERS.setdefault("faiss", []).append(len(km.obj))
        _, j = km.index.search(residual, 1)
        residual -= km.centroids[j[:, 0]]
        books.append(km.centroids.copy())
    return np.stack(books)


def semantic_id_fit(x: np.ndarray, n_init: int, max_iter: int) -> np.ndarray:
    from semantic_id import RQKMeans
    from sklearn.cluster import KMeans

    # sklearn stops on its tolerance: record each level's n_iter_ (the fit is wrapped, not changed).
    ITERS["semantic-id"], fit = [], KMeans.fit

    def counted(self, *a, **kw):  # type: ignore[no-untyped-def]
        out = fit(self, *a, **kw)
        ITERS["semantic-id"].append(int(self.n_iter_))
        return out

    KMeans.fit = counted
    try:
        m = RQKMeans(n_levels=args.levels, n_clusters=args.k, max_iter=max_iter, n_init=n_init, random_state=0)
        m.fit(x)
    finally:
        KMeans.fit = fit
    return np.stack([np.asarray(c, dtype=np.float32) for c in m.codebooks_])


def score(x: np.ndarray, books: np.ndarray) -> tuple[float, float]:
    cb = sk.Codebooks(books)
    err = ((x - cb.decode(cb.encode(x))) ** 2).sum(1, dtype=np.float64)
    return float(err.mean()), float(err.sum() / (x.astype(np.float64) ** 2).sum())


def main() -> None:
    rows = []
    for size in args.sizes.split(","):
        n, d = map(int, size.lower().split("x"))
        x = make_points(n, d)
        peers = [("sidkit RQKMeans", sidkit_fit)]
        if "faiss" not in skip:
            peers.append(("faiss Kmeans, all points", lambda x: faiss_fit(x, True)))
            peers.append(("faiss Kmeans, default subsample", lambda x: faiss_fit(x, False)))
        if "semantic-id" not in skip:
            peers.append(
                (f"semantic-id RQKMeans (n_init=1, max_iter={args.iters})", lambda x: semantic_id_fit(x, 1, args.iters))
            )
            if args.semantic_id_defaults:
                peers.append(
                    ("semantic-id RQKMeans (defaults: n_init=10, max_iter=100)", lambda x: semantic_id_fit(x, 10, 100))
                )
        base = None
        for name, fit in peers:
            print(f"{n}x{d}: {name} ...", file=sys.stderr, flush=True)
            try:
                t, books = best_time(lambda fit=fit, x=x: fit(x), args.repeat)
            except ImportError as e:
                print(f"  skipped ({e})", file=sys.stderr)
                continue
            mse, rel = score(x, books)
            base = base or t
            ran = ITERS.get(name.split()[0], [])
            rows.append((f"{n}x{d}", name, "/".join(map(str, ran)) or "?", t, t / base, mse, rel))
    lines = [
        f"RQ-KMeans fit, {args.levels} levels x {args.k}, {args.iters} iterations, {args.threads} threads, "
        f"{platform.processor() or platform.machine()}, numpy {np.__version__}",
        "",
        "| points | method | iterations run per level | seconds | time / sidkit | MSE per point | relative error |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {s} | {m} | {i} | {t:.2f} | {r:.2f}x | {e:.4f} | {q:.4f} |" for s, m, i, t, r, e, q in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
