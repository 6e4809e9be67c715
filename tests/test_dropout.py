"""FastDropout: sidkit's native CPU dropout is the same Bernoulli mask (per lane, unbiased,
seeded by the global RNG, independent of the thread count), its float32 and bfloat16 values
match a torch reference built from the same mask, the backward pass recomputes that mask, bad
arguments to the kernel raise, and TIGER / SASRec use it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import sidkit as sk  # noqa: E402
from sidkit import _native  # noqa: E402
from sidkit.models._dropout import FastDropout, dropout_into, keep_mask, use_fast_dropout  # noqa: E402


def test_every_lane_keeps_with_probability_one_minus_p():
    torch.manual_seed(0)
    n, p = 4_000_000, 0.1
    keep, p_used = keep_mask((n,), p)
    assert keep.dtype == torch.bool and keep.shape == (n,)
    assert p_used == round(p * 65536) / 65536 and abs(p_used - p) < 1e-5
    k = keep.numpy().reshape(-1, 4).astype(np.float64)  # the 4 16-bit lanes of each 64-bit draw
    sd = np.sqrt(p * (1 - p) / len(k))
    assert np.all(np.abs(k.mean(0) - (1 - p_used)) < 5 * sd), k.mean(0)
    # Lanes of one draw and neighbouring draws are uncorrelated.
    c = np.corrcoef(np.concatenate([k, np.roll(k, 1, axis=0)], axis=1).T)
    off = c[~np.eye(8, dtype=bool)]
    assert np.abs(off).max() < 0.005, off
    for q in (0.0, 0.3, 0.5, 0.9):
        share = keep_mask((400_000,), q)[0].float().mean().item()
        assert abs(share - (1 - q)) < 0.005, (q, share)


def test_fast_dropout_is_unbiased_seeded_and_backpropagates():
    d = FastDropout(0.3)
    x = torch.ones(1_000_000, requires_grad=True)
    torch.manual_seed(1)
    y = d(x)
    scale = 1 / (1 - round(0.3 * 65536) / 65536)
    vals = np.unique(y.detach().numpy())
    assert len(vals) == 2 and vals[0] == 0.0 and vals[1] == np.float32(scale)
    assert abs(y.mean().item() - 1.0) < 0.005  # E[y] = x
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d y / d x = mask * scale, recomputed from the seed
    torch.manual_seed(1)
    assert torch.equal(d(x), y)  # the global RNG seeds it
    threads = torch.get_num_threads()
    native = sk.get_num_threads()
    try:
        torch.set_num_threads(1)
        for n in (1, 3):
            sk.set_num_threads(n)
            torch.manual_seed(1)
            assert torch.equal(d(x), y)  # and neither torch's nor sidkit's thread count changes it
    finally:
        torch.set_num_threads(threads)
        sk.set_num_threads(native)
    # bfloat16 inputs keep their dtype; eval mode, p = 0 and p = 1 behave as nn.Dropout does.
    assert d(torch.ones(8, dtype=torch.bfloat16)).dtype == torch.bfloat16
    d.eval()
    assert torch.equal(d(x), x)
    z = torch.randn(100)
    assert torch.equal(FastDropout(0.0)(z), z)
    assert torch.count_nonzero(FastDropout(1.0)(z)) == 0
    # Other dtypes go to torch's dropout (same behaviour, torch's mask).
    h = FastDropout(0.5)(torch.ones(1000, dtype=torch.float64))
    assert h.dtype == torch.float64 and set(h.unique().tolist()) == {0.0, 2.0}


def _splitmix64_lanes(seed: int, n: int) -> np.ndarray:
    """Independent reference of the documented mask: 16-bit lane i % 4 of the (i // 4)-th
    output of SplitMix64 started from state ``seed`` (Vigna's splitmix64.c, in numpy)."""
    with np.errstate(over="ignore"):
        k = np.arange(1, (n + 3) // 4 + 1, dtype=np.uint64)
        z = np.uint64(seed) + k * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z.view("<u2")[:n]  # little-endian: lane k of word j is uint16 number 4 j + k


@pytest.mark.parametrize("n", [1, 65, 2 * 32768 + 63, 3 * 32768 + 7])
@pytest.mark.parametrize("seed", [0, 12345, 2**63 - 2])
def test_mask_is_the_documented_splitmix64_lanes(n, seed):
    p = 0.3
    keep, p_used = keep_mask((n,), p, seed)
    want = _splitmix64_lanes(seed, n) >= round(p * 65536)
    assert p_used == round(p * 65536) / 65536
    assert np.array_equal(keep.numpy(), want)


def test_gradients_of_gradients_empty_and_expanded_tensors():
    d = FastDropout(0.4)
    x = torch.randn(300, dtype=torch.float64).float().requires_grad_()
    torch.manual_seed(5)
    y = d(x)
    (g,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)  # 2 y dy/dx = 2 m^2 x
    (gg,) = torch.autograd.grad(g.sum(), x)
    m = y.detach() / x.detach()  # the mask times its scale (x has no zeros)
    assert torch.allclose(gg, 2 * m * m)
    # Empty tensors, and an expanded (stride-0) incoming gradient.
    e = torch.empty(0, 3, requires_grad=True)
    d(e).sum().backward()
    assert e.grad is not None and e.grad.shape == (0, 3)
    x.grad = None
    torch.manual_seed(6)
    d(x).backward(torch.ones(()).expand(300))
    torch.manual_seed(6)
    assert torch.equal(x.grad, d(torch.ones(300)))
    # In-place dropout and sparse inputs go to torch's dropout (which has no sparse kernel).
    ones = torch.ones(1000)
    assert FastDropout(0.5, inplace=True)(ones) is ones and set(ones.unique().tolist()) == {0.0, 2.0}
    sp = torch.ones(4, 4).to_sparse()
    with pytest.raises(NotImplementedError):
        torch.nn.Dropout(0.5)(sp)
    with pytest.raises(NotImplementedError):
        FastDropout(0.5)(sp)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_match_a_torch_reference_of_the_same_mask(dtype):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(7, 33, 19, generator=g) * 10).to(dtype)  # not a multiple of 4 or 64 elements
    special = torch.tensor([float("nan"), float("inf"), -float("inf")])
    x[0, :, :3] = special  # 33 of each: some kept, some dropped
    seed, p = 12345, 0.15
    out, p_used = dropout_into(x, p, seed)
    keep, p_mask = keep_mask(x.shape, p, seed)
    assert p_used == p_mask == round(p * 65536) / 65536
    assert out.shape == x.shape and out.dtype == dtype
    # float32: x * scale where kept, x * 0 where dropped (so NaN for NaN and inf, as torch's
    # dropout gives); bfloat16: the float32 product rounded once to bfloat16.
    factor = torch.where(keep, torch.tensor(np.float32(1 / (1 - p_used))), torch.zeros(()))
    want = (x.float() * factor).to(dtype)
    assert keep[0, :, :3].any() and not keep[0, :, :3].all()
    assert torch.equal(out.isnan(), want.isnan())
    assert torch.equal(out.isnan()[0, :, :3], ~keep[0, :, :3] | x[0, :, :3].isnan())
    assert torch.equal(torch.nan_to_num(out.float()), torch.nan_to_num(want.float()))
    # A non-contiguous input gives the values of its contiguous copy.
    t = x.transpose(0, 2)
    assert torch.equal(
        torch.nan_to_num(dropout_into(t, p, seed)[0].float()),
        torch.nan_to_num(dropout_into(t.contiguous(), p, seed)[0].float()),
    )
    # Different seeds give different masks; the same seed the same one.
    assert not torch.equal(keep_mask((4096,), p, 1)[0], keep_mask((4096,), p, 2)[0])
    assert torch.equal(keep_mask((4096,), p, 1)[0], keep_mask((4096,), p, 1)[0])


def test_the_kernel_rejects_bad_arguments():
    x = np.ones(10, np.float32)
    with pytest.raises(ValueError, match=r"p: expected a drop probability in \[0, 1\], got 1.5"):
        _native.dropout(x, np.empty_like(x), 1.5, 0)
    with pytest.raises(ValueError, match="p: expected a drop probability"):
        _native.dropout(x, np.empty_like(x), float("nan"), 0)
    with pytest.raises(ValueError, match=r"out: expected 10 elements \(as many as x\), got 9"):
        _native.dropout(x, np.empty(9, np.float32), 0.1, 0)
    with pytest.raises(TypeError, match="x: expected a 1-D float32 or uint16"):
        _native.dropout(x.astype(np.float64), np.empty(10), 0.1, 0)
    with pytest.raises(TypeError, match=r"out: expected a 1-D array of x's dtype \(float32\), got a 1-D uint16 array"):
        _native.dropout(x, np.empty(10, np.uint16), 0.1, 0)
    with pytest.raises(TypeError, match=r"out: expected a 1-D array of x's dtype \(float32\), got a 2-D float32 array"):
        _native.dropout(x, np.empty((2, 5), np.float32), 0.1, 0)
    with pytest.raises(TypeError, match="out: expected a 1-D array of x's dtype \\(float32\\), got list"):
        _native.dropout(x, [0.0] * 10, 0.1, 0)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out: expected a writable array, got a read-only one"):
        _native.dropout(x, ro, 0.1, 0)
    # x and out sharing memory: the same array, overlapping numpy slices, and two views of one
    # torch tensor (numpy's own borrow tracking cannot see the last overlap).
    a = np.ones(10, np.float32)
    t = torch.ones(16)
    for xs, out in ((a, a), (a[:-1], a[1:]), (t[:8].numpy(), t[4:12].numpy())):
        with pytest.raises(ValueError, match="out: expected an array that does not overlap x"):
            _native.dropout(xs, out, 0.1, 0)
    _native.dropout(t[:8].numpy(), t[8:].numpy(), 0.1, 0)  # adjacent, not overlapping: fine
    with pytest.raises(ValueError, match="x: expected a C-contiguous array"):
        _native.dropout(np.ones(20, np.float32)[::2], np.empty_like(x), 0.1, 0)
    with pytest.raises(ValueError, match="out: expected a C-contiguous array"):
        _native.dropout(x, np.empty(20, np.float32)[::2], 0.1, 0)
    with pytest.raises(OverflowError):
        _native.dropout(x, np.empty_like(x), 0.1, -1)
    out = np.empty(0, np.float32)
    assert _native.dropout(np.empty(0, np.float32), out, 0.1, 0) == round(0.1 * 65536) / 65536


def test_models_use_it():
    pytest.importorskip("transformers")
    import sidkit as sk
    from sidkit.models import TIGER, SASRec

    table = sk.resolve(np.arange(40).reshape(20, 2) % 5)
    for model in (TIGER(table, d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=32), SASRec(20, 10, 16, 1)):
        kinds = [type(m) for m in model.modules()]
        assert torch.nn.Dropout not in kinds and FastDropout in kinds
    # use_fast_dropout keeps p and reaches nested modules.
    net = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.4)))
    use_fast_dropout(net)
    assert [m.p for m in net.modules() if isinstance(m, FastDropout)] == [0.2, 0.4]
