"""Input conversion shared by the public API: numpy or CPU/GPU torch in, validated numpy out."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def torch_device(x: Any) -> Any | None:
    """The device of `x` if it is a torch tensor, else None (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x.device
    return None


def to_numpy(x: Any, name: str) -> np.ndarray:
    """`x` as a numpy array without copying when it already is one (torch tensors go to CPU)."""
    if isinstance(x, np.ndarray):
        return x
    if torch_device(x) is not None:
        t = x.detach()
        if t.dtype == sys.modules["torch"].bfloat16:
            t = t.float()  # bfloat16 has no numpy dtype
        return t.cpu().numpy()
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")


def as_float_matrix(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """A C-contiguous float32 (N, D) array; copies only when dtype or layout differ."""
    a = to_numpy(x, name)
    if a.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point array (float32 preferred), got dtype {a.dtype}")
    if a.ndim != 2:
        want = f"(N, {dim})" if dim is not None else "(N, D)"
        raise ValueError(f"{name}: expected a 2-D array {want}, got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name}: expected shape (N, {dim}), got {a.shape}")
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf, which the core rejects by name
        return np.ascontiguousarray(a, dtype=np.float32)


def as_code_matrix(codes: Any, levels: int, name: str = "codes") -> np.ndarray:
    """C-contiguous (N, L) codes as uint16 (kept as is) or int64 (range-checked by the core)."""
    a = to_numpy(codes, name)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array (uint16 or int64), got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[1] != levels:
        raise ValueError(f"{name}: expected shape (N, {levels}), got {a.shape}")
    dtype = np.uint16 if a.dtype == np.uint16 else np.int64
    if a.dtype.kind == "u" and a.dtype.itemsize == 8 and a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: expected codes < 65536, got {a.max()}")
    return np.ascontiguousarray(a, dtype=dtype)


def like_input(a: np.ndarray, device: Any | None) -> Any:
    """`a` as a torch tensor on `device` when the input was torch, else unchanged."""
    if device is None:
        return a
    import torch

    if a.dtype == np.uint16:
        a = a.astype(np.int64)  # torch's uint16 supports few ops; int64 indexes embeddings
    return torch.from_numpy(a).to(device)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` only if the block
    succeeds, so a crash never leaves a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
