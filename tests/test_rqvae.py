"""RQ-VAE: training reduces the loss, uses its codebooks, and round-trips through state_dict."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import sidkit as sk
from sidkit.data import synthetic_catalog

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained():
    x = synthetic_catalog(3000, 32, (16, 4, 4), seed=0)
    model = sk.RQVAE(32, latent_dim=16, hidden=(64, 32), levels=3, codebook_size=16, restart_threshold=0.001)
    history = model.fit(x, epochs=25, batch_size=256, verbose=False, seed=0)
    return x, model, history


def test_loss_falls_and_codes_are_used(trained):
    x, model, history = trained
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    codes = model.encode(x)
    assert codes.shape == (3000, 3) and codes.dtype == np.uint16
    for level in range(3):
        assert len(np.unique(codes[:, level])) > 0.5 * 16  # > 50% of each codebook in use
    assert sk.metrics.collisions(codes)["unique_sids"] > 100  # no collapse onto one SID


def test_encode_decode_and_state_dict_round_trip(trained):
    x, model, _ = trained
    codes = model.encode(x[:100])
    recon = model.decode(codes)
    assert recon.shape == (100, 32) and np.isfinite(recon).all()
    # The Rust assignment agrees with the torch quantizer used in training.
    with torch.no_grad():
        _, torch_codes, _ = model.quantize(model.encoder(torch.from_numpy(x[:100])))
    assert (torch_codes.numpy() == codes).mean() > 0.99
    clone = sk.RQVAE(32, latent_dim=16, hidden=(64, 32), levels=3, codebook_size=16)
    clone.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(clone.encode(x[:100]), codes)
    assert model.codebooks().sizes == (16, 16, 16) and model.codebooks().dim == 16


def test_bad_input_and_collapse_warning():
    model = sk.RQVAE(4, latent_dim=2, hidden=(8,), levels=2, codebook_size=4)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 4\)"):
        model.fit(np.zeros((10, 3), np.float32), epochs=1, verbose=False)
    bad = np.zeros((10, 4), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="x: expected finite"):
        model.fit(bad, epochs=1, verbose=False)
    with pytest.warns(RuntimeWarning, match="codebook collapse"):
        model.fit(np.ones((64, 4), np.float32), epochs=2, batch_size=16, verbose=False)  # one distinct point


def test_import_sidkit_does_not_import_torch():
    code = "import sys, sidkit; assert 'torch' not in sys.modules; sidkit.RQVAE; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_rqvae_is_seeded_and_leaves_the_global_rng_alone():
    x = synthetic_catalog(800, 16, (8, 4), seed=1)
    kw = dict(levels=2, codebook_size=8, latent_dim=8, hidden=(32,), epochs=4, batch_size=128)
    state = torch.random.get_rng_state()
    a = sk.RQVAE(16, latent_dim=8, hidden=(32,), levels=2, codebook_size=8, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded init: no global draw
    b = sk.RQVAE(16, latent_dim=8, hidden=(32,), levels=2, codebook_size=8, seed=3)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    m1 = sk.train_rqvae(x, **kw, seed=5)
    torch.manual_seed(123)  # the global state must not matter
    m2 = sk.train_rqvae(torch.from_numpy(x), **kw, seed=5)
    np.testing.assert_array_equal(m1.encode(x), m2.encode(x))
    assert len(m1.history_) == 4 and m1.history_ == m2.history_ and not m1.training
    # The same as building and fitting by hand.
    by_hand = sk.RQVAE(16, latent_dim=8, hidden=(32,), levels=2, codebook_size=8, seed=5)
    by_hand.fit(x, epochs=4, batch_size=128, seed=5, verbose=False)
    np.testing.assert_array_equal(by_hand.encode(x), m1.encode(x))
    assert m1.codebooks().to_numpy().shape == (2, 8, 8)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, D\)"):
        sk.train_rqvae(np.zeros(5, dtype=np.float32))
