"""Datasets: the S3-Rec Amazon layout (e.g. ../shared/data/amazon2014) and synthetic catalogs."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class AmazonDataset:
    """A dataset in the S3-Rec layout (``{name}.txt`` + ``{name}_item2attributes.json``).

    Attributes:
        sequences: per user, the (n_u,) int64 item ids in time order (oldest first), 1-based.
        item_attributes: per item id 1..num_items, the list of its attribute ids (index 0 unused).
        num_items: the largest item id.
    """

    name: str
    sequences: list[np.ndarray]
    item_attributes: list[list[int]]
    num_items: int
    item_texts: list[str] | None = None

    @property
    def num_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)


def load_amazon(root: str | Path, name: str = "Beauty") -> AmazonDataset:
    """Reads ``{root}/{name}.txt`` (``user item item ...`` per line) and the item attributes."""
    root = Path(root)
    seq_path, attr_path = root / f"{name}.txt", root / f"{name}_item2attributes.json"
    for p in (seq_path, attr_path):
        if not p.is_file():
            raise FileNotFoundError(f"root: expected {p.name} in {root} (S3-Rec layout), not found")
    sequences = []
    with open(seq_path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) < 2:
                raise ValueError(f"{seq_path}:{line_no}: expected 'user_id item_id ...', got {line.strip()!r}")
            sequences.append(np.array(parts[1:], dtype=np.int64))
    with open(attr_path) as f:
        raw = json.load(f)
    num_items = max(max(int(i) for i in raw), max(int(s.max()) for s in sequences))
    attributes: list[list[int]] = [[] for _ in range(num_items + 1)]
    for item, attrs in raw.items():
        attributes[int(item)] = [int(a) for a in attrs]
    return AmazonDataset(name, sequences, attributes, num_items, _item_texts(root / f"{name}_items.jsonl", num_items))


def _item_texts(path: Path, num_items: int) -> list[str] | None:
    """Item text (title, brand, categories) per item id from ``{name}_items.jsonl``, if present."""
    if not path.is_file():
        return None
    texts = [""] * (num_items + 1)
    with open(path) as f:
        for line in f:
            item = json.loads(line)
            i = int(item["item_id"])
            if 1 <= i <= num_items:
                parts = [item.get("title") or "", item.get("brand") or "", *(item.get("categories") or [])]
                texts[i] = " ".join(p for p in parts if p)
    return texts


def _tfidf_coo(docs: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Row-sorted COO (rows, cols, values) of L2-normalised TF-IDF rows, and the vocabulary size."""
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, doc in enumerate(docs):
        for tok in doc:
            rows.append(i)
            cols.append(vocab.setdefault(tok, len(vocab)))
    r, c = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    # Count each (row, term) pair once, with its frequency.
    key, tf = np.unique(r * max(len(vocab), 1) + c, return_counts=True)
    r, c = key // max(len(vocab), 1), key % max(len(vocab), 1)
    df = np.bincount(c, minlength=len(vocab))
    v = (1.0 + np.log(tf)) * (np.log((1 + len(docs)) / (1 + df)) + 1.0)[c]
    norms = np.sqrt(np.bincount(r, weights=v * v, minlength=len(docs)))
    return r, c, v / np.where(norms > 0, norms, 1.0)[r], len(vocab)


def _sparse_svd_embed(
    rows: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    shape: tuple[int, int],
    dim: int,
    seed: int = 0,
    power_iters: int = 2,
) -> np.ndarray:
    """Top-``dim`` LSA embedding ``U·S`` of a sparse matrix, by randomized SVD (Halko et al., 2011)."""
    n, m = shape
    by_col = np.argsort(cols, kind="stable")

    def segment_sum(index: np.ndarray, contrib: np.ndarray, size: int) -> np.ndarray:
        """out[i] = sum of contrib rows whose (sorted) index is i."""
        out = np.zeros((size, contrib.shape[1]))
        present, starts = np.unique(index, return_index=True)
        if len(present):
            out[present] = np.add.reduceat(contrib, starts, axis=0)
        return out

    def matmul(omega: np.ndarray) -> np.ndarray:  # A @ omega (rows are sorted)
        return segment_sum(rows, vals[:, None] * omega[cols], n)

    def rmatmul(q: np.ndarray) -> np.ndarray:  # A.T @ q
        c = cols[by_col]
        return segment_sum(c, (vals[by_col, None] * q[rows[by_col]]), m)

    k = min(dim + 10, n, m)
    q, _ = np.linalg.qr(matmul(np.random.default_rng(seed).standard_normal((m, k))))
    for _ in range(power_iters):
        q, _ = np.linalg.qr(matmul(rmatmul(q)))
    u_small, s, _ = np.linalg.svd(rmatmul(q).T, full_matrices=False)
    dim = min(dim, len(s))
    return (q @ u_small[:, :dim]) * s[:dim]


