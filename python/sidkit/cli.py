"""Command line: ``sidkit demo|fit|encode|resolve|metrics|bench|compare|recommend|evaluate``
(or ``python -m sidkit``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class _Stages:
    """Times named stages of a run."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float]] = []

    def __call__(self, name: str):  # type: ignore[no-untyped-def]
        stages = self

        class _T:
            def __enter__(self) -> None:
                self.t = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                stages.rows.append((name, time.perf_counter() - self.t))

        return _T()


def demo(args: argparse.Namespace) -> int:
    import sidkit as sk
    from sidkit.data import item_embeddings, synthetic_catalog
    from sidkit.metrics import collisions

    if args.threads:
        sk.set_num_threads(args.threads)
    t = _Stages()
    if args.data:
        from sidkit.data import load_dataset

        with t("load"):
            ds = load_dataset(args.data, args.dataset)
        title = (
            f"{ds.name} ({args.data}): {ds.num_items:,} items, {len(ds.sequences):,} users, "
            f"{ds.num_interactions:,} interactions"
        )
        source = "text + attributes" if ds.item_texts else "attributes"
        with t(f"embed ({source}, TF-IDF SVD, D={args.dim})"):
            emb = item_embeddings(ds, args.dim, args.seed)
    else:
        title = "SYNTHETIC catalog (hierarchical Gaussian clusters; pass --data DIR for real data)"
        with t("generate"):
            emb = synthetic_catalog(args.items, args.dim, seed=args.seed)
    print(f"sidkit {sk.__version__} demo: {title}")
    with t(f"fit RQ-KMeans ({args.levels} x {args.codebook_size}, {args.iters} iters)"):
        cb = sk.RQKMeans(args.levels, args.codebook_size, args.iters, args.seed, verbose=args.verbose).fit(emb)
    with t("encode greedy"):
        codes, err = cb.encode(emb, return_errors=True)
    with t(f"encode beam={args.beam}"):
        codes_b, err_b = cb.encode(emb, beam=args.beam, return_errors=True)
    with t("resolve collisions (suffix)"):
        table = sk.resolve(codes, embeddings=emb, codebooks=cb)
    with t("resolve collisions (reassign)"):
        try:
            fixed = sk.resolve(codes, "reassign", embeddings=emb, codebooks=cb)
        except ValueError as e:  # a catalog too large for the code space
            fixed, fixed_error = None, str(e)
    decode_report = _decode_demo(sk, ds, emb, table, args, t) if args.data else None
    from sidkit.metrics import report

    with t("SID quality report"):
        seqs = [s - 1 for s in ds.sequences] if args.data else None
        quality = report(emb, codes, cb, sequences=seqs, seed=args.seed)
    total = float((emb.astype(np.float64) ** 2).sum())
    print(f"\n{'stage':<44}{'seconds':>10}")
    for name, sec in t.rows:
        print(f"{name:<44}{sec:>10.3f}")
    print(f"\nitems {len(emb):,}, levels {cb.levels}, codebook sizes {cb.sizes}, threads {sk.get_num_threads()}")
    for label, c, errs in (("greedy", codes, err), (f"beam={args.beam}", codes_b, err_b)):
        s = collisions(c)
        rel = float(errs[:, -1].sum(dtype=np.float64)) / total
        print(
            f"{label:>8}: unique SIDs {s['unique_sids']:,} / {s['items']:,} "
            f"(collision rate {s['collision_rate']:.1%}), largest collision group {s['max_group']}, "
            f"relative reconstruction error {rel:.4f}"
        )
    r = table.report
    print(
        f"  suffix: {len(table):,} unique SIDs of {table.levels} levels {table.sizes} "
        f"({r['colliding_groups']:,} collision groups, extra level size {r['suffix_size']})"
    )
    if fixed is not None:
        r = fixed.report
        print(
            f"reassign: {len(fixed):,} unique SIDs of {fixed.levels} levels, {r['items_moved']:,} items moved, "
            f"mean added squared error {r['mean_added_error']:.4g}"
        )
    else:
        print(f"reassign: not possible here: {fixed_error}")
    if decode_report:
        print(decode_report)
    lv = ", ".join(f"{q['perplexity']:.0f}" for q in quality["levels"])
    line = (
        f" quality: code perplexity per level {lv}; prefix collision rate per depth "
        f"{', '.join(f'{v:.1%}' for v in quality['prefix_collision_rate'])}; similarity-depth Spearman "
        f"{quality['similarity_depth_spearman']:.3f}; neighbour recall@10 {quality['neighbour_recall@10']:.3f}"
    )
    if args.data:
        line += (
            f"; embedding hit rate@30 {quality['hit_rate@30']:.3f} raw vs "
            f"{quality['hit_rate_quantised@30']:.3f} quantised"
        )
    print(line)
    if args.save:
        out = Path(args.save)
        out.mkdir(parents=True, exist_ok=True)
        cb.save(out / "codebooks.npz")
        np.save(out / "codes.npy", codes)
        table.save(out / "sids.npz")
        print(f"\nwrote {out / 'codebooks.npz'}, {out / 'codes.npy'} and {out / 'sids.npz'}")
    if args.data and args.train:
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError:
            print("\nskipping the training stage: it needs torch and transformers (pip install '.[torch,hf]')")
            return 0
        _train_demo(args)
    return 0


