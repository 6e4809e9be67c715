"""SASRec (Kang & McAuley, 2018): a causal self-attention model over item ids, the baseline
generative recommenders are compared with. Trained here with full softmax cross-entropy over
all items at every position (as in the strong re-evaluations of SASRec, e.g. Klenitskiy &
Vasilev, RecSys 2023), which beats the original sampled binary loss on Beauty-sized catalogs.

Inputs are item ids 1..num_items, left-padded with 0; scores rank all items (full ranking).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .._arrays import as_int, to_numpy
from ._dropout import use_fast_dropout
from ._eval import evaluates
from ._linear_ce import linear_cross_entropy


@dataclass
class SeqExamples:
    """``inputs`` (M, T) item ids left-padded with 0; ``targets`` (M, T) the next item at
    every position (0 = no loss); ``items`` (M,) the item to predict after the last position."""

    inputs: np.ndarray
    targets: np.ndarray
    items: np.ndarray


def _left_pad(seqs: Sequence[np.ndarray], width: int, name: str = "histories") -> np.ndarray:
    out = np.zeros((len(seqs), width), dtype=np.int64)
    for r, s in enumerate(seqs):
        a = np.asarray(s)
        if a.size and a.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integer item ids, got dtype {a.dtype} in row {r}")
        a = a.astype(np.int64, copy=False).ravel()[-width:]
        if len(a):
            out[r, width - len(a) :] = a
    return out


def sasrec_examples(
    histories: Sequence[np.ndarray], targets: Sequence[int] | np.ndarray, max_len: int = 50
) -> SeqExamples:
    """Evaluation examples: each non-empty history (oldest first, item ids >= 1) predicts its
    target; the last ``max_len`` items of a history are kept."""
    max_len = as_int(max_len, "max_len", 1)
    t = np.asarray(to_numpy(targets, "targets")).ravel()
    if t.size and t.dtype.kind not in "iu":
        raise TypeError(f"targets: expected integer item ids, got dtype {t.dtype}")
    if len(t) != len(histories):
        raise ValueError(f"targets: expected one per history ({len(histories)}), got {len(t)}")
    if any(len(h) == 0 for h in histories):
        raise ValueError("histories: expected at least one item per history, got an empty one")
    items = t.astype(np.int64)
    inputs = _left_pad(histories, max_len)
    tgt = np.zeros_like(inputs)
    tgt[:, -1] = items
    return SeqExamples(inputs, tgt, items)


def sasrec_train_examples(train: Sequence[np.ndarray], max_len: int = 50) -> SeqExamples:
    """Training examples: for each sequence ``s`` (>= 2 items), input ``s[:-1]`` and target
    ``s[1:]`` — every position predicts its next item (the sliding window, in one row). A
    sequence longer than ``max_len + 1`` is cut, from its end, into rows of ``max_len``
    transitions (overlapping by one item), so every transition is trained on once.

    Returns: :class:`SeqExamples` with (M, max_len) ``inputs`` and ``targets``, M >= the number of
    sequences with 2 or more items."""
    max_len = as_int(max_len, "max_len", 1)
    rows = []
    for s in train:
        s = np.asarray(s)
        for end in range(len(s), 1, -max_len):
            rows.append(s[max(0, end - max_len - 1) : end])
    inputs = _left_pad([s[:-1] for s in rows], max_len)
    targets = _left_pad([s[1:] for s in rows], max_len)
    return SeqExamples(inputs, targets, targets[:, -1].copy())


class SASRec(nn.Module):
    """Causal transformer over item ids.

    Args:
        num_items: item ids are 1..num_items (0 is padding).
        max_len: positions (histories are truncated to the last ``max_len`` items).
        d_model, num_layers, num_heads, dropout: the usual (SASRec's Beauty setting: 50, 2,
            1, 0.5; defaults here 64, 2, 2, 0.3).
        seed: weight initialisation seed (the global torch RNG is left untouched).
    """

    def __init__(
        self,
        num_items: int,
        max_len: int = 50,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items: expected >= 1, got {num_items}")
        self.num_items, self.max_len = num_items, max_len
        #: The loss block by block of rows (:func:`~sidkit.models._linear_ce.linear_cross_entropy`);
        #: False: one ``cross_entropy`` over all the logits (the same values up to rounding).
        self.blockwise_loss = True
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.items = nn.Embedding(num_items + 1, d_model, padding_idx=0)
            self.positions = nn.Embedding(max_len, d_model)
            layer = nn.TransformerEncoderLayer(
                d_model, num_heads, 4 * d_model, dropout, activation="gelu", batch_first=True, norm_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d_model)
            self.drop = nn.Dropout(dropout)
            nn.init.normal_(self.items.weight, std=0.02)
            nn.init.normal_(self.positions.weight, std=0.02)
            with torch.no_grad():
                self.items.weight[0].zero_()
        use_fast_dropout(self)

    def hidden(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, T, d) states; position t sees items <= t only."""
        b, t = inputs.shape
        if t > self.max_len:
            raise ValueError(f"inputs: expected at most max_len = {self.max_len} positions, got {t}")
        # Positions count back from the newest item (right-aligned), so cutting left padding
        # changes nothing.
        pos = torch.arange(self.max_len - t, self.max_len, device=inputs.device)
        h = self.drop(self.items(inputs) * self.items.embedding_dim**0.5 + self.positions(pos))
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=inputs.device), 1)
        eye = torch.eye(t, dtype=torch.bool, device=inputs.device)
        # True = blocked: future keys, and padding keys — except a position's own key, so the
        # padded prefix of a left-padded row keeps a finite softmax (its output is never used).
        blocked = causal[None] | ((inputs == 0)[:, None, :] & ~eye[None])
        heads = self.encoder.layers[0].self_attn.num_heads
        h = self.encoder(h, mask=blocked.repeat_interleave(heads, 0))
        return self.norm(h)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over all items at every position with a target (targets > 0)."""
        h = self.hidden(inputs)
        keep = targets > 0
        w = self.items.weight[1:]
        if self.blockwise_loss:  # the (positions, num_items) logits never exist at once
            return linear_cross_entropy(h[keep], w, targets[keep] - 1)
        return nn.functional.cross_entropy(h[keep] @ w.T, targets[keep] - 1)

    def _inputs(self, inputs: Any) -> np.ndarray:
        """``inputs`` checked: (B, T) integer item ids in [0, num_items] (0 = padding), as int64;
        a history wider than ``max_len`` keeps its last ``max_len`` columns (as the examples do)."""
        arr = np.asarray(to_numpy(inputs, "inputs"))
        if arr.dtype.kind not in "iu":
            raise TypeError(f"inputs: expected integer item ids, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise ValueError(f"inputs: expected shape (B, T) with T >= 1, got {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() > self.num_items):
            bad = int(arr.min() if arr.min() < 0 else arr.max())
            raise ValueError(f"inputs: expected item ids in [0, {self.num_items}] (0 = padding), got {bad}")
        return arr[:, -self.max_len :].astype(np.int64, copy=False)

    @torch.no_grad()
    @evaluates
    def scores(self, inputs: Any) -> torch.Tensor:
        """(B, num_items) scores of items 1..num_items after each history (B, T) of item ids
        (column j = item j+1)."""
        arr = self._inputs(inputs)
        return self.hidden(torch.as_tensor(arr, device=self.items.weight.device))[:, -1] @ self.items.weight[1:].T

    @torch.no_grad()
    @evaluates
    def recommend(self, inputs: Any, beam_width: int = 0, top_k: int = 10, batch_size: int = 1024) -> np.ndarray:
        """Top-k item ids (B, top_k) over the full catalog of histories (B, T) of item ids, -1
        past the catalog's size (``beam_width`` is ignored: there is no decoding, it is accepted
        so ``sidkit.train.fit`` can evaluate either model)."""
        from ..train import trim_left_padding

        arr = self._inputs(inputs)
        top_k, batch_size = as_int(top_k, "top_k", 1), as_int(batch_size, "batch_size", 1)
        order = np.argsort((arr != 0).sum(1), kind="stable")  # similar lengths batch together
        out = np.full((len(arr), top_k), -1, dtype=np.int64)
        k = min(top_k, self.num_items)
        for s in range(0, len(arr), batch_size):
            rows = order[s : s + batch_size]
            sc = self.scores(trim_left_padding(arr[rows]))
            out[rows, :k] = (sc.topk(k, dim=1).indices + 1).cpu().numpy()
        return out
