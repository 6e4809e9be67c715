"""Bad input gets a ValueError/TypeError naming the argument, never a panic or a wrong answer."""

from __future__ import annotations

import numpy as np
import pytest
import sidkit as sk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


@pytest.fixture
def cb():
    return sk.Codebooks(np.random.default_rng(0).standard_normal((3, 8, 4)).astype(np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e20])
def test_non_finite_x(cb, bad):
    x = np.zeros((5, 4), np.float32)
    x[3, 1] = bad
    with pytest.raises(ValueError, match=r"x: expected finite values.* at flat index 13"):
        cb.encode(x)


def test_nan_in_float64_is_not_downcast_silently(cb):
    x = np.zeros((5, 4))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="x: expected finite"):
        cb.encode(x)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_codebooks(bad):
    c = np.zeros((2, 3, 4), np.float32)
    c[1, 2, 0] = bad
    with pytest.raises(ValueError, match="codebooks: expected finite"):
        sk.Codebooks(c)


@pytest.mark.parametrize(
    "x, exc, msg",
    [
        (np.zeros((5,), np.float32), ValueError, r"x: expected a 2-D array \(N, 4\), got shape \(5,\)"),
        (np.zeros((5, 4, 1), np.float32), ValueError, "x: expected a 2-D array"),
        (np.zeros((5, 3), np.float32), ValueError, r"x: expected shape \(N, 4\), got \(5, 3\)"),
        (np.zeros((5, 4), np.int32), TypeError, "x: expected a floating-point array.*int32"),
        (np.zeros((5, 4), bool), TypeError, "x: expected a floating-point array"),
        ("not an array", TypeError, "x: expected a numpy array or torch tensor, got str"),
    ],
)
def test_bad_x(cb, x, exc, msg):
    with pytest.raises(exc, match=msg):
        cb.encode(x)


@pytest.mark.parametrize(
    "beam, exc", [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), (5000, ValueError)]
)
def test_bad_beam(cb, beam, exc):
    with pytest.raises(exc, match="beam"):
        cb.encode(np.zeros((2, 4), np.float32), beam=beam)


@pytest.mark.parametrize(
    "codebooks, msg",
    [
        (np.zeros((0, 4, 3), np.float32), "at least one level"),
        ([], "at least one level"),
        (np.zeros((2, 0, 3), np.float32), "1 <= K <= 65536.*K = 0"),
        (np.zeros((1, 65537, 1), np.float32), "K = 65537"),
        (np.zeros((2, 3, 0), np.float32), "D >= 1"),
        (np.zeros((4, 3), np.float32), r"3-D array \(L, K, D\)"),
        ([np.zeros((3, 2), np.float32), np.zeros((3, 5), np.float32)], "one dimension D"),
    ],
)
def test_bad_codebooks(codebooks, msg):
    with pytest.raises(ValueError, match=msg):
        sk.Codebooks(codebooks)


def test_codebooks_of_integers_is_a_type_error():
    with pytest.raises(TypeError, match=r"codebooks\[0\]: expected a floating-point"):
        sk.Codebooks(np.zeros((2, 3, 4), np.int64))


@pytest.mark.parametrize(
    "codes, exc, msg",
    [
        (np.array([[0, 0, 8]], np.uint16), ValueError, r"codes: expected 0 <= code < 8 at level 2"),
        (np.array([[0, -1, 0]], np.int64), ValueError, "codes: expected 0 <= code < 8 at level 1"),
        (np.array([[0, 0, 2**40]], np.int64), ValueError, "codes: expected 0 <= code < 8"),
        (np.array([[0, 0, 2**63 + 5]], np.uint64), ValueError, "codes"),
        (np.zeros((2, 2), np.uint16), ValueError, r"codes: expected shape \(N, 3\), got \(2, 2\)"),
        (np.zeros((3,), np.uint16), ValueError, r"codes: expected shape \(N, 3\)"),
        (np.zeros((2, 3), np.float32), TypeError, "codes: expected an integer array"),
    ],
)
def test_bad_codes(cb, codes, exc, msg):
    with pytest.raises(exc, match=msg):
        cb.decode(codes)


def test_set_num_threads_rejects_zero():
    with pytest.raises(ValueError, match="n: expected a positive"):
        sk.set_num_threads(0)
    with pytest.raises((OverflowError, TypeError)):
        sk.set_num_threads(-2)


PROPERTY_CB = sk.Codebooks(np.random.default_rng(1).standard_normal((3, 8, 4)).astype(np.float32))


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.uint16]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
    ),
    beam=st.integers(-2, 6),
)
def test_any_array_gives_codes_or_a_clear_error(x, beam):
    """Property: for any array, encode returns valid codes or raises ValueError/TypeError."""
    cb = PROPERTY_CB
    try:
        codes, errors = cb.encode(x, beam=beam, return_errors=True)
    except (ValueError, TypeError) as e:
        assert str(e).split(":")[0] in {"x", "beam"}
        return
    assert x.dtype.kind == "f" and x.ndim == 2 and x.shape[1] == 4 and beam >= 1
    assert np.isfinite(x).all()
    assert codes.shape == (x.shape[0], 3) and codes.dtype == np.uint16 and (codes < 8).all()
    recon = cb.decode(codes)
    np.testing.assert_allclose(errors[:, -1], ((x.astype(np.float64) - recon) ** 2).sum(1), rtol=1e-3, atol=1e-3)
