from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sidkit as sk

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_report_header(config):
    import importlib.metadata as md

    versions = []
    for name in ("sidkit", "numpy", "torch", "hypothesis", "safetensors"):
        try:
            versions.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return f"{', '.join(versions)}; sidkit threads {sk.get_num_threads()}; data {DATA}"


@pytest.fixture
def amazon_dir() -> Path:
    d = DATA / "amazon2014"
    if not (d / "Beauty.txt").is_file():
        pytest.skip(f"real data not found at {d} (expected ../shared/data beside the repository)")
    return d


@pytest.fixture
def ml100k_dir() -> Path:
    d = DATA / "ml-100k"
    if not (d / "ml-100k.inter").is_file():
        pytest.skip(f"real data not found at {d} (expected ../shared/data beside the repository)")
    return d


@pytest.fixture
def tiny_t5():
    """A factory of tiny, seeded, randomly initialised T5 models over ``vocab_size`` tokens
    (0 = pad and decoder start, 1 = eos): no download."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    def make(vocab_size: int):
        config = transformers.T5Config(
            vocab_size=vocab_size,
            d_model=32,
            d_ff=64,
            d_kv=16,
            num_layers=1,
            num_decoder_layers=1,
            num_heads=2,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
        torch.manual_seed(0)
        return transformers.T5ForConditionalGeneration(config).eval()

    return make


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = sk.get_num_threads()
    yield
    sk.set_num_threads(n)


def flip_bit(path, offset: int, out, bit: int = 0):
    """Writes ``path``'s bytes to ``out`` with bit ``bit`` (0 = lowest) of byte ``offset`` flipped."""
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1 << bit
    out.write_bytes(bytes(raw))
    return out


def clustered(rng: np.random.Generator, n: int, d: int, centres: int = 6, scale: float = 3.0) -> np.ndarray:
    """Points around a few far-apart centres: large residual norms and many near-ties."""
    c = rng.standard_normal((centres, d)) * scale
    return (c[rng.integers(centres, size=n)] + 0.05 * rng.standard_normal((n, d))).astype(np.float32)


def greedy_reference(cb: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy RQ in float64 by brute force: codes (N, L) and the chosen distance per level."""
    r = x.astype(np.float64)
    codes, dists = [], []
    for level in cb.astype(np.float64):
        d = ((r[:, None, :] - level[None, :, :]) ** 2).sum(-1)
        j = d.argmin(1)
        codes.append(j)
        dists.append(d[np.arange(len(r)), j])
        r = r - level[j]
    return np.stack(codes, 1), np.stack(dists, 1)
