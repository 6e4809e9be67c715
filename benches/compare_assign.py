"""RQ assignment speed: sidkit vs numpy, torch CPU and faiss, side by side in one run.

    python benches/compare_assign.py                       # 1M x 128 and 200k x 768, L=3, K=256
    python benches/compare_assign.py --sizes 100000x128 --repeat 1

Every peer encodes the same points with the same codebooks. Greedy peers: numpy and torch use
the matrix-product trick (||c||² - 2·r·cᵀ) in 16k-row chunks; faiss runs IndexFlatL2 per level
and ResidualQuantizer.compute_codes (beam 1, and beam 5 with and without the codebook-product
LUT). The table gives seconds (best of --repeat), items/s, GFLOP/s counted as 2·N·K·D·L (what
the distance products cost; beam search does more work than that), the ratio of the best peer's
time to sidkit's, and agreement with sidkit's codes. The roofline is this machine's best float32
matrix-product rate (numpy's BLAS or torch, 4096³) on the same thread count.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000000x128,200000x768", help="comma-separated NxD")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--skip", default="", help="comma-separated peers to skip (numpy,torch,faiss)")
    p.add_argument("--out", help="also write the markdown table to this file")
    return p.parse_args()


args = parse_args()
# Thread counts must be set before numpy/torch/faiss load their BLAS.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "SIDKIT_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import sidkit as sk  # noqa: E402
from _timing import best_time  # noqa: E402

sk.set_num_threads(args.threads)
skip = set(filter(None, args.skip.split(",")))
for _peer, _module in (("torch", "torch"), ("faiss", "faiss")):
    if _peer not in skip:  # a peer that is not installed is skipped, said once
        try:
            __import__(_module)
        except ImportError:
            print(f"  {_peer} is not installed: skipped (pip install '.[bench]')", file=sys.stderr)
            skip.add(_peer)


def make_problem(n: int, d: int, levels: int, k: int, seed: int = 0):
    """Clustered points and RQ-KMeans codebooks fitted on a sample (a realistic RQ geometry)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1024, d)).astype(np.float32)
    x = centres[rng.integers(1024, size=n)] + 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    sample = x[rng.choice(n, size=min(n, 16 * k), replace=False)]
    cb = sk.RQKMeans(levels, k, iters=5, seed=seed, verbose=False).fit(sample)
    return x, cb.to_numpy()


def numpy_greedy(x, cbs, chunk=16384):
    codes = np.empty((len(x), len(cbs)), dtype=np.int64)
    for s in range(0, len(x), chunk):
        r = x[s : s + chunk].copy()
        for l, c in enumerate(cbs):
            j = ((c * c).sum(1) - 2.0 * (r @ c.T)).argmin(1)
            codes[s : s + chunk, l] = j
            r -= c[j]
    return codes


def torch_greedy(x, cbs, chunk=16384):
    import torch

    xt, ct = torch.from_numpy(x), torch.from_numpy(cbs)
    norms = (ct * ct).sum(-1)
    codes = torch.empty((len(x), len(cbs)), dtype=torch.int64)
    with torch.inference_mode():
        for s in range(0, len(x), chunk):
            r = xt[s : s + chunk].clone()
            for l in range(len(cbs)):
                j = torch.addmm(norms[l], r, ct[l].T, alpha=-2.0).argmin(1)
                codes[s : s + chunk, l] = j
                r -= ct[l][j]
    return codes.numpy()


def faiss_flat(x, cbs):
    import faiss

    codes = np.empty((len(x), len(cbs)), dtype=np.int64)
    r = x.copy()
    for l, c in enumerate(cbs):
        index = faiss.IndexFlatL2(c.shape[1])
        index.add(c)
        _, j = index.search(r, 1)
        codes[:, l] = j[:, 0]
        r -= c[j[:, 0]]
    return codes


def faiss_rq(cbs, beam: int, lut: bool):
    import faiss

    levels, k, d = cbs.shape
    if k != 256:  # compute_codes packs nbits per level; the unpacking below reads one byte each
        raise SystemExit(f"faiss RQ peer: --k 256 only (one byte per level), got {k}; or --skip faiss")
    rq = faiss.ResidualQuantizer(d, levels, 8)
    faiss.copy_array_to_vector(cbs.ravel(), rq.codebooks)
    rq.is_trained = True
    rq.max_beam_size = beam
    rq.use_beam_LUT = int(lut)
    if lut:
        rq.compute_codebook_tables()

    def run(x):
        packed = rq.compute_codes(x)  # nbits=8: one byte per level
        return packed[:, :levels].astype(np.int64)

    return run


