"""RQ-VAE semantic IDs on real data: sidkit ``RQVAE`` vs the PyPI package semantic-id, in one run.

    python benches/compare_rqvae.py                          # Beauty, TF-IDF/LSA D = 64, 3 x 256
    python benches/compare_rqvae.py --emb text --epochs 200  # all-MiniLM-L6-v2 (D = 384; text extra)

Both libraries train TIGER's RQ-VAE on the same item embeddings with the same architecture
(MLP 512-256-128 to a 32-d latent and back, 3 levels x 256 codewords, beta 0.25), the same
optimiser step size, batch and number of epochs, on the CPU. Rows:

- sidkit ``RQVAE.fit`` (its codebooks initialised by sidkit's RQ-KMeans on encoded items);
- semantic-id ``RQVAE`` at the same hyperparameters with its k-means initialisation
  (``kmeans_init=True``), and with its defaults but the same sizes and epochs (``lr=1e-4``, no
  k-means initialisation). semantic-id runs with ``verbose=True`` (output hidden): with
  ``verbose=False`` its fit keeps the weights of the *first* epoch (it restores the state with
  the lowest collision rate on a monitor batch, and without ``verbose`` that rate is recorded as
  0 for every epoch, so epoch 1 wins); ``--quiet-peer`` adds that row.

Every model is scored the same way, on all items: the SIDs it assigns (``encode``), their
collision rate before resolution and per-level perplexity (:func:`sidkit.metrics.report`), and
the input-space reconstruction error of ``decode(encode(x))`` (mean over items of the sum over
dimensions, and its ratio to the sum of ||x||^2). Times are wall seconds of ``fit`` and of
encoding all items, with ``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/amazon2014", help="S3-Rec or RecBole data directory")
    p.add_argument("--dataset", default="Beauty", help="dataset name inside --data")
    p.add_argument("--emb", choices=["tfidf", "text"], default="tfidf", help="item embeddings (text: MiniLM)")
    p.add_argument("--dim", type=int, default=64, help="TF-IDF/LSA dimensions")
    p.add_argument("--epochs", type=int, default=100, help="training epochs, every model")
    p.add_argument("--batch-size", type=int, default=1024, help="training batch, every model")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam(W) learning rate (sidkit and the first peer row)")
    p.add_argument("--levels", type=int, default=3, help="codebook levels L")
    p.add_argument("--k", type=int, default=256, help="codewords per level")
    p.add_argument("--latent", type=int, default=32, help="latent dimension")
    p.add_argument("--threads", type=int, default=2, help="torch and sidkit threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the embeddings and every model")
    p.add_argument("--skip-defaults", action="store_true", help="skip semantic-id's default-hyperparameter row")
    p.add_argument("--quiet-peer", action="store_true", help="also run semantic-id with verbose=False")
    p.add_argument("--out", help="also write the markdown table to this file")
    return p.parse_args()


args = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "SIDKIT_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import sidkit as sk  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(args.threads)
sk.set_num_threads(args.threads)
HIDDEN = [512, 256, 128]


def embeddings() -> np.ndarray:
    from sidkit.data import item_embeddings, load_dataset, text_embeddings

    ds = load_dataset(args.data, args.dataset)
    x = text_embeddings(ds) if args.emb == "text" else item_embeddings(ds, args.dim, seed=args.seed)
    return np.ascontiguousarray(x, dtype=np.float32)


def sidkit_model(x: np.ndarray) -> tuple[float, object]:
    vae = sk.RQVAE(x.shape[1], args.latent, HIDDEN, args.levels, args.k, seed=args.seed)
    t = time.perf_counter()
    vae.fit(x, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, verbose=False)
    return time.perf_counter() - t, vae


def semantic_id_model(x: np.ndarray, kmeans_init: bool, lr: float, verbose: bool) -> tuple[float, object]:
    from semantic_id import RQVAE

    torch.manual_seed(args.seed)  # semantic-id draws its weights and batches from the global RNG
    vae = RQVAE(
        in_dim=x.shape[1],
        num_emb_list=[args.k] * args.levels,
        e_dim=args.latent,
        layers=HIDDEN,
        beta=0.25,
        kmeans_init=kmeans_init,
        lr=lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=verbose,
    )
    sink = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        vae.fit(x)
    return time.perf_counter() - t, vae


def score(x: np.ndarray, vae: object) -> dict[str, float]:
    sink = io.StringIO()  # semantic-id's encode draws a progress bar when verbose
    t = time.perf_counter()
    with contextlib.redirect_stderr(sink):
        codes = np.asarray(vae.encode(x)).astype(np.int64)  # type: ignore[attr-defined]
    encode_s = time.perf_counter() - t
    recon = np.asarray(vae.decode(codes), dtype=np.float64)  # type: ignore[attr-defined]
    err = ((recon - x) ** 2).sum(1)
    rep = sk.metrics.report(x, codes, sizes=[args.k] * args.levels, seed=args.seed)
    return {
        "encode_s": encode_s,
        "mse": float(err.mean()),
        "rel": float(err.sum() / (x.astype(np.float64) ** 2).sum()),
        "collisions": rep["collisions"]["collision_rate"],
        "unique": rep["collisions"]["unique_sids"],
        "max_group": rep["collisions"]["max_group"],
        "perplexity": [lv["perplexity"] for lv in rep["levels"]],
        "utilisation": [lv["utilisation"] for lv in rep["levels"]],
    }


def main() -> int:
    x = embeddings()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads; python "
        f"{platform.python_version()}; sidkit {sk.__version__}, torch {torch.__version__}"
    )
    print(
        f"{args.dataset}: {len(x):,} items x D {x.shape[1]} ({args.emb}); {args.levels} x {args.k}, latent "
        f"{args.latent}, MLP {'-'.join(map(str, HIDDEN))}, {args.epochs} epochs, batch {args.batch_size}\n"
    )
    peers = [
        ("**sidkit RQVAE**", lambda: sidkit_model(x)),
        (f"semantic-id RQVAE (lr {args.lr:g}, kmeans_init)", lambda: semantic_id_model(x, True, args.lr, True)),
    ]
    if not args.skip_defaults:
        peers.append(
            ("semantic-id RQVAE (defaults: lr 1e-4, no k-means init)", lambda: semantic_id_model(x, False, 1e-4, True))
        )
    if args.quiet_peer:
        peers.append(
            (
                f"semantic-id RQVAE (lr {args.lr:g}, kmeans_init, verbose=False)",
                lambda: semantic_id_model(x, True, args.lr, False),
            )
        )
    rows = []
    for name, fit in peers:
        seconds, vae = fit()
        s = score(x, vae)
        rows.append((name, seconds, s))
        print(f"  {name}: fit {seconds:.1f} s, MSE {s['mse']:.4f}, collisions {s['collisions']:.4f}", file=sys.stderr)
    base = rows[0][1]
    lines = [
        "| method | fit s | fit time / sidkit | encode s | MSE per item | relative error | collision rate "
        "| unique SIDs | largest group | perplexity per level |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, seconds, s in rows:
        perplexity = " / ".join(f"{p:.0f}" for p in s["perplexity"])
        lines.append(
            f"| {name} | {seconds:.1f} | {seconds / base:.2f}x | {s['encode_s']:.3f} | {s['mse']:.4f} | {s['rel']:.4f} "
            f"| {s['collisions']:.4f} | {s['unique']:,} | {s['max_group']} | {perplexity} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
