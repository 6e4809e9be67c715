"""FastDropout: the cheaper CPU dropout mask is the same Bernoulli mask (per lane, unbiased,
seeded by the global RNG, independent of the thread count) and TIGER / SASRec use it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from sidkit.models._dropout import FastDropout, keep_mask, use_fast_dropout  # noqa: E402


def test_every_lane_keeps_with_probability_one_minus_p():
    torch.manual_seed(0)
    n, p = 4_000_000, 0.1
    keep, p_used = keep_mask((n,), p)
    assert keep.dtype == torch.bool and keep.shape == (n,)
    assert p_used == round(p * 65536) / 65536 and abs(p_used - p) < 1e-5
    k = keep.numpy().reshape(-1, 4).astype(np.float64)  # the 4 int16 lanes of each int64 draw
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
    assert torch.equal(x.grad, y.detach())  # d y / d x = mask * scale
    torch.manual_seed(1)
    assert torch.equal(d(x), y)  # the global RNG seeds it
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(1)
        assert torch.equal(d(x), y)  # and the thread count does not change it
    finally:
        torch.set_num_threads(threads)
    # bfloat16 inputs keep their dtype; eval mode, p = 0 and p = 1 behave as nn.Dropout does.
    assert d(torch.ones(8, dtype=torch.bfloat16)).dtype == torch.bfloat16
    d.eval()
    assert torch.equal(d(x), x)
    z = torch.randn(100)
    assert torch.equal(FastDropout(0.0)(z), z)
    assert torch.count_nonzero(FastDropout(1.0)(z)) == 0


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
