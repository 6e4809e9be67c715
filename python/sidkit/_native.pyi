"""Type stubs of the native extension (sidkit-py, built from rust/sidkit-py)."""

from typing import Any, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BeamSearch",
    "Trie",
    "__version__",
    "assign_bounded",
    "balanced_assign",
    "centroid_means",
    "dropout",
    "get_num_threads",
    "group_ranks",
    "kmeans_pp",
    "reassign",
    "rq_decode",
    "rq_encode",
    "set_num_threads",
    "subtract_centroids",
    "suffix",
]

__version__: str

def rq_encode(
    data: npt.NDArray[np.float32], sizes: list[int], x: npt.NDArray[np.float32], beam: int = 1
) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.float32]]:
    """Codes (N, L) uint16 and per-level squared residual norms (N, L) float32 of x (N, D)."""

def rq_decode(
    data: npt.NDArray[np.float32], sizes: list[int], codes: npt.NDArray[np.uint16] | npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Reconstruction (N, D) float32 of codes (N, L)."""

def balanced_assign(
    centroids: npt.NDArray[np.float32], x: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]:
    """Labels (N,) with every centroid holding floor(N/K) or ceil(N/K) points, and distances."""

def assign_bounded(
    centroids: npt.NDArray[np.float32],
    x: npt.NDArray[np.float32],
    labels: npt.NDArray[np.uint32],
    err: npt.NDArray[np.float32],
    lower: npt.NDArray[np.float32],
    previous: npt.NDArray[np.float32] | None = None,
) -> int:
    """Hamerly-bounded nearest-centroid assignment, updating labels/err/lower in place."""

def subtract_centroids(
    x: npt.NDArray[np.float32], centroids: npt.NDArray[np.float32], labels: npt.NDArray[np.uint32]
) -> None:
    """x[i] -= centroids[labels[i]] in place (x (N, D), centroids (K, D), labels (N,) in 0..K)."""

def centroid_means(
    x: npt.NDArray[np.float32], labels: npt.NDArray[np.uint32], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint64]]:
    """Per-label means (K, D) float32 of x (N, D) (zero rows when empty) and counts (K,)."""

def kmeans_pp(
    x: npt.NDArray[np.float32], k: int, trials: int, uniform: npt.NDArray[np.float64]
) -> npt.NDArray[np.uint64]:
    """Greedy k-means++: k row indices of x (N, D); best of `trials` D² draws per centre."""

def dropout(x: npt.NDArray[Any], out: npt.NDArray[Any], p: float, seed: int) -> float:
    """Writes ``x * mask / (1 - p')`` into ``out`` (1-D, float32, or uint16 holding bfloat16
    bits, C-contiguous, as long as ``x``); the mask keeps element ``i`` when 16-bit lane
    ``i % 4`` of SplitMix64 output ``i // 4`` of ``seed`` is ``>= round(p * 65536)`` (dropped
    elements are ``x * 0``: NaN for NaN and inf, as in torch). ``out`` may not overlap ``x``.
    Returns ``p'`` (``p`` rounded to a multiple of 1/65536)."""

def set_num_threads(n: int) -> None:
    """Sets the number of threads sidkit uses (results do not depend on it)."""

def get_num_threads() -> int:
    """The number of threads sidkit uses."""

def group_ranks(
    codes: npt.NDArray[np.uint16],
    sizes: list[int],
    item_ids: npt.NDArray[np.int64] | None = None,
    cost: npt.NDArray[np.float32] | None = None,
) -> tuple[npt.NDArray[np.uint32], int, int, int]:
    """Rank inside each group of equal codes (by cost, then item id); groups, max_group, colliding_groups."""

def reassign(
    data: npt.NDArray[np.float32],
    sizes: list[int],
    x: npt.NDArray[np.float32],
    codes: npt.NDArray[np.uint16],
    item_ids: npt.NDArray[np.int64],
    capacity: int = 1,
    candidates: int = 200,
    order: str = "knn",
    seed: int = 0,
    fixed: npt.NDArray[np.uint8] | None = None,
) -> dict[str, Any]:
    """Fixed-length collision resolution: codes, moved, unresolved, added_error, groups, max_group, colliding_groups."""

def suffix(
    codes: npt.NDArray[np.uint16],
    sizes: list[int],
    item_ids: npt.NDArray[np.int64] | None = None,
    cost: npt.NDArray[np.float32] | None = None,
    max_suffix: int | None = None,
) -> tuple[npt.NDArray[np.uint16], int, int, int]:
    """Codes (N, L + 1) with each item's rank in its collision group appended; groups, max_group, colliding_groups."""

@final
class Trie:
    """A compact prefix trie of valid SIDs (CSR arrays per depth)."""

    def __new__(
        cls,
        codes: npt.NDArray[np.uint16],
        sizes: list[int],
        item_ids: npt.NDArray[np.int64],
        allow_duplicates: bool = False,
    ) -> Trie: ...
    @property
    def depth(self) -> int: ...
    @property
    def sizes(self) -> list[int]: ...
    @property
    def num_nodes(self) -> int: ...
    @property
    def num_leaves(self) -> int: ...
    @property
    def num_items(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def walk(self, prefixes: npt.NDArray[np.uint16]) -> npt.NDArray[np.int64]:
        """Node ids (B,) reached by prefixes (B, t); -1 where invalid."""
    def lookup(self, codes: npt.NDArray[np.uint16]) -> npt.NDArray[np.int64]:
        """First item id on each full SID (B, L); -1 where absent."""
    def items_of(self, sid: list[int]) -> list[int]:
        """All items on one full SID."""
    def leaf_items(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Every leaf's items as CSR in SID order: offsets (leaves + 1,), items."""
    def children(
        self, node_ids: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint16], npt.NDArray[np.int64]]:
        """CSR children: offsets (B + 1,), codes, child node ids."""
    def child(self, node_ids: npt.NDArray[np.int64], codes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The child of each node with each code; -1 where none."""
    def mask(self, node_ids: npt.NDArray[np.int64], vocab: int, offset: int) -> npt.NDArray[np.bool_]:
        """Boolean (B, vocab) mask of allowed next tokens (offset + code)."""

@final
class BeamSearch:
    """Trie-constrained beam search state for one batch."""

    def __new__(cls, trie: Trie, batch_size: int, beam_width: int) -> BeamSearch: ...
    def step(self, logp: npt.NDArray[np.float32], offset: int) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.int64]]:
        """Advances one level; returns (codes, parents) of the new beams."""
    @property
    def step_index(self) -> int: ...
    def codes(self) -> npt.NDArray[np.uint16]:
        """(batch * beam, steps) codes chosen so far."""
    def scores(self) -> npt.NDArray[np.float32]:
        """Cumulative log-prob per beam."""
    def nodes(self) -> npt.NDArray[np.int64]:
        """Trie node per beam; -1 for empty beams."""
    def finish(self, top_k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.uint16]]:
        """(items (B, top_k), scores (B, top_k), sids (B, top_k, L))."""
