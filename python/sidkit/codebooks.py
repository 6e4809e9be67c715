"""Residual-quantization codebooks: L levels of K_l codewords of dimension D."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _native
from ._arrays import as_code_matrix, as_float_matrix, atomic_path, digest, like_input, require, to_numpy, torch_device

MAX_CODEBOOK_SIZE = 65536
"""Largest codebook size per level: codes are uint16."""

FORMAT = "sidkit.codebooks/2"
#: Files written before the metadata was sealed: their SHA-256 (when present) covers the arrays only.
LEGACY_FORMAT = "sidkit.codebooks/1"


class Codebooks:
    """Residual-quantization codebooks.

    Args:
        codebooks: a (L, K, D) float array, or a sequence of L (K_l, D) arrays when the levels
            have different sizes. numpy or torch; converted to float32 once.
        method: how they were learned (e.g. ``"rq-kmeans"``), kept in saved files.
        meta: extra JSON-serialisable metadata kept in saved files.

    Attributes:
        levels (int): L. sizes (tuple[int, ...]): K_l per level. dim (int): D.
        data (np.ndarray): all codewords, (sum K_l, D) float32, level after level.
    """

    def __init__(
        self,
        codebooks: Any,
        *,
        method: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(codebooks, Sequence) and not isinstance(codebooks, np.ndarray):
            levels = [as_float_matrix(c, f"codebooks[{l}]") for l, c in enumerate(codebooks)]
        else:
            a = to_numpy(codebooks, "codebooks")
            if a.ndim != 3:
                raise ValueError(
                    f"codebooks: expected a 3-D array (L, K, D) or a list of (K_l, D) arrays, got shape {a.shape}"
                )
            levels = [as_float_matrix(c, f"codebooks[{l}]") for l, c in enumerate(a)]
        if not levels:
            raise ValueError("codebooks: expected at least one level (L >= 1), got L = 0")
        dims = {c.shape[1] for c in levels}
        if len(dims) != 1:
            raise ValueError(f"codebooks: expected one dimension D for all levels, got {sorted(dims)}")
        dim = dims.pop()
        if dim == 0:
            raise ValueError("codebooks: expected dimension D >= 1, got D = 0")
        for l, c in enumerate(levels):
            if not 1 <= len(c) <= MAX_CODEBOOK_SIZE:
                raise ValueError(
                    f"codebooks: expected 1 <= K <= {MAX_CODEBOOK_SIZE} codewords at every level "
                    f"(codes are uint16), got K = {len(c)} at level {l}"
                )
        data = np.ascontiguousarray(np.concatenate(levels), dtype=np.float32)
        # As the core: beyond ±1e15, squared distances over many dimensions overflow float32.
        bad = ~(np.abs(data) <= 1e15)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            what = "finite values" if not np.isfinite(data[row, col]) else "values within ±1e15"
            raise ValueError(f"codebooks: expected {what}, got {data[row, col]} at codeword row {row}, column {col}")
        data.setflags(write=False)
        self.data: np.ndarray = data
        self.sizes: tuple[int, ...] = tuple(len(c) for c in levels)
        self.dim: int = int(dim)
        self.method = method
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def levels(self) -> int:
        """Number of levels L."""
        return len(self.sizes)

    def level(self, l: int) -> np.ndarray:
        """The (K_l, D) float32 codewords of level ``l`` (a read-only view)."""
        if not 0 <= l < self.levels:
            raise IndexError(f"l: expected 0 <= l < {self.levels}, got {l}")
        start = sum(self.sizes[:l])
        return self.data[start : start + self.sizes[l]]

    def to_numpy(self) -> np.ndarray:
        """The codebooks as one (L, K, D) float32 array (all levels must have the same K)."""
        if len(set(self.sizes)) != 1:
            raise ValueError(f"codebooks: to_numpy needs equal sizes per level, got {self.sizes}")
        return self.data.reshape(self.levels, self.sizes[0], self.dim)

    def encode(self, x: Any, beam: int = 1, return_errors: bool = False) -> Any:
        """Residual-quantization codes of ``x``.

        Args:
            x: (N, D) embeddings, float32 (float16/64 and torch tensors converted once).
            beam: 1 for greedy (nearest codeword per level); B in 2..4096 keeps the B best
                partial encodings by total residual error (as faiss's ResidualQuantizer), never
                worse than greedy (the codeword-product tables it uses are capped at 1 GiB).
            return_errors: also return (N, L) float32, the squared residual norm
                ``||x - sum_{m<=l} c_m||²`` left after each level.

        Returns:
            codes (N, L) uint16 (int64 tensor on x's device when x is a torch tensor), and the
            errors when asked. Greedy ties go to the lowest code (beam: tied paths in beam
            order); identical for any thread count.
        """
        if isinstance(beam, bool) or not isinstance(beam, (int, np.integer)):
            raise TypeError(f"beam: expected an int >= 1, got {type(beam).__name__}")
        if not 1 <= beam <= MAX_BEAM:
            raise ValueError(f"beam: expected 1 <= beam <= {MAX_BEAM}, got {beam}")
        device = torch_device(x)
        xs = as_float_matrix(x, "x", self.dim)
        codes, errors = _native.rq_encode(self.data, list(self.sizes), xs, int(beam))
        if return_errors:
            return like_input(codes, device), like_input(errors, device)
        return like_input(codes, device)

    def decode(self, codes: Any) -> Any:
        """The (N, D) float32 reconstruction ``sum_l C_l[codes[:, l]]`` of (N, L) integer codes."""
        device = torch_device(codes)
        out = _native.rq_decode(self.data, list(self.sizes), as_code_matrix(codes, self.levels))
        return like_input(out, device)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes a ``.npz`` (default) or ``.safetensors`` file, atomically.

        The file holds ``codebooks`` ((sum K_l, D) float32) and ``sizes`` (int64), plus JSON
        metadata (format, levels, sizes, dim, method, sidkit version, meta, and a SHA-256 of
        the two arrays and the rest of the metadata that :meth:`load` checks): readable with
        plain ``numpy.load`` or ``safetensors`` and no sidkit.
        """
        path = Path(path)
        meta = {
            "format": FORMAT,
            "levels": self.levels,
            "sizes": list(self.sizes),
            "dim": self.dim,
            "method": self.method,
            "sidkit_version": _native.__version__,
            "meta": self.meta,
        }
        sizes = np.asarray(self.sizes, dtype=np.int64)
        meta["sha256"] = _digest(self.data, sizes, meta)
        if path.suffix == ".safetensors":  # before anything is written
            save = require("safetensors.numpy", "Codebooks.save to .safetensors").save
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            if path.suffix == ".safetensors":
                f.write(save({"codebooks": self.data, "sizes": sizes}, metadata={"sidkit": json.dumps(meta)}))
            else:
                np.savez(f, codebooks=self.data, sizes=sizes, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Codebooks:
        """Reads a file written by :meth:`save`."""
        path = Path(path)
        if path.suffix == ".safetensors":
            safe_open = require("safetensors", "Codebooks.load of .safetensors").safe_open
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="np") as f:
                    data, sizes = f.get_tensor("codebooks"), f.get_tensor("sizes")
                    meta = json.loads((f.metadata() or {})["sidkit"])
            else:
                f = np.load(path, allow_pickle=False)
                if not isinstance(f, np.lib.npyio.NpzFile):  # a plain .npy array
                    raise ValueError(f"a {type(f).__name__}, not a .npz archive")
                with f:
                    data, sizes, meta = f["codebooks"], f["sizes"], json.loads(str(f["meta"]))
        except FileNotFoundError:
            raise
        except Exception as e:  # KeyError, OSError, zip or safetensors errors: a file of another kind
            raise ValueError(f"path: expected a sidkit codebooks file ({FORMAT}), could not read {path}: {e!r}") from e
        if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, LEGACY_FORMAT):
            got = meta.get("format") if isinstance(meta, dict) else meta
            raise ValueError(f"path: expected format {FORMAT!r}, got {got!r} in {path}")
        fmt = meta["format"]
        # The arrays must agree with each other and with the metadata: a damaged file is an error.
        sizes = np.asarray(sizes)
        data = np.asarray(data)
        ok = (
            sizes.ndim == 1
            and sizes.dtype.kind in "iu"
            and data.ndim == 2
            and len(sizes) >= 1
            and (sizes >= 1).all()
            and int(sizes.sum()) == len(data)
            and list(sizes.tolist()) == meta.get("sizes", sizes.tolist())
            and data.dtype.kind == "f"
            and meta.get("dim", data.shape[1]) == data.shape[1]
            and meta.get("levels", len(sizes)) == len(sizes)
            and isinstance(meta.get("meta") or {}, dict)
            and isinstance(meta.get("method") or "", str)
        )
        if not ok:
            raise ValueError(
                f"path: {path} is a damaged {fmt!r} file: codebooks {data.dtype} {data.shape}, "
                f"sizes {sizes.tolist()}, metadata sizes {meta.get('sizes')} and dim {meta.get('dim')} disagree"
            )
        # safetensors has no checksum of its own: without the digest a flipped bit would load as
        # other codebooks, or another method. Legacy files may lack it, and theirs covers the arrays.
        data32, sizes64 = data.astype(np.float32), sizes.astype(np.int64)
        if fmt == FORMAT and meta.get("sha256") != _digest(data32, sizes64, meta):
            raise ValueError(f"path: {path} is a damaged {fmt!r} file: it does not match its SHA-256")
        if fmt == LEGACY_FORMAT and "sha256" in meta and meta["sha256"] != _digest(data32, sizes64):
            raise ValueError(f"path: {path} is a damaged {fmt!r} file: its arrays do not match their SHA-256")
        bounds = np.cumsum(sizes)[:-1]
        return cls(np.split(data, bounds), method=meta.get("method"), meta=meta.get("meta"))

    def __repr__(self) -> str:
        method = f", method={self.method!r}" if self.method else ""
        return f"Codebooks(levels={self.levels}, sizes={self.sizes}, dim={self.dim}{method})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Codebooks):
            return NotImplemented
        return self.sizes == other.sizes and np.array_equal(self.data, other.data)

    __hash__ = None  # type: ignore[assignment]


#: The largest ``beam`` :meth:`Codebooks.encode` takes (the core's limit).
MAX_BEAM = 4096


def _digest(data: np.ndarray, sizes: np.ndarray, meta: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of the codebook and size arrays' little-endian bytes and, for the current format,
    of the rest of the metadata (:func:`sidkit._arrays.digest`)."""
    if meta is not None:
        return digest([np.asarray(data, dtype="<f4"), np.asarray(sizes, dtype="<i8")], meta)
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(data, dtype="<f4"), np.ascontiguousarray(sizes, dtype="<i8")):
        h.update(a.tobytes())
    return h.hexdigest()
