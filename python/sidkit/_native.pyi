"""Type stubs of the native extension (sidkit-py, built from rust/sidkit-py)."""

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "__version__",
    "get_num_threads",
    "group_ranks",
    "reassign",
    "rq_decode",
    "rq_encode",
    "set_num_threads",
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
    fixed: npt.NDArray[np.bool_] | None = None,
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