def item_embeddings(ds: AmazonDataset, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Dense (num_items, dim) float32 content embeddings; row i is item id i + 1.

    Each item is a bag of tokens: the words of its title, brand and categories (when the
    dataset has ``{name}_items.jsonl``) plus one token per attribute id. The bags are
    TF-IDF weighted (sublinear tf, smoothed idf), L2-normalised, and reduced to ``dim``
    dimensions by a seeded randomized truncated SVD (an LSA embedding). Deterministic.
    """
    word = re.compile(r"[a-z0-9]+")
    texts = ds.item_texts or [""] * (ds.num_items + 1)
    docs = [
        word.findall(texts[i].lower()) + [f"attr:{a}" for a in ds.item_attributes[i]]
        for i in range(1, ds.num_items + 1)
    ]
    rows, cols, vals, vocab = _tfidf_coo(docs)
    emb = _sparse_svd_embed(rows, cols, vals, (len(docs), vocab), dim, seed)
    return _fix_signs(emb)


def _fix_signs(emb: np.ndarray) -> np.ndarray:
    """Flips each component so its largest-magnitude entry is positive (SVD signs are arbitrary)."""
    signs = np.sign(emb[np.abs(emb).argmax(0), np.arange(emb.shape[1])])
    return np.ascontiguousarray(emb * np.where(signs == 0, 1, signs), dtype=np.float32)


def synthetic_catalog(
    n: int = 20000, dim: int = 64, branching: tuple[int, ...] = (32, 8, 4), seed: int = 0
) -> np.ndarray:
    """(n, dim) float32 embeddings from hierarchical Gaussian clusters (a synthetic catalog).

    Level l draws ``branching[l]`` sub-centres around each parent at a scale halving per level,
    so a good residual quantizer recovers the hierarchy.
    """
    rng = np.random.default_rng(seed)
    centres = np.zeros((1, dim))
    scale = 1.0
    for b in branching:
        centres = (centres[:, None, :] + scale * rng.standard_normal((len(centres), b, dim))).reshape(-1, dim)
        scale /= 2
    pick = rng.integers(len(centres), size=n)
    return (centres[pick] + scale * rng.standard_normal((n, dim))).astype(np.float32)


@dataclass
class Split:
    """A leave-one-out split: per user, the training prefix and the two held-out items."""

    train: list[np.ndarray]
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray


def leave_one_out(sequences: list[np.ndarray], max_history: int = 20) -> Split:
    """TIGER/GRID protocol: the last item of each sequence is the test target, the second-last
    the validation target, the rest the training sequence; histories are truncated to the
    last ``max_history`` items. Users with fewer than 3 items are dropped."""
    keep = [s for s in sequences if len(s) >= 3]
    return Split(
        train=[s[:-2] for s in keep],
        valid_history=[s[:-2][-max_history:] for s in keep],
        valid_target=np.array([s[-2] for s in keep], dtype=np.int64),
        test_history=[s[:-1][-max_history:] for s in keep],
        test_target=np.array([s[-1] for s in keep], dtype=np.int64),
    )


def most_popular(train: list[np.ndarray], k: int = 10) -> np.ndarray:
    """The ``k`` most frequent items of the training sequences (ties → lower id): the
    most-popular baseline every generative recommender must clearly beat."""
    items = np.concatenate(train) if train else np.zeros(0, np.int64)
    ids, counts = np.unique(items, return_counts=True)
    order = np.lexsort((ids, -counts))
    return ids[order[:k]]
