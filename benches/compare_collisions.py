"""Collision resolution speed: sidkit vs pandas and numpy, side by side in one run.

    python benches/compare_collisions.py                  # 1M and 10M code tuples
    python benches/compare_collisions.py --sizes 1000000 --repeat 1

Codes are 3 levels x 256, clustered (Zipf-distributed SIDs, so many collide), item ids
0..N-1. Suffix numbering (TIGER): sidkit ``resolve(codes)`` end to end (validation, grouping,
numbering, the SidTable) against pandas ``groupby(...).cumcount()`` and a numpy stable-argsort
numbering; all three must give identical suffixes. Also reassign (fixed length, needs
embeddings: 1M x 32 clustered points on RQ-KMeans codebooks) and SidTable lookups both ways.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import sidkit as sk
from _timing import best_time


def clustered_codes(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) uint16 codes over n/4 distinct SIDs with power-law popularity (p ∝ 1/(rank + 50))."""
    rng = np.random.default_rng(seed)
    vocab = rng.integers(0, 256, size=(max(n // 4, 1), 3), dtype=np.uint16)
    weights = 1.0 / (np.arange(len(vocab)) + 50.0)
    pick = rng.choice(len(vocab), size=n, p=weights / weights.sum())
    return vocab[pick]


def pandas_suffix(codes: np.ndarray) -> np.ndarray:
    import pandas as pd

    df = pd.DataFrame({"a": codes[:, 0], "b": codes[:, 1], "c": codes[:, 2]})
    return df.groupby(["a", "b", "c"], sort=False).cumcount().to_numpy()


def numpy_suffix(codes: np.ndarray) -> np.ndarray:
    key = (codes[:, 0].astype(np.int64) << 16) | (codes[:, 1].astype(np.int64) << 8) | codes[:, 2]
    order = np.argsort(key, kind="stable")
    k = key[order]
    start = np.ones(len(k), bool)
    start[1:] = k[1:] != k[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(len(k)), 0))
    out = np.empty(len(k), np.int64)
    out[order] = np.arange(len(k)) - first
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000000,10000000")
    p.add_argument("--reassign-n", type=int, default=1_000_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    sk.set_num_threads(args.threads)
    # pandas' groupby and numpy's argsort run on one thread; sidkit's resolve on --threads.
    lines = [f"sidkit on {args.threads} threads, pandas and numpy on one (their only mode); best of {args.repeat}", ""]
    lines += [
        "### Suffix numbering (3 x 256, Zipf SIDs)",
        "",
        "| N | sidkit resolve | pandas cumcount | numpy argsort | speed-up vs best peer | identical |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for n in (int(v) for v in args.sizes.split(",")):
        codes = clustered_codes(n)
        t_sk, table = best_time(lambda codes=codes: sk.resolve(codes, sizes=(256, 256, 256)), args.repeat)
        t_pd, ref_pd = best_time(lambda codes=codes: pandas_suffix(codes), args.repeat)
        t_np, ref_np = best_time(lambda codes=codes: numpy_suffix(codes), args.repeat)
        same = np.array_equal(table.codes[:, 3], ref_pd) and np.array_equal(ref_pd, ref_np)
        if not same:  # a faster wrong answer wins nothing
            raise SystemExit(f"suffix numbering at N = {n:,}: sidkit, pandas and numpy disagree")
        lines.append(
            f"| {n:,} | {t_sk:.3f} s | {t_pd:.3f} s | {t_np:.3f} s | **{min(t_pd, t_np) / t_sk:.1f}x** | {same} |"
        )
        print(f"  suffix {n:,}: sidkit {t_sk:.3f} pandas {t_pd:.3f} numpy {t_np:.3f}", file=sys.stderr)

    n = args.reassign_n
    if n <= 0:  # --reassign-n 0: suffix numbering only
        print("\n".join(lines))
        return 0
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((2000, 32)).astype(np.float32)
    x = centres[rng.integers(0, 2000, n)] + 0.5 * rng.standard_normal((n, 32), dtype=np.float32)
    cb = sk.RQKMeans(3, 256, iters=5, verbose=False).fit(x[rng.choice(n, min(n, 50_000), replace=False)])
    codes = cb.encode(x)
    t_re, table = best_time(lambda: sk.resolve(codes, "reassign", embeddings=x, codebooks=cb), 1)
    rep = table.report
    lines += [
        "",
        f"### Reassign at N = {n:,} (D = 32, 3 x 256)",
        "",
        f"{t_re:.2f} s: {rep['colliding_groups']:,} colliding groups, {rep['items_moved']:,} items moved, "
        f"mean added squared error {rep['mean_added_error']:.4g}, unresolved {rep['unresolved']}",
    ]

    queries = table.item_ids[rng.permutation(len(table))]
    table.sid(queries[:10])  # build the indices once
    table.items(table.codes[:10])
    t_sid, _ = best_time(lambda: table.sid(queries), args.repeat)
    t_items, _ = best_time(lambda: table.items(table.codes), args.repeat)
    lines += [
        "",
        "### SidTable lookups",
        "",
        f"sid(item_ids): {n / t_sid / 1e6:.1f} M lookups/s; items(codes): {n / t_items / 1e6:.1f} M lookups/s",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
