"""SID quality metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import to_numpy


def collisions(codes: Any) -> dict[str, float | int]:
    """Collision statistics of (N, L) integer codes.

    Returns a dict with ``items`` (N), ``unique_sids`` (distinct rows), ``collision_rate``
    (share of items whose full SID is shared with another item), ``max_group`` (largest
    number of items on one SID) and ``mean_group`` (items per distinct SID).
    """
    c = to_numpy(codes, "codes")
    if c.ndim != 2 or c.dtype.kind not in "iu":
        raise ValueError(f"codes: expected an integer (N, L) array, got {c.dtype} {c.shape}")
    n = len(c)
    if n == 0:
        return {"items": 0, "unique_sids": 0, "collision_rate": 0.0, "max_group": 0, "mean_group": 0.0}
    _, counts = np.unique(c, axis=0, return_counts=True)
    return {
        "items": n,
        "unique_sids": len(counts),
        "collision_rate": float(counts[counts > 1].sum() / n),
        "max_group": int(counts.max()),
        "mean_group": float(n / len(counts)),
    }
