"""A model-free SID generator for the demo and tests: item-to-item similarity as a decoder.

Given a query embedding per user, every item gets a score ``cos(q, e_i) / temperature``; the
probability of a SID prefix is the softmax mass of the items under it, so the per-level
conditional log-probabilities come from prefix sums over the SID-sorted catalog. Decoding it
with trie-constrained beam search must recover the exact top items by score — a check of the
whole decode path on real data — and its Recall@K is an honest content-only baseline.
"""

from __future__ import annotations

import numpy as np

from .collisions import SidTable, _sid_keys


class PrefixScorer:
    """Per-level log-probabilities of SID prefixes under item scores.

    Args:
        table: the SID table (unique SIDs).
        scores: (B, N) float item scores (logits) per query, columns in ``table`` row order.
    """

    def __init__(self, table: SidTable, scores: np.ndarray) -> None:
        self.table = table
        scores = scores - scores.max(1, keepdims=True)
        self.mass = np.exp(scores.astype(np.float64))  # (B, N)
        self.levels = []
        for l in range(table.levels):
            keys = _sid_keys(np.ascontiguousarray(table.codes[:, : l + 1]))
            order = np.argsort(keys, kind="stable")
            uniq, start = np.unique(keys[order], return_index=True)
            sums = np.add.reduceat(self.mass[:, order], start, axis=1)  # (B, groups)
            self.levels.append((uniq, sums))

    def logp(self, query: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
        """(R, K_l) log p(code | prefix) for R beams: ``query[r]`` is the beam's query row."""
        level = prefixes.shape[1]
        k = self.table.sizes[level]
        r = len(prefixes)
        cand = np.concatenate([np.repeat(prefixes, k, 0), np.tile(np.arange(k), r)[:, None]], 1).astype(np.uint16)
        uniq, sums = self.levels[level]
        keys = _sid_keys(cand)
        pos = np.minimum(np.searchsorted(uniq, keys), len(uniq) - 1)
        found = uniq[pos] == keys
        mass = np.where(found, sums[np.repeat(query, k), pos], 0.0).reshape(r, k)
        total = mass.sum(1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(mass / np.where(total > 0, total, 1.0)).astype(np.float32)
