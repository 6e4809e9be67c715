"""sidkit: semantic IDs for generative recommendation, with a Rust core.

Quick start::

    import sidkit as sk
    cb = sk.RQKMeans(levels=3, codebook_size=256).fit(emb)   # emb: (N, D) float32
    codes = cb.encode(emb, beam=1)                            # (N, L) uint16
    recon = cb.decode(codes)                                  # (N, D) float32
"""

from importlib.util import find_spec

from . import _native, metrics
from ._arrays import as_int
from ._native import __version__, get_num_threads
from .codebooks import MAX_CODEBOOK_SIZE, Codebooks
from .collisions import SidTable, resolve
from .decode import BeamSearch, generate
from .kmeans import RQKMeans, kmeans
from .trie import TokenMap, Trie

#: Most threads set_num_threads accepts.
MAX_THREADS = 4096


def set_num_threads(n: int) -> None:
    """Sets the threads sidkit's Rust core uses (1..4096; results never depend on it)."""
    _native.set_num_threads(as_int(n, "n", 1, MAX_THREADS))


def __getattr__(name: str):  # torch stays optional: RQVAE is imported on first use
    if name in ("RQVAE", "train_rqvae"):
        from . import rqvae

        return getattr(rqvae, name)
    raise AttributeError(f"module 'sidkit' has no attribute {name!r}")


__all__ = [
    "MAX_CODEBOOK_SIZE",
    "BeamSearch",
    "Codebooks",
    "RQKMeans",
    "RQVAE",
    "SidTable",
    "TokenMap",
    "Trie",
    "__version__",
    "generate",
    "get_num_threads",
    "kmeans",
    "metrics",
    "resolve",
    "set_num_threads",
    "train_rqvae",
]


def _has_torch() -> bool:
    """Whether torch is installed, without importing it."""
    try:
        return find_spec("torch") is not None
    except (ImportError, ValueError, AttributeError):  # e.g. sys.modules["torch"] = None
        return False


if not _has_torch():  # `from sidkit import *` works without torch
    __all__ = [n for n in __all__ if n not in ("RQVAE", "train_rqvae")]
