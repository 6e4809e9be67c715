"""Trie-constrained beam search for any model: a step API and a generate loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _native
from ._arrays import as_int, c_array, to_numpy
from .trie import TokenMap, Trie


def _count(v: Any, name: str) -> int:
    """A size argument: an int >= 1 (sizes too large for memory are refused by the core)."""
    v = as_int(v, name)  # TypeError for a float or a bool
    if v < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if v >= 2**63:
        raise ValueError(f"{name}: expected an int < 2**63, got {v}")
    return v


class BeamSearch:
    """Constrained beam search over SIDs, one level per :meth:`step`, driven by any model.

    Every beam always holds a valid SID prefix: at each step Rust scores only the children
    that exist in the trie (cumulative log-prob), keeps the ``beam_width`` best per batch row
    (ties → lower parent beam, then lower code), and returns each new beam's code and parent
    (to reorder a KV cache). Step 0 starts from one live beam per row, so no hypothesis is
    duplicated.

    Args:
        trie: the valid SIDs.
        batch_size: B, independent searches run together.
        beam_width: beams per row; with ``beam_width >=`` the number of valid SIDs the search
            is exhaustive (exact).
        top_k: results per row from :meth:`finish` (default ``beam_width``).
        token_map: when given, :meth:`step` takes (B·beam, V) log-probs over the model's
            whole vocabulary (V >= ``token_map.vocab_size``) and returns token ids; otherwise
            (B·beam, K_level) over codes.

    While fewer valid prefixes than ``beam_width`` exist, the surplus beams are empty: their
    score is -inf, their node -1 (:meth:`nodes`), and :meth:`step` reports code 0 (token
    ``starts[level]``) and the beam itself as parent for them, placeholders that are no SID.
    """

    def __init__(
        self,
        trie: Trie,
        batch_size: int,
        beam_width: int,
        top_k: int | None = None,
        token_map: TokenMap | None = None,
    ) -> None:
        if not isinstance(trie, Trie):
            raise TypeError(f"trie: expected a sidkit.Trie, got {type(trie).__name__}")
        batch_size = _count(batch_size, "batch_size")
        beam_width = _count(beam_width, "beam_width")
        top_k = beam_width if top_k is None else _count(top_k, "top_k")
        if token_map is not None and not isinstance(token_map, TokenMap):
            raise TypeError(f"token_map: expected a sidkit.TokenMap or None, got {type(token_map).__name__}")
        if token_map is not None and token_map.sizes != trie.sizes:
            raise ValueError(f"token_map: expected sizes {trie.sizes} (the trie's), got {token_map.sizes}")
        self.trie, self.token_map = trie, token_map
        self.batch_size, self.beam_width, self.top_k = int(batch_size), int(beam_width), int(top_k)
        self._state = _native.BeamSearch(trie._native, self.batch_size, self.beam_width)
        self.sids: np.ndarray | None = None  # (B, top_k, L) uint16 after finish()

    @property
    def rows(self) -> int:
        """B · beam_width: the rows every step's log-probs must have."""
        return self.batch_size * self.beam_width

    @property
    def step_index(self) -> int:
        """Levels decoded so far."""
        return self._state.step_index

    @property
    def done(self) -> bool:
        """Whether every level has been decoded (call :meth:`finish`)."""
        return self.step_index == self.trie.depth

    def step(self, logp: Any) -> tuple[np.ndarray, np.ndarray]:
        """Advances one level.

        Args:
            logp: (B·beam, K_level) log-probabilities of this level's codes, or (B·beam, V)
                (V >= ``token_map.vocab_size``) over the vocabulary with a token map; float
                (numpy or torch, any device). NaN counts as -inf (never chosen); +inf on a
                valid code (or a score sum past float32's range) is a ValueError. Rows of
                empty beams are ignored.

        Returns:
            codes (B·beam,) — token ids with a token map, else uint16 codes — and parents
            (B·beam,) int64: new beam i extends old beam ``parents[i]``.
        """
        if self.done:
            raise ValueError(
                f"step: expected at most {self.trie.depth} steps (the trie depth), got one more; call finish()"
            )
        a = to_numpy(logp, "logp")
        if a.dtype.kind != "f":
            raise TypeError(f"logp: expected floating-point log-probabilities, got dtype {a.dtype}")
        level = self.step_index
        if self.token_map is None:
            width, offset = self.trie.sizes[level], 0
        else:
            width, offset = self.token_map.vocab_size, self.token_map.starts[level]
        wide = self.token_map is not None and a.ndim == 2 and a.shape[0] == self.rows and a.shape[1] >= width
        if a.ndim != 2 or (a.shape != (self.rows, width) and not wide):
            cols = f">= {width}" if self.token_map is not None else f"{width}"
            raise ValueError(f"logp: expected shape ({self.rows}, {cols}) at level {level}, got {a.shape}")
        with np.errstate(over="ignore"):  # float64 past float32's range becomes +inf: refused below
            lp = c_array(a, np.float32)
        codes, parents = self._state.step(lp, offset)
        if self.token_map is not None:
            return codes.astype(np.int64) + offset, parents
        return codes, parents

    def tokens(self) -> np.ndarray:
        """Each beam's prefix so far: (B·beam, t) int64 token ids with a token map, else
        uint16 codes."""
        codes = self._state.codes()
        return self.token_map.to_tokens(codes) if self.token_map is not None else codes

    def scores(self) -> np.ndarray:
        """Cumulative log-prob of each beam, (B·beam,) float32, -inf for empty beams."""
        return self._state.scores()

    def nodes(self) -> np.ndarray:
        """Trie node of each beam, (B·beam,) int64, -1 for empty beams."""
        return self._state.nodes()

    def finish(self, top_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The best items: (items (B, top_k) int64, scores (B, top_k) float32), best first,
        padded with -1 / -inf. The SIDs are in ``self.sids`` (B, top_k, L) afterwards. With a
        table resolved with ``capacity > 1`` several items share a SID: each is its own entry (same
        score), so the top_k items may come from fewer SIDs and ``sids`` repeats rows."""
        items, scores, self.sids = self._state.finish(self.top_k if top_k is None else _count(top_k, "top_k"))
        return items, scores


def generate(
    step_fn: Callable[[np.ndarray, np.ndarray], Any],
    trie: Trie,
    batch_size: int,
    beam_width: int,
    top_k: int | None = None,
    token_map: TokenMap | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs constrained beam search with any model.

    ``step_fn(tokens, parents)`` gets the beams' prefixes so far, (B·beam, t) (tokens with a
    token map, else codes; t = 0 at the first call), and the parent of each beam in the
    previous step (B·beam,) int64 (``arange`` at the first call), and returns log-probs for
    the next level as :meth:`BeamSearch.step` takes them.

    Returns:
        items (B, top_k) int64, scores (B, top_k) float32, sids (B, top_k, L) uint16 (items
        sharing a SID, ``capacity > 1``, are separate entries: see :meth:`BeamSearch.finish`).
    """
    search = BeamSearch(trie, batch_size, beam_width, top_k, token_map)
    parents = np.arange(search.rows, dtype=np.int64)
    while not search.done:
        _, parents = search.step(step_fn(search.tokens(), parents))
    items, scores = search.finish()
    assert search.sids is not None
    return items, scores, search.sids