def _train_demo(args: argparse.Namespace) -> None:
    """The whole pipeline at the small preset: train TIGER and SASRec, evaluate both."""
    from sidkit import bench

    cfg = bench.merge(
        bench.merge(bench.DEFAULTS, bench.SMALL),
        {
            "data": {"path": args.data, "dataset": args.dataset, "dim": args.dim},
            "sid": {"levels": args.levels, "codebook_size": args.codebook_size, "iters": args.iters},
            "run": {"seed": args.seed, "threads": args.threads},
        },
    )
    print(
        f"\nTraining TIGER at the small preset ({f'{n:,}' if (n := cfg['train']['max_examples']) else 'all'} "
        f"sliding-window examples, {cfg['train']['epochs']} epoch, {cfg['train']['test_users']:,} test users; "
        "the full run: "
        "`sidkit bench --config configs/beauty.toml`) ...",
        flush=True,
    )
    r = bench.run(cfg, args.out, verbose=args.verbose)
    print(bench.markdown(r).split("\nPer-epoch curve:")[0])
    print(f"wrote {args.out}/" + ", ".join(_written(Path(args.out))))
    print(f"next items for a history: sidkit recommend {args.out} --history ITEM_ID ...")


def _decode_demo(sk, ds, emb, table, args, t) -> str:  # type: ignore[no-untyped-def]
    """Builds the trie and decodes next items for sampled users with a content-similarity
    scorer (no trained model): constrained beam search vs exhaustive ranking by the same
    scores, Recall/NDCG@10 against each user's held-out last item."""
    from sidkit.retrieval import PrefixScorer

    with t("build trie"):
        trie = sk.Trie.from_table(table)
    rng = np.random.default_rng(args.seed)
    eligible = np.flatnonzero([len(s) >= 2 for s in ds.sequences])  # a history item and a target
    if len(eligible) == 0:
        raise ValueError("data: expected users with at least 2 interactions to decode for, found none")
    users = rng.choice(eligible, size=min(args.users, len(eligible)), replace=False)
    last = np.array([ds.sequences[u][-2] for u in users]) - 1  # history's last item (0-based row)
    target = np.array([ds.sequences[u][-1] for u in users]) - 1  # leave-one-out test item
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    scores = unit[last] @ unit.T / 0.05
    scores[np.arange(len(users)), last] = -np.inf  # never recommend the item just seen
    rows = table.rows(np.arange(len(emb)))  # table row of each item (ids are 0-based rows here)
    scorer = PrefixScorer(table, scores[:, np.argsort(rows)])
    beam = args.beam_decode

    def step(prefixes, parents):
        return scorer.logp(np.repeat(np.arange(len(users)), beam), prefixes)

    with t(f"decode {len(users):,} users (beam {beam}, top 10)"):
        items, _, sids = sk.generate(step, trie, len(users), beam, top_k=10)
    exact = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    valid = trie.contains(sids.reshape(-1, trie.depth))[items.ravel() >= 0].mean()
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(items.tolist(), exact.tolist(), strict=True)])

    from sidkit.data import leave_one_out, most_popular
    from sidkit.metrics import ranking_metrics

    popular = most_popular(leave_one_out(ds.sequences).train, 10) - 1
    popular = np.tile(np.pad(popular, (0, 10 - len(popular)), constant_values=-1), (len(users), 1))
    dec, ex, pop = (ranking_metrics(r, target, ks=(10,)) for r in (items, exact, popular))
    return (
        f"  decode: {len(users):,} users, trie {len(trie):,} SIDs / {trie.num_nodes:,} nodes; valid SIDs "
        f"{valid:.1%}; overlap with exhaustive top-10 {overlap:.1%}\n"
        f"          content-similarity scorer (no trained model), leave-one-out: Recall@10 "
        f"{dec['recall@10']:.4f} NDCG@10 {dec['ndcg@10']:.4f} (exhaustive ranking: {ex['recall@10']:.4f} / "
        f"{ex['ndcg@10']:.4f}; most popular: {pop['recall@10']:.4f} / {pop['ndcg@10']:.4f})"
    )


def _load_embeddings(path: str, arg: str) -> np.ndarray:
    """(N, D) embeddings from a .npy file, with the argument named in errors."""
    if not str(path).endswith(".npy"):
        raise ValueError(f"{arg}: expected a .npy file of (N, D) float embeddings, got {path}")
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # empty, truncated, a directory, not a .npy at all
        raise ValueError(f"{arg}: expected a .npy file of (N, D) float embeddings, could not read {path}: {e!r}") from e
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.kind != "f":
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{arg}: expected a (N, D) float array, got {got} in {path}")
    return x


def _writable(*pairs: tuple[str, str | None]) -> None:
    """Checks, before any work, that each output path's folder exists and the path is no
    directory (ValueError naming the argument)."""
    for arg, path in pairs:
        if path is None:
            continue
        if Path(path).is_dir():
            raise ValueError(f"{arg}: {path} is a directory, expected a file path")
        if not Path(path).resolve().parent.is_dir():
            raise ValueError(f"{arg}: the folder of {path} does not exist")