def residual_error(x, cbs, codes) -> float:
    r = x.astype(np.float64)
    for l in range(len(cbs)):
        r -= cbs[l][codes[:, l]]
    return float((r * r).sum(1).mean())


def sgemm_gflops() -> tuple[float, str]:
    """The best float32 matrix-product rate here: numpy's BLAS or torch's, 4096³."""
    a = np.random.default_rng(1).standard_normal((4096, 4096), dtype=np.float32)
    rates = {"numpy": 2 * 4096**3 / best_time(lambda: a @ a, 3)[0] / 1e9}
    if "torch" not in skip:
        import torch

        torch.set_num_threads(args.threads)
        t = torch.from_numpy(a)
        rates["torch"] = 2 * 4096**3 / best_time(lambda: t @ t, 3)[0] / 1e9
    best = max(rates, key=rates.get)
    return rates[best], ", ".join(f"{k} {v:.0f}" for k, v in rates.items())


def bench_size(size: str, roof: float) -> list[str]:
    """Times every method on one N x D problem; returns its markdown table."""
    n, d = (int(v) for v in size.lower().split("x"))
    x, cbs = make_problem(n, d, args.levels, args.k)
    cb = sk.Codebooks(cbs)
    flops = 2.0 * n * args.k * d * args.levels
    runs: list[tuple[str, float, np.ndarray]] = []

    def add(name, fn, repeat=args.repeat):
        t, codes = best_time(fn, repeat)
        runs.append((name, t, np.asarray(codes, dtype=np.int64)))
        print(f"  {size} {name}: {t:.3f} s", file=sys.stderr, flush=True)

    add("sidkit greedy", lambda: cb.encode(x))
    add(f"sidkit beam {args.beam}", lambda: cb.encode(x, beam=args.beam))
    if "numpy" not in skip:
        add("numpy matmul trick", lambda: numpy_greedy(x, cbs))
    if "torch" not in skip:
        import torch

        torch.set_num_threads(args.threads)
        add("torch CPU matmul trick", lambda: torch_greedy(x, cbs))
    if "faiss" not in skip:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        add("faiss IndexFlatL2 per level", lambda: faiss_flat(x, cbs))
        greedy_rq = faiss_rq(cbs, 1, False)
        add("faiss RQ compute_codes beam 1", lambda: greedy_rq(x))
        beam_lut = faiss_rq(cbs, args.beam, True)
        add(f"faiss RQ compute_codes beam {args.beam} LUT", lambda: beam_lut(x))
        if n * d <= 200_000 * 128:  # the no-LUT beam is slow: only on small problems
            beam_plain = faiss_rq(cbs, args.beam, False)
            add(f"faiss RQ compute_codes beam {args.beam}", lambda: beam_plain(x), 1)

    ref = {False: runs[0][2], True: runs[1][2]}
    greedy_peers = [t for name, t, _ in runs[2:] if "beam" not in name or name.endswith("beam 1")]
    beam_peers = [t for name, t, _ in runs[2:] if f"beam {args.beam}" in name]
    lines = [
        f"### N = {n:,}, D = {d}, L = {args.levels}, K = {args.k}",
        "",
        "| method | seconds | items/s | GFLOP/s | vs sidkit | same codes | mean residual² |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t, codes in runs:
        is_beam = f"beam {args.beam}" in name
        base = runs[1][1] if is_beam else runs[0][1]
        same = (codes == ref[is_beam]).all(1).mean()
        lines.append(
            f"| {name} | {t:.3f} | {n / t:,.0f} | {flops / t / 1e9:.0f} | {t / base:.2f}x | {same:.2%} | "
            f"{residual_error(x, cbs, codes):.5g} |"
        )
    if greedy_peers:
        lines.append(
            f"\nsidkit greedy speed-up over the best greedy peer: **{min(greedy_peers) / runs[0][1]:.2f}x**; "
            f"fp32 floor at the roofline: {flops / roof / 1e9:.3f} s "
            f"(sidkit greedy reaches {flops / roof / 1e9 / runs[0][1]:.0%} of the roofline throughput)"
        )
    if beam_peers:
        lines.append(
            f"sidkit beam {args.beam} speed-up over faiss beam {args.beam}: **{min(beam_peers) / runs[1][1]:.2f}x**"
        )
    return [*lines, ""]


def main() -> int:
    import importlib.metadata as md

    versions = {}
    for pkg in ("sidkit", "numpy", "torch", "faiss-cpu"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    roof, rates = sgemm_gflops()
    lines = [
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads; "
        f"python {sys.version.split()[0]}; " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"roofline: best float32 sgemm 4096³ = {roof:.0f} GFLOP/s ({rates})",
        "",
    ]
    for size in args.sizes.split(","):
        lines += bench_size(size, roof)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