def _load_npy(path: str, arg: str, what: str) -> np.ndarray:
    """An array from a .npy file, any failure to read it a ValueError naming ``arg``."""
    if Path(path).is_dir():
        raise ValueError(f"{arg}: expected a .npy file of {what}, got the directory {path}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{arg}: {path} not found")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:  # empty, truncated, pickled, not a .npy at all
        raise ValueError(f"{arg}: expected a .npy file of {what}, could not read {path}: {e!r}") from None
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{arg}: expected a .npy file of {what}, got a {type(x).__name__} archive in {path}")
    return x


def _load_codes(path: str, arg: str = "codes") -> tuple[np.ndarray, np.ndarray | None]:
    """(N, L) integer codes and item ids (or None) from a .npy, an .npz SID table, or a Parquet
    SID table / one column per level."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":  # a SID table from SidTable.save / sidkit resolve
        from sidkit import SidTable

        table = SidTable.load(path)
        codes, ids = table.codes, table.item_ids
    elif suffix != ".parquet":
        codes, ids = _load_npy(path, arg, "(N, L) integer codes"), None
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not Path(path).is_file():
            raise FileNotFoundError(f"{arg}: {path} not found")
        try:
            t = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{arg}: could not read {path} as Parquet: {e}") from None
        if "sid" in t.column_names:
            col = t.column("sid").combine_chunks()
            if col.null_count:
                raise ValueError(f"{arg}: the 'sid' column of {path} has {col.null_count} missing value(s)")
            codes = np.asarray(col.flatten()).reshape(len(t), -1)
        else:
            codes = np.stack([t.column(c).to_numpy() for c in t.column_names if c != "item_id"], 1)
        ids = t.column("item_id").to_numpy() if "item_id" in t.column_names else None
    if codes.ndim != 2 or codes.dtype.kind not in "iu":
        raise ValueError(f"{arg}: expected (N, L) integer codes, got {codes.dtype} {codes.shape} in {path}")
    return codes, ids


def _at_least(lo: int) -> Any:
    """An argparse type: an int >= lo (argparse names the flag in its error)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an int >= {lo}, got {v}")
        return v

    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return v


def _nonnegative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return v


def _decay(text: str) -> float:
    v = _nonnegative_float(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"expected a decay in [0, 1), got {text}")
    return v


def _save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (np.save itself would append .npy to other names)."""
    with open(path, "wb") as f:
        np.save(f, array)


def fit_cmd(args: argparse.Namespace) -> int:
    import sidkit as sk
    from sidkit.metrics import collisions

    rqvae = args.method == "rqvae"
    for flag, value, applies in (
        ("--iters", args.iters, not rqvae),
        ("--epochs", args.epochs, rqvae),
        ("--latent-dim", args.latent_dim, rqvae),
    ):
        if value is not None and not applies:
            only = "rqvae" if rqvae is False else "rqkmeans or balanced"
            raise ValueError(f"{flag}: expected only with --method {only}, got --method {args.method}")
    if rqvae:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ValueError("--method rqvae: needs torch (pip install '.[torch]')") from None
    if args.device is not None:
        from sidkit.bench import check_device

        check_device(args.device, "--device")
    _writable(("--out", args.out), ("--codes", args.codes))
    if args.threads:
        sk.set_num_threads(args.threads)
    emb = _load_embeddings(args.embeddings, "embeddings")
    sample = None
    if args.sample is not None:
        if args.sample >= 1 and args.sample != int(args.sample):
            raise ValueError(f"--sample: expected a row count (>= 1) or a share in (0, 1), got {args.sample}")
        sample = int(args.sample) if args.sample >= 1 else float(args.sample)
    t0 = time.perf_counter()
    if rqvae:
        epochs, latent = args.epochs or 50, args.latent_dim or 32
        vae = sk.train_rqvae(
            emb,
            args.levels,
            args.codebook_size,
            latent,
            epochs=epochs,
            device=args.device or "cpu",
            seed=args.seed,
            verbose=args.verbose,
            sample=sample,
        )
        seconds = time.perf_counter() - t0
        vae.save(args.out)
        codes = vae.encode(emb)
        recon = vae.decode(codes)
        what = f"RQVAE({args.levels} x {args.codebook_size}, latent {latent}, {epochs} epochs)"
        if vae.sample_ != len(emb):
            what += f" trained on {vae.sample_:,} sampled rows"
    else:
        rq = sk.RQKMeans(
            args.levels,
            args.codebook_size,
            20 if args.iters is None else args.iters,
            args.seed,
            verbose=args.verbose,
            balanced=args.method == "balanced",
            sample=sample,
        )
        cb = rq.fit(emb, device=args.device)
        seconds = time.perf_counter() - t0
        cb.save(args.out)
        assert rq.codes_ is not None
        codes, recon, what = rq.codes_, cb.decode(rq.codes_), repr(cb)
    total = float((emb.astype(np.float64) ** 2).sum())
    rel = float(((emb.astype(np.float64) - recon) ** 2).sum()) / total if total > 0 else 0.0
    s = collisions(codes)
    print(f"{what} -> {args.out} ({seconds:.2f} s, {sk.get_num_threads()} threads)")
    print(
        f"  {len(emb):,} items: unique SIDs {s['unique_sids']:,} (collision rate {s['collision_rate']:.1%}, "
        f"largest group {s['max_group']}), relative reconstruction error {rel:.4f}"
    )
    if args.codes:
        _save_npy(args.codes, codes)
        kind = {"balanced": "balanced assignment", "rqvae": "encoder + nearest latent codewords"}
        print(f"  codes (N, L) uint16 ({kind.get(args.method, 'nearest codewords')}) -> {args.codes}")
    return 0


def _load_quantizer(path: str):  # type: ignore[no-untyped-def]
    """Codebooks, or an RQ-VAE when the file is one (torch needed only then)."""
    import sidkit as sk

    try:
        return sk.Codebooks.load(path)
    except ValueError as codebooks_error:
        try:
            from sidkit.rqvae import RQVAE
        except ImportError:
            raise codebooks_error from None
        try:
            return RQVAE.load(path)
        except ValueError as rqvae_error:
            raise ValueError(
                f"codebooks: expected a codebooks file (sidkit fit, Codebooks.save) or an RQ-VAE file "
                f"(sidkit fit --method rqvae, RQVAE.save), could not read {path} as either: "
                f"{codebooks_error}; {rqvae_error}"
            ) from None


def encode_cmd(args: argparse.Namespace) -> int:
    import sidkit as sk

    if args.threads:
        sk.set_num_threads(args.threads)
    _writable(("--out", args.out), ("--errors", args.errors))
    model = _load_quantizer(args.codebooks)
    emb = _load_embeddings(args.embeddings, "embeddings")
    t0 = time.perf_counter()
    if isinstance(model, sk.Codebooks):
        codes, errors = model.encode(emb, beam=args.beam, return_errors=True)
        recon, space = None, ""
    else:  # RQ-VAE: the encoder in torch, the assignment in Rust, errors in the latent space
        codes, errors = model.codebooks().encode(model.embed(emb), beam=args.beam, return_errors=True)
        recon, space = model.decode(codes), " (latent space)"
    seconds = time.perf_counter() - t0
    _save_npy(args.out, codes)
    total = float((emb.astype(np.float64) ** 2).sum())
    if recon is None:
        rel = float(errors[:, -1].sum(dtype=np.float64)) / total if total > 0 else 0.0
    else:
        rel = float(((emb.astype(np.float64) - recon) ** 2).sum()) / total if total > 0 else 0.0
    print(
        f"{len(codes):,} x {codes.shape[1]} codes (uint16, beam {args.beam}) -> {args.out} "
        f"({seconds:.3f} s); relative reconstruction error {rel:.4f}"
    )
    if args.errors:
        _save_npy(args.errors, errors)
        print(f"  squared residual norms after each level{space} (N, L) float32 -> {args.errors}")
    return 0


def metrics_cmd(args: argparse.Namespace) -> int:
    import sidkit as sk
    from sidkit.metrics import report

    _writable(("--plot", args.plot))
    emb = _load_embeddings(args.embeddings, "embeddings")
    codes, ids = _load_codes(args.codes)
    if ids is not None:  # a SID table: row i of the embeddings is item id i (0-based) or i + 1
        base = int(ids.min()) if len(ids) else 0
        if base not in (0, 1) or not np.array_equal(np.sort(ids), np.arange(base, base + len(ids))):
            raise ValueError(
                f"codes: the SID table's item ids must be 0..N-1 or 1..N (row i of the embeddings is "
                f"item i or i + 1), got ids from {ids.min() if len(ids) else None} to {ids.max() if len(ids) else None}"
            )
        codes = codes[np.argsort(ids, kind="stable")]  # table rows in embedding-row order
    cb = sk.Codebooks.load(args.codebooks) if args.codebooks else None
    if cb is not None and codes.shape[1] < cb.levels:
        raise ValueError(f"codes: expected at least the codebooks' {cb.levels} levels, got {codes.shape[1]}")
    seqs = None
    if args.data:
        from sidkit.data import load_dataset

        seqs = [s - 1 for s in load_dataset(args.data, args.dataset).sequences]
    r = report(emb, codes[:, : cb.levels] if cb is not None else codes, cb, sequences=seqs, k=args.k, seed=args.seed)
    if cb is not None and codes.shape[1] > cb.levels:
        # The codebook metrics need the codebooks' levels only; say so, and give the table's own.
        from sidkit.metrics import collisions

        full = collisions(codes.astype(np.int64))
        print(
            f"metrics of levels 0..{cb.levels - 1} (the codebooks' levels; the table's level {cb.levels}.. "
            f"is its collision suffix): the full table has {full['unique_sids']:,} SIDs for {full['items']:,} "
            f"items, collision rate {full['collision_rate']:.4f}"
        )
    print(f"{'metric':<34}{'value':>12}")
    for key, value in r["collisions"].items():
        shown = f"{value:,}" if isinstance(value, int) else f"{value:.4f}"
        print(f"{'collisions.' + key:<34}{shown:>12}")
    for d, v in enumerate(r["prefix_collision_rate"], 1):
        print(f"{f'collision rate, prefix depth {d}':<34}{v:>12.4f}")
    for l, lv in enumerate(r["levels"]):
        for key, value in lv.items():
            print(f"{f'level {l} {key}':<34}{value:>12.4f}")
    for key, value in r.items():
        if isinstance(value, float):
            print(f"{key:<34}{value:>12.4g}")
    if args.plot:
        from sidkit.metrics import plot_report

        c = codes[:, : cb.levels] if cb is not None else codes
        sizes = cb.sizes if cb is not None else (c.max(0).astype(np.int64) + 1)
        print(f"plot -> {plot_report(c, sizes, args.plot, title=Path(args.codes).name)}")
    return 0


def resolve_cmd(args: argparse.Namespace) -> int:
    import sidkit as sk

    _writable(("--out", args.out))
    if Path(args.out).suffix.lower() not in (".npz", ".parquet"):
        raise ValueError(f"--out: expected a .npz or .parquet path for the SID table, got {args.out}")
    codes, item_ids = _load_codes(args.codes)
    if args.item_ids:
        if item_ids is not None:
            raise ValueError(f"--item-ids: expected none, {args.codes} has an 'item_id' column")
        item_ids = _load_npy(args.item_ids, "--item-ids", "(N,) integer item ids")
    # A flag of the other method is an error, as `fit` has it, not silently ignored.
    other = ("--capacity", "--order") if args.method == "suffix" else ("--max-suffix",)
    given = [f for f in other if getattr(args, f[2:].replace("-", "_")) is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: not a setting of --method {args.method}")
    kwargs: dict[str, Any] = {}
    if args.method == "reassign" or args.embeddings or args.codebooks:
        if not (args.embeddings and args.codebooks):
            raise ValueError("--embeddings, --codebooks: expected both (reassign needs them; suffix orders by them)")
        kwargs = {
            "embeddings": _load_embeddings(args.embeddings, "--embeddings"),
            "codebooks": sk.Codebooks.load(args.codebooks),
        }
    if args.method == "reassign":
        kwargs.update(capacity=args.capacity or 1, order=args.order or "knn")
    elif args.max_suffix is not None:
        kwargs["max_suffix"] = args.max_suffix
    table = sk.resolve(codes, args.method, item_ids=item_ids, **kwargs)
    table.save(args.out)
    print(f"{table!r} -> {args.out}")
    for key, value in table.report.items():
        if key != "unresolved_rows":
            shown = f"{value:.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
            print(f"  {key:<18} {shown}")
    return 0


def bench_cmd(args: argparse.Namespace) -> int:
    from sidkit import bench

    over: dict[str, dict[str, object]] = {}

    def put(section: str, key: str, value: object) -> None:
        if value is not None:
            over.setdefault(section, {})[key] = value

    # Precedence: defaults < --small preset < --config file < flags.
    # Every key the file sets wins over the preset, even one equal to its default.
    # --resume without --config/--small continues from the run's own config.toml.
    base = bench.merge(bench.DEFAULTS, bench.SMALL) if args.small else None
    saved = Path(args.out) / "config.toml"
    if args.resume and args.config is None and not args.small and saved.is_file():
        cfg = bench.load_config(saved)
    else:
        cfg = bench.load_config(args.config, base=base)
    put("data", "path", args.data)
    put("data", "dataset", args.dataset)
    put("data", "embeddings", args.embeddings)
    put("data", "cf_dim", args.cf_dim)
    put("sid", "method", args.sid)
    put("sid", "collisions", args.collisions)
    put("sid", "path", args.sids)
    put("train", "amp", args.amp)
    put("train", "epochs", args.epochs)
    put("train", "lr", args.lr)
    put("train", "patience", args.patience)
    put("train", "ema", args.ema)
    put("train", "init", args.init)
    put("train", "test_users", args.test_users)
    put("run", "device", args.device)
    put("run", "threads", args.threads)
    put("run", "seed", args.seed)
    put("run", "time_limit", args.time_limit)
    if args.no_sasrec:
        put("sasrec", "enabled", False)
    if args.no_tiger:
        put("model", "enabled", False)
    cfg = bench.merge(cfg, over)
    from sidkit.train import Paused

    try:
        r = bench.run(cfg, args.out, verbose=args.verbose, resume=args.resume)
    except Paused as e:
        print(
            f"paused: the time limit ran out after epoch {e.epochs_done} ({e.state}); "
            f"continue with: sidkit bench --out {args.out} --resume",
            file=sys.stderr,
        )
        return 3
    print(bench.markdown(r))
    print(f"wrote {Path(args.out)}/" + ", ".join(_written(Path(args.out))))
    return 0


def _written(out: Path) -> list[str]:
    """The files of a finished bench run that exist (curve.png needs matplotlib)."""
    from sidkit import bench

    names = ("results.json", "results.md", "config.toml", *bench.RUN_FILES)
    return [n for n in dict.fromkeys(names) if (out / n).is_file()]


def compare_cmd(args: argparse.Namespace) -> int:
    from sidkit import bench

    runs = [bench.load_results(d) for d in args.runs]
    names = [Path(d).name if Path(d).is_dir() else Path(d).parent.name for d in args.runs]
    table = bench.compare(runs, names)
    if args.seeds:
        table += "\n" + bench.compare_seeds(runs, names)
    print(table, end="")
    if args.out:
        Path(args.out).write_text(table)
    if args.plot:
        print(f"learning curves -> {bench.plot_curves(runs, names, args.plot)}")
    return 0


def recommend_cmd(args: argparse.Namespace) -> int:
    from sidkit import bench

    bench.check_device(args.device, "--device")
    run = bench.load_run(args.run, device=args.device)
    users = None if args.user is None else [args.user]
    ds = None
    try:  # the run's data maps the file's item ids to sidkit's 1..N and gives titles (optional)
        ds = bench.load_data(run.config["data"])
    except Exception:
        pass
    tokens = ds.item_tokens if ds is not None else None
    if tokens is not None:  # ids as written in the data file (e.g. a Parquet table's item_id)
        index = {t: i for i, t in enumerate(tokens) if i}
        unknown = [h for h in args.history if h not in index]
        if unknown:
            raise ValueError(f"--history: item ids not in the run's data ({run.config['data']['dataset']}): {unknown}")
        ids = [index[h] for h in args.history]
    else:  # the data's ids are sidkit's (S3-Rec layout), or the data is not at hand
        try:
            ids = [int(h) for h in args.history]
        except ValueError:
            raise ValueError(
                f"--history: expected integer item ids (the run's data was not found to map other ids), "
                f"got {args.history}"
            ) from None
    items = run.recommend([np.asarray(ids, dtype=np.int64)], top_k=args.top_k, beam_width=args.beam, users=users)[0]
    texts = ds.item_texts if ds is not None else None
    print(f"next items after {list(args.history)} ({run.path.name}: TIGER, constrained beam search):")
    for rank, item in enumerate(items.tolist(), 1):
        if item < 0:
            continue
        sid = ",".join(str(int(c)) for c in run.table.sid([item])[0])
        name = tokens[item] if tokens is not None else str(item)
        text = f"  {texts[item][:80]}" if texts is not None and texts[item] else ""
        print(f"{rank:>3}. item {name:>6}  sid ({sid}){text}")
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    from sidkit import bench

    bench.check_device(args.device, "--device")
    _writable(("--json", args.json))
    run = bench.load_run(args.run, device=args.device)
    m = run.evaluate(args.split, beam_width=args.beam, ks=args.k, users=args.users, data=args.data)
    ks = sorted(set(args.k))
    print(
        f"{run.path.name}: TIGER on {m['users']:,} {m['split']} users, beam {m['beam_width']}, "
        f"{m['users_per_s']:.0f} users/s"
    )
    print("| " + " | ".join(f"Recall@{k} | NDCG@{k}" for k in ks) + " |")
    print("|" + "---:|" * (2 * len(ks)))
    print("| " + " | ".join(f"{m[f'recall@{k}']:.4f} | {m[f'ndcg@{k}']:.4f}" for k in ks) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sidkit", description="Semantic IDs for generative recommendation.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="fit RQ-KMeans codebooks, encode every item, report the SIDs")
    p.add_argument(
        "--data",
        help="S3-Rec layout (e.g. ../shared/data/amazon2014) or RecBole atomic files (../shared/data/ml-100k); "
        "synthetic if absent",
    )
    p.add_argument("--dataset", default="Beauty", help="dataset name inside --data (default: Beauty)")
    p.add_argument("--items", type=_at_least(1), default=20000, help="synthetic catalog size (without --data)")
    p.add_argument("--dim", type=_at_least(1), default=64, help="embedding dimension")
    p.add_argument("--levels", type=_at_least(1), default=3)
    p.add_argument("--codebook-size", type=_at_least(1), default=256)
    p.add_argument("--iters", type=_at_least(0), default=20)
    p.add_argument("--beam", type=_at_least(1), default=5)
    p.add_argument("--seed", type=_at_least(0), default=0)
    p.add_argument("--users", type=int, default=2000, help="users to decode for (with --data)")
    p.add_argument("--beam-decode", type=int, default=20, help="beam width of the constrained decoding")
    p.add_argument("--threads", type=int, default=0, help="threads (default: SIDKIT_NUM_THREADS or all CPUs)")
    p.add_argument("--save", help="directory to write codebooks.npz, codes.npy and the SID table sids.npz to")
    p.add_argument("--out", default="runs/demo", help="run directory of the training stage (with --data)")
    p.add_argument("--no-train", dest="train", action="store_false", help="SIDs, trie and decoding only")
    p.add_argument("--quiet", dest="verbose", action="store_false", help="no progress bars")
    f = sub.add_parser("fit", help="learn SID codebooks (RQ-KMeans, balanced, RQ-VAE) from your embeddings (.npy)")
    f.add_argument("embeddings", help=".npy of (N, D) float item embeddings")
    f.add_argument("--out", required=True, help="codebooks file to write (.npz or .safetensors; RQ-VAE: .pt)")
    f.add_argument("--codes", help="also write the (N, L) uint16 codes of every row to this .npy")
    f.add_argument(
        "--method",
        choices=["rqkmeans", "balanced", "rqvae"],
        default="rqkmeans",
        help="plain RQ-KMeans, OneRec's balanced RQ-KMeans (equal-size clusters), or TIGER's RQ-VAE "
        "(torch; --out then holds the model: .pt or .safetensors)",
    )
    f.add_argument("--levels", type=_at_least(1), default=3)
    f.add_argument("--codebook-size", type=_at_least(1), default=256)
    f.add_argument("--iters", type=_at_least(0), help="Lloyd iterations per level (RQ-KMeans; default 20)")
    f.add_argument("--epochs", type=_at_least(1), help="training epochs (RQ-VAE; default 50)")
    f.add_argument("--latent-dim", type=_at_least(1), help="latent dimension (RQ-VAE; default 32)")
    f.add_argument("--sample", type=_positive_float, help="fit on this many rows (>= 1) or this share of them (< 1)")
    f.add_argument("--seed", type=_at_least(0), default=0)
    f.add_argument("--device", help="torch device for the fit (e.g. cuda); default: the Rust backend on the CPU")
    f.add_argument("--threads", type=_at_least(0), default=0, help="threads (default: SIDKIT_NUM_THREADS or all CPUs)")
    f.add_argument("--quiet", dest="verbose", action="store_false", help="no progress bars")
    e = sub.add_parser("encode", help="codes of embeddings under fitted codebooks (greedy or beam)")
    e.add_argument("codebooks", help="codebooks or RQ-VAE file (sidkit fit --out, Codebooks.save, RQVAE.save)")
    e.add_argument("embeddings", help=".npy of (N, D) float embeddings")
    e.add_argument("--out", required=True, help=".npy to write the (N, L) uint16 codes to")
    e.add_argument("--beam", type=_at_least(1), default=1, help="1: nearest codeword per level; B > 1: beam search")
    e.add_argument("--errors", help="also write the (N, L) squared residual norms to this .npy")
    e.add_argument("--threads", type=_at_least(0), default=0, help="threads (default: SIDKIT_NUM_THREADS or all CPUs)")
    r = sub.add_parser("resolve", help="make SIDs unique: codes in, a SID table (.parquet or .npz) out")
    r.add_argument(
        "codes",
        help="(N, L) integer codes: .npy, an .npz SID table, or Parquet with 'sid' (list) or one column per level",
    )
    r.add_argument("--out", required=True, help="the SID table: .parquet (needs pyarrow) or .npz (numpy only)")
    r.add_argument("--method", choices=["suffix", "reassign"], default="suffix")
    r.add_argument("--item-ids", help=".npy of (N,) item ids (default 0..N-1, or the 'item_id' column)")
    r.add_argument("--embeddings", help=".npy of (N, D) embeddings (orders groups; needed by reassign)")
    r.add_argument("--codebooks", help="codebooks file from Codebooks.save (needed by reassign)")
    r.add_argument("--capacity", type=_at_least(1), help="reassign: items allowed per SID (default 1)")
    r.add_argument("--order", choices=["knn", "random"], help="reassign: move order (default knn)")
    r.add_argument("--max-suffix", type=_at_least(1), help="suffix: fail if a group needs more suffix values")
    m = sub.add_parser("metrics", help="SID quality report: embeddings + codes (+ codebooks, + sequences)")
    m.add_argument("embeddings", help=".npy of (N, D) item embeddings")
    m.add_argument("codes", help=".npy of (N, L) codes, or a SID table (.parquet or .npz)")
    m.add_argument("--codebooks", help="codebooks file (adds reconstruction, neighbour recall, quantised hit rate)")
    m.add_argument("--data", help="S3-Rec layout directory: its user sequences add the embedding hit rate")
    m.add_argument("--dataset", default="Beauty")
    m.add_argument("--k", type=_at_least(1), default=10, help="neighbours for neighbour recall@k")
    m.add_argument("--seed", type=_at_least(0), default=0)
    m.add_argument("--plot", help="also write a PNG: code usage per level and items per SID")
    b = sub.add_parser(
        "bench", help="end to end on real data: embed, codebooks, resolve, metrics, train TIGER, evaluate, baselines"
    )
    b.add_argument("--out", required=True, help="run directory (results.json, results.md, config.toml, curve.png)")
    b.add_argument("--config", help="TOML config (sections data, sid, model, train, sasrec, run)")
    b.add_argument("--small", action="store_true", help="start from the small, fast preset (what demo runs)")
    b.add_argument(
        "--data", help="data directory (S3-Rec layout, RecBole atomic files, or a Parquet/CSV file's folder)"
    )
    b.add_argument(
        "--dataset",
        help="dataset name inside --data (Beauty, ml-100k, ...), or an interaction file's name there "
        "(events.parquet: columns user_id, item_id, timestamp, or data.user/item/time in a config)",
    )
    b.add_argument(
        "--embeddings",
        help="tfidf (text + attributes, LSA), text (all-MiniLM-L6-v2; the text extra), a .npy path, "
        "or none (collaborative SIDs only, with --cf-dim)",
    )
    b.add_argument(
        "--cf-dim",
        type=_at_least(0),
        help="append this many collaborative dimensions (item co-occurrence in the training sequences) "
        "to the embeddings the SIDs are learned from (data.cf_dim; 0 = content only)",
    )
    b.add_argument("--sid", choices=["rqkmeans", "balanced", "rqvae"])
    b.add_argument("--collisions", choices=["suffix", "reassign"])
    b.add_argument(
        "--sids", help="your own SIDs instead of learning them: a SID table (.npz/.parquet) or raw codes (.npy)"
    )
    b.add_argument("--epochs", type=_at_least(1))
    b.add_argument("--lr", type=float, help="TIGER's peak learning rate (train.lr; > 0)")
    b.add_argument(
        "--patience",
        type=_at_least(1),
        help="TIGER epochs without a better validation Recall@10 before stopping (a resume may change it)",
    )
    b.add_argument(
        "--ema",
        type=_decay,
        help="average the TIGER weights: EMA decay per step, e.g. 0.999; 0 = off (validation, saved model use it)",
    )
    b.add_argument(
        "--init",
        metavar="RUN",
        help="warm start: begin from the best TIGER weights of an earlier run directory (same SIDs and model)",
    )
    b.add_argument("--test-users", type=_at_least(0), help="evaluate on this many sampled test users (0 = all)")
    b.add_argument("--device", help="torch device (cpu, cuda)")
    b.add_argument("--threads", type=_at_least(0))
    b.add_argument(
        "--amp", choices=["auto", "on", "off"], help="bfloat16 autocast in training (auto: CUDA only; on: CPU too)"
    )
    b.add_argument("--seed", type=_at_least(0))
    b.add_argument("--no-sasrec", action="store_true", help="skip the SASRec baseline")
    b.add_argument(
        "--no-tiger", action="store_true", help="skip TIGER: the SID report and the baselines only (model.enabled)"
    )
    b.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last finished epoch (its config.toml unless --config is given)",
    )
    b.add_argument(
        "--time-limit",
        type=_nonnegative_float,
        help="seconds this invocation may run: training pauses at an epoch boundary (exit status 3); --resume goes on",
    )
    b.add_argument("--quiet", dest="verbose", action="store_false", help="no progress output")
    c = sub.add_parser("compare", help="one markdown table over several bench runs (SID schemes side by side)")
    c.add_argument("runs", nargs="+", help="run directories (or their results.json)")
    c.add_argument("--out", help="also write the table to this file")
    c.add_argument(
        "--seeds", action="store_true", help="also a table of mean ± sd over runs that differ only in their seed"
    )
    c.add_argument("--plot", help="also draw the runs' TIGER learning curves (loss, validation Recall@10) to this PNG")
    rc = sub.add_parser("recommend", help="next items for a history, from a trained bench run")
    rc.add_argument("run", help="bench run directory (sidkit bench --out)")
    rc.add_argument("--history", nargs="+", required=True, help="item ids as in the run's data file, oldest first")
    rc.add_argument("--top-k", type=_at_least(1), default=10)
    rc.add_argument("--beam", type=_at_least(1), help="beam width (default: the run's)")
    rc.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    rc.add_argument("--user", type=int, help="user index (runs trained with user tokens, model.user_buckets)")
    ev = sub.add_parser(
        "evaluate", help="re-evaluate a trained bench run: another beam width, more cut-offs, all users, valid or test"
    )
    ev.add_argument("run", help="bench run directory (sidkit bench --out)")
    ev.add_argument("--split", choices=["test", "valid"], default="test")
    ev.add_argument("--beam", type=_at_least(1), help="beam width (default: the run's)")
    ev.add_argument(
        "--k",
        type=_at_least(1),
        nargs="+",
        default=[5, 10],
        help="cut-offs (past the beam width: the empty slots count as misses)",
    )
    ev.add_argument(
        "--users", type=_at_least(0), help="0 = all users, n = a seeded sample (default: the run's own users)"
    )
    ev.add_argument("--data", help="the data directory, if it moved since the run (default: the run's data.path)")
    ev.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    ev.add_argument("--json", help="also write the metrics to this JSON file")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error argparse has printed (2)
        return int(e.code or 0)
    commands = {
        "demo": demo,
        "fit": fit_cmd,
        "encode": encode_cmd,
        "resolve": resolve_cmd,
        "metrics": metrics_cmd,
        "bench": bench_cmd,
        "compare": compare_cmd,
        "recommend": recommend_cmd,
        "evaluate": evaluate_cmd,
    }
    try:
        return commands[args.command](args)
    except ModuleNotFoundError as e:  # an optional dependency: name the extra that brings it
        from ._arrays import EXTRAS, missing_extra

        module = (e.name or "").split(".")[0]
        if module not in EXTRAS:
            raise
        print(f"sidkit {args.command}: error: this needs {module}, from {missing_extra(module)}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional dependency sidkit itself names (e.g. the text model)
        print(f"sidkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, MemoryError) as e:  # OSError: FileNotFoundError, permissions, ...
        print(f"sidkit {args.command}: error: {e}", file=sys.stderr)
        return 2
